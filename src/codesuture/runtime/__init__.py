"""Boundaries where unhandled exceptions are caught and replay is decided: the healer
they share (healer), scripts and ``-m`` modules (script), ``http.server`` and WSGI
(web), and a decorator for user-marked units of work (boundary)."""
