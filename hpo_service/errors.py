"""One error tree for the whole service, grouped by what the caller should do.

    HpoError
    ├── InvalidInput        fix the request (HTTP 422)
    │   └── PayloadTooLarge the request is over a size limit (HTTP 413)
    ├── Unauthorized        no valid token: send `Authorization: Bearer <token>` (HTTP 401)
    │   └── RateLimited     too many bad tokens from this client: wait (HTTP 429)
    ├── Forbidden           the token's scope does not allow this (HTTP 403)
    ├── NotFound            the study / trial does not exist, or another project owns it (HTTP 404)
    ├── Conflict            the request is valid but the state forbids it (HTTP 409)
    │   └── StaleLease      the lease token was superseded: stop working on this trial
    ├── SchemaOutdated      the database needs `hpo db upgrade` (server start-up)
    └── ServiceUnavailable  transient: retry later with backoff (HTTP 503)

Only `hpo_service.api.errors` maps these to HTTP; nothing below the API raises
HTTP exceptions. The client maps responses back to the same classes, so a CLI or
worker handles the server's errors by type.
"""

from __future__ import annotations


class HpoError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(HpoError):
    status_code = 422
    code = "invalid_input"


class PayloadTooLarge(InvalidInput):
    status_code = 413
    code = "payload_too_large"


class Unauthorized(HpoError):
    status_code = 401
    code = "unauthorized"


class RateLimited(Unauthorized):
    status_code = 429
    code = "rate_limited"


class Forbidden(HpoError):
    status_code = 403
    code = "forbidden"


class NotFound(HpoError):
    status_code = 404
    code = "not_found"


class Conflict(HpoError):
    status_code = 409
    code = "conflict"


class StaleLease(Conflict):
    code = "stale_lease"


class SchemaOutdated(HpoError):
    status_code = 503
    code = "schema_outdated"


class ServiceUnavailable(HpoError):
    status_code = 503
    code = "unavailable"


ERRORS_BY_CODE: dict[str, type[HpoError]] = {
    cls.code: cls
    for cls in (HpoError, InvalidInput, PayloadTooLarge, Unauthorized, RateLimited, Forbidden, NotFound, Conflict,
                StaleLease, SchemaOutdated, ServiceUnavailable)
}
