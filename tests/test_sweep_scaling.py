"""The reactive scaling policy: the pure decision on synthetic windows, and the scaler's timeline
with stand-in replica changes (the real ones: tests/test_scaling_replicas.py)."""

from __future__ import annotations

from poochlab.experiments.sweep.scaling import ReactiveScaler, ScalingSettings, WindowSignal, decide

SETTINGS = ScalingSettings(max_replicas=3, p99_up_ms=50, p99_down_ms=10, down_windows=3, cooldown_s=10)


def windows(*p99s: float | None, every_s: float = 2.0) -> list[WindowSignal]:
    return [WindowSignal(end_s=(i + 1) * every_s, p99_ms=p99) for i, p99 in enumerate(p99s)]


def test_a_hot_window_adds_a_replica_up_to_the_maximum() -> None:
    assert decide(windows(20, 80), 1, 1, SETTINGS, None) == "add"
    assert decide(windows(20, 80), 3, 1, SETTINGS, None) == "hold"  # at max_replicas
    assert decide(windows(20, 50), 1, 1, SETTINGS, None) == "hold"  # at the threshold, not above


def test_between_the_thresholds_nothing_changes_the_hysteresis() -> None:
    assert decide(windows(30, 30, 30, 30), 2, 1, SETTINGS, None) == "hold"


def test_load_must_stay_low_for_down_windows_in_a_row_to_remove_one() -> None:
    assert decide(windows(5, 5, 5), 2, 1, SETTINGS, None) == "remove"
    assert decide(windows(5, 30, 5, 5), 2, 1, SETTINGS, None) == "hold"  # only two low in a row
    assert decide(windows(5, 5, 5), 1, 1, SETTINGS, None) == "hold"  # never below the minimum
    assert decide(windows(5, 5, None), 2, 1, SETTINGS, None) == "hold"  # a window without answers is not low


def test_no_change_within_the_cool_down_and_low_windows_count_only_after_the_change() -> None:
    history = windows(80, 80, 80, 80, 80, 80, 80)  # ends at 2, 4, ..., 14 s
    assert decide(history[:5], 2, 1, SETTINGS, last_change_s=2.0) == "hold"  # 10 - 2 = 8 s < 10 s
    assert decide(history[:6], 2, 1, SETTINGS, last_change_s=2.0) == "add"  # 12 - 2 = 10 s
    low = windows(5, 5, 5, 5, 5, 5, 5, 5)  # ends at 2 ... 16 s
    assert decide(low[:7], 2, 1, SETTINGS, last_change_s=6.0) == "hold"  # 14 - 6 = 8 s < 10 s
    assert decide(low, 2, 1, SETTINGS, last_change_s=6.0) == "remove"
    no_cooldown = ScalingSettings(max_replicas=3, p99_up_ms=50, p99_down_ms=10, down_windows=3, cooldown_s=0)
    assert decide(low[:4], 2, 1, no_cooldown, last_change_s=4.0) == "hold"  # after 4 s: 6, 8 only
    assert decide(low[:5], 2, 1, no_cooldown, last_change_s=4.0) == "remove"  # 6, 8, 10


def test_the_servers_queue_alone_can_trigger_a_replica() -> None:
    queue = ScalingSettings(max_replicas=2, p99_up_ms=50, p99_down_ms=10, queue_up_ms=5)
    hot_queue = [WindowSignal(end_s=2.0, p99_ms=20, queue_ms=8)]
    assert decide(hot_queue, 1, 1, queue, None) == "add"
    assert decide(hot_queue, 1, 1, SETTINGS, None) == "hold"  # no queue threshold set


def test_the_scaler_records_when_each_replica_joined_and_left() -> None:
    now = [0.0]
    changes: list[str] = []
    scaler = ReactiveScaler(ScalingSettings(max_replicas=2, p99_up_ms=50, p99_down_ms=10, down_windows=2,
                                            cooldown_s=4), min_replicas=1,
                            add_replica=lambda: changes.append("add") or {"replica": 1},
                            remove_replica=lambda: changes.append("remove") or {"replica": 1},
                            clock=lambda: now[0])
    decisions = []
    for end_s, p99 in [(2, 20), (4, 90), (6, 90), (8, 5), (10, 5), (12, 5)]:
        now[0] = end_s + 0.1
        decisions.append(scaler.on_window(WindowSignal(end_s=end_s, p99_ms=p99)))
        scaler.finish()  # the change runs in the background; wait for it before the next window
    # 4 s: hot -> add; 6 s: within the cool-down; 8 s: one low window since the change;
    # 10 s: two low windows but within 4 s of the change (at 4.1 s: 5.9 s later, so allowed).
    assert decisions == ["hold", "add", "hold", "hold", "remove", "hold"]
    assert changes == ["add", "remove"]
    events = [(e["event"], e["at_s"], e.get("replicas")) for e in scaler.timeline]
    assert events == [("scale_add_decided", 4.1, 1), ("replica_joined", 4.1, 2),
                      ("scale_remove_decided", 10.1, 2), ("replica_left", 10.1, 1)]
    assert scaler.back_to_minimum() == scaler.timeline and changes == ["add", "remove"]


def test_a_replica_that_fails_to_start_is_a_timeline_entry_not_a_crash() -> None:
    def fail() -> dict:
        raise RuntimeError("model did not load")

    scaler = ReactiveScaler(SETTINGS, 1, add_replica=fail, remove_replica=dict, clock=lambda: 3.0)
    assert scaler.on_window(WindowSignal(end_s=2.0, p99_ms=99)) == "add"
    timeline = scaler.finish()
    assert timeline[-1] == {"at_s": 3.0, "event": "replica_add_failed", "error": "model did not load"}
    assert scaler.replicas == 1
