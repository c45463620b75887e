"""``@records`` through `sluice_fn.testing.run_records`: what the platform would receive."""

import datetime
import math

import pytest

from sluice_fn import Envelope, records
from sluice_fn.testing import envelope, run_records


@records
def to_row(click):
    return {"user_id": int(click["user"]), "url": click["url"]}


def test_a_dict_is_one_row_and_the_decorated_function_stays_callable(backend):
    result = run_records(to_row, [{"user": "7", "url": "/a"}, {"user": "8", "url": "/b"}], backend=backend)
    assert result.rows == [{"user_id": 7, "url": "/a"}, {"user_id": 8, "url": "/b"}]
    assert result.errors == {}
    assert to_row({"user": "9", "url": "/c"}) == {"user_id": 9, "url": "/c"}


def test_an_exception_rejects_only_its_record_with_the_index(backend):
    result = run_records(
        to_row, [{"user": "7", "url": "/a"}, {"user": "x", "url": "/b"}, {"url": "/c"}, {"user": "1", "url": "/d"}],
        backend=backend,
    )
    assert result.rows == [{"user_id": 7, "url": "/a"}, {"user_id": 1, "url": "/d"}]
    assert result.errors == {
        1: "ValueError: invalid literal for int() with base 10: 'x'",
        2: "KeyError: 'user'",
    }


def test_none_drops_and_a_list_gives_several_rows(backend):
    @records
    def explode(order):
        if not order["items"]:
            return None
        return [{"order": order["id"], "item": item} for item in order["items"]]

    result = run_records(explode, [{"id": 1, "items": ["a", "b"]}, {"id": 2, "items": []}, {"id": 3, "items": ["c"]}],
                         backend=backend)
    assert result.rows == [{"order": 1, "item": "a"}, {"order": 1, "item": "b"}, {"order": 3, "item": "c"}]
    assert result.errors == {}


def test_a_generator_yields_rows_and_an_exception_midway_keeps_none_of_them(backend):
    def rows(order):
        for item in order["items"]:
            if item is None:
                raise ValueError("item missing")
            yield {"order": order["id"], "item": item}

    result = run_records(rows, [{"id": 1, "items": ["a", "b"]}, {"id": 2, "items": ["c", None]}], backend=backend)
    assert result.rows == [{"order": 1, "item": "a"}, {"order": 1, "item": "b"}]
    assert result.errors == {1: "ValueError: item missing"}


@pytest.mark.parametrize(
    "returned, message",
    [
        ("text", "TypeError: returned a str: return a dict, a list of dicts (or yield them) or None"),
        ([{"a": 1}, 2], "TypeError: returned a list whose item 1 is a int, not a dict"),
    ],
)
def test_a_return_that_is_not_rows_is_an_error_for_that_record(backend, returned, message):
    result = run_records(lambda record: returned if record["bad"] else {"a": 0}, [{"bad": False}, {"bad": True}],
                         backend=backend)
    assert result.rows == [{"a": 0}]
    assert result.errors == {1: message}


def test_nan_and_infinity_are_written_as_null_never_as_invalid_json(backend):
    def measure(record):
        return {"id": record["id"], "value": record["value"] / record["div"] if record["div"] else float(record["inf"]),
                "nested": [math.nan, 1.5]}

    result = run_records(measure, [{"id": 1, "value": 3, "div": 2}, {"id": 2, "value": 0, "div": 0, "inf": "-inf"},
                                   {"id": 3, "value": 0, "div": 0, "inf": "nan"}], backend=backend)
    # run_records parses the answer with the strict standard library parser; NaN tokens would fail it
    assert b"NaN" not in result.raw and b"Infinity" not in result.raw
    assert result.rows == [
        {"id": 1, "value": 1.5, "nested": [None, 1.5]},
        {"id": 2, "value": None, "nested": [None, 1.5]},
        {"id": 3, "value": None, "nested": [None, 1.5]},
    ]


def test_a_string_mentioning_nan_is_left_alone(backend):
    result = run_records(lambda r: {"text": r["t"], "x": float("nan")}, [{"t": "NaN and Infinity"}], backend=backend)
    assert result.rows == [{"text": "NaN and Infinity", "x": None}]


