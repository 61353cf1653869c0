//! `PointsAccountService`: parse, call one use case, map.

use std::time::Duration;

use marketing_domain::{
    FieldViolation, MemberId, TenantId, UnixMicros,
    error::Violations,
    page::page_size,
    points::{EntryMeta, MAX_POINTS, TxType},
    points_rule::{RuleField, RuleTerms, parse_event_type},
    text::{TextKind, check_display_text},
};
use marketing_proto::v1::{self as pb, points_account_service_server::PointsAccountService};
use marketing_storage::idempotency::IdempotencyKey;
use tonic::{Request, Response, Status};
use tracing::instrument;
use uuid::Uuid;

use super::parse::{
    Edge, Mutation, Tenanted, distinct, enum_filter, finish, mutation_key, mutations, reference,
    reply, tenanted,
};
use crate::{
    app::{AppState, EarnSource, HoldSelector, PointsCommand, PointsOp, RefundTarget},
    wire::{
        ToWire,
        convert::{
            decode_page_token, encode_page_token, entry_to_proto, micros, tx_type_from_proto,
        },
        status::to_status,
    },
};

const MAX_HOLD_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_DESCRIPTION_CHARS: usize = 2000;

pub struct Points {
    app: AppState,
}

impl Points {
    pub fn new(app: AppState) -> Self {
        Self { app }
    }

    /// The request with what parsing it needs: points writes answer by the client's
    /// `grpc-timeout`, capped by the server's points timeout.
    fn edge<'a, R: Tenanted>(&'a self, request: &'a Request<R>) -> Result<Edge<'a, R>, Status> {
        Edge::new(request, self.app.config.points_timeout, &self.app)
    }

    /// Parses a change of an account and answers with what it did (FreezePoints' response
    /// is the superset of every change's).
    async fn changed<R: Tenanted + Sync>(
        &self,
        request: &Request<R>,
    ) -> Result<pb::FreezePointsResponse, Status>
    where
        for<'a> PointsCommand: TryFrom<Edge<'a, R>, Error = Status>,
    {
        let command = PointsCommand::try_from(self.edge(request)?)?;
        reply(self.app.change_points(command).await)
    }
}

fn points_amount(field: &str, amount: i64) -> Result<i64, FieldViolation> {
    if (1..=MAX_POINTS).contains(&amount) {
        Ok(amount)
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be between 1 and {MAX_POINTS}"),
        ))
    }
}

