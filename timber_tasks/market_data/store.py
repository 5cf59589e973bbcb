"""Bulk upsert of normalised bars (PostgreSQL: COPY into a staging table, then one INSERT .. ON CONFLICT)
and the watermark per (symbol, interval)."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Column, MetaData, Table, case, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from timber_tasks.features.writes import SEEN, record_core_write
from timber_tasks.market_data.normalize import COLUMNS
from timber_tasks.models.defaults import utcnow

PRICE_MODEL = "OhlcvPrice"
WATERMARK_MODEL = "MarketDataWatermark"
STAGE = "timber_ohlcv_stage"
KEY_COLUMNS = ("symbol", "interval", "ts")
# Up to this many changed rows the cache drops exactly those keys; beyond, the whole model (cheaper).
EXACT_KEYS_LIMIT = 10_000


@dataclass
class Upserted:
    """Rows inserted or changed per symbol, and their keys (None: too many to list, the model as a whole)."""

    written: Counter[str] = field(default_factory=Counter)
    keys: list[tuple[Any, ...]] | None = field(default_factory=list)


def upsert_prices(session: Session, model: type[Any], frame: pd.DataFrame) -> Upserted:
    """Insert new bars and update changed ones; identical rows are left alone (not counted, not touched)."""
    if frame.empty:
        return Upserted()
    conn = session.connection()
    dialect = conn.dialect.name
    stage = _stage_table(model)
    # Temporary tables live as long as the pooled connection: drop one an earlier run left.
    # (A failed run's rollback removes its stage anyway: DDL is transactional on both databases.)
    conn.execute(text(f"DROP TABLE IF EXISTS {'temp' if dialect == 'sqlite' else 'pg_temp'}.{STAGE}"))
    stage.create(conn)
    if dialect == "postgresql":
        _copy(conn, frame)
    else:
        conn.execute(stage.insert(), _records(frame))
    upserted = _merge(conn, model, len(frame), dialect)
    stage.drop(conn)
    return upserted


def _stage_table(model: type[Any]) -> Table:
    """A temporary table with the bars' columns and the target's types (values round the same way)."""
    target = model.__table__
    return Table(STAGE, MetaData(), *(Column(c, target.c[c].type) for c in COLUMNS), prefixes=["TEMPORARY"])


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    clean = frame.astype(object).where(frame.notna(), None)
    records: list[dict[str, Any]] = clean.to_dict("records")
    for r in records:
        r["ts"] = r["ts"].to_pydatetime()
    return records


def _copy(conn: Any, frame: pd.DataFrame) -> None:
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    sql = f"COPY {STAGE} ({columns}) FROM STDIN WITH (FORMAT csv)"
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(sql, csv_bytes(frame))
    except dbapi_error as exc:
        # The raw cursor bypasses SQLAlchemy: wrap its error as SQLAlchemy would (DataError, OperationalError, ...),
        # so callers tell bad data from transient faults the same way for COPY as for every statement.
        raise sa_exc.DBAPIError.instance(sql, None, exc, dbapi_error) from exc
    finally:
        cursor.close()


def csv_bytes(frame: pd.DataFrame) -> io.BytesIO:
    """The frame as CSV for COPY (NaN as empty, which COPY reads as NULL); Arrow writes it ~5x faster than pandas."""
    import pyarrow as pa
    from pyarrow import csv

    out = pa.BufferOutputStream()
    csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), out, csv.WriteOptions(include_header=False))
    return io.BytesIO(out.getvalue().to_pybytes())


def _merge(conn: Any, model: type[Any], staged: int, dialect: str) -> Upserted:
    """One INSERT .. SELECT .. ON CONFLICT DO UPDATE that only touches rows whose values differ."""
    table = model.__table__.name
    q = conn.dialect.identifier_preparer.quote
    cols = ", ".join(q(c) for c in COLUMNS)
    values = [c for c in COLUMNS if c not in KEY_COLUMNS]
    differs = " IS DISTINCT FROM " if dialect == "postgresql" else " IS NOT "
    sql = (
        f"INSERT INTO {q(table)} ({cols}, fetched_at) SELECT {cols}, :now FROM {STAGE} WHERE true "
        f"ON CONFLICT ({', '.join(q(c) for c in KEY_COLUMNS)}) DO UPDATE SET "
        + ", ".join(f"{q(c)} = excluded.{q(c)}" for c in [*values, "fetched_at"])
        + " WHERE " + " OR ".join(f"{q(table)}.{q(c)}{differs}excluded.{q(c)}" for c in values)
    )
    params = {"now": utcnow()}
    declared = {SEEN: True}  # the caller tells the after-write step exactly which bars changed (declare_writes)
    out = Upserted()
    if dialect == "postgresql" and staged > EXACT_KEYS_LIMIT:
        # Too many keys to send back: count per symbol inside the database.
        rows = conn.execute(text(f"WITH w AS ({sql} RETURNING symbol) SELECT symbol, count(*) FROM w GROUP BY symbol")
                            .execution_options(**declared), params)
        out.written.update({symbol: int(n) for symbol, n in rows})
        out.keys = None
        return out
    returning = text(f"{sql} RETURNING symbol, {q('interval')}, ts").execution_options(**declared)
    keys = [tuple(r) for r in conn.execute(returning, params)]
    out.written.update(k[0] for k in keys)
    out.keys = [(s, i, _as_datetime(t)) for s, i, t in keys] if len(keys) <= EXACT_KEYS_LIMIT else None
    return out


def _as_datetime(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value  # SQLite returns text here


def load_watermarks(session: Session, model: type[Any], symbols: list[str], interval: str) -> dict[str, Any]:
    """The watermark row of each symbol that has one."""
    rows = session.execute(select(model).where(model.symbol.in_(symbols), model.interval == interval)).scalars()
    return {row.symbol: row for row in rows}


def save_watermarks(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Upsert one row per (symbol, interval): the watermark only moves forward."""
    if not rows:
        return
    dialect = session.connection().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(model.__table__)
    set_: dict[str, Any] = {c: stmt.excluded[c] for c in rows[0] if c not in ("symbol", "interval", "watermark")}
    current, new = model.__table__.c.watermark, stmt.excluded.watermark
    set_["watermark"] = case((current.is_(None), new), (new.is_(None), current), (new > current, new), else_=current)
    session.execute(stmt.on_conflict_do_update(index_elements=["symbol", "interval"], set_=set_), rows)


def declare_writes(session: Session, model: type[Any], upserted: Upserted) -> None:
    """Tell the after-write step which rows the Core upsert changed: its hooks (the cache) see them after commit."""
    if upserted.written:
        record_core_write(session, model, written=upserted.keys or (), whole_model=upserted.keys is None)


def latest_keys(session: Session, model: type[Any], symbols: list[str], interval: str) -> list[tuple[Any, ...]]:
    """The primary key of each symbol's newest bar (what 'the latest quote' reads)."""
    from sqlalchemy import func

    stmt = (select(model.symbol, model.interval, func.max(model.ts))
            .where(model.symbol.in_(symbols), model.interval == interval).group_by(model.symbol, model.interval))
    return [(s, i, _as_datetime(t)) for s, i, t in session.execute(stmt)]
