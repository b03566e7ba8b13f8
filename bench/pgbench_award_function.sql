-- (a) The earn transaction as the app sends it (alliance/ledger/service.py): one call of
-- ledger_award(...) on an autocommit connection (the call is the transaction), every
-- argument a bound parameter, p_member_id NULL as for a merchant client. Named notation,
-- so a change of the function's parameters fails loudly instead of shifting arguments.
-- Variables from bench/run.py (-D): members, membership_base, merchant_base, per_merchant,
-- scope, client, hash, reason, tz. Merchant k's memberships are one contiguous id block.
\set i random(0, :members - 1)
\set membership :membership_base + :i
\set merchant :merchant_base + :i / :per_merchant
\set points random(1, 500)
\set key random(1, 4000000000000000000)
SELECT * FROM ledger_award(p_scope => :scope, p_key => :key::text, p_request_hash => :hash::bytea, p_client_id => :client, p_merchant_id => :merchant::bigint, p_member_id => NULL::bigint, p_membership_id => :membership::bigint, p_points => :points::bigint, p_reason => :reason, p_time_zone => :tz);
