//! `CouponTemplateService`: each handler parses its request into a command (every bad field
//! reported at once), calls one use case, and maps the result.

use marketing_domain::{
    FieldViolation, TemplateId, TenantId,
    coupon_code::{CodeShape, CodeText, MAX_CODES_PER_GENERATION},
    coupon_template::{
        CouponTemplate, TemplateField, TemplateTerms, check_initial_stock, check_stock_change,
    },
    error::Violations,
    page::page_size,
};
use marketing_proto::v1::{self as pb, coupon_template_service_server::CouponTemplateService};
use marketing_storage::{
    codes::CodeState,
    templates::{TemplateChange, TemplateFilter},
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::parse::{
    Edge, Mutation, NO_SERVER_LIMIT, Tenanted, finish, mutation_key, mutations, reply, tenanted,
};
use crate::{
    app::{
        Answer, ChangeTemplate, CreateSharedCode, CreateTemplate, GenerateCodes, ListCodes,
        ListTemplates, TemplateService, UpdateTemplate,
    },
    wire::{
        self, ToWire,
        convert::{
            decode_page_token, decode_text_page_token, discount_type_filter, draft_from_proto,
            encode_page_token, encode_text_page_token, micros,
        },
        status::to_status,
    },
};

pub struct CouponTemplates {
    templates: TemplateService,
}

impl CouponTemplates {
    pub fn new(templates: TemplateService) -> Self {
        Self { templates }
    }

    /// The request with what parsing it needs. Template calls have no server limit of their
    /// own: the deadline layer answers them at the client's deadline.
    fn edge<'a, R: Tenanted>(&'a self, request: &'a Request<R>) -> Result<Edge<'a, R>, Status> {
        Edge::new(request, NO_SERVER_LIMIT, &self.templates.shared)
    }
}

tenanted!(
    pb::GetCouponTemplateRequest,
    pb::ListCouponTemplatesRequest,
    pb::ListCouponCodesRequest
);

mutations! {
    pb::CreateCouponTemplateRequest => "CreateCouponTemplate",
    pb::UpdateCouponTemplateRequest => "UpdateCouponTemplate",
    pb::SetCouponTemplateEnabledRequest => "SetCouponTemplateEnabled",
    pb::AddCouponStockRequest => "AddCouponStock",
    pb::DeleteCouponTemplateRequest => "DeleteCouponTemplate",
    pb::CreateSharedCouponCodeRequest => "CreateSharedCouponCode",
    pb::GenerateCouponCodesRequest => "GenerateCouponCodes",
}

impl TryFrom<Edge<'_, pb::CreateSharedCouponCodeRequest>> for CreateSharedCode {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::CreateSharedCouponCodeRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let key = mutation_key(&mut violations, &edge);
        let template_id = violations.check(TemplateId::parse("template_id", &r.template_id));
        let code = violations.check(CodeText::parse_shared("code", &r.code));
        finish(violations, || {
            Some(CreateSharedCode {
                key: key?,
                template_id: template_id?,
                code: code?,
                actor: edge.actor(),
            })
        })
    }
}

impl TryFrom<Edge<'_, pb::GenerateCouponCodesRequest>> for GenerateCodes {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::GenerateCouponCodesRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let key = mutation_key(&mut violations, &edge);
        let template_id = violations.check(TemplateId::parse("template_id", &r.template_id));
        let count = if (1..=MAX_CODES_PER_GENERATION).contains(&r.count) {
            Some(r.count)
        } else {
            violations.push(
                "count",
                format!("must be between 1 and {MAX_CODES_PER_GENERATION}"),
            );
            None
        };
        let shape = match CodeShape::parse(&r.prefix, r.length) {
            Ok(shape) => Some(shape),
            Err(found) => {
                violations.extend(found);
                None
            }
        };
        finish(violations, || {
            Some(GenerateCodes {
                key: key?,
                template_id: template_id?,
                count: count?,
                shape: shape?,
                actor: edge.actor(),
                deadline: edge.deadline,
            })
        })
    }
}

/// The canonical text of a code listing, which binds page tokens to it.
fn codes_query_text(request: &pb::ListCouponCodesRequest) -> String {
    format!(
        "codes;tenant={};template={};state={}",
        request.tenant_id, request.template_id, request.state
    )
}

/// Codes a page holds when the caller does not say, and at most.
const DEFAULT_CODE_PAGE: u64 = 100;
const MAX_CODE_PAGE: u64 = 1_000;

