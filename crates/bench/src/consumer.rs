//! A consumer of a tenant's `StreamEvents` beside a scenario's load: how far behind the events
//! it receives are (their commit time to their arrival), and how long after the load stops it
//! has received every event committed by then (its lag at the end of the run).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use marketing_proto::v1::{self as pb, event_service_client::EventServiceClient};
use serde_json::{Value, json};

use crate::runner::Conn;

/// What the consumer saw.
#[derive(Default)]
struct Seen {
    events: u64,
    last_position: i64,
    /// The largest delay of an event, from its time to its arrival.
    max_lag: Duration,
}

pub struct Consumer {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    channel: Conn,
    tenant: String,
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Consumer {
    /// Streams `tenant`'s events from its first on.
    pub async fn start(channel: Conn, tenant: &str) -> anyhow::Result<Self> {
        let mut stream = EventServiceClient::new(channel.clone())
            .stream_events(pb::StreamEventsRequest {
                tenant_id: tenant.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let into = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = stream.message().await? {
                let Some(pb::stream_events_response::Kind::Event(event)) = message.kind else {
                    continue;
                };
                let lag = event.create_time.map_or(Duration::ZERO, |at| {
                    let at = UNIX_EPOCH
                        + Duration::new(at.seconds.max(0) as u64, at.nanos.max(0) as u32);
                    SystemTime::now().duration_since(at).unwrap_or_default()
                });
                let mut seen = lock(&into);
                seen.events += 1;
                seen.last_position = event.position;
                seen.max_lag = seen.max_lag.max(lag);
            }
            Ok(())
        });
        Ok(Self {
            seen,
            task,
            channel,
            tenant: tenant.to_owned(),
        })
    }

    /// Once the load stopped: waits (at most `within`) until every event committed by now has
    /// arrived, and reports how long that took.
    pub async fn finish(self, within: Duration) -> anyhow::Result<Value> {
        let stopped = Instant::now();
        // The last event committed by now (reading numbers what committed).
        let mut events = EventServiceClient::new(self.channel.clone());
        let mut last = lock(&self.seen).last_position;
        loop {
            let page = events
                .list_events(pb::ListEventsRequest {
                    tenant_id: self.tenant.clone(),
                    after_position: last,
                    page_size: 1000,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if page.events.is_empty() {
                break;
            }
            last = page.last_position;
        }
        while lock(&self.seen).last_position < last && stopped.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lag_at_end = stopped.elapsed();
        self.task.abort();
        let seen = lock(&self.seen);
        Ok(json!({
            "events": seen.events,
            "caught_up": seen.last_position >= last,
            "lag_at_end_ms": lag_at_end.as_secs_f64() * 1000.0,
            "max_lag_ms": seen.max_lag.as_secs_f64() * 1000.0,
        }))
    }
}
