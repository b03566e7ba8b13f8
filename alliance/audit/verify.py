"""The audit trail's hash chains, recomputed by `alliance verify`.

The database refuses UPDATE and DELETE on audit_record, but a superuser can pause
triggers. Whatever such a session changes shows here: an edited record no longer
matches its hash (or, if its hash was recomputed too, the next record no longer links
to it); a removed record leaves a gap in its day's numbering, or the day's chain no
longer ends where its head says; an inserted record breaks the numbering or a link.
Rewriting a whole day consistently, head included, is not detectable from inside the
database: publishing each day's head hash elsewhere closes that (not done here).
"""

from __future__ import annotations

from alliance.ledger.verify import Check

_ZERO = "'\\x" + "00" * 32 + "'::bytea"

AUDIT_CHECKS: tuple[Check, ...] = (
    Check(
        "audit_chain",
        "each audit record continues its day's hash chain and matches its own hash",
        f"""SELECT 'audit record ' || id || ' (' || chain_day || ' #' || chain_seq || ') '
                  || problem
             FROM (SELECT r.id, r.chain_day, r.chain_seq,
                          CASE WHEN r.chain_seq <> coalesce(lag(r.chain_seq) OVER w, 0) + 1
                                    THEN 'follows #' || coalesce(lag(r.chain_seq) OVER w, 0)
                                         || ': records are missing or were added'
                               WHEN r.previous_hash <> coalesce(lag(r.hash) OVER w, {_ZERO})
                                    THEN 'does not link to the previous record''s hash'
                               WHEN r.chain_day <> (r.created_at AT TIME ZONE 'UTC')::date
                                    THEN 'is not of its day'
                               WHEN r.hash <> audit_record_hash(r)
                                    THEN 'does not match its hash: its content was changed'
                               WHEN r.redacted_at IS NULL
                                    AND r.content_digest <> audit_content_digest(r.before, r.after)
                                    THEN 'has before/after documents changed since it was written'
                          END AS problem
                     FROM audit_record r
                   WINDOW w AS (PARTITION BY r.chain_day ORDER BY r.chain_seq)) c
            WHERE problem IS NOT NULL""",
    ),
    Check(
        "audit_chain_heads",
        "each day's audit chain ends at its head (no record removed from its end)",
        """SELECT 'audit chain of ' || coalesce(h.chain_day, r.chain_day) || ' ends at #'
                  || coalesce(r.seq::text, 'nothing') || ' but its head says #'
                  || coalesce(h.seq::text, 'nothing')
             FROM audit_chain_head h
             FULL JOIN (SELECT chain_day, max(chain_seq) AS seq,
                               (array_agg(hash ORDER BY chain_seq DESC))[1] AS hash
                          FROM audit_record GROUP BY chain_day) r
                    ON r.chain_day = h.chain_day
            WHERE r.seq IS DISTINCT FROM h.seq OR r.hash IS DISTINCT FROM h.hash""",
    ),
)
