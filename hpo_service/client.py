"""The Python SDK: a typed HTTP client of the REST API (used by workers, the CLI, `hpo tune` and tests).

Connection errors and 503 answers are retried with exponential backoff (every
call is safe to repeat: reports are unique per step, completions per lease
token, a lease call's retries carry its Idempotency-Key, a study's creation
attaches to the same name and spec, and pause / resume / cancel / extend set
a status or value that a repeat finds already set), except a token's
creation, which is retried only when it cannot have reached the server.
Error answers become the project's own error types, carrying the server's
message.
"""

from __future__ import annotations

import os
import random
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from hpo_service.client_types import (
    Ack,
    BestTrial,
    CheckpointReferences,
    DecisionInfo,
    Health,
    Lease,
    RungInfo,
    StudyInfo,
    StudyPage,
    TokenCreated,
    TokenInfo,
    TrialDetail,
    TrialPage,
    TrialStateInfo,
    WhoAmI,
)
from hpo_service.errors import ERRORS_BY_CODE, HpoError, ServiceUnavailable

DEFAULT_SERVER = "http://127.0.0.1:8765"
DEFAULT_TOKEN_FILE = Path(".hpo") / "admin-token"


def resolve_token(explicit: str | None = None) -> str | None:
    """The token to use: given explicitly, else $HPO_TOKEN, else the local admin token file of an embedded server."""
    if explicit:
        return explicit
    if os.environ.get("HPO_TOKEN"):
        return os.environ["HPO_TOKEN"]
    path = Path(os.environ.get("HPO_TOKEN_FILE", DEFAULT_TOKEN_FILE))
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class HpoClient:
    def __init__(
        self, server: str = DEFAULT_SERVER, *, token: str | None = None, timeout: float = 30.0,
        retries: int = 5, backoff: float = 0.2, transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._retries = retries
        self._backoff = backoff
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, timeout=timeout, transport=transport, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "HpoClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- studies -------------------------------------------------------------------

    def create_study(self, spec: dict[str, Any]) -> StudyInfo:
        return self._call("POST", "/api/v1/studies", json=spec)

    def get_study(self, study_id: int) -> StudyInfo:
        return self._call("GET", f"/api/v1/studies/{study_id}")

    def list_studies(self, *, status: str | None = None, name: str | None = None,
                     limit: int = 50, offset: int = 0) -> StudyPage:
        params = _drop_none({"status": status, "name": name, "limit": limit, "offset": offset})
        return self._call("GET", "/api/v1/studies", params=params)

    def find_study(self, ref: str | int) -> StudyInfo:
        """A study by id or by exact name."""
        if isinstance(ref, int) or str(ref).isdigit():
            return self.get_study(int(ref))
        for study in self.list_studies(name=str(ref), limit=1000)["items"]:
            if study["name"] == ref:
                return study
        raise ERRORS_BY_CODE["not_found"](f"no study named {ref!r}")

    def extend_study(self, study_id: int, max_budget: float) -> StudyInfo:
        """Raise max_budget (iterative deepening)."""
        return self._call("PATCH", f"/api/v1/studies/{study_id}", json={"max_budget": max_budget})

    def control_study(self, study_id: int, action: str) -> StudyInfo:
        return self._call("POST", f"/api/v1/studies/{study_id}/{action}")

    def list_trials(self, study_id: int, *, state: str | None = None, bracket: int | None = None,
                    rung: int | None = None, order: str = "number", limit: int = 100,
                    offset: int = 0) -> TrialPage:
        params = _drop_none({"state": state, "bracket": bracket, "rung": rung, "order": order,
                             "limit": limit, "offset": offset})
        return self._call("GET", f"/api/v1/studies/{study_id}/trials", params=params)

    def best_trial(self, study_id: int) -> BestTrial:
        return self._call("GET", f"/api/v1/studies/{study_id}/best")

    def decisions(self, study_id: int, *, after_id: int = 0, limit: int = 500) -> list[DecisionInfo]:
        return self._call("GET", f"/api/v1/studies/{study_id}/decisions",
                          params={"after_id": after_id, "limit": limit})

    def checkpoint_references(self, study_id: int, *, after: int = 0, limit: int = 1000) -> CheckpointReferences:
        return self._call("GET", f"/api/v1/studies/{study_id}/checkpoints", params={"after": after, "limit": limit})

    def best_adapter(self, study_id: int) -> bytes:
        """The best trial's adapter as .tar.gz bytes (see hpo_service.workers.artifacts.unpack_adapter_archive)."""
        return self._call("GET", f"/api/v1/studies/{study_id}/best/adapter", raw=True)

    def transfer(self, study_id: int) -> dict[str, Any]:
        """Stages, transfer gap and tuning cost of a mup_transfer study."""
        return self._call("GET", f"/api/v1/studies/{study_id}/transfer")

    def rungs(self, study_id: int) -> list[RungInfo]:
        return self._call("GET", f"/api/v1/studies/{study_id}/rungs")

    def get_trial(self, trial_id: int) -> TrialDetail:
        return self._call("GET", f"/api/v1/trials/{trial_id}")

    # --- access ----------------------------------------------------------------------------

    def create_token(self, name: str, scope: str, *, project: str | None = None,
                     expires_days: float | None = None) -> TokenCreated:
        body = _drop_none({"name": name, "scope": scope, "project": project, "expires_days": expires_days})
        # Not repeatable: the server keeps only a digest of the secret, so a retry whose first try
        # was carried out could not get that token back; it would make a second one, and the first
        # would stay valid with its secret known to no one.
        return self._call("POST", "/api/v1/tokens", json=body, repeatable=False)

    def list_tokens(self) -> list[TokenInfo]:
        return self._call("GET", "/api/v1/tokens")

    def revoke_token(self, token_id: int) -> TokenInfo:
        return self._call("DELETE", f"/api/v1/tokens/{token_id}")

    def whoami(self) -> WhoAmI:
        return self._call("GET", "/api/v1/whoami")

    def health(self) -> Health:
        return self._call("GET", "/api/v1/health")

    # --- worker protocol -------------------------------------------------------------

    def lease(self, worker_id: str, *, wait_s: float = 10.0, studies: list[int] | None = None,
              resources: dict[str, Any] | None = None, request_key: str | None = None) -> Lease | None:
        """A trial to work on, or None when none came within ``wait_s``.

        ``request_key`` (default: a fresh one) is sent as the Idempotency-Key of this call and all
        its retries: a retry whose first try was granted a trial (the response lost on the way)
        gets that trial back, not a second one. A caller that retries the call itself after it
        failed (``ServiceUnavailable``) passes the same key again, for the same reason."""
        body = {"worker_id": worker_id, "wait_s": wait_s, "studies": studies, "resources": resources or {}}
        headers = {"Idempotency-Key": request_key or new_request_key()}
        return self._call("POST", "/api/v1/leases", json=body, headers=headers, timeout=wait_s + 30.0)

    def heartbeat(self, trial_id: int, token: str) -> Ack:
        return self._call("POST", f"/api/v1/trials/{trial_id}/heartbeat", json={"lease_token": token})

    def report(self, trial_id: int, token: str, reports: list[dict[str, Any]]) -> Ack:
        return self._call("POST", f"/api/v1/trials/{trial_id}/reports",
                          json={"lease_token": token, "reports": reports})

    def complete(self, trial_id: int, token: str, metrics: dict[str, Any],
                 checkpoint_out: str | None) -> TrialStateInfo:
        body = {"lease_token": token, "metrics": metrics, "checkpoint_out": checkpoint_out}
        return self._call("POST", f"/api/v1/trials/{trial_id}/complete", json=body)

    def fail(self, trial_id: int, token: str, error: str, *, retryable: bool = True,
             checkpoint_invalid: bool = False, checkpoint_out: str | None = None,
             budget_done: float | None = None, drained: bool = False) -> TrialStateInfo:
        """Release a leased trial. ``checkpoint_out`` + ``budget_done``: a checkpoint committed
        part-way through the slice (a drain); the retry resumes from it. ``drained``: the worker
        is shutting down, which does not count toward the study's max_attempts."""
        body: dict[str, Any] = {"lease_token": token, "error": error[-10_000:], "retryable": retryable,
                                "checkpoint_invalid": checkpoint_invalid}
        # Sent only when given, so a server that predates the fields still accepts plain failures.
        body.update(_drop_none({"checkpoint_out": checkpoint_out, "budget_done": budget_done,
                                "drained": True if drained else None}))
        return self._call("POST", f"/api/v1/trials/{trial_id}/fail", json=body)

    # --- transport ---------------------------------------------------------------------

    def _call(self, method: str, path: str, *, timeout: float | None = None, raw: bool = False,
              repeatable: bool = True, **kwargs: Any) -> Any:
        """``repeatable=False``: retried only when the request cannot have reached the server (no
        connection; a 503, which the server answers having changed nothing)."""
        if timeout is not None:
            kwargs["timeout"] = timeout
        for attempt in range(self._retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                if not repeatable and not isinstance(error, _NOT_SENT):
                    raise ServiceUnavailable(
                        f"no answer from {self.server} to {method} {path} ({error}); it may have been carried "
                        "out, so it was not sent again: check before repeating it"
                    ) from error
                if attempt == self._retries:
                    raise ServiceUnavailable(f"cannot reach {self.server}: {error}") from error
            else:
                if response.status_code != 503 or attempt == self._retries:
                    if raw and response.is_success:
                        return response.content
                    return _decode(response)
            # Jitter keeps a crowd of workers from retrying in lockstep after an outage.
            time.sleep(self._backoff * 2**attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")


# Transport errors raised before the request was sent: repeating the request cannot repeat its effect.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def new_request_key() -> str:
    """An Idempotency-Key for one lease request (and its retries)."""
    return secrets.token_urlsafe(24)


def _decode(response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    if response.is_success:
        return response.json()
    try:
        body = response.json()
        code, message = body.get("error", ""), body.get("message") or str(body)
    except ValueError:
        code, message = "", response.text[:500]
    error_type = ERRORS_BY_CODE.get(code, HpoError)
    error = error_type(f"HTTP {response.status_code}: {message}")
    error.status_code = response.status_code
    raise error


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
