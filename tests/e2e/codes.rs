//! Redemption codes: shared codes within the template's stock and member limit, unique codes
//! generated, listed and each claimed once (under concurrency too), codes of one tenant never
//! found from another, guessing bounded per member, and generations idempotent.

use std::collections::BTreeSet;

use futures::future::join_all;
use marketing_domain::coupon_code::ALPHABET;
use marketing_proto::v1 as pb;
use marketing_tests::{TestApp, assert_error, violated_fields};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::fixtures::{create_template, template, unique};

marketing_tests::backend_suite! {
    a_shared_code_claims_within_stock_and_member_limit,
    unique_codes_are_generated_listed_and_claimed_once,
    a_unique_code_raced_by_many_members_is_claimed_once,
    codes_belong_to_their_tenant,
    a_generation_retried_generates_once,
    a_generation_a_replica_left_is_finished_by_another,
    bad_codes_and_shapes_are_refused_with_their_fields,
    a_shared_code_of_stock_100_serves_exactly_100_of_500_claimants,
}

mod limited {
    use super::failed_code_attempts_are_limited_per_member;

    marketing_tests::backend_suite! {
        with marketing_tests::Options {
            rate_limits: Some("code_attempt=3/h:3"),
            ..marketing_tests::Options::default()
        };
        failed_code_attempts_are_limited_per_member,
    }
}

async fn shared_code(app: &TestApp, tenant: &str, template_id: &str, code: &str) -> pb::CouponCode {
    app.templates()
        .create_shared_coupon_code(pb::CreateSharedCouponCodeRequest {
            tenant_id: tenant.into(),
            request_id: unique("shared"),
            template_id: template_id.into(),
            code: code.into(),
        })
        .await
        .expect("shared code")
        .into_inner()
        .coupon_code
        .expect("code")
}

