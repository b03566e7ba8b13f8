"""Settlement periods are cut at midnight in the alliance time zone, by cadence; a change
of cadence takes effect from the next period."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from alliance.db.engine import Database
from alliance.errors import Forbidden
from alliance.exchange.service import exchange_points
from alliance.settlement.models import Cadence
from alliance.settlement.periods import period_end, period_start
from alliance.settlement.run import set_cadence
from tests.exchange.helpers import keys, make_alliance, rate
from tests.factories import ALLIANCE_FINANCE, finance_actor, make_merchant
from tests.settlement.helpers import settle

SHANGHAI = ZoneInfo("Asia/Shanghai")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "cadence", "start", "end"),
    [
        # 23:30 UTC on the 24th is 07:30 on the 25th in Shanghai.
        ("2026-11-24T23:30:00", Cadence.DAILY, "2026-11-24T16:00:00", "2026-11-25T16:00:00"),
        ("2026-11-24T15:59:59", Cadence.DAILY, "2026-11-23T16:00:00", "2026-11-24T16:00:00"),
        # Wednesday 25 November: the week from Monday the 23rd.
        ("2026-11-25T03:00:00", Cadence.WEEKLY, "2026-11-22T16:00:00", "2026-11-29T16:00:00"),
        ("2026-11-30T17:00:00", Cadence.MONTHLY, "2026-11-30T16:00:00", "2026-12-31T16:00:00"),
        ("2026-12-31T15:00:00", Cadence.MONTHLY, "2026-11-30T16:00:00", "2026-12-31T16:00:00"),
        ("2028-02-10T00:00:00", Cadence.MONTHLY, "2028-01-31T16:00:00", "2028-02-29T16:00:00"),
    ],
)
def test_periods_are_cut_at_local_midnight(
    moment: str, cadence: Cadence, start: str, end: str
) -> None:
    begins = period_start(utc(moment), cadence, SHANGHAI)
    assert (begins, period_end(begins, cadence, SHANGHAI)) == (utc(start), utc(end))


def test_after_a_change_of_cadence_the_period_runs_to_the_next_boundary() -> None:
    wednesday = utc("2026-11-24T16:00:00")  # local midnight starting Wednesday the 25th
    assert period_end(wednesday, Cadence.WEEKLY, SHANGHAI) == utc("2026-11-29T16:00:00")
    assert period_end(wednesday, Cadence.MONTHLY, SHANGHAI) == utc("2026-11-30T16:00:00")


async def test_a_weekly_cadence_closes_the_week_once_it_has_ended(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(Forbidden):
        await set_cadence(db, finance_actor(await make_merchant(db)), cadence=Cadence.WEEKLY)
    await set_cadence(db, ALLIANCE_FINANCE, cadence=Cadence.WEEKLY)
    a = await make_alliance(db)
    await rate(db, a.programs[0], a.programs[1], "1")
    await exchange_points(
        db,
        a.member,
        from_membership_id=a.memberships[0].id,
        to_membership_id=a.memberships[1].id,
        points=10,
        idempotency_key=next(keys),
    )
    (period,) = await settle(db, monkeypatch, days=8)
    assert period.cadence == "weekly"
    assert period.starts_at.astimezone(SHANGHAI).weekday() == 0
    assert (period.ends_at - period.starts_at).days == 7
    assert period.obligations == 1
