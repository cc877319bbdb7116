"""streaming.kafka.batch_producer: the record-batch encoder and the idempotent batch producer.

Unit tests run the producer against a fake broker that keeps each partition's
log and idempotence state the way Kafka does (sequence numbers, the last five
batches remembered for duplicates), and injects faults. The integration tests
publish to a real broker and read the topic back.
"""

from __future__ import annotations

import collections
import random
import time
from types import SimpleNamespace

import pytest
from kafka.errors import KafkaConnectionError
from kafka.future import Future
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from streaming.kafka.batch_producer import BatchProducer
from streaming.kafka.record_batch import encode_batch

T0 = 1_795_428_000_000


def _random_records(rng: random.Random, n: int) -> list[tuple[int, bytes | None, bytes | None]]:
    out = []
    for _ in range(n):
        key = None if rng.random() < 0.1 else rng.randbytes(rng.choice([0, 1, 7, 130]))
        size = rng.choice([0, 1, 63, 64, 200, 8191, 8192, 70_000 if rng.random() < 0.02 else 9])
        value = None if rng.random() < 0.1 else rng.randbytes(size)
        out.append((T0 + rng.randint(-50, 5000), key, value))
    return out


# -- the encoder -------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_a_batch_is_byte_for_byte_what_kafka_python_builds(seed):
    rng = random.Random(seed)
    records = _random_records(rng, rng.randint(1, 400))
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=4242, producer_epoch=3,
                                        base_sequence=seed * 1000, batch_size=1 << 30)
    for offset, (ts, key, value) in enumerate(records):
        assert builder.append(offset, ts, key, value, []) is not None
    ours = encode_batch(records, producer_id=4242, producer_epoch=3, base_sequence=seed * 1000)
    assert ours == bytes(builder.build())
    batch = DefaultRecordBatch(ours)
    assert batch.validate_crc() and batch.producer_id == 4242 and batch.base_sequence == seed * 1000
    assert [(r.timestamp, r.key, r.value) for r in batch] == records


def test_a_compressed_batch_reads_back_and_an_empty_one_is_refused():
    records = [(T0 + i, b"k%d" % (i % 3), b'{"n": %d, "pad": "xxxxxxxxxxxxxxxx"}' % i)
               for i in range(300)]
    data = encode_batch(records, producer_id=1, producer_epoch=0, base_sequence=0,
                        compression="gzip")
    batch = DefaultRecordBatch(data)
    assert batch.compression_type == 1 and batch.validate_crc()
    assert [(r.timestamp, r.key, r.value) for r in batch] == records
    assert len(data) < len(encode_batch(records)) / 3
    with pytest.raises(ValueError, match="at least one"):
        encode_batch([])
    with pytest.raises(ValueError, match="unknown compression"):
        encode_batch(records, compression="brotli")


# -- the producer against a fake broker ----------------------------------------------
NO_ERROR, CORRUPT, NOT_LEADER, TOO_LARGE, OUT_OF_ORDER = 0, 2, 6, 10, 45


