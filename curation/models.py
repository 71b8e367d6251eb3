"""Datasets, samples, tags, embeddings and the metadata configurator."""

from __future__ import annotations

import secrets

import numpy as np
from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from curation import storage
from curation.bitmask import ones, to_indices


def new_public_id() -> str:
    """24 lowercase hex characters: the id form Lightly (and MongoDB) use."""
    return secrets.token_hex(12)


class PublicIdField(models.CharField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", 24)
        kwargs.setdefault("default", new_public_id)
        kwargs.setdefault("editable", False)
        kwargs.setdefault("primary_key", True)
        super().__init__(*args, **kwargs)


class UploadMode(models.TextChoices):
    FULL = "full", "Full images"
    THUMBNAILS = "thumbnails", "Thumbnails only"
    META = "meta", "Metadata only"


# What each upload mode keeps of a sample's pixels: the file a sample's pixels are read from, in the words of the
# `/samples/<id>/<kind>` routes ("image" for the original, "thumbnail"), or None when the dataset keeps none.
PIXEL_KINDS = {UploadMode.FULL: "image", UploadMode.THUMBNAILS: "thumbnail", UploadMode.META: None}


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    EDITOR = "editor", "Editor"
    OWNER = "owner", "Owner"


ROLE_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.OWNER: 2}


class Dataset(models.Model):
    id = PublicIdField()
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_datasets")
    upload_mode = models.CharField(max_length=16, choices=UploadMode.choices, default=UploadMode.FULL)
    # idx of the next sample: samples get 0..N-1 in upload order and an idx is never reused.
    next_idx = models.PositiveIntegerField(default=0, editable=False)
    # Bumped by every write that changes existing samples' metadata (new samples move next_idx instead):
    # the metadata column store (curation.columns) is fresh while it was built at this version and next_idx.
    metadata_version = models.PositiveBigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One owner's datasets can be told apart by name, in any case (the API and /v1/ check first and
            # answer in words; this catches the race between two creates).
            models.UniqueConstraint(Lower("name"), "owner", name="dataset_unique_name_per_owner"),
        ]

    def __str__(self) -> str:
        return self.name

    # What the upload mode means; code asks these rather than comparing `upload_mode` with UploadMode values.

    @property
    def pixel_kind(self) -> str | None:
        """The file a sample's pixels are read from: "image" (full), "thumbnail" (thumbnails) or None (meta)."""
        return PIXEL_KINDS[self.upload_mode]

    @property
    def has_pixels(self) -> bool:
        """Samples arrive as image uploads and have thumbnails (full, thumbnails); meta samples are registered as JSON."""
        return self.pixel_kind is not None

    @property
    def stores_originals(self) -> bool:
        """The uploaded image files themselves are kept (full), not only their thumbnails."""
        return self.pixel_kind == "image"

    @property
    def storage_prefix(self) -> str:
        return storage.dataset_prefix(self.id)


class Membership(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=8, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset", "user"], name="membership_unique_user")]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.dataset}"


class Sample(models.Model):
    id = PublicIdField()
    # No index of its own: the unique (dataset, idx) and (dataset, file_name) indexes start with it, and
    # every index is maintained by each registration. No database foreign key either: its check ran once per
    # inserted row (a third of a registration's locked time), and every insert goes through
    # services._insert_new, which inserts only while it holds the dataset's row lock. Deleting a dataset
    # still deletes its samples (Django's CASCADE).
    dataset = models.ForeignKey(
        Dataset, on_delete=models.CASCADE, related_name="samples", db_index=False, db_constraint=False
    )
    idx = models.PositiveIntegerField()
    file_name = models.CharField(max_length=1024)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    format = models.CharField(max_length=16, blank=True, default="")
    sha256 = models.CharField(max_length=64, blank=True, default="")
    original_key = models.CharField(max_length=1200, blank=True, default="")
    thumbnail_key = models.CharField(max_length=1200, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["dataset", "idx"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "idx"], name="sample_unique_idx"),
            models.UniqueConstraint(fields=["dataset", "file_name"], name="sample_unique_file_name"),
        ]

    def __str__(self) -> str:
        return self.file_name


class TagOrigin(models.TextChoices):
    UPLOAD = "upload", "Upload"
    SELECTION = "selection", "Selection"
    FILTER = "filter", "Filter"
    SAMPLING = "sampling", "Sampling run"
    ARITHMETIC = "arithmetic", "Arithmetic"


# The tag that holds every sample. Its bits are all ones over idx 0..next_idx-1 (idx is dense and samples
# are never deleted), so registration keeps only its `count` up to date and it is materialised on load.
INITIAL_TAG = "initial-tag"


