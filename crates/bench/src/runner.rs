//! The load loop: `concurrency` workers share `connections` HTTP/2 connections and send
//! requests until a count or a duration is reached, optionally paced to a rate. Every call's
//! latency and status is kept for the report.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// A connection to the server, sending the API key on every call when one is given.
pub type Conn = InterceptedService<Channel, Token>;

/// `authorization: Bearer <key>` for every call (`--token`), or nothing.
#[derive(Debug, Clone, Default)]
pub struct Token(pub Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub concurrency: usize,
    pub connections: usize,
    /// Stop after this many requests (`-n`).
    pub total: Option<u64>,
    /// Stop after this long (`-z`).
    pub duration: Option<Duration>,
    /// Requests per second across all workers (`--rps`); unpaced when `None`.
    pub rps: Option<f64>,
    /// earn-expiring: when the points it earns expire (Unix seconds, `--expire-at`).
    pub expire_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// Since the run started: when the call was answered.
    pub at: Duration,
    pub latency: Duration,
    pub code: Code,
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct Run {
    pub samples: Vec<Sample>,
    pub total: Duration,
}

/// Runs `call(channel, index)` as the options say. Request indexes are unique and dense.
pub async fn run<F, Fut>(options: &LoadOptions, channels: &[Conn], call: F) -> Run
where
    F: Fn(Conn, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let limit = options.total.unwrap_or(u64::MAX);
    let interval = options
        .rps
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..options.concurrency.max(1) {
        let channel = channels[worker % channels.len()].clone();
        let next = next.clone();
        let call = call.clone();
        workers.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= limit || deadline.is_some_and(|d| Instant::now() >= d) {
                    return samples;
                }
                if let Some(interval) = interval {
                    let slot = started + interval.mul_f64(index as f64);
                    tokio::time::sleep_until(slot.into()).await;
                }
                let sent = Instant::now();
                let result = call(channel.clone(), index).await;
                let latency = sent.elapsed();
                let (code, error) = match result {
                    Ok(()) => (Code::Ok, None),
                    Err(status) => (status.code(), Some(ghz_error(&status))),
                };
                samples.push(Sample {
                    at: started.elapsed(),
                    latency,
                    code,
                    error,
                });
            }
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = workers.join_next().await {
        if let Ok(worker_samples) = done {
            samples.extend(worker_samples);
        }
    }
    Run {
        samples,
        total: started.elapsed(),
    }
}

/// ghz's error text: `rpc error: code = X desc = Y`.
fn ghz_error(status: &Status) -> String {
    format!(
        "rpc error: code = {:?} desc = {}",
        status.code(),
        status.message()
    )
}
