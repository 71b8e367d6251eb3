"""Browser pages of the web app."""

from django.contrib.auth import views as auth_views
from django.urls import path

from curation import views

DS = "datasets/<str:dataset_id>"

urlpatterns = [
    path("login", auth_views.LoginView.as_view(redirect_authenticated_user=False), name="login"),
    path("logout", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.datasets, name="datasets"),
    path("preferences", views.preferences, name="preferences"),
    path(DS, views.dataset_page, {"page": "overview"}, name="dataset-overview"),
    path(f"{DS}/explore", views.dataset_page, {"page": "explore"}, name="dataset-explore"),
    path(f"{DS}/map", views.dataset_page, {"page": "map"}, name="dataset-map"),
    path(f"{DS}/configurator", views.dataset_page, {"page": "configurator"}, name="dataset-configurator"),
    path(f"{DS}/analyze", views.dataset_page, {"page": "analyze"}, name="dataset-analyze"),
    path(f"{DS}/sampling", views.dataset_page, {"page": "sampling"}, name="dataset-sampling"),
    path(f"{DS}/similar", views.dataset_page, {"page": "similar"}, name="dataset-similar"),
    path(f"{DS}/duplicates", views.dataset_page, {"page": "duplicates"}, name="dataset-duplicates"),
    path(f"{DS}/tags", views.dataset_page, {"page": "tags"}, name="dataset-tags"),
]
