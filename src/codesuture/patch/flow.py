"""The value-flow model: where a value a guard would yield goes, and whether it decides.

Every guard yields a value in place of an operation that raised. That value either
flows on as *data* (stored, passed to a call, returned to a caller that stores or
passes it) or reaches a *decision*: a conditional jump that tests it (``if``, ``and``/
``or``, ``assert``, the loop test of ``while``, a ``for`` over it), usually through a
comparison, identity or membership test, ``not`` or ``bool()`` whose truth value is
what branches. A truth value made from it is a decision wherever it goes: kept in a
local, it is followed to the branch that tests it; returned, it is followed into the
callers like any value; stored in an attribute, an item or a global, it would decide
where the model cannot follow (``self.admin = int(uid) in ADMINS``, tested in another
method): a gate, fail closed. A container holding one (``{"admin": role == "admin"}``)
and what is taken out of it are truth values too. Passed to a call, it is data (a flag handed to a helper, as most
configuration is: the callee is not followed).

A decision whose sides rejoin can still write itself down: ``status = "429" if
rate(env) > LIMIT else "200"``, or ``code = 403`` and, on one side, ``code = 200``.
What a side only names (a constant, a module-level name, an attribute of one, a
container or string made of such) is a :data:`CHOICE` (``True``/``False`` chosen so
is just the test's truth value, :data:`CHOSEN_FLAG`): a truth value that, passed to
any call but a logging call, or stored, decides where the model cannot follow, so it
fails closed; returned, the callers are asked about a choice. A choice met at a join
by the value itself (``if not name: name = "anonymous"``, ``u.name or "anon"``), or
mixed into data (``f"{n} item{suffix}"``), is data. What a side does itself (its own
calls and stores) is judged with the side (``acts``, below).

:func:`analyze` follows the value through one code object by abstract interpretation
over its control-flow graph (``bytecode.ControlFlowGraph``): the stack slots and the
local variables that hold it (or a value computed from it), along every normal edge;
exception edges are not followed. Each decision it reaches is classified from the
graph's post-dominators (:class:`Decision`):

* ``rejoin``: the two sides meet again inside the function before any return or raise
  (the branch's immediate post-dominator is a block of the function, not the exit; or
  both sides end only at the end of the function's body, in the implicit ``return
  None`` the compiler copies into each, or in one exit tail it duplicated), and the
  branch does not decide whether a ``while`` loop runs again: the decision only shapes
  data;
* ``raises``: one side always ends in a ``raise`` (or a call to a function that never
  returns: annotated ``NoReturn``/``Never``, or whose code has no return), the other
  can return: the program's own error is one way out. A guard takes that side when the
  value reaches it straight from the guard, or later (:attr:`Flow.later`), when every
  decision before it rejoins and the code in between has no effect: it then jumps
  over that code (see :func:`_later_raise`; a compound ``and``/``or`` test whose jumps
  end in one raise block or one continuation counts as one decision);
* ``acts``: the sides rejoin, but one of them acts through a name of the module (a
  call made for its effect whose callee is a global or an attribute of one, or a store
  to a global or to an enclosing function's cell): ``if not is_banned(u): grant(u)`` is a gate even
  though its sides meet again (not a ``for`` loop's test: over an empty default its
  body runs no time; calls on the frame's own objects, ``out.append(x)``, shape data);
* ``exits``: anything else (the sides leave the function separately, also when they
  join only at a ``return`` of what each made, ``return a if c else b`` on 3.11; a ``while``
  loop's test, or a branch in its body with one side out of the loop, ``if done:
  break``, found alike on every version's loop layout): a gate. Except: a branch out
  of a ``while`` loop that has a test of its own which the value does not reach, and
  that would rejoin but for being a way out (neither side acts), only shapes data
  (:data:`BREAK_DATA`, a ``rejoin``): the loop still ends by its own test
  (:func:`_break_to_data`). ``while True`` has no such test.

Exit tails the compiler copied (3.12+ copies a small ``return`` block into each of its
predecessors) count as one block for the post-dominators (:func:`_canonical_tails`).

:func:`verdict` turns a :class:`Flow` into the policy of ``docs/guards.md``
("data flows on; decisions fail closed"), and :func:`callers_verdict` follows a
*returned* value into the calling frames (live frames when a guard fires, traceback
frames at heal time): in each caller the value is the result of the instruction at
``f_lasti`` (the call that returned it). CodeSuture's own frames end the walk.

Works on the bytecode of CPython 3.11, 3.12 and 3.13. Analyses are cached per code
object and offset, so a guard that fires again pays a dictionary lookup per frame.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

#: What a decision does, see the module docstring.
REJOIN, RAISES, EXITS, ACTS = "rejoin", "raises", "exits", "acts"
#: Instructions that change state outside the frame: a side that runs one *acts*.
_ACTIONS = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL"})
#: Stores to a cell: an action when the cell is an enclosing function's (a free
#: variable, ``nonlocal``), not when it is this frame's own (a cell variable).
_CELL_STORES = frozenset({"STORE_DEREF", "DELETE_DEREF"})
#: Calls that only report (a side that logs does not act).
_LOG_CALLS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "log"})
_CALL_OPS = frozenset({"CALL", "CALL_KW", "CALL_FUNCTION_EX"})
#: How many calling frames a returned value is followed into, at most.
MAX_CALLERS = 8
#: Work limit of one analysis (block visits); beyond it the flow is "unknown".
MAX_STEPS = 4000

_TRUTH_OPS = {"COMPARE_OP": "a comparison", "IS_OP": "an identity test", "CONTAINS_OP": "a membership test",
              "UNARY_NOT": "not", "TO_BOOL": "a truth test"}
_TRUTH_CALLS = {"bool": "bool()", "any": "any()", "all": "all()", "isinstance": "isinstance()",
                "callable": "callable()", "hasattr": "hasattr()"}
_STORES_LOCAL = frozenset({"STORE_FAST", "STORE_NAME", "STORE_DEREF"})
_LOADS_LOCAL = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR", "LOAD_NAME", "LOAD_DEREF",
                          "LOAD_CLASSDEREF"})
_RETURNS = frozenset({"RETURN_VALUE", "RETURN_CONST"})
_RAISES = frozenset({"RAISE_VARARGS", "RERAISE"})
_CONTAINER_ADDS = frozenset({"LIST_APPEND", "SET_ADD", "MAP_ADD", "LIST_EXTEND", "SET_UPDATE", "DICT_UPDATE",
                             "DICT_MERGE"})
#: The taint of a container holding a truth value made from the value (and of what is
#: taken out of it): a truth value too.
_TRUTH_BOX = "a truth value in a container"
#: The taint of a value a decision on the value chose between sides that only name
#: it (``status = 429 if rate > LIMIT else 200``; ``code = 403`` then, on one side,
#: ``code = 200``): a decision written down as data. It is a truth value wherever it
#: goes (a branch, a store for later, returned), and passed to a call (other than a
#: logging call) it decides there, where the model cannot follow: fail closed.
CHOICE = "a value chosen by a decision on it"
#: ``True`` or ``False`` chosen by a decision on the value: the same as the test's own
#: truth value (``is_multiline = True`` on one side and ``False`` on the other), and
#: treated as one: followed, returned, stored for later fails closed, passed to a call
#: it is data.
CHOSEN_FLAG = "a flag chosen by a decision on it"
CHOICE_PASSED = "a value a decision on it chose is passed"
TRUTH_STORED_CHOICE = "a value a decision on it chose is stored"
CHOICE_NOTES = (CHOICE_PASSED, TRUTH_STORED_CHOICE)
#: The note of a call a truth value made from the value is passed to (followed into the
#: callee, :func:`_follow_call`).
TRUTH_CALL = "truth passed"
TRUTH_PASSED = "a truth value made from it is passed to"
#: How many calls deep a truth value passed on is followed; deeper, it fails closed.
MAX_CALLEES = 3
#: Where a choice can make a decision (:data:`CHOICE_NOTES`).
_CHOICE_SITES = frozenset({"CALL", "CALL_KW", "CALL_FUNCTION_EX", "STORE_ATTR", "STORE_SUBSCR", "STORE_GLOBAL"})
#: What a side names without computing (constants, module-level names): the values a
#: decision chooses between.
_NAMES_ONLY = frozenset({"LOAD_CONST", "LOAD_GLOBAL", "LOAD_NAME", "LOAD_SMALL_INT"})
#: Instructions that carry a chosen value on unchanged in meaning (an attribute of a
#: chosen name, a formatted chosen value, a container built of chosen values).
_CARRIES = frozenset({"LOAD_ATTR", "FORMAT_VALUE", "FORMAT_SIMPLE", "FORMAT_WITH_SPEC", "CONVERT_VALUE",
                      "BUILD_STRING", "BINARY_OP", "UNARY_NEGATIVE", "UNARY_INVERT", "BUILD_SLICE",
                      "LIST_TO_TUPLE", "BINARY_SUBSCR"})
#: Instructions that build a container from stack items.
_BUILDS = frozenset({"BUILD_LIST", "BUILD_TUPLE", "BUILD_SET", "BUILD_MAP", "BUILD_CONST_KEY_MAP"})
_STORED = {"STORE_ATTR": "an attribute", "STORE_SUBSCR": "an item", "STORE_GLOBAL": "a global"}
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


@dataclass(frozen=True)
class Decision:
    """One decision the value reaches: the conditional jump at ``offset`` (bytes, as
    ``tb_lasti``; line ``line``), what tests the value (``what``: "a comparison", "not",
    "assert", "the loop test of while", "a for loop", "a truth value stored"...),
    ``outcome`` (:data:`REJOIN`, :data:`RAISES` or :data:`EXITS`), ``raising``: the
    side that raises (``"jump"`` or ``"next"``, for :data:`RAISES`), and ``first``:
    True when the value reaches it in straight-line code from where it was made, with
    no store in between (only then can a guard take its raising side)."""

    offset: int
    line: int | None
    what: str
    outcome: str
    raising: str = ""
    first: bool = False
    #: Stack items from the value's making to the jump: the net effect (<= 0) and the
    #: lowest point reached, relative to the stack before the instruction that made it.
    net: int = 0
    low: int = 0
    #: For a decision reached later (:attr:`Flow.later`): the source lines of the code a
    #: guard skips to take its raising side (``"114-125"``); "" otherwise.
    skips: str = ""


@dataclass(frozen=True)
class Flow:
    """Where a value goes in one code object: its decisions (in the order reached),
    ``returned``: ``""``, ``"value"``, ``"truth"`` or ``"choice"`` (returned or yielded,
    as data, as a truth value made from it, or as a :data:`CHOICE` made by a decision
    on it), ``escapes``: how it left as data (``"stored"``,
    ``"passed"``), ``unknown``: why the analysis gave up ("" when it did not)."""

    decisions: tuple[Decision, ...] = ()
    returned: str = ""
    escapes: tuple[str, ...] = ()
    unknown: str = ""
    #: A decision reached later (not straight from the value) whose raising side a guard
    #: can take, when everything before it only shapes data (see :func:`_later_raise`).
    later: Decision | None = None


@dataclass(frozen=True)
class Verdict:
    """What the policy says about a flow: ``action`` ``"heal"`` (place the default),
    ``"raise"`` (take the raising side of ``decision``) or ``"refuse"`` (the original
    exception propagates); ``reason`` in words; ``returned`` as in :class:`Flow`;
    ``truth_gate``: for ``"heal"``, why a default that is itself a truth value (a
    ``bool``, known only when the guard fires: a container of flags) must not be
    yielded ("" when it may), see :func:`codesuture.crash.diagnose.value_verdict`."""

    action: str
    reason: str = ""
    decision: Decision | None = None
    returned: str = ""
    truth_gate: str = ""


# ------------------------------------------------------------------ the graph


@dataclass
class _Graph:
    blocks: list[list[Any]]
    succ: list[list[int]]            # normal successors; -1: return exit, -2: raise exit
    jump: list[int | None]           # the conditional jump target block of a block, if any
    nxt: list[int | None]            # its fall-through block
    ends: dict[int, int] = field(default_factory=dict)  # block -> position of a call that never returns
    pdom: list[int] = field(default_factory=list)   # bitsets; bit len(blocks) = exit
    loops: list[tuple[int, int]] = field(default_factory=list)  # (header, body bitset)
    can_return: int = 0
    can_raise: int = 0
    where: dict[int, tuple[int, int]] = field(default_factory=dict)  # real index -> (block, pos)
    index: dict[tuple[int, int], int] = field(default_factory=dict)  # (block, pos) -> real index
    offsets: list[int] = field(default_factory=list)  # real index -> offset
    positions: set[Any] | None = None  # see _other_positions
    canon: list[int] = field(default_factory=list)  # block -> first copy of the same exit tail


def _name(ins: Any) -> str:
    return getattr(ins, "name", "")


def _argname(arg: Any) -> str:
    return str(getattr(arg, "name", arg))


def _noreturn(obj: Any) -> bool:
    """True for a callable that never returns: annotated ``NoReturn``/``Never``, or a
    plain function whose code has no return instruction (every path raises)."""
    fn = getattr(obj, "__func__", obj)
    ann = getattr(fn, "__annotations__", None)
    if isinstance(ann, dict) and "return" in ann:
        text = ann["return"] if isinstance(ann["return"], str) else repr(ann["return"])
        if text.rsplit(".", 1)[-1] in ("NoReturn", "Never"):
            return True
    code = getattr(fn, "__code__", None)
    if isinstance(code, types.CodeType) and not code.co_flags & 0x3A0:  # not a generator/coroutine
        import dis

        return not any(i.opname in _RETURNS for i in dis.get_instructions(code))
    return False


def _resolver(namespace: dict[str, Any] | None) -> Callable[[str], bool]:
    def resolve(dotted: str) -> bool:
        obj = _resolve(dotted, namespace)
        return obj is not None and _noreturn(obj)

    return resolve


def _callee(block: list[Any], pos: int) -> str | None:
    """The dotted global name a call at ``block[pos]`` calls (``abort``,
    ``flask.abort``), found in the block's straight-line code; else None."""
    from codesuture.patch import instrs as I

    try:
        fn = I.find_producer(block, pos, I.call_slots(block[pos])[0])
    except Exception:  # noqa: BLE001 - an odd call shape: no name
        return None
    parts: list[str] = []
    while fn is not None:
        ins = block[fn]
        if _name(ins) in ("LOAD_GLOBAL", "LOAD_NAME"):
            parts.append(str(I.name_loaded(ins)))
            return ".".join(reversed(parts))
        if _name(ins) in ("LOAD_ATTR", "LOAD_METHOD"):
            parts.append(str(I.name_loaded(ins)))
            fn = I.find_producer(block, fn, 1)
            continue
        return None
    return None


