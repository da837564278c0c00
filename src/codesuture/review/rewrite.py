"""The source rewriter behind ``codesuture suggest``: each patch record written as Python.

:func:`rewrite_source` takes a module's exact source text and the patch records made
from it, locates each patched expression from the recorded instruction positions (line,
end line and UTF-8 byte columns, as ``co_positions`` gives them and as :mod:`ast` numbers
nodes), plans the rewrite its guard family's row names (:mod:`codesuture.guards.families`;
the forms are described in :mod:`codesuture.review.suggest` and ``docs/guards.md``), applies the plans together, and checks that the result
parses, compiles and still defines the patched functions. A patch that cannot be written
faithfully is a :class:`Failure` (or raises :class:`SuggestError`), never written some
other way.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from codesuture.errors import CodeSutureError
from codesuture.guards.families import family
from codesuture.patch.spec import DEFAULTS, PatchRecord, describe_yield

#: An :mod:`ast` node (typed loosely: the rewriters read the fields of the node types
#: they matched with isinstance).
Node = Any


class SuggestError(CodeSutureError):
    """A patch (or a whole overlay's source) cannot be written as Python source: the
    source is missing or not the one the overlay was built from, the recorded position
    names no expression the guard could have patched, or no faithful rewrite fits there."""


@dataclass(frozen=True)
class Suggestion:
    """One patch written as source: where, which guard, the expression before and the
    statement(s) after, and the comment line explaining it."""

    module: str
    qualname: str
    line: int
    guard: str
    before: str
    after: str
    comment: str


@dataclass(frozen=True)
class Failure:
    """A patch (or an overlay) with no suggestion, and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split as Python's tokenizer does (``\\n``, ``\\r\\n``,
    ``\\r`` only: ``str.splitlines`` also splits at form feeds and the like)."""
    out, i = [], 0
    for m in re.finditer(r"\r\n|\r|\n", text):
        out.append(text[i:m.end()])
        i = m.end()
    if i < len(text):
        out.append(text[i:])
    return out


# ---------------------------------------------------------------------------- the rewriter


def guard_name(r: PatchRecord) -> str:
    """``guard/form`` of a patch record (``null_guard/attr``), or ``guard`` alone."""
    return r.guard.guard + (f"/{r.guard.form}" if r.guard.form else "")


def site_label(module: str, r: PatchRecord) -> str:
    """``module:line qualname guard/form``: how a failure names its patch."""
    return f"{module}:{r.line} {r.qualname} {guard_name(r)}"


def _default_text(default: str) -> str:
    if default not in DEFAULTS or default.startswith("io."):
        raise SuggestError(f"default {default!r} is not a constant")
    return repr(DEFAULTS[default])


_PURE_LEAVES = (ast.Name, ast.Constant)
#: Empty values written without quotes or braces, inside f-string replacement fields.
_FSTRING_SAFE = {"''": "str()", "b''": "bytes()", "{}": "dict()", '""': "str()"}
_COMPREHENSION_NAMES = ("<lambda>", "<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>", "<locals>")


def _pure(node: Node | None) -> bool:
    """True when evaluating *node* again (or earlier) changes nothing: names, constants,
    and attribute/subscript/slice/tuple reads made only of those."""
    if node is None or isinstance(node, _PURE_LEAVES):
        return True
    if isinstance(node, ast.Attribute):
        return _pure(node.value)
    if isinstance(node, ast.Subscript):
        return _pure(node.value) and _pure(node.slice)
    if isinstance(node, ast.Slice):
        return _pure(node.lower) and _pure(node.upper) and _pure(node.step)
    if isinstance(node, (ast.Tuple, ast.List)):
        return all(_pure(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.operand, ast.Constant)
    return False


def _narrowed(node: Node) -> tuple[int, int, int, int] | None:
    """The position the compiler gives an attribute read, or a method call, whose
    object starts on an earlier line than the attribute's name: from the name to the
    end (CPython's ``update_start_location_to_match_attr``), so tracebacks point at the
    name. The name's length is counted in characters there, as here."""
    attr: Node = node if isinstance(node, ast.Attribute) else (
        node.func if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None)
    if attr is None or node.lineno == attr.end_lineno or len(attr.attr) > attr.end_col_offset:
        return None
    return attr.end_lineno, node.end_lineno, attr.end_col_offset - len(attr.attr), node.end_col_offset


def _is_str_literal(node: Node) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and type(node.value) is str)


