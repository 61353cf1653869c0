//! Coupon templates. Every query is scoped by tenant; every change is a conditional update
//! that checks what the caller assumed (version, not archived, stock bounds) in its WHERE
//! clause, so concurrent writers cannot interleave between a read and a write.

use marketing_domain::{
    MarketingError, TemplateId, TenantId, UnixMicros,
    coupon_code::CodeInventory,
    coupon_template::{
        CouponTemplate, Currency, DiscountType, MAX_TOTAL_STOCK, TemplateTerms, Validity,
    },
    error::Refusal,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, ExprTrait, QueryFilter,
    QueryOrder, QuerySelect, sea_query::Expr,
};

use sea_orm::DatabaseTransaction;

use crate::{db::db_error, entity::coupon_template as tpl};

/// Where a context's templates are read: the pool (each read its own snapshot) or a unit of
/// work ([`crate::unit::UnitOfWork::templates`]).
#[allow(async_fn_in_trait)]
pub trait TemplateReads {
    async fn find(
        &self,
        tenant: &TenantId,
        id: TemplateId,
    ) -> Result<Option<CouponTemplate>, MarketingError>;

    /// Like [`Self::find`], but a missing template (or one of another tenant) is
    /// `TemplateNotFound`.
    async fn get(
        &self,
        tenant: &TenantId,
        id: TemplateId,
    ) -> Result<CouponTemplate, MarketingError>;

    /// Up to `limit` templates after `after` in id (creation) order. Keyset pagination: rows
    /// inserted meanwhile never shift a page.
    async fn list(
        &self,
        tenant: &TenantId,
        filter: &TemplateFilter,
        after: Option<TemplateId>,
        limit: u64,
    ) -> Result<Vec<CouponTemplate>, MarketingError>;
}

/// The writes of templates: inside a unit of work only, so they commit with the rest of the
/// change and its request's record.
#[allow(async_fn_in_trait)]
pub trait TemplateStore: TemplateReads {
    async fn insert(&self, template: &CouponTemplate) -> Result<(), MarketingError>;

    /// Applies `change` by `actor` to the live template `id` of `tenant` (whose version must
    /// be `expected_version` when given), raising its version; a template that does not
    /// allow it is refused with the reason (archived, version moved, stock below claimed).
    async fn change(
        &self,
        tenant: &TenantId,
        id: TemplateId,
        expected_version: Option<i64>,
        change: &TemplateChange,
        now: UnixMicros,
        actor: Option<&str>,
    ) -> Result<CouponTemplate, MarketingError>;

    /// Reads a template and locks its row until the unit ends (PostgreSQL `FOR UPDATE`; a
    /// SQLite write transaction already excludes other writers).
    async fn get_for_update(
        &self,
        tenant: &TenantId,
        id: TemplateId,
    ) -> Result<CouponTemplate, MarketingError>;

    /// Moves `count` coupons from remaining to claimed stock, never below zero, counts
    /// `codes` unique codes claimed with them, and returns the template as written. With a
    /// lock `fence`, the write is refused (`ConcurrentModification`) if a later lock holder
    /// already wrote.
    async fn take_stock(
        &self,
        tenant: &TenantId,
        id: TemplateId,
        count: i64,
        codes: i64,
        fence: Option<i64>,
    ) -> Result<CouponTemplate, MarketingError>;

    /// Counts codes added to the template's inventory (`unique` generated, `shared` created);
    /// the template as written. Not a change of its terms: the version stays.
    async fn add_codes(
        &self,
        tenant: &TenantId,
        id: TemplateId,
        unique: i64,
        shared: i64,
    ) -> Result<CouponTemplate, MarketingError>;

    /// Adds `delta` (+1 on use, -1 on return) to the used count; the template as written.
    /// Counts `delta` uses (+1 a use, -1 a return) and `discount` of the campaign budget
    /// (given back by a return): a use whose discount is more than the budget has left is
    /// refused `BUDGET_EXHAUSTED`, atomically with every other use.
    async fn add_used(
        &self,
        tenant: &TenantId,
        id: TemplateId,
        delta: i64,
        discount: i64,
    ) -> Result<CouponTemplate, MarketingError>;
}

