//! Points rules: created, updated and listed, and read through the two-level cache when an
//! earn names an event.

use super::*;

impl PointsService {
    pub(crate) fn rule_cache_key(tenant: &TenantId, event: &str) -> String {
        format!("rule:{tenant}:{event}")
    }

    /// What every [`Self::rule_cache_key`] of `tenant` begins with (event types have no `:`).
    pub(crate) fn rule_cache_family(tenant: &TenantId) -> String {
        format!("rule:{tenant}:")
    }

    /// The tenant's rule for an event, read through the cache.
    pub(super) async fn rule_for_event(
        &self,
        tenant: &TenantId,
        event: &str,
    ) -> Result<PointsRule, MarketingError> {
        let key = Self::rule_cache_key(tenant, event);
        match self.shared.cache.get(&key).await {
            Ok(Some(entry)) => match wire::rule_from_record(tenant, &entry.value) {
                Some(rule) => return Ok(rule),
                None => {
                    marketing_infra::warn_every!(cache_key = %key, "undecodable cache entry")
                }
            },
            Ok(None) => {}
            Err(err) => {
                marketing_infra::warn_every!(error = %err, "rule cache unavailable; reading the database")
            }
        }
        let rule = self
            .shared
            .db
            .points()
            .find_rule(tenant, RuleRef::Event(event))
            .await?
            .ok_or(MarketingError::Refused(Refusal::RuleNotFound))?;
        self.cache_rule(&rule).await;
        Ok(rule)
    }

    /// Writes a rule through to the cache (newest version wins).
    async fn cache_rule(&self, rule: &PointsRule) {
        let entry = Versioned {
            version: rule.version,
            value: wire::record(rule),
        };
        let key = Self::rule_cache_key(&rule.tenant_id, &rule.event_type);
        self.shared
            .write_through(&key, entry, self.shared.config.rule_cache_ttl)
            .await;
    }

    pub async fn create_rule(
        &self,
        key: IdempotencyKey,
        event_type: String,
        terms: RuleTerms,
        actor: Option<String>,
    ) -> Result<Answer<PointsRule>, MarketingError> {
        let mut unit = begin_or_replay!(self.shared, &key);
        let now = self.shared.clock.now();
        let rule = PointsRule {
            id: Uuid::now_v7(),
            tenant_id: key.tenant_id.clone(),
            event_type,
            terms,
            version: 1,
            created_at: now,
            updated_at: now,
            actor,
        };
        unit.points().insert_rule(&rule).await?;
        unit.record(wire::events::rule_event(true, &rule, &key.request_id));
        self.shared.commit_idempotent(unit, &key, &rule).await?;
        self.cache_rule(&rule).await;
        Ok(Answer::Fresh(rule))
    }

    pub async fn update_rule(
        &self,
        key: IdempotencyKey,
        id: Uuid,
        expected_version: i64,
        incoming: RuleTerms,
        fields: &[RuleField],
        actor: Option<&str>,
    ) -> Result<Answer<PointsRule>, MarketingError> {
        let mut unit = begin_or_replay!(self.shared, &key);
        let tenant = &key.tenant_id;
        let current = unit
            .points()
            .find_rule(tenant, RuleRef::Id(id))
            .await?
            .ok_or(MarketingError::Refused(Refusal::RuleNotFound))?;
        if current.version != expected_version {
            return Err(MarketingError::Refused(Refusal::VersionMismatch {
                expected: expected_version,
                current: current.version,
            }));
        }
        let mut terms = current.terms.clone();
        terms.overwrite(incoming, fields);
        let terms = terms.check().map_err(|v| {
            MarketingError::Refused(Refusal::InvalidArgument(
                v.into_iter().map(|v| v.under("points_rule")).collect(),
            ))
        })?;
        let now = self.shared.clock.now();
        let updated = unit
            .points()
            .update_rule(tenant, id, expected_version, &terms, now, actor)
            .await?
            .ok_or(MarketingError::Refused(Refusal::VersionMismatch {
                expected: expected_version,
                current: expected_version + 1,
            }))?;
        unit.record(wire::events::rule_event(false, &updated, &key.request_id));
        self.shared.commit_idempotent(unit, &key, &updated).await?;
        self.cache_rule(&updated).await;
        Ok(Answer::Fresh(updated))
    }

    pub async fn list_rules(
        &self,
        tenant: &TenantId,
        enabled: Option<bool>,
        after: Option<Uuid>,
        page_size: u64,
    ) -> Result<(Vec<PointsRule>, Option<Uuid>), MarketingError> {
        let mut page = self
            .shared
            .db
            .points()
            .list_rules(tenant, enabled, after, page_size + 1)
            .await?;
        let has_more = page.len() as u64 > page_size;
        page.truncate(page_size as usize);
        let next = has_more.then(|| page.last().map(|r| r.id)).flatten();
        Ok((page, next))
    }
}
