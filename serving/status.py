"""TF Serving's error statuses, and how each travels over REST and gRPC.

Every failure inside the server is a :class:`ServingError` carrying a TF status code name
(the names of ``tensorflow::error::Code``, identical to ``grpc.StatusCode``'s), so the REST and
gRPC front ends map one error to TF Serving's HTTP status and gRPC code the same way.
"""

from __future__ import annotations

import enum


class Code(enum.Enum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# TF Serving's mapping (model_servers/http_rest_api_handler / util/net_http status).
_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.OUT_OF_RANGE: 400,
    Code.NOT_FOUND: 404,
    Code.DEADLINE_EXCEEDED: 504,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNAVAILABLE: 503,
    Code.UNIMPLEMENTED: 501,
    Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409,
    Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401,
    Code.UNKNOWN: 500,
    Code.INTERNAL: 500,
    Code.DATA_LOSS: 500,
}


def http_status(code: Code) -> int:
    """The HTTP status TF Serving's REST API answers for ``code``."""
    return _HTTP_STATUS[code]


class ServingError(Exception):
    """A request failed with a TF status; ``message`` is what the client is shown."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return http_status(self.code)

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"
