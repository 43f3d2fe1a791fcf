"""Recording: lossless merging of workers' windows, warm-up and errors kept out of latencies."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from hdrh.histogram import HdrHistogram

from poochlab.experiments.recording.histograms import decode, encode, merge_encoded, new_histogram, record_counts
from poochlab.experiments.recording.merge import merge_window_data
from poochlab.experiments.recording.windows import WindowRecorder


def _histogram_of(values: list[int]):
    histogram = new_histogram()
    for value in values:
        histogram.record_value(value)
    return histogram


def _same_counts(a, b) -> bool:
    def counts(h):
        return [(i.value_iterated_to, i.count_added_in_this_iter_step) for i in h.get_recorded_iterator()]

    return a.get_total_count() == b.get_total_count() and counts(a) == counts(b)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10_000_000), min_size=1, max_size=300),
       st.lists(st.integers(min_value=1, max_value=10_000_000), max_size=300))
def test_merging_two_workers_equals_one_histogram_of_all_values(first: list[int], second: list[int]) -> None:
    merged = merge_encoded([encode(_histogram_of(first)), encode(_histogram_of(second))])
    assert _same_counts(merged, _histogram_of(first + second))
    for percentile in (50, 90, 99, 99.9, 100):
        assert merged.get_value_at_percentile(percentile) == _histogram_of(first + second).get_value_at_percentile(percentile)


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.integers(min_value=-5, max_value=2 * 3_600_000_000), st.integers(min_value=1, max_value=1000),
                       max_size=200))
def test_recording_counts_in_bulk_equals_hdrh_recording_each_value(counts: dict[int, int]) -> None:
    """The window's fast path against hdrh's own record_value: same counts, total, min, max and
    encoding, values out of range (below 0, above an hour) dropped by both."""
    by_hdrh = new_histogram()
    for value, count in counts.items():
        by_hdrh.record_value(value, count)
    bulk = new_histogram()
    bulk.record_value(250, 2)  # something already there: the bulk adds to it
    by_hdrh.record_value(250, 2)
    record_counts(bulk, counts)
    record_counts(bulk, {})  # nothing to add changes nothing
    assert _same_counts(bulk, by_hdrh)
    assert (bulk.get_total_count(), bulk.get_min_value(), bulk.get_max_value()) == \
        (by_hdrh.get_total_count(), by_hdrh.get_min_value(), by_hdrh.get_max_value())
    assert encode(bulk) == encode(by_hdrh)


def test_recording_counts_in_bulk_into_a_histogram_of_other_settings_uses_its_own_slots() -> None:
    coarse, expected = HdrHistogram(1, 1000, 1), HdrHistogram(1, 1000, 1)
    record_counts(new_histogram(), {997: 1, 12_345: 2})  # the lab's slots for these values are remembered
    record_counts(coarse, {997: 1, 500: 3, 12_345: 2})
    expected.record_value(997, 1)
    expected.record_value(500, 3)
    assert _same_counts(coarse, expected)
    assert coarse.get_total_count() == 4  # 12,345 is above this histogram's range


def test_two_recorders_merged_window_by_window_equal_all_requests_together() -> None:
    rng = random.Random(7)
    recorders = [WindowRecorder(measure_start=100.0, window_s=1.0, open_loop=True) for _ in range(2)]
    everything: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for worker, recorder in enumerate(recorders):
        requests = []
        for n in range(500):
            start = 100.0 + n * 0.004 + worker * 0.001
            latency_us = rng.randint(50, 50_000)
            requests.append((start + latency_us / 1e6, start, latency_us))
        for end, start, latency_us in sorted(requests):  # answers arrive in completion order
            recorder.record(start, end, lateness_s=0.0001)
            everything[recorder.window_index(end)].append(latency_us)
        recorder.advance(104.0)
    windows = [recorder.take_closed() for recorder in recorders]
    for index in (0, 1, 2):
        merged = merge_window_data([windows[0][index], windows[1][index]])
        assert merged.requests == len(everything[index])
        assert _same_counts(decode(merged.histogram), _histogram_of(everything[index]))


def test_warmup_requests_and_errors_stay_out_of_the_latency_histogram() -> None:
    recorder = WindowRecorder(measure_start=10.0, window_s=1.0, open_loop=False)
    recorder.record(9.0, 9.5)  # sent during warm-up
    recorder.record(10.1, 10.2)
    recorder.record(10.2, 10.21, error_kind="http_503")
    recorder.record(10.3, 10.31, error_kind="http_503")
    recorder.record(10.4, 10.41, error_kind="timeout")
    recorder.advance(11.5)
    (window,) = recorder.take_closed()
    assert window.requests == 1
    assert decode(window.histogram).get_total_count() == 1
    assert window.errors_by_kind == {"http_503": 2, "timeout": 1}
    assert recorder.warmup_latency.get_total_count() == 1


def test_answers_after_the_last_window_count_only_when_sent_before_its_end() -> None:
    recorder = WindowRecorder(measure_start=0.0, window_s=1.0, open_loop=True)
    recorder.record(0.5, 0.6)
    recorder.record(0.9, 1.3)  # sent in window 0, answered in window 1 (a stall)
    recorder.record(1.2, 1.25)  # sent in window 1
    recorder.advance(1.4)
    recorder.stop_after(0)  # the trial ends after window 0
    recorder.record(0.95, 1.8)  # still in flight at the end, answered during the drain
    recorder.record(1.5, 1.6)  # sent after the end: ignored
    tail = recorder.tail()
    assert tail.requests == 2
    assert sorted(i.value_iterated_to for i in decode(tail.histogram).get_recorded_iterator()) == [
        decode(encode(_histogram_of([400_000]))).get_max_value(),
        decode(encode(_histogram_of([850_000]))).get_max_value(),
    ]


def test_corrected_twin_fills_in_the_requests_a_stalled_closed_loop_did_not_send() -> None:
    recorder = WindowRecorder(measure_start=0.0, window_s=10.0, open_loop=False, expected_interval_us=1_000)
    t = 0.0
    for _ in range(99):
        recorder.record(t, t + 0.001)
        t += 0.001
    recorder.record(t, t + 0.2)  # one 200 ms stall
    recorder.advance(15.0)
    (window,) = recorder.take_closed()
    raw, corrected = decode(window.histogram), decode(window.corrected_histogram)
    assert raw.get_total_count() == 100
    assert corrected.get_total_count() == 100 + 199
    assert raw.get_value_at_percentile(90) < 2_000
    assert corrected.get_value_at_percentile(90) > 100_000


def test_bad_histogram_text_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not an encoded HdrHistogram"):
        decode("this is not a histogram")