def _literal(node: Node) -> tuple[bool, Any]:
    """``(True, value)`` for a literal of a built-in scalar type (``3``, ``-1``, ``'a'``)."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None
    if type(value) in (int, float, complex, str, bytes, bool):
        return True, value
    return False, None


def _value_text(value: Any) -> str | None:
    """Source for *value* when it is a literal whose repr reads back as itself."""
    if type(value) in (int, float, str, bytes, bool) or value is None:
        text = repr(value)
        try:
            if ast.literal_eval(text) == value:
                return text
        except (ValueError, SyntaxError):
            return None
    return None


_BINOPS: dict[type, str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
    ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>",
}
_ORDERINGS: dict[type, str] = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
#: Operators for which ``a op <identity>`` is ``a`` (the operand guard's typed reading).
_KEEPS_LEFT = frozenset({"+", "-", "*", "**", "|", "^", "<<", ">>"})


def _typed_binary(op: str, left: Any, right: Any) -> Any:
    from codesuture.runtime.events import _binary, _empty_of

    return _binary(op, left if left is not None else _empty_of(type(right)),
                   right if right is not None else _empty_of(type(left)))


def _method_fallback(name: str) -> str | None:
    """The receiver whose method answers ``None.<name>(...)``, as
    :func:`codesuture.runtime.events.method_default` picks it: ``''``, ``{}``,
    ``set()``; None when the answer is None whatever the arguments (list mutators,
    ``dict.update``...) or the name is unknown."""
    from codesuture.runtime.events import _METHOD_TYPES

    for t, names in _METHOD_TYPES:
        if name in names:
            if t is str:
                return "''"
            if t is dict:
                return "{}" if name in ("get", "items", "keys", "values", "setdefault") else None
            if t is set:
                return "set()" if name not in ("add", "discard") else None
            return None
    return None


class _Source:
    """The module text, its lines and the AST, with byte columns mapped to offsets."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.lines = split_lines(text)
        self.newline = next((_newline(line) for line in self.lines if line.endswith(("\n", "\r"))), "\n")
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        try:
            self.tree = ast.parse(text, filename)
        except SyntaxError as exc:
            raise SuggestError(f"{filename} does not parse: {exc}") from None
        self.parents: dict[Node, Node] = {}
        self.by_span: dict[tuple[int, int, int, int], list[Node]] = {}
        self.names: set[str] = set()
        node: Node
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if hasattr(node, "end_col_offset") and getattr(node, "lineno", None) is not None:
                key = (node.lineno, node.end_lineno, node.col_offset, node.end_col_offset)
                self.by_span.setdefault(key, []).append(node)
                narrowed = _narrowed(node)
                if narrowed:
                    self.by_span.setdefault(narrowed, []).append(node)
        for tok in self._tokens():
            if tok.type == tokenize.NAME:
                self.names.add(tok.string)
        self.in_string = self._string_lines()
        self.temps: Any = None

    def _tokens(self) -> list[tokenize.TokenInfo]:
        try:
            return list(tokenize.generate_tokens(io.StringIO(self.text).readline))
        except (tokenize.TokenError, SyntaxError):
            return []

    def _string_lines(self) -> set[int]:
        """Lines that begin inside a string (a multi-line string's later lines):
        nothing may be inserted before them, nor indentation added to them."""
        lines: set[int] = set()
        middle = getattr(tokenize, "FSTRING_MIDDLE", None)
        for tok in self._tokens():
            if tok.type in (tokenize.STRING, middle) and tok.end[0] > tok.start[0]:
                lines.update(range(tok.start[0] + 1, tok.end[0] + 1))
        return lines

    def offset(self, line: int, col: int) -> int:
        """Text offset of UTF-8 byte column *col* of 1-based *line*."""
        text = self.lines[line - 1] if line - 1 < len(self.lines) else ""
        return self.starts[line - 1] + len(text.encode("utf-8")[:col].decode("utf-8", "replace"))

    def span(self, node: Node) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def line_text(self, line: int) -> str:
        return self.lines[line - 1].rstrip("\r\n") if line - 1 < len(self.lines) else ""

    def statement(self, node: Node) -> Node:
        cur = node
        while not isinstance(cur, ast.stmt):
            cur = self.parents[cur]
        return cur

    def indent(self, line: int) -> str:
        text = self.line_text(line)
        return text[: len(text) - len(text.lstrip(" \t"))]

    def starts_line(self, stmt: Node) -> bool:
        return stmt.lineno not in self.in_string and not self.line_text(stmt.lineno).encode()[: stmt.col_offset].strip()

    def ends_line(self, stmt: Node) -> bool:
        rest = self.line_text(stmt.end_lineno).encode()[stmt.end_col_offset:].decode("utf-8", "replace").strip()
        return not rest or rest.startswith("#")

    def unit(self, stmt: Node) -> str:
        """One level of indentation as this file writes it around *stmt*."""
        ind = self.indent(stmt.lineno)
        if "\t" in ind:
            return "\t"
        parent = self.parents.get(stmt)
        if isinstance(parent, ast.stmt) and parent.lineno != stmt.lineno:
            outer = self.indent(parent.lineno)
            if len(ind) > len(outer) and "\t" not in outer:
                return " " * (len(ind) - len(outer))
        return "    "


class _Edits:
    """Replacements applied to the source, innermost first, so an outer rewrite reads
    its operands' text with the inner rewrites in it (:meth:`seg`)."""

    def __init__(self, src: _Source) -> None:
        self.src = src
        self.applied: list[tuple[int, int, str]] = []

    def seg(self, start: int, end: int, override: dict[tuple[int, int], str] | None = None) -> str:
        """Text of ``[start, end)`` with the applied rewrites inside it, and *override*
        spans (operands replaced by a name) replacing whatever is there."""
        parts = sorted([*((a, b, t) for a, b, t in self.applied if start <= a and b <= end
                          and not any(o[0] <= a and b <= o[1] for o in (override or {}))),
                        *((a, b, t) for (a, b), t in (override or {}).items())])
        out, pos = [], start
        for a, b, t in parts:
            if a < pos:
                raise SuggestError("overlapping rewrites")
            out.append(self.src.text[pos:a])
            out.append(t)
            pos = b
        out.append(self.src.text[pos:end])
        return "".join(out)

    def node(self, node: Node, override: dict[Node, str] | None = None) -> str:
        s, e = self.src.span(node)
        return self.seg(s, e, {self.src.span(k): v for k, v in (override or {}).items()})

    def apply(self, start: int, end: int, text: str) -> None:
        self.applied = [x for x in self.applied if not (start <= x[0] and x[1] <= end)] + [(start, end, text)]

    def result(self, inserts: list[tuple[int, int, str]]) -> str:
        edits = sorted(self.applied)
        out, pos = [], 0
        pending = sorted(inserts)
        for a, b, t in edits:
            while pending and pending[0][0] <= a:
                at, _, text = pending.pop(0)
                out.append(self.src.text[pos:at])
                out.append(text)
                pos = at
            out.append(self.src.text[pos:a])
            out.append(t)
            pos = b
        for at, _, text in pending:
            out.append(self.src.text[pos:at])
            out.append(text)
            pos = at
        out.append(self.src.text[pos:])
        return "".join(out)


@dataclass
class _Op:
    """One change of a plan: replace ``[start, end)`` with ``build(edits)``, or (when
    ``insert``) put ``build(edits)`` before offset ``start``."""

    start: int
    end: int
    build: Callable[[_Edits], str]
    insert: bool = False
    order: int = 0


@dataclass
class _Plan:
    record: PatchRecord
    ops: list[_Op]
    before: str
    stmt: Node
    comment: str


class _Temps:
    """Fresh names for values bound by assignment expressions (``_cs_1``, ...)."""

    def __init__(self, taken: set[str]) -> None:
        self.module = frozenset(taken)
        self.reset()

    def reset(self) -> None:
        """Start again from ``_cs_1`` (each attempt at writing the module)."""
        self.taken = set(self.module)
        self.n = 0

    def named(self, base: str) -> str:
        """*base*, or *base* with a number when the module uses that name already
        (the same answer every time: one alias serves every use)."""
        name, n = base, 1
        while name in self.module:
            n += 1
            name = f"{base}_{n}"
        return name

    def __call__(self) -> str:
        while True:
            self.n += 1
            name = f"_cs_{self.n}"
            if name not in self.taken:
                self.taken.add(name)
                return name


