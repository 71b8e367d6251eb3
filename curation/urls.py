"""Browser pages of the web app."""

urlpatterns: list = []