def _logs(block: list[Any], pos: int) -> bool:
    """Whether the call at ``block[pos]`` is a logging call (a method named as in
    :data:`_LOG_CALLS`, on any object: ``log.debug``, ``self.logger.info``)."""
    from codesuture.patch import instrs as I

    try:
        fn = I.find_producer(block, pos, I.call_slots(block[pos])[0])
    except Exception:  # noqa: BLE001 - an odd call shape: not known to log
        return False
    return fn is not None and _name(block[fn]) in ("LOAD_ATTR", "LOAD_METHOD") and \
        str(I.name_loaded(block[fn])) in _LOG_CALLS


def _logs_at(g: _Graph, call: Any) -> bool:
    """Whether *call* (a call instruction whose callable was loaded in another block,
    before a branch inside its arguments) calls a logging method: the attribute load
    that starts where the call's source span starts names one of :data:`_LOG_CALLS`."""
    loc = call.location
    if loc is None or loc.lineno is None:
        return False
    for block in g.blocks:
        for x in block:
            xl = getattr(x, "location", None)
            if (_name(x) in ("LOAD_ATTR", "LOAD_METHOD") and xl is not None and xl.lineno == loc.lineno
                    and xl.col_offset == loc.col_offset and _attr_name(x) in _LOG_CALLS):
                return True
    return False


def _attr_name(ins: Any) -> str:
    from codesuture.patch import instrs as I

    return str(I.name_loaded(ins))


def _graph(code: types.CodeType, noreturn: Callable[[str], bool]) -> _Graph:
    from bytecode import Bytecode, ControlFlowGraph, Instr

    from codesuture.patch import instrs as I
    from codesuture.patch.instrs import real_instructions

    cfg = ControlFlowGraph.from_bytecode(Bytecode.from_code(code))
    blocks = [list(b) for b in cfg]
    index = {id(b): i for i, b in enumerate(cfg)}
    n = len(blocks)
    succ: list[list[int]] = []
    jump: list[int | None] = []
    nxt: list[int | None] = []
    where: dict[int, tuple[int, int]] = {}
    ends: dict[int, int] = {}
    k = 0
    for bi, (b, block) in enumerate(zip(cfg, blocks)):
        out: list[int] = []
        j: int | None = None
        f: int | None = index[id(b.next_block)] if b.next_block is not None else None
        ended = False
        for pos, ins in enumerate(block):
            if not isinstance(ins, Instr):
                continue
            where[k] = (bi, pos)
            k += 1
            if ended:
                continue
            if ins.name in _RETURNS:
                out, f, ended = [-1], None, True
            elif ins.name in _RAISES:
                out, f, ended = [-2], None, True
            elif ins.name in I.CALL_NAMES and noreturn(_callee(block, pos) or ""):
                out, f, ended = [-2], None, True
                ends[bi] = pos
        if not ended:
            target = b.get_jump()
            last = next((x for x in reversed(block) if isinstance(x, Instr)), None)
            if target is not None:
                j = index[id(target)]
                out.append(j)
            if last is None or not (last.is_uncond_jump() if hasattr(last, "is_uncond_jump") else False):
                if f is not None:
                    out.append(f)
            else:
                f = None
        succ.append(out)
        jump.append(j if not ended else None)
        nxt.append(f)
    g = _Graph(blocks, succ, jump, nxt, ends=ends, where=where, index={v: k for k, v in where.items()}, offsets=[i.offset for i in real_instructions(code)])
    _analyse_graph(g, n)
    return g


def _analyse_graph(g: _Graph, n: int) -> None:
    exit_bit = 1 << n
    full = (1 << (n + 1)) - 1
    g.canon = _canonical_tails(g, n)
    canon = g.canon
    # Post-dominators (bitsets; the exit is node n): pdom(b) = {b} | AND pdom(succ), a
    # block that is a copy of an exit tail standing for the first copy (see
    # _canonical_tails).
    pdom = [full] * n
    changed = True
    while changed:
        changed = False
        for b in range(n - 1, -1, -1):
            acc = full
            for s in g.succ[b]:
                acc &= exit_bit if s < 0 else pdom[canon[s]]
            new = (acc if g.succ[b] else full) | (1 << b)
            if new != pdom[b]:
                pdom[b], changed = new, True
    g.pdom = pdom
    # Which blocks can reach a return / a raise.
    ret = rai = 0
    changed = True
    while changed:
        changed = False
        for b in range(n):
            r = any(s == -1 or (s >= 0 and ret >> s & 1) for s in g.succ[b])
            e = any(s == -2 or (s >= 0 and rai >> s & 1) for s in g.succ[b])
            if r and not ret >> b & 1:
                ret |= 1 << b
                changed = True
            if e and not rai >> b & 1:
                rai |= 1 << b
                changed = True
    g.can_return, g.can_raise = ret, rai
    # Dominators from the entry, then natural loops (back edge u -> h, h dominates u).
    dom = [full] * n
    if n:
        dom[0] = 1
    preds: list[list[int]] = [[] for _ in range(n)]
    for b in range(n):
        for s in g.succ[b]:
            if s >= 0:
                preds[s].append(b)
    changed = True
    while changed:
        changed = False
        for b in range(1, n):
            acc = full
            for p in preds[b]:
                acc &= dom[p]
            new = (acc if preds[b] else 0) | (1 << b)
            if new != dom[b]:
                dom[b], changed = new, True
    loops: dict[int, int] = {}
    for u in range(n):
        for h in g.succ[u]:
            if h >= 0 and dom[u] >> h & 1:
                body, stack = (1 << h) | (1 << u), [u]
                while stack:
                    x = stack.pop()
                    if x == h:
                        continue
                    for p in preds[x]:
                        if not body >> p & 1:
                            body |= 1 << p
                            stack.append(p)
                loops[h] = loops.get(h, 0) | body
    g.loops = sorted(loops.items())


def _canonical_tails(g: _Graph, n: int) -> list[int]:
    """For each block, the first block that starts the same exit tail: the same
    instructions, at the same source positions, straight into a return (at least two
    of them: a real statement). CPython 3.12+ copies a small exit block such as
    ``return block, n`` into each of its predecessors (a loop's test and its
    ``break``); two copies of one source statement are one join, as on 3.11 (see
    :func:`_same_tail`). Other blocks stand for themselves."""
    from bytecode import Instr

    canon = list(range(n))
    seen: dict[tuple[Any, ...], int] = {}
    for b in range(n):
        tail = [x for x in _tail(g, b) or () if _name(x) != "NOP"]  # a `break` leaves a NOP in its copy
        if len(tail) < 2 or any(not isinstance(x, Instr) or x.location is None
                                            or x.location.lineno is None for x in tail):
            continue
        key = tuple((x.name, repr(x.arg), x.location.lineno, x.location.end_lineno, x.location.col_offset,
                     x.location.end_col_offset) for x in tail)
        canon[b] = seen.setdefault(key, b)
    return canon


#: What decides whether a ``while`` loop runs again: its test, or a branch in its body
#: with one side out of the loop (``if done: break``).
LOOP_TEST, LOOP_EXIT = "the loop test of while", "a branch out of a while loop"


def _classify(g: _Graph, b: int, opname: str) -> tuple[str, str, str]:
    """``(outcome, raising side, loop)`` of the two-way branch ending block *b*; *loop*
    is :data:`LOOP_TEST` or :data:`LOOP_EXIT` when the branch decides whether a
    ``while`` loop runs again, else ``""``."""
    j, f = g.jump[b], g.nxt[b]
    if j is None or f is None:
        return EXITS, "", ""
    ret = [bool(g.can_return >> s & 1) for s in (j, f)]
    rai = [bool(g.can_raise >> s & 1) for s in (j, f)]
    for side, name, other in ((0, "jump", 1), (1, "next", 0)):
        if rai[side] and not ret[side] and ret[other]:
            return RAISES, name, ""
    if opname != "FOR_ITER":
        for h, body in g.loops:
            inside = [bool(body >> s & 1) for s in (j, f)]
            if inside[0] != inside[1]:
                stay = j if inside[0] else f
                if b == h or _through_jumps(g, stay) == h:
                    return EXITS, "", LOOP_TEST
                if _while_loop(g, h):
                    return EXITS, "", LOOP_EXIT
    n = len(g.blocks)
    real = g.pdom[b] & ~(1 << b) & ((1 << n) - 1)
    if real:
        if opname == "FOR_ITER":  # a for loop over an empty default runs its body no time: nothing acts
            return REJOIN, "", ""
        if _returns_what_sides_made(g, b, real, opname):
            return EXITS, "", ""
        return (ACTS if _acts(g, [ins for x in sorted(_region(g, b)) for ins in g.blocks[x]]) else REJOIN), "", ""
    common = _same_tail(g, j, f)
    if common:
        sides = [(_tail(g, s) or [])[:-common] for s in (j, f)]
        return (ACTS if _acts(g, sides[0]) or _acts(g, sides[1]) else REJOIN), "", ""
    ended = _ends_implicitly(g, (j, f))
    if ended is not None:
        return (ACTS if _acts(g, [ins for x in sorted(ended) for ins in g.blocks[x]]) else REJOIN), "", ""
    return EXITS, "", ""


