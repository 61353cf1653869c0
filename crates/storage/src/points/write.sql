-- The batch's one write (see batch.rs): each table's rows as parallel arrays, bound in the
-- order of the fields of their row types (rows.rs and the entities).
WITH v_acc AS (
  SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[],
    $7::int8[], $8::int8[], $9::int8[], $10::int8[])
    AS v(key, read_version, available, frozen, total_earned, total_spent, total_expired,
      total_refunded, earned_updated_at, updated_at)
), acc AS (
  UPDATE points_accounts a SET available = v.available, frozen = v.frozen,
    total_earned = v.total_earned, total_spent = v.total_spent,
    total_expired = v.total_expired, total_refunded = v.total_refunded,
    earned_updated_at = v.earned_updated_at, version = v.read_version + 1,
    updated_at = v.updated_at
  FROM v_acc v
  WHERE a.id = ANY($1::uuid[]) AND a.id = v.key AND a.version = v.read_version
  RETURNING a.id
), lot_upd AS (
  -- Only lots of accounts still at the version read: a plan on a replaced version may have
  -- read a lot after another write changed it (planning reads come after the batch's read),
  -- and must fail on the version check below, not on the lot's CHECK.
  UPDATE points_lots l SET remaining = v.remaining, frozen = v.frozen
  FROM unnest($11::uuid[], $12::int8[], $13::int8[]) AS v(key, remaining, frozen)
  WHERE l.id = ANY($11::uuid[]) AND l.id = v.key AND l.account_id IN (SELECT id FROM acc)
  RETURNING l.id
), lot_ins AS (
  INSERT INTO points_lots (id, tenant_id, account_id, earn_transaction_id, amount, remaining,
    frozen, expires_at, created_at)
  SELECT * FROM unnest($14::uuid[], $15::text[], $16::uuid[], $17::uuid[], $18::int8[],
    $19::int8[], $20::int8[], $21::int8[], $22::int8[])
), ent AS (
  INSERT INTO points_transactions (id, tenant_id, account_id, member_id, tx_type, amount,
    frozen_amount, available_after, frozen_after, biz_type, biz_id, request_id, hold_id,
    related_transaction_id, description, expires_at, account_version, position, created_at,
    actor)
  SELECT * FROM unnest($23::uuid[], $24::text[], $25::uuid[], $26::text[], $27::int2[],
    $28::int8[], $29::int8[], $30::int8[], $31::int8[], $32::text[], $33::text[], $34::text[],
    $35::uuid[], $36::uuid[], $37::text[], $38::int8[], $39::int8[], $40::int4[], $41::int8[],
    $42::text[])
), alloc AS (
  INSERT INTO points_allocations (id, tenant_id, lot_id, transaction_id, hold_id, amount)
  SELECT * FROM unnest($43::uuid[], $44::text[], $45::uuid[], $46::uuid[], $47::uuid[],
    $48::int8[])
), hold AS (
  INSERT INTO points_holds (id, tenant_id, account_id, member_id, order_id, status, amount,
    confirmed_amount, expires_at, created_at, updated_at)
  SELECT * FROM unnest($49::uuid[], $50::text[], $51::uuid[], $52::text[], $53::text[],
    $54::int2[], $55::int8[], $56::int8[], $57::int8[], $58::int8[], $59::int8[])
  ON CONFLICT (id) DO UPDATE SET status = excluded.status,
    confirmed_amount = excluded.confirmed_amount, updated_at = excluded.updated_at
    WHERE points_holds.account_id IN (SELECT id FROM acc)
), daily AS (
  INSERT INTO points_daily_earnings (tenant_id, member_id, event_type, day, earned)
  SELECT * FROM unnest($60::text[], $61::text[], $62::text[], $63::int4[], $64::int8[])
  ON CONFLICT (tenant_id, member_id, event_type, day)
    DO UPDATE SET earned = points_daily_earnings.earned + excluded.earned
), rec AS (
  INSERT INTO idempotency_records (tenant_id, request_id, operation, fingerprint, status_code,
    response, created_at, client)
  SELECT * FROM unnest($65::text[], $66::text[], $67::text[], $68::bytea[], $69::int4[],
    $70::bytea[], $71::int8[], $72::text[])
)
SELECT points_batch_written((SELECT count(*) FROM acc), cardinality($1::uuid[]),
  (SELECT count(*) FROM lot_upd), cardinality($11::uuid[]));
