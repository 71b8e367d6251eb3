"""Signed URLs: absolute, expiring, carrying their own credential (called without a token).

A URL is `<path>?<params>&user=<pk>&expires=<unix s>&signature=<hex>`, the signature an HMAC-SHA256
(key derived from SECRET_KEY) over the method, the path and every other query parameter. It names the
user who asked for it; on use the user must still be active and still have the role the action needs
(the caller checks the role), so removing a member or deactivating a user stops their URLs too.
Used by the tag exports (image links for Label Studio) and by the Lightly-compatible API.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.utils.crypto import constant_time_compare, salted_hmac

# Unchanged since the module lived in curation.lightly: URLs handed out before the move stay valid.
SALT = "winnow.lightly.signed-url"
CSV_TTL = 15 * 60  # embedding CSV upload and download
READ_URL_TTL = 15 * 60  # a sample's read URL
MAX_EXPORT_TTL = 30 * 24 * 3600


class InvalidSignature(PermissionDenied):
    """A signed URL that is tampered with, expired or names a user who is gone: a 403."""


def _signature(method: str, path: str, params: dict[str, str]) -> str:
    canonical = "\n".join([method.upper(), path, urlencode(sorted(params.items()))])
    return salted_hmac(SALT, canonical, algorithm="sha256").hexdigest()


def sign_path(method: str, path: str, params: dict, ttl: int, user) -> str:
    """`path?query`, usable with `method` for `ttl` seconds by anyone holding it, acting as `user`."""
    query = {key: str(value) for key, value in params.items()}
    query["user"] = str(user.pk)
    query["expires"] = str(int(time.time()) + int(ttl))
    query["signature"] = _signature(method, path, query)
    return path + "?" + urlencode(query)


def sign(request, method: str, path: str, params: dict, ttl: int, user) -> str:
    """The absolute URL of `path` (host taken from the request), usable with `method` for `ttl` seconds."""
    return request.build_absolute_uri(sign_path(method, path, params, ttl, user))


def verify(request) -> tuple[object, dict[str, str]]:
    """(user, signed params) of a request to a signed URL; InvalidSignature (403) if wrong or expired."""
    if any(len(values) > 1 for _key, values in request.GET.lists()):
        raise InvalidSignature("A signed URL names each parameter once.")
    params = {key: value for key, value in request.GET.items() if key != "signature"}
    given = request.GET.get("signature", "")
    if not given or not constant_time_compare(given, _signature(request.method, request.path, params)):
        raise InvalidSignature("The URL's signature is not valid for this request.")
    try:
        expires = int(params.get("expires", ""))
    except ValueError:
        raise InvalidSignature("The URL has no valid expiry.") from None
    if expires < time.time():
        raise InvalidSignature("The URL has expired; ask for a new one.")
    user = get_user_model().objects.filter(pk=params.get("user"), is_active=True).first()
    if user is None:
        raise InvalidSignature("The user who asked for this URL no longer exists or is inactive.")
    return user, params


def claim_once(request, key: str) -> bool:
    """Mark a write URL used; False if it already was (until it would have expired anyway)."""
    remaining = max(1, int(request.GET.get("expires", "0")) - int(time.time()) + 1)
    return cache.add(f"winnow:lightly:used-url:{key}", 1, timeout=remaining)


def release(key: str) -> None:
    """A write that failed before writing anything leaves its URL usable for a corrected retry."""
    cache.delete(f"winnow:lightly:used-url:{key}")
