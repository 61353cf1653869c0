//! The lock and cache contracts, run against both implementations: Redis (real server) and
//! in-process.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use marketing_infra::{
    cache::{Cache, Versioned},
    lock::DistributedLock,
    redis::RedisPool,
};
use tokio::time::Instant;

fn redis_pool() -> RedisPool {
    let prefix = format!("test:{}:", uuid::Uuid::now_v7().simple());
    RedisPool::new(&marketing_tests::redis_url(), 16, &prefix).expect("redis pool")
}

macro_rules! infra_suite {
    ($($test:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let pool = super::redis_pool();
                    super::$test(
                        std::sync::Arc::new(marketing_infra::lock::RedisLock::new(pool.clone(), "replica-a")),
                        std::sync::Arc::new(marketing_infra::cache::RedisCache::new(pool)),
                    )
                    .await;
                }
            )*
        }
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(
                        std::sync::Arc::new(marketing_infra::lock::LocalLock::new("replica-a")),
                        std::sync::Arc::new(marketing_infra::cache::LocalCache::new(1000)),
                    )
                    .await;
                }
            )*
        }
    };
}

infra_suite! {
    lock_excludes_concurrent_holders,
    lock_fences_rise_and_only_the_holder_releases,
    lock_lapses_after_its_ttl_and_waits_are_bounded,
    cache_never_goes_back_to_an_older_version,
    lock_lists_the_locks_held_with_holder_fence_and_time_left,
    cache_drops_a_key_or_a_family_of_keys,
}