fn parse_uuid(field: &str, value: &str) -> Result<Uuid, FieldViolation> {
    Uuid::try_parse(value).map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

/// The caller's reference and description of an entry: `biz_type` and `biz_id` go together.
fn entry_meta(
    violations: &mut Violations,
    biz_type: &str,
    biz_id: &str,
    description: &str,
) -> EntryMeta {
    let mut meta = EntryMeta::default();
    match (biz_type.is_empty(), biz_id.is_empty()) {
        (true, true) => {}
        (false, false) => {
            meta.biz_type = violations.check(reference("biz_type", biz_type, 64));
            meta.biz_id = violations.check(reference("biz_id", biz_id, 128));
        }
        (true, false) => violations.push("biz_type", "is required with biz_id"),
        (false, true) => violations.push("biz_id", "is required with biz_type"),
    }
    violations.check(check_display_text(
        "description",
        description,
        TextKind::Lines,
        MAX_DESCRIPTION_CHARS,
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
fn account_change<M: Mutation>(
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

fn hold_selector(
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
            .check(reference("order_id", order, 128))
            .map(HoldSelector::Order),
    }
}

enum HoldRefProto<'a> {
    Id(&'a str),
    Order(&'a str),
}

fn confirm_ref(r: &pb::ConfirmFrozenPointsRequest) -> Option<HoldRefProto<'_>> {
    r.hold_ref.as_ref().map(|h| match h {
        pb::confirm_frozen_points_request::HoldRef::HoldId(id) => HoldRefProto::Id(id),
        pb::confirm_frozen_points_request::HoldRef::OrderId(order) => HoldRefProto::Order(order),
    })
}

fn release_ref(r: &pb::ReleaseFrozenPointsRequest) -> Option<HoldRefProto<'_>> {
    r.hold_ref.as_ref().map(|h| match h {
        pb::release_frozen_points_request::HoldRef::HoldId(id) => HoldRefProto::Id(id),
        pb::release_frozen_points_request::HoldRef::OrderId(order) => HoldRefProto::Order(order),
    })
}

/// What a page token is bound to: the query, with its filter's distinct values.
fn list_query_text(r: &pb::ListPointsTransactionsRequest, types: &[i32]) -> String {
    format!(
        "ledger;tenant={};member={};types={types:?};start={:?};end={:?}",
        r.tenant_id,
        r.member_id,
        r.start_time.as_ref().map(|t| (t.seconds, t.nanos)),
        r.end_time.as_ref().map(|t| (t.seconds, t.nanos))
    )
}

fn rules_query_text(r: &pb::ListPointsRulesRequest) -> String {
    format!("rules;tenant={};enabled={:?}", r.tenant_id, r.enabled)
}

fn rule_terms(rule: &pb::PointsRule) -> RuleTerms {
    RuleTerms {
        description: rule.description.clone(),
        points: rule.points,
        daily_cap: rule.daily_cap,
        expiry_days: rule.expiry_days,
        enabled: rule.enabled,
    }
}

impl TryFrom<Edge<'_, pb::EarnPointsRequest>> for PointsCommand {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::EarnPointsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let meta = entry_meta(&mut violations, &r.biz_type, &r.biz_id, &r.description);
        let expires_at = violations
            .check(micros("expire_time", r.expire_time.as_ref()))
            .flatten();
        if expires_at.is_some_and(|at| at <= edge.now) {
            violations.push("expire_time", "must be in the future");
        }
        let source = match &r.source {
            None => {
                violations.push("source", "set amount or event_type");
                None
            }
            Some(pb::earn_points_request::Source::Amount(amount)) => violations
                .check(points_amount("amount", *amount))
                .map(|amount| EarnSource::Amount { amount, expires_at }),
            Some(pb::earn_points_request::Source::EventType(event)) => {
                if expires_at.is_some() {
                    violations.push("expire_time", "is set by the event's rule");
                }
                violations
                    .check(parse_event_type("event_type", event))
                    .map(EarnSource::Event)
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
        let order_id = violations.check(reference("order_id", &r.order_id, 128));
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
                let biz_type = violations.check(reference("biz.biz_type", &biz.biz_type, 64));
                let biz_id = violations.check(reference("biz.biz_id", &biz.biz_id, 128));
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
struct AccountQuery {
    tenant: TenantId,
    member: MemberId,
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
struct EntriesQuery {
    tenant: TenantId,
    member: MemberId,
    types: Vec<TxType>,
    range: (Option<UnixMicros>, Option<UnixMicros>),
    after: Option<Uuid>,
    size: u64,
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
struct TopQuery {
    tenant: TenantId,
    top_n: usize,
}

impl TryFrom<Edge<'_, pb::GetPointsLeaderboardRequest>> for TopQuery {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::GetPointsLeaderboardRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let top_n = match r.top_n {
            0 => Some(10),
            1..=100 => Some(r.top_n as usize),
            _ => {
                violations.push("top_n", "must be between 0 and 100");
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
struct CreateRule {
    key: IdempotencyKey,
    event: String,
    terms: RuleTerms,
    actor: Option<String>,
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
        let terms = match rule_terms(rule).check() {
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
struct UpdateRule {
    key: IdempotencyKey,
    id: Uuid,
    version: i64,
    terms: RuleTerms,
    fields: Vec<RuleField>,
    actor: Option<String>,
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
                terms: rule_terms(rule),
                fields,
                actor: edge.actor(),
            })
        })
    }
}

/// ListPointsRules' query.
struct RulesQuery {
    tenant: TenantId,
    size: u64,
    after: Option<Uuid>,
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

#[tonic::async_trait]
impl PointsAccountService for Points {
    #[instrument(name = "PointsAccountService.GetPointsAccount", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn get_points_account(
        &self,
        request: Request<pb::GetPointsAccountRequest>,
    ) -> Result<Response<pb::GetPointsAccountResponse>, Status> {
        let q = AccountQuery::try_from(self.edge(&request)?)?;
        let account = self
            .app
            .points_account(&q.tenant, &q.member)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetPointsAccountResponse {
            points_account: Some(account.to_wire()),
        }))
    }

    #[instrument(name = "PointsAccountService.EarnPoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn earn_points(
        &self,
        request: Request<pb::EarnPointsRequest>,
    ) -> Result<Response<pb::EarnPointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(pb::EarnPointsResponse {
            points_account: done.points_account,
            transaction: done.transaction,
        }))
    }

    #[instrument(name = "PointsAccountService.DeductPoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn deduct_points(
        &self,
        request: Request<pb::DeductPointsRequest>,
    ) -> Result<Response<pb::DeductPointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(pb::DeductPointsResponse {
            points_account: done.points_account,
            transaction: done.transaction,
        }))
    }

    #[instrument(name = "PointsAccountService.FreezePoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn freeze_points(
        &self,
        request: Request<pb::FreezePointsRequest>,
    ) -> Result<Response<pb::FreezePointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(done))
    }

    #[instrument(name = "PointsAccountService.ConfirmFrozenPoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn confirm_frozen_points(
        &self,
        request: Request<pb::ConfirmFrozenPointsRequest>,
    ) -> Result<Response<pb::ConfirmFrozenPointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(pb::ConfirmFrozenPointsResponse {
            points_account: done.points_account,
            hold: done.hold,
            transaction: done.transaction,
        }))
    }

    #[instrument(name = "PointsAccountService.ReleaseFrozenPoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn release_frozen_points(
        &self,
        request: Request<pb::ReleaseFrozenPointsRequest>,
    ) -> Result<Response<pb::ReleaseFrozenPointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(pb::ReleaseFrozenPointsResponse {
            points_account: done.points_account,
            hold: done.hold,
            transaction: done.transaction,
        }))
    }

    #[instrument(name = "PointsAccountService.RefundPoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn refund_points(
        &self,
        request: Request<pb::RefundPointsRequest>,
    ) -> Result<Response<pb::RefundPointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(pb::RefundPointsResponse {
            points_account: done.points_account,
            transaction: done.transaction,
        }))
    }

    #[instrument(name = "PointsAccountService.ListPointsTransactions", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn list_points_transactions(
        &self,
        request: Request<pb::ListPointsTransactionsRequest>,
    ) -> Result<Response<pb::ListPointsTransactionsResponse>, Status> {
        let q = EntriesQuery::try_from(self.edge(&request)?)?;
        let (transactions, last) = self
            .app
            .list_points_transactions(&q.tenant, &q.member, &q.types, q.range, q.after, q.size)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListPointsTransactionsResponse {
            transactions: transactions
                .iter()
                .map(|entry| entry_to_proto(&q.tenant, &q.member, entry))
                .collect(),
            next_page_token: last
                .map(|id| {
                    encode_page_token(
                        id,
                        &list_query_text(request.get_ref(), &distinct(&request.get_ref().types)),
                    )
                })
                .unwrap_or_default(),
        }))
    }

    #[instrument(name = "PointsAccountService.GetPointsLeaderboard", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn get_points_leaderboard(
        &self,
        request: Request<pb::GetPointsLeaderboardRequest>,
    ) -> Result<Response<pb::GetPointsLeaderboardResponse>, Status> {
        let q = TopQuery::try_from(self.edge(&request)?)?;
        let top = self
            .app
            .leaderboard(&q.tenant, q.top_n)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetPointsLeaderboardResponse {
            entries: top
                .into_iter()
                .enumerate()
                .map(
                    |(i, (member_id, total_earned))| pb::PointsLeaderboardEntry {
                        rank: i as i32 + 1,
                        member_id,
                        total_earned,
                    },
                )
                .collect(),
        }))
    }

    #[instrument(name = "PointsAccountService.CreatePointsRule", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn create_points_rule(
        &self,
        request: Request<pb::CreatePointsRuleRequest>,
    ) -> Result<Response<pb::CreatePointsRuleResponse>, Status> {
        let c = CreateRule::try_from(self.edge(&request)?)?;
        let rule = reply(self.app.create_rule(c.key, c.event, c.terms, c.actor).await)?;
        Ok(Response::new(pb::CreatePointsRuleResponse {
            points_rule: Some(rule),
        }))
    }

    #[instrument(name = "PointsAccountService.UpdatePointsRule", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn update_points_rule(
        &self,
        request: Request<pb::UpdatePointsRuleRequest>,
    ) -> Result<Response<pb::UpdatePointsRuleResponse>, Status> {
        let c = UpdateRule::try_from(self.edge(&request)?)?;
        let updated = reply(
            self.app
                .update_rule(
                    c.key,
                    c.id,
                    c.version,
                    c.terms,
                    &c.fields,
                    c.actor.as_deref(),
                )
                .await,
        )?;
        Ok(Response::new(pb::UpdatePointsRuleResponse {
            points_rule: Some(updated),
        }))
    }

    #[instrument(name = "PointsAccountService.ListPointsRules", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn list_points_rules(
        &self,
        request: Request<pb::ListPointsRulesRequest>,
    ) -> Result<Response<pb::ListPointsRulesResponse>, Status> {
        let r = request.get_ref();
        let q = RulesQuery::try_from(self.edge(&request)?)?;
        let (points_rules, last) = self
            .app
            .list_rules(&q.tenant, r.enabled, q.after, q.size)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListPointsRulesResponse {
            points_rules: points_rules.iter().map(ToWire::to_wire).collect(),
            next_page_token: last
                .map(|id| encode_page_token(id, &rules_query_text(r)))
                .unwrap_or_default(),
        }))
    }
}
