"""Names on the wire that the server writes and the clients and the recorder read: one place.

At the bottom of the import graph (imports nothing of the lab), so the server, the clients and
the recorder can all import it without importing each other.
"""

from __future__ import annotations

import re

# The lab server's per-request timing (TF Serving sends none): the REST header and the gRPC
# trailing-metadata key (gRPC keys are lower case) carry the same W3C Server-Timing text,
# ``queue;dur=<ms>, compute;dur=<ms>``.
SERVER_TIMING_HEADER = "Server-Timing"
SERVER_TIMING_METADATA_KEY = "server-timing"
SERVER_TIMING_QUEUE = "queue"  # time waiting for a batch (or the model)
SERVER_TIMING_COMPUTE = "compute"  # time in the model


def server_timing_value(queue_us: float, compute_us: float) -> str:
    """The Server-Timing value of one answer (durations in milliseconds, as the syntax wants)."""
    return f"{SERVER_TIMING_QUEUE};dur={queue_us / 1000:.3f}, {SERVER_TIMING_COMPUTE};dur={compute_us / 1000:.3f}"


# TF Serving's monitoring metrics, by their names inside TF Serving.
REQUEST_COUNT = "/tensorflow/serving/request_count"
REQUEST_LATENCY = "/tensorflow/serving/request_latency"
RUNTIME_LATENCY = "/tensorflow/serving/runtime_latency"
QUEUING_LATENCY = "/tensorflow/serving/batching_session/queuing_latency"
INPUT_BATCH_SIZE = "/tensorflow/serving/batching_session/input_batch_size"
PROCESSED_BATCH_SIZE = "/tensorflow/serving/batching_session/processed_batch_size"
PADDING_SIZE = "/tensorflow/serving/batching_session/padding_size"


def prometheus_name(name: str) -> str:
    """The name TF Serving's Prometheus exporter writes: every character outside
    ``[a-zA-Z0-9_]`` becomes ``:`` (``/tensorflow/serving/request_count`` ->
    ``:tensorflow:serving:request_count``)."""
    return re.sub(r"[^a-zA-Z0-9_]", ":", name)