async fn generate(
    app: &TestApp,
    tenant: &str,
    template_id: &str,
    count: i32,
    request_id: &str,
) -> Result<pb::GenerateCouponCodesResponse, Status> {
    app.templates()
        .generate_coupon_codes(pb::GenerateCouponCodesRequest {
            tenant_id: tenant.into(),
            request_id: request_id.into(),
            template_id: template_id.into(),
            count,
            prefix: "vip-".into(),
            length: 8,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn claim_code(
    app: &TestApp,
    tenant: &str,
    member: &str,
    code: &str,
    request_id: &str,
) -> Result<pb::UserCoupon, Status> {
    app.user_coupons()
        .claim_coupon_by_code(pb::ClaimCouponByCodeRequest {
            tenant_id: tenant.into(),
            member_id: member.into(),
            code: code.into(),
            request_id: request_id.into(),
        })
        .await
        .map(|answer| answer.into_inner().user_coupon.expect("coupon"))
}

async fn list_codes(
    app: &TestApp,
    tenant: &str,
    template_id: &str,
    state: pb::CouponCodeState,
) -> Vec<pb::CouponCode> {
    let mut codes = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .templates()
            .list_coupon_codes(pb::ListCouponCodesRequest {
                tenant_id: tenant.into(),
                template_id: template_id.into(),
                page_size: 20,
                page_token,
                state: state.into(),
            })
            .await
            .expect("codes")
            .into_inner();
        assert!(page.coupon_codes.len() <= 20);
        codes.extend(page.coupon_codes);
        if page.next_page_token.is_empty() {
            return codes;
        }
        page_token = page.next_page_token;
    }
}

async fn get_template(app: &TestApp, tenant: &str, id: &str) -> pb::CouponTemplate {
    app.templates()
        .get_coupon_template(pb::GetCouponTemplateRequest {
            tenant_id: tenant.into(),
            template_id: id.into(),
        })
        .await
        .expect("template")
        .into_inner()
        .coupon_template
        .expect("template")
}

async fn events_of_type(app: &TestApp, tenant: &str, event_type: &str) -> Vec<pb::Event> {
    app.events()
        .list_events(pb::ListEventsRequest {
            tenant_id: tenant.into(),
            types: vec![event_type.into()],
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner()
        .events
}

async fn a_shared_code_claims_within_stock_and_member_limit(app: &TestApp) {
    let tpl = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            total_stock: 3,
            per_member_limit: 1,
            ..template()
        },
    )
    .await;
    let code = shared_code(app, "acme", &tpl.id, "spring-10").await;
    assert_eq!(code.code, "SPRING10");
    assert_eq!(code.kind, pb::CouponCodeKind::Shared as i32);
    assert_eq!(code.state, pb::CouponCodeState::Available as i32);

    let coupon = claim_code(app, "acme", "m1", "Spring 10", &unique("c"))
        .await
        .expect("first claim");
    assert_eq!(coupon.template_id, tpl.id);
    assert_eq!(coupon.member_id, "m1");
    let again = claim_code(app, "acme", "m1", "SPRING10", &unique("c"))
        .await
        .expect_err("one per member");
    assert_error(&again, Code::ResourceExhausted, "MEMBER_LIMIT_REACHED");
    for member in ["m2", "m3"] {
        claim_code(app, "acme", member, "spring10", &unique("c"))
            .await
            .expect("within stock");
    }
    let out = claim_code(app, "acme", "m4", "spring10", &unique("c"))
        .await
        .expect_err("stock is 3");
    assert_error(&out, Code::ResourceExhausted, "OUT_OF_STOCK");

    let after = get_template(app, "acme", &tpl.id).await;
    assert_eq!((after.claimed_count, after.remaining_stock), (3, 0));
    assert_eq!(after.shared_code_count, 1);
    assert_eq!(after.unique_code_count, 0);
    // A shared code stays available.
    let listed = list_codes(app, "acme", &tpl.id, pb::CouponCodeState::Unspecified).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, pb::CouponCodeState::Available as i32);
    // Each claim's event says it came by a shared code (and never holds the code).
    let claimed = events_of_type(app, "acme", "coupon.claimed").await;
    assert_eq!(claimed.len(), 3);
    for event in &claimed {
        let Some(pb::event::Payload::UserCoupon(payload)) = &event.payload else {
            panic!("a coupon event: {event:?}");
        };
        assert_eq!(payload.channel, pb::ClaimChannel::Code as i32);
        assert_eq!(payload.code_kind, pb::CouponCodeKind::Shared as i32);
    }
}

async fn unique_codes_are_generated_listed_and_claimed_once(app: &TestApp) {
    let tpl = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            total_stock: 100,
            ..template()
        },
    )
    .await;
    let generated = generate(app, "acme", &tpl.id, 50, &unique("gen"))
        .await
        .expect("generated");
    assert_eq!(generated.generated_count, 50);
    let inventory = generated.coupon_template.expect("template");
    assert_eq!(
        (
            inventory.unique_code_count,
            inventory.available_unique_code_count
        ),
        (50, 50)
    );
    // Codes do not reserve stock.
    assert_eq!(inventory.remaining_stock, 100);

    let codes = list_codes(app, "acme", &tpl.id, pb::CouponCodeState::Unspecified).await;
    assert_eq!(codes.len(), 50);
    let texts: BTreeSet<&str> = codes.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(texts.len(), 50, "codes are distinct");
    let listed: Vec<&str> = codes.iter().map(|c| c.code.as_str()).collect();
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "code order");
    for code in &codes {
        assert!(code.code.starts_with("VIP"), "{}", code.code);
        assert_eq!(code.code.len(), 11);
        assert!(
            code.code[3..].bytes().all(|b| ALPHABET.contains(&b)),
            "{}",
            code.code
        );
        assert_eq!(code.kind, pb::CouponCodeKind::Unique as i32);
        assert_eq!(code.state, pb::CouponCodeState::Available as i32);
    }

    // Typed as a person would: lower case, with a dash.
    let text = &codes[7].code;
    let typed = format!("{}-{}", &text[..5], &text[5..]).to_lowercase();
    let request = unique("claim");
    let coupon = claim_code(app, "acme", "alice", &typed, &request)
        .await
        .expect("claimed");
    let replayed = claim_code(app, "acme", "alice", &typed, &request)
        .await
        .expect("replayed");
    assert_eq!(replayed.id, coupon.id, "a retry answers the first claim");
    let taken = claim_code(app, "acme", "bob", text, &unique("claim"))
        .await
        .expect_err("claimed once");
    assert_error(&taken, Code::FailedPrecondition, "CODE_ALREADY_CLAIMED");
    let missing = claim_code(app, "acme", "bob", "VIPNOSUCH", &unique("claim"))
        .await
        .expect_err("no such code");
    assert_error(&missing, Code::NotFound, "CODE_NOT_FOUND");

    let claimed = list_codes(app, "acme", &tpl.id, pb::CouponCodeState::Claimed).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].code, *text);
    assert_eq!(claimed[0].member_id, "alice");
    assert_eq!(claimed[0].user_coupon_id, coupon.id);
    assert!(claimed[0].claim_time.is_some());
    let available = list_codes(app, "acme", &tpl.id, pb::CouponCodeState::Available).await;
    assert_eq!(available.len(), 49);
    let after = get_template(app, "acme", &tpl.id).await;
    assert_eq!(
        (
            after.unique_code_count,
            after.available_unique_code_count,
            after.claimed_count
        ),
        (50, 49, 1)
    );
}