class _Planner:
    """Turns one record into a :class:`_Plan` (the operations that write its guard)."""

    def __init__(self, src: _Source, temps: _Temps) -> None:
        self.src = src
        self.temps = temps

    # -- locating ------------------------------------------------------------------

    def locate(self, r: PatchRecord, kinds: tuple[type, ...]) -> Any:
        if not r.line or r.col is None or r.end_col is None:
            raise SuggestError("the patch records no source position")
        key = (r.line, r.end_line or r.line, r.col, r.end_col)
        nodes = [n for n in self.src.by_span.get(key, []) if isinstance(n, kinds)]
        if not nodes:
            seg = self._text_at(key)
            raise SuggestError(f"no {'/'.join(k.__name__ for k in kinds)} expression at line {r.line}, columns "
                               f"{r.col}-{r.end_col} (found `{seg}`)")
        node = nodes[0]
        self._check_function(node, r)
        return node

    def _text_at(self, key: tuple[int, int, int, int]) -> str:
        line, end_line, col, end_col = key
        try:
            return self.src.text[self.src.offset(line, col):self.src.offset(end_line, end_col)][:60]
        except IndexError:
            return ""

    def _check_function(self, node: Node, r: PatchRecord) -> None:
        """The node must lie in the function the patch names (its def/class chain)."""
        parts: list[str] = []
        child, cur = node, self.src.parents.get(node)
        while cur is not None:
            # A default argument or decorator belongs to the enclosing scope.
            if isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                    any(child is x for x in cur.body):
                parts[:0] = [cur.name] if isinstance(cur, ast.ClassDef) else [cur.name, "<locals>"]
            child, cur = cur, self.src.parents.get(cur)
        want = [p for p in r.qualname.split(".") if p not in _COMPREHENSION_NAMES and p != "<module>"]
        have = [p for p in parts if p not in _COMPREHENSION_NAMES]
        if want != have:
            raise SuggestError(f"the recorded position lies in {'.'.join(have) or '<module>'}, not in {r.qualname}")

    # -- helpers ---------------------------------------------------------------------

    def bind(self, node: Node, e: _Edits) -> tuple[str, str]:
        """``(first use, later uses)`` of *node*'s value: its text twice when it is
        pure, else an assignment expression and then its name."""
        text = e.node(node)
        if _pure(node):
            return text, text
        name = self.temps()
        return f"({name} := {text})", name

    def const(self, node: Node, text: Any) -> Any:
        """*text* (a constant's source) as it may be written where *node* is: inside an
        f-string replacement field, without quotes or braces (``str()`` for ``''``), which
        3.11 cannot nest there."""
        if text in _FSTRING_SAFE:
            cur = self.src.parents.get(node)
            while cur is not None and not isinstance(cur, ast.stmt):
                if isinstance(cur, ast.JoinedStr):
                    return _FSTRING_SAFE[text]
                cur = self.src.parents.get(cur)
        return text

    @staticmethod
    def paren(text: str) -> str:
        return f"({text})"

    def wrap(self, node: Node, text: str) -> str:
        """*text* (a conditional or boolean expression) parenthesized unless *node* sits
        where any expression fits as it is."""
        parent = self.src.parents.get(node)
        s, e = self.src.span(node)
        before, after = self.src.text[s - 1:s], self.src.text[e:e + 1]
        if before == "(" and after == ")" and not isinstance(parent, ast.Call):
            return text
        if isinstance(parent, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Return, ast.Expr)) and \
                getattr(parent, "value", None) is node:
            return text
        if isinstance(parent, (ast.If, ast.While)) and parent.test is node:
            return text
        if isinstance(parent, ast.keyword) or (isinstance(parent, ast.Call) and node in parent.args):
            return text
        return self.paren(text)

    def replace(self, node: Node, build: Callable[[_Edits], str]) -> _Op:
        s, e = self.src.span(node)
        return _Op(s, e, lambda edits: self.wrap(node, build(edits)))

    def need_own_lines(self, stmt: Node, what: str) -> None:
        if not (self.src.starts_line(stmt) and self.src.ends_line(stmt)):
            raise SuggestError(f"{what} needs a statement that has its line(s) to itself")
        if any(n in self.src.in_string for n in range(stmt.lineno + 1, stmt.end_lineno + 1)):
            raise SuggestError(f"{what} would re-indent a multi-line string")

    def stmt_span(self, stmt: Node) -> tuple[int, int, int]:
        """``(line start, statement end, end of its last line)`` offsets."""
        start = self.src.starts[stmt.lineno - 1]
        _, end = self.src.span(stmt)
        last = self.src.starts[stmt.end_lineno - 1] + len(self.src.line_text(stmt.end_lineno))
        return start, end, last

    def block(self, stmt: Node, parts: Sequence[tuple[str, Sequence[str]]]) -> str:
        """Clauses at *stmt*'s indentation: ``[(header, [statement, ...]), ...]``. Each
        statement gets one more level; the continuation lines of a statement that spans
        lines keep their own indentation, one level deeper."""
        ind, unit = self.src.indent(stmt.lineno), self.src.unit(stmt)
        out = []
        for header, stmts in parts:
            out.append(f"{ind}{header}")
            for text in stmts:
                lines = re.split(r"\r\n|\r|\n", text)
                out.append(f"{ind}{unit}{lines[0]}")
                out.extend(f"{unit}{ln}" if ln.strip() else ln for ln in lines[1:])
        return self.src.newline.join(out)

    # -- plans -----------------------------------------------------------------------

    def plan(self, r: PatchRecord) -> _Plan:
        """The plan of the rewrite the families table names for *r*'s guard
        (:attr:`codesuture.guards.families.Family.rewrite`: method ``_<rewrite>``)."""
        g, form = r.guard.guard, r.guard.form
        row = family(g)
        if row is None or row.rewrite is None:
            why = f": {row.no_rewrite}" if row is not None and row.no_rewrite else ""
            raise SuggestError(f"no source rewrite for guard {g!r}{why}")
        if row.form(form) is None:
            raise SuggestError(f"no source rewrite for {g} form {form!r}")
        handler: Callable[[PatchRecord], _Plan] = getattr(self, f"_{row.rewrite}")
        return handler(r)

    def _finish(self, r: PatchRecord, node: Node, ops: list[_Op], yields: str, live: str | None = None) -> _Plan:
        """The plan, with the comment line above the statement naming the guard and what
        it yields (and, where the live guard decides its value at run time, that)."""
        stmt = self.src.statement(node)
        exc = (r.exception or "").split(":", 1)[0] or "an exception"
        note = f"# codesuture: {guard_name(r)} ({exc}): {yields}"
        if live:
            note += f"; the live guard decides at run time: {live}"
        line = stmt.lineno
        if line not in self.src.in_string:
            at = self.src.starts[line - 1]
            ind = self.src.indent(line)
            nl = self.src.newline
            line_text = f"{ind}{note}{nl}"
            ops = [*ops, _Op(at, at, lambda _e: line_text, insert=True, order=0)]
        s, e = self.src.span(node)
        return _Plan(r, ops, self.src.text[s:e], stmt, note)

    def _live(self, r: PatchRecord) -> str | None:
        """What the live guard yields, when it decides at run time (so it may differ
        from the static default the suggestion writes)."""
        rule = (r.evidence or {}).get("default", "")
        live = describe_yield(r.guard.default, rule)
        return live if live != r.guard.default else None

    # null_guard ---------------------------------------------------------------------

    def _null(self, r: PatchRecord) -> _Plan:
        form = r.guard.form
        if form == "attr":
            return self._attr(r)
        if form == "method":
            node = self.locate(r, (ast.Attribute,))
            call = self.src.parents.get(node)
            if not (isinstance(call, ast.Call) and call.func is node):
                raise SuggestError("the method guard's attribute is not called")
            return self._method_call(r, node, call)
        if form in ("operator", "operand"):
            return self._none_operand(r, form == "operator")
        if form == "compare":
            return self._compare(r)
        if form == "store":
            return self._store(r)
        return self._membership(r)

    def _store(self, r: PatchRecord) -> _Plan:
        """``obj.x = v`` / ``obj[k] = v`` / ``del obj[k]`` -> ``if obj is not None: ...``."""
        node = self.locate(r, (ast.Attribute, ast.Subscript))
        stmt = self.src.statement(node)
        targets = stmt.targets if isinstance(stmt, (ast.Assign, ast.Delete)) else \
            [stmt.target] if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) else []
        if targets != [node]:
            raise SuggestError("the store is not the whole statement's one target")
        if not _pure(node.value):
            raise SuggestError("the object stored into is not a plain name or read")
        self.need_own_lines(stmt, "null_guard/store's if")
        start, _, last = self.stmt_span(stmt)

        def build(e: _Edits) -> str:
            body = e.seg(self.src.span(stmt)[0], last)
            return self.block(stmt, [(f"if {e.node(node.value)} is not None:", [body])])

        return self._finish(r, node, [_Op(start, last, build)], "the store is skipped when the object is None")

    def _attr(self, r: PatchRecord) -> _Plan:
        node = self.locate(r, (ast.Attribute,))
        links = [node]
        while len(links) < max(r.guard.links, 1):
            parent = self.src.parents.get(links[-1])
            if not (isinstance(parent, ast.Attribute) and parent.value is links[-1]):
                raise SuggestError(f"chain of {r.guard.links} attribute reads not found at line {r.line}")
            links.append(parent)
        last = links[-1]
        call = self.src.parents.get(last)
        method = len(links) > 1 and isinstance(call, ast.Call) and call.func is last
        default = self.const(node, _default_text(r.guard.default))
        # The value when a link is None: the default, or (a method ends the chain and the
        # default is None) the receiver whose method answers, called with the same arguments.
        fallback: str | None = default
        if method and r.guard.default == "None":
            fallback = self.const(node, _method_fallback(last.attr))
        outer = call if method else last
        base = node.value

        def build(e: _Edits) -> str:
            first, later = self.bind(base, e)
            override = {} if _pure(base) else {base: later}
            conds = [f"{first} is not None"]
            for link in links[:-1]:
                conds.append(f"{e.node(link, override)} is not None")
            body = e.node(outer, override)
            if method and r.guard.default == "None":
                _, e_call = self.src.span(call)
                _, e_func = self.src.span(last)
                value = f"{fallback}.{last.attr}{e.seg(e_func, e_call)}" if fallback else "None"
            else:
                value = default
            return f"{body} if {' and '.join(conds)} else {value}"

        yields = self._chain_yields(method, len(links), last, fallback, default)
        return self._finish(r, node, [self.replace(outer, build)], yields,
                            None if method or r.guard.default != "None" else self._live(r))

    @staticmethod
    def _chain_yields(method: bool, links: int, last: Node, fallback: str | None, default: str) -> str:
        when = "when the object is None" if links == 1 else "when a link is None"
        if method and fallback and default == "None":
            return f"{fallback}.{last.attr}(...) {when}"
        return f"{default} {when}"

    def _method_call(self, r: PatchRecord, node: Node, call: Node) -> _Plan:
        default = self.const(node, _default_text(r.guard.default))
        recv = self.const(node, _method_fallback(node.attr)) if r.guard.default == "None" else None
        base = node.value

        def build(e: _Edits) -> str:
            first, later = self.bind(base, e)
            body = e.node(call, {} if _pure(base) else {base: later})
            _, e_func = self.src.span(node)
            _, e_call = self.src.span(call)
            value = f"{recv}.{node.attr}{e.seg(e_func, e_call)}" if recv else default
            return f"{body} if {first} is not None else {value}"

        yields = f"{recv}.{node.attr}(...) when the receiver is None" if recv else f"{default} when the receiver is None"
        return self._finish(r, node, [self.replace(call, build)], yields)

    def _aug(self, r: PatchRecord, stmt_node: Node, what: str) -> None:
        if not _pure(stmt_node.target):
            raise SuggestError(f"{what}: the target of `{ast.unparse(stmt_node.target)} op=` is not a plain name or "
                               "attribute, and would be evaluated twice")
        self.need_own_lines(stmt_node, what)

    def _none_operand(self, r: PatchRecord, left_none: bool) -> _Plan:
        node = self.locate(r, (ast.BinOp, ast.AugAssign))
        sym = _BINOPS.get(type(node.op))
        if sym is None:
            raise SuggestError("unknown operator")
        default = self.const(node, _default_text(r.guard.default))
        if isinstance(node, ast.AugAssign):
            return self._none_aug(r, node, sym, left_none, default)
        a, b = node.left, node.right
        if left_none:
            value, live = self.const(node, self._typed_value(sym, None, b, default)), None
            if value == default:
                live = self._live(r)

            def build(e: _Edits) -> str:
                first, later = self.bind(a, e)
                body = e.node(node, {} if _pure(a) else {a: later})
                return f"{body} if {first} is not None else {value}"

            return self._finish(r, node, [self.replace(node, build)], f"{value} when the left operand is None", live)
        keeps = sym in _KEEPS_LEFT

        def build_r(e: _Edits) -> str:
            test, a_use, b_use = self.bind_pair(a, b, e)
            body = e.node(node, {k: v for k, v in ((a, a_use), (b, b_use)) if v is not None})
            other = (a_use if a_use is not None else e.node(a)) if keeps else default
            return f"{body} if {test} is not None else {other}"

        yields = "the left operand unchanged when the right one is None" if keeps else f"{default} when the right operand is None"
        return self._finish(r, node, [self.replace(node, build_r)], yields,
                            None if keeps else self._live(r))

    def _typed_value(self, sym: str, left: Node | None, right: Node | None, default: str) -> str:
        """The live guard's typed value when the other operand is a literal (the
        evidence is in the source), else *default*."""
        if default != "None":
            return default
        other = right if left is None else left
        ok, value = _literal(other) if other is not None else (False, None)
        if not ok:
            return default
        try:
            result = _typed_binary(sym, None if left is None else value, None if right is None else value)
        except Exception:  # noqa: BLE001 - no typed value: the static one
            return default
        return _value_text(result) or default

    def bind_pair(self, a: Node, b: Node, e: _Edits) -> tuple[str, str | None, str | None]:
        """For a test on *b* that must keep *a*'s evaluation first: ``(test text for b,
        name for a or None, name for b or None)``."""
        if _pure(b):
            return e.node(b), None, None
        if _pure(a):
            name = self.temps()
            return f"({name} := {e.node(b)})", None, name
        na, nb = self.temps(), self.temps()
        return f"({na} := {e.node(a)}, {nb} := {e.node(b)})[1]", na, nb

    def _none_aug(self, r: PatchRecord, node: Node, sym: str, left_none: bool, default: str) -> _Plan:
        what = f"{guard_name(r)} on `{sym}=`"
        self._aug(r, node, what)
        target, value_node = node.target, node.value
        start, end, last = self.stmt_span(node)
        live = None
        if left_none:
            value = self.const(node, self._typed_value(sym, None, value_node, default))
            if value == default:
                live = self._live(r)

            def build(e: _Edits) -> str:
                t = e.node(target)
                stmt = e.seg(self.src.span(node)[0], last)
                parts = [(f"if {t} is not None:", [stmt])]
                if value != "None":
                    parts.append(("else:", [f"{t} = {value}"]))
                return self.block(node, parts)

            yields = "the target stays None" if value == "None" else f"{value} when the target is None"
        else:
            keeps = sym in _KEEPS_LEFT

            def build(e: _Edits) -> str:
                t = e.node(target)
                if _pure(value_node):
                    test, stmt = e.node(value_node), e.seg(self.src.span(node)[0], last)
                else:
                    name = self.temps()
                    test = f"({name} := {e.node(value_node)})"
                    stmt = e.seg(self.src.span(node)[0], last, {self.src.span(value_node): name})
                parts = [(f"if {test} is not None:", [stmt])]
                if not keeps:
                    parts.append(("else:", [f"{t} = {default}"]))
                return self.block(node, parts)

            yields = "the target unchanged when the operand is None" if keeps else f"{default} when the operand is None"
            live = None if keeps else self._live(r)
        return self._finish(r, node, [_Op(start, last, build)], yields, live)

    def _compare(self, r: PatchRecord) -> _Plan:
        node = self.locate(r, (ast.Compare,))
        if len(node.ops) != 1 or type(node.ops[0]) not in _ORDERINGS:
            raise SuggestError("a chained comparison: which link failed is not in the source position")
        sym = _ORDERINGS[type(node.ops[0])]
        a, b = node.left, node.comparators[0]
        default = self.const(node, _default_text(r.guard.default))
        left_none = r.guard.links == 1
        value = self.const(node, self._typed_value(sym, None, b, default) if left_none
                           else self._typed_value(sym, a, None, default))
        live = self._live(r) if value == default else None
        if left_none:
            def build(e: _Edits) -> str:
                first, later = self.bind(a, e)
                body = e.node(node, {} if _pure(a) else {a: later})
                return f"{body} if {first} is not None else {value}"
        else:
            def build(e: _Edits) -> str:
                test, a_use, b_use = self.bind_pair(a, b, e)
                body = e.node(node, {k: v for k, v in ((a, a_use), (b, b_use)) if v is not None})
                return f"{body} if {test} is not None else {value}"
        side = "left" if left_none else "right"
        return self._finish(r, node, [self.replace(node, build)], f"{value} when the {side} operand is None", live)

    def _membership(self, r: PatchRecord) -> _Plan:
        node = self.locate(r, (ast.Compare,))
        if len(node.ops) != 1 or not isinstance(node.ops[0], (ast.In, ast.NotIn)):
            raise SuggestError("the membership guard's expression is not one `in` test")
        negated = isinstance(node.ops[0], ast.NotIn)
        k, x = node.left, node.comparators[0]

        def build(e: _Edits) -> str:
            test, k_use, x_use = self.bind_pair(k, x, e)
            body = e.node(node, {n: v for n, v in ((k, k_use), (x, x_use)) if v is not None})
            return f"{test} is None or {body}" if negated else f"{test} is not None and {body}"

        yields = f"{'True' if negated else 'False'} when the container is None"
        return self._finish(r, node, [self.replace(node, build)], yields)

    # subscripts ---------------------------------------------------------------------

    def _subscript_node(self, r: PatchRecord) -> Node:
        node = self.locate(r, (ast.Subscript,))
        if not isinstance(node.ctx, ast.Load):
            raise SuggestError("the subscript is not a read")
        return node

    def _key_text(self, node: Node, e: _Edits) -> tuple[str, str]:
        """``(container text as written before '[', key text)`` for ``.get``."""
        s, _ = self.src.span(node)
        ks, _ = self.src.span(node.slice)
        head = e.seg(s, ks).rstrip()
        if not head.endswith("["):
            raise SuggestError("cannot read the subscript's container")
        head = head[:-1].rstrip()
        key = e.node(node.slice)
        if isinstance(node.slice, ast.Tuple) and not key.startswith("("):
            key = f"({key})"
        return head, key

    def _key(self, r: PatchRecord) -> _Plan:
        node = self._subscript_node(r)
        if isinstance(node.slice, ast.Slice):
            raise SuggestError("a slice is not a key")
        default = self.const(node, _default_text(r.guard.default))

        def build(e: _Edits) -> str:
            head, key = self._key_text(node, e)
            return f"{head}.get({key})" if default == "None" else f"{head}.get({key}, {default})"

        s, e_ = self.src.span(node)
        return self._finish(r, node, [_Op(s, e_, build)], f"{default} for a missing key", self._live(r))

    def _subscript(self, r: PatchRecord) -> _Plan:
        node = self._subscript_node(r)
        default = self.const(node, _default_text(r.guard.default))

        def build(e: _Edits) -> str:
            first, later = self.bind(node.value, e)
            body = e.node(node, {} if _pure(node.value) else {node.value: later})
            return f"{body} if {first} is not None else {default}"

        return self._finish(r, node, [self.replace(node, build)], f"{default} when the container is None")

    def _bounds(self, node: Node, e: _Edits) -> tuple[str, dict[Node, str]]:
        """``(in-range test, operand names)`` for ``s[i]`` (constant *i*: a length
        test); operands evaluated once, container first."""
        s_first, s_later = self.bind(node.value, e)
        names: dict[Node, str] = {} if _pure(node.value) else {node.value: s_later}
        ok, k = _literal(node.slice)
        if ok and type(k) is int:
            test = f"len({s_first}) > {k}" if k >= 0 else f"len({s_first}) >= {-k}"
            return test, names
        i_first, i_later = self.bind(node.slice, e)
        if not _pure(node.slice):
            names[node.slice] = i_later
        return f"-len({s_first}) <= {i_first} < len({s_later})", names

    def _index(self, r: PatchRecord) -> _Plan:
        node = self._subscript_node(r)
        if isinstance(node.slice, ast.Slice):
            raise SuggestError("a slice never raises IndexError")
        default = self.const(node, _default_text(r.guard.default))

        def build(e: _Edits) -> str:
            test, names = self._bounds(node, e)
            return f"{e.node(node, names)} if {test} else {default}"

        return self._finish(r, node, [self.replace(node, build)], f"{default} for an index out of range",
                            self._live(r))

    def _chain_subscript(self, r: PatchRecord) -> _Plan:
        node = self._subscript_node(r)
        links = [node]
        while len(links) < max(r.guard.links, 1):
            parent = self.src.parents.get(links[-1])
            if not (isinstance(parent, ast.Subscript) and parent.value is links[-1] and isinstance(parent.ctx, ast.Load)):
                raise SuggestError(f"chain of {r.guard.links} subscripts not found at line {r.line}")
            links.append(parent)
        form = r.guard.form
        if form not in ("key", "index", "none"):
            raise SuggestError(f"chain_subscript_guard has no form {form!r}")
        default = self.const(node, _default_text(r.guard.default))
        last = links[-1]

        def build(e: _Edits) -> str:
            pure = all(_pure(n) for n in links)
            if pure:
                if form == "key":
                    head, key = self._key_text(node, e)
                    conds = [f"{head}.get({key}) is not None"]
                elif form == "index":
                    conds = [self._bounds(node, e)[0], f"{e.node(node)} is not None"]
                else:
                    conds = [f"{e.node(node.value)} is not None", f"{e.node(node)} is not None"]
                conds += [f"{e.node(n)} is not None" for n in links[1:-1]]
                return f"{e.node(last)} if {' and '.join(conds)} else {default}"
            # Each link's value bound once, in order.
            names = [self.temps() for _ in links[:-1]]
            if form == "key":
                head, key = self._key_text(node, e)
                conds = [f"({names[0]} := {head}.get({key})) is not None"]
            elif form == "index":
                test, opnames = self._bounds(node, e)
                conds = [test, f"({names[0]} := {e.node(node, opnames)}) is not None"]
            else:
                first, later = self.bind(node.value, e)
                over = {} if _pure(node.value) else {node.value: later}
                conds = [f"{first} is not None", f"({names[0]} := {e.node(node, over)}) is not None"]
            for j, link in enumerate(links[1:-1], 1):
                conds.append(f"({names[j]} := {e.node(link, {links[j - 1]: names[j - 1]})}) is not None")
            body = e.node(last, {links[-2]: names[-1]})
            return f"{body} if {' and '.join(conds)} else {default}"

        return self._finish(r, node, [self.replace(last, build)], f"{default} when a link is missing or None",
                            self._live(r))

    # arithmetic ---------------------------------------------------------------------

    def _division(self, r: PatchRecord) -> _Plan:
        node = self.locate(r, (ast.BinOp, ast.AugAssign))
        if not isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)):
            raise SuggestError("division_guard needs /, // or %")
        default = self.const(node, _default_text(r.guard.default))
        yields = f"{default} when the divisor is 0"
        if isinstance(node, ast.AugAssign):
            self._aug(r, node, "division_guard on an augmented assignment")
            start, _, last = self.stmt_span(node)

            def build_aug(e: _Edits) -> str:
                t = e.node(node.target)
                if _pure(node.value):
                    test, stmt = e.node(node.value), e.seg(self.src.span(node)[0], last)
                else:
                    name = self.temps()
                    test = f"({name} := {e.node(node.value)})"
                    stmt = e.seg(self.src.span(node)[0], last, {self.src.span(node.value): name})
                return self.block(node, [(f"if {test} != 0:", [stmt]), ("else:", [f"{t} = {default}"])])

            return self._finish(r, node, [_Op(start, last, build_aug)], yields)

        def build(e: _Edits) -> str:
            test, a_use, b_use = self.bind_pair(node.left, node.right, e)
            body = e.node(node, {k: v for k, v in ((node.left, a_use), (node.right, b_use)) if v is not None})
            return f"{body} if {test} != 0 else {default}"

        return self._finish(r, node, [self.replace(node, build)], yields)

    def _str_coerce(self, r: PatchRecord) -> _Plan:
        node = self.locate(r, (ast.BinOp, ast.AugAssign))
        if not isinstance(node.op, ast.Add):
            raise SuggestError("str_coerce_guard needs +")
        yields = "str(a) + str(b) when exactly one side is a str"
        if isinstance(node, ast.AugAssign):
            self._aug(r, node, "str_coerce_guard on +=")
            start, _, last = self.stmt_span(node)

            def build_aug(e: _Edits) -> str:
                t, v = e.node(node.target), e.node(node.value)
                if _is_str_literal(node.value):
                    return self.block_line(node, f"{t} = str({t}) + {v}", last)
                name = self.temps() if not _pure(node.value) else None
                test = f"({name} := {v})" if name else v
                use = name or v
                stmt = e.seg(self.src.span(node)[0], last, {self.src.span(node.value): name} if name else None)
                return self.block(node, [(f"if (type({t}) is str) != (type({test}) is str):",
                                          [f"{t} = str({t}) + str({use})"]), ("else:", [stmt])])

            return self._finish(r, node, [_Op(start, last, build_aug)], yields)
        a, b = node.left, node.right

        def build(e: _Edits) -> str:
            if _is_str_literal(a) and not _is_str_literal(b):
                return e.node(node, {b: f"str({e.node(b)})"})
            if _is_str_literal(b) and not _is_str_literal(a):
                return e.node(node, {a: f"str({e.node(a)})"})
            a_first, a_later = self.bind(a, e)
            b_first, b_later = self.bind(b, e)
            body = e.node(node, {k: v for k, v in ((a, a_later), (b, b_later)) if not _pure(k)})
            return self.wrap(node, f"str({a_later}) + str({b_later}) if (type({a_first}) is str) != "
                                   f"(type({b_first}) is str) else {body}")

        s, e_ = self.src.span(node)
        return self._finish(r, node, [_Op(s, e_, build)], yields)

    def block_line(self, stmt: Node, line: str, last: int) -> str:
        """*stmt* replaced by one line (keeping its trailing comment)."""
        _, end = self.src.span(stmt)
        return f"{self.src.indent(stmt.lineno)}{line}{self.src.text[end:last]}"

    # calls --------------------------------------------------------------------------

    def _callable(self, r: PatchRecord) -> _Plan:
        node = self.locate(r, (ast.Call,))
        default = self.const(node, _default_text(r.guard.default))

        def build(e: _Edits) -> str:
            first, later = self.bind(node.func, e)
            body = e.node(node, {} if _pure(node.func) else {node.func: later})
            return f"{body} if {first} is not None else {default}"

        return self._finish(r, node, [self.replace(node, build)], f"{default} when the callable is None")

    def _call_named(self, r: PatchRecord, names: tuple[str, ...]) -> Node:
        node = self.locate(r, (ast.Call,))
        if not (isinstance(node.func, ast.Name) and node.func.id in names):
            raise SuggestError(f"the patched call is not {'/'.join(names)}()")
        return node

    def _coercion(self, r: PatchRecord) -> _Plan:
        node = self._call_named(r, ("int", "float"))
        default = self.const(node, _default_text(r.guard.default))
        exc = (r.exception or "ValueError").split(":", 1)[0].strip() or "ValueError"
        if exc == "TypeError" and "NoneType" in (r.exception or "") and len(node.args) == 1 and not node.keywords \
                and not isinstance(node.args[0], ast.Starred):
            arg = node.args[0]

            def build(e: _Edits) -> str:
                first, later = self.bind(arg, e)
                body = e.node(node, {} if _pure(arg) else {arg: later})
                return f"{body} if {first} is not None else {default}"

            return self._finish(r, node, [self.replace(node, build)], f"{default} for None")
        if exc not in ("ValueError", "TypeError"):
            raise SuggestError(f"type_coercion_guard for {exc}")
        return self._scoped(r, node, exc, lambda: default, None, f"{default} when {node.func.id}() raises {exc}")

    def _call_site(self, r: PatchRecord) -> _Plan:
        """call_guard: the same ``try`` form as type_coercion_guard, for the exception
        class recorded (the suggestion's ``try`` also covers the call's arguments)."""
        node = self.locate(r, (ast.Subscript,) if r.guard.form == "subscript" else (ast.Call,))
        default = self.const(node, _default_text(r.guard.default))
        exc = (r.exception or "").split(":", 1)[0].strip()
        if not exc.isidentifier():
            raise SuggestError("the call guard's exception class is not recorded")
        what = "the subscript" if r.guard.form == "subscript" else "the call"
        return self._scoped(r, node, exc, lambda: default, None, f"{default} when {what} raises {exc}")

    def _file(self, r: PatchRecord) -> _Plan:
        node = self._call_named(r, ("open",))
        cls = "BytesIO" if r.guard.default == "io.BytesIO()" else "StringIO"
        module = self.temps.named("_cs_io")
        return self._scoped(r, node, "FileNotFoundError", lambda: f"{module}.{cls}()", f"import io as {module}",
                            f"an empty io.{cls}() for a missing file")

    def _scoped(self, r: PatchRecord, call: Node, exc: str, value: Callable[[], str], setup: str | None,
                yields: str) -> _Plan:
        """``try``/``except <exc>`` around the statement when the call is its whole
        value; else the call's value is computed in a ``try`` just before the statement
        (when it is evaluated first and unconditionally there)."""
        stmt = self.src.statement(call)
        whole = isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.Return, ast.Expr)) and stmt.value is call
        if isinstance(stmt, ast.AugAssign) and stmt.value is call and _pure(stmt.target):
            whole = True
        if whole:
            self.need_own_lines(stmt, f"{guard_name(r)}'s try/except")
            start, _, last = self.stmt_span(stmt)
            cs, ce = self.src.span(call)

            def build(e: _Edits) -> str:
                body = e.seg(self.src.span(stmt)[0], last)
                fallback = e.seg(self.src.span(stmt)[0], self.src.span(stmt)[1], {(cs, ce): value()})
                orelse = [fallback] if setup is None else [setup, fallback]
                return self.block(stmt, [("try:", [body]), (f"except {exc}:", orelse)])

            return self._finish(r, call, [_Op(start, last, build)], yields)
        self._check_hoist(stmt, call)
        name = self.temps()
        cs, ce = self.src.span(call)
        saved: dict[str, str] = {}

        def build_call(e: _Edits) -> str:
            saved["call"] = e.seg(cs, ce)
            return name

        def build_pre(e: _Edits) -> str:
            text = saved.get("call") or e.seg(cs, ce)
            orelse = [f"{name} = {value()}"] if setup is None else [setup, f"{name} = {value()}"]
            block = self.block(stmt, [("try:", [f"{name} = {text}"]), (f"except {exc}:", orelse)])
            return block + self.src.newline

        at = self.src.starts[stmt.lineno - 1]
        return self._finish(r, call, [_Op(cs, ce, build_call), _Op(at, at, build_pre, insert=True, order=1 + cs)],
                            yields)

    def _check_hoist(self, stmt: Node, call: Node) -> None:
        """The call may be computed before *stmt* only if the statement evaluates it
        first (or after pure reads only) and unconditionally, and *stmt* starts its line."""
        if not self.src.starts_line(stmt):
            raise SuggestError("the call's statement does not start its line")
        if isinstance(stmt, ast.If) and self._is_elif(stmt):
            raise SuggestError("the call is in an elif test")
        child: Node = call
        while child is not stmt:
            parent = self.src.parents[child]
            before = _evaluated_before(parent, child)
            if before is None:
                raise SuggestError("the call is not evaluated unconditionally where its statement starts")
            if not all(_pure(n) for n in before):
                raise SuggestError("something with effects is evaluated before the call in its statement")
            child = parent

    def _is_elif(self, stmt: ast.If) -> bool:
        parent = self.src.parents.get(stmt)
        return isinstance(parent, ast.If) and parent.orelse == [stmt] and \
            self.src.line_text(stmt.lineno).lstrip().startswith("elif")


