"""Every guard x every context, on the running Python.

For each (guard, context) a script in ``tmp_path`` crashes with the guard's exception
in that context and prints the guarded expression's value (``RESULT <repr>``). Then:

1. plain ``python script.py`` crashes with that exception (the case is real);
2. ``python -m codesuture run --overlays D script.py`` exits 0, prints the value the
   guard documents (see :mod:`codesuture.guards`), reports exactly one patch with that
   guard in the right module, and writes one overlay keyed for that module
   (``__main__.<hash>`` for the script, the module name otherwise);
3. ``python -m codesuture.boot --overlays D --no-heal script.py`` exits 0 from the
   overlay alone: same value, no new patch, overlay files unchanged byte for byte.

Contexts: plain function, method, classmethod, staticmethod, closure (the closure is
re-created after the patch by the *old* outer function object, which exercises
propagation into the parent's ``co_consts``), lambda, list comprehension (nested code
on 3.11, inlined on 3.12+), generator, ``async def``, a helper module of the app, and a
module of a package pip-installed into a throwaway venv's site-packages.
"""

from __future__ import annotations

import dis
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from heal_helpers import TAG, boot, build_wheel, heal, make_venv, overlays_in, pip_install, plain, script_key, snapshot, write

MISSING = "/nonexistent-codesuture-dir/missing.txt"


@dataclass(frozen=True)
class Case:
    """One guard scenario. ``locals_``: (name, literal) pairs set up as locals (lambda:
    defaults); ``stmts``: statements computing ``value`` from them; ``expr``: the same
    as one expression (lambda, comprehension); ``expect``: repr of the documented value."""

    id: str
    guard: str
    exc: str
    locals_: tuple[tuple[str, str], ...]
    stmts: tuple[str, ...]
    expr: str
    expect: str

    @property
    def fn(self) -> str:
        return "target_" + re.sub(r"\W", "_", self.id)


CASES = [
    # `a = x; a.real` on one line: on 3.13 STORE_FAST_LOAD_FAST feeds the failing LOAD_ATTR.
    Case("null_guard-attr", "null_guard", "AttributeError", (("x", "None"),),
         ("a = x; value = a.real",), "x.real", "None"),
    Case("null_guard-method", "null_guard", "AttributeError", (("x", "None"),),
         ("value = x.upper()",), "x.upper()", "''"),  # None.upper() reads as ''.upper()
    # `x *= y` in statements; `x * y` where only an expression fits (lambda, comprehension).
    Case("null_guard-operator", "null_guard", "TypeError", (("x", "None"), ("y", "3")),
         ("x *= y", "value = x"), "x * y", "0"),  # None reads as the int 0
    Case("null_guard-membership", "null_guard", "TypeError", (("k", "'k'"), ("x", "None")),
         ("value = k in x",), "k in x", "False"),
    # `d[k]` with both locals: LOAD_FAST_LOAD_FAST on 3.13.
    Case("key_guard", "key_guard", "KeyError", (("d", "{}"), ("k", "'missing'")),
         ("value = d[k]",), "d[k]", "None"),
    Case("subscript_guard", "subscript_guard", "TypeError", (("x", "None"), ("k", "'a'")),
         ("value = x[k]",), "x[k]", "None"),
    # `x[a:b]`: BUILD_SLICE + BINARY_SUBSCR on 3.11, one BINARY_SLICE on 3.12+.
    Case("subscript_guard-slice", "subscript_guard", "TypeError", (("x", "None"), ("i", "1")),
         ("value = x[i:3]",), "x[i:3]", "None"),
    Case("chain_subscript_guard", "chain_subscript_guard", "KeyError", (("d", "{}"),),
         ("value = d['a']['b']",), "d['a']['b']", "None"),
    Case("index_guard", "index_guard", "IndexError", (("s", "[1, 2]"), ("i", "5")),
         ("value = s[i]",), "s[i]", "0"),  # the empty value of the list's elements
    Case("list_bound_guard", "list_bound_guard", "IndexError", (("s", "[]"),),
         ("value = s[0]",), "s[0]", "None"),
    Case("type_coercion_guard-int", "type_coercion_guard", "ValueError", (("s", "'abc'"),),
         ("value = int(s)",), "int(s)", "0"),
    Case("type_coercion_guard-float", "type_coercion_guard", "ValueError", (("s", "'abc'"),),
         ("value = float(s)",), "float(s)", "0.0"),
    Case("division_guard-truediv", "division_guard", "ZeroDivisionError", (("a", "1"), ("b", "0")),
         ("value = a / b",), "a / b", "0.0"),
    Case("division_guard-floordiv", "division_guard", "ZeroDivisionError", (("a", "7"), ("b", "0")),
         ("value = a // b",), "a // b", "0"),
    Case("str_coerce_guard", "str_coerce_guard", "TypeError", (("n", "5"),),
         ("value = 'n=' + n",), "'n=' + n", "'n=5'"),
    Case("file_guard", "file_guard", "FileNotFoundError", (("p", repr(MISSING)),),
         ("value = open(p).read()",), "open(p).read()", "''"),
    Case("callable_guard", "callable_guard", "TypeError", (("f", "None"),),
         ("value = f(1)",), "f(1)", "None"),
    # A structural exception raised by a call into C: a handler scoped to that call.
    Case("call_guard", "call_guard", "TypeError", (("x", "None"),),
         ("value = len(x)",), "len(x)", "0"),
]