def _returns_what_sides_made(g: _Graph, b: int, real: int, opname: str) -> bool:
    """True when the branch ending block *b* (post-dominators *real*) joins only at a
    ``return`` of a value each side made: ``return "ok" if allowed else "no"`` joins at
    one ``RETURN_VALUE`` on 3.11, where 3.12+ gives each side its own return; the sides
    leave the function separately with what they chose, a gate on every version. A
    short-circuit ``return x or y`` (the tested value itself is what one side returns:
    ``JUMP_IF_TRUE_OR_POP``, or ``COPY 1`` before the jump) is data."""
    from bytecode import Instr

    ipdom = next((p for p in range(len(g.blocks)) if real >> p & 1 and not real & ~g.pdom[p]), None)
    if ipdom is None:
        return False
    first = next((x for x in g.blocks[ipdom] if isinstance(x, Instr) and x.name not in ("NOP", "CACHE")), None)
    if first is None or first.name != "RETURN_VALUE":
        return False
    if opname in ("JUMP_IF_TRUE_OR_POP", "JUMP_IF_FALSE_OR_POP"):
        return False
    body = [x for x in g.blocks[b] if isinstance(x, Instr)]
    before = [x.name for x in body[-4:-1]]
    return not (before and (before[-1] == "COPY" or before[-2:] == ["COPY", "TO_BOOL"]))


def _acts(g: _Graph, instrs: list[Any]) -> bool:
    """Whether *instrs* (one side of a branch, straight-line runs of a block or a tail)
    act on state that outlives the call through a name of the module: a store to a
    global or to an enclosing function's cell (``nonlocal``), or a call made for its
    effect (its result popped at once) whose callee is a global name or an attribute of
    one (``grant(u)``, ``GRANTS.append(u)``, ``audit.record(u)``). Logging calls (``log.debug(...)``,
    ``warnings.warn``) are not actions. Calls and stores on the objects the frame
    holds (``out.append(x)``, ``self.o("**")``, ``tokens.pop(0)``) shape the data the
    function works on and are not counted: that is how data-shaping code builds its
    result."""
    from bytecode import Instr

    real = [x for x in instrs if isinstance(x, Instr)]
    for i, ins in enumerate(real):
        if ins.name in _ACTIONS:
            return True
        if ins.name in _CELL_STORES and type(ins.arg).__name__ == "FreeVar":
            return True
        if ins.name in _CALL_OPS and i + 1 < len(real) and real[i + 1].name == "POP_TOP":
            callee = _callee(real, i)
            if callee is not None and callee.rpartition(".")[2] not in _LOG_CALLS:
                return True
    return False


def _through_jumps(g: _Graph, b: int) -> int:
    """The block that block *b* leads to when it holds nothing but an unconditional jump
    (or NOPs): CPython 3.12+ ends a ``while`` body with its test and a separate
    ``JUMP_BACKWARD`` block to the loop's top, where 3.11 jumps back from the test itself.
    The loop test is the same decision on every version."""
    seen: set[int] = set()
    while b >= 0 and b not in seen and len(g.succ[b]) == 1 and g.succ[b][0] >= 0 and all(
            _name(x) in ("NOP", "JUMP", "JUMP_FORWARD", "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT",
                         "JUMP_NO_INTERRUPT") or not _name(x) for x in g.blocks[b]):
        seen.add(b)
        b = g.succ[b][0]
    return b


def _while_loop(g: _Graph, h: int) -> bool:
    """Whether the natural loop headed by block *h* is a ``while`` loop (not a ``for``
    over an iterator, nor the ``SEND`` loop of an ``await``): a branch with one side
    in its body and the other out of it decides whether it runs again, wherever it
    stands in the body (``while True: ... if done: break``), as its test does."""
    return not any(_name(x) in ("FOR_ITER", "SEND", "GET_ANEXT") for x in g.blocks[h])


#: What a branch out of a ``while`` loop is when it only shapes data (:func:`_break_to_data`).
BREAK_DATA = "a branch out of a while loop that ends by its own test"


def _loop_test_of(g: _Graph, b: int, opname: str) -> int | None:
    """The header of the ``while`` loop whose test is the branch ending block *b*, or
    None when it is no loop test."""
    j, f = g.jump[b], g.nxt[b]
    if j is None or f is None or opname == "FOR_ITER":
        return None
    for h, body in g.loops:
        inside = [bool(body >> s & 1) for s in (j, f)]
        if inside[0] != inside[1]:
            stay = j if inside[0] else f
            if b == h or _through_jumps(g, stay) == h:
                return h if _while_loop(g, h) else None
    return None


def _break_to_data(g: _Graph, b: int, opname: str) -> int | None:
    """The header of the ``while`` loop that the branch ending block *b* (a branch out
    of it, ``if done: break``) leaves, when that branch may only shape data: the loop
    has a test of its own (so it still ends by that test when the branch stays in;
    ``while True`` has none), the branch leaves no other loop, and, but for being a way
    out of the loop, it would rejoin: its sides meet inside the function and neither
    acts (the break side included). Whether the value reaches the loop's test is the
    caller's question (:func:`_analyze`). None otherwise."""
    j, f = g.jump[b], g.nxt[b]
    if j is None or f is None or opname == "FOR_ITER":
        return None
    left = [(h, body) for h, body in g.loops if bool(body >> j & 1) != bool(body >> f & 1)]
    if len(left) != 1:
        return None
    h, body = left[0]
    if not _while_loop(g, h) or _loop_test_of(g, b, opname) is not None:
        return None
    tests = [x for x in range(len(g.blocks)) if x != b and body >> x & 1
             and _loop_test_of(g, x, _last_name(g, x)) == h]
    if not tests:
        return None
    n = len(g.blocks)
    if g.pdom[b] & ~(1 << b) & ((1 << n) - 1):
        return None if _acts(g, [ins for x in sorted(_region(g, b)) for ins in g.blocks[x]]) else h
    # No join in the function's graph: the loop's ways out may still end in the same
    # code, duplicated by the compiler (3.12+ copies a small `return block` into each),
    # or in the implicit `return None` at the end of the body.
    out = j if not body >> j & 1 else f
    ways = {s for x in tests for s in (g.jump[x], g.nxt[x]) if s is not None and not body >> s & 1}
    inside = [ins for x in range(n) if body >> x & 1 for ins in g.blocks[x]]
    for way in ways:
        if way == out:
            continue
        common = _same_tail(g, out, way)
        if common:
            if _acts(g, inside + (_tail(g, out) or [])[:-common] + (_tail(g, way) or [])[:-common]):
                return None
            continue
        ended = _ends_implicitly(g, (out, way))
        if ended is None or _acts(g, inside + [ins for x in sorted(ended) for ins in g.blocks[x]]):
            return None
    return h


def _last_name(g: _Graph, b: int) -> str:
    return next((_name(x) for x in reversed(g.blocks[b]) if _name(x)), "")


def _implicit_none_return(g: _Graph, b: int) -> bool:
    """Whether block *b* leaves the function by the ``return None`` the compiler adds at
    the end of a body (no ``return`` in the source): a ``RETURN_CONST None`` (or
    ``LOAD_CONST None; RETURN_VALUE``) whose source position is that of an instruction
    of another statement (the compiler copies the position of the code before it into
    each copy it makes), never that of a ``return`` statement of its own."""
    from bytecode import Instr

    real = [x for x in g.blocks[b] if isinstance(x, Instr)]
    if not real:
        return False
    last = real[-1]
    if last.name == "RETURN_CONST":
        if last.arg is not None:
            return False
    elif last.name == "RETURN_VALUE":
        if len(real) < 2 or real[-2].name != "LOAD_CONST" or real[-2].arg is not None \
                or real[-2].location != last.location:
            return False
    else:
        return False
    loc = last.location
    if loc is None or loc.lineno is None:
        return False
    return loc in _other_positions(g)


def _other_positions(g: _Graph) -> set[Any]:
    """Source positions of the instructions of *g* that are neither returns nor the
    constants they return (computed once per graph)."""
    from bytecode import Instr

    if g.positions is None:
        g.positions = {x.location for block in g.blocks for x in block if isinstance(x, Instr)
                       and x.location is not None and x.name not in ("RETURN_CONST", "RETURN_VALUE", "LOAD_CONST")}
    return g.positions


def _ends_implicitly(g: _Graph, sides: tuple[int, int]) -> set[int] | None:
    """The blocks the two *sides* of a branch run, when every way out of the function
    from them is the implicit ``return None`` at the end of its body (no ``return``
    statement, no raise, no call that never returns): the sides meet at the end of the
    function's source, a join the compiler duplicated into one copy per side (``if not
    opts[k]: x = y`` as a function's last statement), and the function returns None
    either way. Else None."""
    seen: set[int] = set()
    todo = list(sides)
    while todo:
        x = todo.pop()
        if x in seen:
            continue
        seen.add(x)
        if x in g.ends:
            return None
        for s in g.succ[x]:
            if s == -2 or (s == -1 and not _implicit_none_return(g, x)):
                return None
            if s >= 0:
                todo.append(s)
    return seen


def _tail(g: _Graph, b: int) -> list[Any] | None:
    """The instructions from block *b* to the return it runs into in straight line (each
    block with one successor), or None when it branches, loops or raises first."""
    from bytecode import Instr

    out: list[Any] = []
    seen: set[int] = set()
    while b not in seen:
        seen.add(b)
        out.extend(x for x in g.blocks[b] if isinstance(x, Instr))
        succ = g.succ[b]
        if succ == [-1]:
            return out
        if len(succ) != 1 or succ[0] < 0:
            return None
        b = succ[0]
    return None


def _same_tail(g: _Graph, j: int, f: int) -> int:
    """How many instructions long the source code is that both sides of a branch end in,
    duplicated by the compiler (CPython 3.12+ copies a small exit block into each predecessor, so
    ``print("a" if v else "b")`` at the end of a function has two returns on 3.13 and one
    join on 3.11): both run straight into a return and their last instructions agree in
    opcode, argument and source position (line and column span). Two distinct source
    statements never share a position, so sides that merely look alike stay apart. 0
    when they do not end alike."""
    a, b = _tail(g, j), _tail(g, f)
    if not a or not b:
        return 0

    def key(ins: Any) -> tuple[Any, ...]:
        loc = ins.location
        where = (loc.lineno, loc.end_lineno, loc.col_offset, loc.end_col_offset) if loc is not None else None
        return ins.name, repr(ins.arg), where

    common = 0
    for x, y in zip(reversed(a), reversed(b)):
        if key(x) != key(y):
            break
        common += 1
    # The shared part must be more than the bare return: a real statement duplicated.
    return common if common >= 2 or (common == 1 and a[-1].name == "RETURN_CONST" and len(a) == 1 == len(b)) else 0


def _joined_tail(g: _Graph, b: int) -> dict[int, tuple[int, int]]:
    """The instructions of both copies of the exit code the sides of the branch ending
    block *b* share (:func:`_same_tail`), after the join in the source though inside
    the sides in the graph: ``id()`` -> ``(b, k)``, the same for an instruction and its
    copy (*k* counts from the end). Empty when the sides meet at a block."""
    j, f = g.jump[b], g.nxt[b]
    n = len(g.blocks)
    if j is None or f is None or g.pdom[b] & ~(1 << b) & ((1 << n) - 1):
        return {}
    common = _same_tail(g, j, f)
    if not common:
        return {}
    out: dict[int, tuple[int, int]] = {}
    for s in (j, f):
        tail = (_tail(g, s) or [])[-common:]
        for k, x in enumerate(reversed(tail)):
            out[id(x)] = (b, k)
    return out


# ------------------------------------------------------------------ following a value

_CACHE: dict[tuple[int, int, str], tuple[types.CodeType, Flow]] = {}
_GRAPHS: dict[int, tuple[types.CodeType, _Graph]] = {}
#: (id of a caller's code, f_lasti, kind) -> (code, flow of what that instruction makes).
_CALLERS: dict[tuple[int, int, str], tuple[types.CodeType, Flow]] = {}


def analyze(code: types.CodeType, offset: int, kind: str = "value",
            namespace: dict[str, Any] | None = None) -> Flow:
    """Where the value the instruction at *offset* (bytes) of *code* pushes goes.

    *kind*: ``"value"``, or ``"truth"`` when that value is already a truth value made
    from a default (a guarded comparison or membership test). *namespace*: the globals
    the code runs with, to know which called functions never return (None: none is
    known). Never raises: an analysis that fails returns a :class:`Flow` whose
    ``unknown`` says why. Cached per code object, offset and kind."""
    key = (id(code), offset, kind)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is code:
        return hit[1]
    try:
        flow = _analyze(code, offset, kind, namespace)
    except Exception as exc:  # noqa: BLE001 - an analysis never breaks a heal or a guard
        flow = Flow(unknown=f"the value flow of {code.co_qualname} is not known ({type(exc).__name__}: {exc})")
    if len(_CACHE) > 4096:
        _CACHE.clear()
    _CACHE[key] = (code, flow)
    return flow


