"""A project's own test suite run under ``python -m codesuture.boot -m pytest`` (dev
mode, healing on) gives every test the outcome it has under plain pytest, and writes
no overlay: pytest handles every exception a test raises (``pytest.raises`` is EAFP,
a failing test is reported, not healed), and the children a test starts see the
environment and stderr they would without CodeSuture.

The suite here is a small real one (a module with structural crashes, tests that
expect them, one that fails, one that reads a child process's stderr); the same check
on released packages' suites is recorded in benchmarks/README.md ("Real test suites
under boot")."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from heal_helpers import PY, clean_env, run

SHOP = '''
def price(prices, item):
    return prices[item] * 2            # KeyError on a missing item

def owner_name(user):
    return user.name.upper()           # AttributeError on None

def share(total, people):
    return total / people              # ZeroDivisionError

def first(items):
    return items[0]                    # IndexError
'''

TESTS = '''
import subprocess, sys, warnings
import pytest
import shop

def test_missing_key_raises():
    with pytest.raises(KeyError):
        shop.price({"a": 1}, "b")

def test_none_attribute_raises():
    with pytest.raises(AttributeError, match="NoneType"):
        shop.owner_name(None)

def test_zero_people():
    with pytest.raises(ZeroDivisionError):
        shop.share(10, 0)

def test_empty_first():
    try:
        shop.first([])
    except IndexError:
        pass
    else:
        raise AssertionError("no IndexError")

def test_unhandled_crash_fails():
    assert shop.price({}, "x") == 0    # fails with KeyError: reported, never healed

def test_child_stderr_is_quiet():
    r = subprocess.run([sys.executable, "-c", "print('hi')"], capture_output=True, text=True)
    assert (r.stdout, r.stderr) == ("hi\\n", "")

def test_warns():
    with pytest.warns(DeprecationWarning):
        warnings.warn("old", DeprecationWarning)
'''


def outcomes(report: Path) -> dict[str, str]:
    found = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        found[case.get("name", "")] = kinds[0] if kinds else "passed"
    return found


def test_suite_outcomes_identical_and_no_overlay(tmp_path):
    (tmp_path / "shop.py").write_text(SHOP)
    (tmp_path / "test_shop.py").write_text(textwrap.dedent(TESTS))
    pytest_args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shop.py"]
    plain = run([PY, *pytest_args, "--junitxml=plain.xml"], tmp_path, clean_env())
    store = tmp_path / "store"
    booted = run([PY, "-m", "codesuture.boot", "--overlays", str(store), *pytest_args, "--junitxml=boot.xml"],
                 tmp_path, clean_env())
    expected = {"test_missing_key_raises": "passed", "test_none_attribute_raises": "passed",
                "test_zero_people": "passed", "test_empty_first": "passed",
                "test_unhandled_crash_fails": "failure", "test_child_stderr_is_quiet": "passed",
                "test_warns": "passed"}
    assert outcomes(tmp_path / "plain.xml") == expected, plain
    assert outcomes(tmp_path / "boot.xml") == expected, booted
    assert not store.exists(), booted  # nothing healed, nothing written
    # the missing store is reported once, by the booted process, not again by its child
    assert booted.stderr.count("does not exist") == 1, booted