def _evaluated_before(parent: Node, child: Node) -> list[Node] | None:
    """What *parent* evaluates before *child*, when it always evaluates *child* at its
    own start; None when *child* is evaluated conditionally, repeatedly, or after
    something a statement does (a loop's later iterations, an ``elif``, a later ``with``
    item)."""
    def upto(items: Sequence[Any]) -> list[Node] | None:
        for i, item in enumerate(items):
            if item is child:
                return [x for x in items[:i] if x is not None]
        return None

    if isinstance(parent, ast.BinOp):
        return [] if child is parent.left else [parent.left]
    if isinstance(parent, (ast.UnaryOp, ast.Attribute, ast.Starred, ast.FormattedValue, ast.keyword, ast.Expr,
                           ast.Return)):
        return []
    if isinstance(parent, ast.Raise):
        return [] if child is parent.exc else None
    if isinstance(parent, ast.Call):
        order = [parent.func, *parent.args, *parent.keywords]
        return upto(order)
    if isinstance(parent, ast.Subscript):
        return [] if child is parent.value else [parent.value]
    if isinstance(parent, ast.Slice):
        return upto([parent.lower, parent.upper, parent.step])
    if isinstance(parent, (ast.Tuple, ast.List, ast.Set, ast.JoinedStr)):
        return upto(parent.elts if not isinstance(parent, ast.JoinedStr) else parent.values)
    if isinstance(parent, ast.Dict):
        return upto([x for pair in zip(parent.keys, parent.values) for x in pair])
    if isinstance(parent, ast.Compare):
        return upto([parent.left, parent.comparators[0]])
    if isinstance(parent, ast.BoolOp):
        return [] if child is parent.values[0] else None
    if isinstance(parent, ast.IfExp):
        return [] if child is parent.test else None
    if isinstance(parent, (ast.Assign, ast.AnnAssign)):
        return [] if child is parent.value else None
    if isinstance(parent, ast.AugAssign):
        return [parent.target] if child is parent.value else None
    if isinstance(parent, ast.If):
        return [] if child is parent.test else None
    if isinstance(parent, (ast.For, ast.AsyncFor)):
        return [] if child is parent.iter else None
    if isinstance(parent, (ast.With, ast.AsyncWith)):
        # Only the first item: later ones are evaluated after the first is entered.
        return [] if parent.items and child is parent.items[0] else None
    if isinstance(parent, ast.withitem):
        return [] if child is parent.context_expr else None
    return None


