"""Live swap: put a patched code object in place of the old one everywhere it lives.

* every function whose ``__code__`` is the old code object gets the new one, in place,
  so bound methods, ``functools.partial``, ``__wrapped__`` chains, staticmethod and
  classmethod wrappers and decorators that hold the function all see it;
* every function whose code *contains* the old code (an outer function creating
  closures, lambdas or 3.11 comprehensions) gets a copy with rebuilt ``co_consts``,
  so functions created later are patched too.

Finding the functions costs the size of the module, not of the heap. They are found
**by name** (:func:`functions_by_name`): from the module's globals, the members of
the classes defined in it (methods, static and class methods, properties, nested
classes), and what wrappers hold (``__wrapped__``, closure cells of decorators,
``functools.partial``/``partialmethod``/``cached_property``/``lru_cache``,
``singledispatch`` registries), small containers and plain-Python instances among
the globals (a dispatch table, a ``click`` command's callback). One
``gc.get_referrers`` call (a pass over the heap, in C) is made only for what no name
reaches, and at most once per swap:

* functions made at run time from a nested code (closures, nested lambdas, methods of
  classes made in a function): they live wherever the program put them. The call
  also names the module's globals dict, so every function of the module (a parent
  no name reaches, a copy of one) comes back from that same pass. Comprehensions and
  generator expressions (their functions never outlive the call that made them)
  nested directly in a function found by name need no such call;
* a code object no function reachable by name runs (a function kept only in another
  module's registry, a module that is not in ``sys.modules``).

``gc.get_objects`` is never used. Functions holding the old code that neither a name
nor the referrers pass reaches (a copy made with ``types.FunctionType`` of a function
found by name, kept in another module) keep it. Frames already running the old code
finish with it. Rollback is a swap back to the original code.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from codesuture.errors import PatchError

_FUNCTION = types.FunctionType
_CODE = types.CodeType
#: Qualified-name tails of code whose function objects never outlive the call that
#: made them (3.11 comprehensions; generator expressions: the generator keeps its frame).
_TRANSIENT = ("<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>")
#: Containers among globals and class attributes larger than this are not looked into.
CONTAINER_LIMIT = 256
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE


@dataclass
class SwapReport:
    """What a swap changed: functions updated in place (``functions``), parent
    functions given rebuilt code (``parents``), old -> new code objects, and how the
    functions were found: ``by_name`` of them without touching the heap, and
    ``referrers`` passes made (0 or 1)."""

    functions: int = 0
    parents: int = 0
    replaced: dict[types.CodeType, types.CodeType] = field(default_factory=dict)
    by_name: int = 0
    referrers: int = 0


def check_compatible(old: types.CodeType, new: types.CodeType) -> None:
    """Raise :class:`PatchError` when *new* cannot stand in for *old* in live
    functions (free or cell variables differ, so closures would not line up)."""
    if old.co_freevars != new.co_freevars or old.co_cellvars != new.co_cellvars:
        raise PatchError(f"free variables of {old.co_qualname} differ after patching; refusing to swap")


def swap(olds: Sequence[types.CodeType] | types.CodeType, new: types.CodeType, module: Any = None) -> SwapReport:
    """Replace every code object in *olds* (a function's original code and the patched
    versions it had in this process) with *new*, in every live function and parent
    function. *module*: where the function is defined (a module, its name or its
    globals dict; None: the module whose ``__file__`` is the code's file). Raises
    :class:`PatchError` when *new* cannot stand in for one of them (nothing is
    changed then). See :func:`swap_many`."""
    return swap_many([(olds, new)], module)


def swap_many(changes: Iterable[tuple[Sequence[types.CodeType] | types.CodeType, types.CodeType]],
              module: Any = None) -> SwapReport:
    """Apply several swaps ``(olds, new)`` of functions of one *module* together: one
    walk of the module by name, at most one ``gc.get_referrers`` call for all of them
    (see the module docstring for when). Checks every pair first: raises
    :class:`PatchError` (nothing changed) when a new code cannot stand in for an old."""
    report = SwapReport()
    sw = _Swap(report)
    groups: list[list[types.CodeType]] = []
    for olds, new in changes:
        group = [olds] if isinstance(olds, _CODE) else [o for o in olds if o is not new]
        for old in group:
            check_compatible(old, new)
        groups.append(group)
        for old in group:
            sw.targets[id(old)] = (old, new)
    if not sw.targets:
        return report
    olds_all = [old for old, _ in sw.targets.values()]
    for old, new in sw.targets.values():
        report.replaced[old] = new
    files = {o.co_filename for o in olds_all}
    sw.nested = [o for o in olds_all if "<locals>" in o.co_qualname]
    ns = _namespace(module, files)

    # 1. By name: the module's own functions, wherever a name or a wrapper reaches them.
    found = functions_by_name(ns, files) if ns is not None else []
    hit = {id(code) for fn in found for code in (fn.__code__,) if sw.update(fn)}
    report.by_name = report.functions
    parents_by_name: set[str] = set()
    for fn in found if sw.nested else ():
        qualname = fn.__code__.co_qualname
        if sw.update_parent(fn):
            parents_by_name.add(qualname)

    # 2. What no name reaches: one pass over the heap, only when needed.
    settled = {id(o) for o in sw.nested if _transient_under(o, parents_by_name)}
    need = any(not any(id(o) in hit or id(o) in settled for o in group) for group in groups if group)
    if not need and len(settled) == len(sw.nested):
        return report
    import gc

    report.referrers = 1
    wanted: list[Any] = list(olds_all)
    if ns is not None:
        wanted.append(ns)  # every function of the module references its globals
    for obj in gc.get_referrers(*wanted):
        if type(obj) is _FUNCTION and not sw.update(obj) and sw.nested and obj.__code__.co_filename in files:
            sw.update_parent(obj)
    return report


class _Swap:
    """The code objects being replaced (by identity: equal code objects are distinct
    here) and the parents rebuilt so far."""

    def __init__(self, report: SwapReport) -> None:
        self.report = report
        self.targets: dict[int, tuple[types.CodeType, types.CodeType]] = {}  # id(old) -> (old, new)
        self.nested: list[types.CodeType] = []
        self.parents: dict[int, tuple[types.CodeType, types.CodeType]] = {}  # id(parent) -> (parent, rebuilt)

    def update(self, fn: types.FunctionType) -> bool:
        """Give *fn* the new code if it runs an old one. Returns whether it did."""
        target = self.targets.get(id(fn.__code__))
        if target is None:
            return False
        fn.__code__ = target[1]
        self.report.functions += 1
        return True

    def update_parent(self, fn: types.FunctionType) -> bool:
        """Give *fn* its code with every nested old code replaced. Returns whether its
        code changed."""
        code = fn.__code__
        qual = code.co_qualname + ".<locals>."
        inside = [o for o in self.nested if o.co_qualname.startswith(qual)]  # nested names extend their parent's
        if not inside:
            return False
        known = self.parents.get(id(code))
        if known is None:
            from codesuture.patch.synthesize import replace_in_tree

            parent = code
            for old in inside:
                if _within(parent, old):
                    parent = replace_in_tree(parent, old, self.targets[id(old)][1])
            known = self.parents[id(code)] = (code, parent)
            if parent is not code:
                self.report.replaced[code] = parent
        if known[1] is code:
            return False
        fn.__code__ = known[1]
        self.report.parents += 1
        return True


def functions_by_name(namespace: Any, files: set[str] | None = None) -> list[types.FunctionType]:
    """The function objects reachable by name from *namespace* (a module or its
    globals dict), each once, without scanning the heap: its globals; the members of
    the classes it defines (``__module__`` is its name), nested classes included;
    ``staticmethod``/``classmethod``/bound methods, ``property`` accessors,
    ``functools.partial``/``partialmethod``/``cached_property``/``singledispatchmethod``,
    ``lru_cache`` wrappers; what functions hold (``__wrapped__``, closure cells, a
    ``singledispatch`` registry); the items of small containers and the attributes of
    plain-Python instances found directly among the globals or class attributes.
    *files*: only functions whose code comes from one of these files are returned
    (wrappers from elsewhere are still looked through). Runs no Python code of the
    program: objects are told apart by their real type (``isinstance`` would ask a
    lazy object for its ``__class__``), and read through C-level attributes or the
    collector's traversal, never through a descriptor or ``__getattr__`` of theirs."""
    if issubclass(type(namespace), types.ModuleType):
        namespace = _module_dict(namespace)
    if type(namespace) is not dict:
        return []
    import functools
    from gc import get_referents

    modname = namespace.get("__name__")
    modname = modname if type(modname) is str else None
    wrappers = _wrapper_attrs(functools)
    lru = getattr(functools, "_lru_cache_wrapper", None)
    containers = (dict, list, tuple, set, frozenset)
    out: list[types.FunctionType] = []
    seen: set[int] = set()
    # (object, shallow): shallow objects (found inside a container, an instance or a
    # function's dict) are followed only through functions and wrappers.
    stack: list[tuple[Any, bool]] = [(v, False) for k, v in list(namespace.items()) if k != "__builtins__"]
    while stack:
        obj, shallow = stack.pop()
        oid = id(obj)
        if oid in seen:
            continue
        t = type(obj)
        if t is _FUNCTION:
            seen.add(oid)
            if files is None or obj.__code__.co_filename in files:
                out.append(obj)
            # Its attributes (``__wrapped__``, a singledispatch ``registry``...) from the
            # collector's traversal: reading ``__dict__`` would create one for every function.
            module_globals, builtins = obj.__globals__, obj.__builtins__
            for ref in get_referents(obj):
                if type(ref) is dict and ref is not module_globals and ref is not builtins:
                    for key, value in list(ref.items()):
                        if key == "registry" and type(value) is types.MappingProxyType:
                            stack.extend((v, True) for v in list(value.values()))  # functools.singledispatch
                        else:
                            stack.append((value, True))
            for cell in obj.__closure__ or ():
                try:
                    stack.append((cell.cell_contents, True))
                except ValueError:  # an empty cell
                    pass
        elif t is staticmethod or t is classmethod or t is types.MethodType:
            seen.add(oid)
            stack.append((obj.__func__, True))
        elif issubclass(t, property):
            seen.add(oid)
            stack.extend((f, True) for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
        elif t in wrappers:
            seen.add(oid)
            stack.extend((getattr(obj, attr, None), True) for attr in wrappers[t])
        elif lru is not None and t is lru:
            seen.add(oid)
            stack.append((obj.__dict__.get("__wrapped__"), True))
        elif shallow:
            continue
        elif issubclass(t, type):
            seen.add(oid)
            members = _TYPE_DICT.__get__(obj)
            owner = members.get("__module__")
            if type(owner) is str and owner == modname:
                stack.extend((v, False) for v in list(members.values()))
        elif t in containers:
            seen.add(oid)
            if len(obj) <= CONTAINER_LIMIT:
                items = obj.values() if t is dict else obj
                stack.extend((v, True) for v in list(items))
        elif t.__flags__ & _HEAPTYPE and t is not types.ModuleType and _plain_python(t):
            seen.add(oid)
            # The instance's attributes, read by the collector's traversal (no Python code runs).
            refs = get_referents(obj)
            if len(refs) <= CONTAINER_LIMIT:
                for ref in refs:
                    if type(ref) is dict:
                        if len(ref) <= CONTAINER_LIMIT:
                            stack.extend((v, True) for v in list(ref.values()))
                    elif ref is not t:
                        stack.append((ref, True))
    return out


def _wrapper_attrs(functools: Any) -> dict[type, tuple[str, ...]]:
    """Wrapper types of the standard library -> the attributes holding what they wrap."""
    out: dict[type, tuple[str, ...]] = {functools.partial: ("func",)}
    for name, attrs in (("partialmethod", ("func",)), ("cached_property", ("func",)),
                        ("singledispatchmethod", ("func", "dispatcher"))):
        t = getattr(functools, name, None)
        if isinstance(t, type):
            out[t] = attrs
    return out


def _plain_python(t: type) -> bool:
    """True when every class *t* derives from is a Python class (or ``object``): its
    instances' referents are their attributes, not the items of a C container."""
    return all(b is object or b.__flags__ & _HEAPTYPE for b in t.__mro__)


def _namespace(module: Any, files: set[str]) -> dict | None:
    """The globals dict the swapped functions are defined in: *module*'s (a module,
    its name in ``sys.modules`` or the dict itself); else, or when *module* is None or
    not found, the dict of the module in ``sys.modules`` whose ``__file__`` is one of
    *files*; else None. Objects in ``sys.modules`` that are not modules are skipped
    unasked."""
    ns: Any = sys.modules.get(module) if type(module) is str else module
    if issubclass(type(ns), types.ModuleType):
        return _module_dict(ns)
    if type(ns) is dict:
        return ns
    for mod in list(sys.modules.values()):
        if issubclass(type(mod), types.ModuleType):
            d = _module_dict(mod)
            path = d.get("__file__") if d is not None else None
            if type(path) is str and path in files:
                return d
    return None


def _module_dict(module: types.ModuleType) -> dict | None:
    """A module's ``__dict__`` through the module type's own member (a subclass's
    ``__dict__`` property, or its ``__getattr__``, does not run)."""
    d = _MODULE_DICT.__get__(module)
    return d if type(d) is dict else None


_MODULE_DICT: Any = vars(types.ModuleType)["__dict__"]
_TYPE_DICT: Any = vars(type)["__dict__"]


def _within(root: types.CodeType, old: types.CodeType) -> bool:
    stack = [c for c in root.co_consts if type(c) is _CODE]
    while stack:
        c = stack.pop()
        if c is old:
            return True
        stack.extend(k for k in c.co_consts if type(k) is _CODE)
    return False


def _transient_under(old: types.CodeType, parents: set[str]) -> bool:
    """True when the functions of *old* never outlive their call (a comprehension or a
    generator expression) and its direct parent is a function found by name (a
    module-level function or a method): nothing live runs it, its parent is updated."""
    head, _, tail = old.co_qualname.rpartition(".<locals>.")
    return tail in _TRANSIENT and "<locals>" not in head and head in parents


__all__ = ["SwapReport", "check_compatible", "swap", "swap_many", "functions_by_name", "CONTAINER_LIMIT"]
