# sqlparse 0.2.4: with reindent_aligned, the whitespace-only statement after
# "select * from a;" has no tokens and AlignedIndentFilter reads tokens[0]
# (issue #458).
import sqlparse

print(repr(sqlparse.format("select * from a;\n", reindent_aligned=True)))
