//! `CouponTemplateService`: each handler parses its request into a command (every bad field
//! reported at once), calls one use case, and maps the result.

use marketing_domain::{
    FieldViolation, RequestId, TemplateId, TenantId,
    coupon_template::{TemplateField, TemplateTerms, check_initial_stock, check_stock_change},
    error::Violations,
    page::page_size,
};
use marketing_proto::v1::{self as pb, coupon_template_service_server::CouponTemplateService};
use marketing_storage::{
    idempotency::IdempotencyKey,
    templates::{TemplateChange, TemplateFilter},
};
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::parse::{cleared, finish, reply};
use crate::wire::convert::{
    decode_page_token, discount_type_filter, draft_from_proto, encode_page_token, micros,
};
use crate::{
    app::{AppState, ChangeTemplate, CreateTemplate, ListTemplates, UpdateTemplate},
    wire::{ToWire, idempotency_key, status::to_status},
};

pub struct CouponTemplates {
    app: AppState,
}

impl CouponTemplates {
    pub fn new(app: AppState) -> Self {
        Self { app }
    }
}

/// The tenant and request id every mutation carries, plus its idempotency key. `request` is
/// the message with its request id cleared.
fn mutation_key<M: Message>(
    violations: &mut Violations,
    tenant_id: &str,
    request_id: &str,
    operation: &'static str,
    request: &M,
) -> Option<IdempotencyKey> {
    let tenant_id = violations.check(TenantId::parse("tenant_id", tenant_id));
    let request_id = violations.check(RequestId::parse("request_id", request_id));
    Some(idempotency_key(
        &tenant_id?,
        request_id?,
        operation,
        request,
    ))
}

impl TryFrom<&pb::CreateCouponTemplateRequest> for CreateTemplate {
    type Error = Status;

    fn try_from(request: &pb::CreateCouponTemplateRequest) -> Result<Self, Status> {
        let mut violations = Violations::new();
        let key = mutation_key(
            &mut violations,
            &request.tenant_id,
            &request.request_id,
            "CreateCouponTemplate",
            &cleared(request, |r| r.request_id.clear()),
        );
        let Some(template) = &request.coupon_template else {
            violations.push("coupon_template", "is required");
            return finish(violations, None);
        };
        let draft = draft_from_proto(template, &mut violations);
        let total_stock = violations.check(
            check_initial_stock("total_stock", template.total_stock)
                .map_err(|v| v.under("coupon_template")),
        );
        let terms = match TemplateTerms::parse(draft) {
            Ok(terms) => Some(terms),
            Err(found) => {
                violations.extend(
                    found
                        .into_iter()
                        .map(|v| v.under("coupon_template"))
                        .collect(),
                );
                None
            }
        };
        let command = (|| {
            Some(CreateTemplate {
                key: key?,
                terms: terms?,
                total_stock: total_stock?,
            })
        })();
        finish(violations, command)
    }
}

/// Field violations of a nested timestamp come relative to the template; put them under it.
fn nest(violations: Violations, parent: &str) -> Violations {
    let mut nested = Violations::new();
    nested.extend(
        violations
            .into_vec()
            .into_iter()
            .map(|v| v.under(parent))
            .collect(),
    );
    nested
}

impl TryFrom<&pb::UpdateCouponTemplateRequest> for UpdateTemplate {
    type Error = Status;

    fn try_from(request: &pb::UpdateCouponTemplateRequest) -> Result<Self, Status> {
        let mut violations = Violations::new();
        let key = mutation_key(
            &mut violations,
            &request.tenant_id,
            &request.request_id,
            "UpdateCouponTemplate",
            &cleared(request, |r| r.request_id.clear()),
        );
        let Some(template) = &request.coupon_template else {
            violations.push("coupon_template", "is required");
            return finish(violations, None);
        };
        let id = violations.check(TemplateId::parse("coupon_template.id", &template.id));
        let expected_version = if template.version > 0 {
            Some(template.version)
        } else {
            violations.push(
                "coupon_template.version",
                "is required: the current version of the template (its etag)",
            );
            None
        };
        let mut fields = Vec::new();
        match request
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.as_slice())
        {
            None | Some([]) => violations.push("update_mask", "must name the fields to update"),
            Some(paths) if paths.iter().any(|p| p == "*") => fields.extend(TemplateField::ALL),
            Some(paths) => {
                for path in paths {
                    match TemplateField::from_path(path) {
                        Ok(field) if !fields.contains(&field) => fields.push(field),
                        Ok(_) => {}
                        Err(problem) => violations.push("update_mask", problem),
                    }
                }
            }
        }
        let mut nested = Violations::new();
        let incoming = draft_from_proto(template, &mut nested);
        violations.extend(nest(nested, "coupon_template").into_vec());
        let command = (|| {
            Some(UpdateTemplate {
                key: key?,
                id: id?,
                expected_version: expected_version?,
                incoming,
                fields,
            })
        })();
        finish(violations, command)
    }
}

