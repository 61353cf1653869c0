-- The batch's one write (see batch.rs): each table's rows as parallel arrays. A template:
-- `{arrays:G}` is group G's arrays (`$n::type[]`, numbered in bind order), `{columns:G}` its
-- column names and `{G.column}` one of its arrays; the columns are the entities' (and
-- rows.rs's update rows'), so no column is named here unless the statement treats it apart.
WITH v_acc AS (
  SELECT * FROM unnest({arrays:accounts}) AS v({columns:accounts})
), acc AS (
  UPDATE points_accounts a SET available = v.available, frozen = v.frozen,
    total_earned = v.total_earned, total_spent = v.total_spent,
    total_expired = v.total_expired, total_refunded = v.total_refunded,
    earned_updated_at = v.earned_updated_at, version = v.read_version + 1,
    updated_at = v.updated_at
  FROM v_acc v
  WHERE a.id = ANY({accounts.key}) AND a.id = v.key AND a.version = v.read_version
  RETURNING a.id
), lot_upd AS (
  -- Only lots of accounts still at the version read: a plan on a replaced version may have
  -- read a lot after another write changed it (planning reads come after the batch's read),
  -- and must fail on the version check below, not on the lot's CHECK.
  UPDATE points_lots l SET remaining = v.remaining, frozen = v.frozen
  FROM unnest({arrays:changed_lots}) AS v({columns:changed_lots})
  WHERE l.id = ANY({changed_lots.key}) AND l.id = v.key AND l.account_id IN (SELECT id FROM acc)
  RETURNING l.id
), lot_ins AS (
  INSERT INTO points_lots ({columns:lots})
  SELECT * FROM unnest({arrays:lots})
), ent AS (
  INSERT INTO points_transactions ({columns:entries})
  SELECT * FROM unnest({arrays:entries})
), alloc AS (
  INSERT INTO points_allocations ({columns:allocations})
  SELECT * FROM unnest({arrays:allocations})
), hold AS (
  INSERT INTO points_holds ({columns:holds})
  SELECT * FROM unnest({arrays:holds})
  ON CONFLICT (id) DO UPDATE SET status = excluded.status,
    confirmed_amount = excluded.confirmed_amount, updated_at = excluded.updated_at
    WHERE points_holds.account_id IN (SELECT id FROM acc)
), daily AS (
  INSERT INTO points_daily_earnings ({columns:daily})
  SELECT * FROM unnest({arrays:daily})
  ON CONFLICT (tenant_id, member_id, event_type, day)
    DO UPDATE SET earned = points_daily_earnings.earned + excluded.earned
), rec AS (
  INSERT INTO idempotency_records ({columns:records})
  SELECT * FROM unnest({arrays:records})
), evt_batch AS (
  INSERT INTO event_batches ({columns:event_batches})
  SELECT * FROM unnest({arrays:event_batches})
), evt_body AS (
  INSERT INTO event_bodies ({columns:event_bodies})
  SELECT * FROM unnest({arrays:event_bodies})
)
SELECT points_batch_written((SELECT count(*) FROM acc), cardinality({accounts.key}),
  (SELECT count(*) FROM lot_upd), cardinality({changed_lots.key}));
