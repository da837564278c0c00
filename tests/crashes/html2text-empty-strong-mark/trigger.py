# html2text 2024.2.25: with strong_mark set to "", handle_tag() compares the
# preceding character with self.strong_mark[0] (issue #409).
import html2text

h = html2text.HTML2Text()
h.strong_mark = ""
print(repr(h.handle("A <b>B</b> <i>C</i>.")))