/// A positive optional etag; absent means "any version".
fn optional_version(violations: &mut Violations, version: Option<i64>) -> Option<i64> {
    match version {
        Some(v) if v <= 0 => {
            violations.push("version", "must be positive when set");
            None
        }
        other => other,
    }
}

/// The fields shared by the requests that change one template by id.
struct ChangeRequest<'a, M> {
    operation: &'static str,
    /// The request with its request id cleared: the idempotency fingerprint.
    without_request_id: M,
    tenant_id: &'a str,
    request_id: &'a str,
    template_id: &'a str,
    version: Option<i64>,
}

impl<M: Message> ChangeRequest<'_, M> {
    fn parse(
        self,
        change: Result<TemplateChange, FieldViolation>,
    ) -> Result<ChangeTemplate, Status> {
        let mut violations = Violations::new();
        let key = mutation_key(
            &mut violations,
            self.tenant_id,
            self.request_id,
            self.operation,
            &self.without_request_id,
        );
        let id = violations.check(TemplateId::parse("template_id", self.template_id));
        let expected_version = optional_version(&mut violations, self.version);
        let change = violations.check(change);
        let command = (|| {
            Some(ChangeTemplate {
                key: key?,
                id: id?,
                expected_version,
                change: change?,
            })
        })();
        finish(violations, command)
    }
}

/// The canonical text of a list query, which binds page tokens to it.
fn list_query_text(request: &pb::ListCouponTemplatesRequest) -> String {
    format!(
        "templates;tenant={};enabled={:?};type={};claimable_at={:?};archived={}",
        request.tenant_id,
        request.enabled,
        request.discount_type,
        request.claimable_at.as_ref().map(|t| (t.seconds, t.nanos)),
        request.show_archived
    )
}

impl TryFrom<&pb::ListCouponTemplatesRequest> for ListTemplates {
    type Error = Status;

    fn try_from(request: &pb::ListCouponTemplatesRequest) -> Result<Self, Status> {
        let mut violations = Violations::new();
        let tenant_id = violations.check(TenantId::parse("tenant_id", &request.tenant_id));
        let page_size = violations.check(page_size("page_size", request.page_size));
        let after = violations.check(decode_page_token(
            "page_token",
            &request.page_token,
            &list_query_text(request),
        ));
        let discount_type =
            violations.check(discount_type_filter("discount_type", request.discount_type));
        let claimable_at = violations.check(micros("claimable_at", request.claimable_at.as_ref()));
        let query = (|| {
            Some(ListTemplates {
                tenant_id: tenant_id?,
                filter: TemplateFilter {
                    enabled: request.enabled,
                    discount_type: discount_type?,
                    claimable_at: claimable_at?,
                    show_archived: request.show_archived,
                },
                after: after?.map(TemplateId),
                page_size: page_size?,
            })
        })();
        finish(violations, query)
    }
}

#[tonic::async_trait]
impl CouponTemplateService for CouponTemplates {
    #[instrument(name = "CouponTemplateService.CreateCouponTemplate", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, request_id = %request.get_ref().request_id))]
    async fn create_coupon_template(
        &self,
        request: Request<pb::CreateCouponTemplateRequest>,
    ) -> Result<Response<pb::CreateCouponTemplateResponse>, Status> {
        let command = CreateTemplate::try_from(request.get_ref())?;
        let template = reply(self.app.create_template(command).await)?;
        Ok(Response::new(pb::CreateCouponTemplateResponse {
            coupon_template: Some(template),
        }))
    }

