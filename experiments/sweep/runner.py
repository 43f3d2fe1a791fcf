"""Runs a planned sweep: servers, Redis, calibration, the generator's floor, then every trial.

Each trial's record is saved atomically the moment it ends, so Ctrl-C or a crashed server
loses at most the trial in flight, which is recorded as failed with its reason. ``resume``
continues a run folder without repeating finished trials.
"""

from __future__ import annotations

import json
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from poochlab.experiments.load.calibration import CalibrationError
from poochlab.experiments.recording.cpu_wake import CpusAwake
from poochlab.experiments.records import TrialRecord, write_atomically
from poochlab.experiments.sweep.manifest import Manifest, utc_now
from poochlab.experiments.sweep.plan import Trial, plan_trials
from poochlab.experiments.sweep.redis_service import RedisServer, sweep_redis
from poochlab.experiments.sweep.servers import ServerPool
from poochlab.experiments.sweep.spec import SweepSpec

if TYPE_CHECKING:  # imported at run time inside run(), after the spec is checked
    from poochlab.experiments.sweep.trial_execution import RunContext

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_ROOT = REPO / "models" / "servables"
DEFAULT_FACTS = REPO / "models" / "data"


class RunError(RuntimeError):
    """The run cannot go on (not one trial's failure: those are recorded and the run goes on)."""


@dataclass
class RunSummary:
    run_dir: Path
    planned: int
    measured: int
    skipped: int
    failed: int
    interrupted: bool


def trial_path(run_dir: Path, trial_id: str) -> Path:
    return run_dir / "trials" / f"{trial_id}.json"


def finished_trials(run_dir: Path) -> set[str]:
    """Trials whose saved record is complete; an interrupted trial is measured again."""
    done = set()
    for path in (run_dir / "trials").glob("*.json"):
        try:
            record = TrialRecord.read(path)
        except ValueError:
            continue  # unreadable: measure again rather than trust it
        if record.status == "ok" or (record.failure_reason or "").split(":")[0] != "interrupted":
            done.add(record.trial_id)
    return done


def _save_plan(run_dir: Path, spec: SweepSpec, trials: list[Trial], resume: bool) -> None:
    plan_file = run_dir / "plan.json"
    plan: dict[str, Any] = {"spec": spec.to_dict(), "trials": [{"trial_id": t.trial_id, "config_id": t.config_id,
                                                "repetition": t.repetition, "factors": t.factors,
                                                "server_config": t.server.config_id} for t in trials]}
    if resume and plan_file.exists():
        saved = json.loads(plan_file.read_text())
        if [t["trial_id"] for t in saved["trials"]] != [t["trial_id"] for t in plan["trials"]]:
            raise RunError(f"{plan_file}: the spec changed since this run started; "
                           "resume needs the same spec (or start a new run)")
        return
    write_atomically(plan_file, json.dumps(plan, indent=1, sort_keys=True))


