//! Parsing of `PointsAccountService`'s requests: each request becomes a command or query, or one
//! INVALID_ARGUMENT listing every violation.

use std::time::Duration;

use marketing_domain::{
    FieldViolation, MemberId, TenantId, UnixMicros,
    coupon_template::Currency,
    error::Violations,
    page::page_size,
    points::{
        DEFAULT_LEADERBOARD_SIZE, EntryMeta, MAX_BIZ_ID_LEN, MAX_BIZ_TYPE_LEN,
        MAX_ENTRY_DESCRIPTION_CHARS, MAX_HOLD_TTL, MAX_LEADERBOARD_SIZE, MAX_ORDER_ID_LEN,
        MAX_POINTS, TxType,
    },
    points_rule::{PerAmount, Rounding, RuleField, RuleTerms, parse_event_type},
    text::{TextKind, check_display_text},
};
use marketing_proto::v1::{self as pb};
use marketing_storage::idempotency::IdempotencyKey;
use tonic::Status;
use uuid::Uuid;

use crate::grpc::parse::{
    Edge, Mutation, enum_filter, finish, mutation_key, mutations, reference, tenanted,
};
use crate::{
    app::{EarnSource, HoldSelector, PointsCommand, PointsOp, RefundTarget},
    wire::convert::{decode_page_token, micros, tx_type_from_proto},
};

pub(super) fn points_amount(field: &str, amount: i64) -> Result<i64, FieldViolation> {
    if (1..=MAX_POINTS).contains(&amount) {
        Ok(amount)
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be between 1 and {MAX_POINTS}"),
        ))
    }
}

pub(super) fn parse_uuid(field: &str, value: &str) -> Result<Uuid, FieldViolation> {
    Uuid::try_parse(value).map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

/// The caller's reference and description of an entry: `biz_type` and `biz_id` go together.
pub(super) fn entry_meta(
    violations: &mut Violations,
    biz_type: &str,
    biz_id: &str,
    description: &str,
) -> EntryMeta {
    let mut meta = EntryMeta::default();
    match (biz_type.is_empty(), biz_id.is_empty()) {
        (true, true) => {}
        (false, false) => {
            meta.biz_type = violations.check(reference("biz_type", biz_type, MAX_BIZ_TYPE_LEN));
            meta.biz_id = violations.check(reference("biz_id", biz_id, MAX_BIZ_ID_LEN));
        }
        (true, false) => violations.push("biz_type", "is required with biz_id"),
        (false, true) => violations.push("biz_id", "is required with biz_type"),
    }
    violations.check(check_display_text(
        "description",
        description,
        TextKind::Lines,
        MAX_ENTRY_DESCRIPTION_CHARS,
    ));
    meta.description = description.to_owned();
    meta
}

tenanted!(
    pb::GetPointsAccountRequest,
    pb::ListPointsTransactionsRequest,
    pb::GetPointsLeaderboardRequest,
    pb::ListPointsRulesRequest
);

mutations! {
    pb::EarnPointsRequest => "EarnPoints",
    pb::AdjustPointsRequest => "AdjustPoints",
    pb::DeductPointsRequest => "DeductPoints",
    pb::FreezePointsRequest => "FreezePoints",
    pb::ConfirmFrozenPointsRequest => "ConfirmFrozenPoints",
    pb::ReleaseFrozenPointsRequest => "ReleaseFrozenPoints",
    pb::RefundPointsRequest => "RefundPoints",
    pb::CreatePointsRuleRequest => "CreatePointsRule",
    pb::UpdatePointsRuleRequest => "UpdatePointsRule",
}

/// A change of one member's account: its key, the member, and the operation `build` makes
/// of the fields checked into `violations`.
pub(super) fn account_change<M: Mutation>(
    edge: &Edge<'_, M>,
    member_id: &str,
    mut violations: Violations,
    mut meta: EntryMeta,
    build: impl FnOnce() -> Option<PointsOp>,
) -> Result<PointsCommand, Status> {
    meta.actor = edge.actor();
    let key = mutation_key(&mut violations, edge);
    let member = violations.check(MemberId::parse("member_id", member_id));
    finish(violations, || {
        let key = key?;
        Some(PointsCommand {
            tenant_id: key.tenant_id.clone(),
            key: Some(key),
            member_id: member?,
            op: build()?,
            meta,
            deadline: edge.deadline,
        })
    })
}

pub(super) fn hold_selector(
    violations: &mut Violations,
    hold: Option<&HoldRefProto<'_>>,
) -> Option<HoldSelector> {
    match hold {
        None => {
            violations.push("hold_ref", "set hold_id or order_id");
            None
        }
        Some(HoldRefProto::Id(id)) => violations
            .check(parse_uuid("hold_id", id))
            .map(HoldSelector::Id),
        Some(HoldRefProto::Order(order)) => violations
            .check(reference("order_id", order, MAX_ORDER_ID_LEN))
            .map(HoldSelector::Order),
    }
}

pub(super) enum HoldRefProto<'a> {
    Id(&'a str),
    Order(&'a str),
}

pub(super) fn confirm_ref(r: &pb::ConfirmFrozenPointsRequest) -> Option<HoldRefProto<'_>> {
    r.hold_ref.as_ref().map(|h| match h {
        pb::confirm_frozen_points_request::HoldRef::HoldId(id) => HoldRefProto::Id(id),
        pb::confirm_frozen_points_request::HoldRef::OrderId(order) => HoldRefProto::Order(order),
    })
}

pub(super) fn release_ref(r: &pb::ReleaseFrozenPointsRequest) -> Option<HoldRefProto<'_>> {
    r.hold_ref.as_ref().map(|h| match h {
        pb::release_frozen_points_request::HoldRef::HoldId(id) => HoldRefProto::Id(id),
        pb::release_frozen_points_request::HoldRef::OrderId(order) => HoldRefProto::Order(order),
    })
}

