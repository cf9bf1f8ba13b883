"""The dashboard: a small single-page app served by the API process itself.

`mount_dashboard(app)` serves ``index.html`` at ``/`` and the files of this folder
at ``/static/...``. Everything is local (the chart library is vendored under
``vendor/``). Files are read and gzipped once, at mount; ``index.html`` links each
asset as ``/static/<file>?v=<content hash>``, so assets are cached for a year
(``immutable``) and a new release is picked up on the next page load, while
``index.html`` itself is revalidated (ETag) every time.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request, Response

HERE = Path(__file__).resolve().parent
ASSETS = ("app.js", "charts.js", "pages_list.js", "trials_table.js", "page_study.js", "page_trial.js", "style.css",
          "favicon.svg", "vendor/echarts.custom.min.js", "vendor/LICENSE", "vendor/NOTICE", "vendor/LICENSE-d3",
          "vendor/LICENSE-zrender")
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml", ".html": "text/html; charset=utf-8", "": "text/plain; charset=utf-8"}
IMMUTABLE = "public, max-age=31536000, immutable"
# ECharts sets element styles from script; no inline or remote script runs.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


@dataclass(frozen=True)
class _File:
    body: bytes
    gzipped: bytes
    version: str  # a hash of the content
    media_type: str

    @classmethod
    def of(cls, body: bytes, suffix: str) -> _File:
        digest = hashlib.sha256(body).hexdigest()[:16]
        return cls(body, gzip.compress(body, 6, mtime=0), digest, TYPES.get(suffix, TYPES[""]))

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    def response(self, request: Request, cache_control: str) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding",
                   "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", "") and len(self.gzipped) < len(self.body):
            headers["Content-Encoding"] = "gzip"
            return Response(self.gzipped, media_type=self.media_type, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


def load_files(root: Path = HERE) -> tuple[_File, dict[str, _File]]:
    """(index.html with versioned asset links, assets by path under /static/)."""
    assets = {name: _File.of((root / name).read_bytes(), Path(name).suffix) for name in ASSETS}

    def link(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"/static/{name}?v={assets[name].version}"

    index = re.sub(r"\{\{static:([^}]+)\}\}", link, (root / "index.html").read_text(encoding="utf-8"))
    return _File.of(index.encode(), ".html"), assets


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/`` and its assets at ``/static/...`` (not in the OpenAPI schema)."""
    index, assets = load_files()

    async def page(request: Request) -> Response:
        response = index.response(request, "no-cache")
        response.headers["Content-Security-Policy"] = CSP
        return response

    async def static(path: str, request: Request) -> Response:
        asset = assets.get(path)
        if asset is None:
            return Response(f"no such dashboard file: {path}\n", status_code=404, media_type="text/plain")
        fresh = request.query_params.get("v") == asset.version
        return asset.response(request, IMMUTABLE if fresh else "no-cache")

    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/static/{path:path}", static, methods=["GET"], include_in_schema=False)
