"""Template rendering of action parameters (automation/actions/templates.py)."""

import datetime

import pytest

from automation.actions.templates import (
    ROOT_VARIABLES,
    RULE_KEYS,
    SINGLE_VALUES,
    RenderBudget,
    TemplateError,
    TemplateScope,
    placeholder_errors,
    render,
    render_text,
)
from automation.core.context import RunContext


@pytest.fixture
def variables():
    ctx = RunContext(
        organization_id=1,
        rule_id=7,
        rule_name="Restock",
        trigger="EVENT",
        event="UPDATED",
        model="catalog.product",
        object_id="42",
        object={"id": 42, "name": "Lamp", "price": "9.99", "stock": 0, "category": None},
        changes={"status": {"old": "DRAFT", "new": "ACTIVE"}},
        now=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        results={0: {"model": "catalog.category", "id": 5, "tags": ["a", "b"]}},
    )
    return ctx.template_variables()


def test_single_placeholder_keeps_the_json_type(variables):
    assert render("{{ object.id }}", variables) == 42
    assert render("{{object.category}}", variables) is None
    assert render("{{ changes.status }}", variables) == {"old": "DRAFT", "new": "ACTIVE"}
    assert render("{{ results.0.tags }}", variables) == ["a", "b"]


def test_placeholders_inside_text_are_formatted_as_text(variables):
    assert render("{{ object.name }} costs {{ object.price }}", variables) == "Lamp costs 9.99"
    assert render("stock={{ object.stock }}", variables) == "stock=0"
    assert render("cat={{ object.category }}", variables) == "cat=null"
    assert render("was {{ changes.status }}", variables) == 'was {"old":"DRAFT","new":"ACTIVE"}'
    assert render("{{ rule.name }} #{{ rule.id }} at {{ now }}", variables) == (
        "Restock #7 at 2026-01-02T03:04:05Z"
    )


def test_nested_structures_are_rendered_recursively_and_other_values_kept(variables):
    value = {
        "a": ["{{ object.id }}", {"b": "id {{ object.id }}"}],
        "n": 3,
        "t": True,
        "none": None,
        "plain": "no placeholder",
    }
    assert render(value, variables) == {
        "a": [42, {"b": "id 42"}],
        "n": 3,
        "t": True,
        "none": None,
        "plain": "no placeholder",
    }


def test_results_of_an_earlier_action_can_be_chained(variables):
    assert render({"id": "{{ results.0.id }}"}, variables) == {"id": 5}
    assert render("{{ results.0.tags.1 }}", variables) == "b"


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("{{ object.nme }}", "'object.nme'"),
        ("Hello {{ object.nme }}", "'object.nme'"),
        ("{{ results.3.id }}", "'results.3.id'"),
        ("{{ object.category.name }}", "'object.category' is null"),
        ("{{ results.0.tags.9 }}", "'results.0.tags.9'"),
        ("{{ user.password }}", "'user.password'"),
    ],
)
def test_a_placeholder_that_does_not_resolve_raises_naming_it(variables, template, named):
    with pytest.raises(TemplateError) as raised:
        render(template, variables)
    assert named in str(raised.value)


def test_an_unclosed_placeholder_is_an_error_not_literal_text(variables):
    with pytest.raises(TemplateError, match="Unclosed"):
        render("Hello {{ object.name", variables)


def test_render_text_always_returns_text(variables):
    assert render_text("{{ object.id }}", variables) == "42"
    assert render_text("{{ object.name }}", variables) == "Lamp"


def test_save_time_check_finds_malformed_and_unknown_placeholders():
    assert placeholder_errors({"a": "{{ object.name }}", "b": ["{{ results.0.id }}"]}) == []
    assert placeholder_errors("plain } text {") == []
    errors = placeholder_errors(["{{ object..name }}", "{{ secrets.key }}", "{{ now", "{{ }}"])
    assert len(errors) == 4
    assert "Malformed placeholder '{{ object..name }}'" in errors[0]
    assert "Unknown template variable 'secrets.key'" in errors[1]
    assert "Unclosed" in errors[2]
    assert "Malformed" in errors[3]


def test_a_budget_counts_what_placeholders_produce():
    variables = {"object": {"name": "Lamp", "tags": ["a", "b"]}}
    budget = RenderBudget(100, "too big")
    assert render(
        {"t": "{{ object.name }} and {{ object.name }}", "v": "{{ object.tags }}"},
        variables,
        budget,
    ) == {"t": "Lamp and Lamp", "v": ["a", "b"]}
    assert budget.used == 4 + 4 + len('["a","b"]')  # literal text is not counted


