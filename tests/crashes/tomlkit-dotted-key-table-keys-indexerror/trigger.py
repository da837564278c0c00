# tomlkit 0.12.3: setting dotted keys in several sub-tables of a parsed document
# reads self._table_keys[-1] of an empty list and raises IndexError (issue #332);
# 0.12.4 checks the list first.
import tomlkit

doc = tomlkit.parse(
    "[a]\n    [a.b]\n    b = 0\n\n[b]\n    [b.b]\n    q = '123'\n    c = '43543'\n"
)
for section in ("a", "b"):
    for label, obj in doc[section].items():
        obj[tomlkit.key(["a", "b"])] = "test1"
for section in ("a", "b"):
    for label, obj in doc[section].items():
        obj[tomlkit.key(["a", "c"])] = "test2"
print(tomlkit.dumps(doc), end="")
