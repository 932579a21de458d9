"""Hand-written reads for the paths every API request takes, loaded as the
ORM would load them.

Building a query costs the ORM several times the CPU that PostgreSQL needs
to run it; a consume used to spend most of its time that way
(docs/benchmarks.md). The few reads on that path (the API key, the member, the
limit rules, the alert configuration) are written once as SQL, and their
rows are turned into model instances with the fields' own converters and
`Model.from_db`, exactly as a queryset would, so the rest of the code is
none the wiser. Everything else stays on the ORM.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Field, Model

M = TypeVar("M", bound=Model)
N = TypeVar("N", bound=Model)
Converter = Callable[[Any], Any]


Only = tuple[str, ...] | None  # the fields read, by name (None: every one)


def _fields(model: type[Model], only: Only) -> list[Field[Any, Any]]:
    fields = list(model._meta.concrete_fields)
    return fields if only is None else [f for f in fields if f.name in only]


@functools.cache
def columns(model: type[Model], alias: str, only: Only = None) -> str:
    """The model's concrete columns (those of `only`), in field order, as
    `alias."column", …`. Leaving out columns a hot read does not need saves
    their conversion on every row; the instance defers them.
    """
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(str(f.column))}" for f in _fields(model, only))


def column_count(model: type[Model], only: Only = None) -> int:
    return len(_fields(model, only))


def column_index(model: type[Model], field_name: str, only: Only = None) -> int:
    """Where the field's column is among `columns(model, …)`, from 0."""
    return [field.name for field in _fields(model, only)].index(field_name)


def nulls(count: int) -> str:
    """`count` NULL columns: the other part's place in a UNION of two models' rows."""
    return ", ".join(["NULL"] * count)


def typed_nulls(model: type[Model], only: Only = None) -> str:
    """NULLs in the place of `columns(model, …, only)`, each of its column's
    type: a UNION resolves a column's type from the first branch that
    gives one, and untyped NULLs there read as text.
    """
    return ", ".join(f"CAST(NULL AS {_cast_type(f)})" for f in _fields(model, only))


def _cast_type(field: Field[Any, Any]) -> str:
    column_type = field.rel_db_type(connection) if field.is_relation else field.db_type(connection)
    assert column_type is not None, f"{field} has no column"
    return column_type


@functools.cache
def _field_converter(field: Field[Any, Any], vendor: str) -> Converter:
    expression = field.get_col(field.model._meta.db_table)
    steps = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
    if not steps:
        return lambda value: value

    def convert(value: Any) -> Any:
        for step in steps:
            value = step(value, expression, connection)
        return value

    return convert


def convert(model: type[Model], field_name: str, value: Any) -> Any:
    """A column's value as the ORM would give it for `model.field_name`."""
    field = model._meta.get_field(field_name)
    assert isinstance(field, Field), f"{field_name} is not a column"
    return _field_converter(field, connection.vendor)(value)


@functools.cache
def _model_loader(model: type[Model], vendor: str, only: Only) -> tuple[list[str], list[Converter]]:
    fields = _fields(model, only)
    return [f.attname for f in fields], [_field_converter(f, vendor) for f in fields]


def instance(model: type[M], values: Sequence[Any], only: Only = None) -> M:
    """A model instance from a row of `columns(model, …, only)`, as a
    queryset makes it (the fields left out deferred, as `.only()` would).
    """
    attnames, converters = _model_loader(model, connection.vendor, only)
    return model.from_db(
        connection.alias,
        attnames,
        [to_python(value) for to_python, value in zip(converters, values, strict=True)],
    )


def instance_pair(row: Sequence[Any], first: type[M], second: type[N]) -> tuple[M, N]:
    """The two instances of a row of `columns(first, …), columns(second, …)`."""
    split = column_count(first)
    return instance(first, row[:split]), instance(second, row[split:])


def fetch_all(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def any_of(column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """`column` among `values`, and its parameters: one array on PostgreSQL
    whatever their number, rather than a placeholder each.
    """
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values)) or 'NULL'})", list(values)
