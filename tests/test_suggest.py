"""``codesuture suggest``: every patch written as Python source at its line.

In process, for every guard kind (and form) of the registry: a module crashes, the
healer patches it live, :func:`~codesuture.review.suggest.rewrite_source` writes the
recorded patches as source, and the rewritten module (plain Python, no overlay) is run
on the crashing input and on probes: it gives what the live guard gives wherever the
guard's value is static (the spec's default, or a literal operand), the documented
static default where the live guard decides at run time (and the comment says so), and
what the original code gives on healthy inputs. Operands are evaluated once and in
their original order.

End to end: a store of an app healed by ``codesuture run`` (folder and bundle) gives a
diff that ``patch -p1`` and ``git apply`` apply from the app root; the patched copy runs
without CodeSuture and prints what the healed run printed. A stale source is reported.

Marked ``crashes``: every shared real crash (../shared/crashes) healed with ``codesuture
run`` in the buggy release's venv, suggested, applied to a copy of the installed module,
and re-run plainly with that copy first on ``sys.path``: no crash, and where the healed
output was the fixed release's, the same output.
"""

from __future__ import annotations

import collections
import importlib
import itertools
import re
import shutil
import sys
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from codesuture.guards.families import FAMILIES
from codesuture.review.suggest import rewrite_source, suggest, unified_diff
from codesuture.runtime.healer import Healer
from crash_venvs import SKIP_MSG, VenvError, case_venv, load_cases
from heal_helpers import PY, as_data, boot, clean_env, cli, heal, other_pythons, plain, run, write

_COUNTER = itertools.count()
MISSING = "/nonexistent-codesuture-dir/missing.txt"


# ----------------------------------------------------------------------------- in process


@dataclass
class Healed:
    """A module healed live: its source, the records, the value the patched code gave."""

    name: str
    source: str
    path: Path
    module: types.ModuleType
    records: list
    value: Any
    new: str = ""
    failures: list = field(default_factory=list)

    def suggested(self) -> types.ModuleType:
        """The rewritten source, compiled and run as a fresh module (no CodeSuture)."""
        mod = types.ModuleType(self.name + "_suggested")
        exec(compile(self.new, str(self.path), "exec"), mod.__dict__)  # noqa: S102 - the test's own module
        return mod


def heal_live(tmp_path: Path, source: str, call: Callable[[Any], Any], heals: int = 4,
              control_flow: bool = False) -> Healed:
    """Import *source* as a fresh module, call ``call(module)`` and heal each crash live
    (at most *heals*); then write the records as source. *control_flow*: the module is
    opted in to guards that decide (``--control-flow``), for a value this harness keeps
    to decide with later, where the value flow would fail closed."""
    name = f"sgmod_{next(_COUNTER)}"
    path = tmp_path / f"{name}.py"
    text = textwrap.dedent(source).lstrip("\n")
    path.write_text(text)
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
    healer = Healer(None, control_flow=(name,) if control_flow else ())
    records = []
    for _ in range(heals + 1):
        try:
            value = as_data(call, mod)  # handed on as data: the tests decide with it later
            break
        except Exception as exc:  # noqa: BLE001 - the crash being healed
            result = healer.heal(exc)
            assert result is not None, f"not healed: {exc!r}"
            records.append(result.record)
    else:
        raise AssertionError("still crashing")
    assert records, "the call did not crash"
    h = Healed(name, text, path, mod, records, value)
    h.new, _, h.failures = rewrite_source(text, records, module=name)
    sys.modules.pop(name, None)
    return h


@dataclass(frozen=True)
class Kind:
    """One rewrite: ``source`` defines ``f``; ``crash`` are the arguments that crash
    it; ``snippet`` must appear in the rewritten source; ``expect`` is what the
    suggested source returns for ``crash`` (``live``: what the patched code returns;
    differs only where the live guard types its value at run time); ``probes`` are
    more argument tuples on which the suggested source and the live patched code must
    agree."""

    id: str
    guard: str
    source: str
    crash: tuple
    snippet: str
    expect: Any
    probes: tuple = ()
    live: Any = "same"


class NS:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


