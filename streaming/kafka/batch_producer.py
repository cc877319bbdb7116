"""An idempotent Kafka producer for one topic that builds its record batches itself.

``KafkaProducer.send()`` spends most of its ~24 µs per record on what a replay
does not need: a serializer and partitioner call, accumulator locks and a
future per record. :class:`BatchProducer` takes records whose partition is
already known, appends each to that partition's open batch (the v2 record
format, :mod:`streaming.kafka.record_batch`; byte for byte what kafka-python's
``DefaultRecordBatchBuilder`` writes), and sends the sealed batches with
kafka-python's own network client and ``ProduceRequest``.

Delivery is that of Kafka's idempotent producer (``acks=all``):

* one producer id and epoch from ``InitProducerId``; per partition, each batch
  carries the sequence number of its first record;
* at most one batch per partition is in flight: the next one is sent only
  after the broker acknowledged the one before, so a partition receives its
  batches in the order they were sealed, and a retry (a connection lost, a
  request timed out, a retriable broker error) resends the *same* bytes with
  the same sequence, which the broker appends once (a copy it already has
  is answered as a duplicate, with its offset);
* a batch that cannot be delivered (a non-retriable error, or no
  acknowledgement within ``delivery_timeout``) fails its partition: its
  records and every later record for that partition count as failed, and
  :attr:`BatchProducer.first_error` says why. Nothing is dropped silently.

Progress for a caller's checkpoint comes from :attr:`BatchProducer.acked_offsets`:
the offset after the last acknowledged record of each partition. It only
covers records the broker acknowledged.

Everything runs on the caller's thread: :meth:`BatchProducer.send` drives the
network whenever it seals a batch, :meth:`BatchProducer.poll` and
:meth:`BatchProducer.flush` when the caller waits.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any

from streaming.kafka.record_batch import (
    OpenBatch,
    add_record,
    codec,
    encode_batch,
    encode_records,
    seal_records,
    varints,
)

_SEQ_LIMIT = 1 << 31  # sequence numbers wrap after Int32 max, as in Kafka


class _Batch:
    """A sealed batch: its bytes, sequence and delivery state."""

    __slots__ = ("partition", "payload", "count", "base_sequence", "created", "not_before")

    def __init__(self, partition: int, payload: bytes, count: int, base_sequence: int,
                 created: float) -> None:
        self.partition, self.payload, self.count = partition, payload, count
        self.base_sequence, self.created = base_sequence, created
        self.not_before = 0.0


class BatchProducer:
    """Publish records to known partitions of one topic; see the module doc.

    Build one with :meth:`connect`. ``client`` is a kafka-python network client
    (``kafka.net.compat.KafkaNetClient``) that knows the topic's metadata;
    tests pass a fake one.
    """

    def __init__(self, client: Any, topic: str, partitions: int, *, producer_id: int,
                 producer_epoch: int, batch_size: int = 256 * 1024, linger: float = 0.02,
                 compression: str | None = None,
                 delivery_timeout: float = 120.0, request_timeout: float = 30.0,
                 retry_backoff: float = 0.1, max_buffered: int = 16 * 1024 * 1024) -> None:
        if not 1 <= batch_size <= 1 << 20:
            raise ValueError(f"batch_size must be 1 byte to 1 MiB, got {batch_size}")
        self.client, self.topic, self.partitions = client, topic, partitions
        self.producer_id, self.producer_epoch = producer_id, producer_epoch
        self.batch_size, self.linger = batch_size, linger
        if compression is not None:
            codec(compression)  # known, before the first batch
        self.compression = compression
        self.delivery_timeout, self.request_timeout = delivery_timeout, request_timeout
        self.retry_backoff, self.max_buffered = retry_backoff, max_buffered
        self._open: list[OpenBatch | None] = [OpenBatch() for _ in range(partitions)]
        self._queue: list[collections.deque[_Batch]] = [collections.deque()
                                                         for _ in range(partitions)]
        self._in_flight = [False] * partitions
        self._next_seq = [0] * partitions
        self._tps = [_tp(topic, p) for p in range(partitions)]
        self._buffered = 0
        self._varints = varints()
        self._pushed_at = -math.inf
        self.acked_offsets: dict[int, int] = {}
        """Per partition, the offset after the last record the broker acknowledged."""
        self.acked_records = 0
        self.failed = 0
        """Records handed to :meth:`send` that will not be delivered."""
        self.first_error: str | None = None
        self.requests = 0
        self.retries = 0
        self.splits = 0

    # -- construction -----------------------------------------------------------
    @classmethod
    def connect(cls, bootstrap_servers: str, topic: str, partitions: int, *,
                client_id: str = "streamsketch-replay", timeout: float = 15.0,
                **options: Any) -> BatchProducer:
        """Connect, learn the topic's leaders and get a producer id.

        Raises:
            kafka.errors.KafkaError: no broker, no leaders or no producer id within
                ``timeout`` seconds.
        """
        import kafka.errors as errors
        from kafka.net.compat import KafkaNetClient
        from kafka.protocol.producer import InitProducerIdRequest

        request_timeout = options.pop("request_timeout", 30.0)
        client = KafkaNetClient(bootstrap_servers=bootstrap_servers, client_id=client_id,
                                request_timeout_ms=int(request_timeout * 1000),
                                max_in_flight_requests_per_connection=5)
        try:
            deadline = time.monotonic() + timeout
            client.get_broker_version(timeout_ms=int(timeout * 1000))
            client.cluster.add_topic(topic)
            while True:
                leaders = [client.cluster.leader_for_partition(tp) for tp in
                           (_tp(topic, p) for p in range(partitions))]
                if all(leader is not None and leader >= 0 for leader in leaders):
                    break
                if time.monotonic() > deadline:
                    raise errors.KafkaTimeoutError(f"no leader for every partition of {topic}")
                client.poll(timeout_ms=100, future=client.cluster.request_update())
            while True:
                node = client.least_loaded_node()
                try:
                    if node is None:
                        raise errors.NodeNotReadyError("no broker to ask for a producer id")
                    left = max(deadline - time.monotonic(), 0.1)
                    client.await_ready(node, timeout_ms=int(left * 1000))
                    response = client.send_and_receive(node, InitProducerIdRequest(
                        transactional_id=None, transaction_timeout_ms=60_000,
                        producer_id=-1, producer_epoch=-1, min_version=0, max_version=4),
                        timeout_ms=int(left * 1000))
                    error = errors.for_code(response.error_code)
                    if error is errors.NoError:
                        break
                    if not issubclass(error, errors.RetriableError):
                        raise error(f"InitProducerId: {error.__name__}")
                except errors.RetriableError:
                    if time.monotonic() > deadline:
                        raise
                if time.monotonic() > deadline:
                    raise errors.KafkaTimeoutError("no producer id within the timeout")
                client.poll(timeout_ms=100)
        except BaseException:
            client.close()
            raise
        return cls(client, topic, partitions, producer_id=response.producer_id,
                   producer_epoch=response.producer_epoch, request_timeout=request_timeout,
                   **options)

    # -- the hot path -------------------------------------------------------------
    def send(self, partition: int, key: bytes | None, value: bytes | None,
             timestamp_ms: int | None = None, _time_ns: Any = time.time_ns) -> None:
        """Append one record to ``partition``'s batch; its timestamp defaults to now."""
        b = self._open[partition]
        if b is None:  # the partition failed: counted, never silently dropped
            self.failed += 1
            return
        ts = _time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        if not add_record(b, ts, key, value, self.batch_size, self._varints):
            self._seal(partition)  # full: the record opens the next batch
            self._pump()
            b = self._open[partition]
            if b is None:
                self.failed += 1
                return
            add_record(b, ts, key, value, self.batch_size, self._varints)

    def send_arrays(self, partition: int, keys: Any, values: Any,
                    _time_ns: Any = time.time_ns) -> None:
        """Append records to ``partition`` (Arrow binary arrays of keys and values, one
        timestamp: now), encoded column by column (:func:`encode_records`) into batches
        of their own, after what :meth:`send` left open there."""
        if self._open[partition] is None:  # the partition failed
            self.failed += len(keys)
            return
        ts = _time_ns() // 1_000_000
        encoded = encode_records(keys, values, self.batch_size)
        if encoded is None:  # too long for the columns: one by one
            for key, value in zip(keys.to_pylist(), values.to_pylist(), strict=True):
                self.send(partition, key, value, ts)
            return
        self._seal(partition)
        now = time.monotonic()
        for records, count in encoded:
            seq = self._next_seq[partition]
            payload = seal_records(records, count, ts, ts, self.producer_id,
                                   self.producer_epoch, seq, self.compression)
            self._queue[partition].append(_Batch(partition, payload, count, seq, now))
            self._next_seq[partition] = (seq + count) % _SEQ_LIMIT
            self._buffered += len(payload)
        self._pump()

    def _seal(self, partition: int) -> None:
        """Queue ``partition``'s open batch (sent by the next :meth:`_pump`)."""
        b = self._open[partition]
        if b is None or not b.count:
            return
        seq = self._next_seq[partition]
        payload = b.seal(self.producer_id, self.producer_epoch, seq, self.compression)
        self._queue[partition].append(_Batch(partition, payload, b.count, seq, b.opened))
        self._next_seq[partition] = (seq + b.count) % _SEQ_LIMIT
        self._buffered += len(payload)
        self._open[partition] = OpenBatch()

    def _pump(self) -> None:
        """Send what is ready and handle answers, waiting only while too much is queued."""
        self._dispatch()
        self.client.poll(timeout_ms=0)
        while self._buffered > self.max_buffered:  # the broker is behind: wait for it
            self._wait(0.05)

    # -- the network ----------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> None:
        """Handle responses and send what is ready, waiting up to ``timeout`` seconds.

        An open batch is ready when its partition has nothing in flight and it
        is older than ``linger`` or was open at the last :meth:`push`.
        """
        self._wait(timeout)

    def push(self) -> None:
        """Have every record sent so far go out as soon as its partition is free.

        Batches of free partitions are handed to the client now (written by the
        next :meth:`poll`). A partition with a batch in flight keeps collecting
        records into its open batch until the broker answers, as Kafka's
        producer does: pushing often never turns one batch into many small ones.
        """
        self._pushed_at = time.monotonic()
        self._dispatch()

    def _wait(self, timeout: float) -> None:
        self._dispatch()
        self.client.poll(timeout_ms=int(timeout * 1000))
        self._expire()
        self._dispatch()

    def pending(self) -> int:
        """Records handed to :meth:`send` and neither acknowledged nor failed yet."""
        return sum(b.count for q in self._queue for b in q) + \
            sum(b.count for b in self._open if b is not None)

    def flush(self, timeout: float) -> bool:
        """Send everything and wait for the broker; True when nothing failed.

        What is not acknowledged within ``timeout`` seconds fails.
        """
        import kafka.errors as errors

        for p in range(self.partitions):
            self._seal(p)
        self._pump()
        deadline = time.monotonic() + timeout
        while any(self._queue):
            left = deadline - time.monotonic()
            if left <= 0:
                for p, queue in enumerate(self._queue):
                    if queue:
                        self._fail(p, errors.KafkaTimeoutError(
                            f"not acknowledged within {timeout:g} s of a flush"))
                break
            self._wait(min(left, 0.1))
        return not self.failed

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, then close the connections."""
        try:
            self.flush(timeout)
        finally:
            self.client.close()

    def _dispatch(self) -> None:
        """Send each partition's next batch whose predecessor was acknowledged."""
        from kafka.protocol.producer import ProduceRequest

        now = time.monotonic()
        by_node: dict[Any, list[_Batch]] = {}
        for p, queue in enumerate(self._queue):
            if self._in_flight[p]:
                continue
            if not queue:
                open_ = self._open[p]
                if open_ is None or not open_.count or \
                        (open_.opened > self._pushed_at and now - open_.opened < self.linger):
                    continue
                self._seal(p)
            if queue[0].not_before > now:
                continue
            node = self.client.cluster.leader_for_partition(self._tps[p])
            if node is None or node < 0:
                self.client.cluster.request_update()
                continue
            if not self.client.is_ready(node):
                self.client.maybe_connect(node)
                continue
            by_node.setdefault(node, []).append(queue[0])
        topic_cls = ProduceRequest.TopicProduceData
        part_cls = topic_cls.PartitionProduceData
        for node, batches in by_node.items():
            request = ProduceRequest(
                transactional_id=None, acks=-1, timeout_ms=int(self.request_timeout * 1000),
                topic_data=[topic_cls(name=self.topic, partition_data=[
                    part_cls(index=b.partition, records=b.payload) for b in batches])],
                min_version=3, max_version=9)
            for batch in batches:
                self._in_flight[batch.partition] = True
            self.requests += 1
            future = self.client.send(node, request)
            future.add_callback(self._on_response, batches)
            future.add_errback(self._on_failure, batches)

    def _on_response(self, batches: list[_Batch], response: Any) -> None:
        import kafka.errors as errors

        results = {pr.index: pr for tr in response.responses for pr in tr.partition_responses}
        for b in batches:
            pr = results.get(b.partition)
            if pr is None:
                self._retry(b, errors.KafkaError("no answer for the partition"), False)
                continue
            error = errors.for_code(pr.error_code)
            if error is errors.NoError or error is errors.DuplicateSequenceNumberError:
                self._acked(b, pr.base_offset)
            elif error in (errors.MessageSizeTooLargeError, errors.RecordListTooLargeError) \
                    and b.count > 1:
                self._split(b)
            else:
                message = getattr(pr, "error_message", None)
                exc = error(message) if message else error()
                self._retry(b, exc, issubclass(error, errors.InvalidMetadataError))

    def _split(self, b: _Batch) -> None:
        """Replace a batch the broker found too large by its two halves (same sequences)."""
        from kafka.record.default_records import DefaultRecordBatch

        queue = self._queue[b.partition]
        if not queue or queue[0] is not b:
            return
        records = [(r.timestamp, r.key, r.value) for r in DefaultRecordBatch(b.payload)]
        half = len(records) // 2
        queue.popleft()
        self._buffered -= len(b.payload)
        for part, seq in ((records[half:], (b.base_sequence + half) % _SEQ_LIMIT),
                          (records[:half], b.base_sequence)):
            payload = encode_batch(part, producer_id=self.producer_id,
                                   producer_epoch=self.producer_epoch, base_sequence=seq,
                                   compression=self.compression)
            queue.appendleft(_Batch(b.partition, payload, len(part), seq, b.created))
            self._buffered += len(payload)
        self._in_flight[b.partition] = False
        self.splits += 1

    def _on_failure(self, batches: list[_Batch], exc: BaseException) -> None:
        for b in batches:
            self._retry(b, exc, True)

    def _acked(self, b: _Batch, base_offset: int) -> None:
        queue = self._queue[b.partition]
        if not queue or queue[0] is not b:  # the partition failed meanwhile
            return
        queue.popleft()
        self._in_flight[b.partition] = False
        self._buffered -= len(b.payload)
        self.acked_records += b.count
        if base_offset >= 0:  # an old broker answers a duplicate without its offset
            self.acked_offsets[b.partition] = base_offset + b.count

    def _retry(self, b: _Batch, exc: BaseException, refresh: bool) -> None:
        import kafka.errors as errors

        queue = self._queue[b.partition]
        if not queue or queue[0] is not b:
            return
        self._in_flight[b.partition] = False
        if refresh:
            self.client.cluster.request_update()
        if not isinstance(exc, errors.RetriableError):
            self._fail(b.partition, exc)
            return
        b.not_before = time.monotonic() + self.retry_backoff
        self.retries += 1
        self._expire()

    def _expire(self) -> None:
        import kafka.errors as errors

        now = time.monotonic()
        for p, queue in enumerate(self._queue):
            if queue and not self._in_flight[p] and \
                    now - queue[0].created > self.delivery_timeout:
                self._fail(p, errors.KafkaTimeoutError(
                    f"not acknowledged within {self.delivery_timeout:g} s"))

    def _fail(self, partition: int, exc: BaseException) -> None:
        """Give up on ``partition``: its queued, open and later records fail."""
        queue = self._queue[partition]
        b = self._open[partition]
        self.failed += sum(x.count for x in queue) + (b.count if b is not None else 0)
        self._buffered -= sum(len(x.payload) for x in queue)
        queue.clear()
        self._open[partition] = None
        self._in_flight[partition] = False
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc} (partition {partition})"