/// What a page token is bound to: the query, with its filter's distinct values.
pub(super) fn list_query_text(r: &pb::ListPointsTransactionsRequest, types: &[i32]) -> String {
    format!(
        "ledger;tenant={};member={};types={types:?};start={:?};end={:?}",
        r.tenant_id,
        r.member_id,
        r.start_time.as_ref().map(|t| (t.seconds, t.nanos)),
        r.end_time.as_ref().map(|t| (t.seconds, t.nanos))
    )
}

pub(super) fn rules_query_text(r: &pb::ListPointsRulesRequest) -> String {
    format!("rules;tenant={};enabled={:?}", r.tenant_id, r.enabled)
}

/// A rule's terms as sent; a malformed rule by amount is recorded in `violations`.
pub(super) fn rule_terms(rule: &pb::PointsRule, violations: &mut Violations) -> RuleTerms {
    RuleTerms {
        description: rule.description.clone(),
        points: rule.points,
        daily_cap: rule.daily_cap,
        expiry_days: rule.expiry_days,
        enabled: rule.enabled,
        per_amount: rule.per_amount.as_ref().and_then(|per| {
            let currency = violations.check(Currency::parse("per_amount.currency", &per.currency));
            let rounding = match pb::PointsRounding::try_from(per.rounding) {
                Ok(pb::PointsRounding::HalfUp) => Some(Rounding::HalfUp),
                Ok(pb::PointsRounding::Up) => Some(Rounding::Up),
                Ok(_) => Some(Rounding::Down),
                Err(_) => {
                    violations.push("per_amount.rounding", "unknown rounding");
                    None
                }
            };
            Some(PerAmount {
                currency: currency?,
                amount: per.amount,
                multiplier_bp: if per.multiplier_bp == 0 {
                    10_000
                } else {
                    per.multiplier_bp
                },
                rounding: rounding?,
            })
        }),
    }
}

/// An optional `expire_time` of points added: in the future when set.
fn future_expiry(
    violations: &mut Violations,
    expire_time: Option<&prost_types::Timestamp>,
    now: UnixMicros,
) -> Option<UnixMicros> {
    let expires_at = violations
        .check(micros("expire_time", expire_time))
        .flatten();
    if expires_at.is_some_and(|at| at <= now) {
        violations.push("expire_time", "must be in the future");
    }
    expires_at
}

