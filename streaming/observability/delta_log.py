"""Commits and live files of a Delta table, read incrementally from its log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class DeltaLogCounter:
    """Commits and live data files of one Delta table, from its ``_delta_log``.

    The first call starts from the last checkpoint (``_last_checkpoint``) when
    there is one, else from commit 0; later calls read only the commit files
    written since. Each commit's ``add``/``remove`` actions update the set of
    live files. Commits = latest version + 1.
    """

    def __init__(self, path: str | Path) -> None:
        self.log = Path(path) / "_delta_log"
        self.version = -1
        self.live: set[str] = set()
        self.files_known = True
        self._started = False

    def refresh(self) -> tuple[int, int | None]:
        """``(commits, live files)``; live files is None when the log can't be replayed."""
        if not self._started:
            self._started = True
            self._from_checkpoint()
            if self.version < 0 and not (self.log / f"{0:020d}.json").exists():
                self._from_listing()
        while True:
            try:
                text = (self.log / f"{self.version + 1:020d}.json").read_text()
            except FileNotFoundError:
                break
            for line in text.splitlines():
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    self.live.add(action["add"]["path"])
                elif "remove" in action:
                    self.live.discard(action["remove"]["path"])
            self.version += 1
        return self.version + 1, (len(self.live) if self.files_known else None)

    def _from_listing(self) -> None:
        """Early commits cleaned up and no readable checkpoint: count commits only."""
        try:
            versions = sorted(int(p.stem) for p in self.log.glob("*.json") if p.stem.isdigit())
        except OSError:
            return
        if versions and versions[0] > 0:
            self.version, self.files_known = versions[0] - 1, False

    def _from_checkpoint(self) -> None:
        try:
            meta = json.loads((self.log / "_last_checkpoint").read_text())
            version, parts = int(meta["version"]), meta.get("parts")
        except (OSError, ValueError, KeyError, TypeError):
            return
        if parts:
            names = [f"{version:020d}.checkpoint.{i:010d}.{parts:010d}.parquet"
                     for i in range(1, int(parts) + 1)]
        else:
            names = [f"{version:020d}.checkpoint.parquet"]
        try:
            import pyarrow.parquet as pq

            live: set[str] = set()
            for name in names:
                adds = pq.read_table(self.log / name, columns=["add"]).column("add")
                adds = adds.combine_chunks()
                live.update(adds.filter(adds.is_valid()).field("path").to_pylist())
        except Exception:  # noqa: BLE001 - a v2/unknown checkpoint: replay from commit 0
            log.debug("cannot read Delta checkpoint %s", names, exc_info=True)
            return
        self.live, self.version = live, version
