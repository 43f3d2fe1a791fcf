"""Saved runs made from known distributions, for the analysis tests.

Latencies are drawn from log-normal distributions whose percentiles are known in closed form,
recorded into hdrh histograms exactly as the recorder does, and saved as TrialRecords with a
manifest as the sweep runner writes them. Tests compare the analysis against the distribution
(or against numpy on the raw draws), never against the analysis's own output.

``python tests/data/synthetic_run.py`` regenerates the committed fixture run ``analysis_run/``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from poochlab.experiments.records import (
    HDR_HIGHEST_US,
    HDR_LOWEST_US,
    HDR_SIGNIFICANT_FIGURES,
    CacheCounts,
    LoadRecord,
    ResourcesRecord,
    TrialRecord,
    Validity,
    Window,
    write_atomically,
)

FIXTURE_RUN = Path(__file__).parent / "analysis_run"
# Held fixed; the runner records them in every trial's factors too.
CONTROLS = {"model_version": 1, "client_library": "fast", "server_threads": 2}


@dataclass
class SyntheticConfig:
    factors: dict[str, Any]
    median_us: float  # log-normal median of successful latencies
    sigma: float = 0.35  # log-normal shape
    throughput_rps: float = 400.0
    hit_ratio: float | None = None  # cache hits answered at median/8 when set
    window_sigma: float = 0.0  # log-normal shift of each window's level: autocorrelated requests
    corrected_scale: float | None = None  # closed loop: corrected histogram = latencies x this
    error_rate: float = 0.0
    invalid_repetitions: tuple[int, ...] = ()
    invalid_kind: str = "generator_limited"
    invalid_reason: str = "generator CPU above 80% (91%)"
    invalid_scale: float = 1.0  # latencies of invalid repetitions x this: they must not reach the numbers
    failed_repetitions: tuple[int, ...] = ()
    overloaded_repetitions: tuple[int, ...] = ()  # valid, but the server fell behind the planned rate
    planned_rate_rps: float | None = None  # open loop at this rate when set
    cache_errors_by_reason: dict[str, int] | None = None  # per trial, when a cache is in use
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config_id(self) -> str:
        text = json.dumps(self.factors, sort_keys=True)
        return "c" + hashlib.sha1(text.encode()).hexdigest()[:8]

    def true_percentile_us(self, percentile: float) -> float:
        """Closed-form percentile of a request's latency (valid when there is no cache mixture).

        A window's log-normal shift times a log-normal latency is log-normal again, with the
        two shapes added in quadrature.
        """
        shape = math.hypot(self.sigma, self.window_sigma)
        return self.median_us * math.exp(shape * NormalDist().inv_cdf(percentile / 100.0))


def encode(values: np.ndarray) -> str:
    histogram = HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_FIGURES)
    unique, counts = np.unique(values, return_counts=True)
    for value, count in zip(unique.tolist(), counts.tolist()):
        histogram.record_value(value, count)
    return histogram.encode().decode("ascii")


def draw_latencies(config: SyntheticConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    level = rng.lognormal(0.0, config.window_sigma) if config.window_sigma else 1.0
    values = rng.lognormal(math.log(config.median_us * level), config.sigma, size=n)
    if config.hit_ratio is not None:
        hits = rng.random(n) < config.hit_ratio
        values[hits] = rng.lognormal(math.log(config.median_us / 8), config.sigma, size=int(hits.sum()))
    return np.maximum(np.rint(values), 1).astype(np.int64)


def write_run(
    folder: Path,
    configs: list[SyntheticConfig],
    repetitions: int = 2,
    windows: int = 4,
    requests_per_window: int = 500,
    seed: int = 1,
    server_timing: bool = True,
    manifest: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Write manifest.json and trials/*.json; return every config's merged raw latencies (us)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    run_id = folder.name
    values_by_config: dict[str, list[np.ndarray]] = {}
    for config in configs:
        for repetition in range(1, repetitions + 1):
            trial_id = f"{config.config_id}-r{repetition}"
            record = TrialRecord(
                run_id=run_id, trial_id=trial_id, config_id=config.config_id, repetition=repetition,
                factors={**CONTROLS, **config.factors}, seed=seed * 1000 + repetition,
                started_at=f"2026-11-27T06:{repetition:02d}:00Z", ended_at=f"2026-11-27T06:{repetition:02d}:30Z",
                load=(LoadRecord(mode="open", rate_rps=config.planned_rate_rps) if config.planned_rate_rps else
                      LoadRecord(mode="closed", users=config.factors.get("users", 4))),
            )
            if repetition in config.failed_repetitions:
                record.status = "failed"
                record.failure_reason = "server exited with code -9 during measurement"
                record.validity = Validity(False, ["server crashed"], ["failed"])
                record.save(folder / "trials" / f"{trial_id}.json")
                continue
            duration = requests_per_window / config.throughput_rps
            for index in range(windows):
                latencies = draw_latencies(config, requests_per_window, rng)
                if repetition in config.invalid_repetitions:
                    latencies = np.rint(latencies * config.invalid_scale).astype(np.int64)
                else:  # only valid trials' latencies are the configuration's expected values
                    values_by_config.setdefault(config.config_id, []).append(latencies)
                errors = int(round(requests_per_window * config.error_rate))
                corrected = (encode(np.rint(latencies * config.corrected_scale).astype(np.int64))
                             if config.corrected_scale else None)
                record.windows.append(Window(index=index, start_s=index * duration, duration_s=duration,
                                             requests=requests_per_window, errors=errors, histogram=encode(latencies),
                                             corrected_histogram=corrected))
            record.stable = True
            record.stable_windows = list(range(windows))
            if server_timing:
                compute = np.maximum(np.rint(rng.lognormal(math.log(config.median_us * 0.4), 0.2, 400)), 1).astype(np.int64)
                queue = np.maximum(np.rint(rng.lognormal(math.log(config.median_us * 0.15), 0.5, 400)), 1).astype(np.int64)
                record.server_compute_histogram = encode(compute)
                record.server_queue_histogram = encode(queue)
            record.client_timing_us = {"encode_us": config.median_us * 0.05, "wait_us": config.median_us * 0.85,
                                       "decode_us": config.median_us * 0.05}
            total = requests_per_window * windows
            if config.hit_ratio is not None:
                hits = int(total * config.hit_ratio)
                record.cache = CacheCounts(hits=hits, misses=total - hits, errors=0)
                if config.cache_errors_by_reason is not None:
                    record.cache.errors = sum(config.cache_errors_by_reason.values())
                    record.cache.errors_by_reason = dict(config.cache_errors_by_reason)
                record.answer_paths = {"model": total - hits, "cache": hits}
            else:
                record.answer_paths = {"model": total}
            # As older records hold it (one figure, not a list per worker): analysis reads it as saved.
            record.resources = ResourcesRecord.from_dict({"server_cpu_s": 0.002 * total / 100, "generator_cpu_percent": 35.0,
                                                          "energy_joules": 0.01 * total, "energy_method": "estimate"})
            if repetition in config.invalid_repetitions:
                record.validity.invalidate(config.invalid_reason, config.invalid_kind)  # type: ignore[arg-type]
            if repetition in config.overloaded_repetitions:
                record.validity.server_overloaded = True
                record.validity.findings.append("server fell behind: throughput below the planned rate, requests queued")
            record.save(folder / "trials" / f"{trial_id}.json")

    spec_factors: dict[str, list[Any]] = {}
    for config in configs:
        for name, value in config.factors.items():
            spec_factors.setdefault(name, [])
            if value not in spec_factors[name]:
                spec_factors[name].append(value)
    document = {
        "run_id": run_id,
        "spec_path": "experiments/synthetic.toml",
        "spec": {"name": "synthetic", "factors": spec_factors,
                 "controls": dict(CONTROLS),
                 "design": "full_factorial", "repetitions": repetitions},
        "started_at": "2026-11-27T06:00:00Z",
        "ended_at": "2026-11-27T06:40:00Z",
        "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
        "versions": {"poochlab": "0.1.0", "tensorflow": "2.21.0", "grpcio": "1.85.0", "locust": "2.47.0"},
        "python": "3.11.2",
        "platform": {"cpu_model": "AMD EPYC 7B13", "cores": 2, "kernel": "6.1.0-synthetic"},
        "seeds": {"sweep": seed, "analysis": 7},
        "server_kind": "lab",
        "server_commands": [{"server_config": "s1", "kind": "lab", "at": "2026-11-27T06:00:01Z", "binary": None,
                             "command": ["tensorflow_model_server", "--port=8500", "--rest_api_port=8501",
                                         "--model_config_file=configs/models.config"]}],
        "placement": {"server_cpus": [0], "generator_cpus": [1]},
        "p99_budget_ms": None,
        "generator_floor": _write_floor(folder, rng),
        "calibration": {},
    }
    document.update(manifest or {})
    write_atomically(folder / "manifest.json", json.dumps(document, indent=1, sort_keys=True))
    return {cid: np.concatenate(parts) for cid, parts in values_by_config.items()}  # valid trials only


FLOOR_MEDIAN_US = {"rest": 210.0, "grpc": 470.0}


def _write_floor(folder: Path, rng: np.random.Generator) -> dict[str, Any]:
    """The runner's generator_floor entries: gRPC's as a saved floor record, REST's as a summary only."""
    floors: dict[str, Any] = {}
    for protocol, median in FLOOR_MEDIAN_US.items():
        key = f"{protocol}-fast-json-x1-users2"
        values = draw_latencies(SyntheticConfig({}, median_us=median, sigma=0.3), 2000, rng)
        entry: dict[str, Any] = {"factors": {"protocol": protocol}, "valid": True, "reasons": []}
        if protocol == "grpc":
            record = TrialRecord(run_id=folder.name, trial_id=f"floor-{key}", config_id=f"floor-{key}", repetition=0,
                                 factors={"protocol": protocol}, seed=0, load=LoadRecord(mode="closed", users=2),
                                 stable=True, stable_windows=[0],
                                 windows=[Window(0, 0.0, 2.0, len(values), 0, encode(values))])
            record.save(folder / "floor" / f"{key}.json")
            entry["record"] = f"floor/{key}.json"
        else:
            entry["summary_us"] = {"count": float(len(values)), "p50_us": float(np.percentile(values, 50)),
                                   "p99_us": float(np.percentile(values, 99)), "max_us": float(values.max())}
        floors[key] = entry
    return floors