impl TryFrom<Edge<'_, pb::AdjustPointsRequest>> for PointsCommand {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::AdjustPointsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let amount = violations.check(points_amount("amount", r.amount.saturating_abs()));
        if r.reason.trim().is_empty() {
            violations.push("reason", "is required");
        } else {
            violations.check(check_display_text(
                "reason",
                &r.reason,
                TextKind::Lines,
                MAX_ENTRY_DESCRIPTION_CHARS,
            ));
        }
        let expires_at = future_expiry(&mut violations, r.expire_time.as_ref(), edge.now);
        if expires_at.is_some() && r.amount < 0 {
            violations.push("expire_time", "is for points added only");
        }
        let meta = EntryMeta {
            description: r.reason.clone(),
            ..EntryMeta::default()
        };
        account_change(&edge, &r.member_id, violations, meta, || {
            amount?;
            Some(PointsOp::Adjust {
                amount: r.amount,
                expires_at,
            })
        })
    }
}

impl TryFrom<Edge<'_, pb::EarnPointsRequest>> for PointsCommand {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::EarnPointsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let meta = entry_meta(&mut violations, &r.biz_type, &r.biz_id, &r.description);
        let expires_at = future_expiry(&mut violations, r.expire_time.as_ref(), edge.now);
        let source = match &r.source {
            None => {
                violations.push("source", "set amount or event_type");
                None
            }
            Some(pb::earn_points_request::Source::Amount(_))
                if r.order_amount != 0 || !r.currency.is_empty() =>
            {
                violations.push("order_amount", "is for events (event_type) only");
                None
            }
            Some(pb::earn_points_request::Source::Amount(amount)) => violations
                .check(points_amount("amount", *amount))
                .map(|amount| EarnSource::Amount { amount, expires_at }),
            Some(pb::earn_points_request::Source::EventType(event)) => {
                if expires_at.is_some() {
                    violations.push("expire_time", "is set by the event's rule");
                }
                let order = if r.order_amount == 0 && r.currency.is_empty() {
                    Some(None)
                } else {
                    let amount = violations.check(crate::grpc::user_coupons::order_amount(
                        "order_amount",
                        r.order_amount,
                    ));
                    let currency = violations.check(Currency::parse("currency", &r.currency));
                    amount.zip(currency).map(Some)
                };
                let event = violations.check(parse_event_type("event_type", event));
                event
                    .zip(order)
                    .map(|(event, order)| EarnSource::Event { event, order })
            }
        };
        account_change(&edge, &r.member_id, violations, meta, || {
            Some(PointsOp::Earn(source?))
        })
    }
}

impl TryFrom<Edge<'_, pb::DeductPointsRequest>> for PointsCommand {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::DeductPointsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let meta = entry_meta(&mut violations, &r.biz_type, &r.biz_id, &r.description);
        let amount = violations.check(points_amount("amount", r.amount));
        account_change(&edge, &r.member_id, violations, meta, || {
            Some(PointsOp::Deduct(amount?))
        })
    }
}

impl TryFrom<Edge<'_, pb::FreezePointsRequest>> for PointsCommand {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::FreezePointsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let amount = violations.check(points_amount("amount", r.amount));
        let order_id = violations.check(reference("order_id", &r.order_id, MAX_ORDER_ID_LEN));
        let ttl = match r.hold_ttl.filter(|d| d.seconds != 0 || d.nanos != 0) {
            None => Some(edge.config.points_hold_ttl),
            Some(ttl) => match Duration::try_from(ttl) {
                Ok(ttl) if ttl >= Duration::from_secs(1) && ttl <= MAX_HOLD_TTL => Some(ttl),
                _ => {
                    violations.push("hold_ttl", "must be between 1 second and 24 hours");
                    None
                }
            },
        };
        account_change(
            &edge,
            &r.member_id,
            violations,
            EntryMeta::default(),
            || {
                Some(PointsOp::Freeze {
                    amount: amount?,
                    order_id: order_id?,
                    ttl: ttl?,
                })
            },
        )
    }
}

