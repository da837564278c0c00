"""Crash analysis: traceback -> crash site (site) -> is it the program's own business
(handled) -> which guard answers it (diagnose), with the default its consumer needs
(consumer). Which files are CodeSuture's own or patchable (files), the handler names
(handled) and the consumer rules (consumer) are also what a guard asks when it fires,
so those three import nothing heavy at module level."""
