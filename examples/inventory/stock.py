"""Stock rules for the example inventory app. Two structural bugs live here:
an item without a "note" (KeyError) and an item whose supplier is unknown
(AttributeError on None). CodeSuture heals both; see ../../README.md."""

SUPPLIERS = {"acme": "ACME Corp"}


class Supplier:
    def __init__(self, name):
        self.name = name


def supplier_of(item):
    code = item.get("supplier")
    return Supplier(SUPPLIERS[code]) if code in SUPPLIERS else None


def reorder_note(item):
    return item["note"]


def supplier_name(item):
    return supplier_of(item).name
