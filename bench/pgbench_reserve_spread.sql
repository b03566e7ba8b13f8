-- (r_spread) As (r_sql), but each reservation takes a unit of one of 32 rewards picked at
-- random: the same database work without one shared stock row, to measure what the hot
-- row costs. By a random funded membership of merchant 1 (every 5th seeded membership has
-- an opening balance; see bulk_members).
\set j random(1, :per_merchant / 5)
\set membership :membership_base + 5 * :j - 1
\set key random(1, 4000000000000000000)
\set pick random(:spread_first, :spread_last)
SELECT (x.r).id FROM reward_reserve(p_scope => :scope, p_key => :key::text, p_request_hash => :hash::bytea, p_merchant_id => :merchant_base::bigint, p_member_id => NULL::bigint, p_membership_id => :membership::bigint, p_reward_id => :pick::bigint, p_time_zone => :tz) x;
