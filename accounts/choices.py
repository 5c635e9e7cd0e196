from django.db import models


class Role(models.TextChoices):
    """Stored as the GraphQL enum's name. ADMIN > EDITOR > VIEWER."""

    ADMIN = "ADMIN", "Admin"
    EDITOR = "EDITOR", "Editor"
    VIEWER = "VIEWER", "Viewer"


ROLE_RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.ADMIN: 3}
