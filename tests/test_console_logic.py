"""The console's plain parts, without Ray: the expiring cache on a fake clock, rates from
sampled counters, the monitor loop surviving failures, charts, the JSON record codec
(hypothesis: any bytes survive), Basic credentials, CSRF checks and error mapping."""

from __future__ import annotations

import base64
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ray_broker import errors
from ray_broker.console.auth import ConsoleSession, check_csrf, credentials
from ray_broker.console.charts import chart, rate_text
from ray_broker.console.expiring_cache import ExpiringCache
from ray_broker.console.history import History
from ray_broker.console.http_errors import error_body, headers_of, status_of
from ray_broker.console.monitor import Monitor, Snapshot, counters
from ray_broker.console.records_json import Data, ProduceRecord, encoded, send_arguments
from ray_broker.structs import GroupDescription, PartitionInfo, PartitionLag, TopicDescription
from ray_broker.views import bytes_view as shown


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cache_entries_expire_when_idle_and_the_evicted_are_closed():
    clock, closed = FakeClock(), []
    cache = ExpiringCache(capacity=2, idle_s=10, clock=clock, on_evict=closed.append)
    cache.put("a", "A")
    clock.now = 5
    assert cache.get("a") == "A"  # use renews
    clock.now = 14
    assert cache.get("a") == "A"
    clock.now = 25
    assert cache.get("a") is None and closed == ["A"]
    cache.put("b", "B")
    cache.put("c", "C")
    cache.get("b")
    cache.put("d", "D")  # over capacity: the least recently used ("c") goes
    assert cache.get("c") is None and closed[-1] == "C"
    assert cache.pop("b") == "B" and len(cache) == 1
    cache.clear()
    assert closed[-1] == "D" and len(cache) == 0


def test_a_failing_evict_callback_does_not_fail_the_caller():
    def explode(_value: str) -> None:
        raise RuntimeError("close failed")

    cache = ExpiringCache(capacity=1, idle_s=10, on_evict=explode)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("b") == "B"


def test_rates_come_from_counter_deltas_and_a_reset_is_no_negative_rate():
    history = History(keep=4)
    history.add(0.0, {"in:t": 0})
    history.add(2.0, {"in:t": 100})
    history.add(4.0, {"in:t": 300})
    assert history.rate("in:t") == 100.0
    history.add(6.0, {"in:t": 10})  # topic recreated
    assert history.rate_series("in:t") == [50.0, 100.0, 0.0]
    history.add(6.0, {"in:t": 99})  # the clock did not move: ignored
    history.add(8.0, {})
    assert len(history) == 4 and history.series("in:t") == [100, 300, 10, 0]
    assert History().rate("nothing") == 0.0


def test_counters_sum_high_watermarks_committed_offsets_and_lag():
    partition = lambda p, hw: PartitionInfo(p, "r0", "n", 0, ["r0"], ["r0"], 0, hw, hw)  # noqa: E731
    snapshot = Snapshot(
        topics={"t": TopicDescription("t", "id", {}, [partition(0, 10), partition(1, -1)])},
        groups={
            "g": GroupDescription(
                "g",
                "Stable",
                1,
                "range",
                [],
                [PartitionLag("t", 0, 4, 10, 6, None), PartitionLag("t", 1, None, 0, None, None)],
            )
        },
    )
    assert counters(snapshot) == {"in:t": 10.0, "lag:g": 6.0, "out:t": 4.0}


def test_the_monitor_loop_survives_failures_and_keeps_the_last_snapshot():
    calls = []
    good = Snapshot(taken_at_ms=1)
    done = threading.Event()

    def take() -> Snapshot:
        calls.append(1)
        if len(calls) == 2:
            raise errors.BrokerNotRunning("controller restarting")
        if len(calls) == 3:
            raise ValueError("a bug in a round")
        if len(calls) >= 4:
            done.set()
        return good

    monitor = Monitor(take, interval_s=0.01)
    monitor.start()
    assert done.wait(10)
    monitor.stop()
    assert monitor.snapshot is good and len(calls) >= 4


