"""Admin for organizations (with members), invitations, API tokens and notifications, and its
login form.

Tokens are issued by `manage.py create_token` or the API, never here: the raw value exists only
at issue time, and the admin shows neither it nor an editable hash.

Staff add members directly (the organization's member inline): an operator's act. Invitations
come from the API's addMember; here they are listed and can be revoked, not made.

The admin login counts every attempt against the same limits as obtainToken (accounts/forms.py)
before the password is checked: otherwise it was a door for unlimited password guessing.
"""

from django.contrib import admin, messages
from django.utils import timezone

from accounts.forms import RateLimitedAdminLoginForm
from accounts.models import ApiToken, Invitation, Membership, Notification, Organization

admin.site.login_form = RateLimitedAdminLoginForm


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at", "updated_at"]
    inlines = [MembershipInline]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = [
        "username",
        "organization",
        "role",
        "invited_by",
        "created_at",
        "expires_at",
        "accepted_at",
        "declined_at",
        "revoked_at",
    ]
    list_filter = [
        ("accepted_at", admin.EmptyFieldListFilter),
        ("revoked_at", admin.EmptyFieldListFilter),
        "organization",
    ]
    search_fields = ["username", "organization__name", "organization__slug"]
    list_select_related = ["organization", "invited_by"]
    readonly_fields = [field.name for field in Invitation._meta.fields]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke the selected open invitations")
    def revoke(self, request, queryset):
        count = queryset.open().update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} invitation(s).", messages.SUCCESS)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "user__username"]
    list_select_related = ["user"]
    fields = ["user", "name", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["user", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["title", "recipient", "organization", "created_at", "read_at"]
    list_filter = [("read_at", admin.EmptyFieldListFilter), "organization"]
    search_fields = ["title", "body", "recipient__username"]
    list_select_related = ["recipient", "organization"]
    raw_id_fields = ["recipient", "log"]
    readonly_fields = ["created_at", "updated_at"]
