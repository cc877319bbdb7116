"""The one error hierarchy of the service.

Every error a user can cause (a bad spec, a bad CLI argument, a port in use, a
missing Java) is a :class:`StreamsketchError`. The CLI prints it as one line and
exits with code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class StreamsketchError(Exception):
    """Base class of every error the service reports to a user."""

    exit_code: int = 2


class ConfigError(StreamsketchError):
    """A bad CLI argument or environment setting."""


class SpecError(StreamsketchError):
    """A pipeline spec that fails validation.

    Attributes:
        key: dotted path of the offending key (``windows[0].size``).
        line: 1-based line of the key in the spec file, when known.
    """

    def __init__(self, message: str, *, key: str | None = None, line: int | None = None,
                 path: str | None = None) -> None:
        self.key = key
        self.line = line
        self.path = path
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        elif line:
            where = f"line {line}: "
        prefix = f"{key}: " if key else ""
        super().__init__(f"{where}{prefix}{message}")


class JavaNotFoundError(StreamsketchError):
    """No usable Java runtime."""


class ArtifactError(StreamsketchError):
    """JVM artifacts could not be resolved or the cache is unusable."""


class BrokerError(StreamsketchError):
    """The local Kafka broker could not be started, stopped or reached."""


class CheckpointError(StreamsketchError):
    """A checkpoint that does not match the spec, is damaged, or is in use."""


class LogFormatError(StreamsketchError):
    """An event log that cannot be read."""


class RegistryError(StreamsketchError):
    """A Schema Registry that cannot be reached, or answers with an error."""
