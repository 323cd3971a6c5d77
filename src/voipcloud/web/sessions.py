"""The administrator's browser session: a signed, expiring cookie around an API token.

The cookie holds a bearer token of `AuthService` (stored hashed, expiring, revocable), signed
with a key derived from the data dir's secret, so logging out really ends the session.
CSRF tokens are an HMAC of that session token: they need no storage and die with it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer

from voipcloud.services.controller import Controller

SESSION_COOKIE = "voipcloud_session"
LOGIN_CSRF_COOKIE = "voipcloud_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


def _serializer(controller: Controller) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(controller.auth.signing_key("web-session"), salt="session")


def seal(controller: Controller, token: str) -> str:
    return _serializer(controller).dumps({"t": token})


def unseal(controller: Controller, cookie: str | None) -> str | None:
    """The session's API token, or None when the cookie is missing, forged or too old."""
    if not cookie:
        return None
    try:
        data = _serializer(controller).loads(cookie, max_age=int(controller.ctx.token_ttl))
    except BadSignature:  # also SignatureExpired
        return None
    token = data.get("t") if isinstance(data, dict) else None
    return token if isinstance(token, str) else None


def csrf_for(controller: Controller, session_token: str) -> str:
    key = controller.auth.signing_key("web-csrf").encode()
    return hmac.new(key, session_token.encode(), hashlib.sha256).hexdigest()


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
