-- (r_sql) A reservation as the app sends it (alliance/rewards/redemptions.py): one call of
-- reward_reserve(...) on an autocommit connection, always the same reward (merchant 1's hot
-- reward: one stock row every transaction updates), by a random funded membership of
-- merchant 1 (every 5th seeded membership has an opening balance; see bulk_members).
-- Compare with (a): the same database work without a shared row.
\set j random(1, :per_merchant / 5)
\set membership :membership_base + 5 * :j - 1
\set key random(1, 4000000000000000000)
SELECT (x.r).id FROM reward_reserve(p_scope => :scope, p_key => :key::text, p_request_hash => :hash::bytea, p_merchant_id => :merchant_base::bigint, p_member_id => NULL::bigint, p_membership_id => :membership::bigint, p_reward_id => :reward::bigint, p_time_zone => :tz) x;
