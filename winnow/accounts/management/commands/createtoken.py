from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from winnow.accounts.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for a user and print it as the last line (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--create-user", action="store_true", help="create the user if missing")
        parser.add_argument("--name", default="cli", help="a name to recognise the token by")

    def handle(self, username, create_user, name, **options):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            if not create_user:
                raise CommandError(f"no user named {username!r} (pass --create-user to create one)")
            user = User.objects.create_user(username=username)
            self.stderr.write(f"created user {username!r} (no password set; use changepassword)")
        if not name.strip():
            raise CommandError("--name must not be empty")
        token, key = ApiToken.issue(user, name.strip()[:100])
        self.stderr.write(f"token {token.name!r} for {username!r}; store it now, it is not shown again")
        self.stdout.write(key)
