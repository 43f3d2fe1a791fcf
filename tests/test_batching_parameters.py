"""``--batching_parameters_file``: TF Serving's text syntax, defaults and start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from poochlab.serving.batching import (
    BatchingParameters, load_batching_parameters, parse_batching_parameters,
)
from poochlab.serving.batching.parameters import default_num_batch_threads

CONFIGS = Path(__file__).resolve().parents[1] / "serving_configs" / "batching"


def test_no_file_gives_tf_servings_defaults():
    params = load_batching_parameters(None)
    assert params.max_batch_size == 1000
    assert params.batch_timeout_micros == 0
    assert params.max_enqueued_batches == 10
    assert params.num_batch_threads == default_num_batch_threads() >= 1
    assert params.allowed_batch_sizes == ()
    assert params.pad_variable_length_inputs is False
    assert params.enable_large_batch_splitting is False
    assert params.max_execution_batch_size == 1000
    assert params.thread_pool_name == "batch_threads"


def test_full_file_in_any_order_with_comments():
    params = parse_batching_parameters(
        """
        # a comment
        allowed_batch_sizes: 8
        pad_variable_length_inputs: true
        batch_timeout_micros { value: 1500 }  # trailing comment
        max_batch_size { value: 32 }
        allowed_batch_sizes: [16, 32]
        num_batch_threads: { value: 3 }
        max_enqueued_batches < value: 4 >
        thread_pool_name { value: "pooch_batches" }
        """,
        "b.config",
    )
    assert params == BatchingParameters(
        max_batch_size=32, batch_timeout_micros=1500, max_enqueued_batches=4,
        num_batch_threads=3, thread_pool_name="pooch_batches",
        allowed_batch_sizes=(8, 16, 32), pad_variable_length_inputs=True)


def test_splitting_defaults_max_execution_batch_size_to_max_batch_size():
    params = parse_batching_parameters(
        "max_batch_size { value: 64 } enable_large_batch_splitting { value: true }", "s")
    assert params.enable_large_batch_splitting is True
    assert params.max_execution_batch_size == 64


def test_max_execution_batch_size_is_ignored_without_splitting_as_in_tf_serving():
    params = parse_batching_parameters(
        "max_batch_size { value: 64 } max_execution_batch_size { value: 8 }", "s")
    assert params.max_execution_batch_size == 64


def test_zero_max_enqueued_batches_means_one_without_splitting_as_in_tf_serving():
    params = parse_batching_parameters("max_enqueued_batches { value: 0 }", "s")
    assert params.max_enqueued_batches == 1


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.config")), ids=lambda path: path.name)
def test_every_shipped_parameter_set_loads(config: Path):
    params = load_batching_parameters(config)
    assert params.num_batch_threads >= 1


def test_shipped_reference_set_waits_up_to_1ms_for_32_rows():
    params = load_batching_parameters(CONFIGS / "timeout1ms.config")
    assert (params.max_batch_size, params.batch_timeout_micros) == (32, 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_batchsize { value: 32 }", 'no field named "max_batchsize"'),
        ("max_batch_size: 32", "max_batch_size { value: 32 }"),
        ('max_batch_size { value: "many" }', "Couldn't parse integer"),
        ("pad_variable_length_inputs: maybe", "pad_variable_length_inputs"),
        ("max_batch_size { value: 0 }", "field 'max_batch_size': must be positive; was 0"),
        ("max_batch_size { value: -4 }", "field 'max_batch_size': must be positive"),
        ("num_batch_threads { value: 0 }", "field 'num_batch_threads': must be positive; was 0"),
        ("batch_timeout_micros { value: -1 }", "field 'batch_timeout_micros': must be non-negative"),
        ("max_enqueued_batches { value: -1 }", "field 'max_enqueued_batches': must be positive"),
        ("max_batch_size { value: 32 } allowed_batch_sizes: 16 allowed_batch_sizes: 8 "
         "allowed_batch_sizes: 32", "field 'allowed_batch_sizes': entries must be monotonically"),
        ("max_batch_size { value: 32 } allowed_batch_sizes: 8 allowed_batch_sizes: 16",
         "field 'allowed_batch_sizes': last entry must match max_batch_size; last entry was 16; "
         "expected 32"),
        ("max_batch_size { value: 32 } allowed_batch_sizes: 0 allowed_batch_sizes: 32",
         "field 'allowed_batch_sizes': entries must be positive"),
        ("max_batch_size { value: 32 } enable_large_batch_splitting { value: true } "
         "max_execution_batch_size { value: 64 }",
         "field 'max_execution_batch_size': when enable_large_batch_splitting is true"),
        ("enable_large_batch_splitting { value: true } max_execution_batch_size { value: 0 }",
         "field 'max_execution_batch_size': must be positive"),
        ("max_batch_size { value: 64 } enable_large_batch_splitting { value: true } "
         "max_execution_batch_size { value: 16 } allowed_batch_sizes: 8 allowed_batch_sizes: 64",
         "last entry must be equal to max_execution_batch_size; last entry was 64; expected 16"),
        ("enable_large_batch_splitting { value: true } max_enqueued_batches { value: 0 }",
         "field 'max_enqueued_batches': must be positive; was 0"),
    ],
)
def test_invalid_files_fail_naming_the_file_and_field(text: str, expected: str):
    with pytest.raises(ValueError) as raised:
        parse_batching_parameters(text, "conf/batching.config")
    message = str(raised.value)
    assert message.startswith("conf/batching.config: ")
    assert expected in message


def test_unreadable_file_names_its_path(tmp_path: Path):
    missing = tmp_path / "nope.config"
    with pytest.raises(ValueError, match=r"nope\.config: cannot read batching parameters"):
        load_batching_parameters(missing)


def test_file_errors_name_the_path(tmp_path: Path):
    path = tmp_path / "bad.config"
    path.write_text("max_batch_size { value: 8 }\nnum_batch_threads { value: 0 }\n")
    with pytest.raises(ValueError, match=rf"^{path}: field 'num_batch_threads'"):
        load_batching_parameters(path)


def test_constructor_validates_too():
    with pytest.raises(ValueError, match="allowed_batch_sizes"):
        BatchingParameters(max_batch_size=8, allowed_batch_sizes=(4,))


@pytest.mark.parametrize(("rows", "padded"), [(1, 4), (4, 4), (5, 8), (9, 16), (32, 32)])
def test_padded_size_is_the_next_allowed_size(rows: int, padded: int):
    params = BatchingParameters(max_batch_size=32, allowed_batch_sizes=(4, 8, 16, 32))
    assert params.padded_size(rows) == padded
