"""What an operation may cost before it runs: an upper bound of the values its answer can hold.

Depth, alias and token limits bound the text of a query, not its answer: a 137-byte query of 200
logs with their condition traces and action logs answered with 27 MB. The cost counts the values
an answer can hold at most: every field selected is one value (an object, its fields), and a list
multiplies the cost of one item by the number of items it can have:

- the list's size argument (`first`, `limit`, `count`) as sent, or its default, at most its
  maximum (a larger value is refused by the resolver anyway);
- else the size assumed in `SIZES` (the engine's caps where it has them), else
  `DEFAULT_LIST_SIZE`.

A rule's condition tree is bounded as a whole, however deep the query nests `groups`: at most
`TREES` nodes of each type, each costing the most that any level of the query selects for that
type. Multiplying level by level would refuse every rule builder's query.

Variables are known before execution, so `first: $n` is costed with the value sent. `@skip` and
`@include` are ignored (an upper bound). The cost of a subscription is the cost of one event.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    VariableNode,
    get_operation_ast,
    value_from_ast,
)

from automation.api import MAX_ACTIONS, automatable_models, readable_paths
from automation.api import choices as automation_choices

# A list the table does not know: none should be (tests/api/test_limits.py checks every list).
DEFAULT_LIST_SIZE = 50


@dataclass(frozen=True)
class Size:
    """How many items a list field (or a page such as `logs`) can return: its `argument` as
    sent (else the argument's default in the schema) up to `maximum`; without an argument,
    `maximum` is the size assumed."""

    bound: int | str | Callable[[], int]  # a number, a setting's name, or what computes it
    argument: str | None = None

    @property
    def maximum(self) -> int:
        if isinstance(self.bound, str):
            return getattr(settings, self.bound)
        return self.bound() if callable(self.bound) else self.bound


def _automatable_count() -> int:
    return len(automatable_models())


def _most_readable_paths() -> int:
    return max((len(readable_paths(label)) for label in automatable_models()), default=0)


def _most_readable_fields() -> int:
    """A rule watches its model's own readable fields, each once (checked at save)."""
    return max((len(entry.readable) for entry in automatable_models().values()), default=0)


def _action_type_count() -> int:
    return len(automation_choices.ActionType)


# (type, field) -> Size: the list sizes the cost assumes.
SIZES = {
    ("Query", "rules"): Size(200, argument="limit"),
    # A page: its size multiplies the whole connection (edges and, a little beyond the truth,
    # pageInfo and totalCount).
    ("Query", "logs"): Size(200, argument="first"),
    ("LogConnection", "edges"): Size(1),
    ("Query", "notifications"): Size(200, argument="limit"),
    # Pages of offset and limit (graphql_api/queries.py, `_page`).
    ("Query", "organizations"): Size(200, argument="limit"),
    ("Query", "members"): Size(200, argument="limit"),
    ("Query", "invitations"): Size(200, argument="limit"),
    ("Query", "organizationInvitations"): Size(200, argument="limit"),
    ("Query", "tokens"): Size(200, argument="limit"),
    ("Query", "products"): Size(200, argument="limit"),
    ("Query", "categories"): Size(200, argument="limit"),
    ("Query", "records"): Size(200, argument="limit"),
    # Lists the server's configuration bounds (AUTOMATION_MODELS, the action types).
    ("Query", "availableModels"): Size(_automatable_count),
    ("Query", "actionTypes"): Size(_action_type_count),
    ("AutomatableModel", "fields"): Size(_most_readable_paths),
    ("AutomatableModel", "writableFields"): Size(_most_readable_fields),
    ("Rule", "upcomingRuns"): Size(50, argument="count"),
    ("Rule", "upcomingRunsLocal"): Size(50, argument="count"),
    ("Rule", "watchedFields"): Size(_most_readable_fields),
    ("Rule", "actions"): Size(MAX_ACTIONS),
    # One trace entry per leaf of the condition tree, one action log per action.
    ("AutomationLog", "conditionTrace"): Size("AUTOMATION_CONDITIONS_MAX_LEAVES"),
    ("AutomationLog", "actionLogs"): Size(MAX_ACTIONS),
    ("ActionLog", "whenTrace"): Size("AUTOMATION_CONDITIONS_MAX_LEAVES"),
    ("RunHold", "trace"): Size("AUTOMATION_CONDITIONS_MAX_LEAVES"),  # the second check's
}

# (type, field) -> {node type: the setting bounding how many nodes of that type}: fields that
# return a tree the engine bounds when a rule is saved (automation/rules/services.py).
TREES = {
    ("Rule", "conditions"): {
        "Condition": "AUTOMATION_CONDITIONS_MAX_LEAVES",
        "ConditionGroup": "AUTOMATION_CONDITIONS_MAX_GROUPS",
    },
}


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict | None,
) -> int:
    """The cost of the operation a valid document selects (0 when it selects none)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    walker = _CostWalker(document, operation, variables or {})
    return walker.selection_cost(root, operation.selection_set)


class _CostWalker:
    def __init__(self, document, operation: OperationDefinitionNode, variables: dict):
        self.variables = variables
        self.variable_defaults = {
            definition.variable.name.value: definition.default_value
            for definition in operation.variable_definitions or ()
        }
        self.fragments = fragments_of(document)

    def selection_cost(self, parent: GraphQLObjectType, selection_set) -> int:
        """The cost of the fields selected on one `parent` (0 for a leaf)."""
        if selection_set is None:
            return 0
        return sum(
            self.field_cost(parent, node) for node in fields_of(selection_set, self.fragments)
        )

    def field_cost(self, parent: GraphQLObjectType, node: FieldNode) -> int:
        field = getattr(parent, "fields", {}).get(node.name.value)
        if field is None:  # __typename, and introspection (bounded by the schema)
            return 1
        named, is_list = _unwrap(field.type)
        tree = TREES.get((parent.name, node.name.value))
        if tree is not None:
            return 1 + self.tree_cost(named, node.selection_set, tree)
        item = 1 + self.selection_cost(named, node.selection_set)
        size = SIZES.get((parent.name, node.name.value))
        if not is_list and size is None:
            return item
        return 1 + self.count(field, node, size) * item

    def tree_cost(self, root: GraphQLObjectType, selection_set, bounds: dict[str, str]) -> int:
        """A bounded tree: for each node type, its bound times the most any level selects."""
        most: dict[str, int] = {}
        pending = [(root, selection_set)]
        while pending:
            node_type, selection = pending.pop()
            cost = 1
            for node in fields_of(selection, self.fragments) if selection else ():
                field = getattr(node_type, "fields", {}).get(node.name.value)
                named = _unwrap(field.type)[0] if field is not None else None
                if named is not None and named.name in bounds:
                    cost += 1  # the list itself; its nodes are counted by type
                    pending.append((named, node.selection_set))
                else:
                    cost += self.field_cost(node_type, node)
            most[node_type.name] = max(most.get(node_type.name, 0), cost)
        return sum(
            (getattr(settings, bounds[name]) if name in bounds else 1) * cost
            for name, cost in most.items()
        )

    def count(self, field, node: FieldNode, size: Size | None) -> int:
        """The number of items of a list field (see the module doc)."""
        if size is None:
            return DEFAULT_LIST_SIZE
        if size.argument is None:
            return size.maximum
        value = self.argument_value(field, node, size.argument)
        if not isinstance(value, int) or isinstance(value, bool):
            return size.maximum
        return max(0, min(value, size.maximum))

    def argument_value(self, field, node: FieldNode, name: str):
        """The argument as this request sends it, else the schema's default."""
        argument = field.args.get(name)
        if argument is None:
            return None
        value = self.sent_value(node, name, argument.type)
        return argument.default_value if value is None or value is Undefined else value

    def sent_value(self, node: FieldNode, name: str, graphql_type):
        """The argument's literal, its variable's value or default; None when not sent."""
        value_node = next((a.value for a in node.arguments or () if a.name.value == name), None)
        if isinstance(value_node, VariableNode):
            variable = value_node.name.value
            if variable in self.variables:
                return self.variables[variable]
            value_node = self.variable_defaults.get(variable)
        return None if value_node is None else value_from_ast(value_node, graphql_type)


def _unwrap(graphql_type):
    """(the named type, whether it is a list) of a field's type."""
    is_list = False
    while isinstance(graphql_type, (GraphQLNonNull, GraphQLList)):
        if isinstance(graphql_type, GraphQLList):
            is_list = True
        graphql_type = graphql_type.of_type
    return graphql_type, is_list


def fragments_of(document: DocumentNode) -> dict:
    """{name: fragment definition} of a document."""
    return {
        definition.name.value: definition
        for definition in document.definitions
        if definition.kind == "fragment_definition"
    }


def fields_of(selection_set: SelectionSetNode, fragments: dict, within: tuple = ()):
    """The field nodes of a selection set, fragments spread inline (validation has refused
    fragment cycles; `within` guards the walk anyway)."""
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from fields_of(selection.selection_set, fragments, within)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in within:
                yield from fields_of(fragment.selection_set, fragments, (*within, name))
