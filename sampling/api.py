"""REST API: sampling runs and scores."""

urlpatterns: list = []