impl TryFrom<Edge<'_, pb::ListCouponCodesRequest>> for ListCodes {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ListCouponCodesRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant_id = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let template_id = violations.check(TemplateId::parse("template_id", &r.template_id));
        let page_size = match r.page_size {
            0 => Some(DEFAULT_CODE_PAGE),
            n if n > 0 && n as u64 <= MAX_CODE_PAGE => Some(n as u64),
            _ => {
                violations.push(
                    "page_size",
                    format!("must be between 0 and {MAX_CODE_PAGE}"),
                );
                None
            }
        };
        let state = match pb::CouponCodeState::try_from(r.state) {
            Ok(pb::CouponCodeState::Unspecified) => Some(None),
            Ok(pb::CouponCodeState::Available) => Some(Some(CodeState::Available)),
            Ok(pb::CouponCodeState::Claimed) => Some(Some(CodeState::Claimed)),
            Err(_) => {
                violations.push("state", "is not a coupon code state");
                None
            }
        };
        let after = violations.check(decode_text_page_token(
            "page_token",
            &r.page_token,
            &codes_query_text(r),
        ));
        finish(violations, || {
            Some(ListCodes {
                tenant_id: tenant_id?,
                template_id: template_id?,
                state: state?,
                after: after?,
                page_size: page_size?,
            })
        })
    }
}

impl TryFrom<Edge<'_, pb::CreateCouponTemplateRequest>> for CreateTemplate {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::CreateCouponTemplateRequest>) -> Result<Self, Status> {
        let request = edge.request;
        let mut violations = Violations::new();
        let key = mutation_key(&mut violations, &edge);
        let Some(template) = &request.coupon_template else {
            violations.push("coupon_template", "is required");
            return finish(violations, || None);
        };
        let mut nested = Violations::new();
        let draft = draft_from_proto(template, &mut nested);
        violations.extend(nest(nested, "coupon_template").into_vec());
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
        finish(violations, || {
            Some(CreateTemplate {
                key: key?,
                terms: terms?,
                total_stock: total_stock?,
                actor: edge.actor(),
            })
        })
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

impl TryFrom<Edge<'_, pb::UpdateCouponTemplateRequest>> for UpdateTemplate {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::UpdateCouponTemplateRequest>) -> Result<Self, Status> {
        let request = edge.request;
        let mut violations = Violations::new();
        let key = mutation_key(&mut violations, &edge);
        let Some(template) = &request.coupon_template else {
            violations.push("coupon_template", "is required");
            return finish(violations, || None);
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
        finish(violations, || {
            Some(UpdateTemplate {
                key: key?,
                id: id?,
                expected_version: expected_version?,
                incoming,
                fields,
                actor: edge.actor(),
            })
        })
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

/// A change of one template by id: the key, the id, the etag and the change itself.
fn change<M: Mutation>(
    edge: &Edge<'_, M>,
    template_id: &str,
    version: Option<i64>,
    change: Result<TemplateChange, FieldViolation>,
) -> Result<ChangeTemplate, Status> {
    let mut violations = Violations::new();
    let key = mutation_key(&mut violations, edge);
    let id = violations.check(TemplateId::parse("template_id", template_id));
    let expected_version = optional_version(&mut violations, version);
    let change = violations.check(change);
    finish(violations, || {
        Some(ChangeTemplate {
            key: key?,
            id: id?,
            expected_version,
            change: change?,
            actor: edge.actor(),
        })
    })
}

impl TryFrom<Edge<'_, pb::SetCouponTemplateEnabledRequest>> for ChangeTemplate {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::SetCouponTemplateEnabledRequest>) -> Result<Self, Status> {
        let r = edge.request;
        change(
            &edge,
            &r.template_id,
            r.version,
            Ok(TemplateChange::Enabled(r.enabled)),
        )
    }
}

impl TryFrom<Edge<'_, pb::AddCouponStockRequest>> for ChangeTemplate {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::AddCouponStockRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let stock = check_stock_change("amount", r.amount).map(TemplateChange::Stock);
        change(&edge, &r.template_id, None, stock)
    }
}

impl TryFrom<Edge<'_, pb::DeleteCouponTemplateRequest>> for ChangeTemplate {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::DeleteCouponTemplateRequest>) -> Result<Self, Status> {
        let r = edge.request;
        change(
            &edge,
            &r.template_id,
            r.version,
            Ok(TemplateChange::Archive),
        )
    }
}

/// GetCouponTemplate's query.
struct GetTemplate {
    tenant_id: TenantId,
    id: TemplateId,
}

impl TryFrom<Edge<'_, pb::GetCouponTemplateRequest>> for GetTemplate {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::GetCouponTemplateRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant_id = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let id = violations.check(TemplateId::parse("template_id", &r.template_id));
        finish(violations, || {
            Some(GetTemplate {
                tenant_id: tenant_id?,
                id: id?,
            })
        })
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

