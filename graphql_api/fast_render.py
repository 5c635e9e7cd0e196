"""A live run event rendered without graphql-core's execution, when its selection allows it.

Every `automationLogs` event went through a full execution per subscription shape: per field an
info object, the resolver chain, the schema extensions' middleware, value completion; for the
usual dashboard selection (`{ id seq status ... }`) that was most of the server's time per event
after decoding it (py-spy of benchmark 5's server, docs/benchmarks.md). Such a selection only
reads loaded columns of the run and serializes them, so it is rendered here directly, with the
same values graphql-core would give:

- the plan is made once per subscription (its document and operation), and only when the
  operation is one `automationLogs` field, without directives or fragments, whose selection is
  fields without arguments, directives or selections (or `__typename`), each a plain column of
  AutomationLog (a strawberry-django field with no resolver, no field extension and no
  permission) of a scalar or enum type, each response key once; and only when the schema's
  resolver middleware is the optimizer's alone, which leaves such values untouched;
- per event, the value of each field is the attribute strawberry-django reads, coerced by the
  field's own GraphQL type (`coerce_output_value`, as value completion does), and only when
  every one is loaded on the run (a deferred column would cost a query), is not null where the
  type says non-null, coerces to a value, and the answer stays within
  GRAPHQL_MAX_RESPONSE_BYTES (counted as graphql_api/answer_size.py counts it).

Anything else, in the plan or in the event, gets the normal execution: the same answer, errors
and their masking included. tests/integration/test_fast_render.py compares both for many
selections and runs.
"""

from dataclasses import dataclass

from graphql import (
    FieldNode,
    GraphQLNonNull,
    OperationType,
    get_nullable_type,
    is_leaf_type,
)
from graphql.pyutils import Undefined
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry_django.fields.field import StrawberryDjangoField
from strawberry_django.optimizer import DjangoOptimizerExtension

from automation.api import AutomationLog
from graphql_api.answer_size import json_size

ROOT_FIELD = "automationLogs"
TYPENAME = "__typename"


@dataclass(frozen=True)
class _Leaf:
    key: str  # the response key (alias or name)
    attname: str | None  # the run's attribute; None for __typename
    type: object  # the GraphQL leaf type (None for __typename)
    non_null: bool
    constant: str | None = None  # __typename's value


@dataclass(frozen=True)
class Plan:
    root_key: str
    leaves: tuple[_Leaf, ...]
    object_bytes: int  # the braces and keys of both objects, as AnswerSizeLimit counts them


def plan_for(executor) -> Plan | None:
    """How to render this subscription's events directly, or None when it must be executed."""
    operation = executor.operation
    if operation.operation != OperationType.SUBSCRIPTION or operation.directives:
        return None
    if not _only_optimizer_middleware(executor):
        return None
    selections = operation.selection_set.selections
    if len(selections) != 1 or not _plain(selections[0], with_selection=True):
        return None
    root = selections[0]
    if root.name.value != ROOT_FIELD:
        return None
    subscription_type = executor.schema.subscription_type
    root_field = subscription_type.fields.get(ROOT_FIELD) if subscription_type else None
    if root_field is None:
        return None
    log_type = get_nullable_type(root_field.type)
    leaves, keys = [], set()
    for node in root.selection_set.selections:
        leaf = _leaf(node, log_type)
        if leaf is None or leaf.key in keys:
            return None
        keys.add(leaf.key)
        leaves.append(leaf)
    if not leaves:
        return None
    root_key = _key(root)
    object_bytes = 1 + len(root_key) + 4 + 1 + sum(len(leaf.key) + 4 for leaf in leaves)
    return Plan(root_key, tuple(leaves), object_bytes)


def _only_optimizer_middleware(executor) -> bool:
    manager = executor.middleware_manager
    if manager is None:
        return True
    return all(
        isinstance(middleware, DjangoOptimizerExtension) for middleware in manager.middlewares
    )


def _plain(node, *, with_selection: bool) -> bool:
    """A field without directives (and, for a leaf, without arguments or selections)."""
    if not isinstance(node, FieldNode) or node.directives:
        return False
    if with_selection:
        return node.selection_set is not None
    return not node.arguments and node.selection_set is None


def _key(node: FieldNode) -> str:
    return node.alias.value if node.alias else node.name.value


def _leaf(node, log_type) -> _Leaf | None:
    if not _plain(node, with_selection=False):
        return None
    name = node.name.value
    if name == TYPENAME:
        return _Leaf(_key(node), None, None, True, constant=log_type.name)
    field = log_type.fields.get(name)
    if field is None:
        return None
    definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not _plain_column(definition, field):
        return None
    leaf_type = get_nullable_type(field.type)
    if not is_leaf_type(leaf_type):
        return None
    attname = _column_attname(definition)
    if attname is None:
        return None
    return _Leaf(_key(node), attname, leaf_type, isinstance(field.type, GraphQLNonNull))


def _plain_column(definition, field) -> bool:
    """A strawberry-django field read straight from the model: no resolver of its own, no field
    extension, no permission, and graphql-core calls Strawberry's default getter for it."""
    return (
        isinstance(definition, StrawberryDjangoField)
        and definition.base_resolver is None
        and not definition.extensions
        and not definition.permission_classes
        and getattr(field.resolve, "_is_default", False)
    )


def _column_attname(definition) -> str | None:
    """The concrete, non-relation column of AutomationLog the field reads (by attname)."""
    name = definition.django_name or definition.python_name
    for column in AutomationLog._meta.concrete_fields:
        if column.attname == name and not column.is_relation:
            return name
    return None


def render(plan: Plan, run, limit: int) -> dict | None:
    """The event's `data`, or None when the normal execution must answer (see the module)."""
    if type(run) is not AutomationLog:
        return None
    loaded = run.__dict__
    values = {}
    size = plan.object_bytes
    for leaf in plan.leaves:
        if leaf.constant is not None:
            value = leaf.constant
        else:
            if leaf.attname not in loaded:
                return None  # deferred: reading it is a query
            raw = loaded[leaf.attname]
            if raw is None:
                if leaf.non_null:
                    return None  # the normal execution reports the error
                value = None
            else:
                try:
                    value = leaf.type.coerce_output_value(raw)
                except Exception:
                    return None  # the normal execution reports it as it does
                if value is None or value is Undefined:
                    return None
        size += json_size(value)
        values[leaf.key] = value
    if size > limit:
        return None  # the normal execution refuses it (RESPONSE_TOO_LARGE)
    return {plan.root_key: values}
