//! The events of every context: numbered after their changes commit (the sequencer), and read
//! by position. See `storage::events` for why positions are given after the commit.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

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

/// Batches one tick reads to wake streams (the rest wait for the next tick).
const ANNOUNCED_BATCHES: u64 = 10_000;

/// Each tenant's last batch position numbered, for the tenants with a stream open on this
/// replica, and the batch position the tick has read through (`None` while no stream is open).
#[derive(Default)]
pub(crate) struct Heads(Mutex<HeadsState>);

#[derive(Default)]
struct HeadsState {
    seen: Option<i64>,
    tenants: HashMap<TenantId, tokio::sync::watch::Sender<i64>>,
}

impl Heads {
    fn state(&self) -> std::sync::MutexGuard<'_, HeadsState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A watch of `tenant`'s numbering, woken by the tick.
    pub(crate) fn subscribe(&self, tenant: &TenantId) -> tokio::sync::watch::Receiver<i64> {
        let mut state = self.state();
        match state.tenants.get(tenant) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = tokio::sync::watch::channel(0);
                state.tenants.insert(tenant.clone(), sender);
                receiver
            }
        }
    }

    /// Where the tick goes on from; forgets the tenants whose streams all closed (and where
    /// it was, once none is left).
    fn seen(&self) -> Option<i64> {
        let mut state = self.state();
        state
            .tenants
            .retain(|_, sender| sender.receiver_count() > 0);
        if state.tenants.is_empty() {
            state.seen = None;
        }
        state.seen
    }

    fn watched(&self) -> bool {
        !self.state().tenants.is_empty()
    }

    fn wake_all(&self, last: i64) {
        let mut state = self.state();
        state.seen = Some(last);
        for sender in state.tenants.values() {
            sender.send_replace(last);
        }
    }

    /// Wakes the streams of the tenants of `numbered` (tenant, batch position).
    fn wake(&self, numbered: Vec<(String, i64)>) {
        let mut state = self.state();
        for (tenant, position) in numbered {
            state.seen = state.seen.max(Some(position));
            if let Some(sender) = state.tenants.get(tenant.as_str()) {
                sender.send_replace(position);
            }
        }
    }
}

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
    /// What this replica's streams wait on: their tenant's last batch numbered.
    pub(crate) heads: Arc<Heads>,
    /// The streams each API client holds here.
    pub(crate) streams: stream::StreamCounts,
    /// The Redis streams events are relayed to (none in embedded mode).
    pub(crate) relay: Option<EventStreams>,
    /// What the outbox held when last measured (for `/metrics`).
    pub outbox: Arc<relay::OutboxGauges>,
}

impl EventService {
    pub(crate) fn new(shared: Shared, relay: Option<EventStreams>) -> Self {
        Self {
            shared,
            numbering: Arc::default(),
            heads: Arc::default(),
            streams: stream::StreamCounts::default(),
            relay,
            outbox: Arc::default(),
        }
    }

    /// Numbers what committed, then wakes this replica's streams whose tenant had batches
    /// numbered (by any replica) since the last tick: the background tick. One query a tick,
    /// however many streams are open, and a stream wakes only for its own tenant's events.
    pub async fn number_and_announce(&self) -> Result<(), MarketingError> {
        self.number_events().await?;
        let Some(seen) = self.heads.seen() else {
            // No stream is open here, or the first just opened: start from the last position
            // numbered, and wake every stream (one may have read before it).
            if self.heads.watched() {
                let last = self.shared.db.events().last_numbered().await?;
                self.heads.wake_all(last);
            }
            return Ok(());
        };
        let numbered = self
            .shared
            .db
            .events()
            .numbered_since(seen, ANNOUNCED_BATCHES)
            .await?;
        self.heads.wake(numbered);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse("tenant_id", id).expect("tenant")
    }

    #[test]
    fn a_tick_wakes_only_the_streams_of_tenants_with_new_batches() {
        let heads = Heads::default();
        assert_eq!(heads.seen(), None, "no stream: nothing to go on from");
        let mut acme = heads.subscribe(&tenant("acme"));
        let mut globex = heads.subscribe(&tenant("globex"));
        assert_eq!(
            heads.seen(),
            None,
            "the first tick starts from the last numbered"
        );
        heads.wake_all(7);
        assert!(acme.has_changed().expect("open") && globex.has_changed().expect("open"));
        acme.borrow_and_update();
        globex.borrow_and_update();

        heads.wake(vec![("acme".into(), 8), ("initech".into(), 9)]);
        assert_eq!(heads.seen(), Some(9), "read through the last batch");
        assert!(acme.has_changed().expect("open"));
        assert_eq!(*acme.borrow_and_update(), 8);
        assert!(
            !globex.has_changed().expect("open"),
            "another tenant's batch"
        );

        drop(acme);
        drop(globex);
        assert_eq!(heads.seen(), None, "every stream closed: forgotten");
        assert!(!heads.watched());
    }
}
