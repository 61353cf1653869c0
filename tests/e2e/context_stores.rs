//! Conformance suites of the context stores (templates, coupons, clients, request records,
//! points accounts and rules, events): the same test bodies run against each implementation (SeaORM on PostgreSQL,
//! SeaORM on SQLite), as `stores.rs` runs the points batch's `LedgerStore`. Each body covers
//! its trait's reads and writes, its refusals and its races (a version that moved, a unique
//! key taken), with two tenants holding the same names.

use std::collections::{BTreeSet, HashMap};

use marketing_domain::{
    MarketingError, MemberId, RequestId, TemplateId, TenantId, UnixMicros,
    auth::{ApiClient, Role, Tenants},
    coupon_template::{CouponTemplate, Currency, Discount, TemplateTerms, Validity},
    error::Refusal,
    points::{EntryMeta, HoldStatus, Ledger, TxType},
    points_rule::{PointsRule, RuleTerms},
    user_coupon::{CouponStatus, UserCoupon},
};
use marketing_storage::{
    Database,
    clients::{ClientReads, ClientStore},
    events::{EventFilter, EventReads, EventStore, NewEvent},
    idempotency::{IdempotencyKey, Outcome, RequestStore},
    points::{
        RuleRef,
        accounts::{PointsReads, PointsStore},
        batch::BatchKeys,
        store::{LedgerStore, PlannedLedger, TxnBatch},
    },
    templates::{TemplateChange, TemplateFilter, TemplateReads, TemplateStore},
    unit::{Begun, UnitOfWork},
    user_coupons::{CouponReads, CouponStore},
};
use marketing_tests::{Backend, spawn_app};

const HOUR: i64 = 3_600_000_000;

fn tenant(id: &str) -> TenantId {
    TenantId::parse("tenant_id", id).expect("tenant")
}

fn member(id: &str) -> MemberId {
    MemberId::parse("member_id", id).expect("member")
}

fn template_of(tenant_id: &TenantId, stock: i64, now: UnixMicros) -> CouponTemplate {
    CouponTemplate {
        id: TemplateId::new(),
        tenant_id: tenant_id.clone(),
        terms: TemplateTerms {
            name: "ten off".into(),
            description: String::new(),
            discount: Discount::FixedAmount { amount: 1000 },
            currency: Currency::parse("currency", "EUR").expect("currency"),
            min_spend_amount: 0,
            per_member_limit: 3,
            distribution_start: UnixMicros(now.0 - HOUR),
            distribution_end: UnixMicros(now.0 + 24 * HOUR),
            validity: Validity::Relative { valid_days: 7 },
            enabled: true,
            cart: Default::default(),
            budget_amount: None,
        },
        total_stock: stock,
        remaining_stock: stock,
        claimed_count: 0,
        used_count: 0,
        version: 1,
        revision: 1,
        created_at: now,
        updated_at: now,
        archived_at: None,
        actor: None,
        codes: Default::default(),
        budget_used: 0,
    }
}

/// Runs `change` in a unit of work and commits it (a refusal drops the unit: nothing written).
macro_rules! in_unit {
    ($db:expr, |$unit:ident| $change:expr) => {{
        let $unit = UnitOfWork::begin($db).await.expect("begin");
        let result = $change;
        if result.is_ok() {
            $unit.commit().await.expect("commit");
        }
        result
    }};
}

async fn insert_template(db: &Database, template: &CouponTemplate) {
    in_unit!(db, |unit| unit.templates().insert(template).await).expect("insert");
}

async fn templates_are_read_per_tenant_and_listed_in_pages(db: &Database) {
    let now = UnixMicros::now();
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let template = template_of(&acme, 10, now);
        insert_template(db, &template).await;
        ids.push(template.id);
    }
    insert_template(db, &template_of(&globex, 10, now)).await;

    let store = db.templates();
    let read = store.get(&acme, ids[0]).await.expect("acme's template");
    assert_eq!((read.id, read.remaining_stock), (ids[0], 10));
    assert!(store.find(&globex, ids[0]).await.expect("find").is_none());
    assert!(matches!(
        store.get(&globex, ids[0]).await,
        Err(MarketingError::Refused(Refusal::TemplateNotFound))
    ));

    let all = TemplateFilter::default();
    let first = store.list(&acme, &all, None, 2).await.expect("page");
    let second = store
        .list(&acme, &all, first.last().map(|t| t.id), 2)
        .await
        .expect("page");
    let listed: Vec<TemplateId> = first.iter().chain(&second).map(|t| t.id).collect();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(
        listed, expected,
        "acme's three, in id order, nothing of globex"
    );

    in_unit!(db, |unit| unit
        .templates()
        .change(&acme, ids[1], None, &TemplateChange::Archive, now, None)
        .await)
    .expect("archive");
    let live = store.list(&acme, &all, None, 10).await.expect("live");
    assert_eq!(live.len(), 2, "archived templates are hidden by default");
    let with_archived = TemplateFilter {
        show_archived: true,
        ..TemplateFilter::default()
    };
    assert_eq!(
        store
            .list(&acme, &with_archived, None, 10)
            .await
            .expect("all")
            .len(),
        3
    );
    let claimable = TemplateFilter {
        claimable_at: Some(now),
        ..TemplateFilter::default()
    };
    assert_eq!(
        store
            .list(&acme, &claimable, None, 10)
            .await
            .expect("claimable")
            .len(),
        2
    );
}

