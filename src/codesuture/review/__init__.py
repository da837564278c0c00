"""The review side, on what is deployed (a folder or a bundle): what each overlay does
(explain, read from its signed Statement when it is signed), the state of a store
(audit: as the loader would admit it, and against the source found here), and taking
patches back out (rollback, recorded so the old files cannot come back)."""
