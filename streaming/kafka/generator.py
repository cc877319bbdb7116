"""A seeded, realistic clickstream (:mod:`streaming.kafka.producer` sends it to Kafka).

Every record is one JSON event (UTF-8), keyed by its ``user_id``::

    {"event_id":"e-7-42","ts":"2026-11-23T10:00:00.042Z","user_id":"u004711",
     "session_id":"s-7-4711-3","page":"/p/00042","action":"view","amount":null,
     "country":"US","device":"mobile","referrer":"search"}

What makes it realistic:

* page popularity is Zipf (exponent 1.1 over ``pages``), user activity a power
  law (exponent 0.8 over ``users``): a few pages and users dominate;
* a user's consecutive events share a ``session_id`` until 30 minutes of
  simulated inactivity; a session starts with a ``view`` from an external
  referrer, later events come from ``internal``;
* ``amount`` is log-normal, rounded to cents, on ``purchase`` only (else null);
  country and device are per user, from skewed distributions.

Event time is a simulated clock: event ``i`` happens at
``start_time + i / rate``. The knobs ``out_of_order``, ``late`` and
``malformed`` are fractions of records that are shifted back within
``max_disorder`` seconds, shifted back beyond ``late_by`` seconds, or replaced
by a bad value (see :data:`MALFORMED_REASONS`). Each record says which it is,
and valid ones carry the parsed event as ground truth.

The same config and seed give byte-identical records, and a shorter run is a
prefix of a longer one. Generation is vectorised with NumPy per chunk of
:data:`CHUNK` events; only the JSON text is built per record.

Example:
    >>> from datetime import datetime, timezone
    >>> cfg = GeneratorConfig(seed=7, start_time=datetime(2026, 11, 23, 10, tzinfo=timezone.utc))
    >>> first = next(generate(cfg, 1))
    >>> first.kind, first.event["ts"], first.key == first.event["user_id"].encode()
    ('valid', '2026-11-23T10:00:00.000Z', True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from streaming.errors import ConfigError

CHUNK = 4096
"""Events drawn per vectorised step; fixed so that output never depends on batching."""

ACTIONS = ("view", "click", "add_to_cart", "purchase")
_ACTION_P = (0.70, 0.22, 0.06, 0.02)
DEVICES = ("mobile", "desktop", "tablet")
_DEVICE_P = (0.58, 0.35, 0.07)
COUNTRIES = ("US", "IN", "GB", "DE", "BR", "FR", "JP", "CA", "MX", "ES", "IT", "AU", "NL", "PL",
             "SE", "KR", "ID", "TR", "NG", "ZA")
_COUNTRY_W = (30, 11, 8, 7, 6, 5, 5, 4, 3, 3, 3, 2.5, 2, 2, 1.5, 1.5, 1.5, 1.5, 1, 1)
REFERRERS = ("search", "direct", "social", "email", "ads", "partner")
_REFERRER_P = (0.42, 0.25, 0.15, 0.08, 0.07, 0.03)
INTERNAL_REFERRER = "internal"

PAGE_EXPONENT = 1.1
USER_EXPONENT = 0.8
SESSION_GAP_SECONDS = 1800.0
AMOUNT_LOG_MEAN = 3.4   # median purchase ~ 30.0
AMOUNT_LOG_SIGMA = 0.9

VALID, OUT_OF_ORDER, LATE = "valid", "out_of_order", "late"
MALFORMED_REASONS = ("invalid_json", "invalid_utf8", "wrong_type", "missing_time",
                     "null_value", "empty_value", "bad_time")
"""Kinds of bad record, drawn uniformly; the record kind is ``"malformed:<reason>"``.

The names are the pipeline's quarantine reasons (``streaming.engine.decode``), except
``empty_value``, which the pipeline reports as ``invalid_json``.

* ``invalid_json``: a valid event cut short (no closing brace).
* ``invalid_utf8``: the page is Latin-1 encoded (``/p/café`` with byte 0xE9).
* ``wrong_type``: a purchase whose ``amount`` (a double) is a non-numeric string.
  A string field given a number or object is not used: Spark's JSON reader turns
  any value into text for a string column, so nothing downstream would notice.
