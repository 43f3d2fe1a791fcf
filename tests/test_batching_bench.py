"""The batching benchmark's arithmetic: merged histograms, throughput, its two targets."""

from __future__ import annotations

from poochlab.experiments.bench.batching import Point, Slice, target_checks


def slice_of(latencies: dict[int, int], seconds: float, errors: int = 0) -> Slice:
    requests = sum(latencies.values())
    return Slice(requests, errors, int(seconds * 1e6), latencies, 0.0, 0.0, 0.5)


def test_percentiles_come_from_the_merged_histogram_not_averages():
    point = Point("large", "none", 1, [slice_of({100: 1, 200: 1}, 1.0),
                                       slice_of({300: 2}, 1.0)])
    # Averaging each slice's p50 (100 and 300) would say 200 too, so check the tail as well.
    assert point.percentile_us(50) == 200
    assert point.percentile_us(75) == 300
    assert point.percentile_us(25) == 100
    assert point.percentile_us(100) == 300


def test_throughput_counts_answered_requests_over_all_slices():
    point = Point("large", "none", 16, [slice_of({1000: 30}, 2.0, errors=10),
                                        slice_of({1000: 40}, 2.0)])
    assert point.throughput == (20 + 40) / 4.0


def test_mean_batch_size_weights_slices_by_their_batches():
    point = Point("large", "timeout1ms", 16, [
        Slice(10, 0, 1_000_000, {1: 10}, batch_sum=40.0, batch_count=10.0, load_average=1.0),
        Slice(10, 0, 1_000_000, {1: 10}, batch_sum=60.0, batch_count=2.0, load_average=1.0)])
    assert point.mean_batch_size == 100.0 / 12.0


def test_target_checks_report_both_targets():
    points = [
        Point("large", "none", 16, [slice_of({1000: 100}, 1.0)]),
        Point("large", "timeout1ms", 16, [slice_of({1000: 150}, 1.0)]),
        Point("large", "none", 1, [slice_of({1000: 10}, 1.0)]),
        Point("large", "timeout0", 1, [slice_of({1050: 10}, 1.0)]),
    ]
    lines = target_checks(points)
    assert lines[0].startswith("large, 16 clients: throughput timeout1ms / none = 150 / 100 = 1.50x")
    assert lines[0].endswith("NOT met)")
    assert "p50 timeout0 / none = 1.050 / 1.000 ms = 1.05x" in lines[1]
    assert lines[1].endswith("(target <= 1.1x: met)")