class SweepRunner:
    """Carries out a :class:`SweepSpec` into ``run_dir`` (see the module docstring)."""

    def __init__(self, spec: SweepSpec, run_dir: Path, *, resume: bool = False,
                 model_root: Path = DEFAULT_MODEL_ROOT, facts_dir: Path = DEFAULT_FACTS,
                 progress: Callable[[Trial, int, int], None] | None = None,
                 show_progress_bar: bool = True) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.resume = resume
        self.model_root = model_root
        self.facts_dir = facts_dir
        self.progress = progress
        self.show_progress_bar = show_progress_bar
        self.trials = plan_trials(spec)
        self._bar: Any = None  # the progress bar while trials run
        self._trial_text = ""
        self._in_flight: Trial | None = None  # the trial being measured, recorded if interrupted

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> RunSummary:
        from poochlab.experiments.sweep import trial_execution as execution

        if self.run_dir.exists() and not self.resume and any(self.run_dir.iterdir()):
            raise RunError(f"{self.run_dir} already holds a run: pass --resume to continue it, or another --run-id")
        if self.resume and not (self.run_dir / "manifest.json").exists():
            raise RunError(f"{self.run_dir}: nothing to resume (no manifest.json)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _save_plan(self.run_dir, self.spec, self.trials, self.resume)
        done = finished_trials(self.run_dir) if self.resume else set()
        manifest = self._manifest()
        todo = [t for t in self.trials if t.trial_id not in done]
        summary = RunSummary(self.run_dir, len(self.trials), 0, len(self.trials) - len(todo), 0, False)
        if not todo:
            manifest.update(ended_at=utc_now())
            return summary

        redis = None
        if any(t.factors.get("cache") == "on" for t in self.trials) or any(
                f.kind == "redis_outage" for f in self.spec.faults):
            redis = sweep_redis(self.spec.redis_url, self.run_dir / "redis")
            redis.start()
            manifest.update(redis={"url": redis.url, "started_by_lab": isinstance(redis, RedisServer)})
        servers = ServerPool(self.spec, self.run_dir, self.model_root, manifest)
        context = execution.RunContext(spec=self.spec, run_dir=self.run_dir, manifest=manifest,
                                       servers=servers, redis=redis, facts_dir=self.facts_dir,
                                       model_root=self.model_root)
        self._in_flight = None
        restore = _sigterm_as_interrupt()
        try:
            with CpusAwake(self.spec.cpus_awake) as awake:  # from calibration to the last trial
                manifest.update(cpus_awake=awake.as_record())
                try:
                    execution.prepare_run(context, self.trials)
                except CalibrationError as error:  # the rig cannot drive this sweep: say why, run nothing
                    raise RunError(str(error)) from None
                for trial in self._iterate(todo):
                    for record, measured_now in self._records_of(context, trial, done):
                        if not measured_now:  # a search step a resumed run already holds
                            summary.skipped += 1
                            continue
                        record.save(trial_path(self.run_dir, record.trial_id))
                        summary.measured += 1
                        summary.failed += record.status == "failed"
        except KeyboardInterrupt:
            summary.interrupted = True
            if self._in_flight is not None:
                trial = self._in_flight
                record = execution.failed_record(context, trial, "interrupted: the sweep was stopped "
                                                 "during this trial; `poochlab sweep --resume` measures it again")
                record.save(trial_path(self.run_dir, trial.trial_id))
        finally:
            restore()
            servers.stop()
            if redis is not None:
                redis.stop()
            manifest.update(ended_at=utc_now(), interrupted=summary.interrupted)
        return summary

    def _records_of(self, context: RunContext, trial: Trial, done: set[str]) -> Iterator[tuple[TrialRecord, bool]]:
        """(record, measured now): one, or one per step of a rate search, where a step the run
        already holds (``done``, on resume) is read back instead of measured again."""
        from poochlab.experiments.sweep import trial_execution as execution

        if not trial.search_steps:
            yield self._measure(context, trial), True
            return

        def saved(trial_id: str) -> TrialRecord | None:
            return TrialRecord.read(trial_path(self.run_dir, trial_id)) if trial_id in done else None

        yield from execution.search_steps(context, trial, lambda step: self._measure(context, step), saved)

    def _measure(self, context: RunContext, trial: Trial) -> TrialRecord:
        from poochlab.experiments.sweep import trial_execution as execution

        self._in_flight = trial
        try:
            record = execution.measure(context, trial, self._window_progress)
            self._in_flight = None
            return record
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self._in_flight = None  # one trial's failure must not end the sweep
            reason = f"{type(error).__name__}: {error}"
            log_tail = context.servers.log_tail_if_dead()
            if log_tail:
                reason = f"server crashed: {reason}\n--- server log tail ---\n{log_tail}"
            record = execution.failed_record(context, trial, reason)
            record.resources.traceback = traceback.format_exc(limit=8)
            return record

    def _manifest(self) -> Manifest:
        from poochlab.experiments.sweep.factors import describe_factors

        if self.resume:
            manifest = Manifest.load(self.run_dir)
            manifest.data.setdefault("resumed_at", []).append(utc_now())
            manifest.save()
            return manifest
        return Manifest.create(
            self.run_dir, REPO, spec_path=str(self.spec.path), spec=self.spec.to_dict(),
            seeds={"sweep": self.spec.seed}, server_kind=self.spec.server_kind,
            p99_budget_ms=self.spec.p99_budget_ms,
            # What each factor meant for this run, so later analysis reads it from here.
            factor_registry=describe_factors(),
        )

    def _iterate(self, todo: list[Trial]) -> Iterator[Trial]:
        bar = None
        if self.show_progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=sum(t.measurements for t in todo), unit="trial", dynamic_ncols=True,
                       bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} trials [{elapsed}<{remaining}] {postfix}")
        self._bar = bar
        varied = list(self.spec.factors)
        for number, trial in enumerate(todo, 1):
            self._trial_text = f"rep {trial.repetition}: {trial.label(varied)}"
            if bar is not None:
                bar.set_postfix_str(self._trial_text, refresh=True)
            if self.progress is not None:
                self.progress(trial, number, len(todo))
            yield trial
            if bar is not None:
                bar.update(trial.measurements)
        if bar is not None:
            bar.close()
        self._bar = None

    def _window_progress(self, window: dict[str, Any]) -> None:
        """The live line: the current window's throughput, p99 and anything already wrong."""
        if self._bar is None:
            return
        text = (f"{self._trial_text} | window {window['window'] + 1}: {window['throughput_rps']:.0f} req/s, "
                f"p99 {window['p99_us'] / 1000:.2f} ms")
        if window.get("problem"):
            text += f" | {window['problem']}"
        self._bar.set_postfix_str(text, refresh=True)


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Treat SIGTERM like Ctrl-C, so a killed sweep still records its trial in flight."""
    try:
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handler)

        def restore() -> None:
            signal.signal(signal.SIGTERM, previous)

        return restore
    except ValueError:  # not the main thread
        return lambda: None


def run_summary_text(summary: RunSummary) -> str:
    state = "interrupted" if summary.interrupted else "finished"
    return (f"{state}: {summary.measured} trials measured ({summary.failed} failed), "
            f"{summary.skipped} already done, of {summary.planned} planned -> {summary.run_dir}")
