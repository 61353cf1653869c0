//! Reminders before things expire: `coupon.expiring` for each available coupon whose validity
//! ends within `MARKETING_REMINDER_COUPON_DAYS`, `points.expiring` for each lot of points that
//! expires within `MARKETING_REMINDER_POINTS_DAYS`; each once, however many replicas sweep
//! (see `storage::reminders`).

use std::time::Duration;

use marketing_domain::{MarketingError, UnixMicros};
use marketing_storage::{
    reminders::{ReminderKind, ReminderStore},
    unit::UnitOfWork,
};

use super::EventService;
use crate::wire::events::{CouponChanged, coupon_event, points_expiring_event};

/// Units one sweep runs of each kind at most; the rest waits for the next sweep.
const UNITS_PER_SWEEP: usize = 20;

/// `days` from `now` (0 days: no window).
fn window(now: UnixMicros, days: u64) -> Option<UnixMicros> {
    let span = Duration::from_secs(days.checked_mul(86_400)?);
    let span = i64::try_from(span.as_micros()).ok()?;
    (days > 0).then(|| UnixMicros(now.0.saturating_add(span)))
}

impl EventService {
    /// One reminder sweep, in units of `batch`: (coupons, lots) reminded of.
    pub async fn remind_expiring(&self, batch: u64) -> Result<(u64, u64), MarketingError> {
        let config = &self.shared.config;
        let now = self.shared.clock.now();
        let db = &self.shared.db;
        let mut coupons = 0;
        if let Some(until) = window(now, config.reminder_coupon_days) {
            for _ in 0..UNITS_PER_SWEEP {
                let mut unit = UnitOfWork::begin(db).await?;
                let due = unit.reminders().coupons_expiring(now, until, batch).await?;
                let marks = due.iter().map(|c| (c.id.0, c.valid_until)).collect();
                let new = unit
                    .reminders()
                    .remember(ReminderKind::Coupon, marks)
                    .await?;
                for coupon in due.iter().filter(|c| new.contains(&c.id.0)) {
                    unit.record(coupon_event(CouponChanged::Expiring, coupon, None, now));
                }
                unit.commit().await?;
                coupons += new.len() as u64;
                if (due.len() as u64) < batch {
                    break;
                }
            }
        }
        let mut lots = 0;
        if let Some(until) = window(now, config.reminder_points_days) {
            for _ in 0..UNITS_PER_SWEEP {
                let mut unit = UnitOfWork::begin(db).await?;
                let due = unit.reminders().lots_expiring(now, until, batch).await?;
                let marks = due.iter().map(|lot| (lot.id, lot.expires_at)).collect();
                let new = unit.reminders().remember(ReminderKind::Lot, marks).await?;
                for lot in due.iter().filter(|lot| new.contains(&lot.id)) {
                    unit.record(points_expiring_event(lot, now)?);
                }
                unit.commit().await?;
                lots += new.len() as u64;
                if (due.len() as u64) < batch {
                    break;
                }
            }
        }
        Ok((coupons, lots))
    }
}
