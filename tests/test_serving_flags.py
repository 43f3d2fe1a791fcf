"""TF Serving's command line: names, syntax, defaults, warnings and start-up errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from poochlab.serving.flags import FlagError, parse_flags

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps


def test_defaults_are_tf_servings():
    options = parse_flags(["--model_base_path=/models/m"])
    assert (options.port, options.rest_api_port, options.model_name) == (8500, 0, "default")
    assert options.file_system_poll_wait_seconds == 1
    assert options.rest_api_timeout_in_ms == 30000
    assert options.enable_model_warmup is True and options.enable_batching is False
    assert options.lab_bind_address == "127.0.0.1"  # unlike TF Serving, loopback unless asked
    assert options.lab_max_request_bytes == 64 * 1024 * 1024
    assert options.enable_signature_method_name_check is False


def test_the_signature_method_name_check_is_a_flag_the_server_implements():
    options = parse_flags(["--model_base_path=/m", "--enable_signature_method_name_check=true"])
    assert options.enable_signature_method_name_check is True and options.ignored_flags == []


def test_flag_syntax_values_and_booleans():
    options = parse_flags(["--port=9000", "--rest_api_port=9001", "--model_config_file=/m.config",
                           "--enable_batching", "--enable_model_warmup=false", "--lab_bind_address=0.0.0.0",
                           "--grpc_channel_arguments=grpc.max_concurrent_streams=10,grpc.http2.x=y"])
    assert (options.port, options.rest_api_port, options.enable_batching) == (9000, 9001, True)
    assert options.enable_model_warmup is False and options.lab_bind_address == "0.0.0.0"


def test_real_tf_serving_flags_it_does_not_implement_are_collected_for_a_warning():
    options = parse_flags(["--model_base_path=/m", "--rest_api_enable_cors_support=true", "--ssl_config_file=x"])
    assert options.ignored_flags == ["rest_api_enable_cors_support", "ssl_config_file"]


@pytest.mark.parametrize("argv, fault", [
    (["--model_base_path=/m", "--no_such_flag=1"], "no_such_flag"),
    (["--model_base_path=/m", "--port=eighty"], "port"),
    (["--model_base_path=/m", "--enable_batching=maybe"], "enable_batching"),
    (["--model_base_path=/m", "--batching_parameters_file=b.config"], "--enable_batching"),
    (["--model_base_path=/m", "--port=8500", "--rest_api_port=8500"], "different"),
    ([], "model_base_path"),
    (["--model_base_path=/m", "--grpc_channel_arguments=novalue"], "grpc_channel_arguments"),
])
def test_bad_command_lines_are_errors_naming_the_flag(argv, fault):
    with pytest.raises(FlagError) as error:
        parse_flags(argv)
    assert fault in str(error.value)


def run_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poochlab.serving", *args], capture_output=True, text=True, timeout=120)


def test_version_identifies_the_lab_server():
    result = run_server("--version")
    assert result.returncode == 0
    assert "poochlab-lab-server" in result.stdout and "not TensorFlow Serving" in result.stdout


def test_unknown_flag_exits_with_an_error_and_no_traceback():
    result = run_server("--model_base_path=/m", "--bogus=1")
    assert result.returncode == 2
    assert "bogus" in result.stderr and "Traceback" not in result.stderr


def test_poochlab_serve_forwards_to_the_server():
    result = subprocess.run([sys.executable, "-m", "poochlab.cli", "serve", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "poochlab-lab-server" in result.stdout
