"""The EAFP check from code objects: which handler covers a crash, and what it names.

No source file is read: every case is compiled from a string with a fake file name
(the old check parsed the file and could not see these at all), on 3.11-3.13.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from codesuture.crash.handled import caught_by_program, caught_on_stack, catches, handler_names

CASES = {
    # source of f(d) that may catch d["k"]'s KeyError -> does the program handle KeyError?
    "specific": ("try:\n    return d['k']\nexcept KeyError:\n    return 0", True),
    "ancestor": ("try:\n    return d['k']\nexcept LookupError:\n    return 0", True),
    "tuple": ("try:\n    return d['k']\nexcept (ValueError, KeyError) as e:\n    return 0", True),
    "second clause": ("try:\n    return d['k']\nexcept ValueError:\n    return 1\nexcept KeyError:\n    return 0", True),
    "module attribute": ("import builtins\ntry:\n    return d['k']\nexcept builtins.KeyError:\n    return 0", True),
    "other class": ("try:\n    return d['k']\nexcept ValueError:\n    return 0", False),
    "broad Exception": ("try:\n    return d['k']\nexcept Exception:\n    raise", False),
    "bare except": ("try:\n    return d['k']\nexcept:\n    raise", False),
    "finally": ("try:\n    return d['k']\nfinally:\n    print('cleanup')", False),
    "with": ("import contextlib\nwith contextlib.nullcontext():\n    return d['k']", False),
    "after the try": ("try:\n    x = 1\nexcept KeyError:\n    pass\nreturn d['k']", False),
    "inside the handler": ("try:\n    raise ValueError\nexcept ValueError:\n    return d['k']", False),
    "nested inner": ("try:\n    try:\n        return d['k']\n    except KeyError:\n        return 0\nexcept ValueError:\n    pass", True),
    "nested outer": ("try:\n    try:\n        return d['k']\n    except ValueError:\n        return 0\nexcept KeyError:\n    return 1", True),
    "except star": ("try:\n    return d['k']\nexcept* KeyError:\n    pass", True),
    "comprehension": ("try:\n    return [d[k] for k in ['k']]\nexcept KeyError:\n    return 0", True),
}


def _crash(body: str, name: str = "<codesuture-case>"):
    src = "def f(d):\n" + textwrap.indent(body, "    ") + "\n"
    ns: dict = {}
    exec(compile(src, name, "exec"), ns)
    try:
        ns["f"]({})
    except BaseException as exc:  # noqa: BLE001 - collected for analysis
        return exc
    return None


@pytest.mark.parametrize("case", sorted(CASES))
def test_handler_names_from_code_objects(case):
    body, handled = CASES[case]
    # The live stack at the failing point: a probe called where d['k'] runs.
    src = ("import sys\nfrom codesuture.crash.handled import caught_on_stack\nSEEN = []\n"
           "def probe(d, k):\n    SEEN.append(caught_on_stack(sys._getframe(1), KeyError))\n    return d[k]\n"
           "def f(d):\n" + textwrap.indent(body.replace("d['k']", "probe(d, 'k')").replace("d[k] for", "probe(d, k) for"),
                                          "    ") + "\n")
    ns: dict = {}
    exec(compile(src, "<codesuture-twin>", "exec"), ns)
    try:
        ns["f"]({})
    except Exception:  # noqa: BLE001 - broad on purpose: `except KeyError` here would be EAFP too
        pass
    assert (ns["SEEN"][0] is not None) is handled, (case, ns["SEEN"])
    exc = _crash(body)
    if handled:
        assert exc is None  # the program really handles it
    else:
        assert isinstance(exc, KeyError), case
        assert caught_by_program(exc) is None


def test_names_of_a_clause_chain():
    import dis

    ns: dict = {}
    exec(compile("import builtins\ndef f(d):\n    try:\n        return d['k']\n    except ValueError:\n        raise\n"
                 "    except (IndexError, builtins.TypeError):\n        raise\n    except KeyError as e:\n        raise e\n",
                 "<codesuture-chain>", "exec"), ns)
    code = ns["f"].__code__
    at = next(i.offset for i in dis.get_instructions(code) if i.opname in ("BINARY_SUBSCR", "BINARY_OP"))
    assert handler_names(code, at) == {"ValueError", "IndexError", "TypeError", "KeyError"}


def test_caught_by_an_outer_frame_in_the_traceback():
    ns: dict = {}
    exec(compile("def inner(d):\n    return d['k']\n"
                 "def outer(d):\n    try:\n        return inner(d)\n    except KeyError:\n        raise\n",
                 "<codesuture-outer>", "exec"), ns)
    with pytest.raises(KeyError) as info:
        ns["outer"]({})
    assert caught_by_program(info.value) == "<codesuture-outer>:5"


def test_broad_handlers_are_not_eafp():
    assert not catches(frozenset({"Exception"}), KeyError)
    assert not catches(frozenset({"BaseException"}), KeyError)
    assert catches(frozenset({"LookupError"}), KeyError)
    assert not catches(frozenset(), KeyError)


def test_no_source_file_is_read(monkeypatch):
    import linecache

    def forbidden(*a, **k):
        raise AssertionError("a source file was read")

    monkeypatch.setattr(linecache, "getlines", forbidden)
    monkeypatch.setattr(linecache, "getline", forbidden)
    exc = _crash(CASES["finally"][0])
    assert caught_by_program(exc) is None
    ns: dict = {}
    exec(compile("def g(d):\n    try:\n        return d['k']\n    except KeyError:\n        raise\n", "<codesuture-g>",
                 "exec"), ns)
    with pytest.raises(KeyError) as info:
        ns["g"]({})
    assert caught_by_program(info.value) == "<codesuture-g>:3"

