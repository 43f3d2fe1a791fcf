"""``tensorflow_model_server`` / ``poochlab serve``: the lab's TF-Serving-compatible server.

One process: REST on an event loop (uvloop + httptools) whose models run in a thread pool;
gRPC on grpc's thread-pool server whose threads run the model themselves. Both reach the model
through an InferenceSession (direct, or shared batching queues with --enable_batching).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from poochlab.serving.flags import HELP, FlagError, ServerOptions, fault_plan, grpc_channel_arguments, parse_flags
from poochlab.serving.grpc_limit import SPARE_THREADS, ConcurrencyLimit

log = logging.getLogger("poochlab.serving")

LAB_SERVER_ID = "poochlab-lab-server"


def version_text() -> str:
    """What ``--version`` prints: clearly the lab's server, never mistaken for TF Serving."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (f"TensorFlow ModelServer: {LAB_SERVER_ID} {installed('poochlab')} "
            "(the Pooch Predictor lab's TF-Serving-compatible server, not TensorFlow Serving)\n"
            f"TensorFlow Library: {installed('tensorflow')}")


def _batching_parameters(options: ServerOptions) -> Any:
    """The BatchingParameters of --enable_batching (None: no batching); ValueError names file and field."""
    if not options.enable_batching:
        return None
    from poochlab.serving.batching import load_batching_parameters

    path = Path(options.batching_parameters_file) if options.batching_parameters_file else None
    return load_batching_parameters(path)


def _session_factory(batching: Any, threads: Any, metrics: Any) -> tuple[Any, Any]:
    """(session factory, scheduler to close): one batching queue per (model, version,
    signature) when batching is on, else a direct session on the shared model pool."""
    from poochlab.serving.direct_session import DirectSession

    if batching is not None:
        from poochlab.serving.batching import SharedBatchScheduler

        scheduler = SharedBatchScheduler(batching, metrics)
        return (lambda compute, name: scheduler.add_queue(compute, name)), scheduler
    return (lambda compute, name: DirectSession(compute, threads)), None


class ModelLoadError(RuntimeError):
    """A model's first load failed at start-up (the server exits, as TF Serving does)."""


