"""``build_predictor``: one config in, the composed predictor out (transport -> cache -> supervisor)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poochlab.clients.config import ClientConfig
from poochlab.clients.prediction import Predictor, RowPredictor

if TYPE_CHECKING:  # the transports import their protocol stacks (gRPC, TF Serving protos): lazily
    from poochlab.clients.transport import Transport


def build_transport(config: ClientConfig) -> Transport:
    """The bare REST or gRPC predictor for ``config`` (no cache, no supervisor)."""
    if config.protocol == "grpc":
        from poochlab.clients.grpc_predictor import GrpcPredictor, LeanGrpcPredictor

        return LeanGrpcPredictor(config) if config.resolved_library == "lean" else GrpcPredictor(config)
    from poochlab.clients.rest_predictor import RestPredictor

    return RestPredictor(config)


def build_predictor(config: ClientConfig) -> Predictor:
    """The predictor ``config`` describes (see :func:`build_model_predictor`); with
    ``rotate_models``, one per model name, taking requests in turn; with ``ab``, one per arm
    (clients/ab_split.py)."""
    if config.ab is not None:
        return build_ab_split(config)
    if config.rotate_models:
        from dataclasses import replace

        from poochlab.clients.model_rotation import ModelRotation

        names = (config.model_name, *config.rotate_models)
        return ModelRotation([build_model_predictor(replace(config, model_name=n, rotate_models=())) for n in names])
    return build_model_predictor(config)


def build_model_predictor(config: ClientConfig) -> Predictor:
    """The predictor ``config`` describes: the transport, wrapped by the Redis cache-aside when
    ``config.cache`` is set, wrapped by the supervisor when ``config.fallback`` is set.

    Build one per process and share it between threads or greenlets: it holds one gRPC channel
    or one keep-alive connection per thread/greenlet, one Redis pool, and the single-flight
    table. Under gevent, call ``grpc.experimental.gevent.init_gevent()`` (after monkey
    patching) before the first gRPC prediction.
    """
    transport = build_transport(config)
    predictor: RowPredictor = transport
    if config.cache is not None:
        from poochlab.clients.cache_aside import CachedPredictor

        predictor = CachedPredictor(transport, config.cache)
    if config.fallback is not None:
        from poochlab.clients.supervised_fallback import SupervisedPredictor

        return SupervisedPredictor(predictor, config.fallback)
    return predictor


def build_ab_split(config: ClientConfig) -> Predictor:
    """The A/B test ``config.ab`` describes: the ``stable`` and ``canary`` arms pin their version
    label (each with its own transport, cache and supervisor as ``config`` says), the
    ``baseline`` arm answers from the historical average."""
    from dataclasses import replace
    from pathlib import Path

    from poochlab.clients.ab_split import ARM_BASELINE, ARM_CANARY, ARM_STABLE, ABSplit, BaselinePredictor
    from poochlab.models.baseline import HistoricalBaseline

    ab = config.ab
    assert ab is not None
    arms: dict[str, tuple[float, Predictor]] = {
        ARM_STABLE: (1.0 - ab.canary_share - ab.baseline_share,
                     build_model_predictor(replace(config, ab=None, version_label=ARM_STABLE))),
        ARM_CANARY: (ab.canary_share, build_model_predictor(replace(config, ab=None, version_label=ARM_CANARY))),
    }
    if ab.baseline_share > 0:
        assert ab.baseline_path is not None
        arms[ARM_BASELINE] = (ab.baseline_share, BaselinePredictor(HistoricalBaseline.read(Path(ab.baseline_path))))
    return ABSplit(arms, seed=ab.seed)
