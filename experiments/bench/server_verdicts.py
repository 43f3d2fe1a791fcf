"""``bench server``'s verdicts: the lab server against the sum of its parts, and where the gap
comes from.

Targets: p50(lab) <= 1.15 x (p50(echo of its stack) + p50(compute)) and
CPU/req(lab) <= 1.15 x (CPU/req(echo) + CPU/call(model, 8 threads)), for REST and gRPC; a
target whose rows disagreed between rounds is flagged rather than trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

from poochlab.experiments.bench.server_results import Results, fmt

TARGET_RATIO = 1.15
# Rounds of one row further apart than this (max / min) make a verdict from it untrustworthy:
# a neighbour's burst hit some rounds, and the median may sit on either side of the limit.
NOISY_SPREAD = 1.2
# The two figures every target and ratio is about: (what, Row attribute).
MEASURES = (("p50 at c=1", "p50_ms"), ("server CPU/request at c=8", "cpu_ms_per_request"))


@dataclass
class Check:
    """One target: the lab's value, its limit, and how much the rounds agreed."""

    what: str
    measured: float
    limit: float
    spread: float  # the largest max/min over rounds among the rows it is computed from

    @property
    def met(self) -> bool:
        return self.measured <= self.limit

    @property
    def trusted(self) -> bool:
        return self.spread <= NOISY_SPREAD

    @property
    def verdict(self) -> str:
        text = "yes" if self.met else "NO"
        if not self.trusted:
            text += f" (rounds differ by up to {(self.spread - 1) * 100:.0f}%: rerun when the machine is quiet)"
        return text


def checks(results: Results) -> list[Check]:
    """The four targets: lab <= 1.15 x (matching echo + compute), p50 and CPU."""
    rows = results.rows
    compute = rows["compute"]
    out = []
    for api in ("rest", "grpc"):
        lab, echo = rows[f"lab_{api}"], rows[f"{api}_echo"]
        for what, attribute in MEASURES:
            lab_value, echo_value, compute_value = (getattr(row, attribute) for row in (lab, echo, compute))
            assert lab_value is not None and echo_value is not None and compute_value is not None
            spread = max(results.spread(key, attribute) for key in (f"lab_{api}", f"{api}_echo", "compute"))
            out.append(Check(f"{api.upper()} {what} (ms)", lab_value, TARGET_RATIO * (echo_value + compute_value),
                             spread))
    return out


def gap_split(results: Results) -> list[tuple[str, float, float]]:
    """(what, echo_model / (echo + compute), lab / echo_model): echo_model is the echo server
    calling the model once per request, compute the model-call baseline (a).

    The first ratio is what doing both in one process costs on this machine (no lab code in
    it); the second is the lab server's own work beyond that. Their product is the target's
    ratio, so this says which of the two keeps a target out of reach.
    """
    rows = results.rows
    compute = rows["compute"]
    out = []
    for api in ("rest", "grpc"):
        lab, echo, echo_model = rows[f"lab_{api}"], rows[f"{api}_echo"], rows[f"{api}_echo_model"]
        for what, attribute in MEASURES:
            parts = [getattr(row, attribute) for row in (lab, echo, echo_model, compute)]
            if any(part is None for part in parts):
                continue
            lab_value, echo_value, echo_model_value, compute_value = parts
            out.append((f"{api.upper()} {what}", echo_model_value / (echo_value + compute_value),
                        lab_value / echo_model_value))
    return out


def format_report(results: Results) -> str:
    lines = ["| what | p50 at c=1 (ms) | server CPU/request at c=8 (ms) | throughput at c=8 (/s) "
             "| in-server compute p50 at c=1 (ms) |",
             "|---|---|---|---|---|"]
    for row in results.rows.values():
        rate = "-" if row.throughput is None else f"{row.throughput:.0f}"
        lines.append(f"| {row.name} | {fmt(row.p50_ms)} | {fmt(row.cpu_ms_per_request)} | {rate} "
                     f"| {fmt(row.server_compute_ms)} |")
    lines += ["", "In-server compute: the lab server's own Server-Timing / server-timing trailer, to set "
              "beside (a): the same signature call, run between requests instead of back to back."]
    lines += ["", f"| target (lab <= {TARGET_RATIO} x (matching echo + model compute)) | lab | limit | met |", "|---|---|---|---|"]
    for check in checks(results):
        lines.append(f"| {check.what} | {check.measured:.3f} | {check.limit:.3f} | {check.verdict} |")
    if len(results.rounds) < 2:
        lines += ["", "One round: nothing shows whether a neighbour's burst moved these verdicts; "
                  f"use --rounds 3 (rows whose rounds differ by more than {(NOISY_SPREAD - 1) * 100:.0f}% "
                  "are flagged)."]
    lines += ["", "| where the ratio comes from | echo + model call server / (echo + compute) "
              "| lab / echo + model call server |", "|---|---|---|"]
    for what, machine, lab in gap_split(results):
        lines.append(f"| {what} | {machine:.2f} | {lab:.2f} |")
    lines += ["", "The echo + model call servers run the same signature call once per request and nothing "
              "else: the first column is what combining the two costs on this machine with no lab code; "
              "the second is the lab server's own handler work beyond that."]
    return "\n".join(lines)
