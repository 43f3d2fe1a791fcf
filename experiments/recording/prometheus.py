"""Server-side timings from Prometheus text, scraped before and after a trial.

TF Serving (and the lab's server) expose histograms such as
``:tensorflow:serving:request_latency`` in microseconds. The difference of two scrapes gives the
trial's own counts, sums and buckets, so the server-side breakdown works against the real TF
Serving, which sends no per-request timing.
"""

from __future__ import annotations

import re
import urllib.request
from typing import Any

from poochlab import wire
from poochlab.wire import prometheus_name

# TF Serving's histogram metrics the lab reports (names as TF Serving's exporter writes them).
TF_SERVING_HISTOGRAMS = tuple(prometheus_name(name) for name in (
    wire.REQUEST_LATENCY, wire.RUNTIME_LATENCY, wire.QUEUING_LATENCY, wire.INPUT_BATCH_SIZE,
    wire.PROCESSED_BATCH_SIZE, wire.PADDING_SIZE))
TF_SERVING_COUNTERS = (prometheus_name(wire.REQUEST_COUNT),)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_text(text: str, source: str = "<metrics>") -> Samples:
    """Every sample of a Prometheus text exposition: (name, sorted labels) -> value."""
    samples: Samples = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"{source} line {number}: not a Prometheus sample: {line[:80]!r}")
        name, _, labels, value = match.group(1), match.group(2), match.group(3), match.group(4)
        pairs = tuple(sorted(_LABEL.findall(labels or "")))
        try:
            samples[(name, pairs)] = float(value)
        except ValueError:
            raise ValueError(f"{source} line {number}: value {value!r} is not a number") from None
    return samples


def scrape(url: str, timeout_s: float = 5.0) -> Samples:
    """Fetch and parse one scrape; raises OSError/ValueError naming the URL when it fails."""
    with urllib.request.urlopen(url, timeout=timeout_s) as answer:
        text = answer.read().decode("utf-8", "replace")
    return parse_text(text, source=url)


def _label_text(pairs: tuple[tuple[str, str], ...], drop: str | None = None) -> str:
    return ",".join(f"{k}={v}" for k, v in pairs if k != drop)


def histogram_deltas(before: Samples, after: Samples) -> dict[str, Any]:
    """Per TF Serving metric and label set: the trial's count, sum, mean and cumulative buckets."""
    result: dict[str, Any] = {}
    for metric in TF_SERVING_HISTOGRAMS:
        series: dict[str, dict[str, Any]] = {}
        for (name, pairs), value in after.items():
            delta = value - before.get((name, pairs), 0.0)
            if name == metric + "_count":
                series.setdefault(_label_text(pairs), {})["count"] = delta
            elif name == metric + "_sum":
                series.setdefault(_label_text(pairs), {})["sum"] = delta
            elif name == metric + "_bucket":
                le = dict(pairs).get("le", "+Inf")
                series.setdefault(_label_text(pairs, drop="le"), {}).setdefault("buckets", {})[le] = delta
        for entry in series.values():
            if entry.get("count"):
                entry["mean"] = entry.get("sum", 0.0) / entry["count"]
        if series:
            result[metric] = series
    for metric in TF_SERVING_COUNTERS:
        counts = {_label_text(pairs): value - before.get((name, pairs), 0.0)
                  for (name, pairs), value in after.items() if name == metric}
        if counts:
            result[metric] = counts
    return result
