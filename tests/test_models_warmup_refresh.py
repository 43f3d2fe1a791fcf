"""`make model` (train --if-missing) exports again an export whose warm-up no batching set fits."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest


def test_an_export_with_a_too_large_warmup_request_is_exported_again(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    import tensorflow as tf

    from poochlab.models.commands import train
    from poochlab.models.facts import generate_pupdates
    from poochlab.models.warmup_records import WARMUP_DIR, WARMUP_FILE, predict_request, record_rows
    from tensorflow_serving.apis import prediction_log_pb2

    # Version 1 as exports were before the cap: a 64-row warm-up request.
    old = tmp_path / "base" / "pooch_predictor" / "1"
    (old / WARMUP_DIR).mkdir(parents=True)
    (old / "saved_model.pb").write_bytes(b"old version 1")
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(predict_request(generate_pupdates(64, 0)))
    with tf.io.TFRecordWriter(str(old / WARMUP_DIR / WARMUP_FILE)) as writer:
        writer.write(log.SerializeToString())
    assert record_rows(old) == [64]

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    assert train.run(parser.parse_args(["--variant", "small", "--base-path", str(tmp_path / "base"),
                                        "--if-missing"])) == 0
    assert "holds a 64-row warm-up request, more than max_batch_size 32" in capsys.readouterr().out
    new = tmp_path / "base" / "pooch_predictor" / "2"
    assert max(record_rows(new)) == 32
    assert (old / "saved_model.pb").read_bytes() == b"old version 1"  # never overwritten
