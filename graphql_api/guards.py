"""Checks of an operation that need its variables: after validation, before anything runs.

- **Cost** (graphql_api/cost.py): an operation whose answer could hold more than GRAPHQL_MAX_COST
  values is refused with GRAPHQL_VALIDATION_FAILED, naming its cost and the limit.
- **Costly operations at once**: one costing GRAPHQL_EXPENSIVE_QUERY_COST or more takes one of
  its user's GRAPHQL_EXPENSIVE_QUERIES_PER_USER leases until it ends, or is RATE_LIMITED.
- **NUL characters**: PostgreSQL cannot store U+0000 in text or JSON, and no name, password or
  parameter needs it. Every string an operation sends (arguments written in the query, variables,
  JSON values and their keys) is checked here, once for every mutation and query, and one that
  holds U+0000 refuses the operation with VALIDATION_ERROR at its input path (as the services
  name paths: from inside `input`, else from the argument: "name", "conditions.groups.0...").

Both run in `on_validate`, after the validation cache has validated the document (the schema
lists this extension after it), so they only see documents that are valid.
"""

from django.conf import settings
from graphql import (
    FieldNode,
    GraphQLError,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    StringValueNode,
    VariableNode,
    get_operation_ast,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from graphql_api.cost import fields_of, fragments_of, operation_cost
from graphql_api.errors import InvalidInput, RateLimited
from graphql_api.ratelimit import give_back_lease, take_expensive_query_lease

NUL = "\x00"
NUL_MESSAGE = "Must not contain the NUL character (U+0000)."


class PreExecutionChecks(SchemaExtension):
    """Refuses a valid operation that costs too much or sends a NUL character, and holds one of
    the user's expensive-query leases while a costly one runs."""

    lease: tuple[str, str] | None = None

    def on_operation(self):
        try:
            yield
        finally:
            if self.lease is not None:
                give_back_lease(*self.lease)
                self.lease = None

    def on_validate(self):
        context = self.execution_context
        if context.pre_execution_errors is None:  # no validation cache ran before this one
            context.pre_execution_errors = validate_document(
                context.schema._schema, context.graphql_document, context.validation_rules
            )
        if not context.pre_execution_errors:
            operation = get_operation_ast(context.graphql_document, context.operation_name)
            if operation is not None:
                cost = operation_cost(
                    context.schema._schema,
                    context.graphql_document,
                    context.operation_name,
                    context.variables,
                )
                error = (
                    too_costly(operation, cost)
                    or nul_characters(operation, context.graphql_document, context.variables or {})
                    or self.take_lease(operation, cost)
                )
                if error is not None:
                    context.pre_execution_errors = [error]
        yield

    def take_lease(self, operation: OperationDefinitionNode, cost: int) -> GraphQLError | None:
        """An operation costing GRAPHQL_EXPENSIVE_QUERY_COST or more runs under one of its user's
        leases (graphql_api/ratelimit.py), or is RATE_LIMITED. Subscriptions are bounded per
        connection instead; anonymous callers can read nothing costly."""
        if cost < settings.GRAPHQL_EXPENSIVE_QUERY_COST:
            return None
        if operation.operation == OperationType.SUBSCRIPTION:
            return None
        request = getattr(self.execution_context.context, "request", None)
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        try:
            self.lease = take_expensive_query_lease(user.pk)
        except RateLimited as exc:
            return GraphQLError(str(exc), nodes=[operation], original_error=exc)
        return None


def too_costly(operation: OperationDefinitionNode, cost: int) -> GraphQLError | None:
    """GRAPHQL_VALIDATION_FAILED naming the cost, when it is over GRAPHQL_MAX_COST."""
    limit = settings.GRAPHQL_MAX_COST
    if cost <= limit:
        return None
    return GraphQLError(
        f"Query cost {cost:,} is over the limit of {limit:,}: the answer could hold that "
        "many values. Ask for fewer items (first, limit) or fewer nested lists.",
        nodes=[operation],
        extensions={"cost": cost, "maximumCost": limit},
    )


def nul_characters(operation, document, variables: dict) -> GraphQLError | None:
    """A VALIDATION_ERROR, located at the first root field concerned, listing every input
    path of the operation whose string holds U+0000; None when there is none."""
    fragments = fragments_of(document)
    found: dict[str, list[str]] = {}
    first_root = None
    for root in fields_of(operation.selection_set, fragments):
        for node in _with_subfields(root, fragments):
            for argument in node.arguments or ():
                prefix = () if argument.name.value == "input" else (argument.name.value,)
                for path in _nul_paths(argument.value, prefix, variables):
                    shown = ".".join(path).replace(NUL, "\\u0000") or "input"
                    found.setdefault(shown, [NUL_MESSAGE])
                    first_root = first_root or root
    if not found:
        return None
    key = (first_root.alias or first_root.name).value
    return GraphQLError(
        "Invalid input.",
        nodes=[first_root],
        path=[key],
        original_error=InvalidInput(found),
    )


def _with_subfields(root: FieldNode, fragments: dict):
    """The field and every field selected under it."""
    pending = [root]
    while pending:
        node = pending.pop()
        yield node
        if node.selection_set is not None:
            pending.extend(fields_of(node.selection_set, fragments))


def _nul_paths(value_node, prefix: tuple, variables: dict):
    """The paths (tuples of names and indexes) of the strings holding NUL in an argument's
    value: a literal, or a variable's value as sent. Walked without recursion: a variable may
    nest as deep as JSON decoding allows."""
    pending = [(prefix, value_node, True)]
    while pending:
        path, value, is_ast = pending.pop()
        if is_ast:
            if isinstance(value, VariableNode):
                name = value.name.value
                if name in variables:
                    pending.append((path, variables[name], False))
            elif isinstance(value, StringValueNode):
                if NUL in value.value:
                    yield path
            elif isinstance(value, ListValueNode):
                pending.extend(
                    (path + (str(i),), item, True) for i, item in enumerate(value.values)
                )
            elif isinstance(value, ObjectValueNode):
                pending.extend((path + (f.name.value,), f.value, True) for f in value.fields)
        elif isinstance(value, str):
            if NUL in value:
                yield path
        elif isinstance(value, dict):
            for key, item in value.items():
                if NUL in key:
                    yield path + (key,)
                pending.append((path + (key,), item, False))
        elif isinstance(value, list):
            pending.extend((path + (str(i),), item, False) for i, item in enumerate(value))
