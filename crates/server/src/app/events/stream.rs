//! `StreamEvents`: a tenant's events after a position, the backlog first and then each new
//! one as it is numbered. The outbox is the stream's backlog: a producer task reads it a page
//! at a time into a small buffer, only as fast as the consumer takes events, so a slow
//! consumer costs its replica one buffer and no database work. A consumer that leaves its
//! buffer full for `MARKETING_EVENT_STREAM_STALL_MS` while events wait for it is closed
//! (STREAM_BACKLOG_FULL); it resumes from the last position it received.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    task::{Context, Poll},
};

use futures::Stream;
use marketing_domain::{MarketingError, TenantId, UnixMicros, error::Refusal};
use marketing_storage::events::{EventFilter, EventReads, StoredEvent};
use tokio::sync::mpsc;

use super::EventService;

/// Events a stream reads from the outbox at once.
const PAGE: u64 = 100;

/// A stream's query.
pub struct StreamEvents {
    pub tenant_id: TenantId,
    pub after: i64,
    pub types: Vec<String>,
    /// The API client holding the stream, whose streams are bounded; `None` when calls are
    /// open (then only the replica's cap of long-lived streams bounds them).
    pub client: Option<String>,
}

/// What a stream sends.
#[derive(Debug)]
pub enum Streamed {
    Event(Box<StoredEvent>),
    /// Nothing was sent for the heartbeat interval; every event up to `last_position` was.
    Heartbeat {
        last_position: i64,
        at: UnixMicros,
    },
}

/// The streams each API client holds on this replica.
#[derive(Clone, Default)]
pub(crate) struct StreamCounts(Arc<Mutex<HashMap<String, usize>>>);

/// One stream's place under its client's bound, given back when it is dropped.
struct Slot {
    counts: StreamCounts,
    client: String,
}

impl StreamCounts {
    fn take(&self, client: String, limit: usize) -> Option<Slot> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let held = counts.entry(client.clone()).or_default();
        if *held >= limit {
            return None;
        }
        *held += 1;
        Some(Slot {
            counts: self.clone(),
            client,
        })
    }

    /// Streams `client` holds now.
    pub(crate) fn held(&self, client: &str) -> usize {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(client).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = counts.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// The consumer's side of a stream: what the producer buffered, or the refusal that closed
/// it. Dropping it (the consumer went) stops the producer and frees the client's slot.
pub struct EventStream {
    buffer: mpsc::Receiver<Result<Streamed, MarketingError>>,
    stalled: Arc<AtomicBool>,
    done: bool,
    _slot: Option<Slot>,
}

impl Stream for EventStream {
    type Item = Result<Streamed, MarketingError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.stalled.load(Relaxed) {
            // Closed at the consumer's next read, whatever is still buffered.
            self.done = true;
            self.buffer.close();
            return Poll::Ready(Some(Err(Refusal::StreamBacklogFull.into())));
        }
        let next = self.buffer.poll_recv(cx);
        if let Poll::Ready(Some(Err(_)) | None) = &next {
            self.done = true;
        }
        next
    }
}

impl EventService {
    /// Opens a stream of `query`'s events: refused when its client holds as many streams as
    /// it may, or when retention deleted events after its position.
    pub async fn stream_events(&self, query: StreamEvents) -> Result<EventStream, MarketingError> {
        let config = &self.shared.config;
        let limit = config.event_streams_per_client;
        let slot = match &query.client {
            Some(client) => Some(
                self.streams
                    .take(client.clone(), limit)
                    .ok_or(Refusal::TooManyStreams { limit })?,
            ),
            None => None,
        };
        self.number_events().await?;
        self.check_kept(&query.tenant_id, query.after).await?;
        let (sender, buffer) = mpsc::channel(config.event_stream_buffer);
        let stalled = Arc::new(AtomicBool::new(false));
        let producer = Producer {
            events: self.clone(),
            tenant: query.tenant_id,
            after: query.after,
            filter: EventFilter {
                types: query.types,
                aggregate: None,
            },
            sender,
            stalled: stalled.clone(),
        };
        tokio::spawn(producer.run());
        Ok(EventStream {
            buffer,
            stalled,
            done: false,
            _slot: slot,
        })
    }
}

/// Reads the outbox into one stream's buffer.
struct Producer {
    events: EventService,
    tenant: TenantId,
    /// The last position sent (or the request's).
    after: i64,
    filter: EventFilter,
    sender: mpsc::Sender<Result<Streamed, MarketingError>>,
    stalled: Arc<AtomicBool>,
}

impl Producer {
    async fn run(mut self) {
        if let Err(err) = self.produce().await {
            // The consumer hears of a failure (its stream ends with it) and reconnects; one
            // that leaves no room for it is closed as stalled, never ended as if all was well.
            let stall = self.events.shared.config.event_stream_stall;
            match tokio::time::timeout(stall, self.sender.send(Err(err))).await {
                Ok(_) => {}
                Err(_) => self.stalled.store(true, Relaxed),
            }
        }
    }

    async fn produce(&mut self) -> Result<(), MarketingError> {
        let config = &self.events.shared.config;
        let heartbeat = config.event_stream_heartbeat;
        let mut numbered = self.events.heads.subscribe(&self.tenant);
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            // Marked before the read: a numbering after it wakes the wait below.
            numbered.borrow_and_update();
            let page = self
                .events
                .shared
                .db
                .events()
                .list(&self.tenant, self.after, &self.filter, PAGE)
                .await?;
            self.events.check_kept(&self.tenant, self.after).await?;
            let full = page.len() as u64 == PAGE;
            for event in page {
                let position = event.position;
                if !self.send(Streamed::Event(Box::new(event))).await {
                    return Ok(());
                }
                self.after = position;
                quiet_since = tokio::time::Instant::now();
            }
            if full {
                continue;
            }
            tokio::select! {
                changed = numbered.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep_until(quiet_since + heartbeat) => {
                    let beat = Streamed::Heartbeat {
                        last_position: self.after,
                        at: self.events.shared.clock.now(),
                    };
                    if !self.send(beat).await {
                        return Ok(());
                    }
                    quiet_since = tokio::time::Instant::now();
                }
                () = self.sender.closed() => return Ok(()),
            }
        }
    }

    /// Puts `item` in the buffer, waiting for room at most the stall time; `false` when the
    /// consumer went, or left no room that long (then it is closed).
    async fn send(&self, item: Streamed) -> bool {
        let stall = self.events.shared.config.event_stream_stall;
        match tokio::time::timeout(stall, self.sender.send(Ok(item))).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                self.stalled.store(true, Relaxed);
                false
            }
        }
    }
}