class FakeBroker:
    """One broker leading every partition, answering produce requests on ``poll``.

    ``faults`` maps a request number (1-based) to what happens to it:
    ``"disconnect"`` (nothing appended, the request fails), ``"lost_ack"``
    (appended, then the connection drops before the answer) or an error code
    for every partition of the request. Batches over ``max_batch`` bytes are
    answered MESSAGE_TOO_LARGE, like a topic's ``max.message.bytes``.
    """

    def __init__(self, partitions: int, faults: dict[int, object] | None = None,
                 max_batch: int = 1 << 30) -> None:
        self.cluster = SimpleNamespace(leader_for_partition=lambda tp: 0,
                                       request_update=lambda: Future())
        self.ready = True
        self.faults = faults or {}
        self.max_batch = max_batch
        self.logs: dict[int, list[tuple[int, bytes | None, bytes | None]]] = \
            {p: [] for p in range(partitions)}
        self.next_seq = dict.fromkeys(range(partitions), 0)
        self.recent: dict[int, collections.deque] = {p: collections.deque(maxlen=5)
                                                     for p in range(partitions)}
        self.outstanding: list[tuple[object, Future]] = []
        self.payloads: list[tuple[int, bytes]] = []  # (partition, batch) as received
        self.count = 0
        self.closed = False

    def is_ready(self, node: int) -> bool:
        return self.ready

    def maybe_connect(self, node: int) -> None:
        pass

    def send(self, node: int, request) -> Future:
        in_flight = {pd.index for r, _ in self.outstanding for td in r.topic_data
                     for pd in td.partition_data}
        sent = {pd.index for td in request.topic_data for pd in td.partition_data}
        assert not in_flight & sent, "two batches of one partition in flight"
        future = Future()
        self.outstanding.append((request, future))
        return future

    def poll(self, timeout_ms=None, future=None) -> None:
        todo, self.outstanding = self.outstanding, []
        for request, future in todo:
            self.count += 1
            fault = self.faults.get(self.count)
            if fault == "disconnect":
                future.failure(KafkaConnectionError("connection reset"))
                continue
            answers = []
            for td in request.topic_data:
                for pd in td.partition_data:
                    self.payloads.append((pd.index, pd.records))
                    code, offset = self._append(pd.index, pd.records, fault)
                    answers.append(SimpleNamespace(index=pd.index, error_code=code,
                                                   base_offset=offset, error_message=None))
            if fault == "lost_ack":
                future.failure(KafkaConnectionError("connection reset"))
            else:
                future.success(SimpleNamespace(responses=[SimpleNamespace(
                    name=request.topic_data[0].name, partition_responses=answers)]))

    def _append(self, p: int, data: bytes, fault: object) -> tuple[int, int]:
        if isinstance(fault, int):
            return fault, -1
        if len(data) > self.max_batch:
            return TOO_LARGE, -1
        batch = DefaultRecordBatch(data)
        assert batch.validate_crc()
        records = [(r.timestamp, r.key, r.value) for r in batch]
        for seq, offset in self.recent[p]:
            if seq == batch.base_sequence:
                return NO_ERROR, offset  # a duplicate: its first append's offset
        if batch.base_sequence != self.next_seq[p]:
            return OUT_OF_ORDER, -1
        offset = len(self.logs[p])
        self.logs[p].extend(records)
        self.next_seq[p] = (self.next_seq[p] + len(records)) % 2**31
        self.recent[p].append((batch.base_sequence, offset))
        return NO_ERROR, offset

    def close(self) -> None:
        self.closed = True


def _producer(broker: FakeBroker, partitions: int = 2, **options) -> BatchProducer:
    options.setdefault("batch_size", 2000)
    options.setdefault("retry_backoff", 0.0)
    return BatchProducer(broker, "t", partitions, producer_id=77, producer_epoch=1, **options)


def _send(producer: BatchProducer, n: int, partitions: int = 2, start: int = 0,
          t0: int = T0) -> dict:
    """Send ``n`` records round the partitions; what each partition should hold."""
    expected: dict[int, list] = collections.defaultdict(list)
    for i in range(start, start + n):
        p, rec = i % partitions, (t0 + i, b"k%d" % (i % 11), b"value-%06d" % i + b"." * 40)
        producer.send(p, rec[1], rec[2], timestamp_ms=rec[0])
        expected[p].append(rec)
    return expected


def test_every_record_lands_once_in_order_with_contiguous_sequences():
    broker = FakeBroker(3)
    producer = _producer(broker, partitions=3)
    expected = _send(producer, 1000, partitions=3)
    assert producer.flush(5) and producer.failed == 0
    assert broker.logs == expected
    assert producer.acked_offsets == {p: len(v) for p, v in expected.items()}
    assert producer.acked_records == 1000 and producer.pending() == 0
    for p in range(3):
        batches = [DefaultRecordBatch(d) for q, d in broker.payloads if q == p]
        sizes = [len(list(DefaultRecordBatch(d))) for q, d in broker.payloads if q == p]
        assert len(batches) > 3 and all(len(d) <= 2000 for q, d in broker.payloads)
        assert [b.base_sequence for b in batches] == [sum(sizes[:i]) for i in range(len(sizes))]
        assert {(b.producer_id, b.producer_epoch) for b in batches} == {(77, 1)}


