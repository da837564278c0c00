"""Guard families. Each guard is a minimal instruction sequence that protects exactly
the failing operation and documents the value it yields.

:mod:`codesuture.guards.families` is the one table of the families: per family its
synthesizer (in :mod:`~codesuture.guards.null`, :mod:`~codesuture.guards.subscript`,
:mod:`~codesuture.guards.arith`, :mod:`~codesuture.guards.calls`), the exceptions the
diagnosis may choose it for, its forms and default rule, its diff budget and the source
rewrite ``codesuture suggest`` writes for it. ``docs/guards.md`` has the user's table
(what each guard checks and yields), one row per family form, checked against it.

Defaults are consumer first (:func:`codesuture.crash.diagnose.diagnose`): ``()`` when
the guarded value is immediately sized, iterated or unpacked; the empty value of the
type that has the attribute or method read next (``.upper()`` -> ``''``); the other
operand's zero for arithmetic and for a comparison with a constant; ``''`` for
formatting; ``''`` when a constant index reads a list that a string splitter produced
(``re.findall``, ``str.split``...). A value returned unchanged (``return d[k]``) whose
own rule knows a type at most asks, when it fires, the consumer of the caller it is
returned to (:func:`codesuture.runtime.callers.consumer_default`). This package module
imports none of the guard modules.
"""
