"""Holding idle CPUs awake while the lab measures ([load] cpus_awake): the kernel's CPU latency
request is held for exactly as long as asked, a machine without it runs as it is and says why,
and the spec, the manifest and the report carry the choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from poochlab.experiments.recording.cpu_wake import CPU_LATENCY_DEVICE, CpusAwake, current_cpu_latency_us
from poochlab.experiments.sweep.spec import SpecError, load_spec


def test_the_request_holds_every_cpu_at_zero_while_held_and_is_released_after() -> None:
    # The kernel reports the strictest request of all holders: 0 while ours is held.
    before = current_cpu_latency_us()
    assert before is not None, f"{CPU_LATENCY_DEVICE} is readable on the lab's machines (Linux, root)"
    with CpusAwake(True) as state:
        assert state.held and state.asked
        assert current_cpu_latency_us() == 0
    assert current_cpu_latency_us() == before


def test_not_asked_leaves_the_cpus_alone() -> None:
    before = current_cpu_latency_us()
    with CpusAwake(False) as state:
        assert (state.asked, state.held) == (False, False)
        assert current_cpu_latency_us() == before
    assert state.as_record() == {"asked": False, "held": False, "detail": "not asked: idle CPUs may halt"}


def test_a_machine_without_the_device_runs_as_it_is_and_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "no_cpu_dma_latency"
    with CpusAwake(True, device=missing) as state:
        assert (state.asked, state.held) == (True, False)
        assert str(missing) in state.detail and state.detail.startswith("not held")
    assert current_cpu_latency_us(missing) is None


def test_the_spec_takes_a_boolean_and_names_the_key_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    body = '[sweep]\nname = "awake"\n[factors]\nusers = [1]\n[load]\n'
    path.write_text(body + "cpus_awake = true\n")
    spec = load_spec(path)
    assert spec.cpus_awake is True and spec.to_dict()["cpus_awake"] is True
    path.write_text(body)
    assert load_spec(path).cpus_awake is False  # the default: idle CPUs may halt
    path.write_text(body + 'cpus_awake = "yes"\n')
    with pytest.raises(SpecError, match=r"load\.cpus_awake.*true or false"):
        load_spec(path)


def test_the_report_says_whether_the_cpus_were_kept_awake() -> None:
    from poochlab.experiments.analysis.report_document import _cpus_awake

    assert _cpus_awake({"asked": True, "held": True, "detail": "held"}).startswith("kept awake")
    assert _cpus_awake({"asked": True, "held": False, "detail": "not held: cannot open /dev/x: Permission denied"}) \
        == "not held: cannot open /dev/x: Permission denied"
    assert _cpus_awake(None).startswith("not recorded")
