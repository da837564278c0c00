# tabulate 0.9.0: with maxcolwidths, _wrap_text_to_colwidths() casts each cell
# with its own type, and type(None)(None) raises (issues #271, #305, #312).
from tabulate import tabulate

print(tabulate([["spam", 41.9999], ["sausages", None]], headers=["name", "qty"], maxcolwidths=10))
