"""How ``poochlab bench generator`` judges an open-loop path from its rates' trials: a path is
valid to a rate only if every rate up to it was valid (a valid higher rate does not hide an
invalid lower one)."""

from __future__ import annotations

from poochlab.experiments.bench.generator import valid_through


def _row(rate: float, valid: bool, achieved: float | None = None) -> dict:
    return {"target_rps": rate, "valid": valid, "throughput_rps": rate * 0.99 if achieved is None else achieved}


def test_every_rate_valid_is_valid_through_the_highest() -> None:
    assert valid_through([_row(600, True), _row(1200, True), _row(2000, True)]) == (2000, 2000, [])


def test_an_invalid_rate_below_a_valid_one_stops_the_path_there_and_is_named() -> None:
    rows = [_row(2000, True), _row(600, True), _row(1200, False)]  # order of measuring does not matter
    assert valid_through(rows) == (600, 2000, [1200])


def test_a_rate_sent_at_less_than_95_percent_is_not_sustained_even_if_valid() -> None:
    assert valid_through([_row(600, True), _row(1200, True, achieved=1100)]) == (600, 600, [])


def test_nothing_valid_is_valid_through_zero() -> None:
    assert valid_through([_row(600, False)]) == (0, 0, [])
    assert valid_through([]) == (0, 0, [])
