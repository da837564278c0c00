"""One settings source (codesuture.settings): strict parsing, precedence, config
discovery, modes, export; and boot's exit codes and warnings for bad settings.

Most tests call :func:`codesuture.settings.load` in process with dict environments
(never ``os.environ``) and config files in tmp folders; the last section runs
``python -m codesuture.boot`` / ``codesuture run`` as subprocesses.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codesuture import settings
from codesuture.errors import ConfigError
from heal_helpers import PY, boot, clean_env, heal, overlays_in, plain, run, snapshot, write

BASE_ENV = {"CODESUTURE_STATE_DIR": "/nonexistent-state-for-tests"}


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """An empty app folder with a pyproject.toml (no [tool.codesuture] table)."""
    root = tmp_path / "app"
    write(root / "pyproject.toml", '[project]\nname = "demo"\nversion = "0"\n')
    return root


def load(flags: dict | None = None, env: dict | None = None, start: Path | None = None, command: str = "boot",
         store_dir: str | None = None):
    return settings.load(flags or {}, {**BASE_ENV, **(env or {})}, start_dir=str(start) if start else None,
                         command=command, store_dir=store_dir)


# --- strict parsing ---------------------------------------------------------------------

TRUE = ["1", "true", "yes", "on", "TRUE", "Yes", "oN", " 1", "true ", "\tyes\n", "  ON  "]
FALSE = ["0", "false", "no", "off", "FALSE", "No", "oFf", " 0 ", "\nfalse\t"]
NOT_BOOL = ["", " ", "2", "-1", "y", "n", "t", "f", "required", "yes please", "enabled", "none", "null", "1.0", "0x1"]


@pytest.mark.parametrize("text", TRUE)
def test_bool_true_spellings(text: str, app: Path) -> None:
    assert settings.parse_bool("X", text) is True
    assert load(env={"CODESUTURE_REQUIRE_SIGNED": text}, start=app).require_signed is True


@pytest.mark.parametrize("text", FALSE)
def test_bool_false_spellings(text: str, app: Path) -> None:
    assert settings.parse_bool("X", text) is False
    s = load(env={"CODESUTURE_REQUIRE_SIGNED": text}, start=app)
    assert s.require_signed is False and s.mode == "dev"


@pytest.mark.parametrize("text", NOT_BOOL)
@pytest.mark.parametrize("var", ["CODESUTURE_REQUIRE_SIGNED", "CODESUTURE_HEAL", "CODESUTURE_REQUIRE_OVERLAYS",
                                 "CODESUTURE_RECORD_MESSAGES", "CODESUTURE_SIGSTORE_STAGING"])
def test_bool_anything_else_is_an_error_naming_the_variable(var: str, text: str, app: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(env={var: text}, start=app)
    assert info.value.name == var and str(info.value).startswith(f"{var}: ")


@pytest.mark.parametrize("text", NOT_BOOL)
def test_disable_is_strict_too(text: str) -> None:
    with pytest.raises(ConfigError, match="^CODESUTURE_DISABLE: "):
        settings.disabled({"CODESUTURE_DISABLE": text})
    assert settings.disabled({"CODESUTURE_DISABLE": " 1"}) is True
    assert settings.disabled({"CODESUTURE_DISABLE": "Off "}) is False
    assert settings.disabled({}) is False


@pytest.mark.parametrize("var", ["CODESUTURE_OVERLAYS", "CODESUTURE_KEYS", "CODESUTURE_PENDING", "CODESUTURE_STATE_DIR",
                                 "CODESUTURE_CONFIG"])
@pytest.mark.parametrize("value", ["", "   "])
def test_empty_path_is_an_error_never_off(var: str, value: str, app: Path) -> None:
    with pytest.raises(ConfigError, match=f"^{var}: is empty"):
        load(env={var: value}, start=app)


def test_empty_path_flag_and_config_key_are_errors(app: Path) -> None:
    with pytest.raises(ConfigError, match="^--keys: is empty"):
        load({"keys": ""}, start=app)
    write(app / "codesuture.toml", 'overlays = ""\n')
    with pytest.raises(ConfigError) as info:
        load(start=app)
    assert info.value.name == f"{app / 'codesuture.toml'} overlays"


@pytest.mark.parametrize("var,value", [
    ("CODESUTURE_RETRIES", "-1"), ("CODESUTURE_RETRIES", "three"), ("CODESUTURE_RETRIES", "1.5"),
    ("CODESUTURE_RETRIES", ""), ("CODESUTURE_MIN_SET_VERSION", "-3"), ("CODESUTURE_TTL_DAYS", "nan"),
    ("CODESUTURE_TTL_DAYS", "-1"), ("CODESUTURE_TTL_DAYS", "soon"), ("CODESUTURE_MODE", "production"),
    ("CODESUTURE_MODE", ""), ("CODESUTURE_SIGSTORE_IDENTITY", " "),
])
def test_numbers_modes_and_text_are_strict(var: str, value: str, app: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(env={var: value}, start=app)
    assert info.value.name == var


def test_values_are_parsed_with_whitespace_and_case(app: Path) -> None:
    s = load(env={"CODESUTURE_RETRIES": " 5 ", "CODESUTURE_TTL_DAYS": "0.5", "CODESUTURE_MODE": " PROD ",
                  "CODESUTURE_MIN_SET_VERSION": "7"}, start=app)
    assert (s.retries, s.ttl_days, s.ttl_seconds, s.mode, s.min_set_version) == (5, 0.5, 43200.0, "prod", 7)


def test_toml_types_are_checked(app: Path) -> None:
    write(app / "codesuture.toml", "require_signed = true\nretries = 1\nttl_days = 2\n")
    s = load(start=app)
    assert (s.require_signed, s.retries, s.ttl_days) == (True, 1, 2.0)
    for bad, key in (("require_signed = 2", "require_signed"), ('require_signed = "maybe"', "require_signed"),
                     ("retries = true", "retries"), ('retries = "x"', "retries")):
        write(app / "codesuture.toml", bad + "\n")
        with pytest.raises(ConfigError) as info:
            load(start=app)
        assert info.value.name == f"{app / 'codesuture.toml'} {key}", bad


# --- precedence ----------------------------------------------------------------------------

def test_precedence_flag_env_config_default(app: Path, tmp_path: Path) -> None:
    write(app / "codesuture.toml", 'overlays = "from-config"\nretries = 1\nttl_days = 3\n')
    env = {"CODESUTURE_OVERLAYS": str(tmp_path / "from-env"), "CODESUTURE_RETRIES": "2"}
    s = load({"overlays": str(tmp_path / "from-flag")}, env, start=app)
    assert s.overlays == str(tmp_path / "from-flag") and s.source("overlays") == "--overlays"
    assert s.retries == 2 and s.source("retries") == "CODESUTURE_RETRIES"
    assert s.ttl_days == 3.0 and s.source("ttl_days") == f"{app / 'codesuture.toml'} ttl_days"
    assert s.min_set_version == 0 and s.source("min_set_version") == "default"
    s = load(env=env, start=app)
    assert s.overlays == str(tmp_path / "from-env")
    s = load(start=app)
    assert s.overlays == str(app / "from-config") and s.retries == 1
    assert s.retries == 1


def test_flag_strings_are_parsed_like_environment_values(app: Path) -> None:
    s = load({"retries": "4", "require_signed": "no", "heal": True}, start=app)
    assert (s.retries, s.require_signed, s.heal) == (4, False, True)
    with pytest.raises(ConfigError, match="^--retries: "):
        load({"retries": "x"}, start=app)


def test_relative_paths(app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flags and variables are relative to the current directory; config values to the
    config file's directory (not the current one, not the script's)."""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load({"overlays": "ov"}, start=app).overlays == str(elsewhere / "ov")
    assert load(env={"CODESUTURE_KEYS": "k"}, start=app).keys == str(elsewhere / "k")
    conf = write(tmp_path / "conf" / "deploy.toml", 'overlays = "ov"\nkeys = "../trust"\n')
    s = load({"config": str(conf)}, start=app)
    assert s.overlays == str(tmp_path / "conf" / "ov") and s.keys == str(tmp_path / "trust")
    assert s.config_file == str(conf)
    write(app / "codesuture.toml", 'pending = "proposals"\n')
    assert load(start=app / "src" / "pkg").pending == str(app / "proposals")


