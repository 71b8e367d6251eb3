from django.contrib import admin, messages
from django.utils import timezone

from winnow.accounts.models import ApiToken, WorkerHeartbeat


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "display_prefix", "created_at", "last_used_at", "is_active"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["user", "name", "display_prefix", "created_at", "last_used_at", "revoked_at"]
    fields = readonly_fields
    actions = ["revoke"]

    @admin.display(description="prefix")
    def display_prefix(self, obj):
        return f"wnw_{obj.prefix}…"

    @admin.display(boolean=True, description="active")
    def is_active(self, obj):
        return obj.is_active

    def has_add_permission(self, request):
        # A secret must be shown to its owner exactly once: tokens are made in Preferences or createtoken.
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["marker", "seen_at"]