* ``missing_time``: the ``ts`` key is absent.
* ``null_value`` / ``empty_value``: a Kafka null value / zero bytes.
* ``bad_time``: ``ts`` is text no ISO-8601 parser accepts.
"""
KINDS = (VALID, OUT_OF_ORDER, LATE) + tuple(f"malformed:{r}" for r in MALFORMED_REASONS)
_PURCHASE = ACTIONS.index("purchase")
_BAD_TIMESTAMPS = ("2026-13-45T25:61:00.000Z", "23/11/2026 10:00:00", "not-a-timestamp")
_BAD_AMOUNTS = ("abc", "N/A", "12,34 EUR")


class Record(NamedTuple):
    """One Kafka record and what it is.

    ``event`` is the parsed value (a dict) for kinds valid, out_of_order and
    late, and None for malformed records.
    """

    key: bytes
    value: bytes | None
    kind: str
    event: dict[str, Any] | None


def _fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a fraction in [0, 1], got {value!r}")


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Validated on construction; bad values raise :class:`ConfigError`.

    Args:
        seed: seed of every random draw (a non-negative integer).
        rate: events per second of event time (the simulated clock).
        start_time: event time of the first event (UTC; a naive datetime is
            taken as UTC). None means the wall clock when generation starts.
        users, pages: population sizes.
        out_of_order: fraction shifted back by up to ``max_disorder`` seconds.
        max_disorder: seconds; within the pipeline's watermark.
        late: fraction shifted back by ``late_by`` seconds plus up to 25 % more.
        late_by: seconds; beyond the pipeline's watermark, and above ``max_disorder``.
        malformed: fraction replaced by a bad record.
    """

    seed: int = 0
    rate: float = 1000.0
    start_time: datetime | None = None
    users: int = 100_000
    pages: int = 5_000
    out_of_order: float = 0.0
    max_disorder: float = 60.0
    late: float = 0.0
    late_by: float = 10_800.0
    malformed: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.rate, (int, float)) or not 0.001 <= self.rate <= 1e9:
            raise ConfigError(f"rate must be 0.001..1e9 events/s, got {self.rate!r}")
        for name in ("users", "pages"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**8:
                raise ConfigError(f"{name} must be an integer in 1..100000000, got {value!r}")
        for name in ("out_of_order", "late", "malformed"):
            _fraction(name, getattr(self, name))
        if self.out_of_order + self.late + self.malformed > 1.0 + 1e-12:
            raise ConfigError("out_of_order + late + malformed must not exceed 1, got "
                              f"{self.out_of_order + self.late + self.malformed:g}")
        if not isinstance(self.max_disorder, (int, float)) or not 0 < self.max_disorder < math.inf:
            raise ConfigError(f"max_disorder must be positive seconds, got {self.max_disorder!r}")
        if not isinstance(self.late_by, (int, float)) or not math.isfinite(self.late_by) \
                or self.late_by <= self.max_disorder:
            raise ConfigError(f"late_by must be seconds above max_disorder ({self.max_disorder:g}),"
                              f" got {self.late_by!r}")
        if self.start_time is not None:
            if not isinstance(self.start_time, datetime):
                raise ConfigError(f"start_time must be a datetime, got {self.start_time!r}")
            if self.start_time.tzinfo is None:
                object.__setattr__(self, "start_time", self.start_time.replace(tzinfo=UTC))

    def with_start(self, start_time: datetime | None = None) -> GeneratorConfig:
        """This config with ``start_time`` fixed (given, kept, or now)."""
        if start_time is None:
            start_time = self.start_time or datetime.now(UTC)
        return replace(self, start_time=start_time)


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def _draw(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.searchsorted(cdf, rng.random(n), side="right").astype(np.int64)


class _Population:
    """Fixed per-config tables: popularity CDFs, who is who, and the string forms."""

    def __init__(self, cfg: GeneratorConfig, rng: np.random.Generator) -> None:
        ranks = np.arange(1, cfg.pages + 1, dtype=np.float64)
        self.page_cdf = _cdf(ranks ** -PAGE_EXPONENT)
        self.page_of_rank = rng.permutation(cfg.pages)
        width = max(5, len(str(cfg.pages - 1)))
        self.page_names = [f"/p/{p:0{width}d}" for p in range(cfg.pages)]
        ranks = np.arange(1, cfg.users + 1, dtype=np.float64)
        self.user_cdf = _cdf(ranks ** -USER_EXPONENT)
        self.user_of_rank = rng.permutation(cfg.users)
        self.user_width = max(6, len(str(cfg.users - 1)))
        self.country = _draw(rng, _cdf(np.array(_COUNTRY_W)), cfg.users)
        self.device = _draw(rng, _cdf(np.array(_DEVICE_P)), cfg.users)
        self.country_list, self.device_list = self.country.tolist(), self.device.tolist()
        self.action_cdf = _cdf(np.array(_ACTION_P))
        self.referrer_cdf = _cdf(np.array(_REFERRER_P))
        # Per-user session state, carried from chunk to chunk.
        self.last_seen = np.full(cfg.users, np.iinfo(np.int64).min // 2, dtype=np.int64)
        self.sessions = np.zeros(cfg.users, dtype=np.int64)


def _sessions(pop: _Population, users: np.ndarray, clock: np.ndarray) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Session number per event and whether it opens a session; updates the user state."""
    order = np.argsort(users, kind="stable")
    u, t = users[order], clock[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = u[1:] != u[:-1]
    prev = np.empty_like(t)
    prev[1:] = t[:-1]
    prev[first] = pop.last_seen[u[first]]
    new = (t - prev) > int(SESSION_GAP_SECONDS * 1000)
    running = np.cumsum(new)
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    offset = running[starts] - new[starts]
    number = pop.sessions[u] + running - offset[group]
    last = np.ones(len(u), dtype=bool)
    last[:-1] = first[1:]
    pop.last_seen[u[last]] = t[last]
    pop.sessions[u[last]] = number[last]
    out_number = np.empty_like(number)
    out_number[order] = number
    out_new = np.empty_like(new)
    out_new[order] = new
    return out_number, out_new


class _Draws(NamedTuple):
    """One chunk's random draws and derived columns (both generator paths share them)."""

    seq: np.ndarray
    user: np.ndarray
    page: np.ndarray
    action: np.ndarray
    referrer: np.ndarray
    amount: np.ndarray
    number: np.ndarray
    kind: np.ndarray  # 0 valid, 1 out of order, 2 late, 3 malformed
    ts: np.ndarray  # event time, epoch ms
    reason: np.ndarray
    variant: np.ndarray


def _draw_chunks(cfg: GeneratorConfig, pop: _Population,
                 rng: np.random.Generator) -> Iterator[_Draws]:
    """Endless chunks of :data:`CHUNK` events' draws; ``cfg.start_time`` must be set."""
    assert cfg.start_time is not None
    start_ms = int(round(cfg.start_time.timestamp() * 1000))
    ms_per_event = 1000.0 / cfg.rate
    cut_valid = cfg.malformed + cfg.late + cfg.out_of_order
    base = 0
    while True:
        n = CHUNK
        seq = np.arange(base, base + n, dtype=np.int64)
        clock = start_ms + np.floor(seq * ms_per_event).astype(np.int64)
        user = pop.user_of_rank[_draw(rng, pop.user_cdf, n)]
        page = pop.page_of_rank[_draw(rng, pop.page_cdf, n)]
        action = _draw(rng, pop.action_cdf, n)
        referrer = _draw(rng, pop.referrer_cdf, n)
        amount = np.maximum(np.round(rng.lognormal(AMOUNT_LOG_MEAN, AMOUNT_LOG_SIGMA, n), 2),
                            0.01)
        kind_u = rng.random(n)
        shift_u = rng.random(n)
        reason = rng.integers(0, len(MALFORMED_REASONS), n)
        variant = rng.integers(0, 1 << 30, n)

        number, opens = _sessions(pop, user, clock)
        action[opens] = 0  # a session starts with a view ...
        referrer[~opens] = -1  # ... from outside; the rest of it is internal
        malformed = kind_u < cfg.malformed
        late = (~malformed) & (kind_u < cfg.malformed + cfg.late)
        disordered = (kind_u >= cfg.malformed + cfg.late) & (kind_u < cut_valid)
        ts = clock.copy()
        ts[disordered] -= np.ceil(shift_u[disordered] * cfg.max_disorder * 1000).astype(np.int64)
        ts[late] -= np.ceil(cfg.late_by * 1000 * (1.0 + 0.25 * shift_u[late])).astype(np.int64)
        kind = np.where(malformed, 3, np.where(late, 2, np.where(disordered, 1, 0)))
        base += n
        yield _Draws(seq, user, page, action, referrer, amount, number, kind, ts, reason,
                     variant)


def _event(cfg: GeneratorConfig, pop: _Population, d: _Draws, j: int, ts_text: str,
           uid: str) -> dict[str, Any]:
    """Event ``j`` of a chunk; ``d`` holds the draws as lists (see :func:`_listed`)."""
    u, a, r = d.user[j], d.action[j], d.referrer[j]
    return {"event_id": f"e-{cfg.seed}-{d.seq[j]}", "ts": ts_text + "Z", "user_id": uid,
            "session_id": f"s-{cfg.seed}-{u}-{d.number[j]}",
            "page": pop.page_names[d.page[j]], "action": ACTIONS[a],
            "amount": d.amount[j] if a == _PURCHASE else None,
            "country": COUNTRIES[pop.country_list[u]], "device": DEVICES[pop.device_list[u]],
            "referrer": REFERRERS[r] if r >= 0 else INTERNAL_REFERRER}


def _listed(d: _Draws) -> _Draws:
    """The draws as Python lists: indexing them one event at a time is fast."""
    return _Draws(*(a.tolist() for a in d))


def _ts_texts(ts: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms")


def _chunks(cfg: GeneratorConfig) -> Iterator[list[Record]]:
    """Endless lists of :data:`CHUNK` records, each with its event; ``cfg.start_time`` must
    be set."""
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    pop = _Population(cfg, rng)
    users_fmt = f"u{{:0{pop.user_width}d}}"
    kind_names = (VALID, OUT_OF_ORDER, LATE)
    new = tuple.__new__
    user_names: dict[int, tuple[str, bytes]] = {}
    for drawn in _draw_chunks(cfg, pop, rng):
        ts_text = _ts_texts(drawn.ts).tolist()
        d = _listed(drawn)
        out: list[Record] = []
        append = out.append
        for j, (u, k) in enumerate(zip(d.user, d.kind, strict=True)):
            names = user_names.get(u)
            if names is None:
                uid = users_fmt.format(u)
                names = user_names[u] = (uid, uid.encode())
            event = _event(cfg, pop, d, j, ts_text[j], names[0])
            if k == 3:  # malformed
                why = MALFORMED_REASONS[d.reason[j]]
                append(new(Record, (names[1], _malformed(event, why, d.variant[j]),
                                    f"malformed:{why}", None)))
            else:
                append(new(Record, (names[1], _encode(event).encode(), kind_names[k], event)))
        yield out


class WireChunk(NamedTuple):
    """A chunk of records as they go on the wire: no event dicts (see :func:`wire_chunks`)."""

    #: Arrow binary arrays
    keys: Any
    values: Any
    #: each record's kind, as an index into :data:`KINDS`
    kinds: np.ndarray
    #: each record's user (the number in its key: one key per user)
    users: np.ndarray


def wire_chunks(config: GeneratorConfig) -> Iterator[WireChunk]:
    """Endless :data:`CHUNK`-record chunks of :func:`generate`'s keys and values, byte for
    byte, built column by column with Arrow (several times faster than records one by one:
    what ``produce`` sends). Malformed records are built one by one, as there."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cfg = config.with_start()
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    pop = _Population(cfg, rng)
    s = pa.scalar
    pages = pa.array(pop.page_names)
    actions, countries, devices = pa.array(ACTIONS), pa.array(COUNTRIES), pa.array(DEVICES)
    referrers = pa.array((*REFERRERS, INTERNAL_REFERRER))
    prefix_e, prefix_s = s(f'{{"event_id":"e-{cfg.seed}-'), s(f'","session_id":"s-{cfg.seed}-')
    users_fmt = f"u{{:0{pop.user_width}d}}"
    for d in _draw_chunks(cfg, pop, rng):
        ts_np = _ts_texts(d.ts)
        uid = pc.binary_join_element_wise(
            s("u"), pc.utf8_lpad(pc.cast(pa.array(d.user), pa.string()), pop.user_width,
                                 padding="0"), "")
        purchase = d.action == _PURCHASE
        amount_text = np.full(len(d.seq), "null", dtype=object)
        amount_text[purchase] = [repr(x) for x in d.amount[purchase].tolist()]
        text = pc.binary_join_element_wise(
            prefix_e, pc.cast(pa.array(d.seq), pa.string()), s('","ts":"'), pa.array(ts_np),
            s('Z","user_id":"'), uid, prefix_s, pc.cast(pa.array(d.user), pa.string()), s("-"),
            pc.cast(pa.array(d.number), pa.string()), s('","page":"'), pages.take(d.page),
            s('","action":"'), actions.take(d.action), s('","amount":'),
            pa.array(amount_text, pa.string()), s(',"country":"'),
            countries.take(pop.country[d.user]), s('","device":"'),
            devices.take(pop.device[d.user]), s('","referrer":"'),
            referrers.take(np.where(d.referrer >= 0, d.referrer, len(REFERRERS))), s('"}'), "")
        values = pc.cast(text, pa.binary())
        kinds = np.where(d.kind == 3, 3 + d.reason, d.kind)
        bad = np.flatnonzero(d.kind == 3).tolist()
        if bad:
            listed, ts_list = _listed(d), ts_np.tolist()
            patched = []
            for j in bad:
                why = MALFORMED_REASONS[listed.reason[j]]
                event = _event(cfg, pop, listed, j, ts_list[j], users_fmt.format(listed.user[j]))
                patched.append(_malformed(event, why, listed.variant[j]))
            values = pc.replace_with_mask(values, pa.array(d.kind == 3),
                                          pa.array(patched, pa.binary()))
        yield WireChunk(pc.cast(uid, pa.binary()), values, kinds, d.user)


def _encode(e: dict[str, Any]) -> str:
    """Compact JSON of an event; every text field is plain ASCII, so nothing needs escaping."""
    amount = e["amount"]
    amount_text = "null" if amount is None else repr(amount)
    return (f'{{"event_id":"{e["event_id"]}","ts":"{e["ts"]}","user_id":"{e["user_id"]}",'
            f'"session_id":"{e["session_id"]}","page":"{e["page"]}","action":"{e["action"]}",'
            f'"amount":{amount_text},"country":"{e["country"]}","device":"{e["device"]}",'
            f'"referrer":"{e["referrer"]}"}}')


def _malformed(event: dict[str, Any], why: str, variant: int) -> bytes | None:
    if why == "null_value":
        return None
    if why == "empty_value":
        return b""
    if why == "invalid_json":
        text = _encode(event).encode()
        return text[: 1 + variant % (len(text) - 1)]
    if why == "invalid_utf8":
        return _encode(dict(event, page="/p/caf\x00")).encode().replace(b"\x00", b"\xe9")
    if why == "wrong_type":
        bad = _BAD_AMOUNTS[variant % len(_BAD_AMOUNTS)]
        return _encode(dict(event, action="purchase", amount=None)).replace(
            '"amount":null', f'"amount":"{bad}"').encode()
    if why == "missing_time":
        return _encode(event).replace(f'"ts":"{event["ts"]}",', "").encode()
    if why == "bad_time":
        return _encode(dict(event, ts=_BAD_TIMESTAMPS[variant % len(_BAD_TIMESTAMPS)])).encode()
    raise AssertionError(why)


def generate(config: GeneratorConfig, count: int | None) -> Iterator[Record]:
    """Yield ``count`` records (endless when None) for ``config``.

    Deterministic for a fixed ``config.start_time``; with ``start_time=None``
    the clock starts at the current time.
    """
    for batch in generate_batches(config, count, CHUNK):
        yield from batch


def generate_batches(config: GeneratorConfig, count: int | None,
                     batch_size: int) -> Iterator[list[Record]]:
    """The records of :func:`generate`, in lists of ``batch_size`` (the last may be shorter)."""
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ConfigError(f"count must be a non-negative integer, got {count!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    remaining = math.inf if count is None else count
    chunks = _chunks(config.with_start())
    pending: list[Record] = []
    at = 0
    while remaining > 0:
        take = int(min(batch_size, remaining))
        batch: list[Record] = []
        while len(batch) < take:
            if at == len(pending):
                pending, at = next(chunks), 0
            part = pending[at: at + take - len(batch)]
            at += len(part)
            batch.extend(part)
        remaining -= take
        yield batch
