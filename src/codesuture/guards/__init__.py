"""Guard families. Each guard is a minimal instruction sequence that protects exactly
the failing operation and documents the value it yields:

==========================  ===========================================  =====================
guard                       protects                                     yields
==========================  ===========================================  =====================
null_guard (attr)           ``x.attr`` with x None                       None (or ``()`` when sized/iterated)
null_guard (method)         ``x.m(...)`` with x None                     None (or ``()`` when sized/iterated)
null_guard (operator)       ``x op y`` / ``x op= y`` with x None          None (x stays None)
null_guard (operand)        ``x op y`` / ``x op= y`` with y None          x (unchanged; not for / // %)
null_guard (membership)     ``k in x`` with x None                       False (``not in``: True)
null_guard (format)         ``f"{x:spec}"`` with x None                  ``''``
key_guard                   ``m[k]`` with k missing from mapping m        None (or ``()``)
subscript_guard             ``x[k]`` with x None                         None (or ``()``)
chain_subscript_guard       ``a[k1][k2]...`` failing at a link            None (or ``()``)
index_guard                 ``s[i]`` with i out of range                 None (or ``()``)
list_bound_guard            ``s[K]`` (constant K) out of range           None, ``()`` or ``''``
type_coercion_guard         ``int(s)``/``float(s)`` on a bad string      0 / 0.0
division_guard              ``a / b``, ``//``, ``%`` (and ``op=``), b == 0  0.0 for ``/``, else 0
str_coerce_guard            ``a + b``/``a += b`` mixing str and non-str   ``str(a) + str(b)``
file_guard                  ``open(path)`` of a missing path              empty io.StringIO / io.BytesIO
callable_guard              ``f(...)`` with f None                       None
call_guard (call)           a call raising in C / the standard library   consumer's, else the built-in's result type
call_guard (subscript)      ``m[k]`` failing in a stdlib ``__getitem__``  consumer's, else None
null_guard (store)          ``x.a = v``/``x[k] = v``/``del x[k]``, x None  nothing: the store is skipped
==========================  ===========================================  =====================

Defaults are consumer first (:func:`codesuture.crash.diagnose.diagnose`): ``()`` when
the guarded value is immediately sized, iterated or unpacked; the empty value of the
type that has the attribute or method read next (``.upper()`` -> ``''``); the other
operand's zero for arithmetic; ``''`` for formatting; ``''`` when a constant index reads
a list that a string splitter produced (``re.findall``, ``str.split``...). See :mod:`codesuture.crash.diagnose`. :func:`codesuture.guards.registry.registry` maps
guard names to their synthesizers; this package module imports none of them.
"""
