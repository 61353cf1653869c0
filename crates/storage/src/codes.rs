//! Redemption codes and their generations. Every query is scoped by tenant: a code is found
//! by (tenant, canonical text), so another tenant's code of the same text is never seen. A
//! unique code is claimed by a conditional update (`member_id IS NULL`), so it is claimed
//! once whatever runs at the same time.

use marketing_domain::{
    CouponId, MarketingError, MemberId, RequestId, TemplateId, TenantId, UnixMicros,
    coupon_code::{CodeKind, CodeShape, CodeText},
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

use crate::{
    db::{ValuesUpdate, db_error, insert_all_if_absent, insert_if_absent},
    entity::{code_generation as generation, coupon_code as code},
};

/// A stored code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCode {
    pub code: CodeText,
    pub template_id: TemplateId,
    pub kind: CodeKind,
    /// Set once a unique code is claimed.
    pub claim: Option<CodeClaim>,
    pub created_at: UnixMicros,
    pub actor: Option<String>,
}

/// Who claimed a unique code, the coupon they got, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeClaim {
    pub member_id: String,
    pub coupon_id: CouponId,
    pub at: UnixMicros,
}

/// A code claimed in a claim batch: the code, its claimant and coupon.
pub struct ClaimedCode<'a> {
    pub code: &'a CodeText,
    pub member_id: &'a MemberId,
    pub coupon_id: CouponId,
}

/// Which codes a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeState {
    Available,
    Claimed,
}

/// A `GenerateCouponCodes` call and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub template_id: TemplateId,
    pub count: i32,
    pub shape: CodeShape,
    pub generated: i32,
    /// Until when a replica holds it.
    pub leased_until: UnixMicros,
    pub finished_at: Option<UnixMicros>,
    pub created_at: UnixMicros,
    pub actor: Option<String>,
    pub request_id: RequestId,
}

/// A code as a claim looks it up: its template, its kind, and whether it was open (a shared
/// code always is; a unique one until it is claimed) when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundCode {
    pub template: TemplateId,
    pub kind: CodeKind,
    pub open: bool,
}

/// Where codes are read: the pool or a unit of work.
#[allow(async_fn_in_trait)]
pub trait CodeReads {
    /// Each of `texts` that `tenant` has (in no order).
    async fn find_many(
        &self,
        tenant: &TenantId,
        texts: &[&CodeText],
    ) -> Result<Vec<(CodeText, FoundCode)>, MarketingError>;

    /// Which of `texts` of `tenant` are unique codes of `template` not claimed yet (a claim
    /// batch's read of the codes its lookups did not see open; its conditional update is what
    /// decides).
    async fn open_unique(
        &self,
        tenant: &TenantId,
        template: TemplateId,
        texts: &[&CodeText],
    ) -> Result<Vec<CodeText>, MarketingError>;

