"""REST API: metadata."""

urlpatterns: list = []
