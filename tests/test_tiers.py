"""Policy tiers, allow/deny lists and blast-radius caps (docs/governance.md), through
the real boundaries: ``codesuture run`` heals (or observes, or proposes) a script's
crashes in subprocesses, ``python -m codesuture.boot`` loads (or refuses) what was
written, ``codesuture sign`` approves a proposal."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from heal_helpers import boot, clean_env, cli, heal, overlays_in, write

# Each module crashes at its own site; main.py runs the ones named on its command line,
# in order (a heal replays the run, so one run can meet several crashes).
MODULES = {
    "obs_a": """
        def f(d):
            return d["x"]
    """,
    "prop_b": """
        def f(d):
            return d["x"]
    """,
    "plain_c": """
        def f(d):
            return d["x"]


        def g(d):
            return d["y"]
    """,
    "plain_d": """
        def f(d):
            return d["x"]
    """,
}

MAIN = """
import sys
import importlib
for name in sys.argv[1:]:
    mod, _, fn = name.partition(".")
    print("CALL", name, getattr(importlib.import_module(mod), fn or "f")({}), flush=True)
print("RESULT done")
"""

OBSERVED = "crash observed, not healed (tier observe: "


@dataclass
class App:
    root: Path
    main: Path
    store: Path
    pending: Path

    def meta(self, folder: Path, module: str) -> dict:
        [path] = [p for p in folder.glob(f"{module}.*.json") if not p.name.endswith(".dsse.json")]
        return json.loads(path.read_text())

    def run(self, *calls: str, env: dict[str, str] | None = None, options: tuple[str, ...] = ()):  # noqa: ANN201
        return heal(self.main, self.store, *options, args=calls, env=clean_env(**(env or {})))


@pytest.fixture
def app(tmp_path: Path) -> App:
    root = tmp_path / "app"
    write(root / "pyproject.toml", '[project]\nname = "tiers-app"\nversion = "0"\n')
    for name, text in MODULES.items():
        write(root / f"{name}.py", text)
    main = write(root / "main.py", MAIN)
    return App(root, main, root / "overlays", root / "overlays.pending")


def _observed(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if OBSERVED in line]


# --- tiers ------------------------------------------------------------------------------------

def test_each_tier_from_the_config_file(app: App) -> None:
    """Ordered glob=tier rules from codesuture.toml (a TOML list): observe changes
    nothing and writes nothing, propose writes only to the pending folder (tier
    propose), auto (no rule matches) heals live and writes the store."""
    write(app.root / "codesuture.toml", 'tiers = ["obs_*=observe", "prop_*=propose", "*=auto"]\n')
    incidents = app.root / "incidents.jsonl"

    r = app.run("obs_a", options=("--incidents", str(incidents)))
    assert r.returncode == 1 and "KeyError" in r.stderr and "RESULT" not in r.stdout, str(r)
    [line] = _observed(r.stderr)
    assert "tier rule obs_*=observe" in line and "function=f" in line and "exception=KeyError" in line, line
    assert "patched" not in r.stderr, str(r)
    assert not app.store.exists() and not app.pending.exists(), "observe wrote something"
    events = [json.loads(x) for x in incidents.read_text().splitlines()]
    assert [e["kind"] for e in events] == ["crash", "refusal"], events
    assert events[1]["reason"] == "tier" and "observe" in json.dumps(events[1]), events

    r = app.run("prop_b")
    assert r.returncode == 1 and "not healed live (tier propose: tier rule prop_*=propose)" in r.stderr, str(r)
    assert "RESULT" not in r.stdout, "a proposal must not change the running code"
    assert overlays_in(app.store) == [] and [n.split(".")[0] for n in overlays_in(app.pending)] == ["prop_b"]
    assert app.meta(app.pending, "prop_b")["tier"] == "propose"

    r = app.run("plain_c")
    assert r.returncode == 0 and "CALL plain_c None" in r.stdout and "RESULT done" in r.stdout, str(r)
    assert [n.split(".")[0] for n in overlays_in(app.store)] == ["plain_c"]
    assert app.meta(app.store, "plain_c")["tier"] == "auto"


def test_first_matching_rule_wins_and_env_overrides_the_file(app: App) -> None:
    write(app.root / "codesuture.toml", 'tiers = ["plain_*=observe"]\n')
    r = app.run("plain_c")
    assert r.returncode == 1 and "tier rule plain_*=observe" in r.stderr, str(r)
    # CODESUTURE_TIERS (a comma-separated string) replaces the file's rules; order matters.
    r = app.run("plain_c", "plain_d", env={"CODESUTURE_TIERS": "plain_c=auto,plain_*=observe"})
    assert r.returncode == 1 and "CALL plain_c None" in r.stdout, str(r)
    [line] = _observed(r.stderr)
    assert "plain_d.py" in line and "tier rule plain_*=observe" in line, line
    assert [n.split(".")[0] for n in overlays_in(app.store)] == ["plain_c"]


def test_a_bad_tier_rule_is_a_usage_error(app: App) -> None:
    r = app.run("plain_c", env={"CODESUTURE_TIERS": "plain_c=yolo"})
    assert r.returncode == 2 and "CODESUTURE_TIERS" in r.stderr and "glob=tier" in r.stderr, str(r)
    assert not app.store.exists()


def test_a_proposal_never_loads_until_signed(app: App, tmp_path: Path) -> None:
    """The loader refuses tier propose (unsigned here); signing the pending folder
    approves it (sidecar, Statement and set entry say auto) and then it loads."""
    r = app.run("prop_b", env={"CODESUTURE_TIERS": "prop_*=propose"})
    assert r.returncode == 1 and overlays_in(app.pending), str(r)
    unsigned = boot(app.main, app.pending, args=("prop_b",))
    assert unsigned.returncode == 1 and "KeyError" in unsigned.stderr, str(unsigned)
    assert "tier 'propose' does not permit loading" in unsigned.stderr, str(unsigned)

    priv, keys = tmp_path / "secret" / "k.key", tmp_path / "keys"
    assert cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=tmp_path).returncode == 0
    s = cli("sign", "--key", priv, "--app-root", app.root, app.pending, cwd=app.root)
    assert s.returncode == 0, str(s)
    assert app.meta(app.pending, "prop_b")["tier"] == "auto"
    [env_file] = app.pending.glob("prop_b.*.dsse.json")
    import base64

    statement = json.loads(base64.b64decode(json.loads(env_file.read_text())["payload"]))
    assert statement["predicate"]["tier"] == "auto"
    loaded = boot(app.main, app.pending, "--keys", str(keys), args=("prop_b",))
    assert loaded.returncode == 0 and "CALL prop_b None" in loaded.stdout, str(loaded)


def test_a_signed_overlay_whose_statement_says_propose_is_refused(app: App, tmp_path: Path) -> None:
    """"Signed or not": an envelope made with the unchecked low half of signing
    (write_envelope) over a propose-tier overlay still never loads."""
    from codesuture.ship.sign import read_unsigned, write_envelope
    from codesuture.trust.keys import generate, load_private_key

    r = app.run("prop_b", env={"CODESUTURE_TIERS": "prop_*=propose"})
    assert r.returncode == 1, str(r)
    keys = tmp_path / "keys"
    generate(str(tmp_path / "k.key"), str(keys / "k.pem"), None)
    [overlay] = app.pending.glob("prop_b.*.overlay")
    data, sidecar, meta = read_unsigned(str(overlay))
    assert meta.tier == "propose"
    write_envelope(str(overlay), data, sidecar, meta, load_private_key(str(tmp_path / "k.key"), None))
    p = boot(app.main, app.pending, "--keys", str(keys), args=("prop_b",))
    assert p.returncode == 1 and "tier 'propose' does not permit loading" in p.stderr, str(p)


# --- allow / deny -----------------------------------------------------------------------------

def test_deny_and_allow_lists_observe_and_the_loader_refuses_denied_modules(app: App) -> None:
    r = app.run("plain_c", "plain_d", env={"CODESUTURE_DENY": "plain_d"})
    assert r.returncode == 1 and "CALL plain_c None" in r.stdout, str(r)
    [line] = _observed(r.stderr)
    assert "module plain_d is denied by the settings (deny)" in line, line
    assert [n.split(".")[0] for n in overlays_in(app.store)] == ["plain_c"]

    r = app.run("plain_d", env={"CODESUTURE_ALLOW": "plain_c,obs_*"})
    assert r.returncode == 1, str(r)
    [line] = _observed(r.stderr)
    assert "module plain_d is not in the settings' allow list" in line, line

    # Loading: plain_c's overlay loads, unless the host denies (or does not allow) it.
    ok = boot(app.main, app.store, args=("plain_c",))
    assert ok.returncode == 0 and "CALL plain_c None" in ok.stdout, str(ok)
    for env in ({"CODESUTURE_DENY": "plain_*"}, {"CODESUTURE_ALLOW": "obs_a"}):
        p = boot(app.main, app.store, args=("plain_c",), env=clean_env(**env))
        assert p.returncode == 1 and "KeyError" in p.stderr, str(p)
        assert "overlay plain_c." in p.stderr and ("denied by the settings" in p.stderr or "allow list" in p.stderr), str(p)


def test_the_standard_library_and_codesuture_are_always_denied() -> None:
    """Whatever the settings say (an allow list, an auto rule), the loader's own
    refusal decides first."""
    from codesuture.runtime.governance import Policy, module_tier

    generous = Policy(tiers=("*=auto",), allow=("*",))
    for module in ("json", "json.decoder", "email.mime.text", "codesuture", "codesuture.runtime.healer"):
        tier, why = module_tier(generous, module)
        assert tier == "observe" and ("standard library" in why or "CodeSuture" in why), (module, why)
    assert module_tier(generous, "__main__") == ("auto", "tier rule *=auto")
    assert module_tier(generous, "jsonish") == ("auto", "tier rule *=auto")


# --- caps -------------------------------------------------------------------------------------

def test_max_patches_per_process(app: App) -> None:
    r = app.run("plain_c", "plain_d", env={"CODESUTURE_MAX_PATCHES_PER_PROCESS": "1"})
    assert r.returncode == 1 and "CALL plain_c None" in r.stdout, str(r)
    [line] = _observed(r.stderr)
    assert "plain_d.py" in line and "max_patches_per_process 1 reached (1 patch(es) in this process and its replays)" in line, line
    r = app.run("plain_c", "plain_d", env={"CODESUTURE_MAX_PATCHES_PER_PROCESS": "2"})
    assert r.returncode == 0 and "RESULT done" in r.stdout, str(r)


def test_max_patches_per_module(app: App) -> None:
    """A module's second patched site is observed; other modules still heal."""
    r = app.run("plain_c.f", "plain_d", "plain_c.g", env={"CODESUTURE_MAX_PATCHES_PER_MODULE": "1"})
    assert r.returncode == 1 and "CALL plain_c.f None" in r.stdout and "CALL plain_d None" in r.stdout, str(r)
    [line] = _observed(r.stderr)
    assert "function=g" in line and "max_patches_per_module 1 reached (1 patched site(s) in plain_c)" in line, line
    # The cap counts the patches of the overlay the module was loaded from, too.
    r = app.run("plain_c.g", env={"CODESUTURE_MAX_PATCHES_PER_MODULE": "1"})
    assert r.returncode == 1 and "max_patches_per_module 1 reached" in r.stderr, str(r)
    r = app.run("plain_c.g", env={"CODESUTURE_MAX_PATCHES_PER_MODULE": "2"})
    assert r.returncode == 0 and "CALL plain_c.g None" in r.stdout, str(r)


def test_max_patches_per_hour_counts_the_records_created_times(app: App) -> None:
    env = {"CODESUTURE_MAX_PATCHES_PER_HOUR": "1"}
    r = app.run("plain_c", env=env)
    assert r.returncode == 0, str(r)
    r = app.run("plain_c", "plain_d", env=env)  # another process: the store already holds one from this hour
    assert r.returncode == 1 and "CALL plain_c None" in r.stdout, str(r)
    [line] = _observed(r.stderr)
    assert "max_patches_per_hour 1 reached (1 patch(es) created in the last hour)" in line, line
    # The same record, created two hours ago, no longer counts.
    [meta_path] = [p for p in app.store.glob("plain_c.*.json")]
    meta = json.loads(meta_path.read_text())
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7200))
    for p in meta["patches"]:
        p["created"] = old
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    r = app.run("plain_c", "plain_d", env=env)
    assert r.returncode == 0 and "RESULT done" in r.stdout, str(r)