CONTEXTS = ["function", "method", "classmethod", "staticmethod", "closure", "lambda", "listcomp",
            "generator", "async", "helper_module", "site_packages"]

HEADER = "import re, io, asyncio, builtins\n\n"


def _ind(lines: list[str] | tuple[str, ...], n: int) -> str:
    return "".join(" " * n + line + "\n" for line in lines)


def _setup(case: Case) -> list[str]:
    return [f"{name} = {lit}" for name, lit in case.locals_]


def function_source(case: Case, name: str = "target") -> str:
    """``def name(): <locals>; <stmts>; return value``."""
    return f"def {name}():\n" + _ind([*_setup(case), *case.stmts, "return value"], 4)


def render(case: Case, ctx: str) -> tuple[str, dict[str, str]]:
    """(script text, {helper module file name: text})."""
    body = [*_setup(case), *case.stmts]
    if ctx == "function":
        return HEADER + function_source(case) + "\nprint('RESULT', repr(target()))\n", {}
    if ctx in ("method", "classmethod", "staticmethod"):
        deco, arg = {"method": ("", "self"), "classmethod": ("@classmethod\n", "cls"),
                     "staticmethod": ("@staticmethod\n", "")}[ctx]
        call = "C().target()" if ctx == "method" else "C.target()"
        src = "class C:\n" + textwrap.indent(deco + f"def target({arg}):\n" + _ind([*body, "return value"], 4), "    ")
        return HEADER + src + f"\nprint('RESULT', repr({call}))\n", {}
    if ctx == "closure":
        # The first run keeps its `outer` function object in builtins; after the patch
        # (and on the replay) that *old* object creates a new closure, which must carry
        # the patched code (parent co_consts propagation).
        src = ("def outer():\n    tag = 'closure'\n    def target():\n"
               + _ind(["assert tag", *body, "return value"], 8) + "    return target\n\n"
               "if not hasattr(builtins, '_cs_outer'):\n    builtins._cs_outer = outer\n"
               "print('RESULT', repr(builtins._cs_outer()()))\n")
        return HEADER + src, {}
    if ctx == "lambda":
        params = ", ".join(f"{n}={lit}" for n, lit in case.locals_)
        return HEADER + f"target = lambda {params}: {case.expr}\nprint('RESULT', repr(target()))\n", {}
    if ctx == "listcomp":
        src = "def target():\n" + _ind([*_setup(case), f"return [{case.expr} for _ in range(1)][0]"], 4)
        return HEADER + src + "\nprint('RESULT', repr(target()))\n", {}
    if ctx == "generator":
        src = "def target():\n" + _ind([*body, "yield value"], 4)
        return HEADER + src + "\nprint('RESULT', repr(next(target())))\n", {}
    if ctx == "async":
        src = "async def target():\n" + _ind([*body, "await asyncio.sleep(0)", "return value"], 4)
        return HEADER + src + "\nprint('RESULT', repr(asyncio.run(target())))\n", {}
    if ctx == "helper_module":
        helper = HEADER + function_source(case)
        return "import apphelper\nprint('RESULT', repr(apphelper.target()))\n", {"apphelper.py": helper}
    if ctx == "site_packages":
        return f"from sutpkg import guards\nprint('RESULT', repr(guards.{case.fn}()))\n", {}
    raise AssertionError(ctx)


