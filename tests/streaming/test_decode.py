"""Decoding and validation of raw records, without a JVM: every reason, every type rule."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from streaming.engine.decode import Decoder
from streaming.engine.event_times import iso_block as _iso_block
from streaming.engine.event_times import iso_us as _iso_us
from streaming.engine.event_times import timestamp_text
from streaming.spec.model import EventsSpec

NOW_MS = int(dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC).timestamp() * 1000)
EVENTS = EventsSpec("ts", (("user", "string"), ("amount", "double"), ("n", "long"),
                           ("small", "int"), ("flag", "boolean")),
                    max_future_s=3600.0, max_record_bytes=200)


def us(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1_000_000)


def decode(values, events=EVENTS, **kw):
    return Decoder(events).decode(values, now_ms=NOW_MS, **kw)


@pytest.mark.parametrize(("value", "code"), [
    (None, "null_value"),
    (b'{"ts":"2026-11-23T10:00:00Z","user":"' + b"x" * 300 + b'"}', "too_large"),
    (b'{"ts":"2026-11-23T10:00:00Z","user":"caf\xe9"}', "invalid_utf8"),
    (b'', "invalid_json"),
    (b'{"ts":', "invalid_json"),
    (b'[1, 2]', "invalid_json"),
    (b'"text"', "invalid_json"),
    (b'{"ts":"2026-11-23T10:00:00Z","amount":"abc"}', "wrong_type"),
    (b'{"ts":"2026-11-23T10:00:00Z","amount":true}', "wrong_type"),
    (b'{"ts":"2026-11-23T10:00:00Z","n":1.5}', "wrong_type"),
    (b'{"ts":"2026-11-23T10:00:00Z","n":9223372036854775808}', "wrong_type"),
    (b'{"ts":"2026-11-23T10:00:00Z","small":2147483648}', "wrong_type"),
    (b'{"ts":"2026-11-23T10:00:00Z","flag":"maybe"}', "wrong_type"),
    (b'{"user":"a"}', "missing_time"),
    (b'{"ts":null}', "missing_time"),
    (b'{"ts":"23/11/2026 10:00:00"}', "bad_time"),
    (b'{"ts":"2026-13-45T25:61:00.000Z"}', "bad_time"),
    (b'{"ts":12345}', "bad_time"),
    (b'{"ts":"2026-11-23T14:00:00Z"}', "future_time"),
])
def test_each_reason(value, code):
    out = decode([value])
    assert out.ok.size == 0
    assert out.bad[0].split(":", 1)[0] == code


@pytest.mark.parametrize("columns", [None, {"amount"}, set()])
@pytest.mark.parametrize("as_arrow", [False, True])
def test_the_reasons_do_not_depend_on_the_fields_returned(columns, as_arrow):
    # the decoder skips the string fields it does not return; what it skips must
    # still be UTF-8, and its other fields still of their type
    t = b'"ts":"2026-11-23T10:00:00Z"'
    values = [b'{' + t + b',"user":"caf\xe9"}',        # bad bytes in a string field
              b'{' + t + b',"other":"caf\xe9"}',       # ... in a field not declared
              b'{' + t + b',"user":{"a":[1, "b"]}}',    # any JSON is a string field's text
              b'{' + t + b',"n":"x"}',                  # a long not returned, still checked
              b'{' + t + b',"user":"ok","amount":2.5}',
              None]
    decoder = Decoder(EVENTS, columns=columns)
    out = decoder.decode(pa.array(values, pa.binary()) if as_arrow else values, now_ms=NOW_MS)
    assert {i: r.split(":", 1)[0] for i, r in out.bad.items()} == {
        0: "invalid_utf8", 1: "invalid_utf8", 3: "wrong_type", 5: "null_value"}
    assert out.ok.tolist() == [2, 4]
    if columns is None or "amount" in columns:
        assert out.columns["amount"].to_pylist() == [None, 2.5]
    if columns is None:
        assert out.columns["user"].to_pylist() == ['{"a":[1,"b"]}', "ok"]


def test_reason_texts_name_the_field_and_the_limit():
    out = decode([b'{"ts":"2026-11-23T10:00:00Z","amount":"abc"}', b'{}',
                  b'{"ts":"x"}', b'{"ts":"2026-11-23T10:00:00Z","user":"' + b"y" * 250 + b'"}'])
    assert out.bad[0] == "wrong_type: field amount is not double"
    assert out.bad[1] == "missing_time: no ts field"
    assert out.bad[2] == "bad_time: ts is not iso8601"
    assert out.bad[3].startswith("too_large: ") and out.bad[3].endswith(
        " bytes > max_record_bytes 200")


def test_valid_values_and_lenient_conversions():
    values = [
        b'{"ts":"2026-11-23T10:00:00.042Z","user":"u1","amount":12.5,"n":3,"small":-4,'
        b'"flag":true,"extra":{"ignored":1}}',
        b'{"ts":"2026-11-23T11:00:00+01:00","user":7,"amount":"2.25","n":"42","flag":"no"}',
        b'{"ts":"2026-11-23 10:30:00","user":{"a":[1,2]},"amount":3}',
        b'{"ts":"2026-11-23"}',
    ]
    out = decode(values)
    assert out.ok.tolist() == [0, 1, 2, 3] and not out.bad
    assert out.event_us.tolist() == [us("2026-11-23T10:00:00.042+00:00"),
                                     us("2026-11-23T10:00:00+00:00"),
                                     us("2026-11-23T10:30:00+00:00"),
                                     us("2026-11-23T00:00:00+00:00")]
    cols = {k: v.to_pylist() for k, v in out.columns.items()}
    assert cols["user"] == ["u1", "7", '{"a":[1,2]}', None]
    assert cols["amount"] == [12.5, 2.25, 3.0, None]
    assert cols["n"] == [3, 42, None, None]
    assert cols["small"] == [-4, None, None, None]
    assert cols["flag"] == [True, False, None, None]


def test_epoch_formats():
    for fmt, raw, expected in (("epoch_ms", b'{"ts":1795428000042}', 1795428000042000),
                               ("epoch_s", b'{"ts":"1795428000.5"}', 1795428000500000),
                               ("epoch_s", b'{"ts":1795428000}', 1795428000000000)):
        events = EventsSpec("ts", (("user", "string"),), time_format=fmt)
        out = decode([raw], events=events)
        assert out.event_us.tolist() == [expected], fmt
    events = EventsSpec("ts", (("user", "string"),), time_format="epoch_ms")
    assert decode([b'{"ts":"soon"}', b'{"ts":true}'], events=events).bad == {
        0: "bad_time: ts is not epoch_ms", 1: "bad_time: ts is not epoch_ms"}


def test_reader_reasons_win():
    out = decode([b'{"ts":"2026-11-23T10:00:00Z"}', b'{"ts":"2026-11-23T10:00:00Z"}'],
                 reader_reasons=[None, "truncated: the log ends"])
    assert out.ok.tolist() == [0] and out.bad == {1: "truncated: the log ends"}


@pytest.mark.parametrize("text", [
    "2026-11-23T10:00:00Z", "2026-11-23T10:00:00.5+05:30", "2026-11-23T10:00:00.123456-00:00",
    "2026-11-23T23:59:60Z", "2026-11-23T24:00:00Z", "2026-02-30T10:00:00Z",
    "2026-11-23T10:00:00.1234567Z", "2026-11-23T10:00", "2026-11-23 10:00:00Z", "x"])
def test_a_time_parses_the_same_alone_or_among_others(text):
    # Arrow parses common strings in blocks, Python the rest: the answer must not
    # depend on which did it
    alone = _iso_us(text)
    assert _iso_block([text]).to_pylist() == [alone]
    assert _iso_block([text, "2026-11-23T10:00:00Z", "not a time"])[0].as_py() == alone
    assert _iso_block(["2026-11-23T10:00:00Z"] * 3 + [text])[-1].as_py() == alone
    # among values that are no strings at all (a number, a boolean, none)
    mixed = [5, text, None, True, "2026-11-23T10:00:00Z", 1.5]
    assert _iso_block(mixed).to_pylist() == [None, alone, None, None,
                                             _iso_us("2026-11-23T10:00:00Z"), None]


def test_timestamp_text_matches_spark():
    assert timestamp_text(us("2026-11-23T10:03:00+00:00")) == "2026-11-23 10:03:00"
    assert timestamp_text(us("2026-11-23T10:03:00.120+00:00")) == "2026-11-23 10:03:00.12"


# -- nested fields, by path ---------------------------------------------------------
NESTED = EventsSpec("payload.created_at", (
    ("actor.login", "string"), ("repo.id", "long"), ("payload.size", "double"),
    ("payload.pr.merged", "boolean"), ("type", "string")), max_future_s=3600.0)
AT = '"payload":{"created_at":"2026-11-23T10:00:00Z"'


@pytest.mark.parametrize("as_arrow", [False, True])
def test_nested_paths_are_read_and_what_is_missing_on_the_way_is_null(as_arrow):
    values = [
        # everything there, and fields nobody declared around them
        b'{"type":"Push","actor":{"login":"ann","id":7},"repo":{"id":42,"name":"r"},'
        + AT.encode() + b',"size":3.5,"pr":{"merged":true}}}',
        # actor and pr missing altogether, repo null: nulls, not errors
        b'{"repo":null,' + AT.encode() + b'}}',
        # an empty object on the way
        b'{"actor":{},' + AT.encode() + b',"pr":{}}}',
    ]
    values = pa.array(values, pa.binary()) if as_arrow else values
    out = decode(values, NESTED)
    assert out.bad == {} and out.ok.tolist() == [0, 1, 2]
    assert out.columns["actor.login"].to_pylist() == ["ann", None, None]
    assert out.columns["repo.id"].to_pylist() == [42, None, None]
    assert out.columns["payload.size"].to_pylist() == [3.5, None, None]
    assert out.columns["payload.pr.merged"].to_pylist() == [True, None, None]
    assert out.columns["type"].to_pylist() == ["Push", None, None]
    assert out.event_us.tolist() == [us("2026-11-23T10:00:00+00:00")] * 3


@pytest.mark.parametrize(("value", "reason"), [
    (b'{"actor":"ann",' + AT.encode() + b'}}', "wrong_type: field actor.login: actor is not "
                                               "an object"),
    (b'{"repo":{"id":"x"},' + AT.encode() + b'}}', "wrong_type: field repo.id is not long"),
    (b'{"payload":{"created_at":"2026-11-23T10:00:00Z","pr":[1]}}',
     "wrong_type: field payload.pr.merged: payload.pr is not an object"),
    (b'{"payload":{}}', "missing_time: no payload.created_at field"),
    # wrong_type comes before missing_time (the module docstring's order)
    (b'{"payload":"2026-11-23T10:00:00Z"}',
     "wrong_type: field payload.size: payload is not an object"),
    (b'{"created_at":"2026-11-23T10:00:00Z"}', "missing_time: no payload.created_at field"),
])
def test_a_nested_field_of_another_shape_names_its_path(value, reason):
    out = decode([value], NESTED)
    assert out.ok.size == 0 and out.bad == {0: reason}


def test_nested_and_flat_records_decode_alike_in_one_batch():
    """A block the fast path refuses is redone record by record: the answers for the
    good records do not depend on their neighbours."""
    good = b'{"actor":{"login":"ann"},"repo":{"id":1},' + AT.encode() + b'}}'
    bad = b'{"actor":5,' + AT.encode() + b'}}'
    out = decode([good, bad, good] * 200, NESTED)
    assert len(out.bad) == 200 and out.ok.size == 400
    assert set(out.columns["actor.login"].to_pylist()) == {"ann"}
    assert set(out.columns["repo.id"].to_pylist()) == {1}


# -- list fields ---------------------------------------------------------------------
LISTS = EventsSpec("ts", (("labels", "list<string>"), ("sizes", "list<long>"),
                          ("scores", "list<double>")), max_future_s=3600.0)
T = '"ts":"2026-11-23T10:00:00Z"'


def test_a_list_field_is_an_array_of_its_element_type():
    values = [
        ('{' + T + ',"labels":["bug","ui"],"sizes":[1,2,3],"scores":[0.5,2]}').encode(),
        ('{' + T + ',"labels":[],"sizes":null}').encode(),  # empty, null, missing
        ('{' + T + ',"labels":["x",null,7,{"a":1}],"sizes":["4"]}').encode(),
    ]
    out = decode(values, LISTS)
    assert out.bad == {} and out.ok.tolist() == [0, 1, 2]
    assert out.columns["labels"].type == pa.list_(pa.string())
    assert out.columns["labels"].to_pylist() == [["bug", "ui"], [], ["x", None, "7",
                                                                     '{"a":1}']]
    assert out.columns["sizes"].to_pylist() == [[1, 2, 3], None, [4]]
    assert out.columns["scores"].to_pylist() == [[0.5, 2.0], None, None]


@pytest.mark.parametrize(("value", "field"), [
    (',"labels":"bug"', "labels"), (',"sizes":[1,"x"]', "sizes"),
    (',"sizes":[9223372036854775808]', "sizes"), (',"scores":{"a":1}', "scores"),
    (',"sizes":[1.5]', "sizes")])
def test_a_list_of_another_shape_is_wrong_type(value, field):
    out = decode([('{' + T + value + '}').encode()], LISTS)
    assert out.bad == {0: f"wrong_type: field {field} is not {dict(LISTS.fields)[field]}"}
