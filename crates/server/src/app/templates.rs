//! Coupon-template use cases. Mutations run in one transaction that also records their
//! idempotency outcome; reads go through the template cache.

use marketing_domain::{
    MarketingError, TemplateId, TenantId,
    coupon_code::CodeInventory,
    coupon_template::{CouponTemplate, TemplateDraft, TemplateField, TemplateTerms},
    error::FieldViolation,
    error::Refusal,
};
use marketing_infra::cache::Versioned;
use marketing_storage::{
    idempotency::IdempotencyKey,
    templates::{TemplateChange, TemplateFilter, TemplateReads, TemplateStore},
    unit::UnitOfWork,
};

use super::{Answer, Recorded, Shared};
use crate::wire::{
    self,
    events::{TemplateChanged, template_event},
};

pub struct CreateTemplate {
    pub key: IdempotencyKey,
    pub terms: TemplateTerms,
    pub total_stock: i64,
    /// The API client making it.
    pub actor: Option<String>,
}

pub struct ListTemplates {
    pub tenant_id: TenantId,
    pub filter: TemplateFilter,
    pub after: Option<TemplateId>,
    pub page_size: u64,
}

pub struct UpdateTemplate {
    pub key: IdempotencyKey,
    pub id: TemplateId,
    pub expected_version: i64,
    /// The client's template; only `fields` of it are taken.
    pub incoming: TemplateDraft,
    pub fields: Vec<TemplateField>,
    pub actor: Option<String>,
}

/// Enable or disable, add stock, or archive.
pub struct ChangeTemplate {
    pub key: IdempotencyKey,
    pub id: TemplateId,
    pub expected_version: Option<i64>,
    pub change: TemplateChange,
    pub actor: Option<String>,
}

pub(super) fn cache_key(tenant_id: &TenantId, id: TemplateId) -> String {
    format!("tpl:{tenant_id}:{id}")
}

/// What every [`cache_key`] of `tenant` begins with (followed by an id without `:`).
pub(super) fn cache_family(tenant_id: &TenantId) -> String {
    format!("tpl:{tenant_id}:")
}

/// Coupon templates: created, changed and archived in units of work; read through the cache.
#[derive(Clone)]
pub struct TemplateService {
    pub(crate) shared: Shared,
}

impl TemplateService {
    pub async fn create_template(
        &self,
        cmd: CreateTemplate,
    ) -> Result<Answer<CouponTemplate>, MarketingError> {
        let mut unit = begin_or_replay!(self.shared, &cmd.key);
        let now = self.shared.clock.now();
        let template = CouponTemplate {
            id: TemplateId::new(),
            tenant_id: cmd.key.tenant_id.clone(),
            terms: cmd.terms,
            total_stock: cmd.total_stock,
            remaining_stock: cmd.total_stock,
            claimed_count: 0,
            used_count: 0,
            version: 1,
            revision: 1,
            created_at: now,
            updated_at: now,
            archived_at: None,
            actor: cmd.actor,
            codes: CodeInventory::default(),
            budget_used: 0,
        };
        unit.templates().insert(&template).await?;
        unit.record(template_event(
            TemplateChanged::Created,
            &template,
            &cmd.key.request_id,
        ));
        self.shared
            .commit_idempotent(unit, &cmd.key, &template)
            .await?;
        self.cache_template(&template).await;
        tracing::info!(template_id = %template.id, "coupon template created");
        Ok(Answer::Fresh(template))
    }

    pub async fn get_template(
        &self,
        tenant_id: &TenantId,
        id: TemplateId,
    ) -> Result<Answer<CouponTemplate>, MarketingError> {
        let key = cache_key(tenant_id, id);
        match self.shared.cache.get(&key).await {
            Ok(Some(entry)) => return Ok(Answer::Recorded(Recorded::new(entry.value))),
            Ok(None) => {}
            Err(err) => {
                marketing_infra::warn_every!(error = %err, "template cache unavailable; reading the database")
            }
        }
        let template = self.shared.db.templates().get(tenant_id, id).await?;
        self.cache_template(&template).await;
        Ok(Answer::Fresh(template))
    }