/// The templates as one connection sees them (SeaORM, on PostgreSQL and SQLite alike).
pub struct Templates<'c, C>(pub(crate) &'c C);

impl<C: ConnectionTrait> TemplateReads for Templates<'_, C> {
    async fn find(
        &self,
        tenant: &TenantId,
        id: TemplateId,
    ) -> Result<Option<CouponTemplate>, MarketingError> {
        find(self.0, tenant, id).await
    }

    async fn get(
        &self,
        tenant: &TenantId,
        id: TemplateId,
    ) -> Result<CouponTemplate, MarketingError> {
        get(self.0, tenant, id).await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        filter: &TemplateFilter,
        after: Option<TemplateId>,
        limit: u64,
    ) -> Result<Vec<CouponTemplate>, MarketingError> {
        list(self.0, tenant, filter, after, limit).await
    }
}

impl TemplateStore for Templates<'_, DatabaseTransaction> {
    async fn insert(&self, template: &CouponTemplate) -> Result<(), MarketingError> {
        insert(self.0, template).await
    }

    async fn change(
        &self,
        tenant: &TenantId,
        id: TemplateId,
        expected_version: Option<i64>,
        what: &TemplateChange,
        now: UnixMicros,
        actor: Option<&str>,
    ) -> Result<CouponTemplate, MarketingError> {
        change(self.0, tenant, id, expected_version, what, now, actor).await
    }

    async fn get_for_update(
        &self,
        tenant: &TenantId,
        id: TemplateId,
    ) -> Result<CouponTemplate, MarketingError> {
        get_for_update(self.0, tenant, id).await
    }

    async fn take_stock(
        &self,
        tenant: &TenantId,
        id: TemplateId,
        count: i64,
        codes: i64,
        fence: Option<i64>,
    ) -> Result<CouponTemplate, MarketingError> {
        take_stock(self.0, tenant, id, count, codes, fence).await
    }

    async fn add_codes(
        &self,
        tenant: &TenantId,
        id: TemplateId,
        unique: i64,
        shared: i64,
    ) -> Result<CouponTemplate, MarketingError> {
        add_codes(self.0, tenant, id, unique, shared).await
    }

    async fn add_used(
        &self,
        tenant: &TenantId,
        id: TemplateId,
        delta: i64,
        discount: i64,
    ) -> Result<CouponTemplate, MarketingError> {
        add_used(self.0, tenant, id, delta, discount).await
    }
}

/// Filters of a template list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateFilter {
    pub enabled: Option<bool>,
    pub discount_type: Option<DiscountType>,
    /// Only templates that accept claims at this time.
    pub claimable_at: Option<UnixMicros>,
    pub show_archived: bool,
}