async fn lock_excludes_concurrent_holders(lock: Arc<dyn DistributedLock>, _cache: Arc<dyn Cache>) {
    let counter = Arc::new(AtomicI64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let lock = lock.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    let deadline = Instant::now() + Duration::from_secs(20);
                    let guard = lock
                        .acquire("counter", Duration::from_secs(5), deadline)
                        .await
                        .expect("lock backend")
                        .expect("acquired before the deadline");
                    // A read-modify-write that loses updates unless the lock excludes.
                    let seen = counter.load(Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    counter.store(seen + 1, Ordering::SeqCst);
                    assert!(lock.release(&guard).await.expect("release"));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(counter.load(Ordering::SeqCst), 80);
}

async fn lock_fences_rise_and_only_the_holder_releases(
    lock: Arc<dyn DistributedLock>,
    _cache: Arc<dyn Cache>,
) {
    let deadline = || Instant::now() + Duration::from_secs(1);
    let first = lock
        .acquire("k", Duration::from_secs(5), deadline())
        .await
        .expect("ok")
        .expect("free");
    let mut forged = first.clone();
    forged.token = "not-the-holder".into();
    assert!(
        !lock.release(&forged).await.expect("release"),
        "a stranger cannot release"
    );
    assert!(lock.release(&first).await.expect("release"));
    assert!(
        !lock.release(&first).await.expect("release"),
        "releasing twice is a no-op"
    );
    let second = lock
        .acquire("k", Duration::from_secs(5), deadline())
        .await
        .expect("ok")
        .expect("free");
    assert!(
        second.fence > first.fence,
        "fences rise: {} then {}",
        first.fence,
        second.fence
    );
    let other_key = lock
        .acquire("other", Duration::from_secs(5), deadline())
        .await
        .expect("ok");
    assert!(other_key.is_some(), "keys are independent");
}

async fn lock_lapses_after_its_ttl_and_waits_are_bounded(
    lock: Arc<dyn DistributedLock>,
    _cache: Arc<dyn Cache>,
) {
    let held = lock
        .acquire(
            "ttl",
            Duration::from_millis(300),
            Instant::now() + Duration::from_secs(1),
        )
        .await
        .expect("ok")
        .expect("free");
    let started = Instant::now();
    let refused = lock
        .acquire(
            "ttl",
            Duration::from_secs(5),
            Instant::now() + Duration::from_millis(50),
        )
        .await
        .expect("ok");
    assert!(refused.is_none(), "held: the wait ends at its deadline");
    assert!(started.elapsed() < Duration::from_secs(2));
    let taken_over = lock
        .acquire(
            "ttl",
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("ok")
        .expect("the first holder's TTL lapses");
    assert!(taken_over.fence > held.fence);
    assert!(
        !lock.release(&held).await.expect("release"),
        "the lapsed holder cannot release"
    );
    assert!(lock.release(&taken_over).await.expect("release"));
    let err = lock.acquire("ttl", Duration::ZERO, Instant::now()).await;
    assert!(err.is_err(), "a zero TTL is refused");
}

async fn cache_never_goes_back_to_an_older_version(
    _lock: Arc<dyn DistributedLock>,
    cache: Arc<dyn Cache>,
) {
    let ttl = Duration::from_secs(60);
    let entry = |version: i64, value: &str| Versioned {
        version,
        value: value.as_bytes().to_vec(),
    };
    assert_eq!(cache.get("t").await.expect("get"), None);
    cache.put("t", entry(2, "two"), ttl).await.expect("put");
    cache
        .put("t", entry(1, "one"), ttl)
        .await
        .expect("put older");
    assert_eq!(cache.get("t").await.expect("get"), Some(entry(2, "two")));
    cache
        .put("t", entry(3, "three"), ttl)
        .await
        .expect("put newer");
    assert_eq!(cache.get("t").await.expect("get"), Some(entry(3, "three")));
    cache.evict("t").await.expect("evict");
    assert_eq!(cache.get("t").await.expect("get"), None);

    cache
        .put("short", entry(1, "x"), Duration::from_millis(100))
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        cache.get("short").await.expect("get"),
        None,
        "entries expire"
    );
}

/// Keys older versions left without a TTL go at start-up, under this prefix only (its glob
/// characters are taken literally), and a second start within the day does not scan again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_older_versions_left_are_removed_once_under_the_prefix_only() {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    // Unescaped, `[ab]` would also match the neighbour's prefix `test:a<unique>:`.
    let prefix = format!("test:[ab]{unique}:");
    let neighbour = format!("test:a{unique}:fence:tpl:1");
    let pool = RedisPool::new(&marketing_tests::redis_url(), 4, &prefix).expect("redis pool");
    let mut conn = pool.connection().await.expect("redis");
    let legacy = [
        "fence:tpl:1",
        "lock:tpl:2",
        "lb:acme",
        "lb-names:acme",
        "lb-built:acme",
    ];
    let current = ["fence:{acme:1}", "lb:{acme}", "lb-built:{acme}"];
    for key in legacy.iter().chain(&current) {
        deadpool_redis::redis::cmd("SET")
            .arg(pool.key(key))
            .arg(1)
            .query_async::<()>(&mut conn)
            .await
            .expect("SET");
    }
    deadpool_redis::redis::cmd("SET")
        .arg(&neighbour)
        .arg(1)
        .query_async::<()>(&mut conn)
        .await
        .expect("SET");

    assert_eq!(pool.remove_legacy_keys().await.expect("swept"), Some(5));
    for key in current {
        let exists: bool = deadpool_redis::redis::cmd("EXISTS")
            .arg(pool.key(key))
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        assert!(exists, "{key} is current and stays");
    }
    let neighbour_left: i64 = deadpool_redis::redis::cmd("DEL")
        .arg(&neighbour)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    assert_eq!(neighbour_left, 1, "another prefix's key is not touched");
    assert_eq!(
        pool.remove_legacy_keys().await.expect("asked"),
        None,
        "a second start within the day does not scan"
    );
    for key in current.iter().chain(&["legacy-keys-removed"]) {
        deadpool_redis::redis::cmd("DEL")
            .arg(pool.key(key))
            .query_async::<()>(&mut conn)
            .await
            .expect("DEL");
    }
}

/// The rate-limiter contract on both implementations: calls given back are admitted again
/// (never beyond the burst), in the same call that counts new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiters_admit_calls_given_back_again_never_beyond_the_burst() {
    use std::num::NonZeroU32;

    use marketing_infra::rate::{Gcra, LocalRateLimiter, RateLimiter, RedisRateLimiter};

    let hourly = Gcra {
        period: Duration::from_secs(3600),
        burst: NonZeroU32::new(3).expect("burst"),
    };
    let limiters: [Arc<dyn RateLimiter>; 2] = [
        Arc::new(RedisRateLimiter::new(redis_pool())),
        Arc::new(LocalRateLimiter::new()),
    ];
    for limiter in limiters {
        let kind = limiter.kind();
        let check = |given_back, wanted| {
            let limiter = limiter.clone();
            async move {
                limiter
                    .check("code_attempt:acme/m1", hourly, given_back, wanted)
                    .await
                    .expect("check")
            }
        };
        // Four wanted, three admitted, the fourth told to wait about an hour.
        let counted = check(0, 4).await;
        assert_eq!(counted.admitted, 3, "{kind}");
        assert!(counted.retry_after > Duration::from_secs(3500), "{kind}");
        // Two given back: two admitted again, in the same call.
        let counted = check(2, 3).await;
        assert_eq!(counted.admitted, 2, "{kind}");
        // Given back alone (nothing wanted), then more than was taken: never beyond the burst.
        assert_eq!(check(1, 0).await.admitted, 0, "{kind}");
        assert_eq!(check(10, 5).await.admitted, 3, "{kind}");
        // Another key counts apart.
        let other = limiter
            .check("code_attempt:globex/m1", hourly, 0, 1)
            .await
            .expect("check");
        assert_eq!(other.admitted, 1, "{kind}");
    }
}

