//! The relay: every numbered event, in position order, to its tenant's Redis stream, for
//! consumers that read with consumer groups (`marketing_infra::event_streams`). One replica
//! relays at a time (a lease in Redis); it works from the cursor kept in Redis beside the
//! streams, so after any crash, a takeover or a Redis restart it goes on from what Redis
//! holds, and each page moves the cursor in the same script that adds its entries. While
//! Redis is down, events wait in the outbox. Embedded mode has no relay.

use std::time::Duration;

use marketing_domain::MarketingError;
use marketing_infra::event_streams::{Lease, Published, StreamEntry};
use marketing_storage::events::EventReads;

use super::EventService;
use crate::wire::events::event_bytes;

/// How long a relay's lease lasts unless renewed (it is renewed every pass, every
/// [`super::NUMBER_EVERY`] at most): another replica takes over this long after a crash.
pub const RELAY_LEASE: Duration = Duration::from_secs(5);

/// Events one transaction publishes: Redis runs an `EXEC` alone, so a long one would hold
/// back every other command (the claims' locks among them); 64 entries take it a fraction of
/// a millisecond (500 in one Lua script cost claim-hot about a tenth of its rate).
const PAGE: usize = 64;

/// Events read from the outbox at a time (published [`PAGE`] by [`PAGE`]): a batch is decoded
/// once, not once per page it spans.
const READ: u64 = 1_024;

impl EventService {
    /// Whether this replica relays events to Redis streams (Redis is configured).
    pub fn relays(&self) -> bool {
        self.relay.is_some()
    }

    /// The Redis stream key of `tenant`'s events, when there is a relay.
    pub fn stream_key(&self, tenant: &str) -> Option<String> {
        self.relay
            .as_ref()
            .map(|streams| streams.stream_key(tenant))
    }

    /// One pass of the relay on this replica: when it holds the lease, publishes what was
    /// numbered since the cursor, a page at a time; how many entries were added. Nothing in
    /// embedded mode, or when another replica relays.
    pub async fn relay_events(&self) -> Result<u64, MarketingError> {
        let Some(streams) = &self.relay else {
            return Ok(0);
        };
        match streams.hold_lease(RELAY_LEASE).await.map_err(unavailable)? {
            Lease::Elsewhere => Ok(0),
            Lease::Taken | Lease::Kept => self.publish_pending().await,
        }
    }

    /// Publishes what was numbered after the cursor Redis holds, whoever holds the lease
    /// (two relays at once add nothing twice and skip nothing: each page moves the cursor
    /// only from where its relay read it). How many entries were added.
    pub async fn publish_pending(&self) -> Result<u64, MarketingError> {
        let Some(streams) = &self.relay else {
            return Ok(0);
        };
        let mut added = 0;
        let mut cursor = streams.cursor().await.map_err(unavailable)?;
        'read: loop {
            let read = self.shared.db.events().list_all(cursor, READ).await?;
            let full = read.len() as u64 == READ;
            let mut events = read.into_iter().peekable();
            while events.peek().is_some() {
                let entries: Vec<StreamEntry> = events
                    .by_ref()
                    .take(PAGE)
                    .map(|event| StreamEntry {
                        tenant_id: event.tenant_id.clone(),
                        position: event.position,
                        event_type: event.event_type.clone(),
                        event: event_bytes(event),
                    })
                    .collect();
                let through = entries.last().map_or(cursor, |entry| entry.position);
                match streams
                    .publish(cursor, through, &entries)
                    .await
                    .map_err(unavailable)?
                {
                    Published::Added(count) => {
                        added += count;
                        cursor = through;
                    }
                    // Another relay moved it (or Redis lost it): read from it again.
                    Published::CursorMoved => {
                        cursor = streams.cursor().await.map_err(unavailable)?;
                        continue 'read;
                    }
                }
            }
            if !full {
                return Ok(added);
            }
        }
    }
}

/// What the outbox held at the last scrape, for `/metrics`.
#[derive(Debug, Default)]
pub struct OutboxGauges {
    pub unnumbered: std::sync::atomic::AtomicU64,
    pub unrelayed: std::sync::atomic::AtomicU64,
    /// Microseconds since the oldest event not yet relayed was recorded (0: none).
    pub relay_lag_micros: std::sync::atomic::AtomicU64,
}

/// Batches each count of the outbox looks at, at most (past them it says "at least").
const BACKLOG_BATCHES: u64 = 10_000;

impl EventService {
    /// Measures what waits in the outbox (two indexed reads, and the relay's cursor from
    /// Redis), for the gauges of `/metrics`: called at each scrape, not on a request path.
    pub async fn measure_outbox(&self) -> Result<(), MarketingError> {
        use std::sync::atomic::Ordering::Relaxed;
        let relayed = match &self.relay {
            Some(streams) => Some(streams.cursor().await.map_err(unavailable)?),
            None => None,
        };
        let backlog = self
            .shared
            .db
            .events()
            .backlog(relayed, BACKLOG_BATCHES)
            .await?;
        let lag = backlog.oldest_unrelayed.map_or(0, |oldest| {
            u64::try_from(self.shared.clock.now().0 - oldest.0).unwrap_or(0)
        });
        self.outbox.unnumbered.store(backlog.unnumbered, Relaxed);
        self.outbox.unrelayed.store(backlog.unrelayed, Relaxed);
        // In the embedded mode nothing is relayed: only the sequencer's backlog ages.
        self.outbox.relay_lag_micros.store(lag, Relaxed);
        Ok(())
    }
}

fn unavailable(err: marketing_infra::InfraError) -> MarketingError {
    MarketingError::Unavailable(Box::new(err))
}
