from django.apps import AppConfig


class SamplingConfig(AppConfig):
    name = "sampling"
    verbose_name = "Sampling runs and importance scores"

    def ready(self):
        from curation.api.tags import TAG_SOURCES
        from sampling.tagging import tag_from_request

        # Curation's tag API makes tags from a run's top K through this app: curation never imports sampling.
        TAG_SOURCES["sampling_run"] = tag_from_request
