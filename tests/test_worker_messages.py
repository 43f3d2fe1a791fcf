"""The messages between the lab's load-generator processes and what coordinates them
(experiments/load/worker_messages.py): they must cross a pickle or msgpack boundary intact, and a
malformed Locust report must be refused naming its worker. Locust is never imported here."""

from __future__ import annotations

import dataclasses
import pickle

import msgpack
import pytest

from poochlab.experiments.load.worker_messages import Finished, Go, NameReport, Stop, WindowClosed, WorkerReport
from poochlab.experiments.recording.windows import WindowData
from poochlab.experiments.records import CacheCounts


def test_worker_messages_are_frozen_and_cross_a_pickle_intact() -> None:
    window = WindowData(index=3, requests=10, errors_by_kind={"timeout": 1}, histogram="H", corrected_histogram=None,
                        lateness_histogram=None, server_queue_histogram=None, server_compute_histogram=None,
                        client_timing_sums_us={"encode_us": 50.0}, answer_paths={"model": 10})
    finished = Finished(tail=window, outstanding=2, cache=CacheCounts(hits=4, misses=6, errors=1,
                                                                       errors_by_reason={"timeout": 1}),
                        expected_interval_us=None, sender_greenlets=3, sender_threads=0, timer="timerfd")
    for message in (Go(10.0, 12.5), Stop(7), WindowClosed(window), finished):
        assert pickle.loads(pickle.dumps(message)) == message
    again = pickle.loads(pickle.dumps(finished))
    assert again.cache is not None and again.cache.hits == 4 and again.tail is not None and again.tail.index == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        Stop(7).last_index = 8


def test_a_locust_worker_report_crosses_msgpack_as_plain_data() -> None:
    report = WorkerReport(since=100.0, until=103.0, warmup_excluded=5,
                          by_name={"predict": NameReport("HIST", {"timeout": 2})})
    wire = msgpack.unpackb(msgpack.packb(report.to_wire()))  # what Locust does with report data
    assert wire == {"since": 100.0, "until": 103.0, "warmup_excluded": 5,
                    "by_name": {"predict": {"histogram": "HIST", "errors_by_kind": {"timeout": 2}}}}
    assert WorkerReport.from_wire(wire) == report


def test_a_malformed_locust_report_is_refused() -> None:
    with pytest.raises(KeyError):
        WorkerReport.from_wire({"since": 1.0, "by_name": {"predict": {"errors_by_kind": {}}}})
    with pytest.raises(ValueError):
        WorkerReport.from_wire({"by_name": {"predict": {"histogram": "H", "errors_by_kind": {"timeout": "many"}}}})