@pytest.mark.parametrize("fault", ["lost_ack", "disconnect", NOT_LEADER])
def test_a_retried_batch_is_resent_unchanged_and_lands_once(fault):
    broker = FakeBroker(2, faults={2: fault, 3: fault})
    producer = _producer(broker)
    expected = _send(producer, 600)
    assert producer.flush(5) and producer.failed == 0
    assert broker.logs == expected
    assert producer.retries >= 2  # a batch per partition in each failed request
    # What the broker saw twice is the first sending's bytes (same sequence numbers).
    seen = collections.Counter(d for _, d in broker.payloads)
    assert sum(c - 1 for c in seen.values()) == \
        (producer.retries if fault != "disconnect" else 0)


def test_a_batch_over_the_broker_limit_is_split_keeping_order_and_sequences():
    broker = FakeBroker(2, max_batch=700)
    producer = _producer(broker, batch_size=4000)
    expected = _send(producer, 500)
    assert producer.flush(5) and producer.failed == 0
    assert broker.logs == expected and producer.splits > 0


def test_a_non_retriable_error_fails_the_partition_and_counts_every_record():
    broker = FakeBroker(2)
    producer = _producer(broker)
    _send(producer, 100)
    assert producer.flush(5)
    landed = {p: list(v) for p, v in broker.logs.items()}
    acked = (dict(producer.acked_offsets), producer.acked_records)
    assert acked == ({0: 50, 1: 50}, 100)
    broker.faults = {broker.count + 1: CORRUPT}
    sent = _send(producer, 30, start=100)  # 15 per partition: one batch each
    assert not producer.flush(5)
    assert producer.failed == sum(map(len, sent.values())) == 30  # both were in the request
    assert "CorruptRecordError" in producer.first_error
    producer.send(0, b"k", b"later")
    producer.send(1, b"k", b"later")
    assert producer.failed == 32 and broker.logs == landed
    # nothing failed is reported as delivered: a caller's checkpoint stays where it was
    assert (producer.acked_offsets, producer.acked_records) == acked


def test_an_error_in_one_partition_leaves_the_other_delivering():
    broker = FakeBroker(2, max_batch=300)
    producer = _producer(broker)
    for i in range(20):
        producer.send(1, b"k", b"small-%d" % i, timestamp_ms=T0)
    producer.send(0, b"k", b"x" * 1000, timestamp_ms=T0)  # one record over the limit
    producer.send(0, b"k", b"after", timestamp_ms=T0)
    assert not producer.flush(5)
    assert producer.failed == 2 and "MessageSizeTooLargeError" in producer.first_error
    assert "partition 0" in producer.first_error
    assert [v for _, _, v in broker.logs[1]] == [b"small-%d" % i for i in range(20)]
    assert broker.logs[0] == [] and producer.acked_offsets == {1: 20}


def test_what_is_not_acknowledged_by_the_deadline_fails():
    broker = FakeBroker(2)
    broker.ready = False
    producer = _producer(broker)
    _send(producer, 50)
    t0 = time.monotonic()
    assert not producer.flush(0.3)
    assert 0.25 < time.monotonic() - t0 < 3
    assert producer.failed == 50 and "KafkaTimeoutError" in producer.first_error
    assert producer.acked_offsets == {} and broker.logs == {0: [], 1: []}


def test_a_lingering_batch_goes_out_on_poll_and_close_flushes():
    broker = FakeBroker(1)
    producer = _producer(broker, partitions=1, linger=0.05)
    producer.send(0, b"k", b"v", timestamp_ms=T0)
    producer.poll()
    assert broker.payloads == []  # younger than linger
    time.sleep(0.06)
    producer.poll()
    assert broker.logs[0] == [(T0, b"k", b"v")]
    producer.send(0, None, None, timestamp_ms=T0 + 1)
    producer.close()
    assert broker.logs[0][-1] == (T0 + 1, None, None) and broker.closed


