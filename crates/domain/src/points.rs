//! Points: an account, its lots (earned points with their own expiry), and the ledger that
//! records every change. [`Ledger`] is a working copy of one account: each operation changes
//! balances and lots and appends ledger entries, so the account always equals the replay of
//! its entries. The caller writes the result with an optimistic-version check.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::{MarketingError, MemberId, TenantId, UnixMicros, error::Refusal};

/// Largest amount of points in one request or one balance: 2^50 (~1.1e15), so every sum of
/// two stays far from overflow and every balance is exact as a leaderboard score (f64).
pub const MAX_POINTS: i64 = 1 << 50;

/// The longest a hold may be asked to last before it expires.
pub const MAX_HOLD_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The longest description of a ledger entry, in characters.
pub const MAX_ENTRY_DESCRIPTION_CHARS: usize = 2000;
/// The longest caller reference of an entry: its kind (`biz_type`) and its id (`biz_id`), and
/// the order a hold is for, in bytes.
pub const MAX_BIZ_TYPE_LEN: usize = 64;
pub const MAX_BIZ_ID_LEN: usize = 128;
pub const MAX_ORDER_ID_LEN: usize = 128;
/// A leaderboard's size when the caller names none, and the largest it may ask for.
pub const DEFAULT_LEADERBOARD_SIZE: usize = 10;
pub const MAX_LEADERBOARD_SIZE: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxType {
    Earn,
    Deduct,
    Freeze,
    Confirm,
    Release,
    Refund,
    Expire,
    Adjust,
}

impl TxType {
    pub const ALL: [Self; 8] = [
        Self::Earn,
        Self::Deduct,
        Self::Freeze,
        Self::Confirm,
        Self::Release,
        Self::Refund,
        Self::Expire,
        Self::Adjust,
    ];

    pub fn code(self) -> i16 {
        match self {
            Self::Earn => 1,
            Self::Deduct => 2,
            Self::Freeze => 3,
            Self::Confirm => 4,
            Self::Release => 5,
            Self::Refund => 6,
            Self::Expire => 7,
            Self::Adjust => 8,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    Held,
    Confirmed,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn code(self) -> i16 {
        match self {
            Self::Held => 1,
            Self::Confirmed => 2,
            Self::Released => 3,
            Self::Expired => 4,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        [Self::Held, Self::Confirmed, Self::Released, Self::Expired]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub available: i64,
    pub frozen: i64,
    pub total_earned: i64,
    pub total_spent: i64,
    pub total_expired: i64,
    pub total_refunded: i64,
    pub version: i64,
    pub earned_updated_at: UnixMicros,
    pub created_at: UnixMicros,
    pub updated_at: UnixMicros,
}

/// Points earned together, expiring together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    pub id: Uuid,
    pub earn_transaction_id: Uuid,
    pub amount: i64,
    /// Not yet spent or expired; frozen points included.
    pub remaining: i64,
    pub frozen: i64,
    pub expires_at: Option<UnixMicros>,
    pub created_at: UnixMicros,
}

impl Lot {
    /// Points of this lot that can be spent or frozen now.
    pub fn free(&self) -> i64 {
        self.remaining - self.frozen
    }

    pub fn is_due(&self, now: UnixMicros) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Consumption order: earliest expiry first, points that never expire last.
    fn order_key(&self) -> (bool, i64, Uuid) {
        (
            self.expires_at.is_none(),
            self.expires_at.map_or(0, |t| t.0),
            self.id,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: Uuid,
    pub account_id: Uuid,
    pub order_id: String,
    pub status: HoldStatus,
    pub amount: i64,
    pub confirmed_amount: i64,
    pub expires_at: UnixMicros,
    pub created_at: UnixMicros,
    pub updated_at: UnixMicros,
}

/// The caller's description of an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMeta {
    pub biz_type: Option<String>,
    pub biz_id: Option<String>,
    pub request_id: Option<String>,
    pub description: String,
    /// The API client that made the change.
    pub actor: Option<String>,
}

/// One ledger entry: `amount` changes `available`, `frozen_amount` changes `frozen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: Uuid,
    pub tx_type: TxType,
    pub amount: i64,
    pub frozen_amount: i64,
    pub available_after: i64,
    pub frozen_after: i64,
    pub meta: EntryMeta,
    pub hold_id: Option<Uuid>,
    pub related_transaction_id: Option<Uuid>,
    /// For EARN: when the lot expires.
    pub expires_at: Option<UnixMicros>,
    /// The ledger's order, independent of clocks: the account version the entry's write
    /// produced, and the entry's position in that write.
    pub account_version: i64,
    pub position: i32,
    pub created_at: UnixMicros,
}

/// Points taken from (positive) or given back to (negative) a lot, by an entry or a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub lot_id: Uuid,
    pub transaction_id: Option<Uuid>,
    pub hold_id: Option<Uuid>,
    pub amount: i64,
}

fn insufficient(available: i64) -> MarketingError {
    MarketingError::Refused(Refusal::InsufficientPoints { available })
}

/// The most a lifetime total (spent, refunded) may reach: far beyond any real account, and
/// low enough that sums of totals never overflow an `i64`.
pub const MAX_TOTAL: i64 = i64::MAX / 4;

/// `value + amount`, refused with [`MarketingError::Refused(Refusal::PointsLimitExceeded)`] past `limit`:
/// checked before anything changes.
fn add_within(
    value: i64,
    amount: i64,
    total: &'static str,
    limit: i64,
) -> Result<i64, MarketingError> {
    value
        .checked_add(amount)
        .filter(|sum| *sum <= limit)
        .ok_or(MarketingError::Refused(Refusal::PointsLimitExceeded {
            total,
            limit,
        }))
}

/// An account as answered: its balances, and the next points to expire (amount and time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub account: Account,
    pub next_expiry: Option<(i64, UnixMicros)>,
}

/// What a change of points answers with: the account after it, the hold it made or changed,
/// and the entry it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointsOutcome {
    pub account: AccountView,
    pub hold: Option<Hold>,
    pub entry: Option<Entry>,
}

