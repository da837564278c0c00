# prettytable 3.1.0: a None cell in a table built without field_names looks up
# none_format[field] for a field that has no entry and raises KeyError (issue #166);
# 3.1.1 registers the default field names.
from prettytable import PrettyTable

table = PrettyTable()
table.add_row(["apple", None])
print(table)
