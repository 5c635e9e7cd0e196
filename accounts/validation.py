"""Model validation for writes that change some fields of a stored row."""


def full_clean_changes(instance, changed_fields) -> None:
    """`instance.full_clean()`, minus the existence checks of relations the write leaves alone.

    A stored row's unchanged foreign keys are vouched for by the database's constraints, and each
    check is one query (the row's organization, its creator, its last editor...) on every write.
    Field values, uniqueness and constraints are validated as full_clean does. Raises Django's
    ValidationError.
    """
    unchanged_relations = []
    if not instance._state.adding:
        unchanged_relations = [
            field.name
            for field in instance._meta.concrete_fields
            if field.is_relation and field.name not in changed_fields
        ]
    instance.full_clean(
        exclude=unchanged_relations, validate_unique=False, validate_constraints=False
    )
    instance.validate_unique()
    instance.validate_constraints()
