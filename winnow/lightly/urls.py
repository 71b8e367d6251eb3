"""Routes of `/v1/`, exactly as Lightly's client 1.5.26 spells them (no trailing slashes)."""

from django.urls import path, re_path

from winnow.lightly import base, datasets, embeddings, predictions, samples, selection, tags

DS = "datasets/<str:dataset_id>"
TAG = f"{DS}/tags/<str:tag_id>"
EMB = f"{DS}/embeddings/<str:embedding_id>"
SAMPLE = f"{DS}/samples/<str:sample_id>"

urlpatterns = [
    path("versions/pip/latest", base.Versions.as_view(), name="lightly-version-latest"),
    path("versions/pip/minimum", base.Versions.as_view(), name="lightly-version-minimum"),
    path("datasets", datasets.DatasetListView.as_view(), name="lightly-datasets"),
    path("datasets/query/name/<str:name>", datasets.DatasetQueryByNameView.as_view(), name="lightly-dataset-by-name"),
    path(DS, datasets.DatasetDetailView.as_view(), name="lightly-dataset"),
    path(f"{DS}/mappings", samples.MappingsView.as_view(), name="lightly-mappings"),
    path(f"{DS}/samples", samples.SampleListView.as_view(), name="lightly-samples"),
    path(f"{DS}/samples/partial", samples.SamplePartialView.as_view(), name="lightly-samples-partial"),
    path(SAMPLE, samples.SampleDetailView.as_view(), name="lightly-sample"),
    path(f"{SAMPLE}/readurl", samples.SampleReadUrlView.as_view(), name="lightly-sample-read-url"),
    path(f"{SAMPLE}/readurlRedirect", samples.SampleReadRedirectView.as_view(), name="lightly-sample-read-redirect"),
    path(f"{DS}/tags", tags.TagListView.as_view(), name="lightly-tags"),
    path(f"{DS}/tags/initial", tags.InitialTagView.as_view(), name="lightly-tag-initial"),
    path(f"{DS}/tags/arithmetics/bitmask", tags.TagArithmeticsBitmaskView.as_view(), name="lightly-tag-arithmetics"),
    path(TAG, tags.TagDetailView.as_view(), name="lightly-tag"),
    path(f"{TAG}/export/basic/filenames", tags.ExportFilenamesView.as_view(), name="lightly-export-filenames"),
    path(f"{TAG}/export/LabelStudio/tasks", tags.ExportLabelStudioView.as_view(), name="lightly-export-label-studio"),
    path(f"{DS}/embeddings", embeddings.EmbeddingListView.as_view(), name="lightly-embeddings"),
    path(f"{DS}/embeddings/writeCSVUrl", embeddings.WriteCsvUrlView.as_view(), name="lightly-embedding-write-url"),
    path(EMB, embeddings.EmbeddingDetailView.as_view(), name="lightly-embedding"),
    path(f"{EMB}/readCSVUrl", embeddings.ReadCsvUrlView.as_view(), name="lightly-embedding-read-url"),
    path(f"{EMB}/csv", embeddings.EmbeddingCsvView.as_view(), name="lightly-embedding-csv"),
    path(f"{EMB}/trigger2dEmbeddingsJob", embeddings.Trigger2dView.as_view(), name="lightly-embedding-2d"),
    path(f"{DS}/predictions/tasks", predictions.PredictionTaskSchemaView.as_view(), name="lightly-prediction-tasks"),
    path(
        f"{DS}/predictions/samples/<str:sample_id>",
        predictions.SamplePredictionsView.as_view(),
        name="lightly-sample-predictions",
    ),
    path(f"{TAG}/scores", predictions.TagScoresView.as_view(), name="lightly-tag-scores"),
    path(f"{EMB}/sampling", selection.SamplingView.as_view(), name="lightly-sampling"),
    path("jobs/<str:job_id>", selection.JobView.as_view(), name="lightly-job"),
    re_path(r"", base.NotImplementedRoute.as_view(), name="lightly-not-implemented"),
]
