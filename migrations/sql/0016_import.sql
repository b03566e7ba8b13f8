-- The references of postings and lots, checked once per statement (migration 0016).
--
-- Foreign keys check row by row: an import of 200,000 opening balances ran 1,200,000
-- checks (each posting's and each lot's transaction and account), an SPI query and a
-- row lock apiece, about 40 % of the import's time. The same property is checked
-- here once per statement, over the statement's new rows: few rows (a movement) by
-- one index probe each, with a plan cached once; many (an import, an expiry batch)
-- by a query planned for their number, so a hash join reads each parent once
-- instead of probing it per row. Like the foreign keys, the check runs at the end
-- of the statement and sees the rows it inserted; unlike them it does not wait for
-- a parent another transaction has not committed yet (it fails instead), and no
-- writer names such a row.
--
-- What the foreign keys also guarded, the parent rows going away, stays guarded:
-- ledger transactions are append-only (0001), an account is never deleted nor
-- renumbered, and a lot never changes its account or transaction (triggers below).
-- `alliance verify` checks the references too (ledger_references_exist).

-- All postings of a transaction are inserted by one statement, so checking the
-- statement's new rows checks whole transactions: per program they sum to zero.
-- And each names an existing transaction and account (no foreign keys: see above).
CREATE OR REPLACE FUNCTION posting_check_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_bad record;
BEGIN
    SELECT transaction_id, program_id, sum(amount) AS total INTO v_bad
      FROM new_postings
     GROUP BY transaction_id, program_id
    HAVING sum(amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unbalanced postings: transaction % program % sums to %',
            v_bad.transaction_id, v_bad.program_id, v_bad.total
            USING ERRCODE = 'LA500';
    END IF;
    IF (SELECT count(*) FROM new_postings) <= 64 THEN
        SELECT min(p.transaction_id) FILTER (WHERE t.id IS NULL) AS transaction_id,
               min(p.account_id) FILTER (WHERE a.id IS NULL) AS account_id
          INTO v_bad
          FROM new_postings p
          -- LIMIT: a nested loop of index probes, whatever the first call's row count.
          LEFT JOIN LATERAL (SELECT t.id FROM ledger_transaction t
                              WHERE t.id = p.transaction_id LIMIT 1) t ON true
          LEFT JOIN LATERAL (SELECT a.id FROM account a
                              WHERE a.id = p.account_id LIMIT 1) a ON true;
    ELSE
        -- Planned for this statement's row count (a plan cached by a small
        -- statement would probe per row, one cached by a large one would read
        -- every parent row for a movement of two postings).
        EXECUTE 'SELECT (SELECT min(r.transaction_id) FROM new_postings r
                          WHERE NOT EXISTS (SELECT FROM ledger_transaction t
                                             WHERE t.id = r.transaction_id)) AS transaction_id,
                        (SELECT min(r.account_id) FROM new_postings r
                          WHERE NOT EXISTS (SELECT FROM account a
                                             WHERE a.id = r.account_id)) AS account_id'
            INTO v_bad;
    END IF;
    IF v_bad.transaction_id IS NOT NULL THEN
        RAISE EXCEPTION 'posting names ledger transaction %, which does not exist',
            v_bad.transaction_id
            USING ERRCODE = 'foreign_key_violation';
    ELSIF v_bad.account_id IS NOT NULL THEN
        RAISE EXCEPTION 'posting names account %, which does not exist', v_bad.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION lot_check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_bad record;
BEGIN
    IF (SELECT count(*) FROM new_lots) <= 64 THEN
        SELECT min(l.transaction_id) FILTER (WHERE t.id IS NULL) AS transaction_id,
               min(l.account_id) FILTER (WHERE a.id IS NULL) AS account_id
          INTO v_bad
          FROM new_lots l
          LEFT JOIN LATERAL (SELECT t.id FROM ledger_transaction t
                              WHERE t.id = l.transaction_id LIMIT 1) t ON true
          LEFT JOIN LATERAL (SELECT a.id FROM account a
                              WHERE a.id = l.account_id LIMIT 1) a ON true;
    ELSE
        -- As for postings.
        EXECUTE 'SELECT (SELECT min(r.transaction_id) FROM new_lots r
                          WHERE NOT EXISTS (SELECT FROM ledger_transaction t
                                             WHERE t.id = r.transaction_id)) AS transaction_id,
                        (SELECT min(r.account_id) FROM new_lots r
                          WHERE NOT EXISTS (SELECT FROM account a
                                             WHERE a.id = r.account_id)) AS account_id'
            INTO v_bad;
    END IF;
    IF v_bad.transaction_id IS NOT NULL THEN
        RAISE EXCEPTION 'lot names ledger transaction %, which does not exist',
            v_bad.transaction_id
            USING ERRCODE = 'foreign_key_violation';
    ELSIF v_bad.account_id IS NOT NULL THEN
        RAISE EXCEPTION 'lot names account %, which does not exist', v_bad.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER lot_references AFTER INSERT ON lot
    REFERENCING NEW TABLE AS new_lots
    FOR EACH STATEMENT EXECUTE FUNCTION lot_check_references();

-- What postings and lots name stays: no account is deleted or renumbered, no lot
-- moves to another account or transaction. (AFTER triggers: a BEFORE UPDATE trigger
-- would lock every account row each movement updates, whatever the columns.)
CREATE FUNCTION ledger_reject_reference_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% of % % refused: a reference of the ledger would change',
        TG_OP, TG_TABLE_NAME, OLD.id
        USING ERRCODE = 'LA500';
END $$;

CREATE TRIGGER account_keeps_its_key AFTER UPDATE OF id OR DELETE ON account
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_reference_change();
CREATE TRIGGER lot_keeps_its_references AFTER UPDATE OF account_id, transaction_id ON lot
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_reference_change();
