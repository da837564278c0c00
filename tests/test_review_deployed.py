"""Review on what is deployed: ``explain``, ``audit`` and ``rollback`` on a signed
folder and on its bundle (issue 6, item 8).

One app is healed, signed and bundled once per module (three overlays: ``shop`` with
two patches, ``util`` with one, and the entry script ``main.py`` with one); every test
works on its own copy of it, in another directory (nothing in the artifacts names the
directory they were made in).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from heal_helpers import boot, clean_env, cli, heal, overlays_in, script_key, snapshot, write

SHOP = """
def price(item):
    return item["price"]


def label(item):
    return item.get("tag").upper()
"""

UTIL = """
def ratio(a, b):
    return a / b
"""

MAIN = """
import sys

import shop
import util


def first(xs):
    return xs[0]


CALLS = {
    "price": lambda: shop.price({}),
    "label": lambda: shop.label({}),
    "ratio": lambda: util.ratio(1, 0),
    "first": lambda: first([]),
}
which = sys.argv[1:] or list(CALLS)
print("RESULT", " ".join(f"{w}={CALLS[w]()!r}" for w in which))
"""

HEALED = "RESULT price='' label='' ratio=0.0 first=''"
EXCEPTIONS = {"price": "KeyError", "label": "AttributeError", "ratio": "ZeroDivisionError", "first": "IndexError"}


@dataclass
class Deployed:
    root: Path
    app: Path
    store: Path  # the signed folder
    bundle: Path
    priv: Path
    keys: Path
    state: Path

    @property
    def main(self) -> Path:
        return self.app / "main.py"

    def env(self) -> dict[str, str]:
        return clean_env(CODESUTURE_STATE_DIR=str(self.state))

    def cli(self, *args: str | Path, cwd: Path | None = None):  # noqa: ANN201
        return cli(*args, cwd=cwd or self.app, env=self.env())

    def boot(self, store: Path, *calls: str, options: tuple[str, ...] = ()):  # noqa: ANN201
        return boot(self.main, store, "--keys", str(self.keys), *options, args=calls, env=self.env())

    def stem(self, key: str, folder: Path | None = None) -> str:
        [name] = [n for n in overlays_in(folder or self.store) if n.startswith(key + ".")]
        return name[: -len(".overlay")]

    @property
    def main_key(self) -> str:
        return script_key(self.main, self.app)

    def withdrawn(self) -> dict:
        p = self.state / "state.json"
        return json.loads(p.read_text())["withdrawn"] if p.exists() else {}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app healed (dev), its folder signed, and bundled: in a folder that tests copy."""
    root = tmp_path_factory.mktemp("review-deployed")
    env = clean_env(CODESUTURE_STATE_DIR=str(root / "template-state"))
    app = root / "app"
    write(app / "pyproject.toml", '[project]\nname = "review-app"\nversion = "0"\n')
    write(app / "shop.py", SHOP)
    write(app / "util.py", UTIL)
    write(app / "main.py", MAIN)
    store = root / "overlays"
    r = heal(app / "main.py", store, "--retries", "5", env=env)
    assert r.returncode == 0 and r.results() == [HEALED], str(r)
    assert sorted(n.split(".")[0] for n in overlays_in(store)) == ["__main__", "shop", "util"], overlays_in(store)
    k = cli("keygen", "--private-key", root / "secret" / "k.key", "--public-key", root / "keys" / "k.pem", cwd=root, env=env)
    assert k.returncode == 0, str(k)
    s = cli("sign", "--key", root / "secret" / "k.key", "--app-root", app, store, cwd=app, env=env)
    assert s.returncode == 0 and "signed overlay set 'review-app' v1: 3 overlay(s)" in s.stdout, str(s)
    b = cli("bundle", "create", store, "-o", root / "deploy.cso", cwd=app, env=env)
    assert b.returncode == 0 and "3 overlay(s)" in b.stdout, str(b)
    return root