    #[instrument(name = "CouponTemplateService.GetCouponTemplate", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, template_id = %request.get_ref().template_id))]
    async fn get_coupon_template(
        &self,
        request: Request<pb::GetCouponTemplateRequest>,
    ) -> Result<Response<pb::GetCouponTemplateResponse>, Status> {
        let request = request.get_ref();
        let mut violations = Violations::new();
        let tenant_id = violations.check(TenantId::parse("tenant_id", &request.tenant_id));
        let id = violations.check(TemplateId::parse("template_id", &request.template_id));
        let (tenant_id, id) = finish(violations, tenant_id.zip(id))?;
        let template = reply(self.app.get_template(&tenant_id, id).await)?;
        Ok(Response::new(pb::GetCouponTemplateResponse {
            coupon_template: Some(template),
        }))
    }

    #[instrument(name = "CouponTemplateService.ListCouponTemplates", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn list_coupon_templates(
        &self,
        request: Request<pb::ListCouponTemplatesRequest>,
    ) -> Result<Response<pb::ListCouponTemplatesResponse>, Status> {
        let query = ListTemplates::try_from(request.get_ref())?;
        let (coupon_templates, last) = self.app.list_templates(query).await.map_err(to_status)?;
        let next_page_token = last
            .map(|id| encode_page_token(id.0, &list_query_text(request.get_ref())))
            .unwrap_or_default();
        Ok(Response::new(pb::ListCouponTemplatesResponse {
            coupon_templates: coupon_templates.iter().map(ToWire::to_wire).collect(),
            next_page_token,
        }))
    }

    #[instrument(name = "CouponTemplateService.UpdateCouponTemplate", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, request_id = %request.get_ref().request_id))]
    async fn update_coupon_template(
        &self,
        request: Request<pb::UpdateCouponTemplateRequest>,
    ) -> Result<Response<pb::UpdateCouponTemplateResponse>, Status> {
        let command = UpdateTemplate::try_from(request.get_ref())?;
        let template = reply(self.app.update_template(command).await)?;
        Ok(Response::new(pb::UpdateCouponTemplateResponse {
            coupon_template: Some(template),
        }))
    }

    #[instrument(name = "CouponTemplateService.SetCouponTemplateEnabled", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, template_id = %request.get_ref().template_id))]
    async fn set_coupon_template_enabled(
        &self,
        request: Request<pb::SetCouponTemplateEnabledRequest>,
    ) -> Result<Response<pb::SetCouponTemplateEnabledResponse>, Status> {
        let r = request.get_ref();
        let command = ChangeRequest {
            operation: "SetCouponTemplateEnabled",
            without_request_id: cleared(r, |m| m.request_id.clear()),
            tenant_id: &r.tenant_id,
            request_id: &r.request_id,
            template_id: &r.template_id,
            version: r.version,
        }
        .parse(Ok(TemplateChange::Enabled(r.enabled)))?;
        let template = reply(self.app.change_template(command).await)?;
        Ok(Response::new(pb::SetCouponTemplateEnabledResponse {
            coupon_template: Some(template),
        }))
    }

    #[instrument(name = "CouponTemplateService.AddCouponStock", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, template_id = %request.get_ref().template_id))]
    async fn add_coupon_stock(
        &self,
        request: Request<pb::AddCouponStockRequest>,
    ) -> Result<Response<pb::AddCouponStockResponse>, Status> {
        let r = request.get_ref();
        let command = ChangeRequest {
            operation: "AddCouponStock",
            without_request_id: cleared(r, |m| m.request_id.clear()),
            tenant_id: &r.tenant_id,
            request_id: &r.request_id,
            template_id: &r.template_id,
            version: None,
        }
        .parse(check_stock_change("amount", r.amount).map(TemplateChange::Stock))?;
        let template = reply(self.app.change_template(command).await)?;
        Ok(Response::new(pb::AddCouponStockResponse {
            coupon_template: Some(template),
        }))
    }

    #[instrument(name = "CouponTemplateService.DeleteCouponTemplate", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, template_id = %request.get_ref().template_id))]
    async fn delete_coupon_template(
        &self,
        request: Request<pb::DeleteCouponTemplateRequest>,
    ) -> Result<Response<pb::DeleteCouponTemplateResponse>, Status> {
        let r = request.get_ref();
        let command = ChangeRequest {
            operation: "DeleteCouponTemplate",
            without_request_id: cleared(r, |m| m.request_id.clear()),
            tenant_id: &r.tenant_id,
            request_id: &r.request_id,
            template_id: &r.template_id,
            version: r.version,
        }
        .parse(Ok(TemplateChange::Archive))?;
        let template = reply(self.app.change_template(command).await)?;
        Ok(Response::new(pb::DeleteCouponTemplateResponse {
            coupon_template: Some(template),
        }))
    }
}