/// A working copy of one account: operations change it in memory; the caller persists the
/// account (checking its version), the changed and new lots, entries, allocations and holds.
#[derive(Debug)]
pub struct Ledger {
    pub account: Account,
    /// The version read: the write must find it unchanged.
    pub read_version: i64,
    /// Every lot known: read, and earned by this ledger (spendable at once).
    lots: BTreeMap<Uuid, Lot>,
    changed_lots: Vec<Uuid>,
    /// The lots this ledger earned, in `lots` like the others.
    new_lots: Vec<Uuid>,
    pub entries: Vec<Entry>,
    pub allocations: Vec<Allocation>,
    /// Holds created or changed.
    pub holds: Vec<Hold>,
    now: UnixMicros,
}

impl Ledger {
    pub fn new(account: Account, lots: Vec<Lot>, now: UnixMicros) -> Self {
        let read_version = account.version;
        let mut ledger = Self {
            account,
            read_version,
            lots: BTreeMap::new(),
            changed_lots: Vec::new(),
            new_lots: Vec::new(),
            entries: Vec::new(),
            allocations: Vec::new(),
            holds: Vec::new(),
            now,
        };
        ledger.add_lots(lots);
        ledger
    }

    /// Makes more lots known (a refund's original lots may be spent out, so not live).
    pub fn add_lots(&mut self, lots: Vec<Lot>) {
        for lot in lots {
            self.lots.entry(lot.id).or_insert(lot);
        }
    }

    pub fn now(&self) -> UnixMicros {
        self.now
    }

    /// The lots read and changed since, for writing (a lot earned by this ledger is written
    /// once, as new, with what it holds now).
    pub fn changed_lots(&self) -> impl Iterator<Item = &Lot> {
        self.changed_lots
            .iter()
            .filter(|id| !self.new_lots.contains(id))
            .filter_map(|id| self.lots.get(id))
    }

    /// The lots this ledger earned, as they stand now, for writing.
    pub fn new_lots(&self) -> impl Iterator<Item = &Lot> {
        self.new_lots.iter().filter_map(|id| self.lots.get(id))
    }

    fn touch(&mut self, id: Uuid) {
        if !self.changed_lots.contains(&id) {
            self.changed_lots.push(id);
        }
    }

    fn lots_in_order(&self) -> Vec<Uuid> {
        let mut ids: Vec<&Lot> = self.lots.values().collect();
        ids.sort_by_key(|lot| lot.order_key());
        ids.into_iter().map(|lot| lot.id).collect()
    }

    fn push(&mut self, tx_type: TxType, amount: i64, frozen_amount: i64, meta: EntryMeta) -> Uuid {
        let id = Uuid::now_v7();
        self.entries.push(Entry {
            id,
            tx_type,
            amount,
            frozen_amount,
            available_after: self.account.available,
            frozen_after: self.account.frozen,
            meta,
            hold_id: None,
            related_transaction_id: None,
            expires_at: None,
            account_version: self.read_version + 1,
            position: i32::try_from(self.entries.len()).unwrap_or(i32::MAX),
            created_at: self.now,
        });
        id
    }