async fn template_changes_check_what_the_caller_assumed(db: &Database) {
    let now = UnixMicros::now();
    let acme = tenant("acme");
    let template = template_of(&acme, 10, now);
    insert_template(db, &template).await;
    let id = template.id;
    let change = |version: Option<i64>, what: TemplateChange| {
        let acme = acme.clone();
        async move {
            in_unit!(db, |unit| unit
                .templates()
                .change(&acme, id, version, &what, now, Some("ops"))
                .await)
        }
    };

    let disabled = change(Some(1), TemplateChange::Enabled(false))
        .await
        .expect("at its version");
    assert_eq!((disabled.version, disabled.terms.enabled), (2, false));
    assert_eq!(disabled.actor.as_deref(), Some("ops"));
    assert!(matches!(
        change(Some(1), TemplateChange::Enabled(true)).await,
        Err(MarketingError::Refused(Refusal::VersionMismatch {
            expected: 1,
            current: 2
        }))
    ));
    let grown = change(None, TemplateChange::Stock(5)).await.expect("stock");
    assert_eq!((grown.total_stock, grown.remaining_stock), (15, 15));
    assert!(matches!(
        change(None, TemplateChange::Stock(-16)).await,
        Err(MarketingError::Refused(Refusal::StockBelowClaimed {
            remaining: 15
        }))
    ));
    assert!(matches!(
        change(None, TemplateChange::Stock(i64::MAX / 4)).await,
        Err(MarketingError::Refused(Refusal::InvalidArgument(_)))
    ));
    let mut terms = grown.terms.clone();
    terms.name = "twenty off".into();
    let renamed = change(Some(grown.version), TemplateChange::Terms(Box::new(terms)))
        .await
        .expect("terms");
    assert_eq!(renamed.terms.name, "twenty off");
    change(None, TemplateChange::Archive)
        .await
        .expect("archive");
    assert!(matches!(
        change(None, TemplateChange::Enabled(true)).await,
        Err(MarketingError::Refused(Refusal::TemplateArchived))
    ));
    // Another tenant naming the id changes nothing.
    assert!(matches!(
        in_unit!(db, |unit| unit
            .templates()
            .change(
                &tenant("globex"),
                id,
                None,
                &TemplateChange::Stock(1),
                now,
                None
            )
            .await),
        Err(MarketingError::Refused(Refusal::TemplateNotFound))
    ));
    let stored = db.templates().get(&acme, id).await.expect("read");
    assert_eq!(
        (stored.total_stock, stored.terms.name.as_str()),
        (15, "twenty off")
    );
}

async fn stock_is_taken_within_bounds_and_lock_fences(db: &Database) {
    let now = UnixMicros::now();
    let acme = tenant("acme");
    let template = template_of(&acme, 3, now);
    insert_template(db, &template).await;
    let id = template.id;

    let locked = in_unit!(db, |unit| {
        let read = unit.templates().get_for_update(&acme, id).await;
        let taken = unit.templates().take_stock(&acme, id, 2, 0, Some(20)).await;
        read.and(taken)
    })
    .expect("take two under fence 20");
    assert_eq!((locked.remaining_stock, locked.claimed_count), (1, 2));
    // A holder of an older lock (fence 10) cannot write after fence 20 did.
    assert!(matches!(
        in_unit!(db, |unit| unit
            .templates()
            .take_stock(&acme, id, 1, 0, Some(10))
            .await),
        Err(MarketingError::ConcurrentModification(_))
    ));
    // Never below zero, with or without a lock.
    assert!(matches!(
        in_unit!(db, |unit| unit
            .templates()
            .take_stock(&acme, id, 2, 0, None)
            .await),
        Err(MarketingError::ConcurrentModification(_))
    ));
    assert!(matches!(
        in_unit!(db, |unit| unit
            .templates()
            .get_for_update(&tenant("globex"), id)
            .await),
        Err(MarketingError::Refused(Refusal::TemplateNotFound))
    ));
    let used = in_unit!(db, |unit| unit.templates().add_used(&acme, id, 1, 0).await).expect("use");
    assert_eq!(used.used_count, 1);
    let returned =
        in_unit!(db, |unit| unit.templates().add_used(&acme, id, -1, 0).await).expect("return");
    assert_eq!(returned.used_count, 0);
    assert!(
        returned.revision > locked.revision,
        "every write raises the revision"
    );

    // A unit dropped without its commit leaves nothing behind.
    {
        let unit = UnitOfWork::begin(db).await.expect("begin");
        unit.templates()
            .take_stock(&acme, id, 1, 0, None)
            .await
            .expect("take the last");
    }
    let stored = db.templates().get(&acme, id).await.expect("read");
    assert_eq!((stored.remaining_stock, stored.claimed_count), (1, 2));
}