def test_a_push_while_the_partition_is_busy_collects_into_one_batch():
    broker = FakeBroker(1)
    producer = _producer(broker, partitions=1, linger=60.0)
    producer.send(0, b"k", b"first", timestamp_ms=T0)
    producer.push()  # the partition is free: out at once
    assert len(broker.outstanding) == 1
    for i in range(3):  # a batch is in flight: these wait in one open batch
        producer.send(0, b"k", b"next-%d" % i, timestamp_ms=T0)
        producer.push()
    assert len(broker.outstanding) == 1
    producer.poll()  # the answer comes; the pushed records go together
    producer.poll()
    assert [len(list(DefaultRecordBatch(d))) for _, d in broker.payloads] == [1, 3]
    assert [v for _, _, v in broker.logs[0]] == [b"first", b"next-0", b"next-1", b"next-2"]
    producer.send(0, b"k", b"not pushed", timestamp_ms=T0)
    producer.poll()
    assert len(broker.payloads) == 2  # neither pushed nor older than linger


def test_sequence_numbers_wrap_after_int32_max():
    broker = FakeBroker(1)
    producer = _producer(broker, partitions=1)
    producer._next_seq[0] = broker.next_seq[0] = 2**31 - 5
    _send(producer, 200, partitions=1)
    assert producer.flush(5)
    sequences = [DefaultRecordBatch(d).base_sequence for _, d in broker.payloads]
    assert sequences[0] == 2**31 - 5 and sequences[1] < 1000  # wrapped inside the first


def test_records_default_to_the_send_time():
    broker = FakeBroker(1)
    producer = _producer(broker, partitions=1)
    before = time.time_ns() // 1_000_000
    producer.send(0, b"k", b"v")
    after = time.time_ns() // 1_000_000
    assert producer.flush(5)
    assert before <= broker.logs[0][0][0] <= after


# -- against a real broker ----------------------------------------------------------
def _create(kafka, topic: str, partitions: int, **configs: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "configs": configs}},
                            wait_for_metadata=True)
    finally:
        admin.close()


def _read_back(kafka, topic: str, partitions: int, expected: int) -> dict[int, list]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    got: dict[int, list] = collections.defaultdict(list)
    deadline = time.monotonic() + 60
    try:
        while sum(map(len, got.values())) < expected and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500).items():
                got[tp.partition].extend(batch)
        for tp, batch in consumer.poll(timeout_ms=1000).items():  # anything beyond?
            got[tp.partition].extend(batch)
    finally:
        consumer.close()
    return got


@pytest.mark.integration
def test_records_land_once_in_order_with_their_keys_and_timestamps(kafka, topic_name):
    _create(kafka, topic_name, 3)
    producer = BatchProducer.connect(kafka.bootstrap_servers, topic_name, 3, batch_size=16_384)
    rng = random.Random(3)
    expected: dict[int, list] = collections.defaultdict(list)
    start = time.time_ns() // 1_000_000 - 3_600_000  # the broker refuses far-off times
    try:
        for i in range(20_000):
            key = None if i % 97 == 0 else b"user-%d" % rng.randrange(500)
            value = None if i % 101 == 0 else b'{"i": %d, "pad": "%s"}' % (i, b"x" * (i % 300))
            p, ts = i % 3, start + i // 7
            producer.send(p, key, value, timestamp_ms=ts)
            expected[p].append((key, value, ts))
        assert producer.flush(60) and producer.failed == 0 and producer.first_error is None
    finally:
        producer.close()
    got = _read_back(kafka, topic_name, 3, 20_000)
    for p in range(3):
        assert [(m.key, m.value, m.timestamp) for m in got[p]] == expected[p]
        assert [m.offset for m in got[p]] == list(range(len(expected[p])))
        assert producer.acked_offsets[p] == len(expected[p])
    assert producer.requests < 20_000 / 20  # batches, not records


@pytest.mark.integration
def test_a_record_over_the_topic_limit_fails_loudly_and_the_rest_is_split_and_lands(
        kafka, topic_name):
    _create(kafka, topic_name, 2, **{"max.message.bytes": "4000"})
    producer = BatchProducer.connect(kafka.bootstrap_servers, topic_name, 2, batch_size=64_000)
    small = [b"small-%04d" % i + b"." * 90 for i in range(300)]
    try:
        for v in small:
            producer.send(1, b"k", v)
        for v in small[:50]:
            producer.send(0, b"k", v)
        assert producer.flush(30)  # 30 kB batches split until they fit in 4,000 bytes
        producer.send(0, b"k", b"x" * 10_000)
        producer.send(0, b"k", b"after the big one")
        assert not producer.flush(30)
    finally:
        producer.close()
    assert producer.failed == 2 and producer.splits > 0
    assert "MessageSizeTooLargeError" in producer.first_error
    got = _read_back(kafka, topic_name, 2, 350)
    assert [m.value for m in got[1]] == small and [m.value for m in got[0]] == small[:50]
    assert producer.acked_offsets == {0: 50, 1: 300}