@pytest.fixture(scope="session")
def site_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway venv (seeing this interpreter's packages through a .pth) with the
    package ``sutpkg`` pip-installed into its site-packages; ``sutpkg.guards`` holds
    one crashing function per case. Returns the venv's python."""
    root = tmp_path_factory.mktemp("site_venv")
    vpy = make_venv(root / "venv")
    module = HEADER + "\n".join(function_source(c, c.fn) for c in CASES)
    wheel = build_wheel(root / "dist", "sutpkg", "1.0", {"sutpkg/__init__.py": "", "sutpkg/guards.py": module})
    r = pip_install(vpy, "--no-index", "--no-deps", str(wheel))
    assert r.returncode == 0, str(r)
    return vpy


def _expected_key(ctx: str, script: Path) -> str:
    return {"helper_module": "apphelper", "site_packages": "sutpkg.guards"}.get(ctx) or script_key(script)


def _patched_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("codesuture: WARNING patched ")]


def check_heal_and_boot(case: Case, ctx: str, tmp_path: Path, python: str) -> None:
    text, helpers = render(case, ctx)
    app = tmp_path / "app"
    script = write(app / "script.py", text)
    for name, src in helpers.items():
        write(app / name, src)
    overlays = tmp_path / "overlays"

    crashed = plain(script, python=python)
    assert crashed.returncode == 1, str(crashed)
    assert f"\n{case.exc}" in crashed.stderr or crashed.stderr.startswith(case.exc), str(crashed)

    healed = heal(script, overlays, python=python)
    assert healed.returncode == 0, str(healed)
    assert healed.results() == [f"RESULT {case.expect}"], str(healed)
    module = {"helper_module": "apphelper", "site_packages": "sutpkg.guards"}.get(ctx, "__main__")
    patched = _patched_lines(healed.stderr)
    assert len(patched) == 1, str(healed)
    assert patched[0].startswith(f"codesuture: WARNING patched {module}:"), str(healed)
    assert re.search(rf": {case.guard}(/\w+)? on `", patched[0]), str(healed)

    key = _expected_key(ctx, script)
    names = overlays_in(overlays)
    assert len(names) == 1 and names[0].startswith(f"{key}.{TAG}."), (names, str(healed))
    before = snapshot(overlays)

    booted = boot(script, overlays, python=python)
    assert booted.returncode == 0, str(booted)
    assert booted.results() == [f"RESULT {case.expect}"], str(booted)
    assert "patched" not in booted.stderr, str(booted)
    assert snapshot(overlays) == before, "boot --no-heal changed the overlay store"


