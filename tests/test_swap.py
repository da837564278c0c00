"""Live swap (:mod:`codesuture.patch.swap`): functions reachable by name are found
without touching the heap; ``gc.get_referrers`` only for what no name reaches (closures
made at run time, a function kept only elsewhere), at most once per swap; never
``gc.get_objects``. Each test swaps a code object that returns ``'old'`` for one that
returns ``'new'`` and calls the function through every path a program could hold it by."""

from __future__ import annotations

import functools
import gc
import importlib.util
import re
import sys
import textwrap
import types
from pathlib import Path

import pytest

from heal_helpers import as_data

SHAPES = """
import functools

def top():
    return 'old'

class K:
    def meth(self):
        return 'old'

    @staticmethod
    def st():
        return 'old'

    @classmethod
    def cm(cls):
        return 'old'

    @property
    def prop(self):
        return 'old'

    @prop.setter
    def prop(self, value):
        self.seen = 'old'

    @functools.cached_property
    def cached(self):
        return 'old'

    pm = functools.partialmethod(lambda self, x: 'old', 1)  # held by the partialmethod only

    class Inner:
        def deep(self):
            return 'old'

def plain_deco(fn):
    def wrapper(*a):  # no functools.wraps: the function lives only in this closure
        return fn(*a)
    return wrapper

@plain_deco
def decorated():
    return 'old'

def wraps_deco(fn):
    @functools.wraps(fn)
    def wrapper(*a):
        return fn(*a)
    return wrapper

@wraps_deco
def wrapped():
    return 'old'

@functools.lru_cache(maxsize=None)
def cached(k):
    return 'old'

@functools.singledispatch
def dispatch(x):
    return 'base'

@dispatch.register
def _(x: int):
    return 'old'

@dispatch.register
def _(x: str):
    return 'str'

bound_partial = functools.partial(lambda a, b: 'old', 1)
table = {'pick': lambda s: 'old'}
module_lambda = lambda: 'old'

class Command:  # like click.Command: the function is an instance attribute
    def __init__(self, callback):
        self.callback = callback

def _cb():
    return 'old'

command = Command(_cb)
del _cb
"""

#: name -> (how to reach the code to patch, how to call it)
SHAPE_CALLS = {
    "top": ("m.top", "m.top()"),
    "method": ("m.K.meth", "m.K().meth()"),
    "bound method kept": ("m.K.meth", "bound()"),
    "staticmethod": ("m.K.st", "m.K.st()"),
    "classmethod": ("m.K.cm.__func__", "m.K.cm()"),
    "property getter": ("m.K.prop.fget", "m.K().prop"),
    "cached_property": ("m.K.__dict__['cached'].func", "m.K().cached"),
    "partialmethod": ("m.K.__dict__['pm'].func", "m.K().pm()"),
    "nested class": ("m.K.Inner.deep", "m.K.Inner().deep()"),
    "plain decorator": ("m.decorated.__closure__[0].cell_contents", "m.decorated()"),
    "functools.wraps": ("m.wrapped.__wrapped__", "m.wrapped()"),
    "lru_cache": ("m.cached.__wrapped__", "m.cached.__wrapped__('k')"),
    "singledispatch": ("m.dispatch.registry[int]", "m.dispatch(1)"),
    "partial": ("m.bound_partial.func", "m.bound_partial(2)"),
    "dict of lambdas": ("m.table['pick']", "m.table['pick']('x')"),
    "module lambda": ("m.module_lambda", "m.module_lambda()"),
    "instance attribute": ("m.command.callback", "m.command.callback()"),
}


