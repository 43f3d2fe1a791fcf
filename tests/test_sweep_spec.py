"""Sweep specs are validated before anything runs, and plans are randomised reproducibly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from poochlab.experiments.sweep.plan import design_points, estimate_duration_s, plan_trials, server_starts
from poochlab.experiments.sweep.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]


def write_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


BASE = """
[sweep]
repetitions = 2
seed = 5
profile = "quick"
[factors]
protocol = ["rest", "grpc"]
batching = ["off", "b1"]
users = [1, 4]
[batching.b1]
max_batch_size = 32
batch_timeout_micros = 500
"""


def test_every_shipped_spec_is_valid() -> None:
    specs = sorted((REPO / "experiments").glob("*.toml"))
    assert specs, "experiments/ ships at least the default spec"
    for path in specs:
        spec = load_spec(path)
        assert plan_trials(spec), path


def test_full_factorial_blocks_by_server_and_repeats(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, BASE))
    trials = plan_trials(spec)
    assert len(trials) == 2 * 2 * 2 * 2
    counts = Counter(t.config_id for t in trials)
    assert set(counts.values()) == {2} and len(counts) == 8
    # Trials of one server configuration are contiguous within a repetition.
    for repetition in (1, 2):
        servers = [t.server for t in trials if t.repetition == repetition]
        changes = sum(1 for a, b in zip(servers, servers[1:]) if a != b)
        assert changes == 1
    assert server_starts(trials) <= 4


def test_order_is_seeded_and_differs_between_repetitions(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, BASE))
    first = [t.trial_id for t in plan_trials(spec)]
    assert first == [t.trial_id for t in plan_trials(spec)]
    orders = {tuple(t.config_id for t in plan_trials(spec) if t.repetition == r) for r in (1, 2)}
    other = load_spec(write_spec(tmp_path, BASE.replace("seed = 5", "seed = 6")))
    orders_other = [t.config_id for t in plan_trials(other)]
    # Two seeds (or two repetitions) giving the same order for 8 configs is a 1-in-many event.
    assert len(orders) == 2 or orders_other != [t.config_id for t in plan_trials(spec)]


def test_grpc_maps_the_common_rest_library_to_grpcio(tmp_path: Path) -> None:
    text = BASE.replace('users = [1, 4]', 'client_library = ["lean", "requests"]')
    trials = plan_trials(load_spec(write_spec(tmp_path, text)))
    grpc = {t.config_id for t in trials if t.factors["protocol"] == "grpc"}
    rest = {t.config_id for t in trials if t.factors["protocol"] == "rest"}
    assert len(rest) == 4 and len(grpc) == 4
    assert {t.factors["client_library"] for t in trials if t.factors["protocol"] == "grpc"} == {"lean", "grpcio"}


def test_random_design_samples_distinct_points(tmp_path: Path) -> None:
    text = BASE.replace('profile = "quick"', 'profile = "quick"\ndesign = "random"\nsamples = 3')
    spec = load_spec(write_spec(tmp_path, text))
    points = design_points(spec)
    assert len(points) == 3 and len({tuple(p.items()) for p in points}) == 3
    assert points == design_points(spec)


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (("[factors]", "[factors]\ncolour = [\"red\"]"), ["factors.colour", "allowed"]),
        (('protocol = ["rest", "grpc"]', 'protocol = ["rest", "soap"]'), ["factors.protocol", "soap", "grpc"]),
        (('batching = ["off", "b1"]', 'batching = ["off", "b2"]'), ["factors.batching", "b2", "b1"]),
        (("batch_timeout_micros = 500", "batch_timeout_micros = 500\nallowed_batch_sizes = [2, 4]"),
         ["batching.b1", "allowed_batch_sizes"]),
        (("batch_timeout_micros = 500", "batch_timeout_micros = 500\nnum_batch_threads = 0"),
         ["batching.b1", "num_batch_threads"]),
        (("batch_timeout_micros = 500", "batch_timeout_micros = 500\ncolour = 1"), ["batching.b1.colour"]),
        (("repetitions = 2", "repetitions = 0"), ["sweep.repetitions"]),
        (("users = [1, 4]", "users = [1, 4]\nrate_rps = [100]"), ["users", "rate_rps"]),
        (("users = [1, 4]", "rate_rps = [100.0]"), ["rate_rps", "load_mode"]),
        (("[factors]", "[controls]\nprotocol = \"rest\"\n[factors]"), ["controls.protocol", "both"]),
        (('profile = "quick"', 'profile = "fast"'), ["sweep.profile", "quick", "standard"]),
    ],
)
def test_bad_specs_name_file_key_and_allowed_values(tmp_path: Path, change: tuple[str, str], names: list[str]) -> None:
    path = write_spec(tmp_path, BASE.replace(*change, 1))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert str(path) in message
    for name in names:
        assert name in message, message


def test_not_toml_names_the_file(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "[sweep\nname=")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(path)


def test_estimate_grows_with_windows(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, BASE))
    longer = load_spec(write_spec(tmp_path, BASE + "[profile]\nwindow_s = 10.0\n"))
    assert estimate_duration_s(longer, plan_trials(longer))[0] > estimate_duration_s(spec, plan_trials(spec))[0]


def test_external_servers_need_an_address_and_refuse_server_factors(tmp_path: Path) -> None:
    text = BASE.replace('profile = "quick"', 'profile = "quick"\nserver_kind = "external"')
    with pytest.raises(SpecError, match="server-side factors: batching"):
        load_spec(write_spec(tmp_path, text + "[external]\nrest_port = 8501\ngrpc_port = 8500\n"))
    no_batching = text.replace('batching = ["off", "b1"]\n', "")
    with pytest.raises(SpecError, match=r"\[external\] host, rest_port, grpc_port"):
        load_spec(write_spec(tmp_path, no_batching))
    spec = load_spec(write_spec(tmp_path, no_batching + "[external]\nrest_port = 8501\ngrpc_port = 8500\n"))
    assert spec.external == {"host": "127.0.0.1", "rest_port": 8501, "grpc_port": 8500,
                             "behind_balancer": False}


def test_the_readme_example_spec_is_valid(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    spec = load_spec(write_spec(tmp_path, example))
    trials = plan_trials(spec)
    assert len(trials) == 2 * 2 * 3 * 3
    assert {t.factors["protocol"] for t in trials} == {"grpc"}


def test_a_rate_search_needs_a_budget_an_open_loop_and_no_other_load(tmp_path: Path) -> None:
    search = "[search]\nrate_rps = { low = 10.0, high = 1000.0, steps = 4 }\n"
    base = BASE.replace("users = [1, 4]\n", "").replace('profile = "quick"', 'profile = "quick"\np99_budget_ms = 5')
    with pytest.raises(SpecError, match="load_mode"):
        load_spec(write_spec(tmp_path, base + search))
    opened = base.replace("[factors]", "[controls]\nload_mode = \"open\"\n[factors]")
    with pytest.raises(SpecError, match="p99_budget_ms"):
        load_spec(write_spec(tmp_path, opened.replace("p99_budget_ms = 5", "") + search))
    with pytest.raises(SpecError, match="remove users"):
        load_spec(write_spec(tmp_path, opened.replace("[factors]", "[factors]\nusers = [1, 2]") + search))
    with pytest.raises(SpecError, match="search.rate_rps.high"):
        load_spec(write_spec(tmp_path, opened + search.replace("high = 1000.0", "high = 5.0")))
    spec = load_spec(write_spec(tmp_path, opened + search))
    trials = plan_trials(spec)
    assert all(t.search_steps == 4 and "rate_rps" not in t.factors and "users" not in t.factors for t in trials)
    assert estimate_duration_s(spec, trials)[0] > 4 * len(trials) * spec.profile.trial_bounds_s[0] * 0.99


def test_an_open_loop_without_an_arrival_rate_is_refused(tmp_path: Path) -> None:
    # It used to run a closed loop with one user: load_mode was validated but never read.
    path = tmp_path / "open.toml"
    path.write_text('[sweep]\nname = "o"\nquestion = "q"\n[factors]\nprotocol = ["rest"]\n'
                    '[controls]\nload_mode = "open"\n')
    with pytest.raises(SpecError, match=r"open\.toml.*load_mode.*needs an arrival rate"):
        load_spec(path)


def test_open_loop_windows_last_long_enough_for_their_tail(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, BASE + "[profile]\nwindow_s = 2.0\nwindow_requests = 4000\nmax_window_s = 5.0\n"))
    # 4,000 requests: 2 s at 2,000 req/s, 4 s at 1,000, capped at 5 s below 800; never under 2 s.
    assert [spec.profile.window_for(rate) for rate in (4000.0, 2000.0, 1000.0, 300.0)] == [2.0, 2.0, 4.0, 5.0]
    assert spec.profile.window_for(None) == 2.0  # a closed loop keeps window_s
    with pytest.raises(SpecError, match="profile.max_window_s: must be at least window_s"):
        load_spec(write_spec(tmp_path, BASE + "[profile]\nwindow_s = 3.0\nmax_window_s = 2.0\n"))


def test_a_batching_set_smaller_than_the_warmup_requests_is_refused(tmp_path: Path) -> None:
    # TF Serving replays the exports' 32-row warm-up request through the batching queue.
    path = tmp_path / "small-cap.toml"
    path.write_text(BASE.replace("max_batch_size = 32", "max_batch_size = 16"))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert "batching.b1.max_batch_size" in str(error.value) and "got 16" in str(error.value)
