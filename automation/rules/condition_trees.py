"""A rule's condition trees: its `conditions` (groups and leaves saved as rows) and each action's
`when` (the same shape, stored as JSON on the action), checked whole before anything is written.

Used by the rule service (services.py); errors go into its {input path: [messages]} collector.
"""

from django.conf import settings
from django.core.exceptions import ValidationError

from automation.core.models import ConditionGroup, RuleCondition

ROOT_PATH = "conditions"  # the rule's condition tree's input path
# Model field name -> API input name, for errors raised by a condition's clean().
CONDITION_FIELD_PATHS = {"field_name": "field", "value_field": "valueField", "__all__": ""}


def build_condition_tree(rule, tree, errors):
    """The validated, unsaved tree (see build_tree), or None when it is over a size limit."""
    if not check_tree_size(tree, errors):
        return None
    return build_tree(rule, tree, errors)


def check_tree_size(tree, errors, root: str = ROOT_PATH) -> bool:
    """Is the input tree within the settings' bounds? Counted on the input before anything is
    built, and stopped at the first bound passed: a tree of 10,000 groups is refused without
    building and validating 10,000 groups. Each leaf costs evaluation time on every run, and a
    run's evaluation has a budget; a tree within these bounds fits it unless its leaves are slow.
    """
    max_groups = settings.AUTOMATION_CONDITIONS_MAX_GROUPS
    max_leaves = settings.AUTOMATION_CONDITIONS_MAX_LEAVES
    max_depth = settings.AUTOMATION_CONDITIONS_MAX_DEPTH
    groups, leaves = 1, 0  # a group is counted when it is found, before it is visited
    stack = [(tree, root, 0)]
    while stack:
        node, path, depth = stack.pop()
        if not isinstance(node, dict):
            continue  # build_tree reports it
        if depth > max_depth:
            errors.add(
                path,
                [
                    f"Condition groups nest at most {max_depth} levels deep "
                    "(AUTOMATION_CONDITIONS_MAX_DEPTH)."
                ],
            )
            return False
        children = node.get("groups") or []
        groups += len(children)
        leaves += len(node.get("conditions") or [])
        if groups > max_groups:
            errors.add(
                root,
                [
                    f"A rule's conditions have at most {max_groups} groups "
                    "(AUTOMATION_CONDITIONS_MAX_GROUPS), the top-level group included."
                ],
            )
            return False
        if leaves > max_leaves:
            errors.add(
                root,
                [
                    f"A rule's conditions have at most {max_leaves} conditions in all "
                    "(AUTOMATION_CONDITIONS_MAX_LEAVES)."
                ],
            )
            return False
        stack.extend(
            (child, f"{path}.groups.{index}", depth + 1) for index, child in enumerate(children)
        )
    return True


def build_tree(rule, tree: dict, errors, path: str = ROOT_PATH, check=None):
    """Validate a group dict and its subtree; return (group, [conditions], [subtrees]) unsaved.
    `check`: each condition's own check (default check_condition, a rule's conditions').

    Call it through build_condition_tree, which has checked the tree's size and depth.
    """
    check = check or check_condition
    if not isinstance(tree, dict):
        errors.add(path, ["A condition group is an object."])
        return None
    group = ConditionGroup(
        rule=rule, logic=tree.get("logic") or "AND", negate=bool(tree.get("negate"))
    )
    try:
        group.full_clean(exclude=["rule", "parent"], validate_constraints=False)
    except ValidationError as exc:
        errors.add_validation_error(exc, path, {"__all__": ""})
    conditions = []
    for index, spec in enumerate(tree.get("conditions") or []):
        condition = RuleCondition(
            rule=rule,
            field_name=spec.get("field") or "",
            operator=spec.get("operator") or "",
            value=spec.get("value"),
            previous=bool(spec.get("previous")),
            value_field=spec.get("value_field") or "",
            negate=bool(spec.get("negate")),
            order=index,
        )
        try:
            full_clean(condition, check, exclude=["rule", "group"])
        except ValidationError as exc:
            errors.add_validation_error(exc, f"{path}.conditions.{index}", CONDITION_FIELD_PATHS)
        conditions.append(condition)
    subtrees = [
        build_tree(rule, child, errors, f"{path}.groups.{index}", check)
        for index, child in enumerate(tree.get("groups") or [])
    ]
    return group, conditions, subtrees


def save_tree(rule, built, parent=None, order: int = 0) -> None:
    group, conditions, subtrees = built
    group.rule = rule
    group.parent = parent
    group.order = order
    group.save()
    for condition in conditions:
        condition.rule = rule
        condition.group = group
        condition.save()
    for index, subtree in enumerate(subtrees):
        save_tree(rule, subtree, parent=group, order=index)


def tree_data(rule) -> dict:
    """The stored tree as input data, so kept conditions are validated like new ones."""
    groups = list(rule.condition_groups.all())
    conditions = list(rule.conditions.all())

    def as_data(group) -> dict:
        return {
            "logic": group.logic,
            "negate": group.negate,
            "conditions": [
                {
                    "field": c.field_name,
                    "operator": c.operator,
                    "value": c.value,
                    "previous": c.previous,
                    "value_field": c.value_field,
                    "negate": c.negate,
                }
                for c in conditions
                if c.group_id == group.pk
            ],
            "groups": [as_data(g) for g in groups if g.parent_id == group.pk],
        }

    root = next((g for g in groups if g.parent_id is None), None)
    return as_data(root) if root else {}


def build_when(rule, tree, index: int, errors) -> dict | None:
    """Action `index`'s `when` as stored (ConditionGroupInput's shape), checked as a rule's
    conditions are, its conditions also allowed to test earlier actions' results; None: none."""
    if tree is None:
        return None
    path = f"actions.{index}.when"

    def check(condition) -> None:
        from automation.conditions.checks import leaf_errors  # the evaluator, loaded when used

        found = leaf_errors(
            rule,
            condition.field_name,
            condition.operator,
            condition.value,
            previous=condition.previous,
            value_field=condition.value_field,
            action_order=index,
        )
        if found:
            raise ValidationError(found)

    if not check_tree_size(tree, errors, root=path):
        return None
    built = build_tree(rule, tree, errors, path, check)
    return tree_of(built) if built else None


def tree_of(built) -> dict:
    """A validated tree (see build_tree) as data."""
    group, conditions, subtrees = built
    return {
        "logic": group.logic,
        "negate": group.negate,
        "conditions": [
            {
                "field": c.field_name,
                "operator": c.operator,
                "value": c.value,
                "negate": c.negate,
                **({"previous": True} if c.previous else {}),
                **({"valueField": c.value_field} if c.value_field else {}),
            }
            for c in conditions
        ],
        "groups": [tree_of(subtree) for subtree in subtrees if subtree],
    }


def check_condition(condition: RuleCondition) -> None:
    """The evaluator's own check of a leaf, so a rule is refused at save with the message its
    runs would fail with (leaf_errors)."""
    from automation.conditions.checks import leaf_errors  # the evaluator, loaded when used

    errors = leaf_errors(
        condition.rule,
        condition.field_name,
        condition.operator,
        condition.value,
        previous=condition.previous,
        value_field=condition.value_field,
    )
    if errors:
        raise ValidationError(errors)


def full_clean(instance, check, **options) -> None:
    """`instance.full_clean(**options)` and `check(instance)`, their errors together (as Django's
    full_clean runs a model's clean() even when a field failed)."""
    errors = {}
    for validate in (lambda: instance.full_clean(**options), lambda: check(instance)):
        try:
            validate()
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
    if errors:
        raise ValidationError(errors)
