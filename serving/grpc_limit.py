"""``--grpc_max_threads`` as TF Serving applies it: an RPC that finds every thread busy gets
RESOURCE_EXHAUSTED, and one that arrives while fewer than that many are being answered never does.

grpc's own ``maximum_concurrent_rpcs`` frees an RPC's slot only when its pool thread has finished,
after the answer is already on the wire. A client that sends its next call as soon as it has the
answer can arrive first: 8 clients calling an echo as fast as they can against a limit of 8 were
refused 18 to 33 times in 12,000 calls on our machines (tests/test_serving_grpc_limit.py).

This interceptor counts an RPC while its handler runs and frees the slot when the handler returns,
before the answer is sent. The count is taken on the pool thread, inside the handler: an RPC that
never reaches its handler (cancelled while queued, a body that does not parse) holds no slot. The
pool has spare threads beyond the limit, so a refusal is answered at once.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import grpc

# Pool threads beyond the limit: they run refusals while every counted slot is busy.
SPARE_THREADS = 2


class ConcurrencyLimit(grpc.ServerInterceptor):
    """At most ``limit`` unary RPCs in their handlers; the others are refused, not queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._active = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        """RPCs inside their handlers now (for tests)."""
        return self._active

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler  # unknown method (grpc answers UNIMPLEMENTED) or a streaming one
        answer = handler.unary_unary

        def counted(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                admitted = self._active < self.limit
                if admitted:
                    self._active += 1
            if not admitted:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"all {self.limit} gRPC server threads are busy (--grpc_max_threads)")
            try:
                return answer(request, context)
            finally:
                with self._lock:
                    self._active -= 1

        return grpc.unary_unary_rpc_method_handler(
            counted, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
