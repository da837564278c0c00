"""CodeSuture: heal structural crashes in running CPython programs and ship the hotfixes
as signed code-object overlays.

Kept import-light on purpose: ``python -m codesuture.boot`` imports this package on
every start, so nothing heavy (bytecode, click, cryptography, sigstore) is imported here.
"""

__version__ = "0.1.0"
