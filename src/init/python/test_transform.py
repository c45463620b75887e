from sluice_fn.testing import run_records
from transform import transform


def test_rows_and_rejections():
    result = run_records(transform, [
        {"user": "7", "url": "/a", "ts": "2026-11-27T10:15:00Z"},
        {"user": "x", "url": "/b", "ts": "2026-11-27T10:16:00Z"},
    ])
    assert result.rows == [{"user_id": 7, "url": "/a", "action": "view", "event_date": "2026-11-27"}]
    assert result.errors == {1: "ValueError: invalid literal for int() with base 10: 'x'"}