impl TryFrom<Edge<'_, pb::ListCouponTemplatesRequest>> for ListTemplates {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ListCouponTemplatesRequest>) -> Result<Self, Status> {
        let request = edge.request;
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
        finish(violations, || {
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
        })
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
        let command = CreateTemplate::try_from(self.edge(&request)?)?;
        let template = reply(self.templates.create_template(command).await)?;
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
        let query = GetTemplate::try_from(self.edge(&request)?)?;
        let answer = self
            .templates
            .get_template(&query.tenant_id, query.id)
            .await;
        let template = match answer.map_err(to_status)? {
            Answer::Fresh(template) => template.to_wire(),
            Answer::Recorded(copy) => match wire::from_record::<CouponTemplate>(copy.bytes()) {
                Ok(template) => template,
                // A cached copy no reader can use is not the caller's problem: read the row.
                Err(err) => {
                    marketing_infra::warn_every!(error = %err, "undecodable cached template; reading the database");
                    self.templates
                        .reload_template(&query.tenant_id, query.id)
                        .await
                        .map_err(to_status)?
                        .to_wire()
                }
            },
        };
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
        let query = ListTemplates::try_from(self.edge(&request)?)?;
        let (coupon_templates, last) = self
            .templates
            .list_templates(query)
            .await
            .map_err(to_status)?;
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
        let command = UpdateTemplate::try_from(self.edge(&request)?)?;
        let template = reply(self.templates.update_template(command).await)?;
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
        let command = ChangeTemplate::try_from(self.edge(&request)?)?;
        let template = reply(self.templates.change_template(command).await)?;
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
        let command = ChangeTemplate::try_from(self.edge(&request)?)?;
        let template = reply(self.templates.change_template(command).await)?;
        Ok(Response::new(pb::AddCouponStockResponse {
            coupon_template: Some(template),
        }))
    }

    #[instrument(name = "CouponTemplateService.CreateSharedCouponCode", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, template_id = %request.get_ref().template_id))]
    async fn create_shared_coupon_code(
        &self,
        request: Request<pb::CreateSharedCouponCodeRequest>,
    ) -> Result<Response<pb::CreateSharedCouponCodeResponse>, Status> {
        let command = CreateSharedCode::try_from(self.edge(&request)?)?;
        let code = reply(self.templates.create_shared_code(command).await)?;
        Ok(Response::new(pb::CreateSharedCouponCodeResponse {
            coupon_code: Some(code),
        }))
    }

    #[instrument(name = "CouponTemplateService.GenerateCouponCodes", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, template_id = %request.get_ref().template_id,
            count = request.get_ref().count))]
    async fn generate_coupon_codes(
        &self,
        request: Request<pb::GenerateCouponCodesRequest>,
    ) -> Result<Response<pb::GenerateCouponCodesResponse>, Status> {
        let command = GenerateCodes::try_from(self.edge(&request)?)?;
        let generated = self
            .templates
            .generate_codes(command)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GenerateCouponCodesResponse {
            template_id: generated.template_id.to_string(),
            generated_count: generated.count,
            coupon_template: Some(generated.template.to_wire()),
        }))
    }

    #[instrument(name = "CouponTemplateService.ListCouponCodes", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, template_id = %request.get_ref().template_id))]
    async fn list_coupon_codes(
        &self,
        request: Request<pb::ListCouponCodesRequest>,
    ) -> Result<Response<pb::ListCouponCodesResponse>, Status> {
        let query = ListCodes::try_from(self.edge(&request)?)?;
        let (codes, last) = self.templates.list_codes(query).await.map_err(to_status)?;
        let next_page_token = last
            .map(|code| encode_text_page_token(&code, &codes_query_text(request.get_ref())))
            .unwrap_or_default();
        Ok(Response::new(pb::ListCouponCodesResponse {
            coupon_codes: codes.iter().map(ToWire::to_wire).collect(),
            next_page_token,
        }))
    }

    #[instrument(name = "CouponTemplateService.DeleteCouponTemplate", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, template_id = %request.get_ref().template_id))]
    async fn delete_coupon_template(
        &self,
        request: Request<pb::DeleteCouponTemplateRequest>,
    ) -> Result<Response<pb::DeleteCouponTemplateResponse>, Status> {
        let command = ChangeTemplate::try_from(self.edge(&request)?)?;
        let template = reply(self.templates.change_template(command).await)?;
        Ok(Response::new(pb::DeleteCouponTemplateResponse {
            coupon_template: Some(template),
        }))
    }
}
