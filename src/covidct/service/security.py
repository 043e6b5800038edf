"""Browser-facing safety of the service: security headers on every response, the HttpOnly session
cookie, and the same-origin check for cookie-authenticated requests that change state.

The web page signs in by POSTing its API token to ``/login``; the answer sets the token in an
``HttpOnly; SameSite=Strict`` cookie, so page script (and any script injected into it) cannot read it.
API clients keep sending ``Authorization: Bearer``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from covidct.errors import ServiceError

SESSION_COOKIE = "covidct_session"
SESSION_MAX_AGE_S = 12 * 3600
"""A browser session lasts a working day; sign in again after."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",  # report pages carry their CSS inline; no script may be inline
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


class CsrfError(ServiceError):
    """A cookie-authenticated request that changes state came from another origin (HTTP 403)."""


class SecurityHeaders:
    """ASGI middleware: adds `SECURITY_HEADERS` to every HTTP response (pages, API, static files,
    errors). Pure ASGI, so streamed upload bodies pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                         if k.encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def own_origin(request: Request) -> str:
    """``scheme://host[:port]`` of this server as the client addressed it (the Host header)."""
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def check_same_origin(request: Request) -> None:
    """Refuse (`CsrfError`) a state-changing request whose ``Origin`` (or, without one, ``Referer``) is
    not this server; SameSite=Strict already keeps the cookie off cross-site requests, this also
    covers other origins of the same site."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer", "")
        origin = "/".join(referer.split("/", 3)[:3]) if referer else None
    if origin != own_origin(request):
        shown = (origin or "none")[:100]
        raise CsrfError(f"Refusing a {request.method} signed in by cookie from origin {shown!r}; send it "
                        "from the covidct page itself, or use 'Authorization: Bearer <token>'.")


def set_session_cookie(response: Response, request: Request, session_id: str) -> None:
    """Put the server-side session's id (never the API token) in the HttpOnly, SameSite=Strict session
    cookie (Secure over https)."""
    response.set_cookie(SESSION_COOKIE, session_id, max_age=SESSION_MAX_AGE_S, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def login_token(body: Any) -> str:
    """The token from a login body ``{"token": "..."}``; `ServiceError` when there is none."""
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise ServiceError('Send the API token as JSON {"token": "..."} (create one with '
                           "`covidct token create NAME`).")
    return token.strip()
