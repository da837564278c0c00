# markdownify 0.12.1: convert_li() does int(parent.get("start")) on any truthy
# start attribute, so <ol start="a"> raises ValueError (PR #127).
from markdownify import markdownify

print(repr(markdownify('<ol start="a"><li>first</li><li>second</li></ol>')))
