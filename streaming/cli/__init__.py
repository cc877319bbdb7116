"""The ``streamsketch`` command line: one module per command, shared helpers in ``common``.

Nothing outside this package imports it.
"""

from streaming.cli.main import main

__all__ = ["main"]
