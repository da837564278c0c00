"""Small leaf helpers with no CodeSuture imports of their own: files (regular-file
reads, atomic writes, locks) and clock (RFC 3339 UTC timestamps)."""
