"""``python -m codesuture``: the same as the ``codesuture`` console script."""

from codesuture.cli.app import main

if __name__ == "__main__":
    main()
