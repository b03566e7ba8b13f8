"""`alliance import balances`: opening balances from a merchant's previous system.

File columns (header row required, any order, names case-insensitive):

- `member_number` (required): an enrolled member of the program, once per file;
- `points` (required): a whole number from 1 to 1,000,000,000;
- `earned_at` (optional): ISO-8601 with a time zone, not in the future; the
  program's expiry policy counts from it (default: now);
- `expires_at` (optional): ISO-8601 with a time zone, in the future; overrides
  the policy.

Each row becomes one ledger transaction of kind `opening` (reason "opening
balance"): +points on the member account, -points on the program's `issued`
account, and a lot spendable at once; a member's clawback debt is repaid from it
first, as from every credit. Its idempotency key is
`opening:<member_number>` in scope `import:<program_id>` with the SHA-256 of the
canonical row as request hash, so re-running a file skips what it already
imported; a row that differs from what was imported for that member is an error.
"""

from __future__ import annotations

from typing import IO

from psycopg.types.json import Jsonb

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.db.engine import Database
from alliance.imports.csvfile import Layout
from alliance.imports.errors import ErrorLog
from alliance.imports.staging import (
    MAX_ERRORS,
    ImportReport,
    authorized_program,
    begin_import,
    collect_errors,
    execute,
    source_name,
    stage,
)
from alliance.validation import MAX_POINTS

LAYOUT = Layout(required=("member_number", "points"), optional=("earned_at", "expires_at"))


def _iso_8601(column: str) -> str:
    """SQL: `column` as timestamptz when it is ISO-8601 with a numeric zone, else NULL.

    PostgreSQL alone would also take `today`, `epoch` or a time without zone. The
    shape is checked with LIKE and right(), not a regex: 5 times cheaper per row.
    """
    shape = (
        f"({column} LIKE '____-__-__T__:__%%' OR {column} LIKE '____-__-__ __:__%%')"
        f" AND (right({column}, 1) IN ('Z', 'z')"
        f" OR left(right({column}, 6), 1) IN ('+', '-')"  # +08:00
        f" OR left(right({column}, 5), 1) IN ('+', '-')"  # +0800
        f" OR left(right({column}, 3), 1) IN ('+', '-'))"  # +08
    )
    # Nested CASEs: the cast runs only on what passed the checks before it. (%% is
    # LIKE's %: the statement takes parameters.)
    return (
        f"CASE WHEN {shape} THEN CASE WHEN pg_input_is_valid({column}, 'timestamptz')"
        f" THEN {column}::timestamptz END END"
    )


_STAGING = """
CREATE TEMP TABLE import_balance_row (
    line integer NOT NULL,
    member_number text,
    points text,
    earned_at text,
    expires_at text
) ON COMMIT DROP
"""

