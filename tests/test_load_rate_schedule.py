"""Rate schedules: the arrival generator places the planned arrivals in each interval, specs are
validated naming file and key, and a trial against the echo server follows a step (open loop:
the rate; closed loop: the users, through Locust's LoadTestShape)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from poochlab.clients.config import ClientConfig
from poochlab.experiments.load import LoadSettings, Workload, measure_trial
from poochlab.experiments.load.echo_server import EchoServer, Stall, start_echo_server
from poochlab.experiments.load.rate_schedule import (Arrivals, RateSchedule, RateScheduleError, RateStep,
                                                     UsersSchedule, parse_schedule, parse_users_schedule)
from poochlab.experiments.records import TrialRecord
from poochlab.experiments.sweep.spec import SpecError, load_spec

# 100/s for 10 s, a ramp to 200/s over 5 s, then 200/s.
STEP_AND_RAMP = RateSchedule((RateStep(0, 100), RateStep(10, 200, ramp_s=5)))


def _counts(arrivals: list[float], edges: list[float]) -> list[int]:
    return [sum(1 for t in arrivals if low < t <= high) for low, high in zip(edges, edges[1:])]


def test_unit_gaps_place_exactly_the_planned_arrivals_in_each_interval() -> None:
    # With every unit-rate gap 1.0 the k-th arrival falls where the planned area reaches k, so
    # each interval holds its area: 10 s x 100 = 1000; ramp 5 s x (100 + 200) / 2 = 750;
    # 10 s x 200 = 2000; and 2 s of warm-up at the first rate before 0 s: 200.
    arrivals = Arrivals(STEP_AND_RAMP, seed=0, start_at=-2.0, origin=0.0, draw=lambda: 1.0)
    times = [arrivals.next() for _ in range(200 + 3750)]
    assert _counts(times, [-2.0, 0.0, 10.0, 15.0, 25.0]) == [200, 1000, 750, 2000]
    # inside the ramp: the first half carries 5/2 x (100 + 150) / 2 = 312.5 arrivals
    assert _counts(times, [10.0, 12.5]) == [312]


def test_seeded_poisson_arrivals_follow_the_schedule_within_their_sampling_error() -> None:
    arrivals = Arrivals(STEP_AND_RAMP, seed=7, start_at=0.0)
    times = []
    while not times or times[-1] <= 25.0:
        times.append(arrivals.next())
    # Poisson counts: mean = variance = the planned arrivals; 4 standard deviations either side.
    for count, planned in zip(_counts(times, [0.0, 10.0, 15.0, 25.0]), [1000, 750, 2000]):
        assert abs(count - planned) <= 4 * planned ** 0.5, (count, planned)
    again = Arrivals(STEP_AND_RAMP, seed=7, start_at=0.0)
    assert [again.next() for _ in range(50)] == times[:50]  # seeded


def test_a_constant_schedule_gives_the_exponential_gaps_of_its_rate() -> None:
    gaps = iter([0.5, 2.0, 1.5])
    arrivals = Arrivals(RateSchedule((RateStep(0, 4),)), seed=0, start_at=10.0, draw=lambda: next(gaps))
    assert [arrivals.next() for _ in range(3)] == [10.125, 10.625, 11.0]


def test_planned_rates_per_window_and_peak() -> None:
    assert STEP_AND_RAMP.peak_rps == 200
    assert STEP_AND_RAMP.planned_rps(0, 5) == 100
    assert STEP_AND_RAMP.planned_rps(10, 15) == 150
    assert STEP_AND_RAMP.planned_rps(8, 12) == pytest.approx((2 * 100 + 2 * (100 + 140) / 2) / 4)
    assert STEP_AND_RAMP.rate_at(12.5) == 150
    settings = LoadSettings(mode="open", rate_schedule=STEP_AND_RAMP)
    assert settings.rate_rps == 200
    assert settings.as_record()["rate_schedule"][1] == {"at_s": 10.0, "rps": 200.0, "ramp_s": 5.0}


@pytest.mark.parametrize("entries, message", [
    ([{"at_s": 5, "rps": 100}], "load.rate_schedule[0]: the first entry sets the starting rate"),
    ([{"at_s": 0, "rps": 100}, {"at_s": 10, "rps": 0}], "load.rate_schedule[1].rps: must be positive"),
    ([{"at_s": 0, "rps": 100}, {"at_s": 10, "rps": 200, "ramp_s": 5}, {"at_s": 12, "rps": 50}],
     "load.rate_schedule[2].at_s: 12 s starts before entry 1 ends (15 s)"),
    ([{"at_s": 0, "rps": "fast"}], "load.rate_schedule[0].rps: expected a number"),
    ([{"at_s": 0, "rate": 100}], "load.rate_schedule[0].rate: unknown key"),
    ([], "load.rate_schedule: expected a list of tables"),
])
def test_bad_schedules_are_refused_naming_the_entry_and_key(entries: list, message: str) -> None:
    with pytest.raises(RateScheduleError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        parse_schedule(entries, "load.rate_schedule")


SPEC = """
[sweep]
repetitions = 1
profile = "quick"
[controls]
load_mode = "{mode}"
{extra}
[load]
rate_schedule = [{{at_s = 0, rps = 100}}, {{at_s = 4, rps = {second}}}]
"""


def _spec(tmp_path: Path, mode: str = "open", second: object = 200, extra: str = "") -> Path:
    path = tmp_path / "schedule.toml"
    path.write_text(SPEC.format(mode=mode, second=second, extra=extra))
    return path


def test_a_spec_with_a_schedule_loads_and_bad_ones_name_file_and_key(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path))
    assert spec.rate_schedule is not None and spec.rate_schedule.peak_rps == 200
    path = _spec(tmp_path, second=-1)
    with pytest.raises(SpecError, match=rf"{path}: load.rate_schedule\[1\].rps: must be positive"):
        load_spec(path)
    with pytest.raises(SpecError, match=rf"{path}: load.rate_schedule: a rate schedule is an open loop"):
        load_spec(_spec(tmp_path, mode="closed"))
    with pytest.raises(SpecError, match="load.rate_schedule: the schedule sets the rate itself; remove rate_rps"):
        load_spec(_spec(tmp_path, extra="rate_rps = 50"))


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    with start_echo_server(grpc=True) as server:
        yield server


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", ["rest", "grpc"])  # sender.py and thread_sender.py
def test_a_trial_follows_a_step_and_records_each_windows_planned_rate(echo: EchoServer, protocol: str) -> None:
    schedule = RateSchedule((RateStep(0, 100), RateStep(2, 300)))
    settings = LoadSettings(mode="open", rate_schedule=schedule, window_s=1.0, warmup_s=0.5, min_windows=3,
                            max_windows=4)
    client = ClientConfig(rest_url=echo.rest_url) if protocol == "rest" else \
        ClientConfig(protocol="grpc", grpc_target=echo.grpc_target)
    record = TrialRecord(run_id="test", trial_id="step", config_id="step", repetition=0, factors={}, seed=1)
    measure_trial(settings, client, Workload.generated(2000, seed=5), record, server_pid=echo.pid)
    assert record.status == "ok", record.failure_reason
    assert len(record.windows) == 4  # a schedule measures every window, never stops at stability
    assert [w.planned_rate_rps for w in record.windows] == [100, 100, 300, 300]
    assert record.load.rate_schedule == [{"at_s": 0.0, "rps": 100.0, "ramp_s": 0.0},
                                            {"at_s": 2.0, "rps": 300.0, "ramp_s": 0.0}]
    before = sum(w.requests for w in record.windows[:2])
    after = sum(w.requests for w in record.windows[2:])
    # Poisson: 200 and 600 planned; 5 standard deviations apart from each other's planned count.
    assert abs(before - 200) <= 5 * 200 ** 0.5 and abs(after - 600) <= 5 * 600 ** 0.5, (before, after)


def test_a_users_schedule_splits_each_step_over_the_workers_and_counts_the_users_started() -> None:
    schedule = UsersSchedule(((0.0, 3), (10.0, 5), (20.0, 2)))
    assert [schedule.users_at(t) for t in (-1.0, 0.0, 9.9, 10.0, 25.0)] == [3, 3, 3, 5, 2]
    assert [schedule.users_at(10.0, w, 2) for w in (0, 1)] == [3, 2]  # 5 users over two workers
    # worker 0: 2, then 3 (+1), then 1; worker 1: 1, then 2 (+1), then 1
    assert (schedule.user_starts(0, 2), schedule.user_starts(1, 2)) == (3, 2)
    settings = LoadSettings(mode="closed", users_schedule=schedule)
    assert settings.users == 5 and settings.as_record()["users_schedule"][1] == {"at_s": 10.0, "users": 5}
    with pytest.raises(RateScheduleError, match=r"load.users_schedule\[1\].users: must be an integer of at least 1"):
        parse_users_schedule([{"at_s": 0, "users": 2}, {"at_s": 5, "users": 0}], "load.users_schedule")
    with pytest.raises(RateScheduleError, match=r"load.users_schedule\[1\].at_s: 0 s is not after entry 0"):
        parse_users_schedule([{"at_s": 0, "users": 2}, {"at_s": 0, "users": 3}], "load.users_schedule")


def test_a_spec_takes_a_users_schedule_for_a_closed_loop_only(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text('[sweep]\nprofile = "quick"\n[controls]\nload_mode = "closed"\n'
                    '[load]\nusers_schedule = [{at_s = 0, users = 1}, {at_s = 4, users = 4}]\n')
    assert load_spec(path).users_schedule == UsersSchedule(((0.0, 1), (4.0, 4)))
    path.write_text(path.read_text().replace('load_mode = "closed"', 'load_mode = "open"'))
    with pytest.raises(SpecError, match=r"load.users_schedule: a users schedule is a closed loop"):
        load_spec(path)


@pytest.mark.e2e
def test_a_closed_loop_follows_a_users_step_through_locusts_load_shape() -> None:
    # Every answer is held to the next 20 ms boundary: each user gets one answer per 20 ms, so a
    # window's throughput counts its users (50 req/s each).
    with start_echo_server(grpc=False, stall=Stall(ms=20, every_s=0.02)) as echo:
        schedule = UsersSchedule(((0.0, 1), (2.0, 4)))
        settings = LoadSettings(mode="closed", users_schedule=schedule, window_s=1.0, warmup_s=0.5,
                                min_windows=4, max_windows=4)
        record = TrialRecord(run_id="test", trial_id="users", config_id="users", repetition=0, factors={}, seed=1)
        measure_trial(settings, ClientConfig(rest_url=echo.rest_url), Workload.generated(2000, seed=5), record,
                      server_pid=echo.pid)
    assert record.status == "ok", record.failure_reason
    assert record.load.users_schedule == [{"at_s": 0.0, "users": 1}, {"at_s": 2.0, "users": 4}]
    one_user = record.windows[1].requests  # 1-2 s: one user
    four_users = record.windows[3].requests  # 3-4 s: four (Locust applies a step within a second)
    assert one_user > 0 and four_users >= 3 * one_user, (one_user, four_users)
    assert record.errors_by_kind == {}
