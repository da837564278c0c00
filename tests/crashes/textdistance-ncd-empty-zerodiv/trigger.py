# textdistance 4.1.5: the normalized compression distance divides by the largest
# compressed length, which is 0 for two empty sequences.
import textdistance

print(textdistance.sqrt_ncd("", ""))
