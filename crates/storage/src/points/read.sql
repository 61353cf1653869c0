-- The batch's one read (see batch.rs). Column names come from the first branch; each kind
-- leaves the others' columns NULL.
SELECT 0 AS kind, tenant_id, request_id AS key, operation, fingerprint, status_code, response,
  NULL::uuid AS account_id, NULL::int8 AS available, NULL::int8 AS frozen,
  NULL::int8 AS total_earned, NULL::int8 AS total_spent, NULL::int8 AS total_expired,
  NULL::int8 AS total_refunded, NULL::int8 AS version, NULL::int8 AS earned_updated_at,
  NULL::int8 AS created_at, NULL::int8 AS updated_at,
  NULL::uuid AS lot_id, NULL::uuid AS lot_earn_transaction_id, NULL::int8 AS lot_amount,
  NULL::int8 AS lot_remaining, NULL::int8 AS lot_frozen, NULL::int8 AS lot_expires_at,
  NULL::int8 AS lot_created_at, client
FROM idempotency_records
WHERE tenant_id = ANY($1) AND request_id = ANY($2) AND status_code <> -1
UNION ALL
SELECT 1, a.tenant_id, a.member_id, NULL, NULL, NULL, NULL,
  a.id, a.available, a.frozen, a.total_earned, a.total_spent, a.total_expired,
  a.total_refunded, a.version, a.earned_updated_at, a.created_at, a.updated_at,
  l.id, l.earn_transaction_id, l.amount, l.remaining, l.frozen, l.expires_at, l.created_at,
  NULL
FROM points_accounts a LEFT JOIN points_lots l ON l.account_id = a.id AND l.live
WHERE a.tenant_id = ANY($3) AND a.member_id = ANY($4)
UNION ALL
SELECT 2, t.tenant_id, t.biz_id, t.biz_type, NULL, t.tx_type::int4, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM unnest($5::text[], $6::int2[], $7::text[], $8::text[])
  AS k(tenant_id, tx_type, biz_type, biz_id)
JOIN points_transactions t ON t.tenant_id = k.tenant_id AND t.tx_type = k.tx_type
  AND t.biz_type = k.biz_type AND t.biz_id = k.biz_id
WHERE t.biz_id IS NOT NULL AND t.tx_type IN (1, 2);
