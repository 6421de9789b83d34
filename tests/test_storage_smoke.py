import datetime as dt

from sqlalchemy import select

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
