"""``column IN (values)`` with one statement text whatever the number of values.

SQLAlchemy expands ``column.in_(values)`` into ``IN (%(p_1)s, %(p_2)s, ...)``: a different SQL
text for every list length. psycopg caches its parsed form of each text (128 entries) and,
after five executions, a server-side prepared statement per connection (100 per connection),
so lists of varying length (the dashboard's trial ids, a worker's study filter) keep filling
and churning both caches: part of the API process's memory growth under bench/load.py
(finding F17 in docs/reliability.md). On PostgreSQL ``column = ANY(%(p)s)`` with the list as
one array parameter is a single text, prepared once, and uses the same index probes.
SQLite has no array type and its driver's statement cache is small and bounded: ``IN`` there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session


def any_of(session: Session, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column`` equals one of ``values`` (an empty list matches nothing)."""
    items = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, items, type_=ARRAY(column.type)))
    return column.in_(items)
