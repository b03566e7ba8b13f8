-- Undo migrations/sql/0005_earning.sql.
DROP FUNCTION ledger_reverse(bigint, text, bytea, text, text, text, numeric, text);
DROP FUNCTION ledger_referral(text, text, bytea, text, bigint, bigint, bigint, text, text, timestamptz, jsonb, jsonb, jsonb);
DROP FUNCTION ledger_earn(text, text, bytea, text, bigint, bigint, bigint, text, text, timestamptz, jsonb, jsonb, text, text, numeric, bigint);
