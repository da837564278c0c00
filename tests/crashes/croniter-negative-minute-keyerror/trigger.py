# croniter 0.3.12: an out-of-range field such as "-90" is looked up in
# ALPHACONV and raises KeyError (issue #25); the fix raises CroniterBadCronError.
from datetime import datetime

from croniter import croniter

print(croniter("-90 * * * *", datetime(2016, 4, 1)).get_next(datetime))