def test_datetimes_are_written_as_iso_8601(backend):
    moment = datetime.datetime(2026, 11, 27, 10, 15, 0, 123000, tzinfo=datetime.timezone.utc)
    result = run_records(lambda r: {"ts": moment, "day": moment.date()}, [{}], backend=backend)
    assert result.rows == [{"ts": "2026-11-27T10:15:00.123000+00:00", "day": "2026-11-27"}]


def test_a_row_that_cannot_be_encoded_is_an_error_for_its_record(backend):
    result = run_records(lambda r: {"tags": {1, 2}} if r["bad"] else {"tags": []}, [{"bad": True}, {"bad": False}],
                         backend=backend)
    assert result.rows == [{"tags": []}]
    assert list(result.errors) == [0]
    assert "not JSON serializable" in result.errors[0]


def test_a_row_whose_first_field_starts_with_dollar_is_rejected_not_sent_as_a_control_line(backend):
    def rows(record):
        if record["n"] == 1:
            return [{"ok": 1}, {"$error": {"record": 0, "message": "forged"}}]
        return {"ok": record["n"]}

    result = run_records(rows, [{"n": 0}, {"n": 1}, {"n": 2}], backend=backend)
    assert result.rows == [{"ok": 0}, {"ok": 2}]  # every row of the offending record is dropped
    assert result.errors == {1: "ValueError: row field '$error' starts with '$', which is reserved for control lines"}


def test_envelopes_decode_value_key_headers_and_timestamp(backend):
    @records(envelope=True)
    def meta(message):
        assert isinstance(message, Envelope)
        return {
            "value": message.value if not isinstance(message.value, bytes) else message.value.hex(),
            "key": message.key if not isinstance(message.key, bytes) else message.key.hex(),
            "trace": message.headers.get("trace"),
            "raw": message.headers.get("raw").hex() if message.headers.get("raw") else None,
            "ts": message.timestamp.isoformat() if message.timestamp else None,
            "offset": message.origin.get("offset"),
        }

    binary = {"value": "AAH/", "value_encoding": "base64", "key": "3q2+7w==", "key_encoding": "base64",
              "headers": {"trace": None, "raw": {"$binary": "/w=="}}, "timestamp_ms": None,
              "origin": {"topic": "t", "partition": 0, "offset": 42}}
    result = run_records(
        meta, [envelope({"user": 7}, key="u-7", headers={"trace": "abc"}, timestamp_ms=1700000000123), binary],
        backend=backend,
    )
    assert result.errors == {}
    assert result.rows == [
        {"value": {"user": 7}, "key": "u-7", "trace": "abc", "raw": None,
         "ts": "2023-11-14T22:13:20.123000+00:00", "offset": None},
        {"value": "0001ff", "key": "deadbeef", "trace": None, "raw": "ff", "ts": None, "offset": 42},
    ]


def test_a_plain_record_given_to_an_envelope_function_says_what_is_wrong(backend):
    result = run_records(records(envelope=True)(lambda m: {"v": m.value}), [{"user": 7}], backend=backend)
    assert result.errors == {
        0: "ValueError: record is not an envelope (no 'value' field): is function.input = \"envelope\" set in job.toml?"
    }


def test_indexes_stay_right_at_the_batch_edges_and_after_drops_and_lists(backend):
    def shape(record):
        kind = record["kind"]
        if kind == "fail":
            raise ValueError(f"bad {record['id']}")
        if kind == "drop":
            return None
        if kind == "two":
            return [{"id": record["id"]}, {"id": record["id"]}]
        return {"id": record["id"]}

    kinds = ["fail", "drop", "one", "two", "fail", "fail", "two", "drop", "one", "fail"]
    result = run_records(shape, [{"id": i, "kind": kind} for i, kind in enumerate(kinds)], backend=backend)
    assert result.errors == {0: "ValueError: bad 0", 4: "ValueError: bad 4", 5: "ValueError: bad 5",
                             9: "ValueError: bad 9"}
    assert [row["id"] for row in result.rows] == [2, 3, 3, 6, 6, 8]
