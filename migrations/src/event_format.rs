//! How the outbox stores a batch's events (see `m20261207_000014_packed_events`): one
//! `event_bodies` row per batch, its events one [`PackedEvents`] message, each event's seq its
//! index + 1, and the batch's tenant in `event_batches`. The storage crate reads and writes
//! this format; it lives here because a migration converts to it.
//!
//! Fields are only ever added (new tags): bodies written by older builds stay readable.

use prost::Message;

/// One event of a batch, without what its batch row holds (tenant, position, seq).
#[derive(Clone, PartialEq, Message)]
pub struct PackedEvent {
    /// The event's id (a UUID's 16 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(string, tag = "2")]
    pub event_type: String,
    #[prost(string, tag = "3")]
    pub aggregate_type: String,
    #[prost(string, tag = "4")]
    pub aggregate_id: String,
    #[prost(string, optional, tag = "5")]
    pub member_id: Option<String>,
    /// Microseconds since the Unix epoch.
    #[prost(int64, tag = "6")]
    pub occurred_at: i64,
    #[prost(string, optional, tag = "7")]
    pub request_id: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub actor: Option<String>,
    /// The contract's encoding of what happened.
    #[prost(bytes = "vec", tag = "9")]
    pub payload: Vec<u8>,
}

/// A batch's events, in seq order.
#[derive(Clone, PartialEq, Message)]
pub struct PackedEvents {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<PackedEvent>,
}

/// An aggregate as `event_bodies.aggregates` lists it (ids hold no spaces or slashes).
pub fn aggregate_key(aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{aggregate_type}/{aggregate_id}")
}

/// Encodes a batch's events.
pub fn pack(events: Vec<PackedEvent>) -> Vec<u8> {
    PackedEvents { events }.encode_to_vec()
}

/// Decodes a batch's events.
pub fn unpack(body: &[u8]) -> Result<Vec<PackedEvent>, prost::DecodeError> {
    PackedEvents::decode(body).map(|packed| packed.events)
}
