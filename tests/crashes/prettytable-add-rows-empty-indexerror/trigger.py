# prettytable 3.15.0: add_rows([]) looks at rows[-1] to decide the divider and
# raises IndexError on an empty batch (issue #377); 3.15.1 returns early.
from prettytable import PrettyTable

table = PrettyTable(["name", "qty"])
table.add_rows([])
table.add_row(["apple", 3])
print(table)