def _graph_for(code: types.CodeType, namespace: dict[str, Any] | None) -> _Graph:
    hit = _GRAPHS.get(id(code))
    if hit is not None and hit[0] is code:
        return hit[1]
    g = _graph(code, _resolver(namespace))
    if len(_GRAPHS) > 1024:
        _GRAPHS.clear()
    _GRAPHS[id(code)] = (code, g)
    return g


def _analyze(code: types.CodeType, offset: int, kind: str, namespace: dict[str, Any] | None,
             free: frozenset[int] | None = None, params: frozenset[tuple[str, str]] | None = None,
             chain: tuple[int, ...] = ()) -> Flow:
    """The walk behind :func:`analyze`. A branch out of a ``while`` loop that would
    only shape data if it were not a loop exit (:func:`_break_to_data`) needs two
    walks: the first (*free* None) passes over it, to see whether the value reaches
    the loop's own test; the second (*free*: the headers of the loops whose test it
    does not reach) counts such a branch as a decision that rejoins, and that loop's
    test, which then runs again on one side only, as the program's own.

    *params* ``{(name, taint)}``: follow parameters from the function's first
    instruction instead (*offset* ignored), for :func:`_param_flow`; *chain*: the code
    objects (ids) a truth value was passed through to get here."""
    from bytecode import Instr

    from codesuture.patch.instrs import instruction_index

    g = _graph_for(code, namespace)
    if params is not None:
        k, b0, p0 = 0, 0, 0
    else:
        k, _ = instruction_index(code, offset)
        b0, p0 = g.where[k]
    start = g.blocks[b0][p0]
    taint = {"value": "data", "choice": CHOICE}.get(kind, "a truth test")
    decisions: dict[int, Decision] = {}
    escapes: set[str] = set()
    returned = ""

    def add(d: Decision) -> None:
        if d.offset not in decisions:
            decisions[d.offset] = d

    def ret(t: str) -> None:
        nonlocal returned
        returned = "truth" if (returned == "truth" or t != "data") else "value"

    # What a choice does at an instruction (a decision, or returned), as of the last
    # time the walk passed it: a block is walked again when what reaches it grows, and a
    # choice that meets the value itself at a join becomes data there (``u.name or
    # "anon"``), so only the last pass counts.
    chose: dict[int, Decision | None] = {}
    chosen_returns: dict[int, str] = {}

    # State: (stack: tuple of taint-or-None for the top items we know, locals: frozenset
    # of (name, taint)). A straight-line prefix from the start is tracked for "first".
    entry: dict[int, tuple[tuple[Any, ...], frozenset[tuple[str, str]]]] = {}
    ctrl: set[int] = set()  # blocks between a decision on the value and where its sides rejoin
    joined: dict[int, tuple[int, int]] = {}  # instructions in ctrl the source runs after the join
    # What the copies of one such instruction take from the stack, per copy (the last
    # pass), to join them as 3.11's one instruction does: data on one copy wins.
    copies: dict[tuple[int, int], dict[int, tuple[Any, ...]]] = {}
    copy_of: dict[int, tuple[int, int]] = {}  # offset -> copy key
    breaks: set[int] = set()  # headers of while loops with a branch out of them that could shape data
    work: list[tuple[int, int, tuple[Any, ...], frozenset[tuple[str, str]], bool, int, int]] = []
    # The start instruction: its outputs carry the value (a for loop's item; an
    # await's result on SEND's jump edge).
    if params is not None:
        pops, pushes = 0, 0
    elif start.name == "SEND":
        pops, pushes = _effect(start, jump=True)
    else:
        pops, pushes = _effect(start, jump=False)
    if not pushes and params is None:
        raise ValueError(f"{start.name} makes no value to follow")
    stack0: tuple[Any, ...] = (None,) * (pushes - 1) + (taint,)
    if params is not None:
        work.append((0, 0, (), params, False, 0, 0))
    elif start.has_jump() and not start.is_uncond_jump():
        if start.name not in ("FOR_ITER", "SEND"):
            raise ValueError(f"{start.name} branches")
        edge = g.jump[b0] if start.name == "SEND" else g.nxt[b0]
        if edge is None:
            return Flow()
        work.append((edge, 0, _trim(stack0), frozenset(), False, 0, 0))
    else:
        work.append((b0, p0 + 1, _trim(stack0), frozenset(), True, pushes - pops, min(0, -pops)))
    steps = 0
    while work:
        b, pos, stack, local, first, depth, low = work.pop()
        if pos == 0 and not first:
            # Join with what reached this block before (taint is a union): each block
            # is processed again only when its entry state grows, so the walk ends.
            known = entry.get(b)
            if known is not None:
                stack, local = _join(known[0], stack), _join_locals(known[1], local)
                if (stack, local) == known:
                    continue
            entry[b] = (stack, local)
        steps += 1
        if steps > MAX_STEPS:
            return Flow(unknown=f"the value flow of {code.co_qualname} is too complex to follow")
        block = g.blocks[b]
        stop = False
        for p in range(pos, len(block)):
            ins = block[p]
            if not isinstance(ins, Instr):
                continue
            name = ins.name
            if not stack and not local and b not in ctrl:
                stop = True  # the value is gone
                break
            if name in _RETURNS:
                # A constant returned is the same on every side of a decision on the
                # value (it is tainted only inside that decision's sides): not the value.
                if name == "RETURN_VALUE" and stack and stack[-1] and _name(_previous(block, p)) != "LOAD_CONST":
                    chosen_returns[g.offsets[g.index[(b, p)]]] = stack[-1]
                stop = True
                break
            if name in _RAISES:
                stop = True
                break
            if ins.has_jump() and not ins.is_uncond_jump():
                tested = stack[-1] if stack else None
                if tested == "data" and params is not None:
                    tested = None  # in a callee: what it computes from a truth value it was passed shapes data
                if tested:
                    what = _what(g, b, name, tested)
                    outcome, side, loop = _classify(g, b, name)
                    skip = False
                    if loop == LOOP_EXIT:
                        h = _break_to_data(g, b, name)
                        if h is not None:
                            breaks.add(h)
                            if free is None:
                                skip = True  # first walk: as if it were not there
                            elif h in free:
                                outcome, loop, what = REJOIN, "", BREAK_DATA
                    elif loop == LOOP_TEST and free and _loop_test_of(g, b, name) in free:
                        skip = True  # the program's own test of a loop a break above shapes
                    if not skip:
                        if outcome == REJOIN:
                            ctrl |= _region(g, b)
                            joined.update(_joined_tail(g, b))
                        line = ins.location.lineno if ins.location is not None else None
                        add(Decision(g.offsets[g.index[(b, p)]], line, loop or what, outcome, side,
                                     first, depth - 1, min(low, depth - 1)))
                for jmp, target in ((True, g.jump[b]), (False, g.nxt[b])):
                    if target is None:
                        continue
                    st = _apply(ins, stack, jmp)
                    work.append((target, 0, st, local, False, 0, 0))
                stop = True
                break
            if g.ends.get(b) == p:
                stop = True  # a call that never returns
                break
            before = stack
            stack, local, note = _step(ins, stack, local, block, p)
            if b in ctrl and id(ins) not in joined:  # on the sides of a decision on the value: depends on it
                stack, local = _decided(ins, before, stack, local)
            on_side = b in ctrl and id(ins) not in joined  # on a side itself
            if note and note[0] == TRUTH_CALL:
                box = _added_to_local(block, p, code)
                if box is not None:  # `out.append(ok)` on a list of its own: `[ok]`
                    note, local = None, frozenset((n_, t) for n_, t in local if n_ != box) | {(box, _TRUTH_BOX)}
                else:
                    note, made = _follow_call(block, p, ins, before, namespace, chain + (id(code),), on_side, code)
                    if made and stack:
                        stack = stack[:-1] + (made,)
            if note and note == ("returned", CHOICE) and on_side:
                note = ("returned", "data")  # yielded by a side itself: judged with the side
            if name in _CHOICE_SITES:
                off = g.offsets[g.index[(b, p)]]
                twin = joined.get(id(ins)) if b in ctrl else None
                if twin is not None:
                    pops = _effect(ins, jump=False)[0]
                    copies.setdefault(twin, {})[id(ins)] = before[-pops:] if pops else ()
                    copy_of[off] = twin
                if note and note[0] == "decision" and note[1].startswith(CHOICE_NOTES) and on_side:
                    note = None  # on a side itself: what the side does is judged whole (ACTS)
                    chose.pop(off, None)
                elif note and note[0] == "decision" and note[1].startswith(CHOICE_PASSED) and _logs_at(g, ins):
                    note = None  # a logging call whose method was loaded before the branch
                    chose.pop(off, None)
                elif note and note[0] == "decision" and note[1].startswith(CHOICE_NOTES):
                    line = ins.location.lineno if ins.location is not None else None
                    chose[off] = Decision(off, line, note[1], EXITS)
                    note = None
                elif off in chose:
                    chose[off] = None
            if note:
                if note[0] == "decision":
                    line = ins.location.lineno if ins.location is not None else None
                    add(Decision(g.offsets[g.index[(b, p)]], line, note[1], EXITS))
                elif note[0] == "returned":
                    chosen_returns[g.offsets[g.index[(b, p)]]] = note[1]
                else:
                    escapes.add(note[0])
                    first = False
            if first:
                pp, pu = _effect(ins, jump=False)
                depth -= pp
                low = min(low, depth)
                depth += pu
                if name in _STORES_LOCAL or name in ("STORE_FAST_STORE_FAST", "STORE_FAST_LOAD_FAST", "DELETE_FAST"):
                    first = False
        if stop:
            continue
        if ins_is_jump(block):
            target = g.jump[b]
            if target is not None:
                work.append((target, 0, stack, local, first, depth, low))
        elif g.nxt[b] is not None:
            work.append((g.nxt[b], 0, stack, local, first, depth, low))  # type: ignore[arg-type]
    if free is None and breaks:
        # The loops whose own test the value does not reach (first walk): there the
        # branches out only shape data. Walk again with them known.
        at = {o: k for k, o in enumerate(g.offsets)}
        tests = {_loop_test_of(g, g.where[at[d.offset]][0], "") for d in decisions.values() if d.what == LOOP_TEST}
        return _analyze(code, offset, kind, namespace, frozenset(breaks - tests), params, chain)
    for off, d in chose.items():
        if d is not None and off in copy_of:
            ins_of = list(copies[copy_of[off]].values())
            merged = ins_of[0]
            for other in ins_of[1:]:
                merged = _join(merged, other)
            if CHOICE not in merged:
                d = None  # the other copy hands on data there: joined, it is data
        if d is not None:
            add(d)
    data_too = "data" in chosen_returns.values()  # the copies of one return 3.12+ puts in each side, joined
    for t in chosen_returns.values():
        if not (t == CHOICE and data_too):
            ret(t)
    if CHOICE in chosen_returns.values() and not data_too:
        returned = "choice"
    found = tuple(decisions.values())
    later = None
    if params is None and found and not (found[0].first and found[0].outcome == RAISES) \
            and any(d.outcome != REJOIN for d in found):
        later = _later_raise(g, code, b0, p0, found)
    return Flow(found, returned, tuple(sorted(escapes)), later=later)


_PARAMS: dict[tuple[int, frozenset[tuple[str, str]]], tuple[types.CodeType, Flow]] = {}
#: Built-in types a truth value may be passed to: what they make of it is still the
#: truth value (``str(ok)``: "True" or "False"), or a container of it.
_CHOOSING_TYPES = (str, int, float, complex, bytes)
_BOXING_TYPES = (list, tuple, set, frozenset, dict)


