//! The admin service, as operators call it: one replica's caches, the locks held, evictions
//! of cached copies (on every replica, of one tenant only), and the sweeper's status, through
//! grpcurl and through a client, on both backends.

use std::time::{Duration, Instant};

use marketing_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient, evict_cache_request::Target,
};
use marketing_tests::{Backend, Options, TestApp};
use serde_json::Value;
use tonic::transport::Channel;

use crate::{
    fixtures::{create_template, template},
    server::run_grpcurl,
};

marketing_tests::backend_suite! {
    with crate::admin::fast_sweeps();
    operators_see_caches_locks_and_the_sweeper_through_grpcurl,
    a_whole_tenant_eviction_drops_that_tenant_only,
}

/// Sweeps every 100 ms, so the sweeper's status moves within the test.
pub(crate) fn fast_sweeps() -> Options {
    Options {
        sweep_interval: Some(Duration::from_millis(100)),
        ..Options::default()
    }
}

fn admin(channel: &Channel) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(channel.clone())
}

/// grpcurl's answer to `method` of the admin service with `data`, as JSON.
async fn grpcurl(app: &TestApp, method: &str, data: &str) -> Value {
    let addr = app.addr.to_string();
    let method = format!("marketing.v1.AdminService/{method}");
    let data = data.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        run_grpcurl(&["-plaintext", "-d", &data, &addr, &method])
    })
    .await
    .expect("grpcurl");
    serde_json::from_str(&out).unwrap_or_else(|err| panic!("{err}: {out}"))
}

/// A cache's view in GetCacheStats' JSON.
fn cache<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["caches"]
        .as_array()
        .expect("caches")
        .iter()
        .find(|cache| cache["name"] == name)
        .unwrap_or_else(|| panic!("no cache {name} in {stats}"))
}

/// A uint64 of grpcurl's JSON (a string; absent when 0).
fn number(value: &Value) -> u64 {
    value
        .as_str()
        .map_or(0, |text| text.parse().expect("a number"))
}

async fn get_template(app: &TestApp, tenant: &str, id: &str) {
    app.templates()
        .get_coupon_template(pb::GetCouponTemplateRequest {
            tenant_id: tenant.into(),
            template_id: id.into(),
        })
        .await
        .expect("get");
}

async fn list_coupons(app: &TestApp, tenant: &str, member: &str) {
    app.user_coupons()
        .list_member_coupons(pb::ListMemberCouponsRequest {
            tenant_id: tenant.into(),
            member_id: member.into(),
            ..Default::default()
        })
        .await
        .expect("list");
}

