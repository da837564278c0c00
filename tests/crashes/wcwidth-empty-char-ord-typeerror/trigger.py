# wcwidth 0.2.8: wcwidth('') calls ord('') and raises TypeError (issue #24, "wc might
# be an empty string"); 0.2.9 gives width 0 for an empty string.
from wcwidth import wcwidth

cells = ["日本", "", "ok"]
print("lead widths:", [wcwidth(cell[:1]) for cell in cells])