def _resolve(dotted: str, namespace: dict[str, Any] | None) -> Any:
    """The object a dotted global name (``respond``, ``views.respond``) names in
    *namespace* (then the builtins), through modules only; None when unknown."""
    import builtins

    if namespace is None or not dotted:
        return None
    head, *rest = dotted.split(".")
    obj = namespace.get(head, getattr(builtins, head, None))
    for part in rest:
        obj = getattr(obj, part, None) if isinstance(obj, types.ModuleType) else None
    return obj


def _keyword_names(block: list[Any], p: int, ins: Any) -> tuple[str, ...] | None:
    """The keyword names of the call at ``block[p]``: 3.13's constant before
    ``CALL_KW``, 3.11/3.12's ``KW_NAMES`` (before ``PRECALL`` on 3.11); ``()`` for a
    call without keywords, None when not found."""
    if ins.name == "CALL_KW":
        prev = _previous(block, p)
        arg = getattr(prev, "arg", None)
        return tuple(arg) if _name(prev) == "LOAD_CONST" and isinstance(arg, tuple) else None
    q = p - 1
    while q >= 0 and _name(block[q]) in ("PRECALL", "CACHE", ""):
        q -= 1
    if q >= 0 and _name(block[q]) == "KW_NAMES":
        arg = block[q].arg
        return tuple(arg) if isinstance(arg, tuple) else None
    return ()


def _follow_call(block: list[Any], p: int, ins: Any, before: tuple[Any, ...], namespace: dict[str, Any] | None,
                 chain: tuple[int, ...], on_side: bool, caller: types.CodeType) -> tuple[tuple[str, str] | None, str]:
    """A truth value made from the value (or a container of them, a flag a decision on
    it chose) is passed to the call ``ins`` (stack *before* it) in *caller*:
    ``(note, made)``.

    The callee decides with it, if anything does. A plain Python function named by a
    global (``respond``, ``views.respond``), or a method of the caller's own class
    called on its first argument (``self.respond(ok)``: the class's and every loaded
    subclass's definition), is followed from its parameter (:func:`_param_flow`, at
    most :data:`MAX_CALLEES` calls deep): a decision there that does not rejoin is a
    decision here (note ``("decision", why)``), and what it returns is what the call
    makes (*made*: a truth value, a :data:`CHOICE`, data). A built-in type makes a
    choice (``str(ok)``) or a container of one; any other callee (another object's
    method, a class, a C function: ``print``) decides where the model cannot follow:
    fail closed. A flag only chosen on a side of a decision, passed by that side
    itself, is judged with the side (ACTS), as a choice is."""
    pops = _effect(ins, jump=False)[0]
    inputs = before[-pops:] if len(before) >= pops else (None,) * (pops - len(before)) + before
    args = list(inputs[2:])
    callee = _callee(block, p) or _own_method(block, p, caller) or ""
    what = f"{TRUTH_PASSED} {callee or 'a call'}()"
    if on_side and all(t in (None, "data", CHOSEN_FLAG) for t in args):
        return None, ""
    if ins.name == "CALL_FUNCTION_EX":
        return ("decision", f"{what}, whose arguments are not known"), ""
    targets = _callees(callee, namespace, caller)
    if targets == "reports":
        return None, ""
    if isinstance(targets, str):  # "keeps" or "box"
        truth = next(str(t) for t in args if t and t != "data")
        return None, (_TRUTH_BOX if targets == "box" else truth)
    if not targets:
        return ("decision", f"{what}, which the value flow does not follow"), ""
    kw = _keyword_names(block, p, ins)
    if kw is None:
        return ("decision", f"{what}, whose keywords are not known"), ""
    if ins.name == "CALL_KW":
        args = args[:-1]
    made: set[str] = set()
    for fn, bound in targets:
        why, returned = _into(fn, bound, args, kw, what, chain)
        if why:
            return ("decision", why), ""
        made.add(returned)
    return None, (CHOICE if "choice" in made else f"a truth value {callee}() returns" if "truth" in made else "data")


#: Methods that put their arguments into the container they are called on.
_ADDS = frozenset({"append", "add", "extend", "insert", "appendleft", "extendleft", "update", "setdefault"})


def _added_to_local(block: list[Any], p: int, caller: types.CodeType) -> str | None:
    """The local variable (not a parameter: a container of the frame's own) whose
    ``append``/``add``/... method the call at ``block[p]`` calls, else None."""
    from codesuture.patch import instrs as I

    try:
        fn = I.find_producer(block, p, I.call_slots(block[p])[0])
        if fn is None or _name(block[fn]) not in ("LOAD_ATTR", "LOAD_METHOD") or _attr_name(block[fn]) not in _ADDS:
            return None
        obj = I.find_producer(block, fn, 1)
    except Exception:  # noqa: BLE001 - an odd call shape: not known
        return None
    if obj is None or _name(block[obj]) not in ("LOAD_FAST", "LOAD_FAST_CHECK"):
        return None
    name = _argname(block[obj].arg)
    params = caller.co_varnames[:caller.co_argcount + caller.co_kwonlyargcount + bool(caller.co_flags & 0x04)
                                + bool(caller.co_flags & 0x08)]
    return None if name in params or name in caller.co_cellvars else name


def _own_method(block: list[Any], p: int, caller: types.CodeType) -> str | None:
    """``self.name`` when the call at ``block[p]`` calls a method on the caller's first
    argument (``self``/``cls``), else None."""
    from codesuture.patch import instrs as I

    if not caller.co_argcount:
        return None
    try:
        fn = I.find_producer(block, p, I.call_slots(block[p])[0])
        if fn is None or _name(block[fn]) not in ("LOAD_ATTR", "LOAD_METHOD"):
            return None
        obj = I.find_producer(block, fn, 1)
    except Exception:  # noqa: BLE001 - an odd call shape: not known
        return None
    first = caller.co_varnames[0]
    if obj is None or _name(block[obj]) not in ("LOAD_FAST", "LOAD_FAST_CHECK") or _argname(block[obj].arg) != first:
        return None
    return f"{first}.{_attr_name(block[fn])}"


def _callees(callee: str, namespace: dict[str, Any] | None,
             caller: types.CodeType) -> list[tuple[types.FunctionType, bool]] | str:
    """What a call to *callee* may run: ``[(function, bound)]`` (empty: not known), or
    what a built-in makes of a truth value: ``"keeps"`` (text or a number of it:
    :data:`_CHOOSING_TYPES`, ``repr``, ``format``), ``"box"`` (a container of it,
    :data:`_BOXING_TYPES`), ``"reports"`` (``print``: written out, nothing decided)."""
    first = caller.co_varnames[0] if caller.co_argcount else None
    if first is not None and callee.startswith(first + "."):
        return _methods(callee.split(".", 1)[1], namespace, caller)
    obj = _resolve(callee, namespace)
    if isinstance(obj, type) and obj.__module__ == "builtins" and issubclass(obj, _BOXING_TYPES):
        return "box"
    if isinstance(obj, type) and obj.__module__ == "builtins" and issubclass(obj, _CHOOSING_TYPES):
        return "keeps"
    if any(obj is f for f in (repr, ascii, format)):
        return "keeps"
    if obj is print:
        return "reports"
    return [(obj, False)] if isinstance(obj, types.FunctionType) else []


def _methods(name: str, namespace: dict[str, Any] | None,
             caller: types.CodeType) -> list[tuple[types.FunctionType, bool]]:
    """The definitions of method *name* that ``self.name`` in *caller* (a method of a
    class named by its qualified name in *namespace*) may run: the class's own and
    each loaded subclass's; empty when any is not a plain function, static or class
    method."""
    parts = caller.co_qualname.split(".")[:-1]
    if not parts or "<locals>" in parts or namespace is None:
        return []
    cls: Any = namespace.get(parts[0])
    for part in parts[1:]:
        cls = getattr(cls, part, None)
    if not isinstance(cls, type):
        return []
    classes: list[type] = [cls]
    todo: list[type] = [cls]
    while todo and len(classes) < 64:
        sub: type
        for sub in todo.pop().__subclasses__():
            if sub not in classes:
                classes.append(sub)
                todo.append(sub)
    out: list[tuple[types.FunctionType, bool]] = []
    for klass in classes:
        raw = next((k.__dict__[name] for k in klass.__mro__ if name in k.__dict__), None)
        fn: Any = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        bound = not isinstance(raw, staticmethod)
        if not isinstance(fn, types.FunctionType):
            return []
        if (fn, bound) not in out:
            out.append((fn, bound))
    return out


def _into(fn: types.FunctionType, bound: bool, args: list[Any], kw: tuple[str, ...], what: str,
          chain: tuple[int, ...]) -> tuple[str, str]:
    """Follow the arguments *args* (taints; the last ``len(kw)`` passed by keyword)
    into *fn* (*bound*: its first parameter is the object it is called on): ``(why,
    returned)``, *why* "" when no decision there fails closed."""
    code = fn.__code__
    if code.co_flags & 0x3A0 or code.co_filename.startswith(_PKG_DIR):
        return f"{what}, which the value flow does not follow", ""
    if len(chain) > MAX_CALLEES or id(code) in chain:
        return f"{what}, more than {MAX_CALLEES} calls deep", ""
    positional = args[:len(args) - len(kw)]
    named = list(zip(kw, args[len(positional):]))
    names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    shift = 1 if bound else 0
    passed: list[tuple[str, str]] = []
    for i, t in enumerate(positional):
        if t and i + shift >= code.co_argcount:
            return f"{what}, into {code.co_qualname}'s *args", ""
        if t:
            passed.append((names[i + shift], str(t)))
    for nm, t in named:
        if t and nm not in names[code.co_posonlyargcount:]:
            return f"{what}, into {code.co_qualname}'s **kwargs", ""
        if t:
            passed.append((nm, str(t)))
    where = f"{code.co_qualname} ({os.path.basename(code.co_filename)})"
    if any(nm in code.co_cellvars for nm, _ in passed):
        return f"{what}, which a closure in {where} reads", ""
    ns = fn.__globals__
    truths = frozenset((nm, t) for nm, t in passed if t != "data")
    flow = _param_flow(code, truths, ns, chain)
    if flow.unknown:
        return f"{what} ({flow.unknown})", ""
    for d in flow.decisions:
        if d.outcome != REJOIN:
            return f"{what} (in {where}, {_reason(d)})", ""
    if len(truths) < len(passed) and flow.returned in ("choice", "truth"):
        flow = _param_flow(code, frozenset(passed), ns, chain)  # the value itself too: a choice mixed into it is data
        if flow.unknown:
            return f"{what} ({flow.unknown})", ""
    return "", flow.returned


#: Built-in functions that call back a comparison (``__lt__``) only to order what they
#: are given: a truth value returned to them decides an order, which is data.
_ORDERING = frozenset({"sorted", "min", "max", "heapq.heappush", "heapq.heappop", "heapq.heapify",
                       "heapq.nsmallest", "heapq.nlargest", "heapq.merge", "bisect.bisect", "bisect.bisect_left",
                       "bisect.bisect_right", "bisect.insort", "bisect.insort_left", "bisect.insort_right"})


def _orders(block: list[Any], p: int, namespace: dict[str, Any] | None) -> bool:
    """Whether the call at ``block[p]`` is a built-in sort or ordering function
    (:data:`_ORDERING`, or a ``.sort()`` method): a frame below it that returns a truth
    value is a comparison it called back."""
    import builtins
    import bisect
    import heapq

    from codesuture.patch import instrs as I

    callee = _callee(block, p)
    if callee is not None:
        obj = _resolve(callee, namespace)
        known = {getattr(builtins, n, None) for n in ("sorted", "min", "max")}
        known |= {getattr(heapq, n.split(".")[1], None) for n in _ORDERING if n.startswith("heapq.")}
        known |= {getattr(bisect, n.split(".")[1], None) for n in _ORDERING if n.startswith("bisect.")}
        return obj is not None and obj in known
    try:
        fn = I.find_producer(block, p, I.call_slots(block[p])[0])
    except Exception:  # noqa: BLE001 - an odd call shape: not known to sort
        return False
    return fn is not None and _name(block[fn]) in ("LOAD_ATTR", "LOAD_METHOD") and _attr_name(block[fn]) == "sort"


