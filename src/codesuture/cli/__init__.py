"""The ``codesuture`` command line: parse, call the library, print. Nothing else.

One module per command family (``heal``, ``trust``, ``bundle``, ``review``), each
defining standalone click commands; ``app`` assembles them into the ``codesuture``
group; ``common`` holds what several commands share. This package module imports none
of them.
"""
