"""Which exceptions raised by a call are structural crashes a call-site guard may
answer (``call_guard``): the test diagnosis makes at heal time and the guard makes
again each time it fires (:func:`codesuture.runtime.events.caught`). Standard library
only (``re``): the guard's slow path imports nothing heavy."""

from __future__ import annotations

import re

#: TypeError messages of a call made with the wrong arguments: a bug in the call, not
#: in the data it was given; no call-site guard hides it.
_SIGNATURE_ERRORS = re.compile(
    r"positional argument|keyword argument|required argument|takes (?:no|exactly|at most|at least) |"
    r"expected (?:at most |at least )?\d+ arguments?|arguments? \(\d+ given\)"
)
#: Built-in exceptions a call may raise on bad data (structural crashes).
_CALL_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ZeroDivisionError)


#: ValueError messages of the built-in conversions ``int(s)`` / ``float(s)`` of a string
#: that is no number (CPython's own wording), and their result's type.
_CONVERSIONS = (("invalid literal for int() with base", "0"), ("could not convert string to float", "0.0"))


def structural_call_error(exc: BaseException) -> bool:
    """True for a structural exception raised by a call: a built-in TypeError (not a
    wrong signature), AttributeError, KeyError, IndexError or ZeroDivisionError, an
    OverflowError converting to float, or a ValueError of a built-in conversion: a
    string that is no number for ``int()``/``float()`` (whatever expression names the
    callable: ``parsers[name](value)``), or over the interpreter's limit for int/str
    conversion. Program-defined exceptions (subclasses, ``json.JSONDecodeError``) are
    the program's own errors and never count."""
    if type(exc).__module__ != "builtins":
        return False
    msg = str(exc)
    if isinstance(exc, TypeError):
        return not _SIGNATURE_ERRORS.search(msg)
    if isinstance(exc, _CALL_ERRORS):
        return True
    if isinstance(exc, OverflowError):
        return "to float" in msg
    return isinstance(exc, ValueError) and ("for integer string conversion" in msg or conversion_zero(exc) is not None)


def conversion_zero(exc: BaseException) -> str | None:
    """The zero of the type a built-in ``int()``/``float()`` of a bad string (the
    ValueError *exc*) would have returned: ``"0"`` / ``"0.0"``; else None."""
    if type(exc) is not ValueError:
        return None
    msg = str(exc)
    return next((zero for prefix, zero in _CONVERSIONS if msg.startswith(prefix)), None)


__all__ = ["structural_call_error", "conversion_zero"]