    fn last_entry(&mut self) -> Option<&mut Entry> {
        self.entries.last_mut()
    }

    /// Expires the free points of every due lot: one EXPIRE entry per lot, related to the
    /// EARN that made it. Every operation starts (and release-like ones end) with this, so
    /// balances never count points whose time has passed.
    pub fn expire_due(&mut self) {
        for id in self.lots_in_order() {
            let Some(lot) = self.lots.get_mut(&id) else {
                continue;
            };
            let free = lot.free();
            if !lot.is_due(self.now) || free <= 0 {
                continue;
            }
            lot.remaining -= free;
            let earn = lot.earn_transaction_id;
            self.touch(id);
            self.account.available -= free;
            self.account.total_expired += free;
            self.push(
                TxType::Expire,
                -free,
                0,
                EntryMeta {
                    description: "points expired".into(),
                    ..EntryMeta::default()
                },
            );
            if let Some(entry) = self.last_entry() {
                entry.related_transaction_id = Some(earn);
            }
        }
    }

    /// Adds `amount` points in a new lot expiring at `expires_at`.
    pub fn earn(
        &mut self,
        amount: i64,
        expires_at: Option<UnixMicros>,
        meta: EntryMeta,
    ) -> Result<Uuid, MarketingError> {
        let available = add_within(self.account.available, amount, "balance", MAX_POINTS)?;
        let total = add_within(
            self.account.total_earned,
            amount,
            "total_earned",
            MAX_POINTS,
        )?;
        self.account.total_earned = total;
        self.account.available = available;
        self.account.earned_updated_at = self.now;
        let id = self.push(TxType::Earn, amount, 0, meta);
        if let Some(entry) = self.last_entry() {
            entry.expires_at = expires_at;
        }
        let lot = Lot {
            id: Uuid::now_v7(),
            earn_transaction_id: id,
            amount,
            remaining: amount,
            frozen: 0,
            expires_at,
            created_at: self.now,
        };
        self.new_lots.push(lot.id);
        self.lots.insert(lot.id, lot);
        Ok(id)
    }

    /// A manual correction: `amount` > 0 adds a lot (expiring at `expires_at`) counted in
    /// `total_earned`; `amount` < 0 takes from the soonest-expiring lots, never more than is
    /// available, counted in `total_spent`. One ADJUST entry either way.
    pub fn adjust(
        &mut self,
        amount: i64,
        expires_at: Option<UnixMicros>,
        meta: EntryMeta,
    ) -> Result<Uuid, MarketingError> {
        let id = if amount > 0 {
            self.earn(amount, expires_at, meta)?
        } else {
            self.deduct(-amount, meta)?
        };
        if let Some(entry) = self.last_entry() {
            entry.tx_type = TxType::Adjust;
        }
        Ok(id)
    }

    /// Picks `amount` free points from live lots in consumption order.
    fn pick_free(&self, amount: i64) -> Result<Vec<(Uuid, i64)>, MarketingError> {
        let mut left = amount;
        let mut picks = Vec::new();
        for id in self.lots_in_order() {
            let Some(lot) = self.lots.get(&id) else {
                continue;
            };
            if left == 0 {
                break;
            }
            if lot.is_due(self.now) || lot.free() <= 0 {
                continue;
            }
            let take = lot.free().min(left);
            picks.push((id, take));
            left -= take;
        }
        if left > 0 {
            Err(insufficient(self.account.available))
        } else {
            Ok(picks)
        }
    }

    /// Spends `amount` points, earliest-expiring lots first.
    pub fn deduct(&mut self, amount: i64, meta: EntryMeta) -> Result<Uuid, MarketingError> {
        if amount > self.account.available {
            return Err(insufficient(self.account.available));
        }
        let picks = self.pick_free(amount)?;
        let total_spent = add_within(self.account.total_spent, amount, "total_spent", MAX_TOTAL)?;
        self.account.available -= amount;
        self.account.total_spent = total_spent;
        let id = self.push(TxType::Deduct, -amount, 0, meta);
        for (lot_id, take) in picks {
            if let Some(lot) = self.lots.get_mut(&lot_id) {
                lot.remaining -= take;
            }
            self.touch(lot_id);
            self.allocations.push(Allocation {
                lot_id,
                transaction_id: Some(id),
                hold_id: None,
                amount: take,
            });
        }
        Ok(id)
    }