    /// Up to `limit` codes of a template after `after`, in code order, in `state` if given.
    async fn list(
        &self,
        tenant: &TenantId,
        template: TemplateId,
        state: Option<CodeState>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<StoredCode>, MarketingError>;

    async fn generation(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Option<Generation>, MarketingError>;

    /// Unique codes a template's unfinished generations will still add.
    async fn pending_generated(
        &self,
        tenant: &TenantId,
        template: TemplateId,
    ) -> Result<i64, MarketingError>;

    /// A generation no replica works on (its lease passed), if any.
    async fn abandoned_generation(
        &self,
        now: UnixMicros,
    ) -> Result<Option<Generation>, MarketingError>;
}

/// The writes of codes: inside a unit of work only.
#[allow(async_fn_in_trait)]
pub trait CodeStore: CodeReads {
    /// Adds a shared code; `Ok(false)` when the tenant has a code of that text (the unit may
    /// still commit: nothing was written).
    async fn insert_shared(
        &self,
        tenant: &TenantId,
        template: TemplateId,
        text: &CodeText,
        now: UnixMicros,
        actor: Option<&str>,
    ) -> Result<bool, MarketingError>;

    /// Adds unique codes, skipping texts the tenant has already; how many were added.
    async fn insert_unique(
        &self,
        generation: &Generation,
        codes: Vec<CodeText>,
        now: UnixMicros,
    ) -> Result<u64, MarketingError>;

    /// Marks unique codes claimed; `ConcurrentModification` when one was claimed meanwhile
    /// (the unit must then be dropped).
    async fn mark_claimed(
        &self,
        tenant: &TenantId,
        claims: &[ClaimedCode<'_>],
        at: UnixMicros,
    ) -> Result<(), MarketingError>;

    /// Deletes up to `limit` finished generations accepted before `before` (their requests'
    /// records go at the same age); how many.
    async fn delete_finished_generations(
        &self,
        before: UnixMicros,
        limit: u64,
    ) -> Result<u64, MarketingError>;

    /// Adds a generation (held by this replica until its `leased_until`).
    async fn insert_generation(&self, generation: &Generation) -> Result<(), MarketingError>;

    /// Takes the generation `id` for this replica until `lease_until`, when it is unfinished
    /// and no replica holds it; the generation as it stands, or `None`.
    async fn lease_generation(
        &self,
        tenant: &TenantId,
        id: Uuid,
        now: UnixMicros,
        lease_until: UnixMicros,
    ) -> Result<Option<Generation>, MarketingError>;

    /// Counts `added` codes made by generation `id`, moves its lease from `held` (the lease
    /// this replica holds) to `lease_until`, and marks it finished when it has all it asked
    /// for. `ConcurrentModification` when the lease is not `held` any more (another replica
    /// took it over): the unit must be dropped.
    async fn advance_generation(
        &self,
        id: Uuid,
        added: i32,
        held: UnixMicros,
        now: UnixMicros,
        lease_until: UnixMicros,
    ) -> Result<(), MarketingError>;
}

/// The codes as one connection sees them.
pub struct Codes<'c, C>(pub(crate) &'c C);

impl<C: ConnectionTrait> CodeReads for Codes<'_, C> {
    async fn find_many(
        &self,
        tenant: &TenantId,
        texts: &[&CodeText],
    ) -> Result<Vec<(CodeText, FoundCode)>, MarketingError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<(String, Uuid, i16, Option<String>)> = code::Entity::find()
            .select_only()
            .columns([
                code::Column::Code,
                code::Column::TemplateId,
                code::Column::Kind,
                code::Column::MemberId,
            ])
            .filter(code::Column::TenantId.eq(tenant.as_str()))
            .filter(code::Column::Code.is_in(texts.iter().map(|t| t.as_str())))
            .into_tuple()
            .all(self.0)
            .await
            .map_err(db_error)?;
        found
            .into_iter()
            .map(|(text, template, kind, member)| {
                let kind = CodeKind::from_code(kind)
                    .ok_or_else(|| MarketingError::internal(format!("code of kind {kind}")))?;
                let found = FoundCode {
                    template: TemplateId(template),
                    kind,
                    open: kind == CodeKind::Shared || member.is_none(),
                };
                Ok((CodeText::from_stored(text), found))
            })
            .collect()
    }

    async fn open_unique(
        &self,
        tenant: &TenantId,
        template: TemplateId,
        texts: &[&CodeText],
    ) -> Result<Vec<CodeText>, MarketingError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let open: Vec<String> = code::Entity::find()
            .select_only()
            .column(code::Column::Code)
            .filter(code::Column::TenantId.eq(tenant.as_str()))
            .filter(code::Column::Code.is_in(texts.iter().map(|t| t.as_str())))
            .filter(code::Column::TemplateId.eq(template.0))
            .filter(code::Column::Kind.eq(CodeKind::Unique.code()))
            .filter(code::Column::MemberId.is_null())
            .into_tuple()
            .all(self.0)
            .await
            .map_err(db_error)?;
        Ok(open.into_iter().map(CodeText::from_stored).collect())
    }

    async fn list(
        &self,
        tenant: &TenantId,
        template: TemplateId,
        state: Option<CodeState>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<StoredCode>, MarketingError> {
        let mut query = code::Entity::find()
            .filter(code::Column::TenantId.eq(tenant.as_str()))
            .filter(code::Column::TemplateId.eq(template.0));
        query = match state {
            None => query,
            Some(CodeState::Available) => query.filter(code::Column::MemberId.is_null()),
            Some(CodeState::Claimed) => query.filter(code::Column::MemberId.is_not_null()),
        };
        if let Some(after) = after {
            query = query.filter(code::Column::Code.gt(after));
        }
        query
            .order_by_asc(code::Column::Code)
            .limit(limit)
            .all(self.0)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(to_domain)
            .collect()
    }

    async fn generation(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Option<Generation>, MarketingError> {
        generation::Entity::find_by_id(id)
            .filter(generation::Column::TenantId.eq(tenant.as_str()))
            .one(self.0)
            .await
            .map_err(db_error)?
            .map(generation_to_domain)
            .transpose()
    }

    async fn pending_generated(
        &self,
        tenant: &TenantId,
        template: TemplateId,
    ) -> Result<i64, MarketingError> {
        let open: Vec<(i32, i32)> = generation::Entity::find()
            .select_only()
            .columns([generation::Column::Count, generation::Column::Generated])
            .filter(generation::Column::TenantId.eq(tenant.as_str()))
            .filter(generation::Column::TemplateId.eq(template.0))
            .filter(generation::Column::FinishedAt.is_null())
            .into_tuple()
            .all(self.0)
            .await
            .map_err(db_error)?;
        Ok(open
            .into_iter()
            .map(|(count, generated)| i64::from(count - generated))
            .sum())
    }

    async fn abandoned_generation(
        &self,
        now: UnixMicros,
    ) -> Result<Option<Generation>, MarketingError> {
        generation::Entity::find()
            .filter(generation::Column::FinishedAt.is_null())
            .filter(generation::Column::LeasedUntil.lt(now.0))
            .order_by_asc(generation::Column::LeasedUntil)
            .one(self.0)
            .await
            .map_err(db_error)?
            .map(generation_to_domain)
            .transpose()
    }
}

/// The update that claims unique codes: `v` holds (tenant, code, member, coupon).
const CLAIM: ValuesUpdate<'static> = ValuesUpdate {
    table: "coupon_codes",
    columns: &[
        ("tenant", "String"),
        ("code", "String"),
        ("member", "String"),
        ("coupon", "Uuid"),
        ("at", "i64"),
    ],
    set: "member_id = v.member, user_coupon_id = v.coupon, claimed_at = v.at",
    condition: "coupon_codes.tenant_id = v.tenant AND coupon_codes.code = v.code \
                AND coupon_codes.kind = 2 AND coupon_codes.member_id IS NULL",
    returning: "user_coupon_id",
};

