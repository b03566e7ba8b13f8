"""Pieces of bench/ that decide what a run reports."""

from __future__ import annotations

import pytest

from bench.run import _log_problem


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        # uvicorn's logger is named uvicorn.error whatever the level: its level decides.
        ('{"level":"info","logger":"uvicorn.error","message":"Started parent process [1]"}', False),
        ('{"level":"warning","logger":"alliance.db","message":"pool exhausted"}', True),
        ('{"level":"error","logger":"alliance.gateway","message":"unhandled error"}', True),
        ('{"level":"info","logger":"alliance.access","message":"POST /graphql 200"}', False),
        ("Traceback (most recent call last):", True),
        ("ERROR: something broke before logging was configured", True),
        ("{not json, but says error}", True),
        ("INFO: Waiting for application startup.", False),
    ],
)
def test_server_log_problems_are_told_by_level(line: str, problem: bool) -> None:
    assert _log_problem(line) is problem
