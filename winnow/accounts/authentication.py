from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from winnow.accounts.models import ApiToken


def authenticate_key(key: str):
    token = ApiToken.authenticate(key.strip())
    if token is None:
        raise exceptions.AuthenticationFailed(_("Invalid or revoked API token."))
    return token.user, token


class ApiTokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>` against our hashed, revocable tokens."""

    keyword = "Token"

    def authenticate_credentials(self, key):
        return authenticate_key(key)


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = ApiTokenAuthentication
    name = "ApiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization", "description": "Token <key>"}
