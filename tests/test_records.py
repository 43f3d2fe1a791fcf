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
