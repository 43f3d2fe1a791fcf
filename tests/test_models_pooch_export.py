"""The exported Pooch Predictor, loaded with TensorFlow alone, as TF Serving would load it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poochlab.models.export import latest_version_dir
from poochlab.models.facts import generate_pupdates
from poochlab.models.pupdate import MODEL_NAME, SIGNATURE_NAME

VARIANTS = ("small", "large")


@pytest.fixture(scope="module")
def loaded(pooch_exports: dict[str, Path]) -> dict[str, object]:
    import tensorflow as tf

    return {variant: tf.saved_model.load(str(latest_version_dir(base))) for variant, base in pooch_exports.items()}


def _card(pooch_exports: dict[str, Path], variant: str) -> dict:
    return json.loads((latest_version_dir(pooch_exports[variant]) / "assets.extra" / "model_card.json").read_text())


def _likes(model: object, hashtags: list, country: list, followers: list) -> np.ndarray:
    import tensorflow as tf

    outputs = model.signatures[SIGNATURE_NAME](
        hashtags=tf.constant(hashtags, tf.string),
        country=tf.constant(country, tf.string),
        followers=tf.constant(followers, tf.int64),
    )
    return outputs["likes"].numpy()


@pytest.mark.parametrize("variant", VARIANTS)
def test_serving_default_takes_raw_fields_and_returns_likes(loaded: dict, variant: str) -> None:
    import tensorflow as tf

    signature = loaded[variant].signatures[SIGNATURE_NAME]
    _, inputs = signature.structured_input_signature
    assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in inputs.items()} == {
        "hashtags": (tf.string, [None]),
        "country": (tf.string, [None]),
        "followers": (tf.int64, [None]),
    }
    outputs = signature.structured_outputs
    assert list(outputs) == ["likes"]
    assert outputs["likes"].dtype == tf.float32 and outputs["likes"].shape.as_list() == [None]
    likes = _likes(loaded[variant], ["#corgi #adorable", ""], ["US", "JP"], [300, 5])
    assert likes.shape == (2,)


ADVERSARIAL = [
    ("", "US", 0),  # no hashtags
    ("   \t  ", "", 1),  # only whitespace, empty country
    (" ".join(f"#tag{i}" for i in range(500)), "US", 100),  # 500 unseen hashtags
    (" ".join(["#corgi"] * 500), "KR", 10**6),  # 500 copies of a loved tag
    ("#adorable", "XX", 2**62),  # unknown country, huge followers
    ("#adorable", "Atlantis", 2**63 - 1),
    ("#zoomies", "US", -5),  # negative followers from a buggy client
    ("#犬 #🐶 #ÅDORABLE", "日本", 50),  # unicode
    ("#\xff\xfe invalid utf8", "\xc3", 50),  # replaced below by invalid UTF-8 bytes
    ("#" + "a" * 100_000, "US", 10),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_predictions_are_finite_and_non_negative_on_adversarial_inputs(loaded: dict, variant: str) -> None:
    hashtags = [h.encode("utf-8") for h, _, _ in ADVERSARIAL]
    country = [c.encode("utf-8") for _, c, _ in ADVERSARIAL]
    hashtags[8], country[8] = b"#\xff\xfe invalid utf8", b"\xc3"
    likes = _likes(loaded[variant], hashtags, country, [f for _, _, f in ADVERSARIAL])
    assert likes.shape == (len(ADVERSARIAL),)
    assert np.all(np.isfinite(likes)) and np.all(likes >= 0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_any_bytes_and_any_int64_give_a_finite_non_negative_prediction(loaded: dict, variant: str) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        hashtags=st.lists(st.binary(max_size=40), max_size=8),
        country=st.binary(max_size=8),
        followers=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=8),
    )
    def check(hashtags: list[bytes], country: bytes, followers: list[int]) -> None:
        rows = len(followers)
        text = b" ".join(hashtags)
        likes = _likes(loaded[variant], [text] * rows, [country] * rows, followers)
        assert np.all(np.isfinite(likes)) and np.all(likes >= 0)

    check()


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_beats_the_historical_mean_on_fresh_pupdates(loaded: dict, pooch_exports: dict, variant: str) -> None:
    """Independent of the model card: new pupdates from a seed never used for training."""
    version_dir = latest_version_dir(pooch_exports[variant])
    baseline = json.loads((version_dir / "assets.extra" / "historical_baseline.json").read_text())
    fresh = generate_pupdates(3000, seed=424242)
    actual = np.array([p.likes for p in fresh], dtype=np.float64)
    predicted = _likes(
        loaded[variant], [p.hashtag_text for p in fresh], [p.country for p in fresh], [p.followers for p in fresh]
    ).astype(np.float64)
    model_mae, baseline_mae = np.mean(np.abs(predicted - actual)), np.mean(np.abs(baseline["mean_likes"] - actual))
    model_rmse = np.sqrt(np.mean((predicted - actual) ** 2))
    baseline_rmse = np.sqrt(np.mean((baseline["mean_likes"] - actual) ** 2))
    assert model_mae < baseline_mae and model_rmse < baseline_rmse


@pytest.mark.parametrize("variant", VARIANTS)
def test_warmup_file_is_a_tfrecord_of_prediction_logs(pooch_exports: dict, variant: str) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = latest_version_dir(pooch_exports[variant]) / "assets.extra" / "tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert 0 < len(records) <= 1000
    for raw in records:
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == MODEL_NAME
        assert request.model_spec.signature_name == SIGNATURE_NAME
        assert set(request.inputs) == {"hashtags", "country", "followers"}
        arrays = {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
        assert len({array.shape for array in arrays.values()}) == 1  # one batch dimension shared
        assert arrays["followers"].dtype == np.int64


@pytest.mark.parametrize("variant", VARIANTS)
def test_warmup_requests_run_on_the_export(loaded: dict, pooch_exports: dict, variant: str) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = latest_version_dir(pooch_exports[variant]) / "assets.extra" / "tf_serving_warmup_requests"
    raw = next(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    request = prediction_log_pb2.PredictionLog.FromString(raw).predict_log.request
    inputs = {name: tf.constant(tf.make_ndarray(tensor)) for name, tensor in request.inputs.items()}
    likes = loaded[variant].signatures[SIGNATURE_NAME](**inputs)["likes"].numpy()
    assert likes.shape == inputs["followers"].shape and np.all(np.isfinite(likes))


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_card_and_baseline_describe_the_export(pooch_exports: dict, variant: str) -> None:
    version_dir = latest_version_dir(pooch_exports[variant])
    card = _card(pooch_exports, variant)
    assert card["variant"] == variant and card["model_name"] == MODEL_NAME
    assert card["version"] == int(version_dir.name)
    assert card["training_seconds"] > 0 and card["seed"] is not None and card["rows"] > 0
    learned, historical = card["evaluation"]["machine_learned"], card["evaluation"]["historical_baseline"]
    assert learned["mae"] < historical["mae"] and learned["rmse"] < historical["rmse"]
    assert card["compute_cost"]["batch_1_p50_us"] > 0 and card["compute_cost"]["batch_32_p50_us"] > 0
    assert {"python", "tensorflow"} <= set(card["software"])
    baseline = json.loads((version_dir / "assets.extra" / "historical_baseline.json").read_text())
    assert set(baseline) == {"mean_likes", "per_hashtag", "max_plausible_likes"}
    assert baseline["max_plausible_likes"] >= baseline["mean_likes"] > 0
    assert baseline["per_hashtag"] and all(tag.startswith("#") for tag in baseline["per_hashtag"])


def test_large_does_several_times_the_work_of_small_per_request(pooch_exports: dict) -> None:
    """Structural (no clock): at batch 1 the cost is reading the dense weights."""
    small, large = _card(pooch_exports, "small"), _card(pooch_exports, "large")
    assert large["parameters"]["deep_tower"] >= 100 * small["parameters"]["deep_tower"]
    assert large["parameters"]["total"] >= 10 * small["parameters"]["total"]
    # The ratio measured in one process is recorded in whichever card was exported second.
    ratio = large["cost_ratio_large_to_small"] or small["cost_ratio_large_to_small"]
    assert ratio is not None and {"batch_1", "batch_32"} <= set(ratio)