@pytest.fixture
def d(template: Path, tmp_path: Path, _host_state: Path) -> Deployed:
    root = tmp_path / "copy"
    shutil.copytree(template, root, ignore=shutil.ignore_patterns("template-state"))
    return Deployed(root, root / "app", root / "overlays", root / "deploy.cso", root / "secret" / "k.key",
                    root / "keys", _host_state)


def _target(d: Deployed, kind: str) -> Path:
    return d.store if kind == "folder" else d.bundle


def _edit_sidecar(meta: dict) -> dict:
    """What an attacker (or a careless edit) writes into shop's sidecar: the price
    patch described as something else, and the label patch renamed to price."""
    for p in meta["patches"]:
        if p["qualname"] == "price":
            p["expression"] = "planted()"
        else:
            p["qualname"] = "price"
    return meta


def _with_edited_sidecar(d: Deployed, kind: str) -> Path:
    stem = d.stem("shop")
    if kind == "folder":
        side = d.store / f"{stem}.json"
        side.write_text(json.dumps(_edit_sidecar(json.loads(side.read_text()))))
        return d.store
    edited = d.root / "edited.cso"
    with zipfile.ZipFile(d.bundle) as zin, zipfile.ZipFile(edited, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == f"{stem}.json":
                data = json.dumps(_edit_sidecar(json.loads(data))).encode()
            zout.writestr(info, data)
    return edited


# --- explain ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["folder", "bundle"])
def test_explain_function_reads_the_signed_statement_not_an_edited_sidecar(kind: str, d: Deployed) -> None:
    target = _with_edited_sidecar(d, kind)
    r = d.cli("explain", "--json", "--keys", d.keys, "--function", "price", target)
    assert r.returncode == 0, str(r)
    [doc] = json.loads(r.stdout)
    assert doc["module"] == "shop" and doc["origin"] == "app:shop.py", doc
    assert doc["metadata_from"].startswith("signed Statement (verified, key "), doc["metadata_from"]
    assert [(p["qualname"], p["expression"], p["guard"]["guard"], p["guard"]["default"]) for p in doc["patches"]] == [
        ("price", 'item["price"]', "key_guard", "None")], doc["patches"]
    text = d.cli("explain", "--keys", d.keys, "--function", "price", target)
    assert text.returncode == 0 and "described from: signed Statement (verified" in text.stdout, str(text)
    assert '- price line 2: key_guard on `item["price"]`' in text.stdout, str(text)
    assert "label" not in text.stdout and "planted" not in text.stdout, str(text)
    # Without a trust root it still reads the Statement, and says it is not verified.
    unverified = d.cli("explain", "--function", "price", target)
    assert "described from: signed Statement (not verified: pass --keys)" in unverified.stdout, str(unverified)
    assert "planted" not in unverified.stdout, str(unverified)
    # Each function: only its own overlay and patches (the entry script's included).
    for function, module in [("label", "shop"), ("ratio", "util"), ("first", "__main__")]:
        [doc] = json.loads(d.cli("explain", "--json", "--function", function, target).stdout)
        assert doc["module"] == module and [p["qualname"] for p in doc["patches"]] == [function], doc
    assert d.main_key == json.loads(d.cli("explain", "--json", "--function", "first", target).stdout)[0]["key"]
    none = d.cli("explain", "--function", "nothing_here", target)
    # nothing to explain is a loud failure (exit 1, one line on stderr)
    assert none.returncode == 1 and f"no overlays with patches of nothing_here in {target}" in none.stderr, str(none)


def test_explain_an_unsigned_overlay_says_it_is_described_from_its_sidecar(d: Deployed) -> None:
    fresh = d.root / "unsigned"
    r = heal(d.main, fresh, "--retries", "5", env=d.env())
    assert r.returncode == 0 and r.results() == [HEALED], str(r)
    side = fresh / f"{d.stem('shop', fresh)}.json"
    side.write_text(json.dumps(_edit_sidecar(json.loads(side.read_text()))))
    e = d.cli("explain", "--json", "--function", "price", fresh)
    assert e.returncode == 0, str(e)
    [doc] = json.loads(e.stdout)
    assert doc["metadata_from"] == "UNSIGNED: from the metadata sidecar, which nothing vouches for", doc
    assert doc["signed"] == [] and {p["expression"] for p in doc["patches"]} == {"planted()", 'item.get("tag").upper'}
    text = d.cli("explain", "--function", "ratio", fresh)
    assert "described from: UNSIGNED: from the metadata sidecar" in text.stdout, str(text)


# --- audit -----------------------------------------------------------------------------------

def _audit(d: Deployed, target: Path) -> tuple[int, dict[str, dict], dict]:
    r = d.cli("audit", "--json", "--keys", d.keys, target)
    doc = json.loads(r.stdout)
    rows = {row["name"].split(".")[0]: row for row in doc["overlays"]}
    return r.returncode, rows, doc


@pytest.mark.parametrize("kind", ["folder", "bundle"])
def test_audit_keys_counts_patches_and_flags_a_stale_source(kind: str, d: Deployed) -> None:
    target = _target(d, kind)
    rc, rows, doc = _audit(d, target)
    assert rc == 0 and doc["ok"], doc
    assert {k: (r["status"], r["patches"], r["signed"]) for k, r in rows.items()} == {
        "__main__": ("ok", 1, "set"), "shop": ("ok", 2, "set"), "util": ("ok", 1, "set")}, rows
    assert doc["set"].startswith("signed overlay set 'review-app' v1, 3 overlay(s)"), doc["set"]
    text = d.cli("audit", "--keys", d.keys, target)
    assert text.returncode == 0 and "(2 patch(es), signed: set" in text.stdout, str(text)
    # Edit a module's source and the entry script: both flagged, the third still ok.
    (d.app / "util.py").write_text(UTIL + "\n# edited\n")
    (d.app / "main.py").write_text(MAIN.replace("xs[0]", "xs[0]  # edited"))
    rc, rows, doc = _audit(d, target)
    assert rc == 1 and not doc["ok"], doc
    assert {k: r["status"] for k, r in rows.items()} == {"__main__": "stale", "shop": "ok", "util": "stale"}, rows
    assert any("util.py changed since the overlay was built" in n for n in rows["util"]["notes"]), rows["util"]
    text = d.cli("audit", "--keys", d.keys, target)
    assert text.returncode == 1 and text.stdout.count("stale") >= 2, str(text)


def test_audit_keys_fails_a_signed_folder_whose_sidecar_was_edited(d: Deployed) -> None:
    _with_edited_sidecar(d, "folder")
    rc, rows, _ = _audit(d, d.store)
    assert rc == 1 and rows["shop"]["status"].startswith("refused: ") and "does not match the signed overlay set" in \
        rows["shop"]["status"], rows["shop"]
    assert rows["util"]["status"] == rows["__main__"]["status"] == "ok", rows


# --- rollback --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["folder", "bundle"])
def test_rollback_dry_run_changes_nothing(kind: str, d: Deployed) -> None:
    target = _target(d, kind)
    before, state_before = snapshot(d.root), snapshot(d.state)
    for selection in (["--function", "price"], ["--module", "util"], ["--all"]):
        r = d.cli("rollback", "--dry-run", *selection, target)
        assert r.returncode == 0 and r.stdout.startswith("would take out "), str(r)
        assert "recorded as withdrawn" not in r.stdout, str(r)
    assert snapshot(d.root) == before and snapshot(d.state) == state_before
    ok = d.boot(target)
    assert ok.returncode == 0 and ok.results() == [HEALED], str(ok)


def test_rollback_function_on_a_signed_folder(d: Deployed) -> None:
    old = d.root / "old-signed"
    shutil.copytree(d.store, old)
    shop = d.stem("shop")
    old_digest = hashlib.sha256((d.store / f"{shop}.overlay").read_bytes()).hexdigest()
    untouched = {n: b for n, b in snapshot(d.store).items() if not n.startswith("shop.") and not n.startswith(".")}

    r = d.cli("rollback", "--function", "price", d.store)
    assert r.returncode == 0, str(r)
    assert r.stdout.startswith(f"took out price from {d.store / shop}.overlay (rewritten unsigned: sign the folder again)"), str(r)
    assert f"sha256 {old_digest[:16]}... recorded as withdrawn" in r.stdout, str(r)
    assert list(d.withdrawn()) == [old_digest] and d.withdrawn()[old_digest]["what"] == shop
    # Rewritten without price's patch, from the source, unsigned; other overlays untouched.
    [doc] = json.loads(d.cli("explain", "--json", "--function", "label", d.store).stdout)
    assert doc["metadata_from"].startswith("UNSIGNED") and [p["qualname"] for p in doc["patches"]] == ["label"], doc
    assert not (d.store / f"{shop}.dsse.json").exists()
    assert {n: b for n, b in snapshot(d.store).items() if n in untouched} == untouched
    # The old signed files, put back (the whole old signed folder): the withdrawn
    # overlay is refused, the others load.
    back = d.boot(old, "price")
    assert back.returncode == 1 and "KeyError" in back.stderr, str(back)
    assert f"overlay {shop} not applied: withdrawn by codesuture rollback at " in back.stderr, str(back)
    others = d.boot(old, "ratio", "first")
    assert others.returncode == 0 and others.results() == ["RESULT ratio=0.0 first=''"], str(others)
    # Signed again, the folder loads without the price patch.
    s = d.cli("sign", "--key", d.priv, "--app-root", d.app, d.store)
    assert s.returncode == 0 and "signed overlay set 'review-app' v2: 3 overlay(s)" in s.stdout, str(s)
    crash = d.boot(d.store, "price")
    assert crash.returncode == 1 and "KeyError" in crash.stderr, str(crash)
    rest = d.boot(d.store, "label", "ratio", "first", options=("--require-signed",))
    assert rest.returncode == 0 and rest.results() == ["RESULT label='' ratio=0.0 first=''"], str(rest)
    # The withdrawn files put back into the folder are never signed again.
    for suffix in (".overlay", ".json", ".dsse.json"):
        shutil.copy2(old / f"{shop}{suffix}", d.store / f"{shop}{suffix}")
    again = d.cli("sign", "--key", d.priv, "--app-root", d.app, d.store)
    assert again.returncode == 1 and "was withdrawn with codesuture rollback on this host: not signed again" in again.stderr, \
        str(again)


def test_rollback_all_on_a_signed_folder(d: Deployed) -> None:
    old = d.root / "old-signed"
    shutil.copytree(d.store, old)
    digests = {hashlib.sha256((d.store / n).read_bytes()).hexdigest() for n in overlays_in(d.store)}
    r = d.cli("rollback", "--all", d.store)
    assert r.returncode == 0 and r.stdout.count("took out the whole overlay") == 3, str(r)
    assert overlays_in(d.store) == [] and [p.name for p in d.store.glob("*.json")] == ["overlays.manifest.dsse.json"]
    assert set(d.withdrawn()) == digests
    # Nothing loads from the old files either: the program's first crash is back.
    back = d.boot(old)
    assert back.returncode == 1 and "KeyError" in back.stderr and back.stderr.count("withdrawn by codesuture rollback") == 3, \
        str(back)  # the entry script, and shop and util at import
    util_only = d.boot(old, "ratio")
    assert util_only.returncode == 1 and "ZeroDivisionError" in util_only.stderr, str(util_only)
    again = d.cli("rollback", "--all", d.store)
    assert again.returncode == 1 and f"nothing to roll back: no patches in {d.store}" in again.stderr, str(again)


def test_rollback_on_a_bundle_withdraws_on_this_host(d: Deployed) -> None:
    data = d.bundle.read_bytes()
    shop = d.stem("shop")
    r = d.cli("rollback", "--function", "price", d.bundle)
    assert r.returncode == 0, str(r)
    assert r.stdout.startswith(f"took out the whole overlay from {d.bundle}:{shop}.overlay (a bundle cannot be rewritten: "
                               "the whole overlay is withdrawn on this host); sha256 "), str(r)
    assert d.bundle.read_bytes() == data
    # The bundle no longer loads shop's overlay on this host (both its patches go).
    for call in ("price", "label"):
        gone = d.boot(d.bundle, call)
        assert gone.returncode == 1 and EXCEPTIONS[call] in gone.stderr, str(gone)
        assert f"overlay {shop} not applied: withdrawn by codesuture rollback" in gone.stderr, str(gone)
    rest = d.boot(d.bundle, "ratio", "first")
    assert rest.returncode == 0 and rest.results() == ["RESULT ratio=0.0 first=''"], str(rest)
    rc, rows, _ = _audit(d, d.bundle)
    assert rc == 1 and rows["shop"]["status"].startswith("refused: withdrawn"), rows
    # Another host (its own state) still loads the whole bundle.
    other = boot(d.main, d.bundle, "--keys", str(d.keys), env=clean_env(CODESUTURE_STATE_DIR=str(d.root / "other-host")))
    assert other.returncode == 0 and other.results() == [HEALED], str(other)
    # --all on the bundle: every overlay withdrawn here.
    every = d.cli("rollback", "--all", d.bundle)
    assert every.returncode == 0 and every.stdout.count("recorded as withdrawn") == 3, str(every)
    assert len(d.withdrawn()) == 3 and d.bundle.read_bytes() == data
    nothing = d.boot(d.bundle, "ratio")
    assert nothing.returncode == 1 and "ZeroDivisionError" in nothing.stderr, str(nothing)


# --- malformed arguments ---------------------------------------------------------------------

@pytest.mark.parametrize("args, rc, message", [
    (["rollback", "--function"], 2, "Error: Option '--function' requires an argument."),
    (["explain", "--function"], 2, "Error: Option '--function' requires an argument."),
    (["rollback", "{store}"], 2, "Error: say what to roll back: --module NAME, --function NAME or --all"),
    (["rollback", "--module", "shop", "--bogus", "{store}"], 2, "Error: No such option '--bogus'."),
    (["rollback", "--all", "{root}/no-such.cso"], 2, "Error: Invalid value for 'TARGET': Path '{root}/no-such.cso' does not exist."),
    (["explain", "--keys", "{root}/no-keys", "{bundle}"], 2, "Error: Invalid value for '--keys': Path '{root}/no-keys' does not exist."),
    (["audit", "--app-root", "{app}/main.py", "{store}"], 2, "Error: Invalid value for '--app-root': Directory '{app}/main.py' is a file."),
    (["audit", "--keys", "{keys}", "{app}/main.py"], 1, "codesuture: {app}/main.py: not a zip bundle: no end-of-central-directory record"),
    (["rollback", "--all", "{app}/main.py"], 1, "codesuture: {app}/main.py: not a zip bundle: no end-of-central-directory record"),
    (["explain", "{app}/main.py"], 1, "codesuture: {app}/main.py: not a zip bundle: no end-of-central-directory record"),
])
def test_a_malformed_argument_gives_one_clear_message(args: list[str], rc: int, message: str, d: Deployed) -> None:
    fill = {"store": d.store, "bundle": d.bundle, "root": d.root, "app": d.app, "keys": d.keys}
    before = snapshot(d.root)
    r = d.cli(*[a.format(**fill) for a in args])
    assert r.returncode == rc, str(r)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith(("Error", "codesuture:"))]
    assert errors == [message.format(**fill)], str(r)
    assert "Traceback" not in r.stderr and r.stdout == "", str(r)
    assert snapshot(d.root) == before