async fn lock_lists_the_locks_held_with_holder_fence_and_time_left(
    lock: Arc<dyn DistributedLock>,
    _cache: Arc<dyn Cache>,
) {
    let deadline = || Instant::now() + Duration::from_secs(1);
    let mut guards = Vec::new();
    for key in ["listed:a", "listed:b", "listed:c"] {
        guards.push(
            lock.acquire(key, Duration::from_secs(30), deadline())
                .await
                .expect("ok")
                .expect("free"),
        );
    }
    let released = guards.pop().expect("c");
    assert!(lock.release(&released).await.expect("release"));
    // Pages of one lock at a time until the cursor says the last page went.
    let mut listed = Vec::new();
    let mut cursor = 0;
    for _ in 0..10_000 {
        let page = lock.active(cursor, 1).await.expect("active");
        listed.extend(page.locks);
        cursor = page.next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(cursor, 0, "the listing ends");
    listed.retain(|held| held.key.starts_with("listed:"));
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<&str> = listed.iter().map(|held| held.key.as_str()).collect();
    assert_eq!(keys, ["listed:a", "listed:b"], "held locks only, each once");
    for (held, guard) in listed.iter().zip(&guards) {
        assert_eq!(held.holder, "replica-a");
        assert_eq!(held.fence, Some(guard.fence));
        assert!(
            held.time_left > Duration::from_secs(20) && held.time_left <= Duration::from_secs(30),
            "{:?}",
            held.time_left
        );
    }
}

async fn cache_drops_a_key_or_a_family_of_keys(
    _lock: Arc<dyn DistributedLock>,
    cache: Arc<dyn Cache>,
) {
    use marketing_infra::cache::Copies;
    let ttl = Duration::from_secs(60);
    let entry = Versioned {
        version: 1,
        value: b"v".to_vec(),
    };
    // Tenant `acme`'s two templates, and one of tenant `acme:eu`, whose id extends it.
    for key in [
        "tpl:acme:1",
        "tpl:acme:2",
        "tpl:acme:eu:3",
        "rule:acme:earn",
    ] {
        cache.put(key, entry.clone(), ttl).await.expect("put");
        assert!(cache.get(key).await.expect("get").is_some());
    }
    let dropped = cache
        .drop_copies(Copies::Key("rule:acme:earn"))
        .await
        .expect("drop a key");
    assert_eq!(dropped.local + dropped.shared, 1, "{dropped:?}");
    assert_eq!(cache.get("rule:acme:earn").await.expect("get"), None);
    let dropped = cache
        .drop_copies(Copies::Family("tpl:acme:"))
        .await
        .expect("drop a family");
    assert_eq!(dropped.local + dropped.shared, 2, "{dropped:?}");
    assert_eq!(cache.get("tpl:acme:1").await.expect("get"), None);
    assert_eq!(cache.get("tpl:acme:2").await.expect("get"), None);
    assert!(
        cache.get("tpl:acme:eu:3").await.expect("get").is_some(),
        "another tenant's copy stays"
    );
}