def test_charts_scale_to_the_largest_value_and_rates_read_short():
    drawn = chart({"in": [0, 5, 10], "out": [0, 0]}, width=100, height=50)
    assert drawn.top == 10 and [line.css_class for line in drawn.lines] == ["in", "out"]
    assert drawn.lines[0].points.split()[-1] == "100.0,2.0"
    assert chart({"in": []}).lines == [] and chart({"in": []}).top == 1.0
    assert [rate_text(v) for v in (0, 0.5, 12, 1234, 2_500_000)] == [
        "0",
        "0.5",
        "12",
        "1.2k",
        "2.5M",
    ]


@given(st.binary(max_size=300))
def test_any_bytes_survive_binary_in_and_shown_out(raw: bytes):
    sent = encoded(Data(type="BINARY", data=base64.b64encode(raw).decode()))
    assert sent == raw
    back = shown(raw)
    decoded = back["data"].encode() if back["type"] == "STRING" else base64.b64decode(back["data"])
    assert decoded == raw


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_json_data_is_sent_as_its_compact_encoding(value):
    import json

    sent = encoded(Data(type="JSON", data=value))
    assert sent is None if value is None else json.loads(sent) == value


def test_send_arguments_refuse_bad_base64_in_headers():
    record = ProduceRecord.model_validate({"headers": [{"name": "h", "value": "***"}]})
    with pytest.raises(errors.InvalidRequest) as refused:
        send_arguments(record)
    assert refused.value.status == 422
    ok = ProduceRecord.model_validate(
        {"partition_id": 1, "priority": 3, "headers": [{"name": "h", "value": "aGk="}]}
    )
    assert send_arguments(ok)["headers"] == [("h", b"hi")] and send_arguments(ok)["priority"] == 3


def test_basic_credentials_parse_or_fail_typed():
    encoded_pair = base64.b64encode(b"alice:pa:ss").decode()
    assert credentials(f"Basic {encoded_pair}") == ("alice", "pa:ss")
    for bad in ("Bearer x", "Basic", "Basic !!", "Basic " + base64.b64encode(b"nocolon").decode()):
        with pytest.raises(errors.AuthenticationFailed):
            credentials(bad)


def test_csrf_tokens_must_match_exactly():
    session = ConsoleSession(account=None, csrf_token="t" * 43, username="")  # type: ignore[arg-type]
    check_csrf(session, "t" * 43)
    for bad in (None, "", "t" * 42, 5):
        with pytest.raises(errors.InvalidRequest):
            check_csrf(session, bad)


@pytest.mark.parametrize("cls", errors.all_error_classes(), ids=lambda c: c.__name__)
def test_every_typed_error_maps_to_a_status_and_a_json_body(cls):
    exc = cls("why", status=404) if cls is errors.InvalidRequest else cls("why")
    status = status_of(exc)
    assert 400 <= status < 600 and status != 500
    body = error_body(exc)
    assert body["error"] == cls.__name__ and body["message"] == "why"
    assert body["error_code"] // 100 == status
    if status == 401:
        assert "WWW-Authenticate" in headers_of(exc)


def test_summed_rates_use_totals_for_everything_and_sums_for_a_subset():
    history = History()
    history.add(0.0, {"in:a": 0, "in:b": 0, "lag:g": 5})
    history.add(1.0, {"in:a": 10, "in:b": 100, "lag:g": 7})
    history.add(2.0, {"in:a": 30, "in:b": 100})
    assert history.summed_rate_series("in", {"a", "b"}) == [110.0, 20.0]
    assert history.summed_rate_series("in", {"a", "b", "c"}) == [110.0, 20.0]
    assert history.summed_rate_series("in", {"b"}) == [100.0, 0.0]
    assert history.summed_rate_series("out", set()) == [0.0, 0.0]


def test_an_offline_partition_is_offline_and_not_also_under_replicated():
    offline = PartitionInfo(0, "", "", 3, ["r0", "r1", "r2"], ["r1"], 0, 5, 5)
    lagging = PartitionInfo(1, "r0", "n", 3, ["r0", "r1", "r2"], ["r0", "r1"], 0, 5, 5)
    healthy = PartitionInfo(2, "r0", "n", 3, ["r0", "r1"], ["r0", "r1"], 0, 5, 5)
    assert (offline.offline, offline.under_replicated) == (True, False)
    assert (lagging.offline, lagging.under_replicated) == (False, True)
    assert (healthy.offline, healthy.under_replicated) == (False, False)