def fixture_configs() -> list[SyntheticConfig]:
    """The committed fixture: protocol x cache x model variant x load level, 16 configurations."""
    configs = []
    for variant, base in (("small", 1500.0), ("large", 4000.0)):
        for protocol, extra in (("rest", 0.0), ("grpc", 400.0)):
            for cache in ("off", "on"):
                for load, users, slow in (("light", 2, 1.0), ("heavy", 8, 1.7)):
                    median = (base + extra) * slow
                    configs.append(SyntheticConfig(
                        factors={"protocol": protocol, "cache": cache, "model_variant": variant,
                                 "load_level": load, "users": users},
                        median_us=median,
                        throughput_rps=users / (median / 1e6) * (2.5 if cache == "on" else 1.0) * 0.6,
                        hit_ratio=0.8 if cache == "on" else None,
                        invalid_repetitions=(2,) if (variant, protocol, cache, load) == ("large", "grpc", "off", "heavy") else (),
                    ))
    configs[0].failed_repetitions = (3,)
    return configs


if __name__ == "__main__":
    import shutil

    shutil.rmtree(FIXTURE_RUN, ignore_errors=True)
    write_run(FIXTURE_RUN, fixture_configs(), repetitions=3, windows=4, requests_per_window=300, seed=11)
    print(f"wrote {FIXTURE_RUN}")
