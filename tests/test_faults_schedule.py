"""The fault schedule (TOML [[faults]]) and the runner's order of steps, driven by a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from poochlab.experiments.faults.runner import FakeClock, FaultRunner
from poochlab.experiments.faults.schedule import FaultSpec, ScheduleError, load_schedule


def test_a_schedule_is_read_from_faults_tables(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text('[sweep]\nname = "x"\n\n'
                    '[[faults]]\nkind = "server_crash"\nat_s = 5\n\n'
                    '[[faults]]\nkind = "slow_model"\nat_s = 10\nduration_s = 4.5\n'
                    'delay_ms = 200\ndelay_fraction = 0.25\n\n'
                    '[[faults]]\nkind = "network"\nat_s = 1\nduration_s = 2\nmode = "freeze"\n')
    assert load_schedule(path) == [
        FaultSpec("server_crash", 5.0, 0.0, {}),
        FaultSpec("slow_model", 10.0, 4.5, {"delay_ms": 200, "delay_fraction": 0.25}),
        FaultSpec("network", 1.0, 2.0, {"mode": "freeze"}),
    ]


@pytest.mark.parametrize("table, message", [
    ('kind = "flood"\nat_s = 1', "faults[0].kind: 'flood' is not a fault kind"),
    ('kind = "redis_outage"\nat_s = -1\nduration_s = 2', "faults[0].at_s: seconds after the measurement starts"),
    ('kind = "redis_outage"\nat_s = 1', "faults[0].duration_s: a redis_outage needs a duration"),
    ('kind = "server_crash"\nat_s = 1\nduration_s = 3', "faults[0].duration_s: a server_crash lasts until"),
    ('kind = "redis_outage"\nat_s = 1\nduration_s = 2\ndelay_ms = 5', "faults[0].delay_ms: not a setting of redis_outage"),
    ('kind = "slow_model"\nat_s = 1\nduration_s = 2\ndelay_ms = "lots"', "faults[0].delay_ms: expected int or float"),
    ('kind = "slow_model"\nat_s = 1\nduration_s = 2\ndelay_ms = 5\ndelay_fraction = 2',
     "faults[0].delay_fraction must be between 0 and 1"),
    ('kind = "slow_model"\nat_s = 1\nduration_s = 2\nerror_code = "SLOW"', "faults[0].error_code 'SLOW' is not a TF status"),
    ('kind = "slow_model"\nat_s = 1\nduration_s = 2', "faults[0]: a slow_model needs delay_ms > 0 or an error_code"),
    ('kind = "network"\nat_s = 1\nduration_s = 2\nmode = "jitter"', "faults[0].mode: one of delay, freeze, drop"),
    ('kind = "network"\nat_s = 1\nduration_s = 2\nmode = "drop"\ndelay_ms = 3', 'faults[0].delay_ms: only mode "delay"'),
])
def test_schedule_errors_name_the_file_and_key(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[faults]]\n" + table + "\n")
    with pytest.raises(ScheduleError) as error:
        load_schedule(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


class Recorder:
    """Notes every step with the clock's time (the runner's logic, not a fault, is under test)."""

    def __init__(self, log: list, fail_on: str | None = None) -> None:
        self.log, self.fail_on = log, fail_on

    def inject(self, spec, clock):
        self.log.append(("inject", spec.kind, clock.now()))
        if self.fail_on == "inject":
            raise RuntimeError("could not plant it")
        return {"note": "in"}

    def clear(self, spec, clock):
        self.log.append(("clear", spec.kind, clock.now()))
        return {"note_out": "out"}


def test_steps_run_at_their_times_clears_first_at_equal_times() -> None:
    log: list = []
    schedule = [FaultSpec("slow_model", 10.0, 5.0), FaultSpec("redis_outage", 2.0, 8.0),
                FaultSpec("server_crash", 4.0)]
    injectors = {kind: Recorder(log) for kind in ("slow_model", "redis_outage", "server_crash")}
    clock = FakeClock()
    timeline = FaultRunner(schedule, injectors, clock).run()
    assert log == [("inject", "redis_outage", 2.0), ("inject", "server_crash", 4.0), ("clear", "server_crash", 4.0),
                   ("clear", "redis_outage", 10.0), ("inject", "slow_model", 10.0), ("clear", "slow_model", 15.0)]
    slow, redis, crash = timeline.events
    assert (slow.scheduled_at_s, slow.injected_at_s, slow.cleared_at_s, slow.lasted_s) == (10.0, 10.0, 15.0, 5.0)
    assert slow.detail == {"note": "in", "note_out": "out"}
    assert (crash.injected_at_s, crash.cleared_at_s) == (4.0, 4.0)
    assert timeline.to_json()[1]["lasted_s"] == 8.0


def test_a_failed_injection_is_recorded_and_still_cleared() -> None:
    log: list = []
    timeline = FaultRunner([FaultSpec("redis_outage", 1.0, 1.0)],
                           {"redis_outage": Recorder(log, fail_on="inject")}, FakeClock()).run()
    event = timeline.events[0]
    assert event.injected_at_s is None and event.detail["inject_error"] == "RuntimeError: could not plant it"
    # It may be half planted, so it is still cleared at its planned end.
    assert log == [("inject", "redis_outage", 1.0), ("clear", "redis_outage", 2.0)]
    assert event.cleared_at_s == 2.0


def test_finishing_early_clears_what_is_planted_and_skips_the_rest() -> None:
    log: list = []

    class StopsAt(FakeClock):
        def wait_until(self, at_s, stop):
            if at_s >= 3.0:
                runner._stop.set()  # the trial ends at 3 s
            return super().wait_until(at_s, stop)

    runner = FaultRunner([FaultSpec("redis_outage", 1.0, 10.0), FaultSpec("slow_model", 5.0, 1.0)],
                         {"redis_outage": Recorder(log), "slow_model": Recorder(log)}, StopsAt())
    timeline = runner.run()
    assert log == [("inject", "redis_outage", 1.0), ("clear", "redis_outage", 1.0)]
    outage, slow = timeline.events
    assert outage.detail["cleared_early"] is True and outage.cleared_at_s == 1.0
    assert slow.injected_at_s is None and slow.cleared_at_s is None


def test_a_kind_without_an_injector_is_refused_before_the_trial() -> None:
    with pytest.raises(ValueError, match="no injector for fault kind\\(s\\) network"):
        FaultRunner([FaultSpec("network", 1.0, 1.0, {"mode": "drop"})], {}, FakeClock())
