"""REST API: the caller's own API tokens (list, create, revoke).

Only a signed-in session creates or revokes tokens: a token that could make more tokens would outlive its
own revocation once leaked. A token may still list them.
"""

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from winnow.accounts.models import TOKEN_MARK, ApiToken
from winnow.fields import StringField


class ApiTokenSerializer(serializers.ModelSerializer):
    prefix = serializers.SerializerMethodField()
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at", "active"]
        read_only_fields = fields

    def get_prefix(self, obj) -> str:
        return f"{TOKEN_MARK}{obj.prefix}"


class NewTokenSerializer(serializers.Serializer):
    name = StringField(max_length=100, trim_whitespace=True)


class ManagedFromSession(permissions.BasePermission):
    message = "API tokens are created and revoked from a signed-in session (Preferences), not with a token."

    def has_permission(self, request, view):
        return request.method in permissions.SAFE_METHODS or (
            request.user.is_authenticated and request.auth is None  # session authentication sets no auth
        )


class TokenList(generics.ListAPIView):
    permission_classes = [permissions.IsAuthenticated, ManagedFromSession]
    serializer_class = ApiTokenSerializer
    pagination_class = None

    def get_queryset(self):
        return ApiToken.objects.filter(user=self.request.user)

    @extend_schema(request=NewTokenSerializer, responses={201: ApiTokenSerializer})
    def post(self, request):
        data = NewTokenSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, key = ApiToken.issue(request.user, data.validated_data["name"])
        body = ApiTokenSerializer(token).data
        body["key"] = key  # the only time the secret is shown
        return Response(body, status=status.HTTP_201_CREATED)


class TokenRevoke(APIView):
    permission_classes = [permissions.IsAuthenticated, ManagedFromSession]

    @extend_schema(request=None, responses={200: ApiTokenSerializer})
    def post(self, request, token_id: int):
        token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
        token.revoke()
        return Response(ApiTokenSerializer(token).data)


urlpatterns = [
    path("tokens", TokenList.as_view(), name="token-list"),
    path("tokens/<int:token_id>/revoke", TokenRevoke.as_view(), name="token-revoke"),
]
