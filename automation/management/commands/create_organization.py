"""`manage.py create_organization SLUG NAME --admin USERNAME`: the first organization of a user.

Organizations are otherwise created through the API by an existing member; this command is the
way in for a fresh installation.
"""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.choices import Role
from accounts.models import Membership, Organization


class Command(BaseCommand):
    help = "Create an organization and make USERNAME its ADMIN."

    def add_arguments(self, parser):
        parser.add_argument("slug", help='URL-safe identifier, unique (e.g. "acme").')
        parser.add_argument("name", help='Display name (e.g. "Acme Inc.").')
        parser.add_argument(
            "--admin", required=True, metavar="USERNAME", help="The user made ADMIN of it."
        )

    def handle(self, *args, slug, name, admin, **options):
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{user_model.USERNAME_FIELD: admin})
        except user_model.DoesNotExist:
            raise CommandError(f'No user "{admin}".') from None
        organization = Organization(slug=slug, name=name)
        try:
            organization.full_clean()
        except ValidationError as exc:
            details = "; ".join(
                f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()
            )
            raise CommandError(f"Invalid organization: {details}") from None
        with transaction.atomic():
            organization.save()
            Membership.objects.create(user=user, organization=organization, role=Role.ADMIN)
        self.stdout.write(
            f'Created organization "{organization.name}" ({organization.slug}, id '
            f"{organization.pk}) with {admin} as ADMIN."
        )