def _newline(line: str) -> str:
    for nl in ("\r\n", "\r", "\n"):
        if line.endswith(nl):
            return nl
    return "\n"


# ---------------------------------------------------------------------------- applying plans


def rewrite_source(text: str, records: Sequence[PatchRecord], *, module: str = "<module>",
                   filename: str = "<source>") -> tuple[str, list[Suggestion], list[Failure]]:
    """``(new text, suggestions, failures)``: *text* with every record of *records*
    (patches of this exact source) written as Python. The result parses and compiles
    and still defines the patched functions; records that cannot be written so are
    failures. Raises SuggestError when *text* itself does not parse."""
    src = _Source(text, filename)
    temps = src.temps = _Temps(src.names)
    planner = _Planner(src, temps)
    plans: list[_Plan] = []
    failures: list[Failure] = []
    for r in records:
        try:
            plans.append(planner.plan(r))
        except SuggestError as exc:
            failures.append(Failure(site_label(module, r), str(exc)))
    plans = _drop_conflicts(plans, module, failures)
    problem, new, suggestions = _attempt(src, plans, module, filename)
    if problem:
        # Find the plans that fail alone; then the rest together.
        good = []
        for p in plans:
            why, _, _ = _attempt(src, [p], module, filename)
            if why:
                failures.append(Failure(site_label(module, p.record), why))
            else:
                good.append(p)
        problem, new, suggestions = _attempt(src, good, module, filename)
        if problem:
            failures += [Failure(site_label(module, p.record), f"the rewrites do not work together: {problem}")
                         for p in good]
            return text, [], failures
    return new, suggestions, failures


