"""The exported schema keeps every name of the public contract (docs/api-contract.graphql).

The contract may be extended, never renamed or narrowed: every type, field, argument, enum value
and input field it names must exist in schema.graphql with the same type.
"""

from pathlib import Path

import pytest
from graphql import build_schema
from graphql.type import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
)

ROOT = Path(__file__).resolve().parents[2]


def load(path: Path):
    return build_schema(path.read_text(), assume_valid_sdl=True)


CONTRACT = load(ROOT / "docs" / "api-contract.graphql")
SCHEMA = load(ROOT / "schema.graphql")


def contract_types():
    return sorted(name for name in CONTRACT.type_map if not name.startswith("__"))


@pytest.mark.parametrize("name", contract_types())
def test_contract_type_is_served_unchanged(name):
    expected = CONTRACT.type_map[name]
    actual = SCHEMA.type_map.get(name)
    assert actual is not None, f"type {name} is missing"
    assert type(actual) is type(expected), f"{name} changed kind"
    if isinstance(expected, GraphQLEnumType):
        missing = set(expected.values) - set(actual.values)
        assert not missing, f"{name} lost values {missing}"
    if isinstance(expected, GraphQLObjectType | GraphQLInterfaceType):
        for field_name, field in expected.fields.items():
            assert field_name in actual.fields, f"{name}.{field_name} is missing"
            served = actual.fields[field_name]
            assert str(served.type) == str(field.type), f"{name}.{field_name}: {served.type}"
            for arg_name, arg in field.args.items():
                assert arg_name in served.args, f"{name}.{field_name}({arg_name}) is missing"
                assert str(served.args[arg_name].type) == str(arg.type), (
                    f"{name}.{field_name}({arg_name}): {served.args[arg_name].type}"
                )
                assert served.args[arg_name].default_value == arg.default_value, (
                    f"{name}.{field_name}({arg_name}) default changed"
                )
            extra_required = [
                arg_name
                for arg_name, arg in served.args.items()
                if arg_name not in field.args
                and str(arg.type).endswith("!")
                and arg.default_value is None
            ]
            assert not extra_required, f"{name}.{field_name} requires new args {extra_required}"
    if isinstance(expected, GraphQLInputObjectType):
        for field_name, field in expected.fields.items():
            assert field_name in actual.fields, f"input {name}.{field_name} is missing"
            assert str(actual.fields[field_name].type) == str(field.type), (
                f"input {name}.{field_name}: {actual.fields[field_name].type}"
            )
