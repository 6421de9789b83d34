import datetime as dt

import pytest
from sqlalchemy import select, text

from ringflow.storage.models import Account

UTC = dt.UTC


async def test_datetimes_come_back_aware_utc(db):
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    async with db.session() as s:
        s.add(Account(sid="a1", name="A", time_zone="Asia/Kolkata", created_at=at))
    async with db.session() as s:
        acc = (await s.execute(select(Account))).scalar_one()
    assert acc.created_at == at
    assert acc.created_at.tzinfo is not None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgresql_ends_a_session_left_idle_in_a_transaction(db):
    """A transaction a cancelled task left open, its connection never given back to the pool,
    must not keep its row locks for the life of the process: every connection of ringflow's
    carries PostgreSQL's idle-in-transaction timeout."""
    async with db.engine.connect() as conn:
        setting = await conn.scalar(text("SHOW idle_in_transaction_session_timeout"))
    assert setting == "1min"
