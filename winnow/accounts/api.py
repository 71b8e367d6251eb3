"""REST API: the caller's own API tokens (list, create, revoke)."""

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
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


class TokenList(generics.ListAPIView):
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
    @extend_schema(request=None, responses={200: ApiTokenSerializer})
    def post(self, request, token_id: int):
        token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
        token.revoke()
        return Response(ApiTokenSerializer(token).data)


urlpatterns = [
    path("tokens", TokenList.as_view(), name="token-list"),
    path("tokens/<int:token_id>/revoke", TokenRevoke.as_view(), name="token-revoke"),
]
