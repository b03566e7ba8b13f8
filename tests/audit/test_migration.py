"""Migration 0010 on a database that already has audit records and outbox events: the
records are chained day by day (verify finds them consistent), merchant-scoped where
their client was a merchant's, and the trail stays append-only."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from alliance.db import migrate


def test_existing_records_are_chained(database_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    scratch = f"{url.database}_audit_migration"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}"'))
        conn.execute(text(f'CREATE DATABASE "{scratch}"'))
    target = url.set(database=scratch).render_as_string(hide_password=False)
    try:
        migrate.upgrade(target, "0007")
        engine = create_engine(target)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO merchant (code, name) VALUES ('m', 'M')"))
            conn.execute(
                text(
                    "INSERT INTO oauth_client (client_id, name, role, merchant_id, secret_hash)"
                    " VALUES ('pos', 'POS', 'merchant', 1, '\\x00')"
                )
            )
            # Three days, out of id order within the first.
            for n, (day, client) in enumerate(
                [("2026-01-02 10:00", "pos"), ("2026-01-01 23:00", "ops"),
                 ("2026-01-01 08:00", "pos"), ("2026-01-03 00:00", None)]
            ):  # fmt: skip
                conn.execute(
                    text(
                        "INSERT INTO audit_record (actor, client_id, role, action, target,"
                        " after, created_at) VALUES (:actor, :client, 'operator', 'x', :t,"
                        " CAST(:after AS jsonb), CAST(:at AS timestamptz))"
                    ),
                    {"actor": f"client:{client}", "client": client, "t": f"thing:{n}",
                     "after": f'{{"n": {n}}}', "at": day + "+00"},
                )  # fmt: skip
            conn.execute(
                text("INSERT INTO outbox_event (topic, merchant_id, payload) VALUES ('x', 1, '{}')")
            )
        migrate.upgrade(target)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT target, chain_day::text, chain_seq, merchant_id FROM audit_record"
                    " ORDER BY chain_day, chain_seq"
                )
            ).all()
            assert rows == [
                ("thing:1", "2026-01-01", 1, None),  # chained in id order within a day
                ("thing:2", "2026-01-01", 2, 1),
                ("thing:0", "2026-01-02", 1, 1),
                ("thing:3", "2026-01-03", 1, None),
            ]
            from alliance.audit.verify import AUDIT_CHECKS

            for check in AUDIT_CHECKS:
                assert conn.execute(text(check.sql)).all() == [], check.name
            heads = conn.execute(text("SELECT count(*) FROM audit_chain_head")).scalar()
            assert heads == 3
            # Events get their number when fanned out (0015), in id order, those written
            # before the migrations included.
            conn.execute(
                text("INSERT INTO outbox_event (topic, merchant_id, payload) VALUES ('y', 1, '{}')")
            )
            numbered = "SELECT aggregate, aggregate_seq FROM outbox_event ORDER BY id"
            assert conn.execute(text(numbered)).all() == [(None, None), (None, None)]
            assert conn.execute(text("SELECT * FROM outbox_fan_out(10)")).one() == (2, 0)
            assert conn.execute(text(numbered)).all() == [("merchant:1", 1), ("merchant:1", 2)]
            conn.commit()
            # Down to 0014's trigger: events not yet fanned out are numbered on the way.
            conn.execute(
                text("INSERT INTO outbox_event (topic, merchant_id, payload) VALUES ('z', 1, '{}')")
            )
            conn.commit()
        migrate.downgrade(target, "0014")
        with engine.connect() as conn:
            conn.execute(
                text("INSERT INTO outbox_event (topic, merchant_id, payload) VALUES ('w', 1, '{}')")
            )
            assert [r[1] for r in conn.execute(text(numbered)).all()] == [1, 2, 3, 4]
            conn.rollback()
        engine.dispose()
        migrate.downgrade(target, "0007")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        admin.dispose()
