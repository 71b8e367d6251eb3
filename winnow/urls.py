from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from winnow.api import health

api_v1 = [
    path("health", health, name="health"),
    path("", include("winnow.accounts.api")),
    path("", include("curation.api.datasets")),
    path("", include("curation.api.samples")),
    path("", include("curation.api.files")),
    path("", include("curation.api.metadata")),
    path("", include("curation.api.analytics")),
    path("", include("curation.api.tags")),
    path("", include("curation.api.saved_views")),
    path("", include("curation.api.embeddings")),
    path("", include("curation.api.similarity")),
    path("", include("curation.api.predictions")),
    path("", include("sampling.api")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("v1/", include("winnow.lightly.urls")),  # Lightly's client protocol (LIGHTLY_SERVER_LOCATION)
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("curation.urls")),
]

# Django's own 400s (body too large, too many parameters) in the API's JSON shape under /api/ and /v1/.
handler400 = "winnow.guard.bad_request"
