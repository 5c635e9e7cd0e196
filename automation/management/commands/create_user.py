"""`manage.py create_user USERNAME [--email EMAIL] [--password-stdin]`: a user who is not staff.

Such a user signs in at /accounts/login/ (GraphiQL) or gets tokens with obtainToken, and joins
organizations by accepting invitations. `createsuperuser` makes operators; this makes everyone
else, without opening the admin to them.
"""

import getpass
import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Create a user who is not staff. The password is asked twice at the terminal, or read "
        "from the first line of standard input with --password-stdin."
    )
    stealth_options = ("stdin",)  # tests pass their own standard input, as for createsuperuser

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from standard input (for scripts; keeps it out of argv).",
        )

    def handle(self, *args, username, email, password_stdin, **options):
        stdin = options.get("stdin", sys.stdin)
        user_model = get_user_model()
        user = user_model(**{user_model.USERNAME_FIELD: username, "email": email})
        try:
            user.full_clean(exclude=["password"])
        except ValidationError as exc:
            raise CommandError(_describe(exc)) from None
        password = _read_password(stdin) if password_stdin else _ask_password(stdin)
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise CommandError("Password refused: " + " ".join(exc.messages)) from None
        user.set_password(password)
        user.save()
        self.stdout.write(f'Created user "{username}" (id {user.pk}), not staff.')


def _read_password(stdin) -> str:
    password = stdin.readline().rstrip("\r\n")
    if not password:
        raise CommandError("--password-stdin: standard input holds no password.")
    return password


def _ask_password(stdin) -> str:
    if not (hasattr(stdin, "isatty") and stdin.isatty()):
        raise CommandError("No terminal to ask the password at: use --password-stdin.")
    password = getpass.getpass("Password: ")
    if password != getpass.getpass("Password (again): "):
        raise CommandError("The two passwords differ.")
    return password


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
