"""Expressions in placeholders (automation/actions/expressions.py, filters.py, templates.py):
arithmetic, every filter, their failures at run time, and what is refused at save."""

import datetime
import zoneinfo

import pytest

from automation.actions import template_types as kinds
from automation.actions.expressions import MAX_EXPRESSION_LENGTH, MAX_NESTING
from automation.actions.templates import (
    RenderBudget,
    TemplateError,
    TemplateScope,
    placeholder_errors,
    placeholder_kind,
    render,
)
from automation.core.context import RunContext

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


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
        object={
            "id": 42,
            "name": "Lamp",
            "note": None,
            "price": "12.50",
            "stock": 3,
            "created_at": "2026-03-28T09:30:00+00:00",
            "due": "2026-01-31",
        },
        changes={"stock": {"old": 10, "new": 3}},
        now=datetime.datetime(2026, 3, 28, 9, 0, tzinfo=datetime.UTC),
        timezone="Europe/Paris",
        results={0: {"id": 5, "tags": ["a", "b", 3, None], "ratio": 0.5}},
    )
    return ctx.template_variables()


def value(template, variables, zone=PARIS):
    return render(template, variables, zone=zone)


def failure(template, variables) -> str:
    with pytest.raises(TemplateError) as raised:
        render(template, variables, zone=PARIS)
    return str(raised.value)


# --- Arithmetic --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ object.stock + 5 }}", 8),
        ("{{ object.stock - 5 }}", -2),
        ("{{ object.stock * 2.5 }}", 7.5),
        ("{{ object.stock / 2 }}", 1.5),
        ("{{ object.price * 2 }}", 25),  # decimal text: exact, whole results are integers
        ("{{ object.price + 0.01 }}", 12.51),
        ("{{ 0.1 + 0.2 }}", 0.3),  # decimal arithmetic, not binary floats
        ("{{ 1 + 2 * 3 }}", 7),
        ("{{ (1 + 2) * 3 }}", 9),
        ("{{ -object.stock }}", -3),
        ("{{ 10 - -2 }}", 12),
        ("{{ changes.stock.old - changes.stock.new }}", 7),
        ("{{ results.0.ratio * 4 }}", 2),
    ],
)
def test_arithmetic_on_numbers_keeps_a_number(variables, template, expected):
    result = value(template, variables)
    assert result == expected and type(result) is type(expected)


def test_arithmetic_inside_text_is_written_as_text(variables):
    assert value("{{ object.stock + 1 }} left of {{ object.stock * 4 }}", variables) == (
        "4 left of 12"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ object.stock / 0 }}", "In '{{ object.stock / 0 }}': Division by zero: '0' is 0."),
        (
            "{{ object.stock / (object.stock - 3) }}",
            "Division by zero: '(object.stock - 3)' is 0.",
        ),
        ("{{ object.name + 1 }}", "'+' applies to numbers; 'object.name' is text (\"Lamp\")."),
        ("{{ object.note * 2 }}", "'*' applies to numbers; 'object.note' is null (null)."),
        ("{{ -object.name }}", "'-' applies to numbers; 'object.name' is text (\"Lamp\")."),
        ("{{ results.0.tags + 1 }}", "'+' applies to numbers; 'results.0.tags' is a list"),
        ("{{ true + 1 }}", "'+' applies to numbers; 'true' is true/false (true)."),
    ],
)
def test_arithmetic_on_what_is_not_a_number_fails_clearly(variables, template, message):
    assert message in failure(template, variables)


