# asciichartpy 1.5.11: a constant series has interval max - min == 0 and
# `ratio = height / interval` divides by zero (kroitor/asciichart issue #10);
# 1.5.12 uses a ratio of 1 when the interval is 0.
import asciichartpy

print(asciichartpy.plot([5, 5, 5]))
