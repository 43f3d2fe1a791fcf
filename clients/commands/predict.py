"""``poochlab predict``: ask a running server for one prediction and show where the time went.

Example: ``poochlab predict --protocol grpc --cache redis "#corgi #adorable" --country US``
"""

from __future__ import annotations

import argparse

from poochlab.cli import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hashtags", help='the pupdate\'s hashtags as one text, e.g. "#corgi #adorable"')
    parser.add_argument("--country", default="US", help="the poster's country (default: US)")
    parser.add_argument("--followers", type=int, default=100, help="the poster's followers (default: 100)")
    parser.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    parser.add_argument("--library", help="rest: requests, lean, geventhttpclient, urllib3, http.client "
                        "(default lean); grpc: grpcio")
    parser.add_argument("--format", dest="request_format", choices=("row", "columnar"), default="row",
                        help="REST request format (default: row)")
    parser.add_argument("--rest-url", default="http://127.0.0.1:8501")
    parser.add_argument("--grpc-target", default="127.0.0.1:8500")
    parser.add_argument("--model-name", default="pooch_predictor")
    version = parser.add_mutually_exclusive_group()
    version.add_argument("--version", type=int, help="pin a model version (default: the latest)")
    version.add_argument("--label", help="address a version label, e.g. stable")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    parser.add_argument("--cache", choices=("none", "redis"), default="none", help="Redis cache-aside (default: none)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--fallback", metavar="BASELINE_JSON",
                        help="supervise with this historical_baseline.json (the export's assets.extra/)")
    parser.add_argument("--deadline", type=float, default=0.5, help="supervisor deadline in seconds (default: 0.5)")


def run(args: argparse.Namespace) -> int:
    from poochlab.clients import CacheConfig, ClientConfig, FallbackConfig, PredictionError, build_predictor

    try:
        config = ClientConfig(
            protocol=args.protocol, library=args.library, rest_url=args.rest_url, grpc_target=args.grpc_target,
            model_name=args.model_name, version=args.version, version_label=args.label,
            request_format=args.request_format, timeout_s=args.timeout,
            cache=CacheConfig(redis_url=args.redis_url) if args.cache == "redis" else None,
            fallback=FallbackConfig(baseline_path=args.fallback, deadline_s=args.deadline) if args.fallback else None,
        )
        predictor = build_predictor(config)
    except ValueError as error:
        raise CommandError(str(error)) from None
    try:
        prediction = predictor.predict([{"hashtags": args.hashtags, "country": args.country,
                                         "followers": args.followers}])
        stats = predictor.stats()
    except ValueError as error:
        raise CommandError(str(error)) from None
    except PredictionError as error:
        target = args.grpc_target if args.protocol == "grpc" else args.rest_url
        raise CommandError(f"{args.protocol} {target}: {error}") from None
    finally:
        predictor.close()
    print(format_prediction(prediction, stats))
    return 0


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} us"


def format_prediction(prediction: "object", stats: dict) -> str:
    """The prediction, its path and its timing breakdown, one fact per line."""
    from poochlab.clients import Prediction

    assert isinstance(prediction, Prediction)
    timing = prediction.timing
    path = prediction.path
    if prediction.model_version is not None:
        path += f" (version {prediction.model_version})"
    if prediction.fallback_reason:
        path += f" (reason: {prediction.fallback_reason})"
    lines = [
        f"likes           {prediction.likes[0]:.2f}",
        f"path            {path}",
        f"client encode   {_us(timing.encode_us)}",
        f"wait            {_us(timing.wait_us)}" + (f" (Redis {_us(timing.cache_wait_us)})" if timing.cache_wait_us else ""),
        f"client decode   {_us(timing.decode_us)}",
        f"server queue    {_us(timing.server_queue_us)}",
        f"server compute  {_us(timing.server_compute_us)}",
    ]
    if "cache_errors" in stats and stats["cache_errors"]:
        lines.append(f"cache errors    {stats['cache_errors_by_reason']}")
    return "\n".join(lines)
