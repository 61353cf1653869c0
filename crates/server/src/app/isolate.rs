//! Fault isolation for batches: a batch shares a commit, never a fate. When a batch fails for
//! a reason that may lie in one of its commands, each half is served again on its own (and so
//! on), so the failing command fails alone and every other is answered as if it had been
//! alone. A batch that failed wrote nothing; a command served again that did commit finds its
//! idempotency record and replays it.

use std::ops::Range;

use marketing_domain::MarketingError;

use marketing_domain::error::chain;

/// Which commands to serve together next, and the answers so far. The caller serves each
/// range [`Isolation::next_batch`] gives as one batch and hands the outcome to
/// [`Isolation::record`]; a failed batch of several commands is split in halves, until the
/// failure is one command's own. Transient failures (unavailable, contention, deadline) say
/// nothing about the commands and answer the whole batch.
pub struct Isolation<R> {
    results: Vec<Option<Result<R, MarketingError>>>,
    pending: Vec<Range<usize>>,
}

impl<R> Isolation<R> {
    pub fn new(commands: usize) -> Self {
        Self {
            results: (0..commands).map(|_| None).collect(),
            // One range to begin with: all the commands together.
            #[allow(clippy::single_range_in_vec_init)]
            pending: vec![0..commands],
        }
    }

    /// The commands to serve as the next batch.
    pub fn next_batch(&mut self) -> Option<Range<usize>> {
        self.pending.pop().filter(|range| !range.is_empty())
    }

    /// Records how the batch `range` went; returns whether it was split to be served again.
    pub fn record(
        &mut self,
        range: Range<usize>,
        outcome: Result<Vec<Result<R, MarketingError>>, MarketingError>,
    ) -> bool {
        match outcome {
            Ok(served) if served.len() == range.len() => {
                for (index, result) in range.zip(served) {
                    self.results[index] = Some(result);
                }
            }
            Ok(served) => {
                let err = MarketingError::internal(format!(
                    "a batch of {} commands was answered {} times",
                    range.len(),
                    served.len()
                ));
                for index in range {
                    self.results[index] = Some(Err(err.copy()));
                }
            }
            Err(err) if range.len() > 1 && !err.is_transient() => {
                tracing::debug!(error = %chain(&err), commands = range.len(),
                    "batch failed, served again in halves");
                let middle = range.start + range.len() / 2;
                self.pending.push(middle..range.end);
                self.pending.push(range.start..middle);
                return true;
            }
            // The command's own failure, answered (and logged with its chain) as it is.
            Err(err) if range.len() == 1 => self.results[range.start] = Some(Err(err)),
            Err(err) => {
                marketing_infra::warn_every!(error = %chain(&err), commands = range.len(), "batch failed");
                for index in range {
                    self.results[index] = Some(Err(err.copy()));
                }
            }
        }
        false
    }

    /// Serves `commands` commands, a range of them at a time through `serve`, until each has
    /// its answer; `split` counts each batch split in halves. One answer per command, in order.
    pub async fn serve<F, Fut>(
        commands: usize,
        mut serve: F,
        split: impl Fn(),
    ) -> Vec<Result<R, MarketingError>>
    where
        F: FnMut(Range<usize>) -> Fut,
        Fut: Future<Output = Result<Vec<Result<R, MarketingError>>, MarketingError>>,
    {
        let mut isolation = Self::new(commands);
        while let Some(range) = isolation.next_batch() {
            let outcome = serve(range.clone()).await;
            if isolation.record(range, outcome) {
                split();
            }
        }
        isolation.finish()
    }

    /// One answer per command, in order.
    pub fn finish(self) -> Vec<Result<R, MarketingError>> {
        self.results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(MarketingError::internal("command left unserved"))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch fails as a whole when any of its commands is negative; each served command
    /// answers its own value doubled.
    fn doubled(batch: &[i64]) -> Result<Vec<Result<i64, MarketingError>>, MarketingError> {
        if batch.iter().any(|v| *v < 0) {
            return Err(MarketingError::internal("a negative command"));
        }
        Ok(batch.iter().map(|v| Ok(v * 2)).collect())
    }

    #[test]
    fn a_failing_command_fails_alone() {
        let commands: Vec<i64> = (0..29).map(|i| if i == 17 { -1 } else { i }).collect();
        let mut isolation = Isolation::new(commands.len());
        let (mut batches, mut splits) = (0, 0);
        while let Some(range) = isolation.next_batch() {
            batches += 1;
            let outcome = doubled(&commands[range.clone()]);
            splits += usize::from(isolation.record(range, outcome));
        }
        let results = isolation.finish();
        for (i, result) in results.iter().enumerate() {
            match result {
                Ok(v) => assert_eq!(*v, commands[i] * 2),
                Err(err) => {
                    assert_eq!(i, 17);
                    assert!(matches!(err, MarketingError::Internal(_)));
                }
            }
        }
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        // One split per level down to the failing command (29 -> 15 -> 7 -> 4 -> 2 -> 1),
        // and each split serves two halves.
        assert_eq!((splits, batches), (5, 11));
    }

    #[test]
    fn transient_failures_are_not_split() {
        let mut isolation: Isolation<i64> = Isolation::new(3);
        let range = isolation.next_batch().unwrap();
        let split = isolation.record(
            range,
            Err(MarketingError::Unavailable("database down".into())),
        );
        assert!(!split);
        assert!(isolation.next_batch().is_none());
        assert!(isolation.finish().iter().all(|r| r.is_err()));
    }
}
