from django.contrib import admin

from sampling.models import SamplingRun


@admin.register(SamplingRun)
class SamplingRunAdmin(admin.ModelAdmin):
    list_display = ["name", "dataset", "strategy", "status", "progress", "score_count", "created_at", "finished_at"]
    list_filter = ["status", "strategy"]
    search_fields = ["name", "id", "dataset__name"]
    readonly_fields = [f.name for f in SamplingRun._meta.fields]
    list_select_related = ["dataset"]

    def has_add_permission(self, request):
        return False