def _tp(topic: str, partition: int) -> Any:
    from kafka.structs import TopicPartition

    return TopicPartition(topic, partition)


class Partitioner:
    """Kafka's default partition of a key (murmur2, cached); keyless records by line."""

    def __init__(self, partitions: int) -> None:
        from kafka.partitioner.default import murmur2

        self.n, self._murmur2 = partitions, murmur2
        self.known: dict[bytes, int] = {}
        """Keys seen so far and their partitions (a hot loop may look here first)."""

    def __call__(self, key: bytes | None, line: int) -> int:
        if key is None:
            return line % self.n
        p = self.known.get(key)
        if p is None:
            p = (self._murmur2(key) & 0x7FFFFFFF) % self.n
            if len(self.known) < 1_000_000:
                self.known[key] = p
        return p


def murmur2_rows(data: Any) -> Any:
    """Kafka's murmur2 (as its default partitioner hashes keys) of each row of ``data``, a
    2-D uint8 array of keys of one length: many keys at once, with numpy."""
    import numpy as np

    n, length = data.shape
    m, mask = np.uint64(0x5BD1E995), np.uint64(0xFFFFFFFF)
    h = np.full(n, (0x9747B28C ^ length) & 0xFFFFFFFF, dtype=np.uint64)
    words = data[:, : length // 4 * 4].astype(np.uint64)
    for i in range(length // 4):
        k = (words[:, 4 * i] | words[:, 4 * i + 1] << np.uint64(8)
             | words[:, 4 * i + 2] << np.uint64(16) | words[:, 4 * i + 3] << np.uint64(24))
        k = (k * m) & mask
        k ^= k >> np.uint64(24)
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail, base = length % 4, length // 4 * 4
    if tail >= 3:
        h ^= data[:, base + 2].astype(np.uint64) << np.uint64(16)
    if tail >= 2:
        h ^= data[:, base + 1].astype(np.uint64) << np.uint64(8)
    if tail >= 1:
        h ^= data[:, base].astype(np.uint64)
        h = (h * m) & mask
    h ^= h >> np.uint64(13)
    h = (h * m) & mask
    h ^= h >> np.uint64(15)
    return h
