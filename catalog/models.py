"""The small example domain that rules watch and act on."""

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from accounts.models import Auditable, OrganizationScoped, Timestamped
from catalog.choices import ProductStatus


class Category(Timestamped, Auditable, OrganizationScoped):
    name = models.CharField(max_length=200)

    class Meta:
        ordering = ["name", "id"]
        verbose_name_plural = "categories"

    def __str__(self):
        return self.name


class Product(Timestamped, Auditable, OrganizationScoped):
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="products"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    status = models.CharField(
        max_length=20, choices=ProductStatus.choices, default=ProductStatus.DRAFT
    )
    price = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
    )
    stock = models.IntegerField(default=0)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.category_id and self.category.organization_id != self.organization_id:
            raise ValidationError({"category": "The category belongs to another organization."})