class Tag(models.Model):
    """An immutable snapshot of a set of samples, kept as a bitmask over sample idx (bit i = idx i).

    `initial-tag` is the exception: it grows with every registration. Its stored bitmask is not rewritten
    per batch (that would be O(N) per batch); an instance loaded through the ORM carries the bitmask and
    count of every sample at the time of loading (see `from_db`). Read it through the model, never as a
    raw column.
    """

    id = PublicIdField()
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=200)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    bitmask = models.BinaryField()
    count = models.PositiveIntegerField(default=0)
    origin = models.CharField(max_length=16, choices=TagOrigin.choices)
    # How the tag was made: the filter, the operation and its operands, the run and top_k.
    origin_detail = models.JSONField(default=dict, blank=True)
    creator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["dataset", "name"], name="tag_unique_name")]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_db(cls, db, field_names, values):
        tag = super().from_db(db, field_names, values)
        deferred = tag.get_deferred_fields()
        if "bitmask" in deferred and "count" in deferred:
            return tag
        if "name" in deferred:  # e.g. .only("id", "bitmask"): ask which tag this is
            row = cls._base_manager.using(db).filter(pk=tag.pk).values_list("name", "dataset__next_idx").first()
            if row is None or row[0] != INITIAL_TAG:
                return tag
            size = row[1]
        elif tag.name != INITIAL_TAG:
            return tag
        else:
            size = cls._base_manager.using(db).filter(pk=tag.pk).values_list("dataset__next_idx", flat=True).first()
        if size is not None:
            tag.__dict__["count"] = size
            if "bitmask" not in deferred:
                tag.__dict__["bitmask"] = ones(size)
        return tag

    def indices(self) -> np.ndarray:
        """The sample idx values in this tag, ascending."""
        return to_indices(bytes(self.bitmask))


class EmbeddingSource(models.TextChoices):
    CSV = "csv", "Uploaded CSV"
    BUILTIN = "builtin", "Built-in embedder"


class Embedding(models.Model):
    id = PublicIdField()
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="embeddings")
    name = models.CharField(max_length=200)
    dimension = models.PositiveIntegerField()
    count = models.PositiveIntegerField()
    # A float32 matrix of shape (dataset.next_idx at upload, dimension) ordered by idx, as .npy.
    matrix_key = models.CharField(max_length=1200)
    source = models.CharField(max_length=16, choices=EmbeddingSource.choices, default=EmbeddingSource.CSV)
    # The embedder the server ran ("builtin", "efficientnet-lite0"); empty for uploaded vectors.
    model = models.CharField(max_length=32, blank=True, default="")
    # The 2D projection for the embedding map (float32 n x 2, .npy), filled in by a worker.
    projection_key = models.CharField(max_length=1200, blank=True, default="")
    projection_status = models.CharField(max_length=16, default="pending")
    creator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["dataset", "name"], name="embedding_unique_name")]

    def __str__(self) -> str:
        return self.name


class FieldType(models.TextChoices):
    INT = "int", "Integer"
    FLOAT = "float", "Float"
    CATEGORICAL_STRING = "categorical_string", "Categorical string"
    CATEGORICAL_INT = "categorical_int", "Categorical integer"
    BOOLEAN = "boolean", "Boolean"