def _attempt(src: _Source, plans: Sequence[_Plan], module: str, filename: str) -> tuple[str | None, str, list[Suggestion]]:
    """``(problem or None, new text, suggestions)`` for *plans* applied together."""
    try:
        new, suggestions = _apply(src, plans, module)
    except SuggestError as exc:
        return str(exc), src.text, []
    problem = _verify(new, plans, filename)
    return (f"the rewrite does not compile: {problem}" if problem else None), new, suggestions


def _drop_conflicts(plans: list[_Plan], module: str, failures: list[Failure]) -> list[_Plan]:
    kept: list[_Plan] = []
    for p in plans:
        clash = None
        for q in kept:
            for a in p.ops:
                for b in q.ops:
                    if a.insert or b.insert:
                        ins, other = (a, b) if a.insert else (b, a)
                        if not other.insert and other.start < ins.start < other.end:
                            clash = q
                        continue
                    same = (a.start, a.end) == (b.start, b.end)
                    partial = a.start < b.end and b.start < a.end and not (
                        (a.start <= b.start and b.end <= a.end) or (b.start <= a.start and a.end <= b.end))
                    if same or partial:
                        clash = q
        if clash is not None:
            failures.append(Failure(site_label(module, p.record), f"overlaps the rewrite of {guard_name(clash.record)} "
                                                              f"at line {clash.record.line}"))
        else:
            kept.append(p)
    return kept