def _param_flow(code: types.CodeType, params: frozenset[tuple[str, str]], namespace: dict[str, Any] | None,
                chain: tuple[int, ...]) -> Flow:
    """Where parameters *params* ``{(name, taint)}`` of *code* go in its function, from
    the first instruction (:func:`_analyze` with ``params``). Never raises; cached per
    code object and parameters."""
    key = (id(code), params)
    hit = _PARAMS.get(key)
    if hit is not None and hit[0] is code:
        return hit[1]
    try:
        flow = _analyze(code, 0, "truth", namespace, params=params, chain=chain)
    except Exception as exc:  # noqa: BLE001 - unknown: fail closed
        flow = Flow(unknown=f"the value flow of {code.co_qualname} is not known ({type(exc).__name__}: {exc})")
    if not any("calls deep" in d.what for d in flow.decisions):  # (depends on the chain: not kept)
        if len(_PARAMS) > 1024:
            _PARAMS.clear()
        _PARAMS[key] = (code, flow)
    return flow


I_CALLS = frozenset({"CALL", "CALL_KW", "CALL_FUNCTION_EX"})


# ------------------------------------------------------------------ a raise reached later

#: Instructions a guard never skips on its way to a raising side: they hand something
#: out of the frame (a yield, an await) or leave it.
_NO_SKIP = frozenset({"YIELD_VALUE", "SEND", "GET_AWAITABLE", "GET_AITER", "GET_ANEXT", "BEFORE_WITH",
                      "BEFORE_ASYNC_WITH", "RETURN_VALUE", "RETURN_CONST", "RETURN_GENERATOR", "IMPORT_NAME",
                      "IMPORT_FROM", "IMPORT_STAR", "SETUP_ANNOTATIONS", "STORE_DEREF", "DELETE_DEREF",
                      "MAKE_CELL"})
_WRITES_LOCAL = frozenset({"STORE_FAST", "STORE_NAME", "STORE_FAST_STORE_FAST", "STORE_FAST_LOAD_FAST",
                           "DELETE_FAST", "DELETE_NAME"})
_READS_LOCAL = _LOADS_LOCAL | {"LOAD_FAST_LOAD_FAST", "STORE_FAST_LOAD_FAST", "LOAD_FROM_DICT_OR_DEREF"}


def _later_raise(g: _Graph, code: types.CodeType, b0: int, p0: int,
                 decisions: tuple[Decision, ...]) -> Decision | None:
    """A decision *D* on the value, reached later than straight from it, whose raising
    side a guard at ``g.blocks[b0][p0]`` can take by jumping there at once; None when
    there is none. All of these must hold (else the guard refuses, as before):

    * *D* is reached on every normal path from the guard (its block post-dominates
      the guard's), and every decision on the value before it rejoins (only shapes
      data);
    * *D* is a two-way branch, or a compound ``and``/``or`` condition (conditional
      jumps, each to another of them, to one raise block *R* or to one continuation
      *N* where the paths that do not raise meet), with one side, *R*, that never
      returns (a ``raise``, a call that never returns) while the other can;
    * the code the guard skips (from the guard to *D*, *D*'s own tests, and the
      handlers of ``try`` blocks in it) has no effect outside the frame (no action as
      :func:`_acts` counts them, no yield, await, import, store to a cell, and no
      handler in it that returns), and *R* reads no local variable it writes;
    * *R* is in no ``try`` or ``with`` block of the function (a handler there could
      read what was skipped), and the stack at *R* is the guard's, less items on top
      (the ``net``/``low`` depths of :class:`Decision`).

    The original program crashed at the guard, so it ran none of the skipped code
    either: taking *R* turns the crash into the error the program raises itself when
    the tests at *D* fail, without running anything it would not have run."""
    from bytecode import Instr

    at = {o: k for k, o in enumerate(g.offsets)}

    def place(d: Decision) -> tuple[int, int] | None:
        k = at.get(d.offset)
        return g.where.get(k) if k is not None else None

    cands: dict[int, Decision] = {}
    for d in decisions:
        loc = place(d)
        if loc is None:
            return None
        ins = g.blocks[loc[0]][loc[1]]
        if d.outcome == REJOIN or ins.name in ("FOR_ITER", "SEND") or not (ins.has_jump() and not ins.is_uncond_jump()):
            continue
        if g.pdom[b0] >> loc[0] & 1 and (loc[0] != b0 or loc[1] > p0):
            cands[loc[0]] = d
    chosen: tuple[int, Decision, set[int]] | None = None
    for bD, d in cands.items():
        region = _skipped_blocks(g, b0, bD)
        if region is not None and not any(c in region for c in cands if c != bD):
            chosen = (bD, d, region)
            break
    if chosen is None:
        return None
    bD, d, region = chosen
    for e in decisions:
        loc = place(e)
        if loc is None or e is d:
            continue
        if (loc[0] in region or (loc[0] == b0 and loc[1] > p0 and bD != b0)) and e.outcome != REJOIN:
            return None
    compound = _compound(g, bD)
    if compound is None:
        return None
    tests, r = compound
    inside = region | tests
    # The instructions skipped: the rest of the guard's block, the blocks to D, D's tests.
    skipped = [(b0, p) for p in range(p0 + 1, len(g.blocks[b0])) if isinstance(g.blocks[b0][p], Instr)]
    skipped += [(b, p) for b in sorted(inside - {b0}) for p, x in enumerate(g.blocks[b]) if isinstance(x, Instr)]
    handlers = _handler_blocks(g, code, [g.offsets[g.index[x]] for x in skipped], inside | {b0})
    if handlers is None:
        return None
    instrs = [g.blocks[b][p] for b, p in skipped] + [x for b in sorted(handlers) for x in g.blocks[b]
                                                     if isinstance(x, Instr)]
    if _acts(g, instrs) or any(x.name in _NO_SKIP for x in instrs if isinstance(x, Instr)):
        return None
    written = {n for x in instrs if isinstance(x, Instr) and x.name in _WRITES_LOCAL for n in _written(x)}
    raising = _reach(g, r)
    r_instrs = [(b, p) for b in sorted(raising) for p, x in enumerate(g.blocks[b]) if isinstance(x, Instr)]
    for b, p in r_instrs:
        x = g.blocks[b][p]
        if x.name in _READS_LOCAL and written & set(_read(x)):
            return None
    if _covered(code, {g.offsets[g.index[x]] for x in r_instrs}):
        return None
    depth = _depth_to(g, b0, p0, inside, r)
    if depth is None:
        return None
    net, low = depth
    if net > 0 or low < net:
        return None
    # The jump into R: the conditional jump of a test that has it as a side.
    side = next(((b, "jump") for b in sorted(tests) if g.jump[b] == r and g.nxt[b] is not None), None) or \
        next(((b, "next") for b in sorted(tests) if g.nxt[b] == r and g.jump[b] is not None), None)
    if side is None:
        return None
    jb, how = side
    jp = max(p for p, x in enumerate(g.blocks[jb]) if isinstance(x, Instr))
    lines = [x.location.lineno for x in instrs if isinstance(x, Instr) and x.location is not None
             and x.location.lineno is not None]
    start = g.blocks[b0][p0].location
    if start is not None and start.lineno is not None:
        lines.append(start.lineno)
    skips = f"{min(lines)}-{max(lines)}" if lines else ""
    return Decision(g.offsets[g.index[(jb, jp)]], d.line, d.what, RAISES, how, False, net, low, skips)


def _written(ins: Any) -> list[str]:
    names = [_argname(a) for a in ins.arg] if isinstance(ins.arg, tuple) else [_argname(ins.arg)]
    return names[:1] if ins.name == "STORE_FAST_LOAD_FAST" else names


def _read(ins: Any) -> list[str]:
    names = [_argname(a) for a in ins.arg] if isinstance(ins.arg, tuple) else [_argname(ins.arg)]
    return names[1:] if ins.name == "STORE_FAST_LOAD_FAST" else names


def _skipped_blocks(g: _Graph, b0: int, bD: int) -> set[int] | None:
    """The blocks a path from block *b0* runs before it reaches block *bD* (which
    post-dominates it); None when such a path comes back to *b0* (a loop around the
    guard)."""
    seen: set[int] = set()
    todo = [s for s in g.succ[b0] if s >= 0] if b0 != bD else []
    while todo:
        x = todo.pop()
        if x == bD or x in seen:
            continue
        if x == b0:
            return None
        seen.add(x)
        todo.extend(s for s in g.succ[x] if s >= 0)
    return seen


def _reach(g: _Graph, b: int) -> set[int]:
    seen: set[int] = set()
    todo = [b]
    while todo:
        x = todo.pop()
        if x not in seen:
            seen.add(x)
            todo.extend(s for s in g.succ[x] if s >= 0)
    return seen


def _raise_only(g: _Graph, b: int) -> bool:
    return bool(g.can_raise >> b & 1) and not g.can_return >> b & 1


def _compound(g: _Graph, b: int) -> tuple[set[int], int] | None:
    """``(tests, R)`` for the decision ending block *b*: *tests* the blocks of its
    condition (*b* alone, or the conditional jumps of an ``and``/``or`` chain from
    it), *R* the one raise-only block they lead to; every other way out of them is one
    continuation that can return. None when the decision is not of that shape."""
    n = len(g.blocks)
    if _raise_only(g, b) or not g.can_return >> b & 1:
        return None
    # Post-dominators over the paths that do not raise (raise-only blocks left out).
    exit_bit, full = 1 << n, (1 << (n + 1)) - 1
    pd = [full] * n
    changed = True
    while changed:
        changed = False
        for x in range(n - 1, -1, -1):
            outs = [s for s in g.succ[x] if s == -1 or (s >= 0 and not _raise_only(g, s))]
            if _raise_only(g, x) or not outs:
                continue
            acc = full
            for s in outs:
                acc &= exit_bit if s == -1 else pd[s]
            new = acc | 1 << x
            if new != pd[x]:
                pd[x], changed = new, True
    after = [c for c in range(n) if c != b and pd[b] >> c & 1]
    join = next((c for c in after if all(pd[c] >> o & 1 for o in after)), None)
    tests: set[int] = set()
    raises: set[int] = set()
    todo = [b]
    while todo:
        x = todo.pop()
        if x in tests or x == join:
            continue
        if _raise_only(g, x):
            raises.add(x)
            continue
        if join is None and x != b:
            continue  # no join inside the function: the decision alone
        # A test of the condition: a block that ends in a conditional jump, or one that
        # only jumps on (3.12+ layouts).
        if not (g.jump[x] is not None and g.nxt[x] is not None) and _through_jumps(g, x) == x:
            return None
        tests.add(x)
        if any(s < 0 for s in g.succ[x]):
            return None
        todo.extend(g.succ[x])
    if len(raises) != 1:
        return None
    if join is None:
        other = [s for s in g.succ[b] if s not in raises]
        if len(other) != 1 or not g.can_return >> other[0] & 1:
            return None
    elif not g.can_return >> join & 1:
        return None
    return tests, raises.pop()


def _exception_entries(code: types.CodeType) -> list[tuple[int, int, int]]:
    import dis

    entries = getattr(dis.Bytecode(code), "exception_entries", ())  # 3.11+ (not in typeshed's stub)
    return [(e.start, e.end, e.target) for e in entries]


def _covered(code: types.CodeType, offsets: set[int]) -> bool:
    """Whether any of *offsets* is in a ``try`` (or ``with``) range of *code*."""
    return any(start <= o < end for start, end, _ in _exception_entries(code) for o in offsets)


def _handler_blocks(g: _Graph, code: types.CodeType, offsets: list[int], inside: set[int]) -> set[int] | None:
    """The blocks of the handlers that catch an exception raised at *offsets* (skipped
    code), up to where they rejoin the blocks *inside*; None when one of them can
    return (a default there would decide an exit)."""
    at = {o: k for k, o in enumerate(g.offsets)}
    out: set[int] = set()
    for start, end, target in _exception_entries(code):
        if not any(start <= o < end for o in offsets):
            continue
        k = at.get(target)
        if k is None:
            return None
        todo = [g.where[k][0]]
        while todo:
            x = todo.pop()
            if x in out or x in inside:
                continue
            out.add(x)
            if -1 in g.succ[x]:
                return None
            todo.extend(s for s in g.succ[x] if s >= 0)
    return out