async fn coupons_of(
    db: &Database,
    template: &CouponTemplate,
    holder: &MemberId,
    n: i32,
) -> Vec<UserCoupon> {
    let mut coupons = Vec::new();
    for slot in 1..=n {
        let now = UnixMicros(template.created_at.0 + i64::from(slot));
        coupons.push(UserCoupon::issue(template, holder, slot, now, None).expect("issue"));
    }
    in_unit!(db, |unit| unit.coupons().insert_many(&coupons).await).expect("insert");
    coupons
}

async fn coupons_are_read_per_tenant_and_member(db: &Database) {
    let now = UnixMicros::now();
    let (acme, globex, m1, m2) = (tenant("acme"), tenant("globex"), member("m1"), member("m2"));
    let acme_template = template_of(&acme, 10, now);
    let globex_template = template_of(&globex, 10, now);
    insert_template(db, &acme_template).await;
    insert_template(db, &globex_template).await;
    let mine = coupons_of(db, &acme_template, &m1, 3).await;
    coupons_of(db, &acme_template, &m2, 1).await;
    coupons_of(db, &globex_template, &m1, 2).await;

    let store = db.coupons();
    let one = store.get(&acme, mine[0].id, Some(&m1)).await.expect("m1's");
    assert_eq!(one, mine[0]);
    assert!(
        store
            .find(&globex, mine[0].id)
            .await
            .expect("find")
            .is_none()
    );
    for (tenant_id, holder) in [(&globex, Some(&m1)), (&acme, Some(&m2))] {
        assert!(matches!(
            store.get(tenant_id, mine[0].id, holder).await,
            Err(MarketingError::Refused(Refusal::CouponNotFound))
        ));
    }

    let newest_first = store
        .list_for_member(&acme, &m1, &[], None, 2, now)
        .await
        .expect("page");
    assert_eq!(newest_first.len(), 2);
    assert!(newest_first[0].id > newest_first[1].id, "newest first");
    let rest = store
        .list_for_member(&acme, &m1, &[], Some(newest_first[1].id), 10, now)
        .await
        .expect("page");
    let listed: BTreeSet<_> = newest_first.iter().chain(&rest).map(|c| c.id).collect();
    assert_eq!(
        listed,
        mine.iter().map(|c| c.id).collect(),
        "m1's three of acme only"
    );
    assert!(
        store
            .list_for_member(&acme, &m1, &[CouponStatus::Used], None, 10, now)
            .await
            .expect("used")
            .is_empty()
    );

    let slots = in_unit!(db, |unit| unit
        .coupons()
        .held_slots(acme_template.id, &[&m1, &m2, &member("nobody")])
        .await)
    .expect("slots");
    assert_eq!((slots.get(&m1), slots.get(&m2)), (Some(&3), Some(&1)));
    assert_eq!(slots.len(), 2, "a member holding none is absent");
}

async fn a_coupon_changes_only_at_the_version_read(db: &Database) {
    let now = UnixMicros::now();
    let (acme, m1) = (tenant("acme"), member("m1"));
    let template = template_of(&acme, 10, now);
    insert_template(db, &template).await;
    let coupon = coupons_of(db, &template, &m1, 1).await.remove(0);

    let mut locked = coupon.clone();
    locked.status = CouponStatus::Locked;
    locked.order_id = Some("o-1".into());
    locked.lock_expires_at = Some(UnixMicros(now.0 + HOUR));
    let set = in_unit!(db, |unit| unit
        .coupons()
        .compare_and_set(&locked, coupon.version)
        .await);
    assert!(set.expect("cas"), "at the version read");
    // A writer that read the version before loses.
    let mut used = coupon.clone();
    used.status = CouponStatus::Used;
    let lost = in_unit!(db, |unit| unit
        .coupons()
        .compare_and_set(&used, coupon.version)
        .await);
    assert!(
        !lost.expect("cas"),
        "a writer that read an older version loses"
    );
    let stored = db
        .coupons()
        .get(&acme, coupon.id, None)
        .await
        .expect("read");
    assert_eq!(
        (stored.status, stored.order_id.as_deref(), stored.version),
        (CouponStatus::Locked, Some("o-1"), coupon.version + 1)
    );
}

