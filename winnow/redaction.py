"""Secrets kept out of logs and error pages.

`RedactSecrets` is a logging filter: API tokens (`wnw_...`, `?token=`), the signatures of signed links
(Winnow's `signature=`, S3's `X-Amz-Signature`/`X-Amz-Credential`) become `[redacted]` in every log line,
including runserver's request lines. `SecretsHiddenFilter` is the DEBUG error page's filter: besides Django's
API|TOKEN|KEY|SECRET|PASS|SIGNATURE it hides every setting and environment variable whose name ends in URL
or names a location (DATABASE_URL, CELERY_BROKER_URL, CACHE_URL carry passwords).
"""

from __future__ import annotations

import logging
import re

from django.views.debug import SafeExceptionReporterFilter

REDACTED = "[redacted]"
_QUERY_SECRET = re.compile(
    r"(?i)\b(token|signature|x-amz-signature|x-amz-credential|x-amz-security-token|sig|key)=[^&\s\"'#]+"
)
_TOKEN = re.compile(r"\bwnw_[A-Za-z0-9_-]{8,}")
_HEADER = re.compile(r"(?i)(authorization:\s*token\s+)\S+")


def redact(text: str) -> str:
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    return _TOKEN.sub(REDACTED, text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the formatter's to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class SecretsHiddenFilter(SafeExceptionReporterFilter):
    hidden_settings = re.compile(r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|CREDENTIAL|URL$|_URL|LOCATION|DSN", flags=re.I)
