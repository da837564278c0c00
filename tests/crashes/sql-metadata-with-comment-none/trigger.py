# sql-metadata 2.9.0: Parser.with_names reads token.next_token_not_comment.normalized;
# a `--` comment after AS leaves no non-comment token there, so the chain hits
# None (issue #390).
from sql_metadata import Parser

print(Parser("with aa as --sdfsdfsdf\n(SELECT * from table1)\nSELECT * FROM aa\n").tables)