async fn sweeps_change_what_is_due_once(db: &Database) {
    let now = UnixMicros::now();
    let (acme, globex, m1) = (tenant("acme"), tenant("globex"), member("m1"));
    let acme_template = template_of(&acme, 10, now);
    let globex_template = template_of(&globex, 10, now);
    insert_template(db, &acme_template).await;
    insert_template(db, &globex_template).await;
    let lapsing = coupons_of(db, &acme_template, &m1, 2).await;
    let expiring = coupons_of(db, &globex_template, &m1, 1).await;
    // One lock lapses at now + 1 h; the other runs to now + 3 h.
    for (coupon, until) in lapsing.iter().zip([HOUR, 3 * HOUR]) {
        let mut locked = coupon.clone();
        locked.status = CouponStatus::Locked;
        locked.order_id = Some("o".into());
        locked.lock_expires_at = Some(UnixMicros(now.0 + until));
        let set = in_unit!(db, |unit| unit
            .coupons()
            .compare_and_set(&locked, coupon.version)
            .await);
        assert!(set.expect("lock"));
    }

    let later = UnixMicros(now.0 + 2 * HOUR);
    let released = in_unit!(db, |unit| unit
        .coupons()
        .release_lapsed_locks(later, 10)
        .await)
    .expect("sweep");
    assert_eq!(released.changed, 1);
    assert_eq!(released.holders, vec![("acme".to_owned(), "m1".to_owned())]);
    let again = in_unit!(db, |unit| unit
        .coupons()
        .release_lapsed_locks(later, 10)
        .await)
    .expect("sweep");
    assert_eq!(again.changed, 0, "a second sweep finds nothing due");
    let unlocked = db
        .coupons()
        .get(&acme, lapsing[0].id, None)
        .await
        .expect("read");
    assert_eq!(
        (unlocked.status, unlocked.order_id),
        (CouponStatus::Available, None)
    );
    assert_eq!(unlocked.actor, None, "the server's own change");

    // Past every coupon's validity (7 days), all three expire, across tenants.
    let past = UnixMicros(now.0 + 8 * 24 * HOUR);
    let expired = in_unit!(db, |unit| unit.coupons().expire_lapsed(past, 2).await).expect("sweep");
    assert_eq!(expired.changed, 2, "at most the batch");
    let rest = in_unit!(db, |unit| unit.coupons().expire_lapsed(past, 2).await).expect("sweep");
    assert_eq!(rest.changed, 1);
    let stored = db
        .coupons()
        .get(&globex, expiring[0].id, None)
        .await
        .expect("read");
    assert_eq!(stored.status, CouponStatus::Expired);
}

fn client(name: &str, tenants: &[&str]) -> ApiClient {
    ApiClient {
        name: name.into(),
        role: Role::Checkout,
        tenants: Tenants::Only(tenants.iter().map(|t| tenant(t)).collect()),
        created_at: UnixMicros::now(),
        revoked_at: None,
    }
}

async fn clients_are_found_by_key_and_name_and_revoked_once(db: &Database) {
    let till = client("till", &["acme", "globex"]);
    let added = in_unit!(db, |unit| unit
        .clients()
        .insert(&till, "keyid0000001", b"digest-1")
        .await);
    assert!(added.expect("insert"));
    let admin = ApiClient {
        tenants: Tenants::All,
        role: Role::Admin,
        ..client("ops", &[])
    };
    assert!(
        in_unit!(db, |unit| unit
            .clients()
            .insert(&admin, "keyid0000002", b"digest-2")
            .await)
        .expect("insert")
    );
    // A taken name, or a taken key id, adds nothing (the unit is dropped).
    for (name, key_id) in [("till", "keyid0000003"), ("other", "keyid0000001")] {
        let unit = UnitOfWork::begin(db).await.expect("begin");
        let added = unit
            .clients()
            .insert(&client(name, &["acme"]), key_id, b"digest-3")
            .await
            .expect("insert");
        assert!(!added, "{name} / {key_id} is taken");
    }

    let store = db.clients();
    let by_key = store
        .find_by_key_id("keyid0000001")
        .await
        .expect("find")
        .expect("till");
    assert_eq!(by_key.client, till);
    assert_eq!(by_key.key_digest, b"digest-1");
    assert_eq!(store.find_by_name("ops").await.expect("find"), Some(admin));
    assert_eq!(store.find_by_name("nobody").await.expect("find"), None);
    assert_eq!(
        store
            .find_by_key_id("keyid0000009")
            .await
            .expect("find")
            .map(|s| s.client),
        None
    );
    let names: Vec<String> = store
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["till", "ops"], "oldest first");
    assert_eq!(store.count_active().await.expect("count"), 2);

    let now = UnixMicros::now();
    assert!(in_unit!(db, |unit| unit.clients().revoke("till", now).await).expect("revoke"));
    assert!(
        !in_unit!(db, |unit| unit.clients().revoke("till", now).await).expect("revoke"),
        "revoked once"
    );
    let revoked = store
        .find_by_name("till")
        .await
        .expect("find")
        .expect("kept");
    assert_eq!(revoked.revoked_at, Some(now));
    assert_eq!(store.count_active().await.expect("count"), 1);
}