def _apply(src: _Source, plans: Sequence[_Plan], module: str) -> tuple[str, list[Suggestion]]:
    src.temps.reset()
    edits = _Edits(src)
    replaces = sorted(((op, p) for p in plans for op in p.ops if not op.insert), key=lambda x: x[0].end - x[0].start)
    after: dict[int, list[tuple[int, str]]] = {}
    for op, p in replaces:
        text = op.build(edits)
        edits.apply(op.start, op.end, text)
        after.setdefault(id(p), []).append((op.end - op.start, text))
    inserts = []
    for p in plans:
        for op in p.ops:
            if op.insert:
                text = op.build(edits)
                inserts.append((op.start, op.order, text))
                if op.order:  # code computed before the statement (not the comment line)
                    after.setdefault(id(p), []).append((-1, text.rstrip("\r\n")))
    new = edits.result(inserts)
    suggestions = []
    for p in plans:
        parts = sorted(after.get(id(p), []), key=lambda x: x[0])
        shown = [t for n, t in parts if n < 0] + [t for n, t in parts[-1:] if n >= 0]
        suggestions.append(Suggestion(module, p.record.qualname, p.record.line or 0, guard_name(p.record), p.before,
                                      "\n".join(shown), p.comment))
    return new, suggestions


def _verify(text: str, plans: Sequence[_Plan], filename: str) -> str | None:
    """None when *text* parses, compiles and still has the functions of *plans*; else why."""
    try:
        ast.parse(text, filename)
        code = compile(text, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    names = set()
    stack = [code]
    while stack:
        c = stack.pop()
        names.add(_strip(c.co_qualname))
        stack.extend(k for k in c.co_consts if hasattr(k, "co_code"))
    for p in plans:
        want = _strip(p.record.qualname)
        if want not in names and p.record.qualname != "<module>":
            return f"{p.record.qualname} is no longer defined"
    return None


def _strip(qualname: str) -> str:
    return ".".join(p for p in qualname.split(".") if p not in _COMPREHENSION_NAMES)


def has_rewrite(guard: str) -> bool:
    """True when the source rewrite the families table names for *guard* is here."""
    row = family(guard)
    return row is not None and row.rewrite is not None and callable(getattr(_Planner, f"_{row.rewrite}", None))


__all__ = ["SuggestError", "Suggestion", "Failure", "rewrite_source", "split_lines", "guard_name", "site_label",
           "has_rewrite"]
