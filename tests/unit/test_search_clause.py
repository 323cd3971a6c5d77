"""The listing's search clause is built once for each query and reused (store/node_search.py):
the same clause for a repeated poll, a distinct one for each query and for the walk, and each
compiles to its own values on both databases."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from voipcloud.store import node_search
from voipcloud.store.tables import nodes


def _sql(q: str, dialect: object, *, walk: bool = False) -> str:
    statement = select(nodes.c.id).where(node_search.search(q, walk=walk))
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))  # type: ignore[arg-type]


def test_a_repeated_query_reuses_its_clause_and_each_query_has_its_own() -> None:
    assert node_search.search("42") is node_search.search("42")
    assert node_search.search("42") is not node_search.search("42", walk=True)
    assert node_search.search("42") is not node_search.search("43")
    for q in ("42", "zq", "fra1", "10.0.42."):  # the values are the query's, built or kept
        for dialect in (sqlite.dialect(), postgresql.dialect()):
            first, again = _sql(q, dialect), _sql(q, dialect)
            assert first == again
            assert q in first
    assert "hostname_pairs @>" in _sql("zq", postgresql.dialect())
    assert "node_pairs" in _sql("zq", sqlite.dialect())
    assert "+nodes.id IN" in _sql("zq", sqlite.dialect(), walk=True)
    assert "node_pairs" not in _sql("fra1", sqlite.dialect())  # the trigram index's
