# more-itertools 11.1.0: interleave_evenly() with no iterables takes
# lengths_desc[0] of an empty list (issue #1192); 11.2.0 yields nothing.
from more_itertools import interleave_evenly

batches = [b for b in (["a", "b"], ["c"]) if len(b) > 5]  # every batch filtered out
merged = list(interleave_evenly(batches))
print("merged:", merged)