@pytest.mark.integration
@pytest.mark.slow
def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(tmp_path):
    from streaming.kafka.broker import LocalKafka, free_port

    broker = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start(timeout=120)
    endpoint = SimpleNamespace(bootstrap_servers=broker.bootstrap_servers)
    producer = None
    try:
        _create(endpoint, "restart", 2)
        producer = BatchProducer.connect(broker.bootstrap_servers, "restart", 2,
                                         batch_size=8_192)
        now = time.time_ns() // 1_000_000 - 60_000
        expected = _send(producer, 3_000, t0=now)
        assert producer.flush(30)
        more = _send(producer, 3_000, start=3_000, t0=now)
        producer.poll()  # batches on the wire while the broker goes away
        assert broker.stop()
        producer.poll(0.5)  # the connection drops: retried, not failed
        broker.start(timeout=120)
        rest = _send(producer, 3_000, start=6_000, t0=now)
        assert producer.flush(120), producer.first_error
        assert producer.retries > 0 and producer.failed == 0
        got = _read_back(endpoint, "restart", 2, 9_000)
    finally:
        if producer is not None:
            producer.close(timeout=1)
        broker.stop()
    for p in range(2):
        want = expected[p] + more[p] + rest[p]
        assert [(m.key, m.value) for m in got[p]] == [(k, v) for _, k, v in want]


# -- many records at once -------------------------------------------------------------
def test_murmur2_of_many_keys_is_kafka_s():
    import random

    import numpy as np
    from kafka.partitioner.default import murmur2

    from streaming.kafka.batch_producer import murmur2_rows

    rng = random.Random(3)
    for length in range(20):
        keys = [bytes(rng.randrange(256) for _ in range(length)) for _ in range(200)]
        rows = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(200, length)
        assert murmur2_rows(rows).tolist() == [murmur2(k) for k in keys], length


@pytest.mark.parametrize("seed", range(12))
def test_records_encoded_by_column_decode_to_themselves_within_the_limit(seed):
    import random

    import pyarrow as pa
    from kafka.record.default_records import DefaultRecordBatch

    from streaming.kafka.record_batch import (
        OpenBatch,
        add_record,
        encode_records,
        seal_records,
        varints,
    )

    rng = random.Random(seed)
    n = rng.randint(1, 3000)
    keys = [None if rng.random() < 0.1 else rng.randbytes(rng.randint(0, 20)) for _ in range(n)]
    values = [None if rng.random() < 0.1 else rng.randbytes(rng.randint(0, rng.choice(
        [50, 300, 2000]))) for _ in range(n)]
    limit = rng.choice([1000, 20_000, 262_144])
    encoded = encode_records(pa.array(keys, pa.binary()), pa.array(values, pa.binary()), limit)
    assert encoded is not None
    decoded = []
    for records, count in encoded:
        payload = seal_records(records, count, 5, 5, 1, 0, 0)
        assert len(payload) <= limit or count == 1
        decoded += [(r.key, r.value, r.timestamp) for r in DefaultRecordBatch(payload)]
    assert decoded == [(k, v, 5) for k, v in zip(keys, values, strict=True)]
    # a batch cut where the record-by-record encoder cuts it has the same bytes
    first, count = encoded[0]
    b = OpenBatch()
    for k, v in zip(keys[:count], values[:count], strict=True):
        assert add_record(b, 5, k, v, 1 << 62, varints())
    assert b"".join(b.parts) == first


def test_keys_or_values_too_long_for_the_columns_are_left_to_one_by_one():
    import pyarrow as pa

    from streaming.kafka.record_batch import encode_records

    assert encode_records(pa.array([b"k"]), pa.array([b"x" * 70_000]), 1 << 20) is None