impl CodeStore for Codes<'_, DatabaseTransaction> {
    async fn insert_shared(
        &self,
        tenant: &TenantId,
        template: TemplateId,
        text: &CodeText,
        now: UnixMicros,
        actor: Option<&str>,
    ) -> Result<bool, MarketingError> {
        let row = new_row(tenant, template, CodeKind::Shared, text, now, actor);
        insert_if_absent(self.0, row, [code::Column::TenantId, code::Column::Code]).await
    }

    async fn insert_unique(
        &self,
        generation: &Generation,
        mut codes: Vec<CodeText>,
        now: UnixMicros,
    ) -> Result<u64, MarketingError> {
        // In key order, so that concurrent generations wait for each other's keys in one
        // order and never deadlock.
        codes.sort_unstable();
        codes.dedup();
        let rows: Vec<code::ActiveModel> = codes
            .iter()
            .map(|text| {
                new_row(
                    &generation.tenant_id,
                    generation.template_id,
                    CodeKind::Unique,
                    text,
                    now,
                    generation.actor.as_deref(),
                )
            })
            .collect();
        insert_all_if_absent(self.0, rows, [code::Column::TenantId, code::Column::Code]).await
    }

    async fn mark_claimed(
        &self,
        tenant: &TenantId,
        claims: &[ClaimedCode<'_>],
        at: UnixMicros,
    ) -> Result<(), MarketingError> {
        if claims.is_empty() {
            return Ok(());
        }
        let rows = claims
            .iter()
            .map(|claim| {
                vec![
                    tenant.as_str().into(),
                    claim.code.as_str().into(),
                    claim.member_id.as_str().into(),
                    claim.coupon_id.0.into(),
                    at.0.into(),
                ]
            })
            .collect();
        let claimed = CLAIM.execute(self.0, rows).await?.len();
        if claimed != claims.len() {
            return Err(MarketingError::ConcurrentModification(
                "a unique code was claimed under a claim batch".into(),
            ));
        }
        Ok(())
    }

    async fn delete_finished_generations(
        &self,
        before: UnixMicros,
        limit: u64,
    ) -> Result<u64, MarketingError> {
        crate::db::delete_batch(
            self.0,
            "code_generations",
            "finished_at IS NOT NULL AND created_at < $1",
            before,
            limit,
        )
        .await
    }

    async fn insert_generation(&self, g: &Generation) -> Result<(), MarketingError> {
        generation::Entity::insert(generation::ActiveModel {
            id: Set(g.id),
            tenant_id: Set(g.tenant_id.as_str().to_owned()),
            template_id: Set(g.template_id.0),
            count: Set(g.count),
            prefix: Set(g.shape.prefix.clone()),
            length: Set(i16::try_from(g.shape.length).unwrap_or(i16::MAX)),
            generated: Set(g.generated),
            leased_until: Set(g.leased_until.0),
            finished_at: Set(g.finished_at.map(|t| t.0)),
            created_at: Set(g.created_at.0),
            actor: Set(g.actor.clone()),
            request_id: Set(g.request_id.as_str().to_owned()),
        })
        .exec_without_returning(self.0)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn lease_generation(
        &self,
        tenant: &TenantId,
        id: Uuid,
        now: UnixMicros,
        lease_until: UnixMicros,
    ) -> Result<Option<Generation>, MarketingError> {
        generation::Entity::update_many()
            .col_expr(generation::Column::LeasedUntil, Expr::value(lease_until.0))
            .filter(generation::Column::Id.eq(id))
            .filter(generation::Column::TenantId.eq(tenant.as_str()))
            .filter(generation::Column::FinishedAt.is_null())
            .filter(generation::Column::LeasedUntil.lt(now.0))
            .exec_with_returning(self.0)
            .await
            .map_err(db_error)?
            .pop()
            .map(generation_to_domain)
            .transpose()
    }

    async fn advance_generation(
        &self,
        id: Uuid,
        added: i32,
        held: UnixMicros,
        now: UnixMicros,
        lease_until: UnixMicros,
    ) -> Result<(), MarketingError> {
        let row = generation::Entity::update_many()
            .col_expr(
                generation::Column::Generated,
                Expr::col(generation::Column::Generated).add(added),
            )
            .col_expr(generation::Column::LeasedUntil, Expr::value(lease_until.0))
            .filter(generation::Column::Id.eq(id))
            .filter(generation::Column::LeasedUntil.eq(held.0))
            .exec_with_returning(self.0)
            .await
            .map_err(db_error)?
            .pop()
            .ok_or_else(|| {
                MarketingError::ConcurrentModification(
                    "another replica took the code generation over".into(),
                )
            })?;
        if row.generated >= row.count {
            generation::Entity::update_many()
                .col_expr(generation::Column::FinishedAt, Expr::value(now.0))
                .filter(generation::Column::Id.eq(id))
                .exec(self.0)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }
}

fn new_row(
    tenant: &TenantId,
    template: TemplateId,
    kind: CodeKind,
    text: &CodeText,
    now: UnixMicros,
    actor: Option<&str>,
) -> code::ActiveModel {
    code::ActiveModel {
        tenant_id: Set(tenant.as_str().to_owned()),
        code: Set(text.as_str().to_owned()),
        template_id: Set(template.0),
        kind: Set(kind.code()),
        member_id: Set(None),
        user_coupon_id: Set(None),
        claimed_at: Set(None),
        created_at: Set(now.0),
        actor: Set(actor.map(str::to_owned)),
    }
}

fn to_domain(row: code::Model) -> Result<StoredCode, MarketingError> {
    let kind = CodeKind::from_code(row.kind)
        .ok_or_else(|| MarketingError::internal(format!("code of kind {}", row.kind)))?;
    let claim = match (row.member_id, row.user_coupon_id, row.claimed_at) {
        (Some(member_id), Some(coupon), Some(at)) => Some(CodeClaim {
            member_id,
            coupon_id: CouponId(coupon),
            at: UnixMicros(at),
        }),
        _ => None,
    };
    Ok(StoredCode {
        code: CodeText::from_stored(row.code),
        template_id: TemplateId(row.template_id),
        kind,
        claim,
        created_at: UnixMicros(row.created_at),
        actor: row.actor,
    })
}

fn generation_to_domain(row: generation::Model) -> Result<Generation, MarketingError> {
    let corrupt = || MarketingError::internal(format!("code generation {} is corrupt", row.id));
    let tenant_id = TenantId::parse("tenant_id", &row.tenant_id).map_err(|_| corrupt())?;
    let shape = CodeShape::parse(&row.prefix, i32::from(row.length)).map_err(|_| corrupt())?;
    Ok(Generation {
        id: row.id,
        tenant_id,
        template_id: TemplateId(row.template_id),
        count: row.count,
        shape,
        generated: row.generated,
        leased_until: UnixMicros(row.leased_until),
        finished_at: row.finished_at.map(UnixMicros),
        created_at: UnixMicros(row.created_at),
        actor: row.actor,
        request_id: RequestId::parse("request_id", &row.request_id).map_err(|_| corrupt())?,
    })
}
