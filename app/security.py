"""API keys: when the service has any (``DAA_API_KEYS`` or ``DAA_API_KEYS_FILE``), a request must present one as
``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. Keys are compared in constant time. And CORS, when origins are
allowed (``DAA_CORS_ORIGINS``)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers

from app.errors import APIError, error_response
from model.errors import ErrorCode

# auto_error=False: the check below answers in the service's error model; declared so the OpenAPI schema (and
# clients generated from it) know both schemes.
api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKeyHeader",
    description="one of the service's API keys (only when it has keys)",
)
bearer = HTTPBearer(
    auto_error=False, scheme_name="BearerKey", description="an API key as a bearer token (only when the service has keys)"
)


class APIKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def accepts(self, presented: str | None) -> bool:
        if presented is None:
            return False
        given = presented.encode()
        # Every key is compared (no early exit), so timing does not tell which prefix or key matched.
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(given, key)
        return found


async def metrics_access(request: Request) -> None:
    """/metrics is open unless DAA_METRICS_NEED_KEY; not declared in the schema (Prometheus, not clients, call it)."""
    if request.app.state.settings.metrics_need_key:
        await require_key(request, await api_key_header(request), await bearer(request))


async def require_key(
    request: Request,
    header: Annotated[str | None, Security(api_key_header)] = None,
    token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> None:
    keys: APIKeys = request.app.state.api_keys
    if not keys.enabled:
        return
    if keys.accepts(header) or keys.accepts(token.credentials if token else None):
        return
    raise APIError(
        401,
        ErrorCode.UNAUTHORIZED,
        "this service needs an API key: send it as X-API-Key or as a Bearer token",
        None,
        headers={"WWW-Authenticate": 'Bearer realm="daa-age"'},
    )


class RefusingCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, but a refused preflight is the service's JSON error and carries no
    ``Access-Control-Allow-*`` header (Starlette answers plain text with the allowed methods and headers)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        reason = bytes(response.body).decode(errors="replace")  # e.g. "Disallowed CORS origin"
        return error_response(400, ErrorCode.CORS_REFUSED, f"CORS preflight refused: {reason}", {"reason": reason})
