"""Catalog queries and mutations: Decimal prices, ProductStatus, category ids, atomic writes."""

from decimal import Decimal

import pytest

from automation.core.choices import TriggerEvent
from automation.core.models import AutomationLog
from catalog.models import Product
from tests.factories import AutomationRuleFactory, CategoryFactory

pytestmark = pytest.mark.django_db

PRODUCT = "id name description status price stock category { id name } organization { id }"
CREATE = f"mutation($i: ProductInput!) {{ createProduct(input: $i) {{ {PRODUCT} }} }}"
UPDATE = f"mutation($id: ID!, $i: ProductUpdateInput!) {{ updateProduct(id: $id, input: $i) {{ {PRODUCT} }} }}"


def test_product_crud(gql, editor, organization):
    org = str(organization.pk)
    category = gql(
        'mutation($org: ID!) { createCategory(organization: $org, name: "Tools") { id name } }',
        {"org": org},
        token=editor,
    ).ok()["createCategory"]
    product = gql(
        CREATE,
        {
            "i": {
                "organization": org,
                "name": "Hammer",
                "category": category["id"],
                "price": 12.3,
                "status": "ACTIVE",
            }
        },
        token=editor,
    ).ok()["createProduct"]
    assert Decimal(product["price"]) == Decimal("12.3")
    assert product["status"] == "ACTIVE"
    assert product["category"] == category
    assert Product.objects.get(pk=product["id"]).price == Decimal("12.3")

    updated = gql(
        UPDATE,
        {"id": product["id"], "i": {"price": "0.10", "stock": 3, "category": None}},
        token=editor,
    ).ok()["updateProduct"]
    assert Decimal(updated["price"]) == Decimal("0.10")
    assert updated["stock"] == 3
    assert updated["category"] is None
    assert updated["name"] == "Hammer"

    listed = gql(
        "query($org: ID!) { products(organization: $org) { id } categories(organization: $org) { name } }",
        {"org": org},
        token=editor,
    ).ok()
    assert listed == {"products": [{"id": product["id"]}], "categories": [{"name": "Tools"}]}
    assert gql(
        "mutation($id: ID!) { deleteProduct(id: $id) }", {"id": product["id"]}, token=editor
    ).ok() == {"deleteProduct": product["id"]}
    assert not Product.objects.exists()


def test_product_validation_writes_nothing(gql, editor, organization, other_organization):
    org = str(organization.pk)
    foreign_category = CategoryFactory(organization=other_organization)
    negative = gql(
        CREATE, {"i": {"organization": org, "name": "Bad", "price": "-1"}}, token=editor
    ).error()
    assert negative["extensions"]["code"] == "VALIDATION_ERROR"
    assert "price" in negative["extensions"]["fields"]
    foreign = gql(
        CREATE,
        {"i": {"organization": org, "name": "Bad", "category": str(foreign_category.pk)}},
        token=editor,
    ).error()
    assert foreign["extensions"]["fields"] == {"category": ["No such category."]}
    not_a_number = gql(
        CREATE, {"i": {"organization": org, "name": "Bad", "price": "abc"}}, token=editor
    )
    assert not_a_number.codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert not Product.objects.exists()


def test_catalog_mutations_fire_rules(
    gql, editor, organization, django_capture_on_commit_callbacks
):
    AutomationRuleFactory(
        organization=organization, trigger_event=TriggerEvent.CREATED, name="On create"
    )
    with django_capture_on_commit_callbacks(execute=False):
        product = gql(
            CREATE, {"i": {"organization": str(organization.pk), "name": "Saw"}}, token=editor
        ).ok()
    log = AutomationLog.objects.get()
    assert log.object_id == product["createProduct"]["id"]
    assert log.event == TriggerEvent.CREATED


def test_update_product_reads_the_row_once_and_the_rule_gets_the_changes(
    gql, editor, organization, django_capture_on_commit_callbacks
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    product = Product.objects.create(organization=organization, name="Saw", price=Decimal("1"))
    AutomationRuleFactory(organization=organization, watched_fields=["stock"])
    with (
        CaptureQueriesContext(connection) as captured,
        django_capture_on_commit_callbacks(execute=False),
    ):
        gql(
            "mutation($id: ID!) { updateProduct(id: $id, input: {stock: 7}) { id } }",
            {"id": str(product.pk)},
            token=editor,
        ).ok()
    reads = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT")]
    # One read, which checks access and locks the row (FOR UPDATE where the database has it); no
    # second read for the rule's old values, and no existence checks of the organization or the
    # users the update leaves alone.
    product_reads = [sql for sql in reads if 'FROM "catalog_product"' in sql]
    assert len(product_reads) == 1, reads
    if connection.features.has_select_for_update:
        assert "FOR UPDATE" in product_reads[0]
    for table in ("accounts_organization", "auth_user"):
        assert not any(f'FROM "{table}"' in sql for sql in reads), (table, reads)
    log = AutomationLog.objects.get()
    assert log.changes["stock"]["new"] == 7 and log.changes["stock"]["old"] != 7


def test_update_product_still_refuses_another_organizations_category(
    gql, editor, organization, other_organization
):
    product = Product.objects.create(organization=organization, name="Saw", price=Decimal("1"))
    foreign = CategoryFactory(organization=other_organization)
    answer = gql(UPDATE, {"id": str(product.pk), "i": {"category": str(foreign.pk)}}, token=editor)
    assert answer.error()["extensions"]["fields"] == {"category": ["No such category."]}