async fn a_unique_code_raced_by_many_members_is_claimed_once(app: &TestApp) {
    let tpl = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            total_stock: 1_000,
            per_member_limit: 5,
            ..template()
        },
    )
    .await;
    generate(app, "acme", &tpl.id, 20, &unique("gen"))
        .await
        .expect("generated");
    let codes = list_codes(app, "acme", &tpl.id, pb::CouponCodeState::Unspecified).await;
    // Three members race for each code, all at once.
    let claims = codes.iter().enumerate().flat_map(|(i, code)| {
        (0..3).map(move |k| {
            let member = format!("m{i}-{k}");
            async move { claim_code(app, "acme", &member, &code.code, &unique("race")).await }
        })
    });
    let outcomes = join_all(claims).await;
    let won = outcomes.iter().filter(|o| o.is_ok()).count();
    for lost in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_error(lost, Code::FailedPrecondition, "CODE_ALREADY_CLAIMED");
    }
    assert_eq!(won, 20, "every code claimed exactly once");
    let claimed = list_codes(app, "acme", &tpl.id, pb::CouponCodeState::Claimed).await;
    assert_eq!(claimed.len(), 20);
    let coupons: BTreeSet<&str> = claimed.iter().map(|c| c.user_coupon_id.as_str()).collect();
    assert_eq!(coupons.len(), 20, "one coupon per code");
    let after = get_template(app, "acme", &tpl.id).await;
    assert_eq!(
        (after.claimed_count, after.available_unique_code_count),
        (20, 0)
    );
}

