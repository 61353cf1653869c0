//! Tenants' settings: read, and updated in a unit of work under their etag.

use marketing_domain::{
    MarketingError, TenantId,
    tenant_settings::{SettingsDraft, SettingsField, TenantSettings},
};
use marketing_storage::{
    idempotency::IdempotencyKey,
    settings::{SettingsReads, SettingsStore},
};

use super::{Answer, Shared};
use crate::wire::events::settings_event;

pub struct UpdateSettings {
    pub key: IdempotencyKey,
    /// The etag: the current version (0 for settings never updated).
    pub expected_version: i64,
    pub draft: SettingsDraft,
    pub fields: Vec<SettingsField>,
    pub actor: Option<String>,
}

#[derive(Clone)]
pub struct SettingsService {
    pub(crate) shared: Shared,
}

impl SettingsService {
    pub async fn get_settings(&self, tenant: &TenantId) -> Result<TenantSettings, MarketingError> {
        self.shared.db.settings().get(tenant).await
    }

    pub async fn update_settings(
        &self,
        cmd: UpdateSettings,
    ) -> Result<Answer<TenantSettings>, MarketingError> {
        let mut unit = begin_or_replay!(self.shared, &cmd.key);
        let tenant = &cmd.key.tenant_id;
        let current = unit.settings().get(tenant).await?;
        if current.version != cmd.expected_version {
            return Err(MarketingError::Refused(
                marketing_domain::error::Refusal::VersionMismatch {
                    expected: cmd.expected_version,
                    current: current.version,
                },
            ));
        }
        let terms = current
            .terms
            .updated(cmd.draft, &cmd.fields)
            .map_err(|violations| MarketingError::Refused(violations.into()))?;
        let updated = unit
            .settings()
            .update(
                tenant,
                cmd.expected_version,
                &terms,
                self.shared.clock.now(),
                cmd.actor.as_deref(),
            )
            .await?;
        unit.record(settings_event(&updated, &cmd.key.request_id));
        self.shared
            .commit_idempotent(unit, &cmd.key, &updated)
            .await?;
        tracing::info!(version = updated.version, "tenant settings updated");
        Ok(Answer::Fresh(updated))
    }
}