def _load(tmp_path: Path, source: str, name: str) -> types.ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load(tmp_path: Path, request: pytest.FixtureRequest):  # noqa: ANN201
    names: list[str] = []

    def _do(source: str) -> types.ModuleType:
        name = "cs_swap_" + re.sub(r"\W", "_", request.node.name) + f"_{len(names)}"
        names.append(name)
        return _load(tmp_path, source, name)

    yield _do
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def heap(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fail on any ``gc.get_objects`` (a heap scan); record each ``gc.get_referrers``
    call (its number of arguments)."""
    calls: list[int] = []
    real = gc.get_referrers

    def get_objects(*_: object) -> list:
        raise AssertionError("gc.get_objects: a heap scan")

    def get_referrers(*objs: object) -> list:
        calls.append(len(objs))
        return real(*objs)

    monkeypatch.setattr(gc, "get_objects", get_objects)
    monkeypatch.setattr(gc, "get_referrers", get_referrers)
    return calls


def renewed(code: types.CodeType) -> types.CodeType:
    """*code* with its ``'old'`` constants (also in nested code) made ``'new'``."""
    consts = tuple(renewed(c) if isinstance(c, types.CodeType) else "new" if c == "old" else c
                   for c in code.co_consts)
    return code.replace(co_consts=consts)


def _nested(code: types.CodeType, tail: str) -> types.CodeType:
    return next(c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_qualname.endswith(tail))


@pytest.mark.parametrize("shape", list(SHAPE_CALLS))
def test_found_by_name_without_the_heap(shape: str, load, heap: list[int]) -> None:
    from codesuture.patch.swap import swap

    m = load(SHAPES)
    where, call = SHAPE_CALLS[shape]
    bound = m.K().meth
    ns = {"m": m, "bound": bound}
    fn = eval(where, ns)
    old = fn.__code__
    assert eval(call, ns) == "old"
    report = swap(old, renewed(old), m.__name__)
    assert eval(call, ns) == "new", shape
    assert fn.__code__ is not old and report.functions == report.by_name == 1
    assert report.referrers == 0 and heap == [], f"{shape}: gc.get_referrers called"


def test_property_setter_and_inferred_module(load, heap: list[int]) -> None:
    """The setter too; and with no module given, the module is the one whose file the
    code comes from."""
    from codesuture.patch.swap import swap

    m = load(SHAPES)
    k = m.K()
    old = m.K.prop.fset.__code__
    report = swap(old, renewed(old))
    k.prop = 1
    assert k.seen == "new" and report.by_name == 1 and heap == []


def test_namespace_walk_runs_no_program_code(load, heap: list[int]) -> None:
    """Globals whose attribute access would run code (``__getattr__``, a raising
    property, a lazy proxy) are looked through with the collector's traversal only."""
    from codesuture.patch.swap import functions_by_name, swap

    m = load("""
        touched = []

        class Proxy:
            def __getattr__(self, name):
                touched.append(name)
                raise RuntimeError("working outside of a context")

            @property
            def __dict__(self):
                touched.append('__dict__')
                raise RuntimeError("no dict")

        proxy = Proxy()

        class Lazy:  # like django.conf.settings: asking its class sets it up
            @property
            def __class__(self):
                touched.append('__class__')
                raise RuntimeError("settings are not configured")

        settings = Lazy()

        def f():
            return 'old'
    """)
    names = [fn.__code__.co_qualname for fn in functions_by_name(m)]
    assert sorted(names) == ["Lazy.__class__", "Proxy.__dict__", "Proxy.__getattr__", "f"]
    old = m.f.__code__
    assert swap(old, renewed(old), m).by_name == 1
    assert m.touched == [] and m.f() == "new" and heap == []


def test_nested_closures_one_referrers_call(load, heap: list[int]) -> None:
    """A nested function: the closures made already (one kept where no name reaches
    it), the parent (closures made later) and a copy of the parent no name reaches:
    one ``gc.get_referrers`` call for all of them."""
    from codesuture.patch.swap import swap

    m = load("""
        def outer():
            def inner():
                return 'old'
            return inner

        made = outer()
        hidden = [outer()]
    """)
    alias = types.FunctionType(m.outer.__code__, vars(m), "alias")  # the parent's code, unnamed
    kept = {"x": m.outer()}
    old = m.made.__code__
    report = swap(old, renewed(old), m.__name__)
    assert heap == [2]  # the old code and the module's globals, in one call
    assert report.referrers == 1
    assert m.made() == m.hidden[0]() == kept["x"]() == "new"
    assert m.outer()() == alias()() == "new"  # made after the swap
    assert _nested(m.outer.__code__, "inner") is m.made.__code__  # one new code object for all
    assert report.parents == 2 and report.functions == 3


def test_comprehension_under_a_named_function_needs_no_referrers(load, heap: list[int]) -> None:
    """A generator expression's function never outlives the call that made it: its
    parent, found by name, is all there is to update."""
    from codesuture.patch.swap import swap

    m = load("""
        def total(xs):
            return list('old' for x in xs)

        class C:
            def run(self, xs):
                return list('old' for x in xs)

        def listed(xs):
            return ['old' for x in xs]  # a nested code on 3.11 only (inlined since 3.12)
    """)
    shapes = [(m.total, "<genexpr>", lambda: m.total([1])), (m.C.run, "<genexpr>", lambda: m.C().run([1]))]
    if sys.version_info < (3, 12):
        shapes.append((m.listed, "<listcomp>", lambda: m.listed([1])))
    for fn, tail, call in shapes:
        old = _nested(fn.__code__, tail)
        report = swap(old, renewed(old), m)
        assert call() == ["new"] and report.parents == 1 and report.referrers == 0
    assert heap == []


def test_registry_elsewhere_falls_back_to_one_referrers_call(load, heap: list[int]) -> None:
    """A function no name of its module reaches (kept in another module's registry,
    or in a container too large to look into): one ``gc.get_referrers`` call."""
    from codesuture.patch.swap import CONTAINER_LIMIT, swap

    m = load("""
        REGISTRY = []

        def register(fn):
            REGISTRY.append(fn)

        @register
        def handler():
            return 'old'

        BIG = [0] * 1000 + [lambda: 'old']
    """)
    assert len(m.BIG) > CONTAINER_LIMIT
    registry = {"h": m.REGISTRY.pop()}  # now only this test's dict holds it
    for fn in (registry["h"], m.BIG[-1]):
        del heap[:]
        old = fn.__code__
        report = swap(old, renewed(old), m)
        assert fn() == "new" and report.by_name == 0 and report.functions == 1
        assert report.referrers == 1 and len(heap) == 1


def test_swap_many_one_walk_one_call(load, heap: list[int]) -> None:
    from codesuture.patch.swap import swap_many

    m = load("""
        def a():
            return 'old'

        def b():
            def inner():
                return 'old'
            return inner

        def c():
            def inner():
                return 'old'
            return inner

        made_b, made_c = b(), c()
    """)
    changes = [(f.__code__, renewed(f.__code__)) for f in (m.a, m.made_b, m.made_c)]
    report = swap_many(changes, m)
    assert (m.a(), m.made_b(), m.made_c(), m.b()(), m.c()()) == ("new",) * 5
    assert report.referrers == 1 and len(heap) == 1


def test_rollback_is_a_swap_back(load, heap: list[int]) -> None:
    from codesuture.patch.swap import swap

    m = load(SHAPES)
    old = m.K.meth.__code__
    first = renewed(old)
    swap(old, first, m)
    second = first.replace(co_consts=tuple("newer" if c == "new" else c for c in first.co_consts))
    swap([old, first], second, m)
    assert m.K().meth() == "newer"
    swap([first, second], old, m)
    assert m.K().meth() == "old" and heap == []


def test_incompatible_code_changes_nothing(load, heap: list[int]) -> None:
    from codesuture.errors import PatchError
    from codesuture.patch.swap import swap_many

    m = load("""
        def f():
            return 'old'

        def outer():
            x = 1
            def inner():
                return x
            return inner
    """)
    old = m.f.__code__
    with pytest.raises(PatchError, match="free variables"):
        swap_many([(old, renewed(old)), (m.outer().__code__, m.f.__code__)], m)
    assert m.f.__code__ is old and heap == []


# --- through the healer --------------------------------------------------------------

HEALED = """
class Repo:
    def get(self, d, k):
        return d[k]

def lookup(d, k):
    return d[k]

def make():
    def get(d, k):
        return d[k]
    return get

keep = make()
"""


def _crash(fn, *args):  # noqa: ANN001, ANN202
    try:
        fn(*args)
    except Exception as exc:  # broad on purpose: not an EAFP handler
        return exc
    raise AssertionError("expected a crash")


def test_heals_find_functions_and_methods_by_name(load, heap: list[int]) -> None:
    """A heal of a function or a method: no ``gc.get_referrers`` at all; of a closure:
    exactly one call; never ``gc.get_objects``."""
    from codesuture.runtime.healer import Healer

    m = load(HEALED)
    healer = Healer(overlays=None)
    repo = m.Repo()
    assert healer.heal(_crash(repo.get, {}, "k")) is not None
    assert healer.heal(_crash(m.lookup, {}, "k")) is not None
    assert heap == [], heap
    # results handed on as data (an assert on a returned default is a decision the guard refuses)
    assert as_data(repo.get, {}, "k") is None and as_data(m.lookup, {}, "k") is None and m.lookup({"k": 1}, "k") == 1
    assert healer.heal(_crash(m.keep, {}, "k")) is not None
    assert len(heap) == 1
    assert as_data(m.keep, {}, "k") is None and as_data(m.make(), {}, "k") is None
    assert healer.rollback() == 3
    assert len(heap) == 2  # the closure's rollback: one call again
    with pytest.raises(KeyError):
        m.lookup({}, "k")
    with pytest.raises(KeyError):
        m.keep({}, "k")


def test_functions_by_name_lists_each_function_once(load) -> None:
    from codesuture.patch.swap import functions_by_name

    m = load(SHAPES)
    found = functions_by_name(m, {m.__file__})
    assert len(found) == len({id(f) for f in found})
    names = {f.__code__.co_qualname for f in found}
    assert {"top", "K.meth", "K.st", "K.cm", "K.prop", "K.cached", "K.<lambda>", "K.Inner.deep",
            "decorated", "plain_deco.<locals>.wrapper", "wrapped", "cached", "_", "<lambda>", "_cb"} <= names
    assert all(f.__code__.co_filename == m.__file__ for f in found)
    assert functools.reduce(lambda n, f: n + (f.__code__.co_qualname == "_"), found, 0) == 2  # both registered


def test_walk_leaves_functions_as_they_were(load) -> None:
    """Looking for functions creates no attribute dict on them (``fn.__dict__`` would)."""
    from codesuture.patch.swap import functions_by_name

    m = load(SHAPES)
    found = functions_by_name(m)
    top = next(f for f in found if f.__code__.co_qualname == "top")
    assert not [r for r in gc.get_referents(top) if type(r) is dict and r is not top.__globals__
                and r is not top.__builtins__]
