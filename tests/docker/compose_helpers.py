"""Helpers for the Docker deliverables' tests: read docker-compose.yml the way
Compose does (variable interpolation, mount and port syntax) and the Dockerfile
(instructions per stage), without a Docker engine.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import yaml
except ImportError as exc:  # pragma: no cover - an incomplete dev install
    raise ImportError("PyYAML is needed by tests/docker: pip install -e '.[dev]'") from exc

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
APP_IMAGE_REPO = "streamsketch"

#: The environment the static tests interpolate with: only what .env must set.
TEST_ENV = {"GRAFANA_ADMIN_PASSWORD_FILE": "./secrets/grafana_admin_password"}


# -- interpolation -------------------------------------------------------------
class InterpolationError(ValueError):
    """A required variable is missing (``${VAR:?message}``), as Compose reports it."""


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^{}$]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))")


def interpolate_text(text: str, env: dict[str, str]) -> str:
    """Compose's ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR-d}``, ``${VAR:?e}``,
    ``${VAR?e}``, ``${VAR:+r}``, ``${VAR+r}`` and ``$$``; anything else is an error.

    >>> interpolate_text("${A:-x}/${B}/$$", {"B": "b"})
    'x/b/$'
    """
    def one(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("invalid") is not None:
            raise InterpolationError(f"invalid interpolation in {text!r}")
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        unset_or_empty = not value
        if op is None:
            return value or ""
        if op == ":-":
            return arg if unset_or_empty else value  # type: ignore[return-value]
        if op == "-":
            return arg if value is None else value
        if op == ":?":
            if unset_or_empty:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value  # type: ignore[return-value]
        if op == "?":
            if value is None:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value
        if op == ":+":
            return "" if unset_or_empty else arg
        return "" if value is None else arg  # "+"

    return _VAR.sub(one, text)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Interpolate every string value (not keys) of a parsed YAML document."""
    if isinstance(node, str):
        return interpolate_text(node, env)
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    return node


def variables(node: Any) -> set[str]:
    """Names of the variables a document refers to."""
    if isinstance(node, str):
        return {m.group("braced") or m.group("bare") for m in _VAR.finditer(node)
                if m.group("braced") or m.group("bare")}
    if isinstance(node, dict):
        return set().union(*(variables(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(variables(v) for v in node)) if node else set()
    return set()


def load_compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(load_compose_raw(), TEST_ENV if env is None else env)


# -- services, mounts, ports ---------------------------------------------------
def is_app_image(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).split(":")[0] == APP_IMAGE_REPO


def in_default_profile(service: dict[str, Any]) -> bool:
    return not service.get("profiles")


def is_one_shot(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "no")) == "no"


def streamsketch_argv(service: dict[str, Any]) -> list[str] | None:
    """The argv a service passes to the ``streamsketch`` entrypoint, or None when
    the service runs something else."""
    if not is_app_image(service) or "entrypoint" in service:
        return None
    command = service.get("command")
    if command is None:
        return None  # the image's CMD; checked against the Dockerfile elsewhere
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


@dataclass(frozen=True)
class Mount:
    type: str  # "bind" or "volume"
    source: str
    target: str
    read_only: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out.append(Mount(entry["type"], entry.get("source", ""), entry["target"],
                             bool(entry.get("read_only", False))))
            continue
        parts = entry.split(":")
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) > 2 else "rw"
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append(Mount(kind, source, target, "ro" in mode.split(",")))
    return out


def bind_source(service: dict[str, Any], target: str) -> Path | None:
    """Host path bound at ``target`` in the container (relative to the project)."""
    for m in mounts(service):
        if m.type == "bind" and m.target == target:
            return (ROOT / m.source).resolve()
    return None


@dataclass(frozen=True)
class Port:
    host_ip: str | None
    published: str | None
    target: str


def ports(service: dict[str, Any]) -> list[Port]:
    out = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.append(Port(entry.get("host_ip"), str(entry.get("published", "")) or None,
                            str(entry["target"])))
            continue
        text = str(entry).split("/")[0]
        parts = text.rsplit(":", 2)
        if len(parts) == 3:
            out.append(Port(parts[0].strip("[]"), parts[1], parts[2]))
        elif len(parts) == 2:
            out.append(Port(None, parts[0], parts[1]))
        else:
            out.append(Port(None, None, parts[0]))
    return out


def network_names(compose: dict[str, Any]) -> set[str]:
    """Every name another container can reach a service by: service names and aliases."""
    names = set(compose["services"])
    for svc in compose["services"].values():
        nets = svc.get("networks")
        if isinstance(nets, dict):
            for net in nets.values():
                names.update((net or {}).get("aliases", []))
    return names


# -- Dockerfile ----------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    return out


def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """Instructions grouped by stage, each list starting with its FROM."""
    stages: list[list[Instruction]] = []
    for ins in dockerfile_instructions(path):
        if ins.keyword == "FROM":
            stages.append([ins])
        elif stages:
            stages[-1].append(ins)
    return stages