fn key(tenant_id: &str, request_id: &str, client: &str, fingerprint: u8) -> IdempotencyKey {
    IdempotencyKey {
        tenant_id: tenant(tenant_id),
        request_id: RequestId::parse("request_id", request_id).expect("request id"),
        client: client.into(),
        operation: "Suite",
        fingerprint: vec![fingerprint],
    }
}

fn outcome(body: &str) -> Outcome {
    Outcome {
        status_code: 0,
        response: body.as_bytes().to_vec(),
    }
}

async fn a_request_is_answered_once_per_client(db: &Database) {
    let now = UnixMicros::now();
    let first = key("acme", "r-1", "till", 1);
    let Begun::Fresh(unit) = UnitOfWork::begin_idempotent(db, &first, now)
        .await
        .expect("claim")
    else {
        panic!("a new request id is fresh");
    };
    unit.commit_answered(&first, outcome("first answer"))
        .await
        .expect("commit");
    match UnitOfWork::begin_idempotent(db, &first, now)
        .await
        .expect("claim")
    {
        Begun::Replay(replayed) => assert_eq!(replayed, outcome("first answer")),
        Begun::Fresh(_) => panic!("an answered request replays"),
    }
    // The same id with other parameters is refused; of another client or tenant it is new.
    assert!(matches!(
        UnitOfWork::begin_idempotent(db, &key("acme", "r-1", "till", 2), now).await,
        Err(MarketingError::Refused(Refusal::RequestIdReused))
    ));
    for other in [
        key("acme", "r-1", "ops", 1),
        key("globex", "r-1", "till", 1),
    ] {
        assert!(matches!(
            UnitOfWork::begin_idempotent(db, &other, now)
                .await
                .expect("claim"),
            Begun::Fresh(_)
        ));
    }
    // A claimed request whose unit is dropped leaves no record: claiming it again is fresh.
    let dropped = key("acme", "r-2", "till", 1);
    drop(
        UnitOfWork::begin_idempotent(db, &dropped, now)
            .await
            .expect("claim"),
    );
    assert!(matches!(
        UnitOfWork::begin_idempotent(db, &dropped, now)
            .await
            .expect("claim"),
        Begun::Fresh(_)
    ));
}

async fn records_are_written_and_found_in_batches(db: &Database) {
    let now = UnixMicros::now();
    let (a, b) = (key("acme", "b-1", "till", 1), key("acme", "b-2", "till", 1));
    in_unit!(db, |unit| unit
        .requests()
        .insert_completed(vec![(&a, outcome("a")), (&b, outcome("b"))], now)
        .await)
    .expect("insert");
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let found = in_unit!(db, |unit| unit
        .requests()
        .find_many([
            (&acme, "till", "b-1"),
            (&acme, "till", "b-2"),
            (&acme, "ops", "b-1"),
            (&globex, "till", "b-1"),
        ])
        .await)
    .expect("find");
    assert_eq!(found.len(), 2, "only till's records of acme");
    let record = found.get(&a.record_key()).expect("a's").clone();
    assert_eq!(record.replay_for(&a).expect("same request"), outcome("a"));
    assert!(matches!(
        found
            .get(&b.record_key())
            .expect("b's")
            .clone()
            .replay_for(&key("acme", "b-2", "till", 9)),
        Err(MarketingError::Refused(Refusal::RequestIdReused))
    ));
    // A request id recorded meanwhile fails the whole insert.
    let c = key("acme", "b-3", "till", 1);
    assert!(matches!(
        in_unit!(db, |unit| unit
            .requests()
            .insert_completed(vec![(&c, outcome("c")), (&a, outcome("again"))], now)
            .await),
        Err(MarketingError::ConcurrentModification(_))
    ));
    let none = in_unit!(db, |unit| unit
        .requests()
        .find_many([(&acme, "till", "b-3")])
        .await)
    .expect("find");
    assert!(none.is_empty(), "nothing of the refused insert");

    // Retention: only records written before the cut go, at most a batch at a time.
    let later = UnixMicros(now.0 + HOUR);
    in_unit!(db, |unit| unit
        .requests()
        .insert_completed(vec![(&c, outcome("c"))], later)
        .await)
    .expect("insert");
    in_unit!(db, |unit| unit.requests().summarize_created().await).expect("summarize");
    let cut = UnixMicros(now.0 + 1);
    let deleted = in_unit!(db, |unit| unit.requests().delete_before(cut, 1).await).expect("delete");
    assert_eq!(deleted, 1, "one batch");
    let deleted =
        in_unit!(db, |unit| unit.requests().delete_before(cut, 10).await).expect("delete");
    assert_eq!(deleted, 1);
    let kept = in_unit!(db, |unit| unit
        .requests()
        .find_many([(&acme, "till", "b-1"), (&acme, "till", "b-3")])
        .await)
    .expect("find");
    assert_eq!(kept.len(), 1, "the later record stays");
}

