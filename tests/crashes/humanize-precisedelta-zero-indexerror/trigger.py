# humanize 3.0.1: precisedelta() of a delta that rounds to zero in every unit drops
# all the zero parts and then reads texts[-1] of an empty list (issue #159);
# 3.1.0 keeps the minimum unit ("0 seconds").
import datetime as dt

import humanize

elapsed = dt.timedelta(seconds=0)  # a job that finished within the clock's tick
print("took", humanize.precisedelta(elapsed))
