"""REST API: datasets."""

urlpatterns: list = []