    /// Reserves `amount` points for `order_id` until `expires_at`: a new HELD hold.
    pub fn freeze(
        &mut self,
        amount: i64,
        order_id: &str,
        expires_at: UnixMicros,
        meta: EntryMeta,
    ) -> Result<Hold, MarketingError> {
        if amount > self.account.available {
            return Err(insufficient(self.account.available));
        }
        let picks = self.pick_free(amount)?;
        let hold = Hold {
            id: Uuid::now_v7(),
            account_id: self.account.id,
            order_id: order_id.to_owned(),
            status: HoldStatus::Held,
            amount,
            confirmed_amount: 0,
            expires_at,
            created_at: self.now,
            updated_at: self.now,
        };
        self.account.available -= amount;
        self.account.frozen += amount;
        self.push(TxType::Freeze, -amount, amount, meta);
        if let Some(entry) = self.last_entry() {
            entry.hold_id = Some(hold.id);
        }
        for (lot_id, take) in picks {
            if let Some(lot) = self.lots.get_mut(&lot_id) {
                lot.frozen += take;
            }
            self.touch(lot_id);
            self.allocations.push(Allocation {
                lot_id,
                transaction_id: None,
                hold_id: Some(hold.id),
                amount: take,
            });
        }
        self.holds.push(hold.clone());
        Ok(hold)
    }

    /// Ends a HELD hold: spends `spend` of it (earliest-expiring of its lots first) and
    /// returns the rest to available. `held` lists the hold's lots and amounts. Returns the
    /// CONFIRM entry's id (when anything was spent) and the hold as changed.
    pub fn settle_hold(
        &mut self,
        hold: &Hold,
        held: &[(Uuid, i64)],
        spend: i64,
        status: HoldStatus,
        meta: EntryMeta,
    ) -> Result<(Option<Uuid>, Hold), MarketingError> {
        // An earlier command of this ledger may have settled the hold already.
        let hold = &self.planned_hold(hold.clone());
        if hold.status != HoldStatus::Held {
            return Err(MarketingError::Refused(Refusal::InvalidHoldState {
                status: format!("{:?}", hold.status).to_uppercase(),
            }));
        }
        if spend > hold.amount {
            return Err(MarketingError::Refused(Refusal::ConfirmExceedsHold {
                held: hold.amount,
            }));
        }
        if spend < 0 {
            return Err(MarketingError::invalid("amount", "must not be negative"));
        }
        let total_spent = add_within(self.account.total_spent, spend, "total_spent", MAX_TOTAL)?;
        let mut order: Vec<(Uuid, i64)> = held.to_vec();
        order.sort_by_key(|(id, _)| self.lots.get(id).map(Lot::order_key));
        let mut left = spend;
        let mut spent = Vec::new();
        for (lot_id, amount) in order {
            let Some(lot) = self.lots.get_mut(&lot_id) else {
                return Err(MarketingError::internal("a hold's lot is missing"));
            };
            let take = amount.min(left);
            lot.frozen -= amount;
            lot.remaining -= take;
            left -= take;
            self.touch(lot_id);
            if take > 0 {
                spent.push((lot_id, take));
            }
        }
        let rest = hold.amount - spend;
        let mut confirm_id = None;
        if spend > 0 {
            self.account.frozen -= spend;
            self.account.total_spent = total_spent;
            // Frozen points leave; available is unchanged by the spending itself.
            let id = self.push(TxType::Confirm, 0, -spend, meta.clone());
            if let Some(entry) = self.last_entry() {
                entry.hold_id = Some(hold.id);
            }
            for (lot_id, take) in spent {
                self.allocations.push(Allocation {
                    lot_id,
                    transaction_id: Some(id),
                    hold_id: None,
                    amount: take,
                });
            }
            confirm_id = Some(id);
        }
        if rest > 0 {
            self.account.frozen -= rest;
            self.account.available += rest;
            self.push(TxType::Release, rest, -rest, meta);
            if let Some(entry) = self.last_entry() {
                entry.hold_id = Some(hold.id);
            }
        }
        let mut settled = hold.clone();
        settled.status = status;
        settled.confirmed_amount = spend;
        settled.updated_at = self.now;
        self.holds.push(settled.clone());
        // Points released into lots whose time has passed expire now.
        self.expire_due();
        Ok((confirm_id, settled))
    }

