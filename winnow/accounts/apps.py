from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "winnow.accounts"
    label = "accounts"
    verbose_name = "Accounts and API tokens"
