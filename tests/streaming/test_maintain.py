"""``streamsketch maintain`` without a JVM: argument errors, retention guard, retries.

Each user error is one line on stderr and exit code 2, decided before Spark
starts. The retry helper runs an operation again on a Delta concurrent-
modification conflict, and gives up (re-raising) after its last attempt; which
exceptions count as a conflict is checked against conflicts provoked in delta-rs,
not against a copy of the list. The compaction itself, against a live pipeline,
is proven in ``test_faults_process.py``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from streaming.cli.main import main
from streaming.cli.maintain import (
    SAFE_RETENTION_HOURS,
    TableReport,
    check_retention,
    conflict_exceptions,
    with_retries,
)
from streaming.errors import ConfigError


@pytest.fixture
def spec_file(tmp_path):
    from streaming.spec.model import default_spec_path

    text = default_spec_path().read_text()
    text = text.replace('path = "./data/delta"', f'path = "{tmp_path / "delta"}"')
    text = text.replace('checkpoint = "./data/checkpoints"', f'checkpoint = "{tmp_path / "ck"}"')
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamsketch"), err
    return err


@pytest.mark.parametrize(("extra", "expected"), [
    (["--vacuum-hours", "1"], "below Delta's safety retention of 168 h"),
    (["--vacuum-hours", "167.9"], "--force-retention"),
    (["--force-retention"], "only applies with --vacuum-hours"),
])
def test_retention_errors_are_one_line_exit_2(spec_file, capsys, extra, expected):
    assert main(["maintain", "--spec", str(spec_file), *extra]) == 2
    assert expected in _one_line_error(capsys)


@pytest.mark.parametrize("hours", ["-1", "abc", "nan", "inf"])
def test_bad_hours_are_a_usage_error(spec_file, capsys, hours):
    with pytest.raises(SystemExit) as exc:
        main(["maintain", "--spec", str(spec_file), "--vacuum-hours", hours])
    assert exc.value.code == 2
    assert "--vacuum-hours" in _one_line_error(capsys)


def test_spec_is_required(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["maintain"])
    assert exc.value.code == 2
    assert "--spec" in _one_line_error(capsys)


def test_missing_tables_are_refused_before_spark_starts(spec_file, capsys):
    assert main(["maintain", "--spec", str(spec_file)]) == 2
    err = _one_line_error(capsys)
    assert "no aggregates, sketches, quarantine table" in err and "run the pipeline" in err


def test_a_bad_spec_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[source]\ntopic = 1\n")
    assert main(["maintain", "--spec", str(bad)]) == 2
    _one_line_error(capsys)


def test_retention_guard():
    check_retention(None, False)
    check_retention(SAFE_RETENTION_HOURS, False)
    check_retention(0.0, True)
    with pytest.raises(ConfigError):
        check_retention(SAFE_RETENTION_HOURS - 0.01, False)


def _raised(fn) -> BaseException:
    """The exception ``fn()`` raises, whatever its type."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the type is what the caller checks
        return exc
    pytest.fail("no error was raised")


def _real_conflicts(folder) -> list[BaseException]:
    """What delta-rs raises when a commit loses a race, provoked for real.

    A compaction planned on a snapshot whose files another writer has since removed;
    a replace-where write planned on a snapshot a compaction has since rewritten (the
    pipeline's write racing ``maintain``).
    """
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    path = str(folder / "t")
    for i in range(4):
        write_deltalake(path, pa.table({"x": [i]}), mode="append")
    stale = DeltaTable(path)
    write_deltalake(path, pa.table({"x": [9, 8]}), mode="overwrite")
    raised = [_raised(stale.optimize.compact)]
    for i in range(4):
        write_deltalake(path, pa.table({"x": [i]}), mode="append")
    stale = DeltaTable(path)
    DeltaTable(path).optimize.compact()
    raised.append(_raised(lambda: write_deltalake(stale, pa.table({"x": [1]}), mode="overwrite",
                                                  predicate="x = 1")))
    return raised


def _real_other_error(folder) -> BaseException:
    """A delta-rs error that is no conflict: a write whose schema does not match."""
    import pyarrow as pa
    from deltalake import write_deltalake

    path = str(folder / "s")
    write_deltalake(path, pa.table({"x": [1]}))
    return _raised(lambda: write_deltalake(path, pa.table({"y": ["a"]}), mode="append"))


def test_the_retried_exceptions_are_what_delta_rs_raises_on_a_conflict(tmp_path):
    listed = conflict_exceptions()
    raised = _real_conflicts(tmp_path)
    for exc in raised:
        assert isinstance(exc, listed), f"{type(exc).__name__} is not retried: {exc}"
    # each listed class is one delta-rs raises (no dead entry kept by hand), and none is so
    # broad that it takes in errors a retry cannot cure
    for cls in listed:
        assert any(isinstance(exc, cls) for exc in raised), cls
    other = _real_other_error(tmp_path)
    assert not isinstance(other, listed), f"{type(other).__name__} would be retried"


def test_a_conflict_is_retried_until_it_succeeds(tmp_path):
    conflict = _real_conflicts(tmp_path)[0]
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise conflict
        return "done"

    assert with_retries(flaky, attempts=5, pause_s=0) == ("done", 3)
    assert len(calls) == 3


def test_a_lasting_conflict_is_raised_after_the_last_attempt(tmp_path):
    conflict = _real_conflicts(tmp_path)[1]
    calls = []

    def always():
        calls.append(1)
        raise conflict

    with pytest.raises(type(conflict)) as exc:
        with_retries(always, attempts=4, pause_s=0)
    assert exc.value is conflict
    assert len(calls) == 4


def test_a_real_compaction_race_is_retried(tmp_path):
    # A compaction planned on a snapshot whose files another writer has since removed
    # fails to commit; run again on a fresh snapshot, it succeeds.
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    path = str(tmp_path / "t")
    for i in range(4):
        write_deltalake(path, pa.table({"x": [i]}), mode="append")
    stale = DeltaTable(path)
    write_deltalake(path, pa.table({"x": [9, 8]}), mode="overwrite")
    tries = []

    def compact():
        table = stale if not tries else DeltaTable(path)
        tries.append(1)
        return table.optimize.compact()

    _, attempts = with_retries(compact, attempts=3, pause_s=0)
    assert attempts == 2
    from streaming.engine.tables import read_table

    assert sorted(read_table(path).column("x").to_pylist()) == [8, 9]


def test_other_errors_are_not_retried(tmp_path):
    other = _real_other_error(tmp_path)
    calls = []

    def broken():
        calls.append(1)
        raise other

    with pytest.raises(type(other)):
        with_retries(broken, attempts=4, pause_s=0)
    assert calls == [1]


def test_report_line():
    report = TableReport("aggregates", 12, 1, 2)
    assert report.line() == "aggregates: 12 files -> 1 (compaction, 2 attempts)"
    assert replace(report, vacuumed=11, attempts=1).line() == (
        "aggregates: 12 files -> 1 (compaction, 1 attempt); vacuum removed 11 unreferenced files")
