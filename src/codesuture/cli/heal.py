"""Placeholder: ``codesuture run``."""
