# markdown2 2.4.12: with markdown-in-html, an opening tag indented inside a list
# item does not match r'^<(\S).*?>' and re.match(...).group(1) is called on None
# (issue #565).
import markdown2

text = '- one two\n   <p markdown="1">\n  *NOTE:* opening tag is slightly indented\n  </p>\n'
print(repr(markdown2.markdown(text, extras=["markdown-in-html"])))
