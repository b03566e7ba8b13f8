"""Invariants of rewards, checked by `alliance verify` (alliance/ledger/verify.py).

Each is (name, description, SQL returning one line per offending row)."""

from __future__ import annotations

REWARD_CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "reward_stock_consistent",
        "each stock slot's `redeemed` is the standing redemptions that took their unit from it;"
        " a finite reward's units left plus its standing redemptions are its stock issued",
        """SELECT 'reward ' || s.reward_id || ' slot ' || s.slot || ' counts ' || s.redeemed
                  || ' redeemed but ' || coalesce(c.standing, 0) || ' standing redemptions'
                  || ' took their unit there'
                  || CASE WHEN (s.stock IS NULL) <> (r.stock_issued IS NULL)
                          THEN ' (and its stock is ' || coalesce(s.stock::text, 'unlimited')
                               || ' against ' || coalesce(r.stock_issued::text, 'unlimited')
                               || ' issued)' ELSE '' END
             FROM reward_stock_slot s JOIN reward r ON r.id = s.reward_id
             LEFT JOIN (SELECT reward_id, stock_slot, count(*) AS standing FROM redemption
                         WHERE status IN ('reserved', 'fulfilled', 'completed')
                         GROUP BY reward_id, stock_slot) c
                    ON c.reward_id = s.reward_id AND c.stock_slot = s.slot
            WHERE s.redeemed <> coalesce(c.standing, 0)
               OR (s.stock IS NULL) <> (r.stock_issued IS NULL)
            UNION ALL
           SELECT 'reward ' || r.id || ' issued ' || r.stock_issued || ' but has '
                  || coalesce(k.left_, 0) || ' left and ' || coalesce(c.standing, 0)
                  || ' standing redemptions'
             FROM reward r
             LEFT JOIN (SELECT reward_id, sum(stock) AS left_ FROM reward_stock_slot
                         GROUP BY reward_id) k ON k.reward_id = r.id
             LEFT JOIN (SELECT reward_id, count(*) AS standing FROM redemption
                         WHERE status IN ('reserved', 'fulfilled', 'completed')
                         GROUP BY reward_id) c ON c.reward_id = r.id
            WHERE r.stock_issued IS NOT NULL
              AND coalesce(k.left_, 0) + coalesce(c.standing, 0) <> r.stock_issued
            UNION ALL
           SELECT 'redemption ' || d.id || ' took its unit from slot ' || d.stock_slot
                  || ', which reward ' || d.reward_id || ' does not have'
             FROM redemption d LEFT JOIN reward_stock_slot s
                  ON s.reward_id = d.reward_id AND s.slot = d.stock_slot
            WHERE s.slot IS NULL""",
    ),
    (
        "redemptions_match_holds",
        "an open redemption (reserved, fulfilled) has its reward hold authorized for its"
        " points, a completed one captured in full by its transaction, a cancelled or"
        " expired one released",
        """SELECT 'redemption ' || r.id || ' is ' || r.status || ' but hold ' || h.id || ' is '
                  || h.status || ' (' || h.kind || ', ' || h.points || ' points)'
             FROM redemption r JOIN hold h ON h.id = r.hold_id
            WHERE h.kind <> 'reward' OR h.account_id <> r.account_id OR h.points <> r.points
               OR CASE r.status
                    WHEN 'reserved' THEN h.status <> 'authorized'
                    WHEN 'fulfilled' THEN h.status <> 'authorized'
                    WHEN 'completed' THEN h.status <> 'captured' OR h.captured <> r.points
                                          OR h.transaction_id IS DISTINCT FROM r.transaction_id
                    ELSE h.status NOT IN ('voided', 'expired') END
            UNION ALL
           SELECT 'reward hold ' || h.id || ' has no redemption'
             FROM hold h LEFT JOIN redemption r ON r.hold_id = h.id
            WHERE h.kind = 'reward' AND r.id IS NULL""",
    ),
    (
        "redemptions_of_their_reward",
        "each redemption's reward is its version's; its membership and account are of its"
        " paying program: the reward's own, or another merchant's",
        """SELECT 'redemption ' || r.id || ' names reward ' || r.reward_id || ' program '
                  || r.program_id || ' paid from program ' || r.paid_program_id
                  || ' but its version is of reward ' || v.reward_id
                  || ', its membership of program ' || m.program_id
                  || ' and its account of program ' || a.program_id
             FROM redemption r
             JOIN reward_version v ON v.id = r.reward_version_id
             JOIN reward w ON w.id = v.reward_id
             JOIN membership m ON m.id = r.membership_id
             JOIN account a ON a.id = r.account_id
             LEFT JOIN program rp ON rp.id = r.program_id
             LEFT JOIN program pp ON pp.id = r.paid_program_id
            WHERE v.reward_id <> r.reward_id OR w.program_id <> r.program_id
               OR m.program_id <> r.paid_program_id OR a.membership_id <> r.membership_id
               OR (r.paid_program_id <> r.program_id AND rp.merchant_id = pp.merchant_id)""",
    ),
    (
        "redemptions_spent_as_paid",
        "a completed redemption's points are spent by a 'spend' of its own program's points,"
        " or a 'partner_redemption' at the reward's merchant when paid with a partner's",
        """SELECT 'redemption ' || r.id || ' (reward program ' || r.program_id
                  || ', paid from program ' || r.paid_program_id || ') was spent by a '
                  || t.kind || ' naming merchant '
                  || coalesce(t.details->>'partner_merchant_id', 'none')
             FROM redemption r
             JOIN ledger_transaction t ON t.id = r.transaction_id
             JOIN program rp ON rp.id = r.program_id
            WHERE CASE WHEN r.paid_program_id = r.program_id
                       THEN t.kind <> 'spend' OR t.details ? 'partner_merchant_id'
                       ELSE t.kind <> 'partner_redemption'
                            OR (t.details->>'partner_merchant_id')::bigint
                               IS DISTINCT FROM rp.merchant_id END""",
    ),
    (
        "coupons_follow_redemptions",
        "an issued coupon's redemption is fulfilled or completed, a void one's cancelled or"
        " expired; coupons belong to coupon fulfilments",
        """SELECT 'coupon ' || c.id || ' is ' || c.status || ' but its redemption ' || r.id
                  || ' is ' || r.status || ' (' || coalesce(r.fulfilment, 'unfulfilled') || ')'
             FROM coupon c JOIN redemption r ON r.id = c.redemption_id
            WHERE r.fulfilment IS DISTINCT FROM 'coupon' OR c.program_id <> r.program_id
               OR (c.status = 'issued' AND r.status NOT IN ('fulfilled', 'completed'))
               OR (c.status = 'void' AND r.status NOT IN ('cancelled', 'expired'))
               OR (c.status = 'used' AND r.status <> 'completed')""",
    ),
    (
        "gifts_are_ledgered",
        "each gift is a balanced transfer of its points from the sender's account to the"
        " recipient's, in its own gift transaction",
        """SELECT 'gift ' || g.id || ' of ' || g.points || ' points but its transaction moved '
                  || coalesce(s.sent, 0) || ' from the sender and '
                  || coalesce(s.received, 0) || ' to the recipient'
             FROM gift g
             JOIN ledger_transaction t ON t.id = g.transaction_id
             LEFT JOIN LATERAL (
                 SELECT -sum(p.amount) FILTER (WHERE a.membership_id = g.from_membership_id)
                            AS sent,
                        sum(p.amount) FILTER (WHERE a.membership_id = g.to_membership_id
                                                AND p.amount > 0) AS received
                   FROM posting p JOIN account a ON a.id = p.account_id
                  WHERE p.transaction_id = g.transaction_id) s ON true
            WHERE t.kind <> 'gift' OR s.sent IS DISTINCT FROM g.points
               OR s.received IS DISTINCT FROM g.points""",
    ),
)
