"""REST API: samples."""

urlpatterns: list = []
