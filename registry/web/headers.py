"""The header policy every response carries, and the page an unexpected error answers.

The pages hold patient data, so a browser must neither run script that was injected
into them, nor frame them on another site (clickjacking), nor guess a download's type,
nor tell another site which page linked to it (the address holds study ids), nor keep a
copy in its cache for the next user of a shared workstation. A response sets its own
``Cache-Control`` only when it holds no patient data (the stylesheet, the script).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: No inline script or style, nothing from elsewhere, never framed, forms only to this site.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: HTTPS only for a year, once a browser has been here over HTTPS (``--https`` alone: over plain HTTP it would lock
#: a local installation out).
STRICT_TRANSPORT_SECURITY = "max-age=31536000"

log = logging.getLogger("registry.web")


def policy(*, https: bool) -> dict[str, str]:
    """The headers set on every response (``Cache-Control`` only where the response sets none)."""
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    if https:
        headers["Strict-Transport-Security"] = STRICT_TRANSPORT_SECURITY
    return headers


class Guard:
    """ASGI middleware: the header policy on every response, the error page for every unexpected exception.

    Inside the session middleware, so the error page is a page like the others; the
    exception is logged here by type and place only (its message may quote patient data)
    and not raised further, so the server logs no traceback with values either.
    """

    def __init__(self, app: ASGIApp, *, https: bool, failed: Callable[[Request], Response]) -> None:
        self.app, self.headers, self.failed = app, policy(https=https), failed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_policy(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name != "Cache-Control" or name not in headers:
                        headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_policy)
        except Exception as error:
            if started:  # too late for a page: the connection is cut
                raise
            route = scope.get("route")
            where = "; ".join(f"{frame.filename}:{frame.lineno} in {frame.name}"
                              for frame in traceback.extract_tb(error.__traceback__)[-3:])  # fmt: skip
            log.error("unexpected %s answering %s %s (%s)", type(error).__name__, scope["method"],
                      getattr(route, "path", "an unknown route"), where)  # fmt: skip
            await self.failed(Request(scope, receive))(scope, receive, send_with_policy)
