"""Server-side batching with TF Serving's semantics (``--enable_batching``).

``load_batching_parameters`` reads ``--batching_parameters_file``; ``SharedBatchScheduler``
runs the batches on its threads and hands out one ``InferenceSession`` queue per model version
and signature; ``BatchingObserver`` is what the metrics module implements.
"""

from poochlab.serving.batching.observer import BatchingObserver
from poochlab.serving.batching.parameters import (
    BatchingParameters, load_batching_parameters, parse_batching_parameters,
)
from poochlab.serving.batching.scheduler import SharedBatchScheduler

__all__ = [
    "BatchingObserver",
    "BatchingParameters",
    "SharedBatchScheduler",
    "load_batching_parameters",
    "parse_batching_parameters",
]