# Every row parsed (NULL where a value does not parse; the casts are guarded,
# so one bad value never aborts the statement), matched with its membership and
# with what an earlier run imported under its key; `problems` lists what is wrong.
# MATERIALIZED: each parse and hash runs once per row (an inlined CTE would repeat
# its expression wherever the column is used).
_MATCH = f"""
CREATE TEMP TABLE import_balance ON COMMIT DROP AS
WITH typed AS MATERIALIZED (
    SELECT s.line, s.member_number,
           s.points AS points_text, s.earned_at AS earned_text, s.expires_at AS expires_text,
           CASE WHEN length(s.points) <= 10 AND ltrim(s.points, '0123456789') = '' THEN
               CASE WHEN s.points::bigint BETWEEN 1 AND %(max_points)s THEN s.points::bigint END
           END AS points,
           {_iso_8601("s.earned_at")} AS earned_at,
           {_iso_8601("s.expires_at")} AS expires_at
      FROM import_balance_row s
), matched AS MATERIALIZED (
    SELECT t.*, m.member_id, m.status AS membership_status, a.id AS account_id,
           coalesce(d.first_line, t.line) AS first_line,
           coalesce(t.expires_at, lot_expiry(%(policy)s, %(policy_value)s,
                                             coalesce(t.earned_at, now()), %(tz)s))
               AS lot_expires_at,
           -- The row as read, normalised (08:00+08:00 and 00:00Z hash alike); a
           -- defaulted expiry is not part of it, so a re-run matches whatever the policy.
           sha256(convert_to(concat_ws(E'\\x1f', 'opening', t.member_number, t.points,
                                       coalesce(extract(epoch FROM t.earned_at)::text, ''),
                                       coalesce(extract(epoch FROM t.expires_at)::text, '')),
                             'UTF8')) AS request_hash,
           x.request_hash AS imported_hash
      FROM typed t
      LEFT JOIN (SELECT r.member_number, min(r.line) AS first_line
                   FROM import_balance_row r
                  GROUP BY r.member_number HAVING count(*) > 1) d
             ON d.member_number = t.member_number
      LEFT JOIN membership m
             ON m.program_id = %(program)s AND m.member_number = t.member_number
      LEFT JOIN account a ON a.membership_id = m.id
      LEFT JOIN ledger_transaction x
             ON x.idempotency_scope = %(scope)s
            AND x.idempotency_key = 'opening:' || t.member_number
)
SELECT m.*,
       nullif(array_remove(ARRAY[
           CASE WHEN m.member_number IS NULL THEN 'missing_member_number'
                WHEN m.line > m.first_line THEN 'duplicate_member_number'
                WHEN m.account_id IS NULL THEN 'unknown_member_number'
                WHEN m.membership_status <> 'active' THEN 'membership_closed' END,
           CASE WHEN m.points_text IS NULL THEN 'missing_points'
                WHEN m.points IS NULL THEN 'invalid_points' END,
           CASE WHEN m.earned_text IS NOT NULL AND m.earned_at IS NULL THEN 'invalid_earned_at'
                WHEN m.earned_at > now() THEN 'earned_in_future' END,
           CASE WHEN m.expires_text IS NOT NULL AND m.expires_at IS NULL
                THEN 'invalid_expires_at'
                WHEN m.expires_at <= now() THEN 'expires_in_past'
                WHEN m.expires_text IS NULL AND m.lot_expires_at <= now()
                THEN 'expired_by_policy' END,
           -- Only for rows that read well: a bad value makes any hash differ.
           CASE WHEN m.imported_hash <> m.request_hash AND m.line = m.first_line
                     AND m.points IS NOT NULL
                     AND (m.earned_text IS NULL OR m.earned_at IS NOT NULL)
                     AND (m.expires_text IS NULL OR m.expires_at IS NOT NULL)
                THEN 'already_imported' END
       ], NULL), '{{}}') AS problems
  FROM matched m
"""

_ERRORS = """
SELECT b.line, b.member_number, p.problem,
       CASE p.problem
           WHEN 'duplicate_member_number' THEN b.first_line::text
           WHEN 'invalid_points' THEN b.points_text
           WHEN 'invalid_earned_at' THEN b.earned_text
           WHEN 'earned_in_future' THEN b.earned_text
           WHEN 'expired_by_policy' THEN to_char(b.lot_expires_at AT TIME ZONE %(tz)s,
                                                 'YYYY-MM-DD HH24:MI ') || %(tz)s
           ELSE b.expires_text
       END,
       count(*) OVER ()
  FROM import_balance b
 CROSS JOIN LATERAL unnest(b.problems) WITH ORDINALITY AS p (problem, n)
 WHERE b.problems IS NOT NULL
 ORDER BY b.line, p.n
 LIMIT %(limit)s
"""

