"""Trial records are the saved data every analysis reads: they must survive the disk intact."""

from __future__ import annotations

from pathlib import Path


def test_a_trial_record_round_trips_through_its_file(tmp_path: Path) -> None:
    from poochlab.experiments.records import TrialRecord, Window

    record = TrialRecord(run_id="run", trial_id="t1", config_id="c1", repetition=2, factors={"protocol": "rest"}, seed=9)
    record.windows.append(Window(index=0, start_s=0.0, duration_s=1.0, requests=3, errors=1, histogram="HIST"))
    record.validity.invalidate("a reason")
    record.save(tmp_path / "t1.json")
    again = TrialRecord.read(tmp_path / "t1.json")
    assert again == record and again.load == {}
    assert not list(tmp_path.glob(".t1.json.*"))  # no temporary file left behind


def test_the_result_windows_are_the_stable_ones_or_all_when_none_is_stable() -> None:
    from poochlab.experiments.records import TrialRecord, Window

    record = TrialRecord(run_id="run", trial_id="t1", config_id="c1", repetition=0, factors={}, seed=1)
    record.windows = [Window(index=i, start_s=float(i), duration_s=1.0, requests=1, errors=0, histogram=f"H{i}")
                      for i in range(4)]
    record.stable_windows = [1, 3]
    assert [w.index for w in record.result_windows()] == [1, 3]
    record.stable_windows = []
    assert [w.index for w in record.result_windows()] == [0, 1, 2, 3]
