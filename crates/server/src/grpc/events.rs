//! `EventService`: a tenant's events by position, one aggregate's audit trail, and the
//! stream of a tenant's events as they commit.

use marketing_domain::{
    MarketingError, TenantId,
    error::Violations,
    events::{AGGREGATE_TYPES, EVENT_TYPES, event_page_size},
};
use marketing_proto::v1::{self as pb, event_service_server::EventService as EventRpcs};
use marketing_storage::events::EventFilter;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::parse::{Edge, NO_SERVER_LIMIT, capped, finish, tenanted};
use crate::{
    app::{EventService, EventStream, ListEvents, StreamEvents, Streamed},
    wire::{convert::timestamp, events::event_to_proto, status::to_status},
};

pub struct Events {
    events: EventService,
}

impl Events {
    pub fn new(events: EventService) -> Self {
        Self { events }
    }
}

tenanted!(pb::ListEventsRequest, pb::StreamEventsRequest);

/// The event types a request filters by, each one checked.
fn event_types(violations: &mut Violations, requested: &[String]) -> Vec<String> {
    let mut types = Vec::new();
    if let Some(requested) = capped(violations, "types", requested, EVENT_TYPES.len()) {
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
    types
}

impl TryFrom<Edge<'_, pb::StreamEventsRequest>> for StreamEvents {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::StreamEventsRequest>) -> Result<Self, Status> {
        let request = edge.request;
        let mut violations = Violations::new();
        let tenant_id = violations.check(TenantId::parse("tenant_id", &request.tenant_id));
        if request.after_position < 0 {
            violations.push("after_position", "must not be negative");
        }
        let types = event_types(&mut violations, &request.types);
        finish(violations, || {
            Some(StreamEvents {
                tenant_id: tenant_id?,
                after: request.after_position,
                types,
                client: edge.caller.map(|caller| caller.name.clone()),
            })
        })
    }
}

/// What a stream sends, as the contract encodes it.
fn streamed_to_proto(
    item: Result<Streamed, MarketingError>,
) -> Result<pb::StreamEventsResponse, Status> {
    use pb::stream_events_response::Kind;
    let kind = match item.map_err(to_status)? {
        Streamed::Event(event) => Kind::Event(event_to_proto(*event)),
        Streamed::Heartbeat { last_position, at } => Kind::Heartbeat(pb::StreamHeartbeat {
            last_position,
            time: Some(timestamp(at)),
        }),
    };
    Ok(pb::StreamEventsResponse { kind: Some(kind) })
}

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
        let types = event_types(&mut violations, &request.types);
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
    type StreamEventsStream = futures::stream::Map<
        EventStream,
        fn(Result<Streamed, MarketingError>) -> Result<pb::StreamEventsResponse, Status>,
    >;

    #[instrument(name = "EventService.StreamEvents", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let query =
            StreamEvents::try_from(Edge::new(&request, NO_SERVER_LIMIT, &self.events.shared)?)?;
        let stream = self.events.stream_events(query).await.map_err(to_status)?;
        Ok(Response::new(futures::StreamExt::map(
            stream,
            streamed_to_proto as fn(_) -> _,
        )))
    }

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