    /// Gives back `amount` of a DEDUCT or CONFIRM entry `target` to the lots it took from
    /// (`taken`: lot and points not yet refunded), longest-lived lots first. Points returned
    /// to expired lots expire again in the same change.
    ///
    /// `taken` is as stored; what this ledger's own earlier refunds of `target` gave back is
    /// subtracted here, so refunds of one deduction in one batch answer as one after another.
    /// `amount` `None` refunds all that is left.
    pub fn refund(
        &mut self,
        target: Uuid,
        taken: &[(Uuid, i64)],
        amount: Option<i64>,
        meta: EntryMeta,
    ) -> Result<Uuid, MarketingError> {
        let pending = self.pending_refunds(target);
        let taken: Vec<(Uuid, i64)> = taken
            .iter()
            .map(|&(lot, left)| (lot, left - pending.get(&lot).copied().unwrap_or(0)))
            .filter(|(_, left)| *left > 0)
            .collect();
        let refundable: i64 = taken.iter().map(|(_, a)| a).sum();
        let amount = amount.unwrap_or(refundable);
        if amount > refundable || amount <= 0 {
            return Err(MarketingError::Refused(Refusal::RefundExceedsSpent {
                refundable,
            }));
        }
        let available = add_within(self.account.available, amount, "balance", MAX_POINTS)?;
        let total_refunded = add_within(
            self.account.total_refunded,
            amount,
            "total_refunded",
            MAX_TOTAL,
        )?;
        let mut order: Vec<(Uuid, i64)> = taken;
        order.sort_by_key(|(id, _)| self.lots.get(id).map(Lot::order_key));
        order.reverse();
        self.account.available = available;
        self.account.total_refunded = total_refunded;
        let id = self.push(TxType::Refund, amount, 0, meta);
        if let Some(entry) = self.last_entry() {
            entry.related_transaction_id = Some(target);
        }
        let mut left = amount;
        for (lot_id, take) in order {
            if left == 0 {
                break;
            }
            let Some(lot) = self.lots.get_mut(&lot_id) else {
                return Err(MarketingError::internal("a refunded lot is missing"));
            };
            let back = take.min(left);
            lot.remaining += back;
            left -= back;
            self.touch(lot_id);
            self.allocations.push(Allocation {
                lot_id,
                transaction_id: Some(id),
                hold_id: None,
                amount: -back,
            });
        }
        self.expire_due();
        Ok(id)
    }

    /// Points this ledger's own (unwritten) refunds of `target` gave back, per lot.
    fn pending_refunds(&self, target: Uuid) -> HashMap<Uuid, i64> {
        let refunds: Vec<Uuid> = self
            .entries
            .iter()
            .filter(|e| e.tx_type == TxType::Refund && e.related_transaction_id == Some(target))
            .map(|e| e.id)
            .collect();
        let mut per_lot = HashMap::new();
        for allocation in &self.allocations {
            if allocation
                .transaction_id
                .is_some_and(|id| refunds.contains(&id))
            {
                *per_lot.entry(allocation.lot_id).or_default() -= allocation.amount;
            }
        }
        per_lot
    }

    /// `hold` as this ledger's commands left it: a hold settled earlier in the same batch is
    /// no longer HELD.
    pub fn planned_hold(&self, hold: Hold) -> Hold {
        self.holds
            .iter()
            .rev()
            .find(|h| h.id == hold.id)
            .cloned()
            .unwrap_or(hold)
    }

    /// Whether a hold this ledger created or changed holds `order_id` now.
    pub fn holds_order(&self, order_id: &str) -> bool {
        let mut seen = Vec::new();
        self.holds.iter().rev().any(|h| {
            let latest = !seen.contains(&h.id);
            seen.push(h.id);
            latest && h.order_id == order_id && h.status == HoldStatus::Held
        })
    }

    /// The next points to expire: (amount, when), among the lots holding points (no copies:
    /// this runs for every answered command).
    pub fn next_expiry(&self) -> Option<(i64, UnixMicros)> {
        let lots = || self.lots.values();
        let first = lots()
            .filter(|lot| lot.remaining > 0)
            .filter_map(|lot| lot.expires_at.filter(|at| *at > self.now))
            .min()?;
        let amount = lots()
            .filter(|lot| lot.expires_at == Some(first))
            .map(|lot| lot.remaining)
            .sum();
        Some((amount, first))
    }

    /// All lots known, old and new (for audits).
    pub fn lots(&self) -> Vec<Lot> {
        self.lots.values().cloned().collect()
    }
}

