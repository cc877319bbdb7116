"""Line numbers of spec keys, so that an error names the line it is about."""

from __future__ import annotations

import re


class KeyLocator:
    """Best-effort line numbers for dotted key paths such as ``windows[1].sketches[0].kind``."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        # (line_no, table path with indices) for each header
        self.tables: list[tuple[int, str]] = [(0, "")]
        counters: dict[str, int] = {}
        current_index_path: dict[str, str] = {}
        for i, line in enumerate(self.lines, start=1):
            m = self._HEADER.match(line)
            if not m:
                continue
            name = m.group(2).replace('"', "").replace(" ", "")
            parts = name.split(".")
            resolved = []
            for depth, part in enumerate(parts):
                prefix = ".".join(parts[: depth + 1])
                if depth == len(parts) - 1 and m.group(1) == "[[":
                    parent = ".".join(resolved)
                    key = f"{parent}/{prefix}"
                    counters[key] = counters.get(key, -1) + 1
                    resolved.append(f"{part}[{counters[key]}]")
                    current_index_path[prefix] = ".".join(resolved)
                elif prefix in current_index_path and depth < len(parts) - 1:
                    resolved = current_index_path[prefix].split(".")
                else:
                    resolved.append(part)
            self.tables.append((i, ".".join(resolved)))

    def line_of(self, key: str) -> int | None:
        table, _, leaf = key.rpartition(".")
        leaf_name = re.sub(r"\[\d+\]$", "", leaf)
        if re.search(r"\[\d+\]$", leaf):
            for line_no, path in self.tables:
                if path == key:
                    return line_no
        for idx, (line_no, path) in enumerate(self.tables):
            if path != table:
                continue
            end = self.tables[idx + 1][0] if idx + 1 < len(self.tables) else len(self.lines) + 1
            for j in range(line_no + 1 if line_no else 1, end):
                if re.match(rf'^\s*"?{re.escape(leaf_name)}"?\s*=', self.lines[j - 1]):
                    return j
            return line_no or None
        return None