fn rule(tenant_id: &TenantId, event: &str, points: i64) -> PointsRule {
    let now = UnixMicros::now();
    PointsRule {
        id: uuid::Uuid::now_v7(),
        tenant_id: tenant_id.clone(),
        event_type: event.into(),
        terms: RuleTerms {
            description: String::new(),
            points,
            daily_cap: None,
            expiry_days: None,
            enabled: true,
            per_amount: None,
        },
        version: 1,
        created_at: now,
        updated_at: now,
        actor: None,
    }
}

async fn rules_are_one_per_event_and_change_at_their_version(db: &Database) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let signup = rule(&acme, "signup", 10);
    in_unit!(db, |unit| unit.points().insert_rule(&signup).await).expect("insert");
    // The same event in another tenant is another rule; in the same tenant, refused.
    in_unit!(db, |unit| unit
        .points()
        .insert_rule(&rule(&globex, "signup", 99))
        .await)
    .expect("globex's own");
    assert!(matches!(
        in_unit!(db, |unit| unit
            .points()
            .insert_rule(&rule(&acme, "signup", 5))
            .await),
        Err(MarketingError::Refused(Refusal::RuleExists))
    ));
    in_unit!(db, |unit| unit
        .points()
        .insert_rule(&rule(&acme, "review", 3))
        .await)
    .expect("insert");

    let store = db.points();
    let by_event = store
        .find_rule(&acme, RuleRef::Event("signup"))
        .await
        .expect("find")
        .expect("acme's");
    assert_eq!(by_event, signup);
    assert_eq!(
        store
            .find_rule(&globex, RuleRef::Id(signup.id))
            .await
            .expect("find"),
        None
    );
    let listed = store.list_rules(&acme, None, None, 10).await.expect("list");
    assert_eq!(listed.len(), 2);
    let page = store
        .list_rules(&acme, None, Some(listed[0].id), 10)
        .await
        .expect("page");
    assert_eq!(page, listed[1..]);

    let mut terms = signup.terms.clone();
    terms.points = 20;
    terms.enabled = false;
    let now = UnixMicros::now();
    let updated = in_unit!(db, |unit| unit
        .points()
        .update_rule(&acme, signup.id, 1, &terms, now, Some("ops"))
        .await)
    .expect("update")
    .expect("at its version");
    assert_eq!((updated.version, updated.terms.points), (2, 20));
    let stale = in_unit!(db, |unit| unit
        .points()
        .update_rule(&acme, signup.id, 1, &terms, now, None)
        .await)
    .expect("update");
    assert_eq!(stale, None, "a version that moved changes nothing");
    let other_tenant = in_unit!(db, |unit| unit
        .points()
        .update_rule(&globex, signup.id, 2, &terms, now, None)
        .await)
    .expect("update");
    assert_eq!(other_tenant, None);
    let disabled = store
        .list_rules(&acme, Some(false), None, 10)
        .await
        .expect("list");
    assert_eq!(disabled, vec![updated]);
    assert!(
        store
            .find_account(&acme, &member("nobody"))
            .await
            .expect("find")
            .is_none()
    );
}