async fn operators_see_caches_locks_and_the_sweeper_through_grpcurl(app: &TestApp) {
    let replica = app.state.admin.replica().id.clone();
    let created = create_template(app, "acme", template()).await;
    for _ in 0..3 {
        get_template(app, "acme", &created.id).await;
    }
    let stats = grpcurl(app, "GetCacheStats", "{}").await;
    assert_eq!(stats["replica"]["id"], replica.as_str(), "{stats}");
    let templates = cache(&stats, "templates_and_rules");
    assert!(number(&templates["entries"]) >= 1, "{templates}");
    for period in ["sinceStart", "lastMinute"] {
        assert!(
            number(&templates[period]["localHits"]) >= 2,
            "the template's reads after the first: {templates}"
        );
        assert!(templates[period]["hitRate"].as_f64().expect("rate") > 0.0);
    }

    // A lock held now is listed with its holder, fence and time left.
    let guard = app
        .state
        .admin
        .lock
        .acquire(
            "{acme:held-by-the-test}",
            Duration::from_secs(30),
            tokio::time::Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("lock backend")
        .expect("free");
    let mut found = None;
    let mut token = String::new();
    for _ in 0..1_000 {
        let page = grpcurl(
            app,
            "ListActiveLocks",
            &format!(r#"{{"page_size":1000,"page_token":"{token}"}}"#),
        )
        .await;
        assert_eq!(page["replica"]["id"], replica.as_str());
        found = found.or_else(|| {
            page["locks"].as_array().and_then(|locks| {
                locks
                    .iter()
                    .find(|lock| lock["key"] == "{acme:held-by-the-test}")
                    .cloned()
            })
        });
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_owned(),
            _ => break,
        }
    }
    let found = found.expect("the held lock is listed");
    assert_eq!(found["holderReplica"], replica.as_str(), "{found}");
    assert_eq!(found["fence"], guard.fence.to_string(), "{found}");
    let left = found["timeLeft"].as_str().expect("time left");
    let left: f64 = left.trim_end_matches('s').parse().expect("seconds");
    assert!(left > 20.0 && left <= 30.0, "{found}");
    assert!(app.state.admin.lock.release(&guard).await.expect("release"));

    // Evicting the template drops its copies; the next read goes to the database.
    let misses = app.state.shared().cache.stats().misses;
    let evicted = grpcurl(
        app,
        "EvictCache",
        &format!(r#"{{"tenant_id":"acme","template_id":"{}"}}"#, created.id),
    )
    .await;
    assert_eq!(evicted["replica"]["id"], replica.as_str());
    assert!(
        number(&evicted["localCopiesDropped"]) + number(&evicted["sharedEntriesRemoved"]) >= 1,
        "{evicted}"
    );
    get_template(app, "acme", &created.id).await;
    assert!(app.state.shared().cache.stats().misses > misses);

    // The sweeper's parts show their runs (every 100 ms here).
    let started = Instant::now();
    loop {
        let status = grpcurl(app, "GetSweeperStatus", "{}").await;
        assert_eq!(status["replica"]["id"], replica.as_str());
        let parts = status["parts"].as_array().expect("parts");
        let names: Vec<&str> = parts.iter().filter_map(|p| p["name"].as_str()).collect();
        assert!(
            names.starts_with(&["coupons", "reminders", "code_generations", "points"]),
            "{status}"
        );
        let coupons = &parts[0];
        if number(&coupons["runs"]) >= 2 {
            assert!(coupons["lastRunTime"].is_string(), "{coupons}");
            assert!(coupons["lastSuccessTime"].is_string(), "{coupons}");
            assert_eq!(number(&coupons["failures"]), 0, "{coupons}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sweeper runs: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A request without a target is refused with its field named.
    let refused = admin(&app.channel)
        .evict_cache(pb::EvictCacheRequest {
            tenant_id: "acme".into(),
            target: None,
        })
        .await
        .expect_err("no target");
    marketing_tests::assert_invalid(&refused, &["target"]);
}

/// Tenant `acme:eu`'s id begins with tenant `acme`'s: evicting all of acme leaves it cached.
async fn a_whole_tenant_eviction_drops_that_tenant_only(app: &TestApp) {
    let tenants = ["acme", "acme:eu"];
    let mut templates = Vec::new();
    for tenant in tenants {
        let created = create_template(app, tenant, template()).await;
        get_template(app, tenant, &created.id).await;
        get_template(app, tenant, &created.id).await;
        list_coupons(app, tenant, "m1").await;
        list_coupons(app, tenant, "m1").await;
        templates.push(created.id);
    }
    let answer = admin(&app.channel)
        .evict_cache(pb::EvictCacheRequest {
            tenant_id: "acme".into(),
            target: Some(Target::WholeTenant(true)),
        })
        .await
        .expect("evict")
        .into_inner();
    assert!(
        answer.local_copies_dropped + answer.shared_entries_removed >= 2,
        "acme's template and coupon list: {answer:?}"
    );
    let cache = || app.state.shared().cache.stats();
    let lists = || {
        app.state
            .coupons
            .coupon_lists
            .as_ref()
            .expect("coupon lists are kept")
            .stats()
    };

    let (before, lists_before) = (cache(), lists());
    get_template(app, "acme:eu", &templates[1]).await;
    list_coupons(app, "acme:eu", "m1").await;
    assert_eq!(
        cache().misses,
        before.misses,
        "acme:eu's template stays cached"
    );
    assert_eq!(
        lists().misses,
        lists_before.misses,
        "acme:eu's list stays cached"
    );

    let (before, lists_before) = (cache(), lists());
    get_template(app, "acme", &templates[0]).await;
    list_coupons(app, "acme", "m1").await;
    assert_eq!(
        cache().misses,
        before.misses + 1,
        "acme's template was dropped"
    );
    assert_eq!(
        lists().misses,
        lists_before.misses + 1,
        "acme's list was dropped"
    );
}

/// An eviction on one replica drops the copies the others hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_reaches_every_replica() {
    let app = marketing_tests::spawn_app(Backend::PostgresRedis).await;
    let other = app.spawn_replica().await;
    assert_ne!(
        app.state.admin.replica().id,
        other.state.admin.replica().id,
        "replicas name themselves apart"
    );
    let created = create_template(&app, "acme", template()).await;
    for _ in 0..3 {
        get_template(&other, "acme", &created.id).await;
        list_coupons(&other, "acme", "m1").await;
    }
    let local = other.state.shared().cache.stats().local_hits;
    get_template(&other, "acme", &created.id).await;
    assert!(
        other.state.shared().cache.stats().local_hits > local,
        "held locally"
    );

    admin(&app.channel)
        .evict_cache(pb::EvictCacheRequest {
            tenant_id: "acme".into(),
            target: Some(Target::WholeTenant(true)),
        })
        .await
        .expect("evict");
    // The other replica hears of it within a second.
    let started = Instant::now();
    while other.state.shared().cache.stats().remote_evictions == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the other replica hears the eviction"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = other.state.shared().cache.stats();
    get_template(&other, "acme", &created.id).await;
    let after = other.state.shared().cache.stats();
    assert_eq!(after.local_hits, before.local_hits, "its copy is gone");
    let lists = || {
        other
            .state
            .coupons
            .coupon_lists
            .as_ref()
            .expect("kept")
            .stats()
            .misses
    };
    let misses = lists();
    list_coupons(&other, "acme", "m1").await;
    assert_eq!(
        lists(),
        misses + 1,
        "its copy of the list is no longer current"
    );
    other.stop().await;
    app.stop().await;
}
