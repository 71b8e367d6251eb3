"""API tokens: many named tokens per user, stored as a prefix and a keyed hash, shown once."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_MARK = "wnw_"
PREFIX_LENGTH = 8


def hash_token(key: str) -> str:
    secret = getattr(settings, "WINNOW_TOKEN_HASH_KEY", None) or settings.SECRET_KEY
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=PREFIX_LENGTH, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({TOKEN_MARK}{self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def issue(cls, user, name: str) -> tuple[ApiToken, str]:
        """Create a token; return it with its secret key, which is never stored and never shown again."""
        while True:
            prefix = secrets.token_hex(PREFIX_LENGTH // 2)
            if not cls.objects.filter(prefix=prefix).exists():
                break
        key = f"{TOKEN_MARK}{prefix}{secrets.token_urlsafe(30)}"
        token = cls.objects.create(user=user, name=name, prefix=prefix, key_hash=hash_token(key))
        return token, key

    @classmethod
    def authenticate(cls, key: str) -> ApiToken | None:
        if not key.startswith(TOKEN_MARK) or len(key) < len(TOKEN_MARK) + PREFIX_LENGTH + 20:
            return None
        prefix = key[len(TOKEN_MARK) : len(TOKEN_MARK) + PREFIX_LENGTH]
        token = cls.objects.active().select_related("user").filter(prefix=prefix).first()
        if token is None or not hmac.compare_digest(token.key_hash, hash_token(key)):
            return None
        if not token.user.is_active:
            return None
        now = timezone.now()
        # Record use at most once a minute: a busy client should not write on every request.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            cls.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        return token

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class WorkerHeartbeat(models.Model):
    """Written by the `winnow.ping` task: proof that a worker took a task and reached the database."""

    marker = models.CharField(max_length=64, unique=True)
    seen_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.marker