class MetadataField(models.Model):
    """A configurator entry: which metadata path the app shows, as what type, with which fallback."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="metadata_fields")
    path = models.CharField(max_length=300)
    type = models.CharField(max_length=24, choices=FieldType.choices)
    display_name = models.CharField(max_length=200, blank=True, default="")
    fallback = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["dataset", "path"], name="metadata_field_unique_path")]

    def __str__(self) -> str:
        return self.display_name or self.path


class MetadataColumns(models.Model):
    """The dataset's metadata column store (curation.columns): one typed .npy column per configured field,
    derived from the samples' metadata at `version` (Dataset.metadata_version) over idx 0..size-1.

    `fields` maps a field's path to what was built for it: {type, kind, keys, categories_key, odd}.
    `status`: idle, queued, building or failed (queued again after a while); `queued_at` lets a request
    enqueue a build once, not once per request.
    """

    dataset = models.OneToOneField(Dataset, on_delete=models.CASCADE, primary_key=True, related_name="columns")
    version = models.PositiveBigIntegerField(null=True, blank=True)
    size = models.PositiveIntegerField(default=0)
    fields = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, default="idle")
    queued_at = models.DateTimeField(null=True, blank=True)
    built_at = models.DateTimeField(null=True, blank=True)
    build_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"columns of {self.dataset_id} (v{self.version}, {self.size})"


class EmbeddingUpload(models.Model):
    """A resumable embeddings upload: its parts arrive in chunks (objects in storage), then a worker stores them.

    Parts: `file` for a CSV; `matrix` (.npy), `names` and optionally `labels` (.npy) for a binary upload.
    Chunks live at `datasets/<dataset>/uploads/<id>/<part>/<offset>` until processing ends or the
    session expires (curation.uploads.expire_uploads, the admin action).
    """

    id = PublicIdField()
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="embedding_uploads")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=8)  # csv | npy
    sizes = models.JSONField(default=dict)  # part -> total bytes announced at creation
    received = models.JSONField(default=dict)  # part -> bytes committed so far
    chunks = models.JSONField(default=dict)  # part -> offsets of its stored chunks, ascending
    status = models.CharField(max_length=16, default="receiving")  # receiving queued processing succeeded failed
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True, default="")
    error_field = models.CharField(max_length=32, blank=True, default="")
    embedding = models.ForeignKey(Embedding, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    creator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}, {self.status})"

    @property
    def prefix(self) -> str:
        return storage.embedding_upload_prefix(self.dataset_id, self.id)


class SavedView(models.Model):
    """A named view of a dataset (filter, sort, map colour), to open again or share: what the page's URL holds."""

    id = PublicIdField()
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="saved_views")
    name = models.CharField(max_length=200)
    # {"tag"?, "file_name"?, "conditions"?}: curation.filters' filter object, checked when saved.
    filter = models.JSONField(default=dict, blank=True)
    sort = models.CharField(max_length=310, default="idx")
    color = models.CharField(max_length=320, blank=True, default="")  # the map's colour: "field:<path>" or "tag:<id>"
    # Names of the object-detection tasks whose boxes Explore's tiles leave out ("Boxes on tiles").
    hidden_boxes = models.JSONField(default=list, blank=True)
    creator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["dataset", "name"], name="saved_view_unique_name")]


class PredictionTask(models.Model):
    """A model's predictions (or ground-truth labels) for the dataset, in Lightly's prediction format.

    The predictions live as compact columns (.npy, ordered like `idx.npy`) under `arrays_prefix` in object
    storage; the scores computed from them live in each sample's metadata at `predictions.<name>.<score>`,
    so filters, histograms, sorting and samplers read them like any other field. A new upload replaces both
    in one transaction.
    """

    id = PublicIdField()
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="prediction_tasks")
    name = models.CharField(max_length=100)
    type = models.CharField(max_length=32)  # classification | object-detection
    categories = models.JSONField(default=list)  # [{"id", "name"}] sorted by id
    is_labels = models.BooleanField(default=False)
    count = models.PositiveIntegerField(default=0)  # samples with predictions
    object_count = models.PositiveBigIntegerField(default=0)  # detections over all samples (0 for classification)
    arrays_prefix = models.CharField(max_length=1200, blank=True, default="")
    creator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["dataset", "name"], name="prediction_task_unique_name")]

    def __str__(self) -> str:
        return self.name


class SimilarityRun(models.Model):
    """A "more like this" search or a near-duplicate grouping over one embedding (curation.similarity).

    Small ones run in the request; larger ones on a worker, with progress. The result is a .npz in storage
    (`result_key`): the ranked idx and distances of a search, the groups of a duplicate run.
    """

    id = PublicIdField()
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="similarity_runs")
    embedding = models.ForeignKey(Embedding, on_delete=models.CASCADE, related_name="similarity_runs")
    kind = models.CharField(max_length=16)  # search | duplicates
    params = models.JSONField(default=dict)  # the query, k, metric, threshold, input tag: as validated
    status = models.CharField(max_length=16, default="queued")  # queued running succeeded failed
    progress = models.FloatField(default=0.0)  # 0..1
    error = models.TextField(blank=True, default="")
    result_key = models.CharField(max_length=1200, blank=True, default="")
    summary = models.JSONField(default=dict, blank=True)  # counts, the threshold used
    creator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"


class PredictionUpload(models.Model):
    """One upload of a prediction task: its body in storage until a worker (or the request) has stored it."""

    id = PublicIdField()
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="prediction_uploads")
    task_name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8)  # json | jsonl
    body_key = models.CharField(max_length=1200)
    size = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=16, default="queued")  # queued processing succeeded failed
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True, default="")
    result = models.JSONField(default=dict, blank=True)
    creator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.task_name} ({self.status})"