    /// The template from the database, replacing a cached copy its reader could not use (an
    /// entry written in another format, or damaged in Redis): evicted first, since the cache
    /// keeps the copy of the highest revision.
    pub async fn reload_template(
        &self,
        tenant_id: &TenantId,
        id: TemplateId,
    ) -> Result<CouponTemplate, MarketingError> {
        let key = cache_key(tenant_id, id);
        if let Err(err) = self.shared.cache.evict(&key).await {
            marketing_infra::warn_every!(error = %err, cache_key = %key, "evicting template failed");
        }
        let template = self.shared.db.templates().get(tenant_id, id).await?;
        self.cache_template(&template).await;
        Ok(template)
    }

    /// One page, and the last template of it when another page may follow.
    pub async fn list_templates(
        &self,
        query: ListTemplates,
    ) -> Result<(Vec<CouponTemplate>, Option<TemplateId>), MarketingError> {
        // One more than asked tells whether there is a next page.
        let mut page = self
            .shared
            .db
            .templates()
            .list(
                &query.tenant_id,
                &query.filter,
                query.after,
                query.page_size + 1,
            )
            .await?;
        let has_more = page.len() as u64 > query.page_size;
        page.truncate(query.page_size as usize);
        let next = has_more.then(|| page.last().map(|t| t.id)).flatten();
        Ok((page, next))
    }

    pub async fn update_template(
        &self,
        cmd: UpdateTemplate,
    ) -> Result<Answer<CouponTemplate>, MarketingError> {
        let unit = begin_or_replay!(self.shared, &cmd.key);
        let tenant_id = &cmd.key.tenant_id;
        let current = unit.templates().get(tenant_id, cmd.id).await?;
        if current.archived_at.is_some() {
            return Err(MarketingError::Refused(Refusal::TemplateArchived));
        }
        if current.version != cmd.expected_version {
            return Err(MarketingError::Refused(Refusal::VersionMismatch {
                expected: cmd.expected_version,
                current: current.version,
            }));
        }
        let mut draft = current.terms.to_draft();
        draft.overwrite(cmd.incoming, &cmd.fields);
        let terms = TemplateTerms::parse(draft).map_err(|violations| {
            violations
                .into_iter()
                .map(|v| v.under("coupon_template"))
                .collect::<Vec<FieldViolation>>()
        })?;
        let updated = unit
            .templates()
            .change(
                tenant_id,
                cmd.id,
                Some(cmd.expected_version),
                &TemplateChange::Terms(Box::new(terms)),
                self.shared.clock.now(),
                cmd.actor.as_deref(),
            )
            .await?;
        self.finish_change(unit, &cmd.key, TemplateChanged::Updated, updated)
            .await
    }

    pub async fn change_template(
        &self,
        cmd: ChangeTemplate,
    ) -> Result<Answer<CouponTemplate>, MarketingError> {
        let unit = begin_or_replay!(self.shared, &cmd.key);
        let changed = unit
            .templates()
            .change(
                &cmd.key.tenant_id,
                cmd.id,
                cmd.expected_version,
                &cmd.change,
                self.shared.clock.now(),
                cmd.actor.as_deref(),
            )
            .await?;
        let change = match cmd.change {
            TemplateChange::Terms(_) => TemplateChanged::Updated,
            TemplateChange::Enabled(true) => TemplateChanged::Enabled,
            TemplateChange::Enabled(false) => TemplateChanged::Disabled,
            TemplateChange::Stock(amount) => TemplateChanged::StockAdded(amount),
            TemplateChange::Archive => TemplateChanged::Archived,
        };
        self.finish_change(unit, &cmd.key, change, changed).await
    }

    /// Records the changed template as the request's outcome, commits, refreshes the cache.
    async fn finish_change(
        &self,
        mut unit: UnitOfWork,
        key: &IdempotencyKey,
        change: TemplateChanged,
        updated: CouponTemplate,
    ) -> Result<Answer<CouponTemplate>, MarketingError> {
        unit.record(template_event(change, &updated, &key.request_id));
        self.shared.commit_idempotent(unit, key, &updated).await?;
        self.cache_template(&updated).await;
        tracing::info!(template_id = %updated.id, version = updated.version, "coupon template changed");
        Ok(Answer::Fresh(updated))
    }

    /// Writes a template just written to the database through to the cache, as the message
    /// a reader is answered with.
    pub(super) async fn cache_template(&self, template: &CouponTemplate) {
        let entry = Versioned {
            version: template.revision,
            value: wire::record(template),
        };
        let key = cache_key(&template.tenant_id, template.id);
        self.shared
            .write_through(&key, entry, self.shared.config.template_cache_ttl)
            .await;
    }
}
