"""Admin for the example domain."""

from django.contrib import admin

from catalog.models import Category, Product


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "updated_at"]
    list_filter = ["organization"]
    search_fields = ["name"]
    readonly_fields = ["created_at", "updated_at", "created_by", "updated_by"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "category", "status", "price", "stock", "updated_at"]
    list_filter = ["status", "organization"]
    search_fields = ["name", "description", "category__name"]
    list_select_related = ["organization", "category"]
    readonly_fields = ["created_at", "updated_at", "created_by", "updated_by"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "category":
            kwargs["queryset"] = Category.objects.select_related("organization")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