KINDS = [
    Kind("attr", "null_guard/attr", "def f(x):\n    return x.real\n", (None,),
         "return x.real if x is not None else None", None, ((3,), (2.5,))),
    Kind("attr-chain", "null_guard/attr", "def f(n):\n    return n.kind.name\n", (None,),
         "return n.kind.name if n is not None and n.kind is not None else None", None,
         ((NS(kind=NS(name="a")),), (NS(kind=None),))),
    Kind("attr-chain-method", "null_guard/attr", "def f(n):\n    return n.name.strip()\n", (None,),
         "return n.name.strip() if n is not None and n.name is not None else ''.strip()", "",
         ((NS(name=" a "),), (NS(name=None),))),
    Kind("method-str", "null_guard/method", "def f(x):\n    v = x.replace('a', 'b')\n    return v\n", (None,),
         "v = x.replace('a', 'b') if x is not None else ''.replace('a', 'b')", "", (("abc",),)),
    Kind("method-dict", "null_guard/method", "def f(x):\n    return x.get('k', 5)\n", (None,),
         "return x.get('k', 5) if x is not None else {}.get('k', 5)", 5, (({"k": 1},),)),
    # Inside an f-string's replacement field '' cannot be nested on 3.11: str().
    Kind("method-fstring", "null_guard/method", "def f(x):\n    return f'<{x.strip()}>'\n", (None,),
         # formatted: the consumer's '' (an empty str, written without quotes in the field)
         "return f'<{(x.strip() if x is not None else str())}>'", "<>", ((" a ",),)),
    Kind("method-unknown", "null_guard/method", "def f(x):\n    return x.decode('utf8')\n", (None,),
         "return x.decode('utf8') if x is not None else None", None, ((b"ab",),)),
    Kind("method-sized", "null_guard/method", "def f(x):\n    return len(x.split(','))\n", (None,),
         "return len(x.split(',') if x is not None else ())", 0, (("a,b",),)),
    # The live guard reads None as the int 0 (typed by the other operand at run time);
    # the suggestion leaves the target None, and its comment says what the guard does.
    Kind("operator-aug", "null_guard/operator", "def f(total, k):\n    total *= k\n    return total\n", (None, 3),
         "    if total is not None:\n        total *= k\n", None, ((2, 3), ([1], 2)), live=0),
    Kind("operator-literal", "null_guard/operator", "def f(x):\n    return x + 1\n", (None,),
         "return x + 1 if x is not None else 1", 1, ((2,),)),
    Kind("operand-aug", "null_guard/operand", "def f(x):\n    total = 10\n    total += x\n    return total\n", (None,),
         "    if x is not None:\n        total += x\n", 10, ((5,),)),
    Kind("operand", "null_guard/operand", "def f(a, b):\n    return a * b\n", (3, None),
         "return a * b if b is not None else a", 3, ((2, 4), ("ab", 2))),
    Kind("compare", "null_guard/compare", "def f(x):\n    v = x < 3\n    return v\n", (None,),
         "v = x < 3 if x is not None else True", True, ((5,), (1,))),
    Kind("compare-right", "null_guard/compare", "def f(x):\n    v = 3 <= x\n    return v\n", (None,),
         "v = 3 <= x if x is not None else False", False, ((5,), (1,))),
    # (A membership test that rejoins shapes data; one whose sides return apart is a gate.)
    Kind("membership", "null_guard/membership", "def f(k, x):\n    y = [k] if k in x else []\n    return y\n",
         ("a", None), "y = [k] if (x is not None and k in x) else []", [], (("a", "abc"), ("z", ["a"]))),
    Kind("membership-not", "null_guard/membership", "def f(k, x):\n    return k not in x\n", ("a", None),
         "return x is None or k not in x", True, (("a", "abc"), ("z", "abc"))),
    Kind("key", "key_guard", "def f(d):\n    return d['k']\n", ({},),
         "return d.get('k')", None, (({"k": 1},), ({"a": 1, "b": "x"},))),
    Kind("key-typed", "key_guard", "def f(d):\n    return d['k']\n", ({"a": "x"},),
         "return d.get('k')", None, (({"k": 1},),), live=""),
    Kind("key-sized", "key_guard", "def f(d):\n    return len(d['k'])\n", ({},),
         "return len(d.get('k', ()))", 0, (({"k": [1, 2]},),)),
    Kind("subscript", "subscript_guard", "def f(x):\n    return x['a']\n", (None,),
         "return x['a'] if x is not None else None", None, (({"a": 1},),)),
    Kind("subscript-slice", "subscript_guard", "def f(x, i):\n    return x[i:3]\n", (None, 1),
         "return x[i:3] if x is not None else None", None, (("abcd", 1),)),
    Kind("chain-key", "chain_subscript_guard/key", "def f(d):\n    return d['a']['b']\n", ({},),
         "return d['a']['b'] if d.get('a') is not None else None", None,
         (({"a": {"b": 1}},), ({"a": None},))),
    Kind("chain-index", "chain_subscript_guard/index", "def f(s):\n    return s[0][1]\n", ([],),
         "return s[0][1] if len(s) > 0 and s[0] is not None else None", None, (([[1, 2]],), ([None],))),
    Kind("index", "index_guard", "def f(s, i):\n    return s[i]\n", ([], 5),
         "return s[i] if -len(s) <= i < len(s) else None", None,
         (([1, 2], 1), ([1, 2], -2), ([1, "a"], 5), ([1, "a"], -3))),
    Kind("list-bound", "list_bound_guard", "def f(s):\n    return s[-1]\n", ([],),
         "return s[-1] if len(s) >= 1 else None", None, (([1, 2],),)),
    Kind("list-bound-sized", "list_bound_guard", "def f(s):\n    return len(s[0])\n", ([],),
         "return len(s[0] if len(s) > 0 else ())", 0, ((["ab"],),)),
    Kind("list-bound-splitter", "list_bound_guard", "import re\ndef f(t):\n    return re.findall('x', t)[0]\n", ("",),
         "return _cs_1[0] if len((_cs_1 := re.findall('x', t))) > 0 else ''", "", (("axb",),)),
    Kind("division", "division_guard", "def f(a, b):\n    return a / b\n", (1, 0),
         "return a / b if b != 0 else 0.0", 0.0, ((1, 4),)),
    Kind("floordiv", "division_guard", "def f(a, b):\n    return a // b\n", (7, 0),
         "return a // b if b != 0 else 0", 0, ((7, 2),)),
    Kind("division-aug", "division_guard", "def f(a, b):\n    a %= b\n    return a\n", (7, 0),
         "    if b != 0:\n        a %= b\n    else:\n        a = 0\n", 0, ((7, 4),)),
    Kind("str-literal", "str_coerce_guard", "def f(n):\n    return 'n=' + n\n", (5,),
         "return 'n=' + str(n)", "n=5", (("x",),)),
    Kind("str-general", "str_coerce_guard", "def f(a, b):\n    return a + b\n", ("a", 1),
         "return str(a) + str(b) if (type(a) is str) != (type(b) is str) else a + b", "a1",
         ((1, 2), ("a", "b"), (2, "x"), ([1], [2]))),
    Kind("str-aug", "str_coerce_guard", "def f(s, n):\n    s += n\n    return s\n", ("n=", 5),
         "    if (type(s) is str) != (type(n) is str):\n        s = str(s) + str(n)\n    else:\n        s += n\n",
         "n=5", (("a", "b"), (1, 2))),
    Kind("str-aug-literal", "str_coerce_guard", "def f(s):\n    s += '!'  # mark\n    return s\n", (5,),
         "    s = str(s) + '!'  # mark\n", "5!", (("a",),)),
    Kind("callable", "callable_guard", "def f(cb):\n    return cb(1)\n", (None,),
         "return cb(1) if cb is not None else None", None, ((lambda v: v + 1,),)),
    Kind("coercion-wrap", "type_coercion_guard", "def f(s):\n    x = int(s)\n    return x\n", ("abc",),
         "    try:\n        x = int(s)\n    except ValueError:\n        x = 0\n", 0, (("12",),)),
    Kind("coercion-hoist", "type_coercion_guard", "def f(s):\n    return 1 + float(s)\n", ("abc",),
         "    try:\n        _cs_1 = float(s)\n    except ValueError:\n        _cs_1 = 0.0\n    return 1 + _cs_1\n",
         1.0, (("2.5",),)),
    Kind("coercion-none", "type_coercion_guard", "def f(s):\n    return int(s)\n", (None,),
         "return int(s) if s is not None else 0", 0, (("7",),)),
    Kind("file-with", "file_guard", "def f(p):\n    with open(p) as fh:\n        return fh.read()\n", (MISSING,),
         "    try:\n        _cs_1 = open(p)\n    except FileNotFoundError:\n        import io as _cs_io\n"
         "        _cs_1 = _cs_io.StringIO()\n    with _cs_1 as fh:\n", "", ()),
    Kind("file-binary", "file_guard", "def f(p):\n    fh = open(p, 'rb')\n    return fh.read()\n", (MISSING,),
         "    try:\n        fh = open(p, 'rb')\n    except FileNotFoundError:\n        import io as _cs_io\n"
         "        fh = _cs_io.BytesIO()\n", b"", ()),
    Kind("call-len", "call_guard/call", "def f(x):\n    n = len(x)\n    return n\n", (None,),
         "    try:\n        n = len(x)\n    except TypeError:\n        n = 0\n", 0, (([1, 2],), ("abc",))),
    Kind("call-subscript", "call_guard/subscript", "def f(m):\n    return m['k']\n", (collections.UserDict(),),
         "    try:\n        return m['k']\n    except KeyError:\n        return None\n", None,
         ((collections.UserDict(k=2),),)),
    Kind("store-attr", "null_guard/store", "def f(o):\n    o.x = 1\n    return 'done'\n", (None,),
         "    if o is not None:\n        o.x = 1\n", "done", ()),
    Kind("store-item", "null_guard/store", "def f(o):\n    o['k'] = 1\n    return 'done'\n", (None,),
         "    if o is not None:\n        o['k'] = 1\n", "done", (({},),)),
]