async fn insert(
    conn: &impl ConnectionTrait,
    template: &CouponTemplate,
) -> Result<(), MarketingError> {
    let mut row = tpl::ActiveModel {
        id: Set(template.id.0),
        tenant_id: Set(template.tenant_id.as_str().to_owned()),
        total_stock: Set(template.total_stock),
        remaining_stock: Set(template.remaining_stock),
        claimed_count: Set(template.claimed_count),
        used_count: Set(template.used_count),
        archived_at: Set(template.archived_at.map(|t| t.0)),
        version: Set(template.version),
        revision: Set(template.revision),
        fence_token: Set(0),
        created_at: Set(template.created_at.0),
        updated_at: Set(template.updated_at.0),
        actor: Set(template.actor.clone()),
        unique_code_count: Set(template.codes.unique),
        unique_codes_claimed: Set(template.codes.unique_claimed),
        shared_code_count: Set(template.codes.shared),
        budget_used: Set(template.budget_used),
        ..Default::default()
    };
    set_terms(&mut row, &template.terms);
    tpl::Entity::insert(row)
        .exec_without_returning(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

async fn find(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: TemplateId,
) -> Result<Option<CouponTemplate>, MarketingError> {
    tpl::Entity::find_by_id(id.0)
        .filter(tpl::Column::TenantId.eq(tenant.as_str()))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

/// Like [`find`], but a missing template (or one of another tenant) is `TemplateNotFound`.
async fn get(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: TemplateId,
) -> Result<CouponTemplate, MarketingError> {
    find(conn, tenant, id)
        .await?
        .ok_or(MarketingError::Refused(Refusal::TemplateNotFound))
}

/// Up to `limit` templates after `after` in id (creation) order. Keyset pagination: rows
/// inserted meanwhile never shift a page.
async fn list(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    filter: &TemplateFilter,
    after: Option<TemplateId>,
    limit: u64,
) -> Result<Vec<CouponTemplate>, MarketingError> {
    let mut query = tpl::Entity::find().filter(tpl::Column::TenantId.eq(tenant.as_str()));
    if let Some(after) = after {
        query = query.filter(tpl::Column::Id.gt(after.0));
    }
    if let Some(enabled) = filter.enabled {
        query = query.filter(tpl::Column::Enabled.eq(enabled));
    }
    if let Some(discount_type) = filter.discount_type {
        query = query.filter(tpl::Column::DiscountType.eq(discount_type.code()));
    }
    if !filter.show_archived {
        query = query.filter(tpl::Column::ArchivedAt.is_null());
    }
    if let Some(at) = filter.claimable_at {
        query = query.filter(
            Condition::all()
                .add(tpl::Column::Enabled.eq(true))
                .add(tpl::Column::ArchivedAt.is_null())
                .add(tpl::Column::DistributionStartAt.lte(at.0))
                .add(tpl::Column::DistributionEndAt.gt(at.0))
                .add(tpl::Column::RemainingStock.gt(0)),
        );
    }
    query
        .order_by_asc(tpl::Column::Id)
        .limit(limit)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// A change of a live template.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateChange {
    /// Replace the editable terms.
    Terms(Box<TemplateTerms>),
    Enabled(bool),
    /// Add (signed) to total and remaining stock. Remaining stock never goes below zero, so
    /// stock already claimed can never be taken away.
    Stock(i64),
    /// Archive (soft-delete): disabled and frozen, still readable.
    Archive,
}

/// Applies `change` by `actor` to the live template `id` of `tenant` (whose version must be
/// `expected_version` when given), raising its version.
async fn change(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: TemplateId,
    expected_version: Option<i64>,
    change: &TemplateChange,
    now: UnixMicros,
    actor: Option<&str>,
) -> Result<CouponTemplate, MarketingError> {
    let mut stock_change = None;
    let update = match change {
        TemplateChange::Terms(terms) => {
            let mut row = tpl::ActiveModel::default();
            set_terms(&mut row, terms);
            tpl::Entity::update_many().set(row)
        }
        TemplateChange::Enabled(enabled) => {
            tpl::Entity::update_many().col_expr(tpl::Column::Enabled, Expr::value(*enabled))
        }
        TemplateChange::Stock(amount) => {
            stock_change = Some(*amount);
            tpl::Entity::update_many()
                .col_expr(
                    tpl::Column::TotalStock,
                    Expr::col(tpl::Column::TotalStock).add(*amount),
                )
                .col_expr(
                    tpl::Column::RemainingStock,
                    Expr::col(tpl::Column::RemainingStock).add(*amount),
                )
                .filter(Expr::col(tpl::Column::RemainingStock).add(*amount).gte(0))
                .filter(
                    Expr::col(tpl::Column::TotalStock)
                        .add(*amount)
                        .lte(MAX_TOTAL_STOCK),
                )
        }
        TemplateChange::Archive => tpl::Entity::update_many()
            .col_expr(tpl::Column::ArchivedAt, Expr::value(now.0))
            .col_expr(tpl::Column::Enabled, Expr::value(false)),
    }
    .col_expr(tpl::Column::Actor, Expr::value(actor));
    conditional_update(
        conn,
        tenant,
        id,
        expected_version,
        now,
        update,
        stock_change,
    )
    .await
}

/// Runs `update` on the live template `id` of `tenant` (with version `expected_version` when
/// given), raising its version. When no row matched, reads the template to say why.
async fn conditional_update(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: TemplateId,
    expected_version: Option<i64>,
    now: UnixMicros,
    update: sea_orm::UpdateMany<tpl::Entity>,
    stock_change: Option<i64>,
) -> Result<CouponTemplate, MarketingError> {
    let mut update = update
        .col_expr(tpl::Column::Version, Expr::col(tpl::Column::Version).add(1))
        .col_expr(
            tpl::Column::Revision,
            Expr::col(tpl::Column::Revision).add(1),
        )
        .col_expr(tpl::Column::UpdatedAt, Expr::value(now.0))
        .filter(tpl::Column::Id.eq(id.0))
        .filter(tpl::Column::TenantId.eq(tenant.as_str()))
        .filter(tpl::Column::ArchivedAt.is_null());
    if let Some(version) = expected_version {
        update = update.filter(tpl::Column::Version.eq(version));
    }
    let mut rows = update.exec_with_returning(conn).await.map_err(db_error)?;
    if let Some(row) = rows.pop() {
        return to_domain(row);
    }
    let current = get(conn, tenant, id).await?;
    Err(if current.archived_at.is_some() {
        MarketingError::Refused(Refusal::TemplateArchived)
    } else if let Some(expected) = expected_version.filter(|v| *v != current.version) {
        MarketingError::Refused(Refusal::VersionMismatch {
            expected,
            current: current.version,
        })
    } else if let Some(amount) = stock_change {
        if current.remaining_stock + amount < 0 {
            MarketingError::Refused(Refusal::StockBelowClaimed {
                remaining: current.remaining_stock,
            })
        } else {
            MarketingError::invalid(
                "amount",
                format!("total stock would exceed {MAX_TOTAL_STOCK}"),
            )
        }
    } else {
        MarketingError::internal("template update matched no row for no known reason")
    })
}

fn set_terms(row: &mut tpl::ActiveModel, terms: &TemplateTerms) {
    row.name = Set(terms.name.clone());
    row.description = Set(terms.description.clone());
    let columns = crate::cart_terms::to_columns(&terms.discount, &terms.cart);
    row.discount_type = Set(columns.kind);
    row.discount_amount = Set(columns.amount);
    row.discount_basis_points = Set(columns.basis_points);
    row.max_discount_amount = Set(columns.cap);
    row.cart_terms = Set(columns.cart_terms);
    row.budget_amount = Set(terms.budget_amount);
    row.currency = Set(terms.currency.as_str().to_owned());
    row.min_spend_amount = Set(terms.min_spend_amount);
    row.per_member_limit = Set(terms.per_member_limit);
    row.distribution_start_at = Set(terms.distribution_start.0);
    row.distribution_end_at = Set(terms.distribution_end.0);
    row.validity_kind = Set(terms.validity.kind_code());
    let (from, until, days) = match terms.validity {
        Validity::FixedWindow {
            valid_from,
            valid_until,
        } => (Some(valid_from.0), Some(valid_until.0), None),
        Validity::Relative { valid_days } => (None, None, Some(valid_days)),
    };
    row.valid_from_at = Set(from);
    row.valid_until_at = Set(until);
    row.valid_days = Set(days);
    row.enabled = Set(terms.enabled);
}

/// A row the schema allows but the domain cannot represent is corrupt data: internal error.
fn to_domain(row: tpl::Model) -> Result<CouponTemplate, MarketingError> {
    let corrupt = |what: &str| {
        MarketingError::internal(format!("coupon template {} has a corrupt {what}", row.id))
    };
    let (discount, cart) = crate::cart_terms::from_columns(crate::cart_terms::DiscountColumns {
        kind: row.discount_type,
        amount: row.discount_amount,
        basis_points: row.discount_basis_points,
        cap: row.max_discount_amount,
        cart_terms: row.cart_terms.clone(),
    })
    .ok_or_else(|| corrupt("discount"))?;
    let validity = match (
        row.validity_kind,
        row.valid_from_at,
        row.valid_until_at,
        row.valid_days,
    ) {
        (1, Some(from), Some(until), _) => Validity::FixedWindow {
            valid_from: UnixMicros(from),
            valid_until: UnixMicros(until),
        },
        (2, _, _, Some(valid_days)) => Validity::Relative { valid_days },
        _ => return Err(corrupt("validity")),
    };
    let tenant_id =
        TenantId::parse("tenant_id", &row.tenant_id).map_err(|_| corrupt("tenant id"))?;
    let currency = Currency::parse("currency", &row.currency).map_err(|_| corrupt("currency"))?;
    Ok(CouponTemplate {
        id: TemplateId(row.id),
        tenant_id,
        terms: TemplateTerms {
            name: row.name,
            description: row.description,
            discount,
            currency,
            min_spend_amount: row.min_spend_amount,
            per_member_limit: row.per_member_limit,
            distribution_start: UnixMicros(row.distribution_start_at),
            distribution_end: UnixMicros(row.distribution_end_at),
            validity,
            enabled: row.enabled,
            cart,
            budget_amount: row.budget_amount,
        },
        total_stock: row.total_stock,
        remaining_stock: row.remaining_stock,
        claimed_count: row.claimed_count,
        used_count: row.used_count,
        version: row.version,
        revision: row.revision,
        created_at: UnixMicros(row.created_at),
        updated_at: UnixMicros(row.updated_at),
        archived_at: row.archived_at.map(UnixMicros),
        actor: row.actor,
        codes: CodeInventory {
            unique: row.unique_code_count,
            unique_claimed: row.unique_codes_claimed,
            shared: row.shared_code_count,
        },
        budget_used: row.budget_used,
    })
}

/// Reads a template and locks its row until the transaction ends (PostgreSQL `FOR UPDATE`;
/// a SQLite write transaction already excludes other writers).
async fn get_for_update(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: TemplateId,
) -> Result<CouponTemplate, MarketingError> {
    tpl::Entity::find_by_id(id.0)
        .filter(tpl::Column::TenantId.eq(tenant.as_str()))
        .lock_exclusive()
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()?
        .ok_or(MarketingError::Refused(Refusal::TemplateNotFound))
}

/// Moves `count` coupons from remaining to claimed stock, never below zero, and returns the
/// template as written. With a lock `fence`, the write is refused (`ConcurrentModification`)
/// if a later lock holder already wrote: a holder whose lock lapsed cannot write.
async fn take_stock(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: TemplateId,
    count: i64,
    codes: i64,
    fence: Option<i64>,
) -> Result<CouponTemplate, MarketingError> {
    let mut update = tpl::Entity::update_many()
        .col_expr(
            tpl::Column::Revision,
            Expr::col(tpl::Column::Revision).add(1),
        )
        .col_expr(
            tpl::Column::RemainingStock,
            Expr::col(tpl::Column::RemainingStock).sub(count),
        )
        .col_expr(
            tpl::Column::ClaimedCount,
            Expr::col(tpl::Column::ClaimedCount).add(count),
        )
        .filter(tpl::Column::Id.eq(id.0))
        .filter(tpl::Column::TenantId.eq(tenant.as_str()))
        .filter(tpl::Column::RemainingStock.gte(count));
    if codes > 0 {
        update = update.col_expr(
            tpl::Column::UniqueCodesClaimed,
            Expr::col(tpl::Column::UniqueCodesClaimed).add(codes),
        );
    }
    if let Some(fence) = fence {
        update = update
            .col_expr(tpl::Column::FenceToken, Expr::value(fence))
            .filter(tpl::Column::FenceToken.lte(fence));
    }
    match update
        .exec_with_returning(conn)
        .await
        .map_err(db_error)?
        .pop()
    {
        Some(row) => to_domain(row),
        None => {
            // Told apart (on this path of lost races only): a newer lock holder's write, or
            // the stock.
            if let Some(fence) = fence {
                let current: Option<i64> = tpl::Entity::find_by_id(id.0)
                    .select_only()
                    .column(tpl::Column::FenceToken)
                    .into_tuple()
                    .one(conn)
                    .await
                    .map_err(db_error)?;
                if let Some(current) = current.filter(|current| *current > fence) {
                    return Err(MarketingError::ConcurrentModification(Box::new(
                        marketing_domain::error::Fenced { fence, current },
                    )));
                }
            }
            Err(MarketingError::ConcurrentModification(
                "stock changed under a claim batch".into(),
            ))
        }
    }
}

/// Adds `delta` (+1 on use, -1 on return) to the template's used count and `discount` to
/// (or, returning, from) its budget's spending; returns the template as written. A use is one
/// conditional update: concurrent uses queue on the row and each sees the last, so a use that
/// the budget cannot cover is refused (`BUDGET_EXHAUSTED`), never cut.
async fn add_used(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: TemplateId,
    delta: i64,
    discount: i64,
) -> Result<CouponTemplate, MarketingError> {
    let spent = Expr::col(tpl::Column::BudgetUsed);
    let (budget_used, covered) = if delta > 0 {
        (
            spent.clone().add(discount),
            Condition::any()
                .add(tpl::Column::BudgetAmount.is_null())
                .add(
                    spent
                        .add(discount)
                        .lte(Expr::col(tpl::Column::BudgetAmount)),
                ),
        )
    } else {
        // A return gives its discount back; never below zero (a coupon used before budgets
        // were counted gives back what was never taken).
        (
            Expr::Case(Box::new(
                Expr::case(spent.clone().gte(discount), spent.sub(discount)).finally(0),
            )),
            Condition::all(),
        )
    };
    let written = tpl::Entity::update_many()
        .col_expr(
            tpl::Column::Revision,
            Expr::col(tpl::Column::Revision).add(1),
        )
        .col_expr(
            tpl::Column::UsedCount,
            Expr::col(tpl::Column::UsedCount).add(delta),
        )
        .col_expr(tpl::Column::BudgetUsed, budget_used)
        .filter(tpl::Column::Id.eq(id.0))
        .filter(tpl::Column::TenantId.eq(tenant.as_str()))
        .filter(covered)
        .exec_with_returning(conn)
        .await
        .map_err(db_error)?
        .pop();
    match written {
        Some(row) => to_domain(row),
        None => {
            // Not found, or the budget did not cover the use.
            let current = get(conn, tenant, id).await?;
            Err(MarketingError::Refused(Refusal::BudgetExhausted {
                remaining: current.budget_remaining().unwrap_or(0),
                discount,
            }))
        }
    }
}

/// Counts codes added to a template's inventory; the template as written.
async fn add_codes(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: TemplateId,
    unique: i64,
    shared: i64,
) -> Result<CouponTemplate, MarketingError> {
    add_to_counters(
        conn,
        tenant,
        id,
        &[
            (tpl::Column::UniqueCodeCount, unique),
            (tpl::Column::SharedCodeCount, shared),
        ],
    )
    .await
}

/// Adds each delta to its counter column, raising the revision (not the version: counters
/// are not terms); the template as written.
async fn add_to_counters(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: TemplateId,
    deltas: &[(tpl::Column, i64)],
) -> Result<CouponTemplate, MarketingError> {
    let mut update = tpl::Entity::update_many().col_expr(
        tpl::Column::Revision,
        Expr::col(tpl::Column::Revision).add(1),
    );
    for &(column, delta) in deltas {
        update = update.col_expr(column, Expr::col(column).add(delta));
    }
    update
        .filter(tpl::Column::Id.eq(id.0))
        .filter(tpl::Column::TenantId.eq(tenant.as_str()))
        .exec_with_returning(conn)
        .await
        .map_err(db_error)?
        .pop()
        .map(to_domain)
        .transpose()?
        .ok_or(MarketingError::Refused(Refusal::TemplateNotFound))
}
