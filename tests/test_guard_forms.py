"""null_guard's method form takes its default from how the call's result is used, else
from the method's name (``None.strip()`` reads as ``''.strip()``), and the operand form
leaves the left operand unchanged when the right one is None."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    def keys_of(x):
        return [k for k in x.keys()]

    def parts(x):
        return len(x.split(","))

    def plain(x):
        return x.strip()

    def tally(rows):
        total = 10
        for r in rows:
            total += r.get("n")
        return total

    def scaled(v, k):
        return v * k

    print("RESULT", keys_of(None), parts(None), plain(None), tally([{"n": 2}, {}]), scaled(3, None))
''')


def test_method_and_operand_forms(tmp_path):
    script = tmp_path / "forms.py"
    script.write_text(SCRIPT)
    ov = tmp_path / "ov"
    r = subprocess.run([sys.executable, "-m", "codesuture", "run", "--retries", "6", "--overlays", str(ov), str(script)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "RESULT [] 0  12 3"
    assert "null_guard/method on `x.keys` -> yields ()" in r.stderr
    assert "null_guard/method on `x.strip` -> yields the empty value from method name, else None" in r.stderr
    assert "null_guard/operand on `total += r.get(\"n\")`" in r.stderr
    b = subprocess.run([sys.executable, "-m", "codesuture.boot", "--overlays", str(ov), "--no-heal", str(script)],
                       capture_output=True, text=True)
    assert b.returncode == 0 and b.stdout.strip() == "RESULT [] 0  12 3", b.stderr
    assert "patched" not in b.stderr


def test_division_by_none_is_not_an_operand_guard(tmp_path):
    script = tmp_path / "div.py"
    script.write_text("def f(a, b):\n    return a / b\nprint(f(1, None))\n")
    r = subprocess.run([sys.executable, "-m", "codesuture", "run", "--overlays", str(tmp_path / "ov"), str(script)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "TypeError" in r.stderr and "not healed" in r.stderr
