"""Settlement periods, cut at local midnight in the alliance time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from alliance.settlement.models import Cadence


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def period_start(moment: datetime, cadence: Cadence, zone: ZoneInfo) -> datetime:
    """The start of the period of `cadence` that contains `moment`."""
    day = moment.astimezone(zone).date()
    match cadence:
        case Cadence.DAILY:
            pass
        case Cadence.WEEKLY:
            day -= timedelta(days=day.weekday())
        case Cadence.MONTHLY:
            day = day.replace(day=1)
    return _midnight(day, zone)


def period_end(start: datetime, cadence: Cadence, zone: ZoneInfo) -> datetime:
    """The first boundary of `cadence` after `start` (a period after a change of cadence
    runs from the previous end to the new cadence's next boundary)."""
    day = start.astimezone(zone).date()
    match cadence:
        case Cadence.DAILY:
            following = day + timedelta(days=1)
        case Cadence.WEEKLY:
            following = day + timedelta(days=7 - day.weekday())
        case Cadence.MONTHLY:
            following = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
    return _midnight(following, zone)
