from django.apps import AppConfig


class LightlyAdapterConfig(AppConfig):
    """`/v1/`, Lightly's client protocol: an adapter above `curation` and `sampling` that owns no logic."""

    name = "winnow.lightly"
    label = "lightly_adapter"
    verbose_name = "Lightly client protocol (/v1/)"