impl TryFrom<Edge<'_, pb::ConfirmFrozenPointsRequest>> for PointsCommand {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ConfirmFrozenPointsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let hold = hold_selector(&mut violations, confirm_ref(r).as_ref());
        let amount = match r.amount {
            None => Some(None),
            Some(amount) => violations.check(points_amount("amount", amount)).map(Some),
        };
        account_change(
            &edge,
            &r.member_id,
            violations,
            EntryMeta::default(),
            || {
                Some(PointsOp::Confirm {
                    hold: hold?,
                    amount: amount?,
                })
            },
        )
    }
}

impl TryFrom<Edge<'_, pb::ReleaseFrozenPointsRequest>> for PointsCommand {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ReleaseFrozenPointsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let hold = hold_selector(&mut violations, release_ref(r).as_ref());
        account_change(
            &edge,
            &r.member_id,
            violations,
            EntryMeta::default(),
            || Some(PointsOp::Release(hold?)),
        )
    }
}

impl TryFrom<Edge<'_, pb::RefundPointsRequest>> for PointsCommand {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::RefundPointsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let meta = entry_meta(&mut violations, "", "", &r.description);
        let target = match &r.target {
            None => {
                violations.push("target", "set transaction_id or biz");
                None
            }
            Some(pb::refund_points_request::Target::TransactionId(id)) => violations
                .check(parse_uuid("transaction_id", id))
                .map(RefundTarget::Transaction),
            Some(pb::refund_points_request::Target::Biz(biz)) => {
                let biz_type =
                    violations.check(reference("biz.biz_type", &biz.biz_type, MAX_BIZ_TYPE_LEN));
                let biz_id = violations.check(reference("biz.biz_id", &biz.biz_id, MAX_BIZ_ID_LEN));
                biz_type
                    .zip(biz_id)
                    .map(|(biz_type, biz_id)| RefundTarget::Biz { biz_type, biz_id })
            }
        };
        let amount = match r.amount {
            None => Some(None),
            Some(amount) => violations.check(points_amount("amount", amount)).map(Some),
        };
        account_change(&edge, &r.member_id, violations, meta, || {
            Some(PointsOp::Refund {
                target: target?,
                amount: amount?,
            })
        })
    }
}

/// GetPointsAccount's query.
pub(super) struct AccountQuery {
    pub(super) tenant: TenantId,
    pub(super) member: MemberId,
}

impl TryFrom<Edge<'_, pb::GetPointsAccountRequest>> for AccountQuery {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::GetPointsAccountRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let member = violations.check(MemberId::parse("member_id", &r.member_id));
        finish(violations, || {
            Some(AccountQuery {
                tenant: tenant?,
                member: member?,
            })
        })
    }
}

/// ListPointsTransactions' query.
pub(super) struct EntriesQuery {
    pub(super) tenant: TenantId,
    pub(super) member: MemberId,
    pub(super) types: Vec<TxType>,
    pub(super) range: (Option<UnixMicros>, Option<UnixMicros>),
    pub(super) after: Option<Uuid>,
    pub(super) size: u64,
}

impl TryFrom<Edge<'_, pb::ListPointsTransactionsRequest>> for EntriesQuery {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ListPointsTransactionsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let member = violations.check(MemberId::parse("member_id", &r.member_id));
        let size = violations.check(page_size("page_size", r.page_size));
        let (types, raw_types) = enum_filter(
            &mut violations,
            "types",
            &r.types,
            TxType::ALL.len(),
            tx_type_from_proto,
        );
        let after = violations.check(decode_page_token(
            "page_token",
            &r.page_token,
            &list_query_text(r, &raw_types),
        ));
        let start = violations.check(micros("start_time", r.start_time.as_ref()));
        let end = violations.check(micros("end_time", r.end_time.as_ref()));
        finish(violations, || {
            Some(EntriesQuery {
                tenant: tenant?,
                member: member?,
                types,
                range: (start?, end?),
                after: after?,
                size: size?,
            })
        })
    }
}

/// GetPointsLeaderboard's query.
pub(super) struct TopQuery {
    pub(super) tenant: TenantId,
    pub(super) top_n: usize,
}