async fn codes_belong_to_their_tenant(app: &TestApp) {
    let acme = create_template(app, "acme", template()).await;
    let globex = create_template(app, "globex", template()).await;
    // The same text in two tenants is two codes.
    shared_code(app, "acme", &acme.id, "SAME-CODE").await;
    shared_code(app, "globex", &globex.id, "SAME-CODE").await;
    let a = claim_code(app, "acme", "m1", "same-code", &unique("c"))
        .await
        .expect("acme's");
    let g = claim_code(app, "globex", "m1", "same-code", &unique("c"))
        .await
        .expect("globex's");
    assert_eq!(
        (a.template_id, g.template_id),
        (acme.id.clone(), globex.id.clone())
    );

    // A unique code of acme is not found from globex, claimed or not.
    generate(app, "acme", &acme.id, 2, &unique("gen"))
        .await
        .expect("generated");
    let codes = list_codes(app, "acme", &acme.id, pb::CouponCodeState::Unspecified).await;
    let unique_code = codes
        .iter()
        .find(|c| c.kind == pb::CouponCodeKind::Unique as i32)
        .expect("a unique code");
    let from_globex = claim_code(app, "globex", "m2", &unique_code.code, &unique("c"))
        .await
        .expect_err("another tenant's code");
    assert_error(&from_globex, Code::NotFound, "CODE_NOT_FOUND");
    claim_code(app, "acme", "m2", &unique_code.code, &unique("c"))
        .await
        .expect("acme claims it");
    let claimed_elsewhere = claim_code(app, "globex", "m3", &unique_code.code, &unique("c"))
        .await
        .expect_err("still another tenant's code");
    assert_error(&claimed_elsewhere, Code::NotFound, "CODE_NOT_FOUND");
    // Nor listed, generated or added to from globex.
    let listed = app
        .templates()
        .list_coupon_codes(pb::ListCouponCodesRequest {
            tenant_id: "globex".into(),
            template_id: acme.id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("acme's template");
    assert_error(&listed, Code::NotFound, "TEMPLATE_NOT_FOUND");
    let generated = generate(app, "globex", &acme.id, 2, &unique("gen"))
        .await
        .expect_err("acme's template");
    assert_error(&generated, Code::NotFound, "TEMPLATE_NOT_FOUND");
    let after = get_template(app, "acme", &acme.id).await;
    assert_eq!(after.unique_code_count, 2);
}

async fn a_generation_retried_generates_once(app: &TestApp) {
    let tpl = create_template(app, "acme", template()).await;
    let request = unique("gen");
    let first = generate(app, "acme", &tpl.id, 30, &request)
        .await
        .expect("first");
    let again = generate(app, "acme", &tpl.id, 30, &request)
        .await
        .expect("retry");
    assert_eq!((first.generated_count, again.generated_count), (30, 30));
    let after = get_template(app, "acme", &tpl.id).await;
    assert_eq!(after.unique_code_count, 30, "the retry generated nothing");
    assert_eq!(
        list_codes(app, "acme", &tpl.id, pb::CouponCodeState::Unspecified)
            .await
            .len(),
        30
    );
    // The same request id with another count is another request's id.
    let reused = generate(app, "acme", &tpl.id, 31, &request)
        .await
        .expect_err("reused id");
    assert_error(&reused, Code::InvalidArgument, "REQUEST_ID_REUSED");
    // One event for the generation, none for its codes one by one.
    let events = events_of_type(app, "acme", "coupon_template.codes_added").await;
    assert_eq!(events.len(), 1);
    let Some(pb::event::Payload::CouponTemplate(payload)) = &events[0].payload else {
        panic!("a template event: {:?}", events[0]);
    };
    assert_eq!(payload.codes_added, 30);
    assert_eq!(payload.code_kind, pb::CouponCodeKind::Unique as i32);
}

/// A generation accepted by a replica that stopped after some chunks (its row's lease passed,
/// part of its codes made) is taken over by the sweeper's step and finished exactly: the
/// codes made before stay, the rest are made, none twice.
async fn a_generation_a_replica_left_is_finished_by_another(app: &TestApp) {
    use marketing_domain::{
        RequestId, TemplateId, TenantId, UnixMicros,
        coupon_code::{CodeShape, CodeText},
    };
    use marketing_storage::{
        codes::{CodeStore, Generation},
        templates::TemplateStore,
        unit::UnitOfWork,
    };

    let tpl = create_template(app, "acme", template()).await;
    let tenant = TenantId::parse("tenant_id", "acme").expect("tenant");
    let template_id = TemplateId::parse("template_id", &tpl.id).expect("template");
    let now = app.state.shared().clock.now();
    let left = Generation {
        id: uuid::Uuid::now_v7(),
        tenant_id: tenant.clone(),
        template_id,
        count: 25_000,
        shape: CodeShape::parse("LEFT", 10).expect("shape"),
        generated: 0,
        // Its replica stopped a minute ago.
        leased_until: UnixMicros(now.0 - 60_000_000),
        finished_at: None,
        created_at: now,
        actor: None,
        request_id: RequestId::parse("request_id", "left-behind").expect("request id"),
    };
    // The replica made 3 codes (one chunk's worth, counted) before it stopped.
    let unit = UnitOfWork::begin(&app.state.shared().db)
        .await
        .expect("unit");
    unit.codes()
        .insert_generation(&left)
        .await
        .expect("generation");
    let made: Vec<CodeText> = ["LEFTAAAAAAAAAA", "LEFTBBBBBBBBBB", "LEFTCCCCCCCCCC"]
        .iter()
        .map(|text| CodeText::parse("code", text).expect("code"))
        .collect();
    let added = unit
        .codes()
        .insert_unique(&left, made, now)
        .await
        .expect("codes");
    unit.templates()
        .add_codes(&tenant, template_id, added as i64, 0)
        .await
        .expect("counted");
    unit.codes()
        .advance_generation(
            left.id,
            added as i32,
            left.leased_until,
            now,
            left.leased_until,
        )
        .await
        .expect("advanced");
    unit.commit().await.expect("commit");

    assert!(
        app.state
            .templates
            .resume_abandoned_generation()
            .await
            .expect("resumed"),
        "the sweeper's step found the generation"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let shown = get_template(app, "acme", &tpl.id).await;
        if shown.unique_code_count == 25_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "finished within a minute: {}",
            shown.unique_code_count
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    use marketing_storage::entity::coupon_code;
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let rows = coupon_code::Entity::find()
        .filter(coupon_code::Column::TemplateId.eq(template_id.0))
        .count(app.state.shared().db.conn())
        .await
        .expect("count");
    assert_eq!(rows, 25_000, "none made twice, none lost");
    let kept = coupon_code::Entity::find_by_id(("acme".to_owned(), "LEFTAAAAAAAAAA".to_owned()))
        .one(app.state.shared().db.conn())
        .await
        .expect("read");
    assert!(kept.is_some(), "the codes made before stay");
    // Taken over once: nothing is left to resume.
    assert!(
        !app.state
            .templates
            .resume_abandoned_generation()
            .await
            .expect("swept")
    );
}

async fn bad_codes_and_shapes_are_refused_with_their_fields(app: &TestApp) {
    let tpl = create_template(app, "acme", template()).await;
    let status = app
        .templates()
        .generate_coupon_codes(pb::GenerateCouponCodesRequest {
            tenant_id: "acme".into(),
            request_id: unique("gen"),
            template_id: tpl.id.clone(),
            count: 0,
            prefix: "a_b".into(),
            length: 7,
        })
        .await
        .expect_err("invalid");
    assert_error(&status, Code::InvalidArgument, "INVALID_ARGUMENT");
    let fields = violated_fields(&status);
    for field in ["count", "prefix", "length"] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    let status = app
        .templates()
        .create_shared_coupon_code(pb::CreateSharedCouponCodeRequest {
            tenant_id: "acme".into(),
            request_id: unique("shared"),
            template_id: tpl.id.clone(),
            code: "ab!".into(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&status), ["code"]);
    shared_code(app, "acme", &tpl.id, "TAKEN1").await;
    let status = app
        .templates()
        .create_shared_coupon_code(pb::CreateSharedCouponCodeRequest {
            tenant_id: "acme".into(),
            request_id: unique("shared"),
            template_id: tpl.id.clone(),
            code: "taken-1".into(),
        })
        .await
        .expect_err("exists");
    assert_error(&status, Code::AlreadyExists, "CODE_EXISTS");
    let status = claim_code(app, "acme", "m1", "", &unique("c"))
        .await
        .expect_err("empty");
    assert_eq!(violated_fields(&status), ["code"]);
}

async fn failed_code_attempts_are_limited_per_member(app: &TestApp) {
    let tpl = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            per_member_limit: 10,
            ..template()
        },
    )
    .await;
    shared_code(app, "acme", &tpl.id, "REAL-CODE").await;
    // Claims that find their code do not count: more of them than the limit.
    for _ in 0..5 {
        claim_code(app, "acme", "guesser", "REALCODE", &unique("ok"))
            .await
            .expect("a found code is not a failed attempt");
    }
    for guess in ["GUESS1", "GUESS2", "GUESS3"] {
        let status = claim_code(app, "acme", "guesser", guess, &unique("g"))
            .await
            .expect_err("no such code");
        assert_error(&status, Code::NotFound, "CODE_NOT_FOUND");
    }
    let limited = claim_code(app, "acme", "guesser", "REALCODE", &unique("g"))
        .await
        .expect_err("past the limit, even a good code waits");
    assert_error(&limited, Code::ResourceExhausted, "RATE_LIMITED");
    assert!(limited.get_details_retry_info().is_some(), "{limited:?}");
    // Another member, and the same member id of another tenant, are not limited.
    claim_code(app, "acme", "other", "REALCODE", &unique("ok"))
        .await
        .expect("another member");
    let globex = create_template(app, "globex", template()).await;
    shared_code(app, "globex", &globex.id, "REAL-CODE").await;
    claim_code(app, "globex", "guesser", "REALCODE", &unique("ok"))
        .await
        .expect("another tenant's member");
}

async fn a_shared_code_of_stock_100_serves_exactly_100_of_500_claimants(app: &TestApp) {
    let tpl = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            total_stock: 100,
            per_member_limit: 1,
            ..template()
        },
    )
    .await;
    shared_code(app, "acme", &tpl.id, "SPRING-100").await;
    // The same code text in the other tenant, claimed at the same time: its own stock.
    let other = create_template(
        app,
        "beta",
        pb::CouponTemplate {
            total_stock: 100,
            per_member_limit: 1,
            ..template()
        },
    )
    .await;
    shared_code(app, "beta", &other.id, "SPRING-100").await;
    let claims = (0..500).flat_map(|m| {
        ["acme", "beta"].map(move |tenant| async move {
            let member = format!("m{m}");
            (
                tenant,
                claim_code(app, tenant, &member, "spring 100", &unique("claim")).await,
            )
        })
    });
    let outcomes = join_all(claims).await;
    for tenant in ["acme", "beta"] {
        let won = outcomes
            .iter()
            .filter(|(t, o)| *t == tenant && o.is_ok())
            .count();
        assert_eq!(won, 100, "{tenant}: exactly the stock");
        for (_, lost) in outcomes.iter().filter(|(t, o)| *t == tenant && o.is_err()) {
            let status = lost.as_ref().expect_err("refused");
            assert_error(status, Code::ResourceExhausted, "OUT_OF_STOCK");
        }
    }
    let after = get_template(app, "acme", &tpl.id).await;
    assert_eq!((after.claimed_count, after.remaining_stock), (100, 0));
}