def _depth_to(g: _Graph, b0: int, p0: int, inside: set[int], r: int) -> tuple[int, int] | None:
    """``(net, low)``: the stack depth on entry to block *r* and the lowest point
    reached on the way, from the instruction at ``g.blocks[b0][p0]`` (depth 0: before
    it, with its inputs pushed) through the blocks *inside*; None when the paths
    disagree."""
    from bytecode import Instr

    entry: dict[int, int] = {}
    into: set[int] = set()
    low = 0
    work = [(b0, p0, 0)]
    while work:
        b, pos, depth = work.pop()
        if b != b0:
            if b in entry:
                if entry[b] != depth:
                    return None
                continue
            entry[b] = depth
        last = None
        for ins in g.blocks[b][pos:]:
            if not isinstance(ins, Instr):
                continue
            if ins.has_jump() and not ins.is_uncond_jump():
                last = ins
                break
            if ins.has_jump():
                continue
            pops, pushes = _effect(ins, jump=False)
            depth -= pops
            low = min(low, depth)
            depth += pushes
        for jmp, s in ((True, g.jump[b]), (False, g.nxt[b])):
            if s is None:
                continue
            d = depth
            if last is not None:
                pops, pushes = _effect(last, jmp)
                d -= pops
                low = min(low, d)
                d += pushes
            if s == r:
                into.add(d)
            elif s in inside and s != b0:
                work.append((s, 0, d))
    if len(into) != 1:
        return None
    return into.pop(), low


def _previous(block: list[Any], p: int) -> Any:
    """The real instruction before ``block[p]`` in its block, or None."""
    from bytecode import Instr

    return next((x for x in reversed(block[:p]) if isinstance(x, Instr)), None)


def ins_is_jump(block: list[Any]) -> bool:
    from bytecode import Instr

    last = next((x for x in reversed(block) if isinstance(x, Instr)), None)
    return last is not None and last.has_jump() and last.is_uncond_jump()


#: ``(popped, pushed)`` of instructions :func:`codesuture.patch.instrs.effect` does not
#: list and whose ``bytecode`` pre/post effect does not say what they consume.
_EXTRA = {"BEFORE_WITH": (1, 2), "BEFORE_ASYNC_WITH": (1, 2), "GET_AWAITABLE": (1, 1), "GET_AITER": (1, 1),
          "GET_ANEXT": (1, 2), "GET_YIELD_FROM_ITER": (1, 1), "END_FOR": (2, 0), "END_SEND": (2, 1),
          "YIELD_VALUE": (1, 1), "RETURN_VALUE": (1, 0), "PUSH_EXC_INFO": (1, 2), "POP_EXCEPT": (1, 0),
          "GET_LEN": (1, 2), "MATCH_MAPPING": (1, 2), "MATCH_SEQUENCE": (1, 2), "MATCH_KEYS": (2, 3),
          "MAP_ADD": (2, 0), "TO_BOOL": (1, 1)}


def _effect(ins: Any, jump: bool | None) -> tuple[int, int]:
    """``(popped, pushed)`` of *ins*: the project's table for straight-line code, then
    ``bytecode``'s pre/post stack effect (jumps: on the edge taken when *jump*)."""
    from codesuture.patch import instrs as I

    if ins.name == "SEND":
        # ``bytecode`` gives SEND's net effect only. Not taken: the value sent is
        # replaced by the one yielded. Taken (the awaitable returned): 3.11 replaces
        # receiver and value with the result; 3.12+ leaves the receiver under the
        # result for END_SEND.
        if not jump:
            return 1, 1
        return (2, 1) if sys.version_info < (3, 12) else (1, 1)
    if not ins.has_jump():
        eff = _EXTRA.get(ins.name) or I.effect(ins)
        if eff is not None:
            return eff
    pre, post = ins.pre_and_post_stack_effect(jump)
    pops = -pre if pre < 0 else 0
    return pops, post + (pre if pre > 0 else 0)


def _what(g: _Graph, b: int, name: str, tested: str) -> str:
    if name == "FOR_ITER":
        return "a for loop"
    if "NONE" in name:
        return "an identity test"
    nxt = g.nxt[b]
    if nxt is not None:
        first = next((x for x in g.blocks[nxt] if _name(x)), None)
        if _name(first) == "LOAD_ASSERTION_ERROR":
            return "assert"
    return "a branch" if tested == "data" else tested


def _apply(ins: Any, stack: tuple[Any, ...], jump: bool) -> tuple[Any, ...]:
    """The stack on one edge of the conditional jump *ins*."""
    pops, pushes = _effect(ins, jump)
    keep = stack[: max(0, len(stack) - pops)]
    if ins.name in ("JUMP_IF_TRUE_OR_POP", "JUMP_IF_FALSE_OR_POP") and jump:
        return stack
    tainted = any(stack[-pops:]) if pops else False
    return _trim(keep + (("data" if tainted else None),) * pushes)


def _region(g: _Graph, b: int) -> set[int]:
    """The blocks of the two sides of the branch ending block *b*, up to (not including)
    its immediate post-dominator: what runs there depends on the decision."""
    n = len(g.blocks)
    after = [c for c in range(n) if c != b and g.pdom[b] >> c & 1]
    # The immediate post-dominator: the candidate every other candidate post-dominates.
    ipdom = next((c for c in after if all(g.pdom[c] >> o & 1 for o in after)), None)
    region: set[int] = set()
    todo = [s for s in g.succ[b] if s >= 0]
    while todo:
        x = todo.pop()
        if x == ipdom or x in region or x == b or (ipdom is not None and g.canon and g.canon[x] == ipdom):
            continue
        region.add(x)
        todo.extend(s for s in g.succ[x] if s >= 0)
    return region


def _decided(ins: Any, before: tuple[Any, ...], stack: tuple[Any, ...],
             local: frozenset[tuple[str, str]]) -> tuple[tuple[Any, ...], frozenset[tuple[str, str]]]:
    """The state after *ins*, an instruction on a side of a decision on the value
    (stack *before* it, *stack* and *local* after :func:`_step`): what it makes depends
    on the decision. A name or constant it loads, and what only carries such values on
    (:data:`_CARRIES`, :data:`_BUILDS`), is a :data:`CHOICE`; anything computed is data.
    A local stored keeps a choice or a truth value, else holds data."""
    name = ins.name
    if name in _STORES_LOCAL:
        v = before[-1] if before else None
        nm = _argname(ins.arg)
        t: str = str(v) if _is_truth(v) else "data"
        return stack, frozenset((n_, x) for n_, x in local if n_ != nm) | {(nm, t)}
    pops, made = _effect(ins, jump=False)
    if not made:
        return stack, local
    if name == "LOAD_CONST" and isinstance(ins.arg, bool):
        tag = CHOSEN_FLAG  # `multiline = True` on one side is `multiline = <the test>`: a truth value
    elif name in _NAMES_ONLY:
        pushed = stack[-1] if stack else None  # a module-level name of module code may hold the value
        tag = CHOICE if not pushed else pushed if _is_truth(pushed) else "data"
    elif name in _CARRIES or name in _BUILDS:
        inputs = before[-pops:] if pops and len(before) >= pops else (None,) * (pops - len(before)) + before
        tag = CHOICE if pops == 0 or (any(inputs) and all(t == CHOICE for t in inputs if t)) else "data"
    else:
        tag = "data"
    return _trim((None,) * max(0, made - len(stack)) + stack[:-made] + (tag,) * made), local


