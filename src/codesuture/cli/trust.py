"""Placeholder: commands of this family are registered here."""
