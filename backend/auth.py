"""Who a connection is: an anonymous name, or a signed token when required."""

from __future__ import annotations

from typing import Any

from backend.chat import anonymous_user
from backend.config import Settings
from backend.models import ChatError, ConnectAuth, parse
from backend.presence import User


def authenticate(settings: Settings, auth: Any) -> User:
    """The user behind a connect ``auth`` payload, or ``ChatError('unauthorized')``."""
    try:
        creds = parse(ConnectAuth, auth if auth is not None else {})
    except ChatError as exc:
        raise ChatError("unauthorized", f"invalid auth: {exc.detail}", 401) from None
    return anonymous_user(creds.name)