def _join(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    """Two abstract stacks (top-aligned) joined: a slot is tainted when it is in either;
    data on one side and a :data:`CHOICE` on the other is data (the value itself, or
    a choice made in its place: ``name = name or "anonymous"``)."""
    n = max(len(a), len(b))
    a, b = (None,) * (n - len(a)) + a, (None,) * (n - len(b)) + b
    return _trim(tuple("data" if {x, y} == {"data", CHOICE} else x or y for x, y in zip(a, b)))


def _join_locals(a: frozenset[tuple[str, str]], b: frozenset[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """Two sets of tainted locals joined (a union), where a local that holds data on one
    path and a :data:`CHOICE` on another holds data (``if not name: name = "anonymous"``
    only shapes the value); a choice against an untainted value stays a choice
    (``code = 403`` ... ``code = 200``)."""
    both = a | b
    data = {n for n, t in both if t == "data"}
    if not data:
        return both
    return frozenset((n, t) for n, t in both if not (t == CHOICE and n in data))


def _trim(stack: tuple[Any, ...]) -> tuple[Any, ...]:
    i = 0
    while i < len(stack) and stack[i] is None:
        i += 1
    return stack[i:]


def _is_truth(taint: Any) -> bool:
    """True for a stack slot holding a truth value made from the value (not the value
    itself, nor data computed from it)."""
    return bool(taint) and taint != "data"


def _step(ins: Any, stack: tuple[Any, ...], local: frozenset[tuple[str, str]], block: list[Any],
          p: int) -> tuple[tuple[Any, ...], frozenset[tuple[str, str]], tuple[str, str] | None]:
    """One straight-line instruction: the new stack and locals, and a note: a decision
    (a truth value stored or passed), ``returned`` (yielded), or an escape as data."""
    name, arg = ins.name, ins.arg
    note: tuple[str, str] | None = None

    def at(d: int) -> Any:
        return stack[-d] if len(stack) >= d else None

    if name == "COPY":
        return _trim(stack + (at(int(arg)),)), local, None
    if name == "SWAP":
        n = int(arg)
        s = list((None,) * max(0, n - len(stack)) + stack)
        s[-1], s[-n] = s[-n], s[-1]
        return _trim(tuple(s)), local, None
    if name in _STORES_LOCAL or name == "STORE_FAST_STORE_FAST":
        names = [_argname(a) for a in arg] if isinstance(arg, tuple) else [_argname(arg)]
        vals = [at(1), at(2)] if name == "STORE_FAST_STORE_FAST" else [at(1)]
        d = dict(local)
        for nm, v in zip(names, vals):
            if v:
                d[nm] = v
            else:
                d.pop(nm, None)
        return _trim(stack[: max(0, len(stack) - len(vals))]), frozenset(d.items()), None
    if name == "STORE_FAST_LOAD_FAST":
        st, ld = (_argname(a) for a in arg)
        d = dict(local)
        v = at(1)
        if v:
            d[st] = v
        else:
            d.pop(st, None)
        return _trim(stack[:-1] + (d.get(ld),)), frozenset(d.items()), None
    if name in _LOADS_LOCAL:
        return _trim(stack + (dict(local).get(_argname(arg)),)), local, None
    if name == "LOAD_FAST_LOAD_FAST":
        d = dict(local)
        return _trim(stack + tuple(d.get(_argname(a)) for a in arg)), local, None
    if name in ("DELETE_FAST", "DELETE_NAME", "DELETE_DEREF"):
        return stack, frozenset((n_, t) for n_, t in local if n_ != _argname(arg)), None
    pops, pushes = _effect(ins, jump=False)
    inputs = stack[-pops:] if pops and len(stack) >= pops else ((None,) * (pops - len(stack)) + stack if pops else ())
    keep = stack[: max(0, len(stack) - pops)]
    tainted = [t for t in inputs if t]
    if not tainted:
        return _trim(keep + (None,) * pushes), local, None
    if name in ("STORE_ATTR", "STORE_SUBSCR", "STORE_GLOBAL", "DELETE_SUBSCR", "DELETE_ATTR"):
        value = {"STORE_ATTR": at(2), "STORE_SUBSCR": at(3), "STORE_GLOBAL": at(1)}.get(name)
        if value in (CHOICE, CHOSEN_FLAG):  # (on a side itself, judged with the side)
            return _trim(keep), local, ("decision", f"{TRUTH_STORED_CHOICE} ({_STORED[name]})")
        if _is_truth(value):  # decided later, where the model cannot follow: fail closed
            return _trim(keep), local, ("decision", f"a truth value made from it is stored ({_STORED[name]})")
        return _trim(keep), local, (("stored", "") if value else None)
    if name == "BINARY_SUBSCR" and len(inputs) == 2 and _is_truth(inputs[1]):
        return _trim(keep + (CHOICE,) * pushes), local, None  # `{True: a, False: b}[test]`: a choice
    chosen = CHOICE in inputs
    if chosen and (name in _BUILDS or name in ("UNPACK_SEQUENCE", "UNPACK_EX")
                   or (name in _CARRIES and all(t == CHOICE for t in tainted))):
        return _trim(keep + (CHOICE,) * pushes), local, None  # still the choice (or a container of it)
    if chosen and name in _CONTAINER_ADDS:
        n = int(arg) if isinstance(arg, int) else 1
        s = list((None,) * max(0, n - len(keep)) + keep)
        s[-n] = CHOICE
        return _trim(tuple(s)), local, None
    if name in _BUILDS and any(_is_truth(t) for t in inputs):
        return _trim(keep + (_TRUTH_BOX,) * pushes), local, None
    if name in _CONTAINER_ADDS:
        # The container sits below the popped items: it now holds the value (a truth
        # value in it keeps it one: stored for later, it decides there).
        n = int(arg) if isinstance(arg, int) else 1
        s = list((None,) * max(0, n - len(keep)) + keep)
        s[-n] = _TRUTH_BOX if any(_is_truth(t) for t in inputs) or _is_truth(s[-n]) else "data"
        return _trim(tuple(s)), local, None
    if name in ("BINARY_SUBSCR", "BINARY_SLICE", "UNPACK_SEQUENCE", "UNPACK_EX") and _is_truth(inputs[0]):
        return _trim(keep + (_TRUTH_BOX,) * pushes), local, None  # what a truth container holds
    if name in _TRUTH_OPS:
        return _trim(keep + (_TRUTH_OPS[name],) * pushes), local, None
    if name in I_CALLS:
        callee = _callee(block, p) or ""
        args_tainted = any(inputs[2:]) if len(inputs) > 2 else False
        if callee in _TRUTH_CALLS:
            return _trim(keep + (_TRUTH_CALLS[callee],) * pushes), local, None
        if CHOICE in inputs[2:] and not _logs(block, p):
            return _trim(keep + ("data",) * pushes), local, ("decision", f"{CHOICE_PASSED} to {callee or 'a call'}()")
        if any(_is_truth(t) for t in inputs[2:]) and not _logs(block, p):
            # Decided in the callee, if anywhere: :func:`_analyze` follows it there.
            return _trim(keep + ("data",) * pushes), local, (TRUTH_CALL, "")
        note = ("passed", "") if args_tainted else None
        return _trim(keep + ("data",) * pushes), local, note
    if name == "YIELD_VALUE":
        return _trim(keep + (None,) * pushes), local, ("returned", at(1) or "data")
    if name == "POP_TOP":
        return _trim(keep), local, None
    return _trim(keep + ("data",) * pushes), local, None


# ------------------------------------------------------------------ the policy


def verdict(flow: Flow, raise_side: bool = True) -> Verdict:
    """The policy for a value a guard would yield in its own frame, whose flow is
    *flow* (``docs/guards.md``):

    * the first decision reached, in straight-line code, raises on one side: take that
      side (``raise``) when *raise_side* (the guard can), else ``refuse``;
    * a decision reached later raises on one side and everything before it only shapes
      data (:attr:`Flow.later`): take that side when *raise_side*, skipping the code
      in between (it has no effect, see :func:`_later_raise`);
    * a decision that does not rejoin (or an unknown flow): ``refuse``;
    * otherwise ``heal``; :attr:`Verdict.returned` says whether the callers must be
      asked too (:func:`callers_verdict`)."""
    if flow.unknown:
        return Verdict("refuse", flow.unknown)
    first = flow.decisions[0] if flow.decisions else None
    if first is not None and first.first and first.outcome == RAISES:
        if raise_side and first.net <= 0 and first.low >= first.net:
            return Verdict("raise", f"{first.what} at line {first.line} raises the program's own error on one side",
                           first)
        return Verdict("refuse", f"{first.what} at line {first.line} raises on one side, and this guard cannot take it",
                       first)
    later = flow.later
    if later is not None and raise_side and later.net <= 0 and later.low >= later.net:
        return Verdict("raise", f"{later.what} at line {later.line} raises the program's own error on one side, and "
                       f"the code before it (lines {later.skips}) only shapes data", later)
    for d in flow.decisions:
        if d.outcome != REJOIN:
            return Verdict("refuse", _reason(d), d)
    return Verdict("heal", "data" if not flow.decisions else "decisions that rejoin only shape data",
                   returned=flow.returned)


def _reason(d: Decision) -> str:
    if d.outcome == RAISES:
        return f"{d.what} at line {d.line} decides whether the program raises"
    if d.what == LOOP_TEST:
        return f"it decides the loop test of while at line {d.line}"
    if d.what == LOOP_EXIT:
        return f"it decides whether the while loop runs again (a branch out of it at line {d.line})"
    if d.what.startswith(("a truth value", "a value a decision")):
        return f"{d.what} at line {d.line}"
    if d.outcome == ACTS:
        return (f"it decides {d.what} at line {d.line} where one side acts (a call made for its effect, or a store "
                "outside the function)")
    return f"it decides {d.what} at line {d.line} whose sides leave the function separately"


def _flag_reason(d: Decision) -> str:
    """Why a ``bool`` default must not reach decision *d* (any decision: a flag is what
    it decides)."""
    return f"a default bool would decide {d.what} at line {d.line}"


def flag_verdict(flow: Flow) -> str:
    """Why a default that is itself a ``bool`` must not take *flow* (the flow of a
    truth value made from the value): any decision, even one whose sides rejoin, or a
    store for later; "" when it only flows on as data or is returned (the callers are
    asked with ``"flag"``, :func:`callers_verdict`)."""
    if flow.unknown:
        return flow.unknown
    for d in flow.decisions:
        return _reason(d) if d.outcome != REJOIN else _flag_reason(d)
    return ""


def own_frame(code: types.CodeType) -> bool:
    """True for code of CodeSuture itself (it ends a walk through callers)."""
    return code.co_filename.startswith(_PKG_DIR)


def callers_verdict(frames: Iterable[tuple[types.CodeType, int, dict[str, Any] | None]], returned: str) -> str | None:
    """Follow a value returned as *returned* (``"value"``/``"truth"``/``"choice"``) into its callers:
    *frames* yields ``(code, lasti, globals)`` of each caller, innermost first. Returns
    None when no caller decides with it (or a CodeSuture frame ends the walk), else the
    reason it must not be healed (a caller decides with it, or a truth value made from
    it is still returned after :data:`MAX_CALLERS` callers). *returned* ``"flag"``: the
    default is itself a ``bool``, which any decision decides with, even one whose sides
    rejoin (``status = 403 if blocked else 200``). Never raises."""
    strict = returned == "flag"
    kind = "truth" if strict else returned
    n = 0
    for code, lasti, namespace in frames:
        if not kind or code.co_filename.startswith(_PKG_DIR):
            return None
        n += 1
        if n > MAX_CALLERS:
            return too_deep(kind)
        why, kind = caller_step(code, lasti, kind, namespace, strict)
        if why:
            return why
    return None  # the top of the stack: nobody decides with it


def caller_step(code: types.CodeType, lasti: int, kind: str, namespace: dict[str, Any] | None,
                strict: bool = False) -> tuple[str | None, str]:
    """One caller of a value returned as *kind* (``"value"``/``"truth"``/``"choice"``), standing at
    instruction offset *lasti* of *code* (the call that returns it): ``(why, next)``,
    *why* the reason the value must not be healed when this caller decides with it (or
    its flow is unknown), else None, and *next* how the caller returns it on (``""``:
    it does not, ``"value"``, ``"truth"``). Depends on the code object and offset only
    (the analysis is cached per both, :func:`_caller_flow`); never raises. *strict*:
    the default is a ``bool`` (:func:`callers_verdict`'s ``"flag"``), so any decision
    decides, even one whose sides rejoin. The step :func:`callers_verdict` takes per
    frame, and :mod:`codesuture.runtime.callers` caches per live frame."""
    flow = _caller_flow(code, lasti, kind, namespace)
    if flow.unknown:
        return flow.unknown, ""
    for d in flow.decisions:
        if d.outcome != REJOIN or strict:
            where = f"{code.co_qualname} ({os.path.basename(code.co_filename)})"
            return f"it is returned to {where}, where {_flag_reason(d) if strict else _reason(d)}", ""
    return None, flow.returned


def too_deep(kind: str) -> str | None:
    """Past :data:`MAX_CALLERS` callers: a value returned on unchanged through all of
    them (a string a recursive converter builds) counts as data; a truth value made
    from the default fails closed."""
    if kind in ("truth", "choice"):
        return f"it is returned as a truth value through more than {MAX_CALLERS} callers"
    return None


def _caller_flow(code: types.CodeType, lasti: int, kind: str, namespace: dict[str, Any] | None) -> Flow:
    """The flow, in a caller, of what the instruction at *lasti* (the call that is
    returning the value) produces; a branch at *lasti* itself is the decision."""
    key = (id(code), lasti, kind)  # lasti as the frame reports it
    hit = _CALLERS.get(key)
    if hit is not None and hit[0] is code:
        return hit[1]
    try:
        import bisect

        g = _graph_for(code, namespace)
        # f_lasti/tb_lasti of a calling frame may point into the call's inline cache
        # entries (3.12): the instruction is the last one that starts at or before it.
        k = bisect.bisect_right(g.offsets, lasti) - 1
        if k < 0:
            raise ValueError(f"no instruction at offset {lasti}")
        b, p = g.where[k]
        ins = g.blocks[b][p]
        if ins.name == "PRECALL" and k + 1 in g.where:  # 3.11: a caller can stand at the PRECALL of its CALL
            k += 1
            b, p = g.where[k]
            ins = g.blocks[b][p]
        lasti = g.offsets[k]
        opname = ins.name
        if opname in I_CALLS and kind != "value" and _orders(g.blocks[b], p, namespace):
            flow = Flow()  # the truth value went to a sort's comparisons: an order is data
        elif ins.has_jump() and not ins.is_uncond_jump() and opname not in ("FOR_ITER", "SEND"):
            outcome, side, loop = _classify(g, b, opname)
            line = ins.location.lineno if ins.location is not None else None
            flow = Flow((Decision(lasti, line, loop or "a truth test", outcome, side),))
        else:
            flow = _analyze(code, lasti, kind, namespace)
    except Exception as exc:  # noqa: BLE001 - unknown: fail closed
        flow = Flow(unknown=f"the value flow in {code.co_qualname} is not known ({type(exc).__name__}: {exc})")
    if len(_CALLERS) > 4096:
        _CALLERS.clear()
    _CALLERS[key] = (code, flow)
    return flow


def live_callers(frame: types.FrameType | None) -> Iterable[tuple[types.CodeType, int, dict[str, Any] | None]]:
    """``(code, f_lasti, f_globals)`` of *frame* and the frames that called it."""
    while frame is not None:
        yield frame.f_code, frame.f_lasti, frame.f_globals
        frame = frame.f_back


def traceback_callers(tb: types.TracebackType | None, site_frame: types.FrameType) -> list[tuple[types.CodeType, int, dict[str, Any] | None]]:
    """The callers of *site_frame* recorded in traceback *tb* (innermost first, at the
    instruction each was executing), then the live frames above the traceback."""
    entries = []
    while tb is not None:
        entries.append((tb.tb_frame, tb.tb_lasti))
        tb = tb.tb_next
    idx = next((i for i, (f, _) in enumerate(entries) if f is site_frame), len(entries) - 1)
    out: list[tuple[types.CodeType, int, dict[str, Any] | None]] = [
        (f.f_code, lasti, f.f_globals) for f, lasti in reversed(entries[:idx])]
    top = entries[0][0].f_back if entries else None
    out.extend(live_callers(top))
    return out


__all__ = ["Decision", "Flow", "Verdict", "analyze", "verdict", "callers_verdict", "caller_step", "too_deep", "live_callers",
           "traceback_callers", "own_frame", "REJOIN", "RAISES", "EXITS", "ACTS", "MAX_CALLERS", "LOOP_TEST",
           "LOOP_EXIT", "BREAK_DATA"]