def test_every_guard_of_the_families_table_has_a_rewrite_here():
    guards = {k.guard.split("/")[0] for k in KINDS}
    assert guards == set(FAMILIES)
    forms = {k.guard.split("/")[1] for k in KINDS if k.guard.startswith("null_guard/")}
    assert forms == {f.name for f in FAMILIES["null_guard"].forms if not f.no_rewrite}


@pytest.mark.parametrize("kind", KINDS, ids=[k.id for k in KINDS])
def test_rewrite_kind(kind: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    # The harness keeps what the guard yields, to compare it later: a truth value kept so
    # (compare, membership) fails closed unless the module is opted in.
    h = heal_live(tmp_path, kind.source, lambda m: m.f(*kind.crash), control_flow=True)
    got = {r.guard.guard + (f"/{r.guard.form}" if r.guard.form else "") for r in h.records}
    assert got == {kind.guard}, h.records
    assert not h.failures, h.failures
    assert kind.snippet in h.new, h.new
    assert f"# codesuture: {kind.guard}" in h.new
    # The rewritten module is valid Python and does what the guard does, without CodeSuture.
    sug = h.suggested()
    value = sug.f(*kind.crash)
    assert value == kind.expect and type(value) is type(kind.expect), (value, h.new)
    if kind.live == "same":
        assert h.value == value and type(h.value) is type(value)
    else:
        assert h.value == kind.live
        assert "the live guard decides at run time" in h.new
    for args in kind.probes:
        assert sug.f(*args) == as_data(h.module.f, *args), (args, h.new)


def test_operands_are_evaluated_once_in_their_order(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    h = heal_live(tmp_path, """
        log = []

        def a():
            log.append("a")
            return 1.5

        def b():
            log.append("b")
            return 0

        def f():
            return float(a()) / b()
    """, lambda m: m.f())
    assert "(_cs_1 := float(a()), _cs_2 := b())[1] != 0" in h.new, h.new
    sug = h.suggested()
    assert sug.f() == 0.0 and sug.log == ["a", "b"]
    h.module.log.clear()
    assert as_data(h.module.f) == 0.0 and h.module.log == ["a", "b"]


def test_patches_in_one_expression_compose(tmp_path, monkeypatch):
    """``d['k'].render()`` heals twice (the key, then ``None.render()``: no built-in type
    has ``render``, so the key guard yields None): both rewrites land in the one
    expression, the inner one inside the outer."""
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))

    class Page:
        def render(self) -> str:
            return "page"

    h = heal_live(tmp_path, "def f(d):\n    return d['k'].render()\n", lambda m: m.f({}))
    assert [r.guard.guard for r in h.records] == ["key_guard", "null_guard"]
    assert not h.failures
    assert "return d.get('k').render() if d.get('k') is not None else None" in h.new, h.new
    assert h.new.count("# codesuture:") == 2
    sug = h.suggested()
    assert sug.f({}) is h.value is None and sug.f({"k": Page()}) == "page"


