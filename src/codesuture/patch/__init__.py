"""Patching: the patch model (spec), guard synthesis into code objects (synthesize),
the semantic diff gate (diffgate) and the live swap with propagation (swap)."""
