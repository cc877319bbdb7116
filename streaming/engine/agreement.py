"""A checkpoint and its tables hold the same batches, or the job does not go on.

Each table's last batch (:func:`streaming.engine.table_batches.table_batch`) is compared
with the checkpoint's when a job starts and before every batch writes:

* **ahead**: a table holds a batch the checkpoint never planned (its query state was
  deleted or restored from an older copy). Going on would write those batches again.
* **behind**: the checkpoint committed batches a table does not hold (the tables were
  restored from a backup or by Delta ``RESTORE``, or lost their newest commit). Spark
  resumes after its last commit, so going on would skip those batches' events for good.
  ``streamsketch recover`` writes them again from the source.

Either stops the job with one line naming the table, its batch and the checkpoint's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from streaming.engine.table_batches import table_batch
from streaming.errors import CheckpointError
from streaming.spec.model import Spec

_FRESH = "or delete both (tables and checkpoint) to start fresh"


def check_tables_exist(spec: Spec, committed: int) -> None:
    """Refuse to recreate tables under a checkpoint that has committed batches."""
    from streaming.engine.tables import is_delta, table_paths

    if committed < 0:
        return
    missing = [name for name, path in table_paths(spec).all().items() if not is_delta(path)]
    if missing:
        raise CheckpointError(
            f"checkpoint {spec.sink.checkpoint} has committed batches up to "
            f"{committed}, but no {', '.join(missing)} table under {spec.sink.path} "
            "(deleted, or [sink] path changed): starting over there would lose what the "
            "checkpoint already consumed. Restore the tables or the old path, or delete "
            "the checkpoint too to start fresh")


def table_batches(paths: Mapping[str, str], app_id: Callable[[str], str]) -> dict[str, int]:
    """Each table's last batch of the checkpoint (-1: none)."""
    out = {}
    for name, path in paths.items():
        held = table_batch(path, app_id(name))
        out[name] = -1 if held is None else held
    return out


def behind_line(path: str, held: int, committed: int) -> str:
    holds = "no batch" if held < 0 else f"batches up to {held}"
    return (f"table {path} holds {holds}, but the checkpoint committed batches up to "
            f"{committed}: the tables were restored from an older copy or lost their "
            f"newest commits, and going on would skip the events of batches "
            f"{held + 1}..{committed}. Run `streamsketch recover --spec SPEC` to write "
            f"them again from the source, {_FRESH}")


def check_at_start(spec: Spec, paths: Mapping[str, str], held: Mapping[str, int],
                   planned: tuple[int, int], every_from: int) -> None:
    """Refuse tables ahead of the checkpoint's planned batches or behind its committed ones
    (``every_from``: see :func:`streaming.engine.checkpoint.every_batch_from`)."""
    committed, last_planned = planned
    for name, path in paths.items():
        if held[name] > last_planned:
            where = "holds no batch" if last_planned < 0 else f"ends at batch {last_planned}"
            raise CheckpointError(
                f"table {path} holds batch {held[name]} of checkpoint "
                f"{spec.sink.checkpoint}, but the checkpoint {where}: its query state was "
                "deleted or restored from an older copy, and going on would skip or "
                "double-count events. Restore the checkpoint and the tables together, "
                f"{_FRESH}")
    for name, path in paths.items():
        if committed >= every_from and held[name] < committed:
            raise CheckpointError(behind_line(path, held[name], committed))


def tables_to_write(paths: Mapping[str, str], held: Mapping[str, int], batch_id: int,
                    every_from: int) -> list[str]:
    """The tables ``batch_id`` still writes, in ``paths``' order: a re-run after a crash,
    or a recovery, finds some that hold it already. Refuses a table that lost batches
    while the job ran."""
    for path, h in ((paths[n], held[n]) for n in paths):
        if h < batch_id - 1 and batch_id - 1 >= every_from:
            raise CheckpointError(behind_line(path, h, batch_id - 1))
    return [name for name in paths if held[name] < batch_id]
