//! The batching that claims and points share: commands wait in a queue per key (a tenant's
//! template's claims, the replica's points commands); the first command of an idle queue
//! starts its drainer, which serves what has gathered in batches of at most `max`, until the
//! queue is empty, and then removes the queue: a key lives only while it has work. Within a
//! batch, copies of one request (same tenant, request id and parameters) are one [`Group`],
//! served once and answered alike; the same request id with other parameters is
//! REQUEST_ID_REUSED. A caller waits until its deadline; a batch retries the races it loses
//! ([`retry_lost_races`]) until the latest deadline among its commands. Each batch runs in a
//! span of its own (`batch`, named by the batcher) that follows from the spans of the calls it
//! serves: a trace shows a call's batch, and the batch the calls it served with.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use marketing_domain::MarketingError;
use marketing_domain::error::Refusal;
use marketing_infra::backoff;
use marketing_storage::idempotency::IdempotencyKey;
use tokio::{sync::oneshot, time::Instant};
use tracing::Instrument;

/// A command a batcher queues.
pub(super) trait Batched: Send + 'static {
    /// Its idempotency key, when it has one: copies are grouped by it.
    fn key(&self) -> Option<&IdempotencyKey>;
    /// When its caller stops waiting.
    fn deadline(&self) -> Instant;
}

type Reply<R> = oneshot::Sender<Result<R, MarketingError>>;

/// One request of a batch, and everyone waiting for its answer.
pub(super) struct Group<C, R> {
    pub cmd: C,
    replies: Vec<Reply<R>>,
}

impl<C, R: Clone> Group<C, R> {
    /// The first waiter gets the result itself; identical retries, a copy.
    pub fn answer(self, result: Result<R, MarketingError>) {
        let mut replies = self.replies.into_iter();
        let first = replies.next();
        for reply in replies {
            let _ = reply.send(match &result {
                Ok(response) => Ok(response.clone()),
                Err(err) => Err(err.copy()),
            });
        }
        if let Some(first) = first {
            let _ = first.send(result);
        }
    }
}

struct Pending<C, R> {
    cmd: C,
    reply: Reply<R>,
    /// The span of the call that queued it.
    span: tracing::Span,
}

struct Queue<C, R> {
    waiting: Vec<Pending<C, R>>,
    draining: bool,
}

impl<C, R> Default for Queue<C, R> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
            draining: false,
        }
    }
}

type SharedQueue<C, R> = Arc<Mutex<Queue<C, R>>>;
type Queues<K, C, R> = Arc<Mutex<HashMap<K, SharedQueue<C, R>>>>;

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a push, a drain or a flag flip: a panic elsewhere cannot leave
    // a queue inconsistent, so a poisoned lock is safe to keep using.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Queues per key, each drained in batches.
pub(super) struct Batcher<K, C, R> {
    queues: Queues<K, C, R>,
    max: usize,
    name: &'static str,
}

impl<K: Eq + Hash + Clone + Send + 'static, C: Batched, R: Send + 'static> Batcher<K, C, R> {
    /// Batches of at most `max` commands; `name` names them in errors.
    pub fn new(max: usize, name: &'static str) -> Self {
        Self {
            queues: Arc::default(),
            max: max.max(1),
            name,
        }
    }

    /// How many keys have a queue: only those with work waiting or being served.
    #[cfg(test)]
    fn queued_keys(&self) -> usize {
        locked(&self.queues).len()
    }

    /// Queues `cmd` under `key` and waits for its answer until its deadline. An idle queue's
    /// first command starts the drainer, which calls `serve` with each batch's groups (every
    /// group must be answered) until the queue is empty.
    pub async fn submit<S, F>(&self, key: K, cmd: C, serve: S) -> Result<R, MarketingError>
    where
        S: Fn(Vec<Group<C, R>>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let deadline = cmd.deadline();
        let (reply, answer) = oneshot::channel();
        // The push happens under the map's lock, so a drainer that finds its queue empty (and
        // removes it, under the same lock) never strands a command in a queue no one drains.
        let (queue, start_drainer) = {
            let mut queues = locked(&self.queues);
            let queue = match queues.get(&key) {
                Some(queue) => queue.clone(),
                None => queues.entry(key.clone()).or_default().clone(),
            };
            let mut state = locked(&queue);
            state.waiting.push(Pending {
                cmd,
                reply,
                span: tracing::Span::current(),
            });
            let start = !std::mem::replace(&mut state.draining, true);
            drop(state);
            (queue, start)
        };
        if start_drainer {
            let (max, name) = (self.max, self.name);
            tokio::spawn(drain(self.queues.clone(), key, queue, max, name, serve));
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(MarketingError::internal(format!(
                "the {} batch ended without an answer",
                self.name
            ))),
            // The batch carries on: what it commits, a retry with the same request id returns.
            Err(_) => Err(MarketingError::DeadlineExceeded),
        }
    }
}

