//! `EventService`: a tenant's events by position, and one aggregate's audit trail.

use marketing_domain::{
    TenantId,
    error::Violations,
    events::{AGGREGATE_TYPES, EVENT_TYPES, event_page_size},
};
use marketing_proto::v1::{self as pb, event_service_server::EventService as EventRpcs};
use marketing_storage::events::EventFilter;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::parse::{Edge, NO_SERVER_LIMIT, capped, finish, tenanted};
use crate::{
    app::{EventService, ListEvents},
    wire::{events::event_to_proto, status::to_status},
};

pub struct Events {
    events: EventService,
}

impl Events {
    pub fn new(events: EventService) -> Self {
        Self { events }
    }
}

tenanted!(pb::ListEventsRequest);

impl TryFrom<Edge<'_, pb::ListEventsRequest>> for ListEvents {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ListEventsRequest>) -> Result<Self, Status> {
        let request = edge.request;
        let mut violations = Violations::new();
        let tenant_id = violations.check(TenantId::parse("tenant_id", &request.tenant_id));
        let page_size = violations.check(event_page_size("page_size", request.page_size));
        if request.after_position < 0 {
            violations.push("after_position", "must not be negative");
        }
        let mut types = Vec::new();
        if let Some(requested) = capped(&mut violations, "types", &request.types, EVENT_TYPES.len())
        {
            for (index, name) in requested.iter().enumerate() {
                if EVENT_TYPES.contains(&name.as_str()) {
                    types.push(name.clone());
                } else {
                    violations.push(
                        format!("types[{index}]"),
                        "is not an event type (e.g. coupon.claimed)",
                    );
                }
            }
        }
        let aggregate = match (
            request.aggregate_type.as_str(),
            request.aggregate_id.as_str(),
        ) {
            ("", "") => None,
            (kind, id) if AGGREGATE_TYPES.contains(&kind) && !id.is_empty() && id.len() <= 64 => {
                Some((kind.to_owned(), id.to_owned()))
            }
            (kind, _) if !AGGREGATE_TYPES.contains(&kind) => {
                violations.push(
                    "aggregate_type",
                    format!("must be one of {}", AGGREGATE_TYPES.join(", ")),
                );
                None
            }
            _ => {
                violations.push(
                    "aggregate_id",
                    "must be 1 to 64 characters with aggregate_type",
                );
                None
            }
        };
        finish(violations, || {
            Some(ListEvents {
                tenant_id: tenant_id?,
                after: request.after_position,
                filter: EventFilter { types, aggregate },
                page_size: page_size?,
            })
        })
    }
}

#[tonic::async_trait]
impl EventRpcs for Events {
    #[instrument(name = "EventService.ListEvents", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let query =
            ListEvents::try_from(Edge::new(&request, NO_SERVER_LIMIT, &self.events.shared)?)?;
        let after = query.after;
        let events = self.events.list_events(query).await.map_err(to_status)?;
        let last_position = events.last().map_or(after, |event| event.position);
        Ok(Response::new(pb::ListEventsResponse {
            events: events.into_iter().map(event_to_proto).collect(),
            last_position,
        }))
    }
}
