# html2text 2020.1.16: with pad_tables, an empty <table> leaves no table lines and
# reformat_table() reads lines[0] (issue #320).
import html2text

h = html2text.HTML2Text()
h.pad_tables = True
print(repr(h.handle("<table></table>")))