impl TryFrom<Edge<'_, pb::GetPointsLeaderboardRequest>> for TopQuery {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::GetPointsLeaderboardRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let top_n = match usize::try_from(r.top_n) {
            Ok(0) => Some(DEFAULT_LEADERBOARD_SIZE),
            Ok(size @ 1..=MAX_LEADERBOARD_SIZE) => Some(size),
            _ => {
                violations.push(
                    "top_n",
                    format!("must be between 0 and {MAX_LEADERBOARD_SIZE}"),
                );
                None
            }
        };
        finish(violations, || {
            Some(TopQuery {
                tenant: tenant?,
                top_n: top_n?,
            })
        })
    }
}

/// CreatePointsRule's command.
pub(super) struct CreateRule {
    pub(super) key: IdempotencyKey,
    pub(super) event: String,
    pub(super) terms: RuleTerms,
    pub(super) actor: Option<String>,
}

impl TryFrom<Edge<'_, pb::CreatePointsRuleRequest>> for CreateRule {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::CreatePointsRuleRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let key = mutation_key(&mut violations, &edge);
        let Some(rule) = &r.points_rule else {
            violations.push("points_rule", "is required");
            return finish(violations, || None);
        };
        let event = violations.check(parse_event_type("points_rule.event_type", &rule.event_type));
        let mut sent = Violations::new();
        let terms = rule_terms(rule, &mut sent);
        violations.extend(
            sent.into_vec()
                .into_iter()
                .map(|v| v.under("points_rule"))
                .collect(),
        );
        let terms = match terms.check() {
            Ok(terms) => Some(terms),
            Err(found) => {
                violations.extend(found.into_iter().map(|v| v.under("points_rule")).collect());
                None
            }
        };
        finish(violations, || {
            Some(CreateRule {
                key: key?,
                event: event?,
                terms: terms?,
                actor: edge.actor(),
            })
        })
    }
}

/// UpdatePointsRule's command: the terms are checked once merged with the stored ones.
pub(super) struct UpdateRule {
    pub(super) key: IdempotencyKey,
    pub(super) id: Uuid,
    pub(super) version: i64,
    pub(super) terms: RuleTerms,
    pub(super) fields: Vec<RuleField>,
    pub(super) actor: Option<String>,
}

impl TryFrom<Edge<'_, pb::UpdatePointsRuleRequest>> for UpdateRule {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::UpdatePointsRuleRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let key = mutation_key(&mut violations, &edge);
        let Some(rule) = &r.points_rule else {
            violations.push("points_rule", "is required");
            return finish(violations, || None);
        };
        let id = violations.check(parse_uuid("points_rule.id", &rule.id));
        if rule.version <= 0 {
            violations.push(
                "points_rule.version",
                "is required: the rule's current version (its etag)",
            );
        }
        let mut sent = Violations::new();
        let terms = rule_terms(rule, &mut sent);
        violations.extend(
            sent.into_vec()
                .into_iter()
                .map(|v| v.under("points_rule"))
                .collect(),
        );
        let mut fields = Vec::new();
        match r.update_mask.as_ref().map(|m| m.paths.as_slice()) {
            None | Some([]) => violations.push("update_mask", "must name the fields to update"),
            Some(paths) if paths.iter().any(|p| p == "*") => fields.extend(RuleField::ALL),
            Some(paths) => {
                for path in paths {
                    match RuleField::from_path(path) {
                        Ok(field) if !fields.contains(&field) => fields.push(field),
                        Ok(_) => {}
                        Err(problem) => violations.push("update_mask", problem),
                    }
                }
            }
        }
        finish(violations, || {
            Some(UpdateRule {
                key: key?,
                id: id?,
                version: rule.version,
                terms,
                fields,
                actor: edge.actor(),
            })
        })
    }
}

/// ListPointsRules' query.
pub(super) struct RulesQuery {
    pub(super) tenant: TenantId,
    pub(super) size: u64,
    pub(super) after: Option<Uuid>,
}

impl TryFrom<Edge<'_, pb::ListPointsRulesRequest>> for RulesQuery {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ListPointsRulesRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let size = violations.check(page_size("page_size", r.page_size));
        let after = violations.check(decode_page_token(
            "page_token",
            &r.page_token,
            &rules_query_text(r),
        ));
        finish(violations, || {
            Some(RulesQuery {
                tenant: tenant?,
                size: size?,
                after: after?,
            })
        })
    }
}
