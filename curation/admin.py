from django.contrib import admin
from django.db.models import Count

from curation.embedding_uploads import delete_upload, expire_uploads
from curation.models import (
    Dataset,
    Embedding,
    EmbeddingUpload,
    Membership,
    MetadataField,
    PredictionTask,
    PredictionUpload,
    Sample,
    Tag,
)
from curation.predictions import delete_task
from curation.services import delete_dataset


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "owner", "upload_mode", "sample_count", "tag_count", "created_at"]
    list_filter = ["upload_mode"]
    search_fields = ["name", "id", "owner__username"]
    readonly_fields = ["id", "next_idx", "created_at", "updated_at"]
    inlines = [MembershipInline]

    def get_queryset(self, request):
        # Counts in one query, not one per row.
        return (
            super()
            .get_queryset(request)
            .select_related("owner")
            .annotate(n_samples=Count("samples", distinct=True), n_tags=Count("tags", distinct=True))
        )

    @admin.display(ordering="n_samples", description="samples")
    def sample_count(self, obj):
        return obj.n_samples

    @admin.display(ordering="n_tags", description="tags")
    def tag_count(self, obj):
        return obj.n_tags

    def get_deleted_objects(self, objs, request):
        # Django's default lists every related row (samples, tags, scores: millions) and asks for delete
        # permission on each model; a dataset goes as a whole, so name the datasets and count the rest.
        datasets = list(objs)
        ids = [d.pk for d in datasets]
        counts = {
            "datasets": len(datasets),
            "samples": Sample.objects.filter(dataset_id__in=ids).count(),
            "tags": Tag.objects.filter(dataset_id__in=ids).count(),
            "embeddings": Embedding.objects.filter(dataset_id__in=ids).count(),
        }
        names = [f"{d.name} ({d.pk})" for d in datasets]
        return names, counts, set(), []

    def delete_model(self, request, obj):
        delete_dataset(obj)

    def delete_queryset(self, request, queryset):
        for dataset in queryset:
            delete_dataset(dataset)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["dataset", "user", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["dataset__name", "user__username"]
    autocomplete_fields = ["user", "dataset"]


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name", "dataset", "count", "origin", "parent", "creator", "created_at"]
    list_filter = ["origin"]
    search_fields = ["name", "dataset__name"]
    readonly_fields = ["id", "dataset", "count", "origin", "origin_detail", "parent", "creator", "created_at"]
    exclude = ["bitmask"]


@admin.register(Embedding)
class EmbeddingAdmin(admin.ModelAdmin):
    list_display = ["name", "dataset", "dimension", "count", "source", "projection_status", "created_at"]
    search_fields = ["name", "dataset__name"]
    readonly_fields = ["id", "dataset", "dimension", "count", "matrix_key", "projection_key", "created_at"]


@admin.register(MetadataField)
class MetadataFieldAdmin(admin.ModelAdmin):
    list_display = ["path", "dataset", "type", "display_name", "fallback"]
    search_fields = ["path", "dataset__name"]


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ["file_name", "dataset", "idx", "width", "height", "created_at"]
    search_fields = ["file_name", "id"]
    readonly_fields = ["id", "dataset", "idx", "sha256", "original_key", "thumbnail_key", "created_at"]
    list_select_related = ["dataset"]
    show_full_result_count = False  # counting every sample of every dataset is slow on large installs

    def has_delete_permission(self, request, obj=None):
        # A sample's idx is part of every tag bitmask and score of its dataset: samples go with their dataset.
        return False


@admin.register(EmbeddingUpload)
class EmbeddingUploadAdmin(admin.ModelAdmin):
    """Resumable embedding uploads; abandoned ones expire, or go here with their chunks."""

    list_display = ["name", "dataset", "kind", "status", "progress", "created_at", "updated_at"]
    list_filter = ["status", "kind"]
    search_fields = ["name", "id", "dataset__name"]
    readonly_fields = [
        "id",
        "dataset",
        "name",
        "kind",
        "sizes",
        "received",
        "chunks",
        "status",
        "progress",
        "error",
        "error_field",
        "embedding",
        "creator",
        "created_at",
        "updated_at",
    ]
    actions = ["delete_with_chunks", "expire_abandoned"]

    def has_add_permission(self, request):
        return False

    def delete_model(self, request, obj):
        delete_upload(obj)

    def delete_queryset(self, request, queryset):
        for upload in queryset:
            delete_upload(upload)

    @admin.action(description="Delete the selected uploads and their stored chunks")
    def delete_with_chunks(self, request, queryset):
        self.delete_queryset(request, queryset)

    @admin.action(description="Delete every abandoned upload (receiving, idle past the expiry)")
    def expire_abandoned(self, request, queryset):
        self.message_user(request, f"{expire_uploads()} abandoned upload(s) deleted")


@admin.register(PredictionTask)
class PredictionTaskAdmin(admin.ModelAdmin):
    list_display = ["name", "dataset", "type", "is_labels", "count", "updated_at"]
    list_filter = ["type", "is_labels"]
    search_fields = ["name", "dataset__name"]
    readonly_fields = ["id", "dataset", "name", "type", "categories", "count", "object_count", "arrays_prefix",
                       "creator", "created_at", "updated_at"]  # fmt: skip

    def has_add_permission(self, request):
        return False

    def delete_model(self, request, obj):
        delete_task(obj)  # its scores leave the samples' metadata too

    def delete_queryset(self, request, queryset):
        for task in queryset:
            delete_task(task)


@admin.register(PredictionUpload)
class PredictionUploadAdmin(admin.ModelAdmin):
    list_display = ["task_name", "dataset", "kind", "size", "status", "progress", "created_at"]
    list_filter = ["status", "kind"]
    readonly_fields = ["id", "dataset", "task_name", "kind", "body_key", "size", "status", "progress", "error",
                       "result", "creator", "created_at", "updated_at"]  # fmt: skip

    def has_add_permission(self, request):
        return False