def test_impure_receivers_are_bound_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    h = heal_live(tmp_path, """
        calls = []

        def get(v):
            calls.append(v)
            return v

        def f(v):
            return get(v).upper()
    """, lambda m: m.f(None))
    assert "return _cs_1.upper() if (_cs_1 := get(v)) is not None else ''.upper()" in h.new, h.new
    sug = h.suggested()
    assert sug.f(None) == "" and sug.f("a") == "A" and sug.calls == [None, "a"]


def test_a_statement_sharing_its_line_is_reported_not_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    h = heal_live(tmp_path, "def f(total, k):\n    if k: total *= k\n    return total\n", lambda m: m.f(None, 2))
    assert h.new == h.source
    (failure,) = h.failures
    assert "f null_guard/operator" in failure.where
    assert "needs a statement that has its line(s) to itself" in failure.reason


def test_a_call_evaluated_conditionally_is_not_hoisted(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    h = heal_live(tmp_path, "def f(vals):\n    return [int(v) for v in vals]\n", lambda m: m.f(["1", "x"]))
    assert h.value == [1, 0]
    (failure,) = h.failures
    assert "not evaluated unconditionally" in failure.reason


def test_a_rewrite_python_forbids_is_reported(tmp_path, monkeypatch):
    """The receiver is a call, so it must be bound once, but an assignment expression
    may not stand in a comprehension's iterable: reported, the module left as it is."""
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    h = heal_live(tmp_path, "def get():\n    return None\n\ndef f():\n    return [w for w in get().split()]\n",
                  lambda m: m.f())
    assert h.new == h.source
    (failure,) = h.failures
    assert "the rewrite does not compile: SyntaxError" in failure.reason and "f null_guard/method" in failure.where


def test_source_with_crlf_and_no_final_newline(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    name = "sgcrlf"
    path = tmp_path / f"{name}.py"
    path.write_bytes(b"def f(d):\r\n    return d['k']")
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(KeyError) as exc:
        mod.f({})
    result = Healer(None).heal(exc.value)
    sys.modules.pop(name, None)
    text = path.read_bytes().decode()
    new, done, failures = rewrite_source(text, [result.record], module=name)
    assert not failures and len(done) == 1
    assert new == "def f(d):\r\n    # codesuture: key_guard (KeyError): None for a missing key; the live guard decides " \
                  "at run time: what the caller's consumer needs, else the empty value from container elements, else " \
                  "None\r\n    return d.get('k')"
    diff = unified_diff(text, new, f"{name}.py")
    assert diff.endswith("+    return d.get('k')\n\\ No newline at end of file\n"), diff
    if shutil.which("patch"):
        work = tmp_path / "apply"
        work.mkdir()
        (work / f"{name}.py").write_bytes(path.read_bytes())
        (tmp_path / "d.diff").write_bytes(diff.encode())
        p = run(["patch", "-p1", "-i", str(tmp_path / "d.diff")], cwd=work)
        assert p.returncode == 0, str(p)
        assert (work / f"{name}.py").read_bytes().decode() == new


def test_a_position_that_is_not_the_expression_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    h = heal_live(tmp_path, "def f(d):\n    return d['k']\n", lambda m: m.f({}))
    moved = h.records[0]._replace(col=h.records[0].col + 1)
    new, done, failures = rewrite_source(h.source, [moved], module=h.name)
    assert new == h.source and not done
    assert "no Subscript expression at line 2" in failures[0].reason
    other = h.records[0]._replace(qualname="g")
    _, _, failures = rewrite_source(h.source, [other], module=h.name)
    assert "lies in f, not in g" in failures[0].reason


# ----------------------------------------------------------------------------- end to end

APP_LIB = '''
def price(item):
    return item["price"] * item["qty"]


def label(item):
    return item["name"].strip().title()


def share(part, whole):
    return round(100 * part / whole, 1)
'''

APP_MAIN = '''
import lib


def mean(xs):
    return sum(xs) / len(xs)


items = [{"name": " pen ", "price": 2, "qty": 3}, {"price": 5, "qty": 1, "sku": "x"}]
for it in items:
    print(lib.label(it), lib.price(it), lib.share(lib.price(it), 0))
print(mean([]))
'''


@pytest.fixture
def healed_app(tmp_path: Path) -> tuple[Path, Path, str]:
    """(app root, store, healed stdout): a two-file app (two patches in lib.py, one in
    the script) healed by ``codesuture run``;
    its output is the healed program's, run from the overlays alone (``run`` replays
    the script, so its output repeats the lines printed before each crash)."""
    app = tmp_path / "app"
    write(app / "pyproject.toml", "[project]\nname = 'sgapp'\nversion = '0'\n")
    write(app / "lib.py", APP_LIB)
    write(app / "main.py", APP_MAIN)
    ov = app / "overlays"
    healed = heal(app / "main.py", ov, "--retries", "8", cwd=app)
    assert healed.returncode == 0, str(healed)
    # One heal (the run is one unit of work) of three guards: `item["name"]` yields the ''
    # that `.strip()` needs, so `None.strip()` never happens.
    assert healed.stderr.count("codesuture: WARNING patched lib:") == 2, healed.stderr
    assert healed.stderr.count("codesuture: WARNING patched __main__:") == 1, healed.stderr
    booted = boot(app / "main.py", ov, cwd=app)
    assert booted.returncode == 0 and "patched" not in booted.stderr, str(booted)
    return app, ov, booted.stdout


def _cli(*args: str) -> Any:
    from click.testing import CliRunner

    from codesuture.cli.group import cli as main

    return CliRunner().invoke(main, [*args], catch_exceptions=False)


def _copy_app(app: Path, dest: Path) -> Path:
    shutil.copytree(app, dest, ignore=shutil.ignore_patterns("overlays*", "__pycache__"))
    return dest


def test_cli_diff_applies_with_patch_and_git(healed_app, tmp_path):
    app, ov, healed_out = healed_app
    out = tmp_path / "fix.diff"
    r = _cli("suggest", "--app-root", str(app), "-o", str(out), str(ov))
    assert r.exit_code == 0, r.output
    diff = out.read_text()
    assert diff.startswith("# codesuture suggest: app:lib.py (lib); apply with patch -p1 from the app root\n")
    assert "# codesuture suggest: app:main.py (__main__); apply with patch -p1 from the app root\n" in diff
    assert "--- a/lib.py\n+++ b/lib.py\n" in diff and "--- a/main.py\n+++ b/main.py\n" in diff
    assert "+    return _cs_1 / _cs_2 if (_cs_1 := sum(xs), _cs_2 := len(xs))[1] != 0 else 0.0\n" in diff
    assert '+    return item.get("name", \'\').strip().title()\n' in diff, diff  # the '' that .strip() needs
    assert "+    return round(100 * part / whole if whole != 0 else 0.0, 1)\n" in diff
    assert r.output.count("suggested: lib:") == 2 and r.output.count("suggested: __main__:") == 1
    tools = [t for t in ("patch", "git") if shutil.which(t)]
    if not tools:
        pytest.skip("neither patch nor git is installed")
    for tool in tools:
        copy = _copy_app(app, tmp_path / f"copy-{tool}")
        cmd = ["patch", "-p1", "-i", str(out)] if tool == "patch" else ["git", "apply", "-p1", str(out)]
        p = run(cmd, cwd=copy)
        assert p.returncode == 0, str(p)
        fixed = plain(copy / "main.py", cwd=copy)
        assert fixed.returncode == 0, str(fixed)
        assert fixed.stdout == healed_out


def test_cli_on_a_bundle_and_one_overlay(healed_app, tmp_path):
    app, ov, _ = healed_app
    priv, keys = tmp_path / "k.key", tmp_path / "keys"
    assert _cli("keygen", "--private-key", str(priv), "--public-key", str(keys / "k.pem")).exit_code == 0
    bundle = tmp_path / "deploy.cso"
    made = run([PY, "-m", "codesuture", "bundle", "create", str(ov), "-o", str(bundle), "--key", str(priv),
                "--app-root", str(app)], cwd=app)
    assert made.returncode == 0, str(made)
    from_folder = suggest(str(ov), str(app)).text()
    assert from_folder and suggest(str(bundle), str(app)).text() == from_folder
    (overlay,) = ov.glob("lib.*.overlay")
    one = suggest(str(overlay), str(app))
    assert [s.module for s in one.suggestions] == ["lib"] * 2 and one.text() in from_folder
    # Without --app-root, a store inside the app finds the source beside it.
    assert suggest(str(ov)).text() == from_folder


def test_one_suggestion_per_patch_across_interpreters(healed_app):
    """A store rebuilt for another Python holds each patch twice (one overlay per
    interpreter, same source): each is suggested once."""
    others = other_pythons()
    if not others:
        pytest.skip("no other Python 3.11-3.13 interpreter found (repo .venv-3.X, pyenv or PATH)")
    app, ov, _ = healed_app
    before = suggest(str(ov), str(app))
    r = cli("rebuild", "--python", others[0], "--app-root", app, ov, cwd=app)
    assert r.returncode == 0, str(r)
    assert len(list(ov.glob("*.overlay"))) == 4
    after = suggest(str(ov), str(app))
    assert not after.failures and len(after.suggestions) == len(before.suggestions) == 3
    assert after.text() == before.text()


def test_a_changed_source_is_reported(healed_app, tmp_path):
    app, ov, _ = healed_app
    (app / "lib.py").write_text(APP_LIB.replace("round(", "round (", 1))
    r = _cli("suggest", "--app-root", str(app), str(ov))
    assert r.exit_code == 1
    assert "is not the source the overlay was built from" in r.output
    assert not r.output.startswith("---")
    missing = _cli("suggest", "--app-root", str(tmp_path), str(tmp_path / "nothing"))
    assert missing.exit_code == 2  # click: the path does not exist


def test_help_is_true():
    r = _cli("suggest", "--help")
    assert r.exit_code == 0
    assert "patch -p1" in r.output and "--app-root" in r.output and "-o, --output" in r.output
    assert "suggest" in _cli("--help").output


# ----------------------------------------------------------------------------- real crashes

SHARED = load_cases(repo=False)
SHARED_PARAMS = SHARED or [None]


def _apply(diff: Path, directory: Path) -> None:
    if shutil.which("patch"):
        p = run(["patch", "-p1", "-i", str(diff)], cwd=directory)
    elif shutil.which("git"):
        p = run(["git", "apply", "-p1", str(diff)], cwd=directory)
    else:
        pytest.skip("neither patch nor git is installed")
    assert p.returncode == 0, str(p)


@pytest.mark.crashes
@pytest.mark.parametrize("case", SHARED_PARAMS, ids=[c.id for c in SHARED] or ["<no shared folder>"])
def test_suggestion_fixes_the_real_crash(case, crash_venv_dir: Path, tmp_path: Path):
    if case is None:
        pytest.skip(SKIP_MSG)
    reason = case.skip_reason(needs_heal=False)
    if reason:
        pytest.skip(reason)
    from test_crashes import same_as_fixed, xfail_if_refused

    try:
        vpy = str(case_venv(case, crash_venv_dir))
    except VenvError as exc:
        pytest.fail(str(exc))
    work = tmp_path / case.id
    shutil.copytree(case.path, work)
    trigger = work / case.trigger.name
    overlays = tmp_path / "overlays"
    healed = heal(trigger, overlays, python=vpy, cwd=work)
    if healed.returncode != 0:
        xfail_if_refused(healed)
    assert healed.returncode == 0, str(healed)

    diff = tmp_path / "fix.diff"
    s = run([vpy, "-m", "codesuture", "suggest", "-o", str(diff), str(overlays)], cwd=work)
    assert s.returncode == 0, str(s)
    text = diff.read_text()
    paths = re.findall(r"^\+\+\+ b/(\S+)", text, re.M)
    assert case.data["innermost_frame"]["file"] in paths, text

    # A copy of the installed module(s), patched, first on sys.path: plain Python, no overlay.
    site = run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work).stdout.strip()
    src = tmp_path / "src"
    src.mkdir()
    for top in {p.split("/")[0] for p in paths}:
        origin = Path(site, top)
        if origin.is_dir():
            shutil.copytree(origin, src / top, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, src / top)
    _apply(diff, src)
    env = clean_env(PYTHONPATH=str(src))
    where = run([vpy, "-c", f"import {case.module} as m; print(m.__file__)"], cwd=work, env=env)
    assert where.stdout.strip().startswith(str(src)), str(where)
    fixed = plain(trigger, python=vpy, cwd=work, env=env)
    assert fixed.returncode == 0, f"{text}\n{fixed}"
    assert "codesuture" not in fixed.stderr
    same = same_as_fixed(case, healed)
    print(f"SUGGEST {case.id} {sys.version_info[0]}.{sys.version_info[1]}: applied yes, no crash yes, "
          f"healed = fixed release {'yes' if same else 'no'}, suggested = healed "
          f"{'yes' if fixed.stdout == healed.stdout else 'no'}")
    if same:
        assert fixed.stdout == healed.stdout, f"{text}\n{fixed}\nhealed:\n{healed.stdout}"
