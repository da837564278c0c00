"""codesuture.util.digest: SHA-256 through the interpreter's built-in module up to a
byte budget per process, through hashlib (OpenSSL) after it: the same digests always."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from codesuture.util import digest


def test_same_digests_as_hashlib_on_both_sides_of_the_budget(monkeypatch):
    sizes = [0, 1, 55, 56, 63, 64, 65, 119, 1000, 4096, 100_003]
    monkeypatch.setattr(digest, "_left", digest.BUILTIN_BUDGET)
    for n in sizes:
        data = os.urandom(n)
        got = digest.sha256(data)
        assert got.hexdigest() == hashlib.sha256(data).hexdigest()
        assert got.digest() == hashlib.sha256(data).digest()
        assert type(got).__module__ != "_hashlib" or digest._builtin is None  # inside the budget: built in
    big = os.urandom(digest.BUILTIN_BUDGET + 1)  # larger than what is left: hashlib
    assert digest.sha256(big).hexdigest() == hashlib.sha256(big).hexdigest()
    assert type(digest.sha256(big)) is type(hashlib.sha256(b""))
    assert digest.sha256(memoryview(b"abc")).hexdigest() == hashlib.sha256(b"abc").hexdigest()


def _fresh(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODESUTURE_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_hashlib_is_loaded_only_past_the_budget():
    small = _fresh(
        "import sys\nfrom codesuture.util.digest import sha256, BUILTIN_BUDGET\n"
        "for i in range(100): sha256(bytes(3000))\n"
        "print('hashlib' in sys.modules, '_hashlib' in sys.modules)"
    )
    assert small == "False False"
    past = _fresh(
        "import sys\nfrom codesuture.util.digest import sha256, BUILTIN_BUDGET\n"
        "for i in range(BUILTIN_BUDGET // 3000 + 2): h = sha256(bytes(3000))\n"
        "print('hashlib' in sys.modules, h.hexdigest())"
    )
    assert past == f"True {hashlib.sha256(bytes(3000)).hexdigest()}"
