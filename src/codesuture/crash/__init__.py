"""Crash analysis: traceback -> crash site (site) -> is it the program's own business
(handled) -> which guard answers it (diagnose)."""
