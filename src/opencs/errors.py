"""API errors: every failure leaves as ``{"Code", "Message", "RequestId"}`` with a real status.

aliyun-python-sdk-core reads only the capitalised keys; on ``SignatureDoesNotMatch`` it runs
``message.split(':')[1]``, so that message must contain a colon.
"""

from __future__ import annotations


class NotCached(Exception):
    """A lookup asked to answer from memory only (a caller on the event loop) needs the store: the
    caller asks again the ordinary way, in a worker thread."""


class ApiError(Exception):
    status = 400
    code = "InvalidParameter"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


class BadRequest(ApiError):
    status = 400
    code = "InvalidParameter"


class ValidationFailed(ApiError):
    """A field failed validation; the message names the field."""

    status = 400
    code = "InvalidParameter"


class MalformedBody(ApiError):
    status = 400
    code = "MalformedJSON"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "UnsupportedMediaType"


class Unauthenticated(ApiError):
    status = 401
    code = "MissingAuthorization"


class Forbidden(ApiError):
    status = 403
    code = "Forbidden"


class NotFound(ApiError):
    status = 404
    code = "NotFound"


class Conflict(ApiError):
    status = 409
    code = "Conflict"


class ProviderNotAvailable(ApiError):
    """The node provider cannot work on this machine (not root, no dockerd, ...)."""

    status = 412
    code = "ProviderUnavailable"