class Server:
    """The running server: manager, REST, gRPC, pollers."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.stopping = asyncio.Event()

    async def run(self) -> int:
        import grpc

        from poochlab.serving import grpc_api
        from poochlab.serving.http_server import start_http_server
        from poochlab.serving.metrics import ServerMetrics, parse_monitoring_config
        from poochlab.serving.model_config import load_model_config, single_model_config
        from poochlab.serving.model_manager import ModelManager
        from poochlab.serving.admission import Admission
        from poochlab.serving.fault_injection import LabFaults
        from poochlab.serving.rest_api import RestApi, body_too_large_message

        options = self.options
        batching = _batching_parameters(options)  # before anything slow: a bad file fails fast
        prometheus_path = None
        if options.monitoring_config_file:
            try:
                text = Path(options.monitoring_config_file).read_text()
            except OSError as error:
                raise FlagError(f"{options.monitoring_config_file}: cannot read the monitoring config: {error.strerror}") from None
            prometheus_path = parse_monitoring_config(text, options.monitoring_config_file)
        if options.model_config_file:
            config = load_model_config(Path(options.model_config_file))
        else:
            config = single_model_config(options.model_name, options.model_base_path)

        _configure_tensorflow(options)
        metrics = ServerMetrics()
        from poochlab.serving.model_threads import ModelThreads

        threads = ModelThreads(options.rest_api_num_threads)
        factory, scheduler = _session_factory(batching, threads, metrics)
        manager = ModelManager(factory, options.enable_model_warmup, options.num_request_iterations_for_warmup)
        loop = asyncio.get_running_loop()
        loader = ThreadPoolExecutor(1, thread_name_prefix="loader")  # loads never run on the loop
        self._loader = loader

        def apply(new_config: Any) -> None:
            manager.apply_config(new_config)

        try:
            await loop.run_in_executor(loader, apply, config)
        except Exception as error:  # a label error is logged; the server still serves
            log.error("%s", getattr(error, "message", error))
        failed = manager.failed_loads()
        if failed:  # as TF Serving: a model whose first load fails (a warm-up record too) stops the server
            manager.close()
            raise ModelLoadError("Failed to load the models at start-up: " + " | ".join(failed))

        # The limit is the interceptor's (see grpc_limit); spare threads answer its refusals at
        # once, and grpc's own limit only guards against a flood of them.
        grpc_pool = ThreadPoolExecutor(options.grpc_max_threads + SPARE_THREADS, thread_name_prefix="grpc")
        grpc_server = grpc.server(
            grpc_pool,
            interceptors=[ConcurrencyLimit(options.grpc_max_threads)],
            options=[("grpc.max_receive_message_length", 2**31 - 1), ("grpc.max_send_message_length", 2**31 - 1)]
            + grpc_channel_arguments(options.grpc_channel_arguments),
            maximum_concurrent_rpcs=4 * options.grpc_max_threads + SPARE_THREADS,
        )
        prediction = grpc_api.add_services(grpc_server, manager, metrics, manager.apply_config,
                                           options.enable_signature_method_name_check)
        faults = LabFaults(fault_plan(options))
        faults.attach(prediction)
        # --lab_max_queue: one count for REST and gRPC, both feeding the same models.
        admission = metrics.admission = prediction.admission = Admission(options.lab_max_queue)
        bound = grpc_server.add_insecure_port(f"{options.lab_bind_address}:{options.port}")
        if bound == 0:
            raise FlagError(f"could not bind the gRPC port {options.lab_bind_address}:{options.port}")
        grpc_server.start()
        log.info("Running gRPC ModelServer at %s:%d ...", options.lab_bind_address, bound)
        print(f"Running gRPC ModelServer at {options.lab_bind_address}:{bound} ...", flush=True)

        http_server = None
        if options.rest_api_port:
            api = RestApi(manager, metrics, options.rest_api_timeout_in_ms, prometheus_path, options.lab_max_request_bytes,
                          options.enable_signature_method_name_check)
            faults.attach(api)
            api.admission = admission
            if options.lab_fault_admin:
                api.fault_admin = faults
            http_server = await start_http_server(
                api.handle, options.lab_bind_address, options.rest_api_port, options.lab_max_request_bytes,
                body_too_large_message(options.lab_max_request_bytes), api.gauge)
            rest_port = http_server.sockets[0].getsockname()[1]
            print(f"Exporting HTTP/REST API at:{options.lab_bind_address}:{rest_port} ...", flush=True)

        pollers = []
        if options.file_system_poll_wait_seconds > 0:
            pollers.append(asyncio.ensure_future(self._every(options.file_system_poll_wait_seconds, manager.poll)))
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            pollers.append(asyncio.ensure_future(self._every(
                options.model_config_file_poll_wait_seconds, lambda: _reload_file(manager, options.model_config_file))))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.stopping.wait()
        log.info("Shutting down")
        for poller in pollers:
            poller.cancel()
        if http_server is not None:
            http_server.close()
        await loop.run_in_executor(None, lambda: grpc_server.stop(grace=1.0).wait())
        if scheduler is not None:
            scheduler.close()
        manager.close()
        threads.shutdown()
        loader.shutdown(wait=False, cancel_futures=True)
        return 0

    async def _every(self, seconds: int, action: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(seconds)
            try:
                await loop.run_in_executor(self._loader, action)
            except Exception as error:  # polling must outlive a bad file or a failed load
                log.error("poll failed: %s", getattr(error, "message", error))


def _reload_file(manager: Any, path: str) -> None:
    from poochlab.serving.model_config import load_model_config

    manager.apply_config(load_model_config(Path(path)))


def _configure_tensorflow(options: ServerOptions) -> None:
    import tensorflow as tf

    if options.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(options.tensorflow_intra_op_parallelism)
    if options.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(options.tensorflow_inter_op_parallelism)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        options = parse_flags(argv)
    except FlagError as error:
        text = str(error)
        if text == HELP:
            print(HELP)
            return 0
        print(f"tensorflow_model_server: error: {text}", file=sys.stderr)
        return 2
    if options.version:
        print(version_text())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if options.ignored_flags:
        log.warning("The lab's server accepts but does not implement these TF Serving flags: %s",
                    ", ".join("--" + name for name in options.ignored_flags))
    if fault_plan(options).enabled or options.lab_fault_admin:
        log.warning("Fault injection is on (--lab_fault_*): %s%s", fault_plan(options),
                    "; /lab/faults can change it" if options.lab_fault_admin else "")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from poochlab.serving.model_config import InvalidProtobufFile

    try:
        return asyncio.run(Server(options).run())
    except InvalidProtobufFile as error:  # TF Serving's own two lines, as its users know them
        print(error, file=sys.stderr)
        return 1
    except ModelLoadError as error:
        print(f"tensorflow_model_server: error: {error}", file=sys.stderr)
        return 1
    except (FlagError, ValueError) as error:
        print(f"tensorflow_model_server: error: {error}", file=sys.stderr)
        return 2
