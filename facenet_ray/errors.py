"""The few exception types of facenet_ray; each maps to one HTTP status and error code."""

from __future__ import annotations


class FacenetError(Exception):
    """Base of every error the service reports to a client."""

    status: int = 500
    code: str = "internal"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    def __reduce__(self):  # keep the type and detail across Ray's pickling
        return (type(self), (self.detail,))


class InvalidName(FacenetError):
    status, code = 400, "invalid_name"


class BadRequest(FacenetError):
    status, code = 400, "bad_request"


class Unauthorized(FacenetError):
    status, code = 401, "unauthorized"


class Forbidden(FacenetError):
    status, code = 403, "forbidden"


class NotFound(FacenetError):
    status, code = 404, "not_found"


class Conflict(FacenetError):
    status, code = 409, "conflict"


class TooLarge(FacenetError):
    status, code = 413, "too_large"


class NotAnImage(FacenetError):
    status, code = 415, "not_an_image"


class Undecodable(FacenetError):
    status, code = 422, "undecodable_image"


class Unavailable(FacenetError):
    status, code = 503, "unavailable"
