//! The retention sweeper: records that only serve retries (idempotency records, finished
//! points holds) are deleted once older than `MARKETING_RETENTION_SECS`, in small batches, each
//! its own short statement, so a backlog never holds a long lock.

use marketing_domain::{MarketingError, UnixMicros};
use marketing_storage::{
    codes::CodeStore, events::EventStore, idempotency::RequestStore, points::accounts::PointsStore,
    reminders::ReminderStore, unit::UnitOfWork,
};

use super::Shared;

/// How often the server sweeps past-retention records (the window is days: a minute late costs
/// nothing, and each sweep reads the index's new ranges once).
pub const RETENTION_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Batches one sweep deletes of each kind at most; the rest waits for the next sweep.
const BATCHES_PER_SWEEP: usize = 20;

/// The retention sweep of every context's records.
#[derive(Clone)]
pub struct RetentionService {
    pub(crate) shared: Shared,
}

impl RetentionService {
    /// One retention sweep, in batches of `batch`: (idempotency records and the code
    /// generations they answered, holds) deleted.
    pub async fn sweep_records(&self, batch: u64) -> Result<(u64, u64), MarketingError> {
        let retention = i64::try_from(self.shared.config.retention.as_micros()).unwrap_or(i64::MAX);
        let before = UnixMicros(self.shared.clock.now().0.saturating_sub(retention));
        let db = &self.shared.db;
        let unit = UnitOfWork::begin(db).await?;
        unit.requests().summarize_created().await?;
        unit.commit().await?;
        // Each batch its own unit: one short statement, never a long lock.
        let records = in_batches(batch, || async {
            let unit = UnitOfWork::begin(db).await?;
            let deleted = unit.requests().delete_before(before, batch).await?;
            unit.commit().await?;
            Ok(deleted)
        })
        .await?;
        let generations = in_batches(batch, || async {
            let unit = UnitOfWork::begin(db).await?;
            let deleted = unit
                .codes()
                .delete_finished_generations(before, batch)
                .await?;
            unit.commit().await?;
            Ok(deleted)
        })
        .await?;
        let holds = in_batches(batch, || async {
            let unit = UnitOfWork::begin(db).await?;
            let deleted = unit.points().delete_finished_holds(before, batch).await?;
            unit.commit().await?;
            Ok(deleted)
        })
        .await?;
        Ok((records + generations, holds))
    }

    /// Deletes events older than `MARKETING_EVENTS_RETENTION_DAYS`, oldest position first, up
    /// to `batches` of the changes' event batches per unit, and the reminders of what expired
    /// over a day ago; how many events went.
    pub async fn sweep_events(&self, batches: u64) -> Result<u64, MarketingError> {
        let days = self.shared.config.events_retention_days;
        let retention = i64::try_from(days.saturating_mul(86_400_000_000)).unwrap_or(i64::MAX);
        let before = UnixMicros(self.shared.clock.now().0.saturating_sub(retention));
        let db = &self.shared.db;
        let events = in_batches(batches, || async {
            let unit = UnitOfWork::begin(db).await?;
            let deleted = unit.events().delete_expired(before, batches).await?;
            unit.commit().await?;
            Ok(deleted)
        })
        .await?;
        // Reminders of what expired a day ago are never due again.
        let expired = UnixMicros(self.shared.clock.now().0.saturating_sub(86_400_000_000));
        in_batches(batches, || async {
            let unit = UnitOfWork::begin(db).await?;
            let deleted = unit.reminders().forget_before(expired, batches).await?;
            unit.commit().await?;
            Ok(deleted)
        })
        .await?;
        Ok(events)
    }
}

/// Runs `delete` (one batch of at most `batch` rows) until a batch comes short or
/// [`BATCHES_PER_SWEEP`] ran; how many rows went.
async fn in_batches<F>(batch: u64, delete: impl Fn() -> F) -> Result<u64, MarketingError>
where
    F: std::future::Future<Output = Result<u64, MarketingError>>,
{
    let mut total = 0;
    for _ in 0..BATCHES_PER_SWEEP {
        let deleted = delete().await?;
        total += deleted;
        if deleted < batch {
            break;
        }
    }
    Ok(total)
}
