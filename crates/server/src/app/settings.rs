//! Tenants' settings: read, and updated in a unit of work under their etag.

use marketing_domain::{
    MarketingError, TenantId,
    tenant_settings::{SettingsDraft, SettingsField, TenantSettings},
};
use marketing_storage::{
    idempotency::IdempotencyKey,
    settings::{SettingsReads, SettingsStore},
};

use marketing_infra::cache::Versioned;

use super::{Answer, Shared};
use crate::wire::{self, events::settings_event};

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

pub(super) fn settings_cache_key(tenant: &TenantId) -> String {
    format!("settings:{tenant}")
}

impl Shared {
    /// A tenant's settings, read through the two-level cache (checkout reads them on every
    /// price); an update writes its copy through, newest version winning.
    pub(crate) async fn tenant_settings(
        &self,
        tenant: &TenantId,
    ) -> Result<TenantSettings, MarketingError> {
        let key = settings_cache_key(tenant);
        match self.cache.get(&key).await {
            Ok(Some(entry)) => match wire::settings_from_record(tenant, &entry.value) {
                Some(settings) => return Ok(settings),
                None => marketing_infra::warn_every!(cache_key = %key, "undecodable cache entry"),
            },
            Ok(None) => {}
            Err(err) => {
                marketing_infra::warn_every!(error = %err, "settings cache unavailable; reading the database")
            }
        }
        let settings = self.db.settings().get(tenant).await?;
        self.cache_settings(&settings).await;
        Ok(settings)
    }

    async fn cache_settings(&self, settings: &TenantSettings) {
        let entry = Versioned {
            version: settings.version,
            value: wire::record(settings),
        };
        self.write_through(
            &settings_cache_key(&settings.tenant_id),
            entry,
            self.config.rule_cache_ttl,
        )
        .await;
    }
}

impl SettingsService {
    pub async fn get_settings(&self, tenant: &TenantId) -> Result<TenantSettings, MarketingError> {
        self.shared.tenant_settings(tenant).await
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
        self.shared.cache_settings(&updated).await;
        tracing::info!(version = updated.version, "tenant settings updated");
        Ok(Answer::Fresh(updated))
    }
}