@pytest.mark.parametrize("ctx", CONTEXTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_guard_in_context(case: Case, ctx: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    python = str(request.getfixturevalue("site_venv")) if ctx == "site_packages" else sys.executable
    check_heal_and_boot(case, ctx, tmp_path, python)


# --- defaults chosen from the consumer -------------------------------------------------

CONSUMER_CASES = [
    Case("null_attr-len", "null_guard", "AttributeError", (("x", "None"),), ("value = len(x.items)",), "", "0"),
    Case("key-for", "key_guard", "KeyError", (("d", "{}"), ("k", "'k'")),
         ("value = [v for v in d[k]]",), "", "[]"),
    Case("list_bound-findall", "list_bound_guard", "IndexError", (("text", "'abc'"),),
         ("value = re.findall('z', text)[0]",), "", "''"),
    Case("list_bound-split-len", "list_bound_guard", "IndexError", (("rows", "[]"),),
         ("value = len(rows[0])",), "", "0"),
    Case("membership-not-in", "null_guard", "TypeError", (("k", "1"), ("x", "None")),
         ("value = k not in x",), "", "True"),
    Case("file-binary", "file_guard", "FileNotFoundError", (("p", repr(MISSING)),),
         ("value = open(p, 'rb').read()",), "", "b''"),
    # Only open()'s mode argument decides text or binary: a path like "ab" is not a mode.
    Case("file-path-like-a-mode", "file_guard", "FileNotFoundError", (), ("value = open('ab').read()",), "", "''"),
    Case("file-mode-kw", "file_guard", "FileNotFoundError", (("p", repr(MISSING)),),
         ("value = open(p, encoding=None, mode='rb').read()",), "", "b''"),
    Case("file-text-mode-kw", "file_guard", "FileNotFoundError", (("p", repr(MISSING)),),
         ("value = open(p, mode='r', newline='b').read()",), "", "''"),
    Case("slice-len", "subscript_guard", "TypeError", (("x", "None"),), ("value = len(x[1:])",), "", "0"),
    Case("chain-3-index", "chain_subscript_guard", "IndexError", (("m", "[]"),),
         ("value = m[0]['a'][1]",), "", "None"),
    Case("callable-kw", "callable_guard", "TypeError", (("f", "None"),),
         ("value = f(1, key=2)",), "", "None"),
    Case("str_coerce-iadd", "str_coerce_guard", "TypeError", (("s", "'total: '"), ("n", "3")),
         ("s += n", "value = s"), "", "'total: 3'"),
    Case("division-mod", "division_guard", "ZeroDivisionError", (("a", "5"), ("b", "0")),
         ("value = a % b",), "", "0"),
    Case("division-itruediv", "division_guard", "ZeroDivisionError", (("a", "5"), ("b", "0")),
         ("a /= b", "value = a"), "", "0.0"),
    # consumer first: the method read next decides (not the other values' int)
    Case("key-upper", "key_guard", "KeyError", (("user", "{'id': 2}"),),
         ("value = user['name'].upper()",), "", "''"),
    Case("key-format-spec", "key_guard", "KeyError", (("d", "{'a': 'x'}"),),
         ("value = f\"{d['b']:.1f}\"",), "", "'0.0'"),
    Case("call-sorted", "call_guard", "TypeError", (("xs", "[2, None]"),), ("value = sorted(xs)",), "", "[]"),
    Case("call-userdict", "call_guard", "KeyError", (("m", "__import__('collections').UserDict()"),),
         ("value = m['k']",), "", "None"),
    # inside the program's own try (for another exception): the scoped range nests in it
    Case("call-in-try", "call_guard", "TypeError", (("x", "''"),),
         ("try:", "    value = ord(x)", "except ValueError:", "    value = -1"), "", "0"),
    Case("store-attr", "null_guard", "AttributeError", (("o", "None"),), ("o.seen = True", "value = o"), "", "None"),
    Case("store-item", "null_guard", "TypeError", (("o", "None"),), ("o['k'] = 1", "value = o"), "", "None"),
]


@pytest.mark.parametrize("case", CONSUMER_CASES, ids=lambda c: c.id)
def test_consumer_defaults(case: Case, tmp_path: Path) -> None:
    check_heal_and_boot(case, "function", tmp_path, sys.executable)


# --- 3.13 fused instructions do not hide a crash site ----------------------------------

BY_ID = {c.id: c for c in CASES}

FUSED = [
    # (case, fused instruction expected in target's code on 3.13)
    (BY_ID["key_guard"], "LOAD_FAST_LOAD_FAST"),          # d[k]
    (BY_ID["null_guard-attr"], "STORE_FAST_LOAD_FAST"),   # a = x; a.real
    (BY_ID["division_guard-truediv"], "LOAD_FAST_LOAD_FAST"),  # a / b
    (Case("fused-store-after", "key_guard", "KeyError", (("d", "{}"), ("k", "'k'")),
          ("v = d[k]; w = v", "value = w"), "", "None"), "STORE_FAST_LOAD_FAST"),
    (Case("fused-index-pair", "index_guard", "IndexError", (("s", "[]"), ("i", "3")),
          ("x, y = s, i", "value = x[y]"), "", "None"), "LOAD_FAST_LOAD_FAST"),
]


@pytest.mark.parametrize("case,fused", FUSED, ids=[c.id + "-" + f for c, f in FUSED])
def test_fused_instructions(case: Case, fused: str, tmp_path: Path) -> None:
    ns: dict = {}
    exec(compile(HEADER + function_source(case), "<fused>", "exec"), ns)
    ops = {i.opname for i in dis.get_instructions(ns["target"])}
    if sys.version_info >= (3, 13):
        assert fused in ops, f"expected {fused} on 3.13, got {sorted(ops)}"
    check_heal_and_boot(case, "function", tmp_path, sys.executable)