async fn drain<K: Eq + Hash, C: Batched, R, S, F>(
    queues: Queues<K, C, R>,
    key: K,
    queue: SharedQueue<C, R>,
    max: usize,
    name: &'static str,
    serve: S,
) where
    S: Fn(Vec<Group<C, R>>) -> F,
    F: Future<Output = ()>,
{
    let mut guard = DrainGuard {
        queue: queue.clone(),
        name,
        armed: true,
    };
    loop {
        let batch: Vec<Pending<C, R>> = {
            let mut state = locked(&queue);
            if state.waiting.is_empty() {
                drop(state);
                // Checked again under the map's lock, which every submit holds while it
                // pushes: an empty queue is removed, and the next command makes a new one.
                let mut queues = locked(&queues);
                state = locked(&queue);
                if state.waiting.is_empty() {
                    state.draining = false;
                    guard.armed = false;
                    if queues.get(&key).is_some_and(|q| Arc::ptr_eq(q, &queue)) {
                        queues.remove(&key);
                    }
                    return;
                }
            }
            let take = state.waiting.len().min(max);
            state.waiting.drain(..take).collect()
        };
        let span = tracing::info_span!("batch", batcher = name, commands = batch.len());
        for pending in &batch {
            span.follows_from(&pending.span);
        }
        let groups = group(batch);
        if !groups.is_empty() {
            serve(groups).instrument(span).await;
        }
    }
}

/// The batch's distinct requests, each with its waiters; callers that gave up are not served
/// (no work is done for an abandoned request), and a request id reused with other parameters
/// is answered REQUEST_ID_REUSED.
fn group<C: Batched, R>(batch: Vec<Pending<C, R>>) -> Vec<Group<C, R>> {
    let mut groups: Vec<Group<C, R>> = Vec::new();
    let mut by_request: HashMap<marketing_storage::idempotency::RecordKey, usize> = HashMap::new();
    for Pending { cmd, reply, .. } in batch {
        if reply.is_closed() {
            continue;
        }
        let Some(key) = cmd.key() else {
            groups.push(Group {
                cmd,
                replies: vec![reply],
            });
            continue;
        };
        let id = key.record_key();
        match by_request.get(&id) {
            Some(&first)
                if groups[first].cmd.key().map(|k| &k.fingerprint) == Some(&key.fingerprint) =>
            {
                groups[first].replies.push(reply);
            }
            Some(_) => {
                let _ = reply.send(Err(MarketingError::Refused(Refusal::RequestIdReused)));
            }
            None => {
                by_request.insert(id, groups.len());
                groups.push(Group {
                    cmd,
                    replies: vec![reply],
                });
            }
        }
    }
    groups
}

/// Clears the draining flag and fails the waiting commands if a drainer dies (a panic): a
/// queue must never stay marked as drained by nobody.
struct DrainGuard<C, R> {
    queue: SharedQueue<C, R>,
    name: &'static str,
    armed: bool,
}

impl<C, R> Drop for DrainGuard<C, R> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = locked(&self.queue);
            state.draining = false;
            for pending in state.waiting.drain(..) {
                let _ = pending.reply.send(Err(MarketingError::internal(format!(
                    "the {} drainer stopped",
                    self.name
                ))));
            }
        }
    }
}

/// Jittered exponential backoff between a batch's attempts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

