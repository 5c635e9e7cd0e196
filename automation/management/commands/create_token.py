"""`manage.py create_token USERNAME [--name NAME]`: issue an API token and print it once."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiToken


class Command(BaseCommand):
    help = (
        "Issue a new API token for USERNAME and print it. Only its hash is stored: "
        "the printed value cannot be shown again."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="api", help='A label for the token ("api").')

    def handle(self, *args, username, name, **options):
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{user_model.USERNAME_FIELD: username})
        except user_model.DoesNotExist:
            raise CommandError(f'No user "{username}".') from None
        if not user.is_active:
            raise CommandError(f'User "{username}" is inactive: its tokens would not work.')
        if not name.strip() or len(name) > ApiToken._meta.get_field("name").max_length:
            raise CommandError("--name must be 1 to 100 characters.")
        _, raw = ApiToken.issue(user=user, name=name.strip())
        # Only the token on stdout, so scripts can capture it: TOKEN=$(manage.py create_token ...)
        self.stdout.write(raw)