def test_a_runaway_template_stops_at_its_budget_before_its_text_exists():
    """Placeholders repeating a large value: refused at the substitution that crosses the limit,
    not after building the whole text (here 10,000 x 100 KB)."""
    variables = {"results": {"0": {"body": "x" * 100_000}}}
    budget = RenderBudget(250_000, "the template renders too much")
    with pytest.raises(TemplateError, match="the template renders too much"):
        render_text("{{ results.0.body }}" * 10_000, variables, budget)
    assert budget.used == 300_000  # three substitutions counted, the fourth never made


# --- Save-time check against what the action's runs will have ----------------------------------

PRODUCT_SCOPE = TemplateScope(
    fields=frozenset({"id", "name", "status", "price", "stock", "category"}),
    label="catalog.product",
    action_order=2,
)


@pytest.mark.parametrize(
    "template",
    [
        "{{ object.name }} at {{ now }} by {{ rule.name }} #{{ rule.id }} ({{ event }}, {{ trigger }})",
        "{{ object }}",
        "{{ changes }}",
        "{{ changes.status }}",
        "{{ changes.status.old }} -> {{ changes.status.new }}",
        "{{ results.0.id }} {{ results.1 }}",
        "{{ results.1.record.tags.0 }}",  # what a result holds is only known at run time
        "{{ results }}",
    ],
)
def test_placeholders_a_run_can_resolve_pass_the_save_time_check(template):
    assert placeholder_errors(template, PRODUCT_SCOPE) == []


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{{ object.nam }}",
            "Template variable 'object.nam' does not resolve: catalog.product has no readable "
            "field 'nam'. Did you mean 'name'?",
        ),
        ("{{ changes.stok.new }}", "has no readable field 'stok'. Did you mean 'stock'?"),
        ("{{ object.zzz }}", "has no readable field 'zzz'."),
        ("{{ changes.status.before }}", "a change has 'old' and 'new'."),
        ("{{ object.category.name }}", "'category' is a single value."),
        ("{{ rule.owner }}", "'rule' has 'id' and 'name'."),
        ("{{ now.year }}", "'now' is a single value"),
        ("{{ results.2.id }}", "(here results.0 to results.1)"),
        ("{{ results.first }}", "(here results.0 to results.1)"),
    ],
)
def test_placeholders_no_run_can_resolve_are_refused_at_save_time(template, message):
    (error,) = placeholder_errors(template, PRODUCT_SCOPE)
    assert message in error


def test_the_first_action_has_no_results_and_a_rule_without_a_model_no_record():
    first = TemplateScope(fields=PRODUCT_SCOPE.fields, label="catalog.product", action_order=0)
    assert "this is the rule's first action" in placeholder_errors("{{ results.0.id }}", first)[0]
    no_model = TemplateScope(has_record=False, action_order=1)
    assert "This rule has no model" in placeholder_errors("{{ object.name }}", no_model)[0]
    assert "This rule has no model" in placeholder_errors("{{ changes.name.new }}", no_model)[0]
    assert placeholder_errors("{{ changes }} {{ results.0.id }} {{ now }}", no_model) == []


def test_the_save_time_roots_are_the_variables_a_run_provides(variables):
    assert tuple(variables) == ROOT_VARIABLES
    assert set(variables["rule"]) == set(RULE_KEYS)
    assert all(isinstance(variables[root], str) for root in SINGLE_VALUES)
    assert placeholder_errors("{{ now_local }}") == []


def test_now_local_is_the_same_instant_in_the_rules_time_zone_across_dst():
    def local(moment, zone):
        ctx = RunContext(organization_id=1, rule_id=7, rule_name="r", trigger="MANUAL", now=moment)
        if zone is not None:
            ctx.timezone = zone
        return render("{{ now }} is {{ now_local }}", ctx.template_variables())

    # New York: EST (-05:00) until 2026-03-08 07:00 UTC, EDT (-04:00) after.
    before = datetime.datetime(2026, 3, 8, 6, 59, 30, tzinfo=datetime.UTC)
    after = datetime.datetime(2026, 3, 8, 7, 0, 30, tzinfo=datetime.UTC)
    assert local(before, "America/New_York") == (
        "2026-03-08T06:59:30Z is 2026-03-08T01:59:30-05:00"
    )
    assert local(after, "America/New_York") == "2026-03-08T07:00:30Z is 2026-03-08T03:00:30-04:00"
    # A rule's zone defaults to UTC, and one that is not a zone reads as UTC.
    assert local(after, None) == "2026-03-08T07:00:30Z is 2026-03-08T07:00:30+00:00"
    assert local(after, "Not/AZone") == "2026-03-08T07:00:30Z is 2026-03-08T07:00:30+00:00"
