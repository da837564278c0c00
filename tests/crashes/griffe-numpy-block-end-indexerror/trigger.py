# griffe 0.22.1: the numpy-style docstring parser looks two lines past a blank line
# for a section underline (`lines[new_offset + 2]`) and raises IndexError when the
# blank line is the second-to-last one (issue #97); 0.22.2 checks the bound first.
from griffe.dataclasses import Docstring
from griffe.docstrings.parsers import Parser, parse

text = """Parse a config file.

Examples
--------
>>> load("app.toml")

That is all.
"""
sections = parse(Docstring(text), Parser.numpy)
print([section.kind.value for section in sections])
