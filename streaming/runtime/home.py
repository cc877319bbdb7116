"""The service's home folder on this machine: local broker, demo data and logs."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """Folder for the local broker, demo data and logs.

    ``STREAMSKETCH_HOME`` if set, else ``./.streamsketch``.
    """
    return Path(os.environ.get("STREAMSKETCH_HOME", ".streamsketch")).expanduser()
