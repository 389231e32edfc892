"""The header policy every response carries.

The pages hold patient data, so a browser must neither run script that was injected
into them, nor frame them on another site (clickjacking), nor guess a download's type,
nor tell another site which page linked to it (the address holds study ids), nor keep a
copy in its cache for the next user of a shared workstation. A response sets its own
``Cache-Control`` only when it holds no patient data (the stylesheet).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: No inline script or style, nothing from elsewhere, never framed, forms only to this site.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: HTTPS only for a year, once a browser has been here over HTTPS (``--https`` alone: over plain HTTP it would lock
#: a local installation out).
STRICT_TRANSPORT_SECURITY = "max-age=31536000"


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
    """ASGI middleware: the header policy on every response."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app, self.headers = app, policy(https=https)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name != "Cache-Control" or name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_policy)