# --- Every filter -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ object.name | upper }}", "LAMP"),
        ("{{ object.name | lower }}", "lamp"),
        ("{{ object.price | round(1) }}", 12.5),
        ("{{ object.price | round }}", 13),  # half away from zero
        ("{{ 2.5 | round }}", 3),
        ("{{ -2.5 | round }}", -3),  # a filter binds tighter than '-': -(2.5 | round)
        ("{{ 1.005 | round(2) }}", 1.01),
        ("{{ object.stock - 10 | abs }}", -7),  # 3 - abs(10)
        ("{{ (object.stock - 10) | abs }}", 7),
        ("{{ object.name | length }}", 4),
        ("{{ results.0.tags | length }}", 4),
        ("{{ results.0 | length }}", 3),
        ("{{ results.0.tags | join }}", "ab3null"),
        ("{{ results.0.tags | join(', ') }}", "a, b, 3, null"),
        ("{{ object.note | default('none') }}", "none"),
        ("{{ object.name | default('none') }}", "Lamp"),
        ("{{ object.missing | default(0) }}", 0),  # a path that does not resolve
        ("{{ results.4.id | default(null) }}", None),
        ("{{ (results.9.id + 1) | default(-1) }}", -1),
        ('{{ object.note | default("it\'s \\"none\\"") }}', 'it\'s "none"'),
        ("{{ object.created_at | date }}", "2026-03-28"),
        # Date-times are shown in the rule's time zone (Paris: UTC+1 until 29 March).
        (
            "{{ object.created_at | date('%a %A %d %b %B %Y %y %j %H:%M:%S %I %p %z %Z %%') }}",
            "Sat Saturday 28 Mar March 2026 26 087 10:30:00 10 AM +0100 CET %",
        ),
        ("{{ now | date('%H:%M') }}", "10:00"),
        ("{{ object.due | date('%d/%m/%Y') }}", "31/01/2026"),
        ("{{ '2026-03-28T23:30:00' | date('%d %H') }}", "29 00"),  # no offset: UTC
        ("{{ now | add_duration('P7D') }}", "2026-04-04T08:00:00Z"),
        ("{{ now | add_duration('-PT1H30M') }}", "2026-03-28T07:30:00Z"),
        # A day later across the DST change is the same wall-clock time, at the new offset.
        ("{{ now_local | add_duration('P1D') }}", "2026-03-29T10:00:00+02:00"),
        ("{{ object.due | add_duration('P1M') }}", "2026-02-28"),
        ("{{ object.due | add_duration('-P1Y') }}", "2025-01-31"),
        ("{{ '2026-01-01T00:00:00+05:00' | add_duration('P1D') }}", "2026-01-02T00:00:00+05:00"),
        ("{{ now | add_duration('P1M') | date('%B') }}", "April"),
    ],
)
def test_each_filter(variables, template, expected):
    result = value(template, variables)
    assert result == expected and type(result) is type(expected)


def test_filters_give_the_same_in_text(variables):
    assert value("{{ object.name | upper }}: {{ object.price | round(1) }}", variables) == (
        "LAMP: 12.5"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{{ object.name | round }}",
            "round applies to numbers; 'object.name' is text (\"Lamp\").",
        ),
        ("{{ object.name | abs }}", "abs applies to numbers"),
        ("{{ object.stock | upper }}", "upper applies to text; 'object.stock' is a number (3)."),
        ("{{ object.note | lower }}", "lower applies to text; 'object.note' is null (null)."),
        ("{{ object.stock | length }}", "length applies to text, lists and objects"),
        ("{{ object.name | join }}", "join applies to lists; 'object.name' is text"),
        ("{{ object.name | date }}", "date applies to ISO 8601 dates and date-times"),
        ("{{ object.stock | add_duration('P1D') }}", "add_duration applies to ISO 8601 dates"),
        ("{{ object.due | date('%H') }}", "'object.due' is a date, with no time for '%H'."),
        ("{{ object.due | add_duration('PT1H') }}", "'object.due' is a date: 'PT1H' has hours"),
        ("{{ object.due | add_duration('P9999Y') }}", "is outside the calendar (years 1 to 9999)."),
        ("{{ object.name | uper }}", "Unknown filter 'uper': filters are abs, add_duration, date"),
        ("{{ object.price | round('2') }}", "round(digits): its argument is the number of"),
        ("{{ object.missing | upper }}", "Template variable 'object.missing' does not resolve"),
        ("{{ 1e400 * 1 }}", "Malformed placeholder"),
        ("{{ 99999999999999999999 * 99999999999999999999 * 1e }}", "Malformed placeholder"),
    ],
)
def test_a_filter_on_a_value_it_does_not_take_fails_clearly(variables, template, message):
    assert message in failure(template, variables)


