"""`alliance import members`: memberships from a merchant's previous system.

File columns (header row required, any order, names case-insensitive):

- `member_number` (required): the merchant's number for the member, unique in
  the file, at most 64 characters;
- `display_name` (optional): at most 200 characters.

Each new number becomes an alliance member, a membership and its points
account (balance 0), exactly as `enroll_member` would make them. A number
already enrolled in the program is skipped when the row names the same person
(same display name, or none given), so re-running a file changes nothing; a
number held by someone else is a row error.
"""

from __future__ import annotations

from typing import IO

import psycopg
from psycopg.types.json import Jsonb

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.db.engine import Database
from alliance.errors import RetryLater
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

LAYOUT = Layout(required=("member_number",), optional=("display_name",))

REFUSED_CHARACTERS = (
    "[\\u0001-\\u001f\\u007f-\\u009f\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f"
    "\\u0890-\\u0891\\u08e2\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064"
    "\\u2066-\\u206f\\ue000-\\uf8ff\\ufeff\\ufff9-\\ufffb\\U000110bd\\U000110cd"
    "\\U00013430-\\U00013438\\U0001bca0-\\U0001bca3\\U0001d173-\\U0001d17a\\U000e0001"
    "\\U000e0020-\\U000e007f\\U000f0000-\\U000ffffd\\U00100000-\\U0010fffd]"
)
"""The characters `clean_text` refuses (categories Cc, Cf, Co), as a regex class that
PostgreSQL and Python read alike; unassigned ones (Cn) are `NOT unicode_assigned(…)`."""

_STAGING = """
CREATE TEMP TABLE import_member_row (
    line integer NOT NULL,
    member_number text,
    display_name text
) ON COMMIT DROP
"""

# Each row with the membership that already has its number, if any.
_MATCH = """
CREATE TEMP TABLE import_member ON COMMIT DROP AS
SELECT s.line, s.member_number, s.display_name,
       m.id AS membership_id, d.display_name AS enrolled_name,
       min(s.line) OVER (PARTITION BY s.member_number) AS first_line
  FROM import_member_row s
  LEFT JOIN membership m ON m.program_id = %(program)s AND m.member_number = s.member_number
  LEFT JOIN member d ON d.id = m.member_id
"""

_ERRORS = """
WITH problems AS (
    SELECT i.line, i.member_number, p.n, p.problem, p.detail
      FROM import_member i
     CROSS JOIN LATERAL (VALUES
        (1, CASE WHEN i.member_number IS NULL THEN 'missing_member_number'
                 WHEN char_length(i.member_number) > 64 OR i.member_number ~ %(refused)s
                      OR NOT unicode_assigned(i.member_number)
                 THEN 'invalid_member_number' END,
            CASE WHEN char_length(i.member_number) > 64 THEN 'is longer than 64 characters'
                 ELSE 'contains control or unassigned characters' END),
        (2, CASE WHEN i.member_number IS NOT NULL AND i.line > i.first_line
                 THEN 'duplicate_member_number' END,
            i.first_line::text),
        (3, CASE WHEN char_length(i.display_name) > 200 OR i.display_name ~ %(refused)s
                      OR NOT unicode_assigned(i.display_name)
                 THEN 'invalid_display_name' END,
            CASE WHEN char_length(i.display_name) > 200 THEN 'is longer than 200 characters'
                 ELSE 'contains control or unassigned characters' END),
        -- No display name in the file: nothing says it is someone else.
        (4, CASE WHEN i.membership_id IS NOT NULL AND i.display_name IS NOT NULL
                      AND i.display_name IS DISTINCT FROM i.enrolled_name
                 THEN 'member_number_taken' END,
            coalesce(quote_literal(i.enrolled_name), 'none'))
     ) AS p (n, problem, detail)
     WHERE p.problem IS NOT NULL
)
SELECT line, member_number, problem, detail, count(*) OVER ()
  FROM problems
 ORDER BY line, n
 LIMIT %(limit)s
"""

# Ids drawn up front so the three inserts below need no join back on a natural key
# (a new member has none).
_NEW = """
CREATE TEMP TABLE import_member_new ON COMMIT DROP AS
SELECT i.line, i.member_number, i.display_name,
       nextval((SELECT pg_get_serial_sequence('member', 'id'))::regclass) AS member_id,
       nextval((SELECT pg_get_serial_sequence('membership', 'id'))::regclass) AS membership_id
  FROM import_member i
 WHERE i.membership_id IS NULL
"""

_ENROL = """
WITH members AS (
    INSERT INTO member (id, display_name)
    SELECT n.member_id, n.display_name FROM import_member_new n
), memberships AS (
    INSERT INTO membership (id, member_id, program_id, member_number)
    SELECT n.membership_id, n.member_id, %(program)s, n.member_number
      FROM import_member_new n
)
INSERT INTO account (program_id, kind, membership_id, member_id, balance, held)
SELECT %(program)s, 'member', n.membership_id, n.member_id, 0, 0
  FROM import_member_new n
"""

_EVENT = """
INSERT INTO outbox_event (topic, merchant_id, payload)
VALUES ('members.imported', %(merchant)s, %(payload)s)
"""


async def import_members(
    db: Database,
    actor: Actor,
    *,
    program_id: int,
    source: IO[bytes],
    max_errors: int = MAX_ERRORS,
) -> ImportReport:
    """Enrol every member of the file, or none: any bad row raises `ImportRejected`."""
    errors = ErrorLog(max_errors)
    async with db.transaction() as session:
        program = await authorized_program(session, actor, program_id)
        conn = await begin_import(session, program_id)
        await execute(conn, _STAGING)
        rows = await stage(conn, "import_member_row", LAYOUT, source, errors)
        params = {"program": program_id, "refused": REFUSED_CHARACTERS}
        await execute(conn, _MATCH, params)
        await collect_errors(conn, _ERRORS, params, errors)
        errors.reject_if_any()

        created = (await execute(conn, _NEW)).rowcount
        if created:
            try:
                await execute(conn, _ENROL, params)
            except psycopg.errors.UniqueViolation:
                # Enrolled by someone else since the check: a re-run skips or reports it.
                raise RetryLater(
                    "a member number of the file was enrolled meanwhile; run the import again"
                ) from None
        report = ImportReport(program_id, source_name(source), rows, created, rows - created)
        summary = {
            "program_id": program_id,
            "source": report.source,
            "rows": rows,
            "imported": created,
            "skipped": report.skipped,
        }
        if created:
            await execute(
                conn, _EVENT, {"merchant": program.merchant_id, "payload": Jsonb(summary)}
            )
        await record_audit(
            session, actor, action="import.members", target=f"program:{program_id}", after=summary
        )
    return report
