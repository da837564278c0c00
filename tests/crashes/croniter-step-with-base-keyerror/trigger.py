# croniter 0.3.12: a step with a start value ("4/6", every 6 hours from 4) is not
# parsed as a step and falls through to the ALPHACONV lookup (issue #57).
from datetime import datetime

from croniter import croniter

print(croniter("0 4/6 * * *", datetime(2016, 4, 1)).get_next(datetime))
