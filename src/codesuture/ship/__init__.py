"""The ship side: turning a store of overlays into reviewed, deployable artifacts.

rebuild (build overlays from source and records on any interpreter), sign (per-overlay
attestations and the folder's signed set, after a byte-for-byte rebuild check), verify
(everything the loader would check, and more), bundle (one file for a deploy).
"""
