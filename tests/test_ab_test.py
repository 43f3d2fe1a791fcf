"""The online A/B test: the seeded split, per-arm latency and MAE against known likes, the two
versions served under one name with labels, and the [ab] spec table."""

from __future__ import annotations

from pathlib import Path

import pytest

from poochlab.clients.ab_split import ABSplit, BaselinePredictor
from poochlab.clients.prediction import PATH_MODEL, CallTiming, Prediction, PredictionError
from poochlab.experiments.recording.arms import merged_arms, score_rows
from poochlab.experiments.recording.merge import merge_window_data
from poochlab.experiments.recording.windows import WindowRecorder
from poochlab.models.baseline import HistoricalBaseline
from poochlab.models.pupdate import Pupdate


class _Constant:
    """A predictor that answers every row with one value (or fails)."""

    def __init__(self, likes: float, fail: bool = False) -> None:
        self.likes, self.fail = likes, fail

    def predict(self, pupdates, *, timeout_s=None) -> Prediction:
        if self.fail:
            raise PredictionError("http_503", "down")
        return Prediction([self.likes] * len(pupdates), (PATH_MODEL,) * len(pupdates), CallTiming(0.0, 0.0, 0.0))

    def stats(self) -> dict:
        return {"cache_hits": 1, "cache_errors_by_reason": {"timeout": 2}}

    def close(self) -> None:
        pass


def _pupdate(pid: str, likes: int | None, tags: tuple[str, ...] = ("#dog",)) -> Pupdate:
    return Pupdate(id=pid, user_id="u", timestamp=0, hashtags=tags, country="GB", followers=10, likes=likes)


def test_the_split_sends_each_arm_its_share_within_a_binomial_bound() -> None:
    split = ABSplit({"stable": (0.7, _Constant(1)), "canary": (0.2, _Constant(2)), "baseline": (0.1, _Constant(3))},
                    seed=20261207)
    n = 10_000
    answers = [split.predict([_pupdate("p", 1)]).arm for _ in range(n)]
    # n = 10 000: sd = sqrt(n p (1 - p)) is 40 for p = 0.2, 30 for p = 0.1, 45.8 for p = 0.7;
    # four sd either side: 2000 +- 160, 1000 +- 120, 7000 +- 184.
    assert 1840 <= answers.count("canary") <= 2160
    assert 880 <= answers.count("baseline") <= 1120
    assert 6816 <= answers.count("stable") <= 7184
    assert split.stats()["ab_sent"] == {arm: answers.count(arm) for arm in ("stable", "canary", "baseline")}
    # Seeded: the same seed draws the same arms.
    again = ABSplit({"stable": (0.7, _Constant(1)), "canary": (0.2, _Constant(2)), "baseline": (0.1, _Constant(3))},
                    seed=20261207)
    assert [again.predict([_pupdate("p", 1)]).arm for _ in range(200)] == answers[:200]


def test_the_split_names_the_arm_of_an_answer_and_of_a_failure() -> None:
    split = ABSplit({"stable": (0.0, _Constant(1)), "canary": (1.0, _Constant(2, fail=True))}, seed=1)
    with pytest.raises(PredictionError) as raised:
        split.predict([_pupdate("p", 1)])
    assert raised.value.arm == "canary"  # type: ignore[attr-defined]
    only_stable = ABSplit({"stable": (1.0, _Constant(7)), "canary": (0.0, _Constant(2))}, seed=1)
    answer = only_stable.predict([_pupdate("p", 1)])
    assert (answer.arm, answer.likes) == ("stable", [7])
    # Counters of every arm added up (the worker reads cache counts from them).
    assert only_stable.stats()["cache_hits"] == 2 and only_stable.stats()["cache_errors_by_reason"] == {"timeout": 4}


def test_shares_that_do_not_sum_to_one_are_refused() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        ABSplit({"stable": (0.5, _Constant(1)), "canary": (0.2, _Constant(2))}, seed=1)


def test_the_baseline_arm_answers_the_historical_average() -> None:
    baseline = HistoricalBaseline(mean_likes=50.0, per_hashtag={"#dog": 10.0, "#cat": 30.0})
    answer = BaselinePredictor(baseline).predict([_pupdate("a", 1, ("#dog", "#cat")), _pupdate("b", 1, ("#new",))])
    assert answer.likes == [20.0, 50.0] and answer.paths == ("fallback", "fallback")


def test_mae_per_arm_from_recorded_answers_against_hand_computed_values() -> None:
    a, b, altered, c = _pupdate("a", 10), _pupdate("b", 20), _pupdate("c~1", 99), _pupdate("d", 30)
    recorder = WindowRecorder(100.0, 1.0, open_loop=True)
    # stable: a -> 12, b -> 17 (|2| + |3|), the altered pupdate -> 5 (excluded); canary: d -> 10 (|20|).
    recorder.record(100.1, 100.102, None, 0.0, CallTiming(1, 1, 1), "model", "stable", score_rows([a], [12.0]))
    recorder.record(100.2, 100.204, None, 0.0, CallTiming(1, 1, 1), "model", "stable", score_rows([b, altered], [17.0, 5.0]))
    recorder.record(100.3, 100.301, None, 0.0, CallTiming(1, 1, 1), "model", "canary", score_rows([c], [10.0]))
    recorder.record(101.1, 101.108, "http_503", 0.0, arm="canary")
    recorder.advance(102.0)
    windows = recorder.take_closed()
    assert [w.arms["stable"]["requests"] for w in windows if "stable" in w.arms] == [2]
    arms = merged_arms(windows)
    stable, canary = arms["stable"], arms["canary"]
    assert (stable["pupdates_scored"], stable["pupdates_excluded"]) == (2, 1)
    assert stable["mae"] == pytest.approx(2.5) and stable["mean_likes"] == pytest.approx(15.0)
    assert stable["mean_predicted"] == pytest.approx(14.5)
    assert (canary["pupdates_scored"], canary["mae"], canary["mean_likes"], canary["errors"]) == (1, 20.0, 30.0, 1)
    # Latency from the merged histogram: 2 ms and 4 ms -> p99 is the 4 ms bucket.
    assert stable["p99_ms"] == pytest.approx(4.0, rel=1e-3) and stable["p50_ms"] == pytest.approx(2.0, rel=1e-3)


