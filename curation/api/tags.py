"""REST API: tags."""

urlpatterns: list = []
