//! `TenantSettingsService`: a tenant's points program and per-order coupon cap.

use marketing_domain::{
    TenantId,
    error::Violations,
    tenant_settings::{SettingsDraft, SettingsField},
};
use marketing_proto::v1::{self as pb, tenant_settings_service_server::TenantSettingsService};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::parse::{
    Edge, NO_SERVER_LIMIT, Tenanted, capped, finish, mutation_key, mutations, reply, tenanted,
};
use crate::{
    app::{SettingsService, UpdateSettings},
    wire::{ToWire, status::to_status},
};

pub struct Settings {
    settings: SettingsService,
}

impl Settings {
    pub fn new(settings: SettingsService) -> Self {
        Self { settings }
    }

    fn edge<'a, R: Tenanted>(&'a self, request: &'a Request<R>) -> Result<Edge<'a, R>, Status> {
        Edge::new(request, NO_SERVER_LIMIT, &self.settings.shared)
    }
}

tenanted!(pb::GetTenantSettingsRequest);

mutations! {
    pb::UpdateTenantSettingsRequest => "UpdateTenantSettings",
}

impl TryFrom<Edge<'_, pb::UpdateTenantSettingsRequest>> for UpdateSettings {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::UpdateTenantSettingsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let key = mutation_key(&mut violations, &edge);
        let Some(settings) = &r.tenant_settings else {
            violations.push("tenant_settings", "is required");
            return finish(violations, || None);
        };
        if settings.version < 0 {
            violations.push("tenant_settings.version", "must not be negative");
        }
        let mut fields = Vec::new();
        match r.update_mask.as_ref().map(|mask| mask.paths.as_slice()) {
            None | Some([]) => violations.push("update_mask", "must name the fields to update"),
            Some(paths) if paths.iter().any(|p| p == "*") => fields.extend(SettingsField::ALL),
            Some(paths) => {
                for path in paths {
                    match SettingsField::from_path(path) {
                        Ok(field) if !fields.contains(&field) => fields.push(field),
                        Ok(_) => {}
                        Err(problem) => violations.push("update_mask", problem),
                    }
                }
            }
        }
        // Past the cap the list is refused before its entries are read.
        let points_values = capped(
            &mut violations,
            "tenant_settings.points_values",
            &settings.points_values,
            marketing_domain::tenant_settings::MAX_POINTS_VALUES,
        )
        .map(|values| {
            values
                .iter()
                .map(|v| (v.currency.clone(), v.points, v.amount))
                .collect()
        })
        .unwrap_or_default();
        let draft = SettingsDraft {
            points_values,
            max_points_share_bp: settings.max_points_share_bp,
            min_points_redemption: settings.min_points_redemption,
            max_coupons_per_order: settings.max_coupons_per_order,
        };
        finish(violations, || {
            Some(UpdateSettings {
                key: key?,
                expected_version: settings.version,
                draft,
                fields,
                actor: edge.actor(),
            })
        })
    }
}

#[tonic::async_trait]
impl TenantSettingsService for Settings {
    #[instrument(name = "TenantSettingsService.GetTenantSettings", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn get_tenant_settings(
        &self,
        request: Request<pb::GetTenantSettingsRequest>,
    ) -> Result<Response<pb::GetTenantSettingsResponse>, Status> {
        let edge = self.edge(&request)?;
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &edge.request.tenant_id));
        let tenant = finish(violations, || tenant)?;
        let settings = self
            .settings
            .get_settings(&tenant)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetTenantSettingsResponse {
            tenant_settings: Some(settings.to_wire()),
        }))
    }

    #[instrument(name = "TenantSettingsService.UpdateTenantSettings", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, request_id = %request.get_ref().request_id))]
    async fn update_tenant_settings(
        &self,
        request: Request<pb::UpdateTenantSettingsRequest>,
    ) -> Result<Response<pb::UpdateTenantSettingsResponse>, Status> {
        let command = UpdateSettings::try_from(self.edge(&request)?)?;
        let settings = reply(self.settings.update_settings(command).await)?;
        Ok(Response::new(pb::UpdateTenantSettingsResponse {
            tenant_settings: Some(settings),
        }))
    }
}
