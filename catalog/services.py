"""Writes of the example domain, as the API makes them.

Each function is atomic and writes through `save()` / `delete()`, so the model signals fire and
rules watching the catalog trigger exactly as for any other write (their PENDING runs are created
in the same transaction). Errors are a Django `ValidationError` keyed by input field name.
"""

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.current import acting_as, get_current_user
from accounts.validation import full_clean_changes
from automation.api import remember_stored_row
from catalog.models import Category, Product

PRODUCT_FIELDS = ("name", "description", "status", "price", "stock")


def _acting(user):
    return acting_as(user if user is not None else get_current_user())


def create_category(organization, name: str, *, user=None) -> Category:
    with _acting(user), transaction.atomic():
        category = Category(organization=organization, name=name)
        category.full_clean()
        category.save()
        return category


def create_product(organization, data: dict, *, user=None) -> Product:
    """`data`: name, and optionally description, status, price, stock, category (an id)."""
    with _acting(user), transaction.atomic():
        product = Product(organization=organization)
        _apply(product, data)
        product.full_clean()
        product.save()
        return product


def update_product(product: Product, data: dict, *, user=None, locked: bool = False) -> Product:
    """Change the given fields; `category: None` clears the category.

    `locked`: the caller read `product` with select_for_update() in the transaction it is in
    (the API does, so that its permission check's read is also the lock), so it is not read
    again. No savepoint when called inside a transaction: an error fails the caller's too.
    """
    with _acting(user), transaction.atomic(savepoint=False):
        if not locked:
            product = Product.objects.select_for_update().get(pk=product.pk)
        remember_stored_row(product)  # the model signals need not read it again
        _apply(product, data)
        full_clean_changes(product, data)
        product.save()
        return product


def delete_product(product: Product, *, user=None) -> int:
    with _acting(user), transaction.atomic():
        product_id = product.pk
        product.delete()
        return product_id


def _apply(product: Product, data: dict) -> None:
    for name in PRODUCT_FIELDS:
        if name in data:
            setattr(product, name, data[name])
    if "category" in data:
        product.category = _category(product.organization_id, data["category"])


def _category(organization_id, category_id) -> Category | None:
    """The category of the product's own organization; another organization's id is unknown."""
    if category_id in (None, ""):
        return None
    text = str(category_id)
    category = (
        Category.objects.filter(organization_id=organization_id, pk=int(text)).first()
        if text.isdigit()
        else None
    )
    if category is None:
        raise ValidationError({"category": ["No such category."]})
    return category
