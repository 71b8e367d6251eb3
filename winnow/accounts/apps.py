from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "winnow.accounts"
    label = "accounts"
    verbose_name = "Accounts and API tokens"

    def ready(self):
        # Load the Celery app in every Django process (runserver, gunicorn, manage.py): without it,
        # shared tasks sent from the web process use Celery's unconfigured default app (amqp://localhost).
        import winnow.celery  # noqa: F401
