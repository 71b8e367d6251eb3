"""REST API: embeddings."""

urlpatterns: list = []