# --- config discovery ---------------------------------------------------------------------

def test_app_root_is_the_nearest_folder_with_pyproject_or_codesuture_toml(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert settings.find_app_root(str(deep)) == str(deep)  # none: the start itself
    write(tmp_path / "a" / "pyproject.toml", "[project]\nname = 'a'\n")
    assert settings.find_app_root(str(deep)) == str(tmp_path / "a")
    write(tmp_path / "a" / "b" / "codesuture.toml", "")
    assert settings.find_app_root(str(deep)) == str(tmp_path / "a" / "b")
    assert load(start=deep).app_root == str(tmp_path / "a" / "b")


def test_pyproject_table_and_codesuture_toml(app: Path) -> None:
    write(app / "pyproject.toml", '[project]\nname = "demo"\n\n[tool.codesuture]\noverlays = "pyov"\nretries = 0\n')
    s = load(start=app / "sub")
    assert (s.overlays, s.retries, s.config_file) == (str(app / "pyov"), 0, str(app / "pyproject.toml"))
    assert s.source("retries") == f"{app / 'pyproject.toml'} retries"
    # codesuture.toml beside it wins (top-level keys).
    write(app / "codesuture.toml", 'overlays = "csov"\n')
    s = load(start=app)
    assert (s.overlays, s.retries, s.config_file) == (str(app / "csov"), 16, str(app / "codesuture.toml"))


def test_a_config_above_the_app_root_is_not_read(tmp_path: Path) -> None:
    write(tmp_path / "codesuture.toml", 'overlays = "outer"\n')
    inner = tmp_path / "inner"
    write(inner / "pyproject.toml", "[project]\nname = 'inner'\n")
    s = load(start=inner)
    assert s.app_root == str(inner) and s.overlays is None and s.config_file is None


def test_unknown_config_keys_are_errors(app: Path) -> None:
    write(app / "codesuture.toml", 'overlays = "ov"\nrequire_sigend = true\n')
    with pytest.raises(ConfigError, match="require_sigend") as info:
        load(start=app)
    assert info.value.name == str(app / "codesuture.toml")
    (app / "codesuture.toml").unlink()
    write(app / "pyproject.toml", '[project]\nname = "demo"\n[tool.codesuture]\ndisable = true\n')
    with pytest.raises(ConfigError, match="disable"):  # the kill switch is environment-only
        load(start=app)


def test_broken_and_missing_config_files(app: Path, tmp_path: Path) -> None:
    write(app / "codesuture.toml", "overlays = [unclosed\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load(start=app)
    assert info.value.name == str(app / "codesuture.toml")
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load(env={"CODESUTURE_CONFIG": str(tmp_path / "missing.toml")}, start=app)
    assert info.value.name == str(tmp_path / "missing.toml")


def test_pyproject_without_the_table_costs_no_tomllib_import(app: Path) -> None:
    probe = ("import sys; from codesuture import settings; "
             "s = settings.load({}, {'CODESUTURE_STATE_DIR': '/x'}, start_dir=sys.argv[1]); "
             "print(s.app_root == sys.argv[1], s.config_file, 'tomllib' in sys.modules)")
    r = run([PY, "-c", probe, str(app)], app)
    assert r.stdout.split() == ["True", "None", "False"], str(r)
    write(app / "pyproject.toml", '[project]\nname = "demo"\n[tool.codesuture]\nretries = 1\n')
    r = run([PY, "-c", probe, str(app)], app)
    assert r.stdout.split() == ["True", str(app / "pyproject.toml"), "True"], str(r)


# --- modes ---------------------------------------------------------------------------------

def test_dev_is_the_default(app: Path) -> None:
    s = load(start=app)
    assert (s.mode, s.heal, s.require_signed, s.overlays, s.pending) == ("dev", True, False, None, None)
    r = load(start=app, command="run", store_dir=str(app))  # the directory first on sys.path (boot.Invocation)
    assert r.mode == "dev" and r.overlays == str(app / "overlays")
    assert r.pending == str(app / "overlays") + ".pending"
    assert load(start=app, command="run").overlays is None  # no such directory (a zip app, -P): no default store


@pytest.mark.parametrize("how", ["keys", "require_signed", "bundle"])
def test_prod_when_keys_require_signed_or_a_bundle(how: str, app: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "deploy.cso"
    bundle.write_bytes(b"PK")
    flags = {"keys": {"keys": str(tmp_path / "keys")}, "require_signed": {"require_signed": True},
             "bundle": {"overlays": str(bundle)}}[how]
    s = load(flags, start=app)
    assert (s.mode, s.prod, s.heal, s.require_signed) == ("prod", True, False, True)
    assert s.is_bundle is (how == "bundle")
    # The same through the environment.
    env = {"keys": {"CODESUTURE_KEYS": str(tmp_path / "keys")}, "require_signed": {"CODESUTURE_REQUIRE_SIGNED": "yes"},
           "bundle": {"CODESUTURE_OVERLAYS": str(bundle)}}[how]
    assert load(env=env, start=app).mode == "prod"
    # An explicit mode wins; the defaults follow it.
    d = load({**flags, "mode": "dev"}, start=app)
    assert (d.mode, d.heal) == ("dev", True)
    assert d.require_signed is (how == "require_signed")
    # --heal in prod: healing on, still prod (proposals go to pending).
    h = load({**flags, "heal": True}, start=app)
    assert (h.mode, h.heal, h.require_signed) == ("prod", True, True)


def test_explicit_prod_and_require_signed_off(app: Path, tmp_path: Path) -> None:
    s = load({"mode": "prod"}, start=app)
    assert (s.mode, s.heal, s.require_signed) == ("prod", False, True)
    s = load({"mode": "prod", "require_signed": False, "keys": str(tmp_path / "k")}, start=app)
    assert (s.mode, s.require_signed) == ("prod", False)
    write(app / "codesuture.toml", 'mode = "prod"\nheal = true\n')
    s = load(start=app)
    assert (s.mode, s.heal) == ("prod", True)
    assert load(env={"CODESUTURE_MODE": "dev"}, start=app).mode == "dev"


def test_a_missing_overlays_folder_is_not_a_bundle(app: Path, tmp_path: Path) -> None:
    s = load({"overlays": str(tmp_path / "not-yet")}, start=app)
    assert (s.mode, s.is_bundle) == ("dev", False)
    (tmp_path / "dir").mkdir()
    assert load({"overlays": str(tmp_path / "dir")}, start=app).mode == "dev"


def test_pending_must_differ_from_the_store(app: Path, tmp_path: Path) -> None:
    ov = tmp_path / "ov"
    ov.mkdir()
    with pytest.raises(ConfigError, match="^--pending: .*must not be the overlay store") as info:
        load({"overlays": str(ov), "pending": str(ov) + "/"}, start=app)
    assert info.value.name == "--pending"
    (tmp_path / "alias").symlink_to(ov)
    with pytest.raises(ConfigError, match="^CODESUTURE_PENDING: "):
        load({"overlays": str(ov)}, {"CODESUTURE_PENDING": str(tmp_path / "alias")}, start=app)
    s = load({"overlays": str(ov), "pending": str(tmp_path / "review")}, start=app)
    assert s.pending == str(tmp_path / "review")
    assert load({"overlays": str(ov) + "/"}, start=app).pending == str(ov) + ".pending"


def test_state_dir_default_follows_xdg(app: Path, tmp_path: Path) -> None:
    s = settings.load({}, {"XDG_STATE_HOME": str(tmp_path / "xdg")}, start_dir=str(app))
    assert s.state_dir == str(tmp_path / "xdg" / "codesuture")
    assert load(start=app).state_dir == BASE_ENV["CODESUTURE_STATE_DIR"]


# --- export ---------------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [
    {},
    {"mode": "prod", "heal": True, "retries": 0, "ttl_days": 0.25, "record_messages": True, "min_set_version": 4},
    {"keys": "KEYS", "overlays": "OV", "pending": "PENDING", "require_overlays": True, "require_signed": False},
])
def test_export_round_trips_through_load(flags: dict, app: Path, tmp_path: Path) -> None:
    flags = {k: (str(tmp_path / v) if k in ("keys", "overlays", "pending") else v) for k, v in flags.items()}
    write(app / "codesuture.toml", "retries = 9\n")
    first = load(flags, start=app)
    env: dict[str, str] = {"CODESUTURE_RETRIES": "stale", "CODESUTURE_KEYS": "stale"}
    first.export(env)
    assert all(k.startswith("CODESUTURE_") for k in env)
    second = settings.load({}, env, start_dir=str(app))
    for f in settings.FIELDS:
        if f.name not in ("config",):
            assert getattr(second, f.name) == getattr(first, f.name), f.name
    assert second.app_root == first.app_root
    if "keys" not in flags:
        assert "CODESUTURE_KEYS" not in env  # an unset value clears a stale variable


def test_help_lists_every_setting() -> None:
    text = settings.help_text()
    for f in settings.FIELDS:
        assert (f.flag or f.env) in text
        if f.env:
            assert f.env in text


# --- boot and run: exit codes, warnings, the kill switch ----------------------------------

SWITCHED = """
import sys
def f(d, k):
    return d[k]
print("RESULT", repr(f({}, "x") if sys.argv[1:] == ["crash"] else f({"x": 1}, "x")))
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return write(tmp_path / "app" / "switched.py", SWITCHED)


def _boot(script: Path, *options: str, env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
    return run([PY, "-m", "codesuture.boot", *options, str(script), *args], script.parent, env)


@pytest.mark.parametrize("var,value", [("CODESUTURE_REQUIRE_SIGNED", "2"), ("CODESUTURE_KEYS", ""),
                                       ("CODESUTURE_HEAL", "yes please"), ("CODESUTURE_DISABLE", "maybe"),
                                       ("CODESUTURE_RETRIES", "-1")])
def test_boot_exits_2_naming_a_malformed_variable(var: str, value: str, script: Path) -> None:
    r = _boot(script, env=clean_env(**{var: value}))
    assert r.returncode == 2 and r.stdout == "", str(r)
    assert f"codesuture.boot: {var}: " in r.stderr, str(r)
    h = heal(script, script.parent / "ov", env=clean_env(**{var: value}))
    assert h.returncode == 2 and var in h.stderr and h.stdout == "", str(h)


def test_boot_exits_2_naming_a_bad_config_key(script: Path) -> None:
    write(script.parent / "pyproject.toml", '[tool.codesuture]\nrequire_signed = "sometimes"\n')
    r = _boot(script)
    assert r.returncode == 2 and "require_signed" in r.stderr and "pyproject.toml" in r.stderr, str(r)
    assert r.stdout == ""


def test_require_overlays_exits_78(script: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    store = tmp_path / "store"
    store.mkdir()
    missing_store = _boot(script, "--overlays", str(tmp_path / "missing"), "--keys", str(keys), "--require-overlays")
    assert missing_store.returncode == 78 and missing_store.stdout == "", str(missing_store)
    assert str(tmp_path / "missing") in missing_store.stderr, str(missing_store)
    missing_keys = _boot(script, "--overlays", str(store), "--keys", str(tmp_path / "nokeys"), "--require-overlays")
    assert missing_keys.returncode == 78 and missing_keys.stdout == "", str(missing_keys)
    assert str(tmp_path / "nokeys") in missing_keys.stderr, str(missing_keys)
    none = _boot(script, "--require-overlays")
    assert none.returncode == 78 and "no overlay store is configured" in none.stderr, str(none)
    bad_bundle = tmp_path / "junk.cso"
    bad_bundle.write_bytes(b"not a zip")
    junk = _boot(script, "--overlays", str(bad_bundle), "--keys", str(keys), "--require-overlays")
    assert junk.returncode == 78 and junk.stdout == "", str(junk)
    # Without --require-overlays the same settings run the program.
    ok = _boot(script, "--overlays", str(tmp_path / "missing"), "--keys", str(tmp_path / "nokeys"))
    assert ok.returncode == 0 and ok.results() == ["RESULT 1"], str(ok)


@pytest.mark.parametrize("options", [("--keys", "KEYS"), ("--no-heal",)], ids=["prod", "dev-no-heal"])
def test_mistyped_overlays_path_warns_and_runs(options: tuple[str, ...], script: Path, tmp_path: Path) -> None:
    (tmp_path / "KEYS").mkdir()
    (tmp_path / "overlays").mkdir()
    typo = tmp_path / "overlay"
    options = tuple(str(tmp_path / o) if o == "KEYS" else o for o in options)
    r = _boot(script, "--overlays", str(typo), *options)
    assert r.returncode == 0 and r.results() == ["RESULT 1"], str(r)
    [line] = [ln for ln in r.stderr.splitlines() if "does not exist" in ln]
    assert line.startswith("codesuture: WARNING") and str(typo) in line and "--overlays" in line, line
    env = clean_env(CODESUTURE_OVERLAYS=str(typo))
    r = _boot(script, *options, env=env)
    assert "CODESUTURE_OVERLAYS" in r.stderr and "WARNING" in r.stderr and r.returncode == 0, str(r)
    assert not typo.exists()


def test_boot_never_reads_overlays_of_the_current_directory(script: Path) -> None:
    """An ./overlays healed by `codesuture run` (its default store) is not read by boot
    without a store setting, and boot writes nothing there."""
    cwd = script.parent
    made = heal(script, cwd / "overlays", args=("crash",))
    assert made.returncode == 0 and len(overlays_in(cwd / "overlays")) == 1, str(made)
    before = snapshot(cwd / "overlays")
    r = _boot(script, "--no-heal", args=("crash",))
    assert r.returncode == 1 and r.stderr.rstrip().endswith("KeyError: 'x'"), str(r)
    assert not [ln for ln in r.stderr.splitlines() if ln.startswith("codesuture:")], str(r)
    # Healing on (dev): healed live, nothing written anywhere (so not replayed: a replay
    # is a fresh run, which would have nothing to load).
    h = _boot(script, args=("crash",))
    assert h.returncode == 1 and "patched in this process only; not replayed" in h.stderr, str(h)
    assert snapshot(cwd / "overlays") == before
    assert sorted(p.name for p in cwd.iterdir()) == ["overlays", "switched.py"]
    # `codesuture run` does use ./overlays by default, and says so.
    again = run([PY, "-m", "codesuture", "run", str(script), "crash"], cwd)
    assert again.returncode == 0 and "1 overlay loaded" in again.stderr, str(again)
    assert f"(store {cwd / 'overlays'}, the default; --overlays to change)" in again.stderr, str(again)


@pytest.mark.parametrize("value", [" 1", "1 ", "yes", "ON", "\ttrue\n"])
def test_disable_with_whitespace_is_honoured_by_boot_and_run(value: str, script: Path, tmp_path: Path) -> None:
    overlays = tmp_path / "ov"
    made = heal(script, overlays, args=("crash",))
    assert made.returncode == 0 and overlays_in(overlays), str(made)
    before = snapshot(overlays)
    p = plain(script, "crash")
    env = clean_env(CODESUTURE_DISABLE=value)
    for r in (boot(script, overlays, args=("crash",), env=env, no_heal=False),
              heal(script, overlays, args=("crash",), env=env)):
        assert (r.returncode, r.stdout, r.stderr) == (p.returncode, p.stdout, p.stderr), str(r)
    # Also with otherwise invalid settings: the kill switch is read first.
    r = boot(script, overlays, args=("crash",), env=clean_env(CODESUTURE_DISABLE=value, CODESUTURE_KEYS=""))
    assert (r.returncode, r.stdout) == (p.returncode, p.stdout), str(r)
    assert snapshot(overlays) == before
