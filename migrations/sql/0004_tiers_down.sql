-- Undo migrations/sql/0004_tiers.sql (the tables, and their triggers, go after this).
DROP FUNCTION tier_review(timestamptz, bigint, integer, bigint[]);
DROP FUNCTION tier_record_activity(bigint, bigint, timestamptz, numeric, bigint);
DROP FUNCTION tier_settle(bigint, timestamptz, boolean);
DROP FUNCTION tier_standing(bigint, timestamptz);
DROP FUNCTION tier_qualifying_total(bigint, text, integer, timestamptz);
DROP FUNCTION tier_reached(bigint, numeric);
DROP FUNCTION tier_held(bigint, bigint);
DROP FUNCTION tier_current_ladder(bigint);
