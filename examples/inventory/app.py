"""Example app: prints a reorder report. Run it with `codesuture run` (see README)."""

import stock

ITEMS = [
    {"sku": "bolt", "qty": 3, "note": "order 10", "supplier": "acme"},
    {"sku": "nut", "qty": 50},  # no note, no supplier
]

for item in ITEMS:
    print(f"{item['sku']:6} qty={item['qty']:<3} note={stock.reorder_note(item)!s:9} supplier={stock.supplier_name(item)}")
