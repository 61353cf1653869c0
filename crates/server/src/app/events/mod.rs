//! The events of every context: numbered after their changes commit (the sequencer), and read
//! by position. See `storage::events` for why positions are given after the commit.

use std::{sync::Arc, time::Duration};

use marketing_domain::{MarketingError, TenantId, error::Refusal};
use marketing_infra::event_streams::EventStreams;
use marketing_storage::{
    events::{EventFilter, EventReads, EventStore, StoredEvent},
    unit::UnitOfWork,
};

use super::Shared;

mod relay;
mod reminders;
mod stream;
pub use relay::RELAY_LEASE;
pub use stream::{EventStream, StreamEvents, Streamed};

/// Events one numbering unit numbers at most.
const NUMBER_BATCH: u64 = 1_000;

/// How often each replica looks for committed events to number, besides every read.
pub const NUMBER_EVERY: Duration = Duration::from_millis(100);

/// A page of events.
pub struct ListEvents {
    pub tenant_id: TenantId,
    pub after: i64,
    pub filter: EventFilter,
    pub page_size: u64,
}

/// Numbering and reading events.
#[derive(Clone)]
pub struct EventService {
    pub(crate) shared: Shared,
    /// One numbering at a time on this replica: readers (each numbers before it reads) and
    /// the background tick queue here instead of each opening a write unit, so a flood of
    /// reads costs other tenants' writes nothing more than one numbering unit at a time.
    pub(crate) numbering: Arc<tokio::sync::Mutex<()>>,
    /// The last batch position numbered, as this replica last read it: streams wait on it.
    pub(crate) head: Arc<tokio::sync::watch::Sender<i64>>,
    /// The streams each API client holds here.
    pub(crate) streams: stream::StreamCounts,
    /// The Redis streams events are relayed to (none in embedded mode).
    pub(crate) relay: Option<EventStreams>,
}

impl EventService {
    pub(crate) fn new(shared: Shared, relay: Option<EventStreams>) -> Self {
        Self {
            shared,
            numbering: Arc::default(),
            head: Arc::new(tokio::sync::watch::Sender::new(0)),
            streams: stream::StreamCounts::default(),
            relay,
        }
    }

    /// Numbers what committed, then tells this replica's streams when anything (by any
    /// replica) was numbered since they last looked: the background tick.
    pub async fn number_and_announce(&self) -> Result<(), MarketingError> {
        self.number_events().await?;
        if self.head.receiver_count() > 0 {
            let last = self.shared.db.events().last_numbered().await?;
            self.head.send_if_modified(|head| {
                let moved = *head != last;
                *head = last;
                moved
            });
        }
        Ok(())
    }

    /// Streams `client` holds on this replica.
    pub fn streams_held(&self, client: &str) -> usize {
        self.streams.held(client)
    }

    /// Numbers every committed event that has none yet; how many. Replicas may run it at
    /// once: their units wait for each other, and each numbers what the last one left.
    pub async fn number_events(&self) -> Result<u64, MarketingError> {
        let db = &self.shared.db;
        let mut total = 0;
        if !db.events().any_unnumbered().await? {
            return Ok(0);
        }
        let _turn = self.numbering.lock().await;
        // Read again: the numbering this call waited for may have numbered everything.
        while db.events().any_unnumbered().await? {
            let unit = UnitOfWork::begin(db).await?;
            let numbered = unit.events().number_committed(NUMBER_BATCH).await?;
            unit.commit().await?;
            total += numbered;
            if numbered < NUMBER_BATCH {
                break;
            }
        }
        Ok(total)
    }

    /// One page of a tenant's events, in position order. Events committed before the call
    /// are numbered first, so a caller reads its own changes.
    pub async fn list_events(&self, query: ListEvents) -> Result<Vec<StoredEvent>, MarketingError> {
        self.number_events().await?;
        let events = self.shared.db.events();
        let page = events
            .list(
                &query.tenant_id,
                query.after,
                &query.filter,
                query.page_size,
            )
            .await?;
        self.check_kept(&query.tenant_id, query.after).await?;
        Ok(page)
    }

    /// Refuses a read of `tenant`'s events after `after` once retention deleted some of them
    /// past it (the page would skip them). Read after the page: a deletion that committed
    /// before the page was read has raised the mark by then.
    pub(crate) async fn check_kept(
        &self,
        tenant: &TenantId,
        after: i64,
    ) -> Result<(), MarketingError> {
        let expired_through = self.shared.db.events().expired_through(tenant).await?;
        if after > 0 && after < expired_through {
            return Err(Refusal::EventsExpired { expired_through }.into());
        }
        Ok(())
    }
}
