"""The one table of guard families (``codesuture.guards.families``) against what reads
it and what documents it: ``docs/guards.md`` has exactly one row per family form with
the same default rule, and one ``suggest`` row per family form that has a rewrite;
every family has a synthesizer and a source rewrite (or the reason it has none); the
table is readable without ``bytecode`` (the diagnosis and the review side read it)."""

from __future__ import annotations

import builtins
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from codesuture.guards import families
from codesuture.guards.families import FAMILIES, RULES, Family, Form
from codesuture.patch.spec import GuardSpec

DOCS = Path(__file__).resolve().parent.parent / "docs" / "guards.md"


def _rows(header: str) -> list[list[str]]:
    """The cells of the markdown table of docs/guards.md that starts with *header*."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(header)
    lines = text[start:].split("\n\n", 1)[0].splitlines()[2:]
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]


def _label(cell: str) -> tuple[str, str]:
    m = re.fullmatch(r"`(\w+)`(?: / (\w+))?", cell)
    assert m, f"not a guard label: {cell!r}"
    return m.group(1), m.group(2) or ""


def _forms() -> list[tuple[Family, Form]]:
    return [(row, form) for row in FAMILIES.values() for form in row.forms]


def test_docs_guard_table_has_one_row_per_family_form_with_its_default_rule() -> None:
    rows = _rows("| guard | instruction | check | yields | default rule")
    documented = [(_label(cells[0]), cells[-1]) for cells in rows]
    labels = [label for label, _ in documented]
    assert len(labels) == len(set(labels)), "a family form documented twice"
    expected = {(row.name, form.name): families.documented_rule(row, form) for row, form in _forms()}
    assert dict(documented) == expected


def test_docs_suggest_table_has_one_row_per_family_form_with_a_rewrite() -> None:
    rows = _rows("| guard | the expression | becomes |")
    labels = [_label(cells[0]) for cells in rows]
    assert len(labels) == len(set(labels))
    # call_guard's two forms share one rewrite (the scoped `try`), so one row.
    expected = {(row.name, form.name) for row, form in _forms()
                if row.rewrite and not form.no_rewrite and row.name != "call_guard"}
    expected |= {("call_guard", "")}
    assert set(labels) == expected


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_has_a_synthesizer_and_a_rewrite_or_a_reason(name: str) -> None:
    row = FAMILIES[name]
    synth = families.synthesizer(name)
    assert callable(synth) and synth.__module__.startswith("codesuture.guards.")
    assert row.rewrite or row.no_rewrite, f"{name}: no suggest rewrite and no reason why"
    if row.rewrite:
        from codesuture.review import rewrite

        assert rewrite.has_rewrite(name)
    assert row.answers and all(issubclass(getattr(builtins, c), BaseException) for c in row.answers)
    assert row.forms and all(f.rule in RULES and f.rule != "consumer" for f in row.forms)
    assert row.budget > 0 or row.first_link
    for _, first in row.first_link:
        assert FAMILIES[first].budget > 0


def test_unknown_guard_has_no_row() -> None:
    assert families.synthesizer("nothing_guard") is None
    assert families.budget(GuardSpec("nothing_guard")) is None
    assert families.default_rule(GuardSpec("nothing_guard")) == "none known"


@pytest.mark.parametrize(("row", "form"), _forms(), ids=[f"{r.name}/{f.name}" for r, f in _forms()])
def test_default_rule_follows_the_row(row: Family, form: Form) -> None:
    static = families.default_rule(GuardSpec(row.name, form.name, "None"))
    typed = families.default_rule(GuardSpec(row.name, form.name, "''"))
    assert static == ("fixed" if row.fixed else form.rule)
    assert typed == ("fixed" if row.fixed else "consumer")


def test_a_changed_row_changes_the_diff_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    from codesuture.errors import PatchError
    from codesuture.patch import diffgate

    spec = GuardSpec("division_guard", "", "0.0")
    diffgate.check(spec, FAMILIES["division_guard"].budget, 0)
    monkeypatch.setitem(FAMILIES, "division_guard", dataclasses.replace(FAMILIES["division_guard"], budget=3))
    with pytest.raises(PatchError, match="over its budget of 3"):
        diffgate.check(spec, 4, 0)


def test_the_table_is_read_without_bytecode() -> None:
    """The diagnosis, the diff gate and the review side read the table; only asking for
    a synthesizer imports a guard module (and ``bytecode`` with it)."""
    code = ("import sys\nfrom codesuture.guards import families\nfrom codesuture.patch.spec import GuardSpec\n"
            "families.budget(GuardSpec('key_guard')); families.default_rule(GuardSpec('key_guard'))\n"
            "print('bytecode' in sys.modules, 'codesuture.guards.subscript' in sys.modules)\n"
            "families.synthesizer('key_guard')\n"
            "print('bytecode' in sys.modules, 'codesuture.guards.subscript' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True", "True"]
