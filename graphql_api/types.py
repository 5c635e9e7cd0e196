"""GraphQL types, close to the models."""

import strawberry
import strawberry_django
from django.contrib.auth import get_user_model

from accounts import models as accounts_models
from accounts.choices import Role as RoleChoice

Role = strawberry.enum(RoleChoice, name="Role")


@strawberry_django.type(get_user_model(), name="User")
class UserType:
    id: strawberry.ID
    username: str


@strawberry_django.type(accounts_models.Organization, name="Organization")
class OrganizationType:
    id: strawberry.ID
    name: str
    slug: str

    @strawberry_django.field(only=["id"])
    def viewer_role(self, info: strawberry.Info) -> Role | None:
        from graphql_api.permissions import role_in

        role = role_in(info, self.pk)
        return Role(role) if role else None
