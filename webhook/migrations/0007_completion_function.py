"""PostgreSQL: answer the common batch completions in one call (``webhook_complete_batch``).

A first completion took five round trips on PostgreSQL (a known-completion
insert that inserted nothing, then BEGIN with the manifest's lock, the
completion, the delivery's row, COMMIT), each statement planned afresh:
about 1 ms of server time per delivery against 0.25 ms for one insert. This
function does the same statements in one call, in a transaction of its own,
and PL/pgSQL keeps their plans for the connection's life (which transaction
pooling in PgBouncer does not break, unlike prepared statements).

It answers two cases, and only those:

- the batch is complete, the customer's, and its manifest needs no rebuild:
  the delivery is recorded ``duplicate`` by the one ``INSERT ... SELECT`` the
  Python path uses on SQLite (``Delivery.record_known_completion``), one
  snapshot (why that stays exactly once: ``Intake._known_completion``);
- the batch is ingesting: the manifest's row is locked, then (each statement
  of a VOLATILE function takes a new snapshot, so after the lock is granted
  they see every completion committed before) the manifest's batches still
  ingesting are counted and, when this one is among them but not the last,
  the delivery is recorded ``batch-completed`` and the batch completed; the
  lock order is the locked path's (manifest row, then the delivery's unique
  key).

Anything else (no such batch, another customer's, a manifest needing a
rebuild, the last batch, an id recorded already, a batch completed or moved
while it waited for the lock) returns a NULL outcome having written nothing,
and the caller takes the locked path in Python. (Should the batch change
under the lock after the delivery's row went in, SQLSTATE ``WH001`` undoes
the call.) SQLite has no such function and always takes the Python path.
"""
from peewee import PostgresqlDatabase

# p_customer is bigint although the column is integer: a notification may name any
# customer up to 2**63 - 1 (the schema's bound), and one no batch has must find no
# row, not fail to convert.
FUNCTION = """
CREATE OR REPLACE FUNCTION webhook_complete_batch(
    p_delivery_id varchar, p_transport varchar, p_received timestamp, p_body bytea,
    p_batch bigint, p_customer bigint, p_count integer, p_completed integer,
    p_errors integer, p_superseded boolean, p_submitted timestamp, p_finished timestamp,
    OUT outcome varchar, OUT manifest_id integer, OUT manifest_customer integer,
    OUT manifest_key varchar)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_status varchar;
    v_this bigint;
    v_left bigint;
BEGIN
    -- Every "RETURN" before the end leaves outcome NULL: not answered, nothing written.
    SELECT b.status, b.manifest_id INTO v_status, manifest_id
    FROM batch AS b WHERE b.id = p_batch AND b.customer = p_customer;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF v_status = 'completed' THEN
        INSERT INTO delivery (delivery_id, transport, received_at, updated_at, batch, manifest,
                              outcome, error, attempts, body, failed_assets)
        SELECT p_delivery_id, p_transport, p_received, p_received, b.id,
               CAST(m.customer AS text) || '/' || m.slug, 'duplicate', NULL, 1, p_body,
               NULLIF(p_errors, 0)
        FROM batch AS b JOIN manifest AS m ON m.id = b.manifest_id
        WHERE b.id = p_batch AND b.customer = p_customer AND b.status = 'completed'
          AND NOT m.needs_rebuild
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING delivery.manifest INTO manifest_key;
        IF FOUND THEN
            outcome := 'duplicate';
        END IF;
        RETURN;
    ELSIF v_status <> 'ingesting' THEN
        RETURN;
    END IF;

    SELECT m.customer, CAST(m.customer AS text) || '/' || m.slug
    INTO manifest_customer, manifest_key
    FROM manifest AS m WHERE m.id = manifest_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Holding the lock, in a snapshot taken after it was granted: is this batch
    -- still ingesting here, and is it not the last?
    SELECT count(*) FILTER (WHERE b.id = p_batch AND b.customer = p_customer), count(*)
    INTO v_this, v_left
    FROM batch AS b
    WHERE b.manifest_id = webhook_complete_batch.manifest_id AND b.status = 'ingesting';
    IF v_this = 0 OR v_left < 2 THEN
        RETURN;   -- the last batch (whose completion claims the rebuild), or moved
    END IF;
    -- The delivery's row first: when its id is recorded already, nothing is written.
    INSERT INTO delivery (delivery_id, transport, received_at, updated_at, batch, manifest,
                          outcome, error, attempts, body, failed_assets)
    VALUES (p_delivery_id, p_transport, p_received, p_received, p_batch, manifest_key,
            'batch-completed', NULL, 1, p_body, NULLIF(p_errors, 0))
    ON CONFLICT (delivery_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE batch SET status = 'completed', count = p_count, completed = p_completed,
                     errors = p_errors, superseded = p_superseded, submitted = p_submitted,
                     finished = p_finished, processed = p_received
    WHERE id = p_batch AND status = 'ingesting';
    IF NOT FOUND THEN
        -- Cannot happen while the manifest's lock is held; if it did, undo the insert.
        RAISE EXCEPTION 'a batch changed under its manifest''s lock' USING ERRCODE = 'WH001';
    END IF;
    outcome := 'batch-completed';
END
$$
"""

SIGNATURE = ("webhook_complete_batch(varchar, varchar, timestamp, bytea, bigint, bigint, "
             "integer, integer, integer, boolean, timestamp, timestamp)")


def up(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        db.execute_sql(FUNCTION)


def down(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        db.execute_sql(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