/// Runs `attempt` (given its number, from 0) again, after a jittered backoff, each time it
/// loses a race (CONCURRENT_MODIFICATION), while `deadline` allows the wait; then the last
/// result. Also gives the number of attempts made.
pub(super) async fn retry_lost_races<T, A, F>(
    deadline: Instant,
    backoff_by: Backoff,
    mut attempt: A,
) -> (Result<T, MarketingError>, u32)
where
    A: FnMut(u32) -> F,
    F: Future<Output = Result<T, MarketingError>>,
{
    let mut made = 0;
    loop {
        let result = attempt(made).await;
        made += 1;
        match result {
            Err(MarketingError::ConcurrentModification(cause)) => {
                let wait = backoff(made - 1, backoff_by.base, backoff_by.cap);
                if Instant::now() + wait >= deadline {
                    marketing_infra::warn_every!(error = %cause, attempts = made, "retries ran out at the deadline");
                    return (Err(MarketingError::ConcurrentModification(cause)), made);
                }
                tracing::debug!(error = %cause, attempt = made, "retrying after a lost race");
                tokio::time::sleep(wait).await;
            }
            done => return (done, made),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    use marketing_domain::{RequestId, TenantId};

    use super::*;

    #[derive(Debug, Clone)]
    struct Cmd {
        key: Option<IdempotencyKey>,
        value: u32,
        deadline: Instant,
    }

    impl Batched for Cmd {
        fn key(&self) -> Option<&IdempotencyKey> {
            self.key.as_ref()
        }

        fn deadline(&self) -> Instant {
            self.deadline
        }
    }

    fn cmd(request: Option<&str>, value: u32) -> Cmd {
        Cmd {
            key: request.map(|id| IdempotencyKey {
                tenant_id: TenantId::parse("t", "acme").expect("tenant"),
                request_id: RequestId::parse("r", id).expect("request"),
                client: String::new(),
                operation: "Test",
                fingerprint: vec![u8::try_from(value % 256).expect("byte")],
            }),
            value,
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }

    /// Serves each group by doubling its value, recording every batch's request ids.
    fn doubling(
        batches: Arc<Mutex<Vec<Vec<String>>>>,
    ) -> impl Fn(Vec<Group<Cmd, u32>>) -> std::future::Ready<()> + Send + 'static {
        move |groups| {
            let ids = groups
                .iter()
                .map(|group| {
                    group
                        .cmd
                        .key
                        .as_ref()
                        .map_or_else(String::new, |key| key.request_id.to_string())
                })
                .collect();
            locked(&batches).push(ids);
            for group in groups {
                let value = group.cmd.value * 2;
                group.answer(Ok(value));
            }
            std::future::ready(())
        }
    }

    /// The batch's span callsite is registered once for the whole test binary, with the
    /// subscribers live at that moment: tests that run batches take turns, so that none
    /// registers it while the span test's subscriber is being set up.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Records which spans each span follows from.
    struct Links(Arc<Mutex<Vec<(tracing::Id, tracing::Id)>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Links {
        fn on_follows_from(
            &self,
            span: &tracing::Id,
            follows: &tracing::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            locked(&self.0).push((span.clone(), follows.clone()));
        }
    }

    #[tokio::test]
    async fn a_batch_runs_in_a_span_that_follows_from_the_calls_it_serves() {
        let _serial = SERIAL.lock().await;
        use tracing_subscriber::layer::SubscriberExt;

        let links = Arc::new(Mutex::new(Vec::new()));
        let _subscriber = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(Links(links.clone())),
        );
        let batcher = Arc::new(Batcher::<(), Cmd, u32>::new(8, "test"));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let mut calls = tokio::task::JoinSet::new();
        let mut call_spans = Vec::new();
        for i in 0..3u32 {
            let span = tracing::info_span!("call", i);
            call_spans.push(span.id().expect("an enabled span"));
            let (batcher, serve) = (batcher.clone(), doubling(batches.clone()));
            calls.spawn(
                async move { batcher.submit((), cmd(None, i), serve).await }.instrument(span),
            );
        }
        let answers = calls.join_all().await;
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(locked(&batches).len(), 1, "the three calls shared a batch");
        let links = locked(&links).clone();
        let batch = &links
            .first()
            .expect("the batch's span follows from its calls")
            .0;
        let followed: Vec<&tracing::Id> = links
            .iter()
            .filter(|(span, _)| span == batch)
            .map(|(_, follows)| follows)
            .collect();
        assert_eq!(followed.len(), 3);
        for call in &call_spans {
            assert!(
                followed.contains(&call),
                "the batch does not follow {call:?}"
            );
        }
    }

    #[tokio::test]
    async fn concurrent_commands_share_batches_and_copies_share_an_answer() {
        let _serial = SERIAL.lock().await;
        let batcher = Arc::new(Batcher::<(), Cmd, u32>::new(4, "test"));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..10u32 {
            let (batcher, batches) = (batcher.clone(), batches.clone());
            // Every request is sent twice, one copy right after the other.
            let request = format!("r{}", i / 2);
            calls.spawn(async move {
                let value = i / 2;
                let answer = batcher
                    .submit((), cmd(Some(&request), value), doubling(batches))
                    .await;
                (value, answer)
            });
        }
        while let Some(done) = calls.join_next().await {
            let (value, answer) = done.expect("task");
            assert_eq!(answer.expect("served"), value * 2);
        }
        assert_eq!(batcher.queued_keys(), 0, "a drained queue is removed");
        let batches = locked(&batches).clone();
        assert!(
            batches.iter().all(|ids| ids.len() <= 4),
            "batches of at most 4: {batches:?}"
        );
        for ids in &batches {
            let mut distinct = ids.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(
                &distinct.len(),
                &ids.len(),
                "a request served twice in one batch: {ids:?}"
            );
        }
        let served: usize = batches.iter().map(Vec::len).sum();
        assert!(
            served < 10,
            "no copy shared its batch's serving: {batches:?}"
        );
    }

    #[tokio::test]
    async fn a_reused_request_id_is_refused_and_a_missed_deadline_answered() {
        let _serial = SERIAL.lock().await;
        let (first, _first_answer) = oneshot::channel::<Result<u32, MarketingError>>();
        let (reused, reused_answer) = oneshot::channel::<Result<u32, MarketingError>>();
        let batch = vec![
            Pending {
                cmd: cmd(Some("same"), 1),
                reply: first,
                span: tracing::Span::none(),
            },
            Pending {
                cmd: cmd(Some("same"), 2),
                reply: reused,
                span: tracing::Span::none(),
            },
        ];
        let groups = group(batch);
        assert_eq!(groups.len(), 1);
        assert!(matches!(
            reused_answer.await,
            Ok(Err(MarketingError::Refused(Refusal::RequestIdReused)))
        ));

        // A batch that never answers: the caller stops waiting at its deadline.
        let batcher = Batcher::<(), Cmd, u32>::new(4, "test");
        let mut late = cmd(None, 1);
        late.deadline = Instant::now() + Duration::from_millis(20);
        let answer = batcher
            .submit((), late, |groups: Vec<Group<Cmd, u32>>| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                drop(groups);
            })
            .await;
        assert!(matches!(answer, Err(MarketingError::DeadlineExceeded)));
    }

    #[tokio::test]
    async fn lost_races_are_retried_until_won_or_the_deadline() {
        let _serial = SERIAL.lock().await;
        let tries = AtomicU32::new(0);
        let backoff_by = Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        };
        let (won, made) = retry_lost_races(
            Instant::now() + Duration::from_secs(5),
            backoff_by,
            |attempt| {
                tries.fetch_add(1, Relaxed);
                async move {
                    if attempt < 3 {
                        Err(MarketingError::ConcurrentModification("lost".into()))
                    } else {
                        Ok(attempt)
                    }
                }
            },
        )
        .await;
        assert_eq!((won.expect("won"), made), (3, 4));
        let (lost, _) = retry_lost_races(Instant::now(), backoff_by, |_| async {
            Err::<(), _>(MarketingError::ConcurrentModification("lost".into()))
        })
        .await;
        assert!(matches!(
            lost,
            Err(MarketingError::ConcurrentModification(_))
        ));
        let (refused, made) = retry_lost_races(Instant::now(), backoff_by, |_| async {
            Err::<(), _>(MarketingError::Refused(Refusal::OutOfStock))
        })
        .await;
        assert!(matches!(
            refused,
            Err(MarketingError::Refused(Refusal::OutOfStock))
        ));
        assert_eq!(made, 1, "a refusal is not retried");
    }
}
