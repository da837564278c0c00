# progress 1.5: Bar.iter() over an empty list updates the bar, whose `progress`
# property divides index by max == 0 (PR #79, also #72); 1.6 treats max 0 as done.
from progress.bar import Bar

pending = []  # nothing to sync this time
synced = [item for item in Bar("sync").iter(pending)]
print("synced", len(synced))
