"""From a spec to the ordered list of trials a run will measure.

Repetitions are randomised by the spec's seed the way a careful experimenter blocks a design:
trials that share a server configuration form a block (the server is not restarted for each
trial), the blocks run in a fresh random order in each repetition, and trials are shuffled
within their block, so drift over time does not masquerade as an effect.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from poochlab.experiments.sweep.factors import FACTORS, SERVER_FACTORS, apply_implied, stage_fields
from poochlab.experiments.sweep.server_configs import ServerConfig
from poochlab.experiments.sweep.spec import SweepSpec

# Rough costs for the dry-run estimate (seconds, measured on our 2-core machines).
SERVER_START_S = 12.0
TRIAL_OVERHEAD_S = 1.5
FLOOR_S_PER_CLIENT = 4.0


@dataclass(frozen=True)
class Trial:
    trial_id: str
    config_id: str  # identical for every repetition of one point
    repetition: int  # 1-based
    factors: dict[str, Any] = field(hash=False)  # every factor: varied and controlled
    server: ServerConfig = field(hash=False)
    search_steps: int = 0  # > 0: a rate search of this many trials (ids <trial_id>-s<k>)

    @property
    def measurements(self) -> int:
        return self.search_steps or 1

    def label(self, varied: list[str]) -> str:
        return ", ".join(f"{name}={self.factors[name]}" for name in varied)


def design_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The varied factors' combinations: all of them, or a seeded random sample."""
    names = list(spec.factors)
    sizes = [len(spec.factors[n]) for n in names]
    total = math.prod(sizes)
    if spec.design == "random":
        indices = sorted(random.Random(spec.seed).sample(range(total), spec.samples or total))
    else:
        indices = list(range(total))
    points = []
    for index in indices:
        point = {}
        for name, size in zip(reversed(names), reversed(sizes)):
            index, digit = divmod(index, size)
            point[name] = spec.factors[name][digit]
        points.append({n: point[n] for n in names})
    return points


def resolve_factors(spec: SweepSpec, point: dict[str, Any]) -> dict[str, Any]:
    """A point with the controls filled in and the values other factors imply made explicit
    (the registry's ``implied`` rules: gRPC's one client library, a closed loop's one user)."""
    factors = apply_implied({**spec.controls, **point})
    return {name: value for name, value in factors.items() if value is not None}


def server_config(factors: dict[str, Any]) -> ServerConfig:
    """The server-side factors as a ServerConfig; one not given takes its registry default."""
    defaults = {name: FACTORS[name].default for name in SERVER_FACTORS}
    return ServerConfig(**stage_fields("server", {**defaults, **factors}))


def config_id(factors: dict[str, Any]) -> str:
    canonical = json.dumps(factors, sort_keys=True, separators=(",", ":"))
    return "c" + hashlib.sha256(canonical.encode()).hexdigest()[:10]


def plan_trials(spec: SweepSpec) -> list[Trial]:
    """Every trial of the run, in the order it will run."""
    configs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for point in design_points(spec):
        factors = resolve_factors(spec, point)
        key = config_id(factors)
        if key not in seen:  # e.g. grpc x {lean, requests} collapse to one gRPC point
            seen.add(key)
            configs.append(factors)
    trials: list[Trial] = []
    for repetition in range(1, spec.repetitions + 1):
        rng = random.Random(f"{spec.seed}/{repetition}")
        blocks: dict[ServerConfig, list[dict[str, Any]]] = {}
        for factors in configs:
            blocks.setdefault(server_config(factors), []).append(factors)
        order = list(blocks)
        rng.shuffle(order)
        for server in order:
            members = list(blocks[server])
            rng.shuffle(members)
            for factors in members:
                cid = config_id(factors)
                trials.append(Trial(f"r{repetition}-{cid}", cid, repetition, factors, server,
                                    spec.search.steps if spec.search else 0))
    return trials


def server_starts(trials: list[Trial]) -> int:
    starts, current = 0, None
    for trial in trials:
        if trial.server != current:
            starts, current = starts + 1, trial.server
    return starts


def estimate_duration_s(spec: SweepSpec, trials: list[Trial]) -> tuple[float, float]:
    """(shortest, longest) expected wall time: stable trials stop early, unstable ones extend."""
    low, high = spec.profile.trial_bounds_s
    fixed = server_starts(trials) * SERVER_START_S + len(trials) * TRIAL_OVERHEAD_S
    clients = {(t.factors.get("protocol"), t.factors.get("client_library")) for t in trials}
    fixed += FLOOR_S_PER_CLIENT * len(clients)
    if spec.needs_calibration():
        fixed += SERVER_START_S + spec.profile.calibration_s
    measurements = sum(t.measurements for t in trials)
    return fixed + low * measurements, fixed + high * measurements


def format_plan(spec: SweepSpec, trials: list[Trial]) -> str:
    varied = list(spec.factors)
    low, high = estimate_duration_s(spec, trials)
    lines = [
        f"sweep {spec.name!r} from {spec.path}: {spec.design}, {len(trials) // spec.repetitions} "
        f"configurations x {spec.repetitions} repetitions = {len(trials)} trials, "
        f"{server_starts(trials)} server starts, profile {spec.profile.name}",
        f"estimated duration: {low / 60:.1f} to {high / 60:.1f} minutes",
        "controls: " + ", ".join(f"{k}={v}" for k, v in spec.controls.items() if k not in varied),
        *([f"rate search: {spec.search.steps} trials per configuration and repetition, bisecting "
           f"{spec.search.low_rps:g} to {spec.search.high_rps:g} requests/s for p99 <= {spec.p99_budget_ms:g} ms"]
          if spec.search else []),
        "",
        f"{'#':>4}  {'trial':<18} {'server':<28} factors",
    ]
    for number, trial in enumerate(trials, 1):
        lines.append(f"{number:>4}  {trial.trial_id:<18} {trial.server.config_id:<28} {trial.label(varied)}")
    return "\n".join(lines)
