"""`alliance verify`: every ledger invariant of DESIGN.md, checked in SQL.

Each check is one query that returns the offending rows (at most `limit` each),
so it runs on any database, large or small, without loading the ledger into
Python. An empty result means the invariant holds.

The settlement's invariants (every cross-merchant transaction has exactly its
obligations, statements equal their obligations, nets sum to zero) are in
`alliance.settlement.reconcile` and run with these.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from alliance.db.engine import Database
from alliance.ledger.models import SYSTEM_ACCOUNT_KINDS
from alliance.rewards.checks import REWARD_CHECKS


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    description: str
    sql: str


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    description: str
    detail: str


CHECKS: tuple[Check, ...] = (
    Check(
        "balanced_transactions",
        "the postings of each transaction sum to zero per program",
        """SELECT 'transaction ' || transaction_id || ' program ' || program_id
                  || ' sums to ' || sum(amount)
             FROM posting GROUP BY transaction_id, program_id HAVING sum(amount) <> 0""",
    ),
    Check(
        "ledger_references_exist",
        "every posting and every lot names an existing ledger transaction and account",
        # Triggers check these per statement, not foreign keys (migration 0016); the
        # checks below join on them and would not see an orphan. Left joins, not NOT
        # EXISTS under OR: hash joins over the whole ledger.
        """SELECT 'posting ' || p.id || ' names '
                  || CASE WHEN t.id IS NULL THEN 'transaction ' || p.transaction_id
                          ELSE 'account ' || p.account_id END || ', unknown'
             FROM posting p
             LEFT JOIN ledger_transaction t ON t.id = p.transaction_id
             LEFT JOIN account a ON a.id = p.account_id
            WHERE t.id IS NULL OR a.id IS NULL
            UNION ALL
           SELECT 'lot ' || l.id || ' names '
                  || CASE WHEN t.id IS NULL THEN 'transaction ' || l.transaction_id
                          ELSE 'account ' || l.account_id END || ', unknown'
             FROM lot l
             LEFT JOIN ledger_transaction t ON t.id = l.transaction_id
             LEFT JOIN account a ON a.id = l.account_id
            WHERE t.id IS NULL OR a.id IS NULL""",
    ),
    Check(
        "transactions_have_postings",
        "every ledger transaction has at least two postings",
        """SELECT 'transaction ' || t.id || ' has ' || count(p.id) || ' postings'
             FROM ledger_transaction t LEFT JOIN posting p ON p.transaction_id = t.id
            GROUP BY t.id HAVING count(p.id) < 2""",
    ),
    Check(
        "balance_equals_postings",
        "each member account's balance equals the sum of its postings",
        """SELECT 'account ' || a.id || ' balance ' || a.balance || ' but postings sum to '
                  || coalesce(p.total, 0)
             FROM account a
             LEFT JOIN (SELECT account_id, sum(amount) AS total FROM posting GROUP BY account_id) p
                    ON p.account_id = a.id
            WHERE a.kind = 'member' AND a.balance <> coalesce(p.total, 0)""",
    ),
    Check(
        "balance_equals_lots",
        "each member account's balance equals the sum of its lots' remaining points",
        """SELECT 'account ' || a.id || ' balance ' || a.balance || ' but lots hold '
                  || coalesce(l.total, 0)
             FROM account a
             LEFT JOIN (SELECT account_id, sum(remaining) AS total FROM lot GROUP BY account_id) l
                    ON l.account_id = a.id
            WHERE a.kind = 'member' AND a.balance <> coalesce(l.total, 0)""",
    ),
    Check(
        "no_negative_balance",
        "no member account is negative or holds more than its balance",
        """SELECT 'account ' || id || ' balance ' || balance || ' held ' || held
             FROM account
            WHERE kind = 'member' AND (balance < 0 OR held < 0 OR held > balance)""",
    ),
    Check(
        "running_balance",
        "each member posting's balance_after is the running sum of its account's postings",
        # Member legs are the postings with balance_after (checked just below).
        """SELECT 'posting ' || id || ' balance_after ' || balance_after || ' but running sum '
                  || running
             FROM (SELECT id, balance_after,
                          sum(amount) OVER (PARTITION BY account_id ORDER BY id) AS running
                     FROM posting
                    WHERE balance_after IS NOT NULL) r
            WHERE balance_after <> running""",
    ),
    Check(
        "balance_after_on_member_legs_only",
        "member-account postings carry balance_after, system-account postings do not,"
        " and every posting's program is its account's",
        """SELECT 'posting ' || p.id || ' on account ' || a.id
                  || CASE WHEN p.program_id <> a.program_id THEN ' of another program'
                          WHEN a.kind = 'member' THEN ' lacks balance_after'
                          ELSE ' carries balance_after on a system account' END
             FROM posting p JOIN account a ON a.id = p.account_id
            WHERE p.program_id <> a.program_id
               OR (a.kind = 'member') <> (p.balance_after IS NOT NULL)""",
    ),
    Check(
        "held_equals_open_holds",
        "each member account's held points equal its authorized holds",
        """SELECT 'account ' || a.id || ' holds ' || a.held || ' but its authorized holds '
                  || coalesce(h.total, 0)
             FROM account a
             LEFT JOIN (SELECT account_id, sum(points) AS total FROM hold
                         WHERE status = 'authorized' GROUP BY account_id) h
                    ON h.account_id = a.id
            WHERE a.kind = 'member' AND a.held <> coalesce(h.total, 0)""",
    ),
    Check(
        "lots_on_their_accounts",
        "each lot's program and member are its account's",
        """SELECT 'lot ' || l.id || ' says program ' || l.program_id || ' member '
                  || l.member_id || ' but its account ' || a.id || ' is of program '
                  || a.program_id || ' member ' || a.member_id
             FROM lot l JOIN account a ON a.id = l.account_id
            WHERE l.program_id <> a.program_id OR l.member_id IS DISTINCT FROM a.member_id""",
    ),
    Check(
        "lots_consistent",
        "each lot's consumed points plus its remainder equal its amount",
        """SELECT 'lot ' || l.id || ' amount ' || l.amount || ' but remaining ' || l.remaining
                  || ' + consumed ' || coalesce(c.total, 0)
             FROM lot l
             LEFT JOIN (SELECT lot_id, sum(points) AS total FROM lot_consumption GROUP BY lot_id) c
                    ON c.lot_id = l.id
            WHERE l.remaining + coalesce(c.total, 0) <> l.amount""",
    ),
    Check(
        "debits_consume_lots",
        "each transaction consumed from lots exactly the points it debited from member accounts",
        """SELECT 'transaction ' || d.transaction_id || ' debited ' || d.debited
                  || ' but consumed ' || coalesce(c.total, 0)
             FROM (SELECT transaction_id, -sum(amount) FILTER (WHERE amount < 0) AS debited
                     FROM posting WHERE balance_after IS NOT NULL GROUP BY transaction_id) d
             LEFT JOIN (SELECT transaction_id, sum(points) AS total
                          FROM lot_consumption GROUP BY transaction_id) c
                    ON c.transaction_id = d.transaction_id
            WHERE coalesce(d.debited, 0) <> coalesce(c.total, 0)""",
    ),
    Check(
        "debt_equals_clawback_postings",
        "each member account's clawback debt equals what the program's clawback account"
        " holds against that member",
        """SELECT 'account ' || a.id || ' debt ' || a.debt || ' but clawback postings say '
                  || coalesce(-c.total, 0)
             FROM account a
             LEFT JOIN (SELECT p.program_id, p.member_id, sum(p.amount) AS total
                          FROM posting p JOIN account s ON s.id = p.account_id
                         WHERE s.kind = 'clawback'
                         GROUP BY p.program_id, p.member_id) c
                    ON c.program_id = a.program_id AND c.member_id = a.member_id
            WHERE a.kind = 'member' AND a.debt <> coalesce(-c.total, 0)
            UNION ALL
           SELECT 'system account ' || id || ' carries a debt of ' || debt
             FROM account WHERE kind <> 'member' AND debt <> 0""",
    ),
    Check(
        "program_system_accounts",
        "every program has exactly one account of each system kind",
        """SELECT 'program ' || p.id || ' has ' || count(a.id) || ' system accounts'
             FROM program p
             LEFT JOIN account a ON a.program_id = p.id AND a.membership_id IS NULL
            GROUP BY p.id HAVING count(a.id) <> """
        + str(len(SYSTEM_ACCOUNT_KINDS)),
    ),
    Check(
        "tier_ladders_ordered",
        "each tier ladder version ranks its tiers 0, 1, 2… with thresholds rising strictly",
        """SELECT 'ladder ' || ladder_id || ' tier ' || code || ' rank ' || rank
                  || ' threshold ' || threshold
             FROM (SELECT t.ladder_id, t.code, t.rank, t.threshold,
                          row_number() OVER w - 1 AS position, lag(t.threshold) OVER w AS below
                     FROM tier t WINDOW w AS (PARTITION BY t.ladder_id ORDER BY t.rank)) r
            WHERE rank <> position OR threshold <= below""",
    ),
    Check(
        "tiers_of_own_program",
        "memberships hold and change tiers of their own program's ladder only",
        """SELECT 'membership ' || m.id || ' of program ' || m.program_id || ' refers to tier '
                  || t.id || ' of program ' || t.program_id
             FROM membership m
             JOIN (SELECT membership_id, tier_id FROM membership_tier
                   UNION ALL SELECT membership_id, from_tier_id FROM tier_change
                   UNION ALL SELECT membership_id, to_tier_id FROM tier_change) r
                  ON r.membership_id = m.id
             JOIN tier t ON t.id = r.tier_id
             JOIN tier_ladder l ON l.id = t.ladder_id
            WHERE t.program_id <> m.program_id OR l.program_id <> m.program_id
            UNION ALL
           SELECT 'membership ' || m.id || ' of program ' || m.program_id
                  || ' has its tier state under program ' || mt.program_id
             FROM membership_tier mt JOIN membership m ON m.id = mt.membership_id
            WHERE mt.program_id <> m.program_id""",
    ),
    Check(
        "tier_matches_history",
        "each membership holds the tier its tier history ends in (the entry tier without one)",
        # A tier carried onto a new ladder version keeps its code; a renamed entry tier is
        # still the entry tier.
        """SELECT 'membership ' || mt.membership_id || ' holds '
                  || coalesce(t.code, 'the entry tier') || ' but its history ends in '
                  || coalesce(h.code, 'nothing')
             FROM membership_tier mt
             LEFT JOIN tier t ON t.id = mt.tier_id
             LEFT JOIN LATERAL (SELECT e.code, e.rank FROM tier_change c
                                  JOIN tier e ON e.id = c.to_tier_id
                                 WHERE c.membership_id = mt.membership_id
                                 ORDER BY c.id DESC LIMIT 1) h ON true
            WHERE CASE WHEN h.code IS NULL THEN coalesce(t.rank, 0) <> 0
                       ELSE t.code <> h.code AND NOT (t.rank = 0 AND h.rank = 0) END""",
    ),
)
# Rewards: stock against redemptions, redemptions against their holds, coupons, gifts.
CHECKS += tuple(Check(*check) for check in REWARD_CHECKS)


IDENTITY_CHECKS: tuple[Check, ...] = (
    Check(
        "account_member_is_membership_member",
        "each member account's ledger member is its membership's member, unless a merge or an"
        " unlink moved the membership (the account keeps the member its postings carry)",
        """SELECT 'account ' || a.id || ' of member ' || a.member_id || ' but its membership '
                  || m.id || ' is of member ' || m.member_id || ', moved by no merge or unlink'
             FROM account a JOIN membership m ON m.id = a.membership_id
            WHERE a.member_id <> m.member_id
              AND NOT EXISTS (SELECT 1 FROM membership_unlink u WHERE u.membership_id = m.id)
              AND NOT EXISTS (SELECT 1 FROM member_merge g WHERE g.absorbed_id = a.member_id)""",
    ),
    Check(
        "postings_carry_their_ledger_member",
        "each member-account posting carries its account's ledger member",
        """SELECT 'posting ' || p.id || ' carries member ' || p.member_id || ' but account '
                  || a.id || ' is of member ' || a.member_id
             FROM posting p JOIN account a ON a.id = p.account_id
            WHERE p.balance_after IS NOT NULL AND p.member_id <> a.member_id""",
    ),
    Check(
        "merged_members_hold_nothing",
        "a member merged into another keeps no active membership, identifier or consent",
        """SELECT 'merged member ' || m.id || ' still has '
                  || CASE WHEN EXISTS (SELECT 1 FROM membership s WHERE s.member_id = m.id
                                          AND s.status = 'active') THEN 'an active membership'
                          WHEN EXISTS (SELECT 1 FROM member_identifier i
                                        WHERE i.member_id = m.id) THEN 'an identifier'
                          ELSE 'a consent' END
             FROM member m
            WHERE m.merged_into_id IS NOT NULL
              AND (EXISTS (SELECT 1 FROM membership s WHERE s.member_id = m.id
                              AND s.status = 'active')
                   OR EXISTS (SELECT 1 FROM member_identifier i WHERE i.member_id = m.id)
                   OR EXISTS (SELECT 1 FROM consent c WHERE c.member_id = m.id))""",
    ),
    Check(
        "merge_transactions_move_lots",
        "each merge transaction re-creates as lots exactly the points it consumed",
        """SELECT 'merge transaction ' || t.id || ' consumed ' || coalesce(c.total, 0)
                  || ' but created lots of ' || coalesce(l.total, 0)
             FROM ledger_transaction t
             LEFT JOIN (SELECT transaction_id, sum(points) AS total FROM lot_consumption
                         GROUP BY transaction_id) c ON c.transaction_id = t.id
             LEFT JOIN (SELECT transaction_id, sum(amount) AS total FROM lot
                         GROUP BY transaction_id) l ON l.transaction_id = t.id
            WHERE t.kind = 'merge' AND coalesce(c.total, 0) <> coalesce(l.total, 0)""",
    ),
    Check(
        "folded_accounts_are_empty",
        "an account a merge folded into another holds nothing, its membership is closed, and"
        " it points to an account of the same program that is not folded back into it",
        """SELECT 'account ' || a.id || ' folded into ' || a.folded_into_id || ' but '
                  || CASE WHEN a.balance <> 0 OR a.held <> 0 OR a.debt <> 0
                          THEN 'holds ' || a.balance || ' points, ' || a.held || ' held, '
                               || a.debt || ' debt'
                          WHEN m.status <> 'closed' THEN 'its membership is ' || m.status
                          WHEN t.program_id <> a.program_id THEN 'that is of another program'
                          ELSE 'the chain of folds comes back to it' END
             FROM account a
             JOIN membership m ON m.id = a.membership_id
             JOIN account t ON t.id = a.folded_into_id
            WHERE a.balance <> 0 OR a.held <> 0 OR a.debt <> 0 OR m.status <> 'closed'
               OR t.program_id <> a.program_id
               OR a.id IN (WITH RECURSIVE chain (id, step) AS (
                              SELECT a.folded_into_id, 1
                              UNION ALL
                              SELECT f.folded_into_id, c.step + 1 FROM chain c
                                JOIN account f ON f.id = c.id
                               WHERE f.folded_into_id IS NOT NULL AND c.step < 64)
                           SELECT id FROM chain)""",
    ),
    Check(
        "erased_members_pseudonymised",
        "an erased member has no name, no identifier and no member number of its own",
        """SELECT 'erased member ' || m.id || ' still has personal data'
             FROM member m
            WHERE m.erased_at IS NOT NULL
              AND (m.display_name IS NOT NULL
                   OR EXISTS (SELECT 1 FROM member_identifier i WHERE i.member_id = m.id)
                   OR EXISTS (SELECT 1 FROM membership s WHERE s.member_id = m.id
                                 AND s.member_number <> 'erased-' || s.id))""",
    ),
)
CHECKS = CHECKS + IDENTITY_CHECKS


async def verify_ledger(db: Database, *, limit: int = 20) -> list[Violation]:
    """Every check, the settlement's too, on one snapshot."""
    from alliance.adjustments.verify import ADJUSTMENT_CHECKS
    from alliance.audit.verify import AUDIT_CHECKS
    from alliance.settlement.reconcile import SETTLEMENT_CHECKS

    checks = CHECKS + SETTLEMENT_CHECKS + AUDIT_CHECKS + ADJUSTMENT_CHECKS
    return await run_checks(db, checks, limit=limit)


async def run_checks(
    db: Database, checks: tuple[Check, ...], *, limit: int = 20
) -> list[Violation]:
    """The checks on one snapshot, without the request timeout (ledgers can be large)."""
    violations: list[Violation] = []
    async with db.engine.connect() as conn, conn.begin():
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        await conn.execute(text("SET LOCAL statement_timeout = 0"))
        await conn.execute(text("SET LOCAL work_mem = '256MB'"))
        for check in checks:
            # MATERIALIZED: plan the check for all rows. A bare LIMIT would make the
            # planner bet on nested loops that find a few violations fast, and lose
            # badly (minutes) on a large ledger that has none.
            sql = f"WITH found AS MATERIALIZED ({check.sql}) SELECT * FROM found LIMIT {int(limit)}"
            rows = await conn.execute(text(sql))
            violations.extend(Violation(check.name, check.description, row[0]) for row in rows)
    return violations
