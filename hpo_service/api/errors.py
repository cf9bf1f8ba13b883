"""The one place where errors become HTTP responses.

Every error answer has the shape ``{"error": code, "message": text}`` -- the service's own
errors, request validation, and what the framework raises itself (an unknown path, a method
a path does not take, a body that cannot be parsed).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hpo_service.errors import HpoError, InvalidInput

log = logging.getLogger("hpo_service.api")

# Framework errors by status: the code clients see (the client maps codes back to its error classes).
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
               413: "payload_too_large", 415: "unsupported_media_type"}
# What FastAPI says when reading the body failed for any reason but a JSON syntax error.
_BODY_PARSE_DETAIL = "There was an error parsing the body"


def _body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


def _describe(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        if item.get("type") == "json_invalid":  # FastAPI's report of a JSON syntax error: loc is (body, position)
            position = item.get("loc", ("body", "?"))[-1]
            reason = (item.get("ctx") or {}).get("error", "JSON decode error")
            parts.append(f"the request body is not valid JSON: {reason} at character {position}")
            continue
        location = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body",))
        parts.append(f"{location + ': ' if location else ''}{str(item.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts) or "invalid request"


def _unparsable_body(error: StarletteHTTPException) -> str:
    """Why a body could not be read as JSON, in words (FastAPI keeps the cause, not the reason)."""
    cause = error.__cause__
    if isinstance(cause, RecursionError):
        return "the request body is JSON nested too deeply to parse; send a flatter document"
    if isinstance(cause, UnicodeDecodeError):
        return f"the request body is not UTF-8 encoded JSON ({cause.reason} at byte {cause.start})"
    return "the request body could not be parsed as JSON"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HpoError)
    async def _hpo_error(_request: Request, error: HpoError) -> JSONResponse:
        if error.status_code >= 500:
            log.warning("%s: %s", error.code, error.message)
        return JSONResponse(_body(error.code, error.message), status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(_body("invalid_input", _describe(error)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _framework_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and error.detail == _BODY_PARSE_DETAIL:
            # A body that is not JSON at all is invalid input like a JSON syntax error (which FastAPI
            # reports as a validation error, 422): the same status and code for both, so a client
            # handles one case, and a status every operation with a body documents.
            return JSONResponse(_body(InvalidInput.code, _unparsable_body(error)), status_code=InvalidInput.status_code)
        code = _HTTP_CODES.get(error.status_code, "http_error")
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        if error.status_code == 404 and message == "Not Found":  # no route matched
            message = f"no such endpoint: {request.url.path} (the API is under /api/v1; see /docs)"
        elif error.status_code == 405 and message == "Method Not Allowed":
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(_body(code, message), status_code=error.status_code, headers=error.headers)
