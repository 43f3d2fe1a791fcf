"""TF Serving's Prometheus metrics, with its exact names and labels.

TF Serving exports its monitoring metrics (``/tensorflow/serving/request_count``, ...) with
every character outside ``[a-zA-Z0-9_]`` turned into ``:``, counters under their own name
(no ``_total``/``_created``), histograms as ``_bucket``/``_sum``/``_count``. The exposition is
written here by hand so the names stay exactly TF Serving's. This class is also the batching
scheduler's :class:`BatchingObserver`.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any, Iterable

from poochlab import wire
from poochlab.wire import prometheus_name




def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    return [scale * growth**i for i in range(count)]


_LATENCY_BUCKETS = exponential_buckets(10, 1.8, 33)  # microseconds, TF Serving's request buckets
_SIZE_BUCKETS = exponential_buckets(1, 2, 15)
_INF = 'le="+Inf"'


def _labels_text(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(round(value, 6))


class Counter:
    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...]) -> None:
        self.name, self.help, self.label_names = prometheus_name(name), help_text, label_names
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels_text(self.label_names, labels)} {_number(value)}"


class Histogram:
    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...], buckets: list[float]) -> None:
        self.name, self.help, self.label_names = prometheus_name(name), help_text, label_names
        self.buckets = buckets
        self.values: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0.0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, value)] += 1  # index len(buckets): above the last bound
        row[-1] += value

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, row in sorted(self.values.items()):
            cumulative = 0.0
            for bound, count in zip(self.buckets, row):
                cumulative += count
                le = 'le="' + _number(bound) + '"'
                yield f"{self.name}_bucket{_labels_text(self.label_names, labels, le)} {_number(cumulative)}"
            cumulative += row[len(self.buckets)]
            yield f"{self.name}_bucket{_labels_text(self.label_names, labels, _INF)} {_number(cumulative)}"
            yield f"{self.name}_sum{_labels_text(self.label_names, labels)} {_number(row[-1])}"
            yield f"{self.name}_count{_labels_text(self.label_names, labels)} {_number(cumulative)}"


class ServerMetrics:
    """All metrics of one server process; safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.request_count = Counter(
            wire.REQUEST_COUNT, "The total number of requests.", ("model_name", "status"))
        self.request_latency = Histogram(
            wire.REQUEST_LATENCY, "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"), _LATENCY_BUCKETS)
        self.runtime_latency = Histogram(
            wire.RUNTIME_LATENCY, "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"), _LATENCY_BUCKETS)
        self.queuing_latency = Histogram(
            wire.QUEUING_LATENCY,
            "Distribution of wall time (in microseconds) spent in the batching queue.",
            ("thread_pool_name",), _LATENCY_BUCKETS)
        self.input_batch_size = Histogram(
            wire.INPUT_BATCH_SIZE,
            "Distribution of input batch size.", ("thread_pool_name",), _SIZE_BUCKETS)
        self.processed_batch_size = Histogram(
            wire.PROCESSED_BATCH_SIZE,
            "Distribution of processed batch size.", ("thread_pool_name",), _SIZE_BUCKETS)
        self.padding_size = Histogram(
            wire.PADDING_SIZE,
            "Distribution of padded size.", ("thread_pool_name", "execution_batch_size"), _SIZE_BUCKETS)
        self.admission: Any = None  # --lab_max_queue's Admission: its lab-only lines follow TF Serving's
        self._all: list[Counter | Histogram] = [self.request_count, self.request_latency, self.runtime_latency, self.queuing_latency,
                     self.input_batch_size, self.processed_batch_size, self.padding_size]

    def record_request(self, model: str, api: str, entrypoint: str, status: str, latency_us: float,
                       runtime_us: float | None) -> None:
        with self._lock:
            self.request_count.inc((model, status))
            self.request_latency.observe((model, api, entrypoint), latency_us)
            if runtime_us is not None:
                self.runtime_latency.observe((model, api, "TF1"), runtime_us)

    # BatchingObserver (serving/batching/observer.py)
    def on_batch(self, queue_name: str, input_batch_size: int, processed_batch_size: int, padding_size: int) -> None:
        with self._lock:
            self.input_batch_size.observe((queue_name,), input_batch_size)
            self.processed_batch_size.observe((queue_name,), processed_batch_size)
            self.padding_size.observe((queue_name, str(processed_batch_size)), padding_size)

    def on_task_queued(self, queue_name: str, queue_us: float) -> None:
        with self._lock:
            self.queuing_latency.observe((queue_name,), queue_us)

    def exposition(self) -> str:
        """Prometheus text format 0.0.4."""
        with self._lock:
            lines = [line for metric in self._all if metric.values for line in metric.lines()]
        if self.admission is not None:
            lines.extend(self.admission.metric_lines())
        return "\n".join(lines) + "\n"


def _monitoring_config_class() -> type:
    """TF Serving's ``MonitoringConfig`` message (not shipped in tensorflow-serving-api), built
    from its field numbers so protobuf's own text format parses the file."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="poochlab/monitoring_config.proto", package="tensorflow.serving", syntax="proto3")
    prometheus = file_proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=8, label=1)  # bool
    prometheus.field.add(name="path", number=2, type=9, label=1)  # string
    monitoring = file_proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=11, label=1,
                         type_name=".tensorflow.serving.PrometheusConfig")
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def parse_monitoring_config(text: str, source: str) -> str | None:
    """The Prometheus path of a ``MonitoringConfig`` text proto, or None when not enabled.

    ``prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }``; the path
    defaults to TF Serving's ``/monitoring/prometheus/metrics``.
    """
    from google.protobuf import text_format

    config = _monitoring_config_class()()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ValueError(f"{source}: not a valid MonitoringConfig text proto: {error}") from None
    if not config.prometheus_config.enable:
        return None
    path = config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH
    if not path.startswith("/"):
        raise ValueError(f"{source}: prometheus_config.path must start with '/', got {path!r}")
    return path
