"""The import side: a ``sys.meta_path`` finder that swaps admitted overlays in for
modules' compiled source (finder), and the one routine that decides whether an
overlay applies to given source bytes (resolve)."""
