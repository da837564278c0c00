"""Overlays: the patched module code object on disk (format), its metadata (model),
where overlays live (store) and deploy bundles (bundle)."""