def test_huge_numbers_fail_instead_of_overflowing(variables):
    big = "9" * 100
    huge = " * ".join([big] * 1100)[: MAX_EXPRESSION_LENGTH - 10]
    assert value(f"{{{{ {big} * 10 }}}}", variables) == float(big + "0")
    message = failure(f"{{{{ {huge.rsplit(' * ', 1)[0]} }}}}", variables)
    assert "is too large" in message


# --- Bounds -------------------------------------------------------------------------------------


def test_an_expression_is_bounded_in_length_and_nesting(variables):
    long = "{{ " + " + ".join(["1"] * 200) + " }}"
    assert f"holds at most {MAX_EXPRESSION_LENGTH} characters" in failure(long, variables)
    deep = "{{ " + "(" * (MAX_NESTING + 1) + "1" + ")" * (MAX_NESTING + 1) + " }}"
    assert f"Parentheses nest at most {MAX_NESTING} deep" in failure(deep, variables)
    fine = "{{ " + "(" * MAX_NESTING + "1" + ")" * MAX_NESTING + " }}"
    assert value(fine, variables) == 1


def test_text_a_filter_builds_is_checked_against_the_budget_before_it_exists():
    variables = {"results": {"0": ["x" * 100] * 100}}
    budget = RenderBudget(5_000, "too big")
    with pytest.raises(TemplateError, match="join would build 10099 characters; at most 5000"):
        render("{{ results.0 | join(',') }}", variables, budget)
    assert budget.used == 0  # refused before the text was built or counted


# --- Malformed ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ object.name | }}", "Expected a filter name after '|'"),
        ("{{ object.name | round( }}", "A filter's arguments are literals"),
        ("{{ object.name | default(object.id) }}", "are literals, not paths: 'object.id'"),
        ("{{ object.name | round(1 2) }}", "Expected ',' or ')'"),
        ("{{ (object.stock + 1 }}", "Expected ')'"),
        ("{{ object.stock + }}", "ends where a value is expected"),
        ("{{ 'open }}", "Unclosed string 'open"),
        ("{{ 'a\\n' }}", "Unknown escape '\\n'"),
        ("{{ object.name ; 1 }}", "Unexpected ';"),
        ("{{ }}", "An empty placeholder"),
    ],
)
def test_a_malformed_expression_names_the_problem(variables, template, message):
    error = failure(template, variables)
    assert error.startswith(f"Malformed placeholder '{template}'"), error
    assert message in error
    assert any(message in found for found in placeholder_errors(template))


# --- At save ------------------------------------------------------------------------------------

PRODUCT = TemplateScope(
    fields=frozenset({"id", "name", "price", "stock", "created_at", "due", "data"}),
    label="catalog.product",
    value_fields=frozenset({"data"}),
    action_order=1,
    field_kinds={
        "id": kinds.NUMBER,
        "name": kinds.TEXT,
        "price": kinds.DECIMAL,
        "stock": kinds.NUMBER,
        "created_at": kinds.DATETIME,
        "due": kinds.DATE,
        "data": kinds.ANY,
    },
)