/// Checks an account against the replay of its entries (in ledger order: account version,
/// then position): the balances after each entry, the totals, and the lot invariant. `Err`
/// describes the first difference.
pub fn verify_replay(account: &Account, entries: &[Entry], lots: &[Lot]) -> Result<(), String> {
    let (mut available, mut frozen) = (0i64, 0i64);
    let (mut earned, mut spent, mut expired, mut refunded) = (0i64, 0i64, 0i64, 0i64);
    for entry in entries {
        available += entry.amount;
        frozen += entry.frozen_amount;
        if (available, frozen) != (entry.available_after, entry.frozen_after) {
            return Err(format!(
                "entry {} ({:?}) says {}/{} but the replay gives {available}/{frozen}",
                entry.id, entry.tx_type, entry.available_after, entry.frozen_after
            ));
        }
        if available < 0 || frozen < 0 {
            return Err(format!("entry {} makes a balance negative", entry.id));
        }
        match entry.tx_type {
            TxType::Earn => earned += entry.amount,
            TxType::Deduct => spent -= entry.amount,
            TxType::Confirm => spent -= entry.frozen_amount,
            TxType::Expire => expired -= entry.amount,
            TxType::Refund => refunded += entry.amount,
            // A correction up counts as earned, down as spent (`Ledger::adjust`).
            TxType::Adjust if entry.amount > 0 => earned += entry.amount,
            TxType::Adjust => spent -= entry.amount,
            TxType::Freeze | TxType::Release => {}
        }
    }
    let replayed = (available, frozen, earned, spent, expired, refunded);
    let stored = (
        account.available,
        account.frozen,
        account.total_earned,
        account.total_spent,
        account.total_expired,
        account.total_refunded,
    );
    if replayed != stored {
        return Err(format!(
            "account {stored:?} but the ledger replays to {replayed:?}"
        ));
    }
    if account.available != earned - spent + refunded - expired - frozen {
        return Err("available != earned - spent + refunded - expired - frozen".into());
    }
    let in_lots: i64 = lots.iter().map(|lot| lot.remaining).sum();
    if in_lots != available + frozen {
        return Err(format!(
            "lots hold {in_lots} but available + frozen is {}",
            available + frozen
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = crate::time::MICROS_PER_DAY;

    fn account() -> Account {
        Account {
            id: Uuid::now_v7(),
            tenant_id: TenantId::parse("t", "acme").unwrap(),
            member_id: MemberId::parse("m", "m1").unwrap(),
            available: 0,
            frozen: 0,
            total_earned: 0,
            total_spent: 0,
            total_expired: 0,
            total_refunded: 0,
            version: 1,
            earned_updated_at: UnixMicros(0),
            created_at: UnixMicros(0),
            updated_at: UnixMicros(0),
        }
    }

    /// Runs `ops` on a fresh ledger at `now` and checks the replay invariant.
    fn ledger_with(now: i64, earns: &[(i64, Option<i64>)]) -> Ledger {
        let mut ledger = Ledger::new(account(), vec![], UnixMicros(now));
        for (amount, expires) in earns {
            ledger
                .earn(*amount, expires.map(UnixMicros), EntryMeta::default())
                .unwrap();
        }
        // Persisted: new lots become known lots.
        let lots = ledger.lots();
        let entries = std::mem::take(&mut ledger.entries);
        let mut fresh = Ledger::new(ledger.account.clone(), lots, UnixMicros(now));
        fresh.entries = entries;
        fresh
    }

    fn check(ledger: &Ledger) {
        verify_replay(&ledger.account, &ledger.entries, &ledger.lots()).unwrap();
    }

    #[test]
    fn points_earned_in_a_ledger_can_be_spent_and_frozen_in_it() {
        let mut ledger = Ledger::new(account(), vec![], UnixMicros(0));
        ledger.earn(100, None, EntryMeta::default()).unwrap();
        ledger.deduct(30, EntryMeta::default()).unwrap();
        let hold = ledger
            .freeze(50, "o1", UnixMicros(DAY), EntryMeta::default())
            .unwrap();
        assert_eq!((ledger.account.available, ledger.account.frozen), (20, 50));
        // The new lot is written once, as new, with what it holds after both.
        assert_eq!(ledger.changed_lots().count(), 0);
        let new: Vec<&Lot> = ledger.new_lots().collect();
        assert_eq!(new.len(), 1);
        assert_eq!((new[0].remaining, new[0].frozen), (70, 50));
        assert!(
            ledger.allocations.iter().all(|a| a.lot_id == new[0].id
                && (a.hold_id == Some(hold.id)) != a.transaction_id.is_some())
        );
        check(&ledger);
    }

    #[test]
    fn deductions_take_earliest_expiring_lots_first() {
        let mut ledger = ledger_with(0, &[(100, None), (50, Some(10 * DAY)), (30, Some(5 * DAY))]);
        ledger.deduct(60, EntryMeta::default()).unwrap();
        let taken: Vec<i64> = ledger.allocations.iter().map(|a| a.amount).collect();
        assert_eq!(taken, [30, 30]);
        assert_eq!(ledger.account.available, 120);
        check(&ledger);
        assert!(matches!(
            ledger.deduct(121, EntryMeta::default()),
            Err(MarketingError::Refused(Refusal::InsufficientPoints {
                available: 120
            }))
        ));
    }

    #[test]
    fn due_lots_expire_before_anything_else() {
        let mut ledger = ledger_with(0, &[(100, Some(DAY)), (40, None)]);
        let mut later = Ledger::new(ledger.account.clone(), ledger.lots(), UnixMicros(2 * DAY));
        later.entries = std::mem::take(&mut ledger.entries);
        later.expire_due();
        assert_eq!(
            (later.account.available, later.account.total_expired),
            (40, 100)
        );
        assert!(later.deduct(41, EntryMeta::default()).is_err());
        check(&later);
    }

    #[test]
    fn a_partial_confirm_spends_part_and_releases_the_rest() {
        let mut ledger = ledger_with(0, &[(100, Some(DAY)), (100, None)]);
        let hold = ledger
            .freeze(150, "o-1", UnixMicros(DAY / 2), EntryMeta::default())
            .unwrap();
        assert_eq!((ledger.account.available, ledger.account.frozen), (50, 150));
        let held: Vec<(Uuid, i64)> = ledger
            .allocations
            .iter()
            .map(|a| (a.lot_id, a.amount))
            .collect();
        let (confirm, settled) = ledger
            .settle_hold(
                &hold,
                &held,
                120,
                HoldStatus::Confirmed,
                EntryMeta::default(),
            )
            .unwrap();
        assert!(confirm.is_some());
        assert_eq!(
            (settled.status, settled.confirmed_amount),
            (HoldStatus::Confirmed, 120)
        );
        assert_eq!(
            (
                ledger.account.available,
                ledger.account.frozen,
                ledger.account.total_spent
            ),
            (80, 0, 120)
        );
        check(&ledger);
        assert!(
            ledger
                .settle_hold(
                    &settled,
                    &held,
                    1,
                    HoldStatus::Confirmed,
                    EntryMeta::default()
                )
                .is_err()
        );
    }

    #[test]
    fn refunds_return_to_their_lots_and_expired_ones_expire_again() {
        let mut ledger = ledger_with(0, &[(100, Some(DAY)), (100, None)]);
        let deduct = ledger.deduct(150, EntryMeta::default()).unwrap();
        let taken: Vec<(Uuid, i64)> = ledger
            .allocations
            .iter()
            .map(|a| (a.lot_id, a.amount))
            .collect();
        // A day later the first lot has expired; refunding everything puts 100 back into it,
        // which expires again at once.
        let mut later = Ledger::new(ledger.account.clone(), ledger.lots(), UnixMicros(2 * DAY));
        later.entries = std::mem::take(&mut ledger.entries);
        later
            .refund(deduct, &taken, Some(150), EntryMeta::default())
            .unwrap();
        let types: Vec<TxType> = later
            .entries
            .iter()
            .rev()
            .take(2)
            .map(|e| e.tx_type)
            .collect();
        assert_eq!(types, [TxType::Expire, TxType::Refund]);
        assert_eq!(
            (
                later.account.available,
                later.account.total_refunded,
                later.account.total_expired
            ),
            (100, 150, 100)
        );
        check(&later);
        assert!(matches!(
            later.refund(deduct, &[], Some(1), EntryMeta::default()),
            Err(MarketingError::Refused(Refusal::RefundExceedsSpent {
                refundable: 0
            }))
        ));
    }

    #[test]
    fn earning_cannot_overflow() {
        let mut ledger = ledger_with(0, &[(MAX_POINTS, None)]);
        assert!(matches!(
            ledger.earn(1, None, EntryMeta::default()),
            Err(MarketingError::Refused(Refusal::PointsLimitExceeded {
                total: "balance",
                limit: MAX_POINTS
            }))
        ));
        check(&ledger);
    }

    #[test]
    fn lifetime_totals_near_their_maximum_refuse_and_change_nothing() {
        let mut ledger = ledger_with(0, &[(100, None)]);
        ledger.account.total_spent = MAX_TOTAL - 10;
        assert!(matches!(
            ledger.deduct(11, EntryMeta::default()),
            Err(MarketingError::Refused(Refusal::PointsLimitExceeded {
                total: "total_spent",
                ..
            }))
        ));
        assert_eq!(
            (ledger.account.available, ledger.allocations.len()),
            (100, 0)
        );
        ledger.deduct(10, EntryMeta::default()).unwrap();
        let deduct = ledger.entries.last().unwrap().id;
        let taken: Vec<(Uuid, i64)> = ledger
            .allocations
            .iter()
            .map(|a| (a.lot_id, a.amount))
            .collect();
        ledger.account.total_refunded = MAX_TOTAL - 2;
        assert!(matches!(
            ledger.refund(deduct, &taken, Some(3), EntryMeta::default()),
            Err(MarketingError::Refused(Refusal::PointsLimitExceeded {
                total: "total_refunded",
                ..
            }))
        ));
        assert_eq!(ledger.account.available, 90);
    }

    #[test]
    fn refunds_of_one_deduction_in_one_ledger_count_each_other() {
        let mut ledger = ledger_with(0, &[(4, None), (6, Some(DAY))]);
        let deduct = ledger.deduct(10, EntryMeta::default()).unwrap();
        let taken: Vec<(Uuid, i64)> = ledger
            .allocations
            .iter()
            .map(|a| (a.lot_id, a.amount))
            .collect();
        // As stored, before any refund is written: every refund is offered the same `taken`.
        for _ in 0..3 {
            ledger
                .refund(deduct, &taken, Some(3), EntryMeta::default())
                .unwrap();
        }
        assert!(matches!(
            ledger.refund(deduct, &taken, Some(3), EntryMeta::default()),
            Err(MarketingError::Refused(Refusal::RefundExceedsSpent {
                refundable: 1
            }))
        ));
        ledger
            .refund(deduct, &taken, None, EntryMeta::default())
            .unwrap();
        assert!(matches!(
            ledger.refund(deduct, &taken, None, EntryMeta::default()),
            Err(MarketingError::Refused(Refusal::RefundExceedsSpent {
                refundable: 0
            }))
        ));
        assert_eq!(
            (ledger.account.available, ledger.account.total_refunded),
            (10, 10)
        );
        assert!(ledger.lots().iter().all(|lot| lot.remaining <= lot.amount));
        check(&ledger);
    }

    #[test]
    fn a_hold_settled_in_this_ledger_is_not_settled_again() {
        let mut ledger = ledger_with(0, &[(100, None)]);
        let hold = ledger
            .freeze(40, "o-1", UnixMicros(DAY), EntryMeta::default())
            .unwrap();
        assert!(ledger.holds_order("o-1"));
        let held: Vec<(Uuid, i64)> = ledger
            .allocations
            .iter()
            .map(|a| (a.lot_id, a.amount))
            .collect();
        assert!(matches!(
            ledger.settle_hold(
                &hold,
                &held,
                41,
                HoldStatus::Confirmed,
                EntryMeta::default()
            ),
            Err(MarketingError::Refused(Refusal::ConfirmExceedsHold {
                held: 40
            }))
        ));
        ledger
            .settle_hold(
                &hold,
                &held,
                30,
                HoldStatus::Confirmed,
                EntryMeta::default(),
            )
            .unwrap();
        assert!(!ledger.holds_order("o-1"));
        // The same hold as read from the database, before the write: still HELD there.
        for status in [HoldStatus::Confirmed, HoldStatus::Released] {
            assert!(matches!(
                ledger.settle_hold(&hold, &held, 0, status, EntryMeta::default()),
                Err(MarketingError::Refused(Refusal::InvalidHoldState { .. }))
            ));
        }
        assert_eq!((ledger.account.available, ledger.account.frozen), (70, 0));
        check(&ledger);
    }

    #[test]
    fn the_next_expiry_is_the_earliest_live_lot() {
        let ledger = ledger_with(0, &[(10, Some(3 * DAY)), (5, Some(DAY)), (7, None)]);
        assert_eq!(ledger.next_expiry(), Some((5, UnixMicros(DAY))));
    }
}
