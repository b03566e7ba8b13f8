-- The audit trail's hash chain, and manual adjustments through the ledger (migration 0010).
--
-- Audit records form one hash chain per UTC day: each record stores the hash of the
-- day's previous record and its own hash, sha256(previous hash || canonical content).
-- The trigger below computes both in the database, so no client can write a record
-- outside the chain. UPDATE and DELETE are refused by audit_record_append_only (0001);
-- a superuser who bypasses triggers (session_replication_role = replica) and edits,
-- removes or inserts a record breaks the chain, and `alliance verify` says where.
--
-- The chain is serialised per day by the day's row in audit_chain_head: the record's
-- trigger takes its lock (held to commit) and the next record waits for it. Only
-- audited acts (onboarding, rule and policy changes, adjustments, settlement steps …)
-- take that lock; the points movements (award, earn, spend, exchange) write no audit
-- record (the ledger transaction is their record), so the hot path never meets it.

-- What a record said (its before and after documents), as a digest fixed at insert. The
-- chain covers the digest, not the documents themselves: erasure (0008) may redact the
-- documents of a record, which then carries `redacted_at`, and the chain still holds;
-- verify compares the documents of every record not redacted with its digest.
CREATE FUNCTION audit_content_digest(p_before jsonb, p_after jsonb) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(jsonb_build_array(p_before, p_after)::text, 'UTF8'))
$$;

-- The canonical content of a record: a JSON array of its fields (jsonb's text form is
-- canonical: object keys sorted, no insignificant whitespace), times in UTC.
CREATE FUNCTION audit_record_hash(p_record audit_record) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT sha256(p_record.previous_hash || convert_to(jsonb_build_array(
        p_record.id, p_record.chain_day, p_record.chain_seq, p_record.actor,
        p_record.client_id, p_record.role, p_record.merchant_id, p_record.action,
        p_record.target, encode(p_record.content_digest, 'hex'), p_record.request_id,
        to_char(p_record.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
    )::text, 'UTF8'))
$$;

-- Erasure's one sanctioned change of a record (0008), narrowed for the chain: only the
-- documents may change, and the record must say it was redacted.
CREATE OR REPLACE FUNCTION audit_record_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_setting('alliance.erasure', true) = 'on'
       AND NEW.redacted_at IS NOT NULL
       AND (NEW.id, NEW.actor, NEW.role, NEW.action, NEW.target, NEW.created_at, NEW.chain_day,
            NEW.chain_seq, NEW.previous_hash, NEW.hash, NEW.content_digest)
           = (OLD.id, OLD.actor, OLD.role, OLD.action, OLD.target, OLD.created_at, OLD.chain_day,
              OLD.chain_seq, OLD.previous_hash, OLD.hash, OLD.content_digest)
       AND NEW.client_id IS NOT DISTINCT FROM OLD.client_id
       AND NEW.request_id IS NOT DISTINCT FROM OLD.request_id
       AND NEW.merchant_id IS NOT DISTINCT FROM OLD.merchant_id THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'LA500';
END $$;

CREATE FUNCTION audit_record_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_head record;
BEGIN
    -- The record's time is its transaction's: no client writes into a past day's chain.
    NEW.created_at := now();
    NEW.chain_day := (NEW.created_at AT TIME ZONE 'UTC')::date;
    -- One statement takes the day's head row lock (held to commit), numbers the record
    -- and returns the previous record's hash (unchanged by this statement).
    INSERT INTO audit_chain_head AS h (chain_day, seq, hash)
    VALUES (NEW.chain_day, 1, '\x0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT (chain_day) DO UPDATE SET seq = h.seq + 1
    RETURNING h.seq, h.hash INTO v_head;
    NEW.chain_seq := v_head.seq;
    NEW.previous_hash := v_head.hash;
    NEW.content_digest := audit_content_digest(NEW.before, NEW.after);
    NEW.redacted_at := NULL;
    NEW.hash := audit_record_hash(NEW);
    UPDATE audit_chain_head SET hash = NEW.hash WHERE chain_day = NEW.chain_day;
    RETURN NEW;
END $$;

CREATE TRIGGER audit_record_chain BEFORE INSERT ON audit_record
    FOR EACH ROW EXECUTE FUNCTION audit_record_chain();

-- A manual adjustment of a member account by merchant staff: +points (credit) or
-- -points (debit) against the program's `adjustment` account, in one transaction with
-- its idempotency claim and an outbox event. A credit repays clawback debt first and
-- makes a lot available at once, expiring by the program's policy; a debit takes
-- spendable points, lots soonest-expiring first (LA402 when they do not cover it).
-- Scoped to one merchant's programs like ledger_award.
CREATE FUNCTION ledger_adjust(
    p_scope text, p_key text, p_request_hash bytea, p_client_id text,
    p_merchant_id bigint, p_membership_id bigint, p_points bigint, p_reason text,
    p_time_zone text, p_details jsonb)
RETURNS TABLE (transaction_id bigint, entry_id bigint, program_id bigint, balance_after bigint,
               created_at timestamptz, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_tx bigint;
    v_entry bigint;
    v_balance bigint;
    c record;
BEGIN
    SELECT * INTO v FROM ledger_member_account(p_membership_id, p_merchant_id, NULL, 'adjustment');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    IF p_points = 0 THEN
        RAISE EXCEPTION 'an adjustment moves at least one point' USING ERRCODE = 'LA422';
    END IF;
    v_tx := ledger_claim('adjustment', p_scope, p_key, p_request_hash, p_client_id, v.member_id,
                         p_reason, p_details);
    IF v_tx IS NULL THEN
        RETURN QUERY SELECT * FROM ledger_replay(p_scope, p_key, p_request_hash);
        RETURN;
    END IF;
    IF NOT v.active THEN
        RAISE EXCEPTION 'program or membership is not active' USING ERRCODE = 'LA423';
    END IF;

    IF p_points > 0 THEN
        SELECT * INTO c FROM ledger_credit(
            v_tx, v.account_id, v.system_account_id, v.program_id, v.member_id, p_points, now(),
            lot_expiry(v.expiry_policy, v.expiry_value, now(), p_time_zone));
        v_entry := c.entry_id;
        v_balance := c.balance_after;
    ELSE
        v_balance := ledger_debit(v_tx, v.account_id, -p_points);
        v_entry := ledger_post(v_tx, v.account_id, v.system_account_id, v.program_id,
                               v.member_id, p_points, v_balance);
    END IF;

    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.adjusted', v.merchant_id, v.member_id,
            jsonb_build_object('transaction_id', v_tx, 'membership_id', p_membership_id,
                               'program_id', v.program_id, 'points', p_points,
                               'balance_after', v_balance));

    RETURN QUERY SELECT v_tx, v_entry, v.program_id, v_balance, now(), false;
END $$;
