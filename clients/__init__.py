"""Clients of the model server: REST, gRPC, a Redis cache-aside and a supervised fallback.

One interface (:class:`Predictor`): ``predict(pupdates) -> Prediction`` with the likes, the
path that answered each row ("model", "cache", "fallback") and a :class:`CallTiming`. Build one
from a :class:`ClientConfig` with :func:`build_predictor`. Importing this package is cheap:
HTTP libraries, gRPC, Redis and TensorFlow's protos load only when a predictor is built.
"""

from poochlab.clients.config import ABConfig, CacheConfig, ClientConfig, FallbackConfig
from poochlab.clients.factory import build_predictor, build_transport
from poochlab.clients.prediction import (
    PATH_CACHE,
    PATH_FALLBACK,
    PATH_MIXED,
    PATH_MODEL,
    CallTiming,
    Prediction,
    PredictionError,
    Predictor,
)

__all__ = [
    "ABConfig", "CacheConfig", "ClientConfig", "FallbackConfig", "build_predictor", "build_transport", "CallTiming",
    "Prediction", "PredictionError", "Predictor", "PATH_CACHE", "PATH_FALLBACK", "PATH_MIXED", "PATH_MODEL",
]