@pytest.mark.parametrize(
    "template",
    [
        "{{ object.stock + 5 }}",
        "{{ object.price * 2 | round(2) }}",
        "{{ object.name | upper }} {{ object.price | abs }}",
        "{{ object.data.x | round }}",  # a JSON field's content is not known
        "{{ results.0.name | round }}",  # nor an earlier result
        "{{ object.name | default(1) | length }}",
        "{{ object.created_at | date('%H:%M') }} {{ object.due | add_duration('P1D') }}",
        "{{ now | add_duration('-PT2H') | date('%Y') }}",
        "{{ object.name | length * 2 }}",
    ],
)
def test_known_kinds_that_fit_are_accepted_at_save(template):
    assert placeholder_errors(template, PRODUCT) == []


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{{ object.name | round }}",
            "In '{{ object.name | round }}': round applies to numbers; 'object.name' gives text.",
        ),
        ("{{ object.name + 1 }}", "'+' applies to numbers; 'object.name' gives text."),
        ("{{ object.created_at * 2 }}", "'object.created_at' gives a date-time (as text)."),
        ("{{ object.stock | upper }}", "upper applies to text; 'object.stock' gives a number."),
        ("{{ rule.id | join }}", "join applies to lists; 'rule.id' gives a number."),
        ("{{ object.stock | date }}", "date applies to ISO 8601 dates and date-times"),
        ("{{ object.due | date('%H') }}", "'object.due' is a date, with no time for '%H'."),
        ("{{ object.due | add_duration('PT2H') }}", "'object.due' is a date: 'PT2H' has hours"),
        ("{{ object.stock / 0 }}", "Division by zero: '0' is 0."),
        ("{{ object.stock / -0.0 }}", "Division by zero: '-0.0' is 0."),
        ("{{ object.stock | uper }}", "Unknown filter 'uper'"),
        ("{{ object.stock | default }}", "default(value) takes 1 argument, not 0."),
        ("{{ object.stock | upper(1) }}", "upper takes no arguments, not 1."),
        ("{{ object.price | round(1, 2) }}", "round(digits) takes at most 1 argument, not 2."),
        ("{{ object.price | round(-1) }}", "a whole number from 0 to 10."),
        ("{{ object.price | round(1.5) }}", "a whole number from 0 to 10."),
        ("{{ object.price | round(true) }}", "a whole number from 0 to 10."),
        ("{{ results.0 | join(1) }}", "join(separator): its argument is the separator, as text."),
        ("{{ now | date('%Q') }}", "'%Q' is not a date directive"),
        ("{{ now | date('%') }}", "'%' is not a date directive"),
        ("{{ now | add_duration }}", "add_duration(duration) takes 1 argument, not 0."),
        ("{{ now | add_duration('now') }}", 'an ISO 8601 duration such as "P7D"'),
        ("{{ now | add_duration('7 days') }}", "'7 days' is not an ISO 8601 duration"),
    ],
)
def test_what_no_run_could_compute_is_refused_at_save(template, message):
    errors = placeholder_errors(template, PRODUCT)
    assert len(errors) == 1, errors
    assert message in errors[0], errors[0]


def test_a_path_mistake_is_reported_before_kinds_and_suggests_subtracting():
    assert placeholder_errors("{{ object.stock-5 }}", PRODUCT) == [
        "Template variable 'object.stock-5' does not resolve: catalog.product has no readable "
        "field 'stock-5'. Did you mean 'stock'? (To subtract, write spaces around '-'.)"
    ]
    assert placeholder_errors("{{ object.nme | default(1) }}", PRODUCT)[0].startswith(
        "Template variable 'object.nme' does not resolve"
    )


@pytest.mark.parametrize(
    ("template", "kind"),
    [
        ("{{ object.stock }}", kinds.NUMBER),
        ("{{ object.price }}", kinds.DECIMAL),
        ("{{ object.name }}", kinds.TEXT),
        ("{{ object.name | length }}", kinds.NUMBER),
        ("{{ object.price | round }}", kinds.NUMBER),
        ("{{ changes.due.new }}", kinds.DATE),
        ("{{ now }}", kinds.DATETIME),
        ("{{ object.created_at | date }}", kinds.TEXT),
        ("{{ object.due | add_duration('P1D') }}", kinds.DATE),
        ("{{ object.name | default('x') }}", kinds.TEXT),
        ("{{ object.name | default(1) }}", kinds.ANY),
        ("{{ payload.x }}", kinds.ANY),
        ("{{ object.data.x }}", kinds.ANY),
        ("{{ rule.name }}", kinds.TEXT),
        ("{{ null }}", kinds.NULL),
        ("x {{ object.stock }}", None),  # not a whole placeholder: text
        ("{{ object.name | uper }}", None),  # refused for its filter, not judged by its kind
        ("{{ object.name | default }}", None),
    ],
)
def test_the_kind_of_a_whole_placeholder_is_known_at_save(template, kind):
    assert placeholder_kind(template, PRODUCT) == kind


def test_without_a_model_object_is_null_and_nothing_else_is_known():
    scope = TemplateScope(has_record=False, has_payload=True, action_order=0)
    assert placeholder_kind("{{ object }}", scope) == kinds.NULL
    assert placeholder_kind("{{ payload.total * 2 }}", scope) == kinds.NUMBER
    assert placeholder_errors("{{ payload.name | round }}", scope) == []