/// Writes what `plan` does to each member's ledger (accounts opened first) in one batch
/// through a transaction; the ledgers as written.
async fn write_ledgers(
    db: &Database,
    members: &[(&TenantId, &MemberId)],
    now: UnixMicros,
    plan: impl Fn(&mut Ledger),
) -> Vec<Ledger> {
    let mut batch = TxnBatch::begin(db).await.expect("begin");
    batch.open(members, now).await.expect("open");
    let keys = BatchKeys {
        members: members.to_vec(),
        ..BatchKeys::default()
    };
    let reads = batch.read(&keys).await.expect("read");
    let ledgers: Vec<Ledger> = reads
        .ledgers
        .into_iter()
        .map(|(account, lots)| {
            let mut ledger = Ledger::new(account, lots, now);
            plan(&mut ledger);
            ledger
        })
        .collect();
    let daily = HashMap::new();
    let planned: Vec<PlannedLedger<'_>> = ledgers
        .iter()
        .map(|ledger| PlannedLedger {
            ledger,
            daily: &daily,
        })
        .collect();
    batch.write(&planned).await.expect("write");
    batch.commit(Vec::new(), now).await.expect("commit");
    ledgers
}

async fn accounts_and_ledgers_are_read_per_tenant_and_swept_when_due(db: &Database) {
    let now = UnixMicros::now();
    let (acme, globex, m1, m2) = (tenant("acme"), tenant("globex"), member("m1"), member("m2"));
    let meta = EntryMeta::default;
    // acme's m1: 100 earned (expiring in an hour), 10 held for o-1, 5 held and released.
    write_ledgers(db, &[(&acme, &m1)], now, |ledger| {
        ledger
            .earn(100, Some(UnixMicros(now.0 + HOUR)), meta())
            .expect("earn");
        ledger
            .freeze(10, "o-1", UnixMicros(now.0 + HOUR), meta())
            .expect("freeze");
        let released = ledger
            .freeze(5, "o-2", UnixMicros(now.0 + HOUR), meta())
            .expect("freeze");
        let held: Vec<(uuid::Uuid, i64)> = ledger
            .allocations
            .iter()
            .filter(|a| a.hold_id == Some(released.id))
            .map(|a| (a.lot_id, a.amount))
            .collect();
        ledger
            .settle_hold(&released, &held, 0, HoldStatus::Released, meta())
            .expect("release");
    })
    .await;
    // acme's m2 and globex's m1 (the same member id): points that never expire.
    write_ledgers(db, &[(&acme, &m2), (&globex, &m1)], now, |ledger| {
        let amount = if ledger.account.tenant_id == globex {
            500
        } else {
            50
        };
        ledger.earn(amount, None, meta()).expect("earn");
    })
    .await;

    let store = db.points();
    let account = store
        .find_account(&acme, &m1)
        .await
        .expect("find")
        .expect("acme's m1");
    assert_eq!((account.available, account.frozen), (90, 10));
    assert!(
        store
            .find_account(&globex, &m2)
            .await
            .expect("find")
            .is_none()
    );
    let lots = store.live_lots(account.id).await.expect("lots");
    assert_eq!(lots.len(), 1);
    assert_eq!((lots[0].remaining, lots[0].frozen), (100, 10));

    let all = store
        .list_entries(&acme, &m1, &[], (None, None), None, 10)
        .await
        .expect("entries");
    assert_eq!(all.len(), 4, "earn, two freezes, a release");
    let earns = store
        .list_entries(&acme, &m1, &[TxType::Earn], (None, None), None, 10)
        .await
        .expect("earns");
    assert_eq!((earns.len(), earns[0].amount), (1, 100));
    let page = store
        .list_entries(&acme, &m1, &[], (None, None), Some(all[1].id), 10)
        .await
        .expect("page");
    assert_eq!(page, all[2..], "after a page's last entry, the rest");
    let theirs = store
        .list_entries(&globex, &m1, &[], (None, None), None, 10)
        .await
        .expect("entries");
    assert_eq!((theirs.len(), theirs[0].amount), (1, 500));

    let top: Vec<(String, i64)> = store
        .top_earners(&acme, 10)
        .await
        .expect("top")
        .into_iter()
        .map(|(member, earned, _)| (member, earned))
        .collect();
    assert_eq!(
        top,
        [("m1".to_owned(), 100), ("m2".to_owned(), 50)],
        "acme's only"
    );

    // Due an hour from now: acme m1's lot and its one held hold; nothing of the others.
    let later = UnixMicros(now.0 + 2 * HOUR);
    assert!(
        store
            .accounts_with_due_lots(now, 10)
            .await
            .expect("due")
            .accounts
            .is_empty()
    );
    assert_eq!(
        store
            .accounts_with_due_lots(later, 10)
            .await
            .expect("due")
            .accounts,
        [("acme".to_owned(), "m1".to_owned())]
    );
    let holds = store.due_holds(later, 10).await.expect("due");
    assert_eq!(holds.len(), 1, "the released hold is not due");
    assert_eq!((holds[0].0.as_str(), holds[0].1.as_str()), ("acme", "m1"));

    // Retention deletes the finished hold, never the held one.
    let deleted = in_unit!(db, |unit| unit
        .points()
        .delete_finished_holds(UnixMicros(now.0 + 1), 10)
        .await)
    .expect("delete");
    assert_eq!(deleted, 1);
    assert_eq!(store.due_holds(later, 10).await.expect("due").len(), 1);
}