def test_arms_of_two_workers_merge_their_histograms_not_their_percentiles() -> None:
    first, second = WindowRecorder(0.0, 1.0, open_loop=True), WindowRecorder(0.0, 1.0, open_loop=True)
    for i in range(99):  # one worker: 99 answers of 1 ms
        first.record(0.001 * i, 0.001 * i + 0.001, None, 0.0, None, "model", "stable", (0, 0.0, 0.0, 0.0, 0))
    second.record(0.5, 0.6, None, 0.0, None, "model", "stable", (0, 0.0, 0.0, 0.0, 0))  # the other: one of 100 ms
    first.advance(1.0)
    second.advance(1.0)
    arm = merged_arms([merge_window_data([first.take_closed()[0], second.take_closed()[0]])])["stable"]
    # 100 answers, 99 of 1 ms: p99 is 1 ms (averaging the workers' p99s would say 50.5 ms).
    assert arm["requests"] == 100 and arm["p99_ms"] == pytest.approx(1.0, rel=1e-3)


def test_two_variants_are_served_under_one_name_with_labels(tmp_path: Path, pooch_exports: dict[str, Path]) -> None:
    from poochlab.serving.model_config import parse_model_config_text
    from poochlab.experiments.sweep.ab_serving import ab_models_config_text, link_versions

    base = link_versions(tmp_path / "pooch_predictor", pooch_exports["small"] / "pooch_predictor",
                         pooch_exports["large"] / "pooch_predictor")
    assert (base / "1" / "saved_model.pb").is_file() and (base / "2" / "saved_model.pb").is_file()
    assert (base / "1").resolve().parent.parent.name == "small"
    assert (base / "2").resolve().parent.parent.name == "large"
    config = parse_model_config_text(ab_models_config_text("pooch_predictor", base), "ab.config")
    model = config.model_config_list.config[0]
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}
    assert list(model.model_version_policy.specific.versions) == [1, 2]


def _spec(tmp_path: Path, ab: str) -> Path:
    path = tmp_path / "ab.toml"
    path.write_text('[sweep]\nname = "ab"\n[controls]\nload_mode = "open"\nrate_rps = 50\n' + ab)
    return path


def test_the_ab_table_is_read_and_bad_values_name_their_key(tmp_path: Path) -> None:
    from poochlab.experiments.sweep.spec import SpecError, load_spec

    spec = load_spec(_spec(tmp_path, "[ab]\ncanary_share = 0.2\nbaseline_share = 0.1\n"))
    assert (spec.ab.canary_share, spec.ab.baseline_share, spec.ab.stable_variant, spec.ab.canary_variant) == (
        0.2, 0.1, "small", "large")
    with pytest.raises(SpecError, match="ab.canary_share"):
        load_spec(_spec(tmp_path, "[ab]\ncanary_share = 1.5\n"))
    with pytest.raises(SpecError, match="ab.baseline_share"):
        load_spec(_spec(tmp_path, "[ab]\ncanary_share = 0.6\nbaseline_share = 0.5\n"))
    with pytest.raises(SpecError, match="ab.share"):
        load_spec(_spec(tmp_path, "[ab]\ncanary_share = 0.2\nshare = 1\n"))


def test_the_server_loads_both_variants_and_each_label_reaches_its_own(tmp_path: Path, pooch_exports: dict[str, Path]) -> None:
    from poochlab.experiments.sweep.ab_serving import ab_models_config_text, link_versions
    from poochlab.serving.direct_session import DirectSession
    from poochlab.serving.model_config import parse_model_config_text
    from poochlab.serving.model_manager import ModelManager
    from poochlab.serving.model_threads import ModelThreads

    small = pooch_exports["small"] / "pooch_predictor"
    large = pooch_exports["large"] / "pooch_predictor"
    base = link_versions(tmp_path / "pooch_predictor", small, large)
    threads = ModelThreads(1)
    manager = ModelManager(lambda compute, name: DirectSession(compute, threads))
    try:
        manager.apply_config(parse_model_config_text(ab_models_config_text("pooch_predictor", base), "ab.config"))
        stable = manager.resolve("pooch_predictor", label="stable")
        canary = manager.resolve("pooch_predictor", label="canary")
        assert (stable.version, canary.version) == (1, 2)
        # Each label loads its variant's latest export, through the link.
        assert stable.servable.path.resolve().parent == small.resolve()
        assert canary.servable.path.resolve().parent == large.resolve()
    finally:
        manager.close()
        threads.shutdown()
