"""``python -m codesuture``: the same as the ``codesuture`` console script."""

from codesuture.cli import main

if __name__ == "__main__":
    main()