# One statement, so the balance trigger sees every posting of every transaction at
# once. Transaction ids are drawn up front, so transactions, postings and lots need
# no join back on the idempotency key. The account update takes each account's
# row lock before its postings are written (a concurrent award waits, and its
# posting follows ours) and gives the member legs' balance_after.
#
# A clawback debt is repaid first, as by every credit (`account.debt`): the member
# leg of +points is followed by one of -repaid, which the new lot gives up at once
# (a lot consumption), and the program's clawback account takes the repaid points.
_POST = """
WITH opening AS MATERIALIZED (
    SELECT nextval((SELECT pg_get_serial_sequence('ledger_transaction', 'id'))::regclass)
               AS transaction_id,
           b.member_number, b.member_id, b.account_id, b.points, b.lot_expires_at,
           b.request_hash
      FROM import_balance b
     WHERE b.imported_hash IS NULL
), credited AS (
    UPDATE account
       SET debt = account.debt - least(account.debt, o.points),
           balance = account.balance + o.points - least(account.debt, o.points)
      FROM opening o
     WHERE account.id = o.account_id
    RETURNING o.transaction_id, o.account_id, o.member_id, o.points, o.lot_expires_at,
              old.debt - new.debt AS repaid, new.balance AS balance_after
), transactions AS (
    INSERT INTO ledger_transaction
        (id, kind, member_id, client_id, idempotency_scope, idempotency_key, request_hash, reason)
    SELECT o.transaction_id, 'opening', o.member_id, %(client)s, %(scope)s,
           'opening:' || o.member_number, o.request_hash, 'opening balance'
      FROM opening o
), legs AS (
    -- Ordered so that posting ids follow each account's running balance.
    INSERT INTO posting (transaction_id, account_id, program_id, member_id, amount, balance_after)
    SELECT c.transaction_id, leg.account_id, %(program)s, c.member_id, leg.amount,
           leg.balance_after
      FROM credited c
     CROSS JOIN LATERAL (VALUES (1, c.account_id, c.points, c.balance_after + c.repaid),
                                (2, c.account_id, -c.repaid, c.balance_after),
                                (3, %(issued)s::bigint, -c.points, NULL::bigint),
                                (4, %(clawback)s::bigint, c.repaid, NULL::bigint))
           AS leg (n, account_id, amount, balance_after)
     WHERE leg.amount <> 0
     ORDER BY c.transaction_id, leg.n
), lots AS (
    INSERT INTO lot (account_id, program_id, member_id, transaction_id, amount, remaining,
                     available_at, expires_at)
    SELECT c.account_id, %(program)s, c.member_id, c.transaction_id, c.points,
           c.points - c.repaid, now(), c.lot_expires_at
      FROM credited c
    RETURNING lot.id, lot.transaction_id, lot.amount - lot.remaining AS repaid
), consumed AS (
    INSERT INTO lot_consumption (transaction_id, lot_id, points)
    SELECT l.transaction_id, l.id, l.repaid FROM lots l WHERE l.repaid > 0
)
SELECT count(*), coalesce(sum(c.points), 0), coalesce(sum(c.repaid), 0) FROM credited c
"""

_SYSTEM_ACCOUNTS = """
SELECT kind, id FROM account
 WHERE program_id = %(program)s AND membership_id IS NULL AND kind IN ('issued', 'clawback')
"""

_EVENT = """
INSERT INTO outbox_event (topic, merchant_id, payload)
VALUES ('balances.imported', %(merchant)s, %(payload)s)
"""


async def import_balances(
    db: Database,
    actor: Actor,
    *,
    program_id: int,
    source: IO[bytes],
    max_errors: int = MAX_ERRORS,
) -> ImportReport:
    """Post every opening balance of the file, or none: any bad row raises `ImportRejected`."""
    errors = ErrorLog(max_errors)
    async with db.transaction() as session:
        program = await authorized_program(session, actor, program_id)
        conn = await begin_import(session, program_id)
        await execute(conn, _STAGING)
        rows = await stage(conn, "import_balance_row", LAYOUT, source, errors)
        params = {
            "program": program_id,
            "scope": f"import:{program_id}",
            "client": actor.client_id,
            "max_points": MAX_POINTS,
            "policy": program.expiry_policy,
            "policy_value": program.expiry_value,
            "tz": db.settings.time_zone,
        }
        await execute(conn, _MATCH, params)
        await collect_errors(conn, _ERRORS, params, errors)
        errors.reject_if_any()

        accounts = dict(await (await execute(conn, _SYSTEM_ACCOUNTS, params)).fetchall())
        posted = await (await execute(conn, _POST, params | accounts)).fetchone()
        assert posted is not None, "an aggregate returns one row"
        created, points, repaid = (int(value) for value in posted)
        report = ImportReport(
            program_id, source_name(source), rows, created, rows - created, points
        )
        summary = {
            "program_id": program_id,
            "source": report.source,
            "rows": rows,
            "imported": created,
            "skipped": report.skipped,
            "points": points,
            "debt_repaid": repaid,
        }
        if created:
            await execute(
                conn, _EVENT, {"merchant": program.merchant_id, "payload": Jsonb(summary)}
            )
        await record_audit(
            session, actor, action="import.balances", target=f"program:{program_id}", after=summary
        )
    return report