/// 1,000 members claim 1,000 unique codes on two replicas at once, and Redis (locks, caches,
/// rate limits) is killed midway: every code is claimed exactly once, retries included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_codes_are_claimed_once_on_two_replicas_with_redis_killed_midway() {
    let mut redis = marketing_tests::TestRedis::start();
    let app = redis.spawn_app().await;
    let replica = app.spawn_replica().await;
    let tpl = create_template(
        &app,
        "acme",
        pb::CouponTemplate {
            total_stock: 10_000,
            per_member_limit: 1,
            ..template()
        },
    )
    .await;
    generate(&app, "acme", &tpl.id, 1_000, &unique("gen"))
        .await
        .expect("generated");
    let codes = list_codes(&app, "acme", &tpl.id, pb::CouponCodeState::Unspecified).await;
    assert_eq!(codes.len(), 1_000);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let servers = [&app, &replica];
    let claim = |i: usize, code: String| {
        let done = &done;
        async move {
            let server = servers[i % 2];
            let member = format!("m{i}");
            let request = unique("claim");
            let mut outcome = claim_code(server, "acme", &member, &code, &request).await;
            // A call cut by the outage is retried with its request id, as a client would.
            for _ in 0..20 {
                match &outcome {
                    Err(status)
                        if matches!(
                            status.code(),
                            Code::Unavailable | Code::Aborted | Code::DeadlineExceeded
                        ) =>
                    {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        outcome = claim_code(server, "acme", &member, &code, &request).await;
                    }
                    _ => break,
                }
            }
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            outcome
        }
    };
    let claims = join_all(
        codes
            .iter()
            .enumerate()
            .map(|(i, code)| claim(i, code.code.clone())),
    );
    let kill = async {
        while done.load(std::sync::atomic::Ordering::Relaxed) < 300 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        redis.stop();
    };
    let (outcomes, ()) = tokio::join!(claims, kill);
    let failed: Vec<&Status> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failed.is_empty(), "every claim is served: {failed:?}");
    let claimed = list_codes(&app, "acme", &tpl.id, pb::CouponCodeState::Claimed).await;
    assert_eq!(claimed.len(), 1_000, "every code claimed");
    let coupons: BTreeSet<&str> = claimed.iter().map(|c| c.user_coupon_id.as_str()).collect();
    assert_eq!(coupons.len(), 1_000, "each by one coupon");
    let members: BTreeSet<&str> = claimed.iter().map(|c| c.member_id.as_str()).collect();
    assert_eq!(members.len(), 1_000, "each by its own member");
    let after = get_template(&app, "acme", &tpl.id).await;
    assert_eq!(
        (after.claimed_count, after.available_unique_code_count),
        (1_000, 0)
    );
    replica.stop().await;
    app.stop().await;
}