fn new_event(tenant: &TenantId, event_type: &'static str, aggregate: &str) -> NewEvent {
    NewEvent {
        tenant_id: tenant.clone(),
        event_type,
        aggregate_type: "user_coupon",
        aggregate_id: aggregate.into(),
        member_id: Some("m1".into()),
        occurred_at: UnixMicros::now(),
        request_id: Some("r-1".into()),
        actor: Some("till".into()),
        payload: vec![7],
    }
}

async fn events_are_numbered_after_commit_and_read_per_tenant(db: &Database) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let mut unit = UnitOfWork::begin(db).await.expect("begin");
    unit.record(new_event(&acme, "coupon.claimed", "c1"));
    unit.record(new_event(&globex, "coupon.claimed", "c1"));
    unit.record(new_event(&acme, "coupon.locked", "c1"));
    unit.commit().await.expect("commit");
    // A dropped unit leaves no event.
    {
        let mut unit = UnitOfWork::begin(db).await.expect("begin");
        unit.record(new_event(&acme, "coupon.used", "c1"));
    }
    // (The app's own sequencer may number them first: a unit numbers what is left.)
    let store = db.events();
    let all = EventFilter::default();
    let numbered = in_unit!(db, |unit| unit.events().number_committed(10).await).expect("number");
    assert!(numbered <= 2, "one batch per tenant");
    assert!(!store.any_unnumbered().await.expect("read"));
    assert_eq!(
        in_unit!(db, |unit| unit.events().number_committed(10).await).expect("number"),
        0,
        "nothing is numbered twice"
    );

    let acme_events = store.list(&acme, 0, &all, 10).await.expect("list");
    let kinds: Vec<&str> = acme_events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        ["coupon.claimed", "coupon.locked"],
        "in the order recorded"
    );
    assert!(acme_events[0].position < acme_events[1].position);
    assert_eq!(acme_events[0].payload, [7]);
    assert_eq!(acme_events[0].actor.as_deref(), Some("till"));
    let theirs = store.list(&globex, 0, &all, 10).await.expect("list");
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].tenant_id, "globex");
    let after_first = store
        .list(&acme, acme_events[0].position, &all, 10)
        .await
        .expect("list");
    assert_eq!(after_first, acme_events[1..]);
    let locked = EventFilter {
        types: vec!["coupon.locked".into()],
        aggregate: Some(("user_coupon".into(), "c1".into())),
    };
    assert_eq!(
        store.list(&acme, 0, &locked, 10).await.expect("list"),
        acme_events[1..]
    );
    let other = EventFilter {
        aggregate: Some(("user_coupon".into(), "c2".into())),
        ..EventFilter::default()
    };
    assert!(
        store
            .list(&acme, 0, &other, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

/// Runs each body against every implementation: a module per backend, each test on a fresh
/// app of its backend, the body given the app's database.
macro_rules! context_store_suite {
    ($($test:ident),* $(,)?) => {
        context_store_suite!(@on postgres, Backend::PostgresRedis; $($test),*);
        context_store_suite!(@on sqlite, Backend::Embedded; $($test),*);
    };
    (@on $module:ident, $backend:expr; $($test:ident),*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let app = spawn_app($backend).await;
                    super::$test(&app.state.shared().db).await;
                    app.stop().await;
                }
            )*
        }
    };
}

context_store_suite!(
    templates_are_read_per_tenant_and_listed_in_pages,
    template_changes_check_what_the_caller_assumed,
    stock_is_taken_within_bounds_and_lock_fences,
    coupons_are_read_per_tenant_and_member,
    a_coupon_changes_only_at_the_version_read,
    sweeps_change_what_is_due_once,
    clients_are_found_by_key_and_name_and_revoked_once,
    a_request_is_answered_once_per_client,
    records_are_written_and_found_in_batches,
    rules_are_one_per_event_and_change_at_their_version,
    accounts_and_ledgers_are_read_per_tenant_and_swept_when_due,
    events_are_numbered_after_commit_and_read_per_tenant,
);
