from django.contrib import admin

from sampling.models import ImportanceScore, SamplingRun


@admin.register(SamplingRun)
class SamplingRunAdmin(admin.ModelAdmin):
    list_display = ["name", "dataset", "strategy", "status", "progress", "score_count", "created_at", "finished_at"]
    list_filter = ["status", "strategy"]
    search_fields = ["name", "id", "dataset__name"]
    readonly_fields = [f.name for f in SamplingRun._meta.fields]
    list_select_related = ["dataset"]

    def has_add_permission(self, request):
        return False

    def get_deleted_objects(self, objs, request):
        # Django's confirmation page lists every related row: a million scores for one large run. Count them instead.
        runs = list(objs)
        scores = sum(run.score_count for run in runs)
        to_delete = [f"Sampling run: {run} with its {run.score_count:,} importance scores" for run in runs]
        counts = {SamplingRun._meta.verbose_name_plural: len(runs), ImportanceScore._meta.verbose_name_plural: scores}
        perms_needed = set() if self.has_delete_permission(request) else {SamplingRun._meta.verbose_name}
        return to_delete, counts, perms_needed, []
