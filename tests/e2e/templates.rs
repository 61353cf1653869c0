//! CouponTemplateService over gRPC: validation, idempotency, etags, stock, archiving,
//! tenant isolation and pagination.

use std::collections::HashSet;

use marketing_proto::v1::{self as pb, coupon_template};
use marketing_tests::{TestApp, assert_error, assert_invalid};
use prost_types::FieldMask;
use tonic::Code;

use crate::fixtures::{DAY, at, create_request, now_seconds, template, unique};

marketing_tests::backend_suite! {
    a_damaged_cached_template_is_read_from_the_database,
    create_then_get_returns_what_was_stored,
    create_is_idempotent_by_request_id,
    concurrent_duplicate_creates_make_one_template,
    bad_templates_are_rejected_with_every_violation,
    other_tenants_cannot_see_or_change_a_template,
    updates_check_the_version_and_the_rules,
    update_replays_return_the_first_response,
    enabling_and_disabling,
    stock_can_grow_and_shrink_but_never_below_zero,
    archived_templates_stay_readable_but_frozen,
    pagination_is_stable_under_inserts,
    list_filters_by_enabled_type_and_claimability,
}

async fn create(app: &TestApp, tenant: &str, template: pb::CouponTemplate) -> pb::CouponTemplate {
    app.templates()
        .create_coupon_template(create_request(tenant, template))
        .await
        .expect("create succeeds")
        .into_inner()
        .coupon_template
        .expect("the response carries the template")
}

async fn get(app: &TestApp, tenant: &str, id: &str) -> Result<pb::CouponTemplate, tonic::Status> {
    app.templates()
        .get_coupon_template(pb::GetCouponTemplateRequest {
            tenant_id: tenant.into(),
            template_id: id.into(),
        })
        .await
        .map(|r| r.into_inner().coupon_template.expect("template"))
}

fn update_request(
    tenant: &str,
    template: pb::CouponTemplate,
    paths: &[&str],
) -> pb::UpdateCouponTemplateRequest {
    pb::UpdateCouponTemplateRequest {
        tenant_id: tenant.into(),
        request_id: unique("update"),
        coupon_template: Some(template),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    }
}

async fn create_then_get_returns_what_was_stored(app: &TestApp) {
    let sent = template();
    let created = create(app, "acme", sent.clone()).await;
    assert_eq!(
        uuid::Uuid::parse_str(&created.id).map(|id| id.get_version_num()),
        Ok(7)
    );
    assert_eq!(created.tenant_id, "acme");
    assert_eq!(created.name, sent.name);
    assert_eq!(created.discount, sent.discount);
    assert_eq!(created.validity, sent.validity);
    assert_eq!(
        created.distribution_start_time,
        sent.distribution_start_time
    );
    assert_eq!(
        (
            created.total_stock,
            created.remaining_stock,
            created.claimed_count
        ),
        (100, 100, 0)
    );
    assert_eq!(created.version, 1);
    assert_eq!(created.discount_type, pb::DiscountType::PercentOff as i32);
    assert!(!created.archived);
    assert!(created.create_time.is_some());
    assert_eq!(get(app, "acme", &created.id).await.expect("get"), created);
}

async fn create_is_idempotent_by_request_id(app: &TestApp) {
    let request = create_request("acme", template());
    let mut client = app.templates();
    let first = client
        .create_coupon_template(request.clone())
        .await
        .expect("first")
        .into_inner();
    let replay = client
        .create_coupon_template(request.clone())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(first, replay);

    let mut changed = request.clone();
    if let Some(t) = changed.coupon_template.as_mut() {
        t.total_stock = 5;
    }
    let err = client
        .create_coupon_template(changed)
        .await
        .expect_err("reused id");
    assert_error(&err, Code::InvalidArgument, "REQUEST_ID_REUSED");

    // The same request id in another tenant is another request.
    let mut other_tenant = request;
    other_tenant.tenant_id = "globex".into();
    let other = client
        .create_coupon_template(other_tenant)
        .await
        .expect("other tenant")
        .into_inner();
    assert_ne!(
        other.coupon_template.map(|t| t.id),
        first.coupon_template.map(|t| t.id)
    );
}

async fn concurrent_duplicate_creates_make_one_template(app: &TestApp) {
    let request = create_request("acme", template());
    let calls = (0..8).map(|_| {
        let mut client = app.templates();
        let request = request.clone();
        tokio::spawn(async move { client.create_coupon_template(request).await })
    });
    let mut ids = HashSet::new();
    for call in calls {
        let response = call.await.expect("task").expect("every duplicate succeeds");
        ids.insert(response.into_inner().coupon_template.expect("template").id);
    }
    assert_eq!(ids.len(), 1, "all duplicates return the same template");
    let listed = app
        .templates()
        .list_coupon_templates(pb::ListCouponTemplatesRequest {
            tenant_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.coupon_templates.len(), 1);
}

async fn bad_templates_are_rejected_with_every_violation(app: &TestApp) {
    let mut client = app.templates();
    let now = now_seconds();
    let cases: Vec<(pb::CreateCouponTemplateRequest, Vec<&str>)> = vec![
        (
            pb::CreateCouponTemplateRequest {
                tenant_id: String::new(),
                request_id: String::new(),
                coupon_template: None,
            },
            vec!["tenant_id", "request_id", "coupon_template"],
        ),
        (
            create_request(
                "acme",
                pb::CouponTemplate {
                    distribution_start_time: at(now + DAY),
                    distribution_end_time: at(now),
                    ..template()
                },
            ),
            vec!["coupon_template.distribution_end_time"],
        ),
        (
            create_request(
                "acme",
                pb::CouponTemplate {
                    discount: Some(coupon_template::Discount::PercentOff(
                        pb::PercentOffDiscount {
                            basis_points: 10_001,
                            max_discount_amount: Some(-1),
                            ..Default::default()
                        },
                    )),
                    ..template()
                },
            ),
            vec![
                "coupon_template.percent_off.basis_points",
                "coupon_template.percent_off.max_discount_amount",
            ],
        ),
        (
            create_request(
                "acme",
                pb::CouponTemplate {
                    discount: Some(coupon_template::Discount::FixedAmount(
                        pb::FixedAmountDiscount {
                            amount: 0,
                            ..Default::default()
                        },
                    )),
                    currency: "euro".into(),
                    ..template()
                },
            ),
            vec![
                "coupon_template.fixed_amount.amount",
                "coupon_template.currency",
            ],
        ),
        (
            create_request(
                "acme",
                pb::CouponTemplate {
                    total_stock: 0,
                    per_member_limit: 0,
                    validity: None,
                    name: "n".repeat(129),
                    description: "d".repeat(2001),
                    ..template()
                },
            ),
            vec![
                "coupon_template.total_stock",
                "coupon_template.per_member_limit",
                "coupon_template.validity",
                "coupon_template.name",
                "coupon_template.description",
            ],
        ),
        (
            create_request(
                "acme",
                pb::CouponTemplate {
                    validity: Some(coupon_template::Validity::FixedWindow(
                        pb::FixedValidityWindow {
                            valid_from: at(now + 2 * DAY),
                            valid_until: at(now + DAY),
                        },
                    )),
                    discount: None,
                    min_spend_amount: -1,
                    ..template()
                },
            ),
            vec![
                "coupon_template.fixed_window.valid_until",
                "coupon_template.discount",
                "coupon_template.min_spend_amount",
            ],
        ),
        (
            pb::CreateCouponTemplateRequest {
                tenant_id: "bad tenant!".into(),
                request_id: "r".repeat(129),
                coupon_template: Some(template()),
            },
            vec!["tenant_id", "request_id"],
        ),
    ];
    for (request, fields) in cases {
        let err = client
            .create_coupon_template(request)
            .await
            .expect_err("rejected");
        assert_invalid(&err, &fields);
    }
    let listed = client
        .list_coupon_templates(pb::ListCouponTemplatesRequest {
            tenant_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.coupon_templates.is_empty(), "nothing was written");
}

async fn other_tenants_cannot_see_or_change_a_template(app: &TestApp) {
    let created = create(app, "acme", template()).await;
    let mut client = app.templates();
    assert_error(
        &get(app, "globex", &created.id).await.expect_err("hidden"),
        Code::NotFound,
        "TEMPLATE_NOT_FOUND",
    );
    let mut foreign = created.clone();
    foreign.name = "hijacked".into();
    let err = client
        .update_coupon_template(update_request("globex", foreign, &["name"]))
        .await
        .expect_err("not found");
    assert_error(&err, Code::NotFound, "TEMPLATE_NOT_FOUND");
    let err = client
        .add_coupon_stock(pb::AddCouponStockRequest {
            tenant_id: "globex".into(),
            template_id: created.id.clone(),
            request_id: unique("stock"),
            amount: 5,
        })
        .await
        .expect_err("not found");
    assert_error(&err, Code::NotFound, "TEMPLATE_NOT_FOUND");
    let listed = client
        .list_coupon_templates(pb::ListCouponTemplatesRequest {
            tenant_id: "globex".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.coupon_templates.is_empty());
    assert_eq!(
        get(app, "acme", &created.id).await.expect("unchanged"),
        created
    );
    let err = get(app, "acme", "not-a-uuid").await.expect_err("bad id");
    assert_invalid(&err, &["template_id"]);
}

async fn updates_check_the_version_and_the_rules(app: &TestApp) {
    let created = create(app, "acme", template()).await;
    let mut client = app.templates();

    let mut change = created.clone();
    change.name = "Summer 15%".into();
    change.discount = Some(coupon_template::Discount::PercentOff(
        pb::PercentOffDiscount {
            basis_points: 1500,
            max_discount_amount: None,
            ..Default::default()
        },
    ));
    change.total_stock = 999_999; // not in the mask: ignored
    let updated = client
        .update_coupon_template(update_request(
            "acme",
            change.clone(),
            &["name", "percent_off"],
        ))
        .await
        .expect("update")
        .into_inner()
        .coupon_template
        .expect("template");
    assert_eq!(updated.name, "Summer 15%");
    assert_eq!(updated.discount, change.discount);
    assert_eq!(updated.total_stock, 100);
    assert_eq!(updated.description, created.description);
    assert_eq!(updated.version, 2);
    assert_eq!(
        get(app, "acme", &created.id).await.expect("get"),
        updated,
        "reads see the update at once"
    );

    // The old version is stale now.
    let err = client
        .update_coupon_template(update_request("acme", change, &["name"]))
        .await
        .expect_err("stale");
    assert_error(&err, Code::Aborted, "VERSION_MISMATCH");
    let info = tonic_types::StatusExt::get_details_error_info(&err).expect("info");
    assert_eq!(
        info.metadata.get("current_version").map(String::as_str),
        Some("2")
    );

    // The merged template must still be valid.
    let mut backwards = updated.clone();
    backwards.distribution_end_time = at(now_seconds() - 365 * DAY);
    let err = client
        .update_coupon_template(update_request(
            "acme",
            backwards,
            &["distribution_end_time"],
        ))
        .await
        .expect_err("invalid");
    assert_invalid(&err, &["coupon_template.distribution_end_time"]);

    for (paths, expected) in [
        (vec![], vec!["update_mask"]),
        (vec!["total_stock"], vec!["update_mask"]),
        (vec!["version", "bogus"], vec!["update_mask", "update_mask"]),
    ] {
        let err = client
            .update_coupon_template(update_request("acme", updated.clone(), &paths))
            .await
            .expect_err("bad mask");
        assert_invalid(&err, &expected);
    }
    let mut no_version = updated.clone();
    no_version.version = 0;
    let err = client
        .update_coupon_template(update_request("acme", no_version, &["name"]))
        .await
        .expect_err("etag required");
    assert_invalid(&err, &["coupon_template.version"]);
    assert_eq!(
        get(app, "acme", &created.id).await.expect("get"),
        updated,
        "refusals change nothing"
    );
}

async fn update_replays_return_the_first_response(app: &TestApp) {
    let created = create(app, "acme", template()).await;
    let mut client = app.templates();
    let mut change = created.clone();
    change.per_member_limit = 5;
    let request = update_request("acme", change, &["per_member_limit"]);
    let first = client
        .update_coupon_template(request.clone())
        .await
        .expect("first")
        .into_inner();
    // A later change does not alter the replayed first result, and the replay is not stale.
    let disable = pb::SetCouponTemplateEnabledRequest {
        tenant_id: "acme".into(),
        template_id: created.id.clone(),
        request_id: unique("disable"),
        enabled: false,
        version: None,
    };
    client
        .set_coupon_template_enabled(disable)
        .await
        .expect("disable");
    let replay = client
        .update_coupon_template(request)
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(first, replay);
    assert_eq!(get(app, "acme", &created.id).await.expect("get").version, 3);
}

async fn enabling_and_disabling(app: &TestApp) {
    let created = create(app, "acme", template()).await;
    let mut client = app.templates();
    let set = |enabled: bool, version: Option<i64>| pb::SetCouponTemplateEnabledRequest {
        tenant_id: "acme".into(),
        template_id: created.id.clone(),
        request_id: unique("enable"),
        enabled,
        version,
    };
    let disabled = client
        .set_coupon_template_enabled(set(false, Some(1)))
        .await
        .expect("disable")
        .into_inner()
        .coupon_template
        .expect("template");
    assert!(!disabled.enabled);
    assert_eq!(disabled.version, 2);
    let err = client
        .set_coupon_template_enabled(set(true, Some(1)))
        .await
        .expect_err("stale");
    assert_error(&err, Code::Aborted, "VERSION_MISMATCH");
    let err = client
        .set_coupon_template_enabled(set(true, Some(-3)))
        .await
        .expect_err("bad etag");
    assert_invalid(&err, &["version"]);
    let enabled = client
        .set_coupon_template_enabled(set(true, None))
        .await
        .expect("enable")
        .into_inner()
        .coupon_template
        .expect("template");
    assert!(enabled.enabled);
}

async fn stock_can_grow_and_shrink_but_never_below_zero(app: &TestApp) {
    let created = create(app, "acme", template()).await;
    let mut client = app.templates();
    let add = |amount: i64| pb::AddCouponStockRequest {
        tenant_id: "acme".into(),
        template_id: created.id.clone(),
        request_id: unique("stock"),
        amount,
    };
    let grown = client
        .add_coupon_stock(add(50))
        .await
        .expect("add")
        .into_inner()
        .coupon_template
        .expect("t");
    assert_eq!((grown.total_stock, grown.remaining_stock), (150, 150));
    let shrunk = client
        .add_coupon_stock(add(-120))
        .await
        .expect("remove")
        .into_inner()
        .coupon_template
        .expect("t");
    assert_eq!((shrunk.total_stock, shrunk.remaining_stock), (30, 30));
    let err = client
        .add_coupon_stock(add(-31))
        .await
        .expect_err("below zero");
    assert_error(&err, Code::FailedPrecondition, "STOCK_BELOW_CLAIMED");
    let err = client.add_coupon_stock(add(0)).await.expect_err("zero");
    assert_invalid(&err, &["amount"]);
    let err = client
        .add_coupon_stock(add(i64::MAX))
        .await
        .expect_err("huge");
    assert_invalid(&err, &["amount"]);
    let err = client
        .add_coupon_stock(add(1_000_000_000))
        .await
        .expect_err("over the cap");
    assert_invalid(&err, &["amount"]);
    let current = get(app, "acme", &created.id).await.expect("get");
    assert_eq!(
        (
            current.total_stock,
            current.remaining_stock,
            current.version
        ),
        (30, 30, 3)
    );
}

async fn archived_templates_stay_readable_but_frozen(app: &TestApp) {
    let created = create(app, "acme", template()).await;
    let mut client = app.templates();
    let delete = pb::DeleteCouponTemplateRequest {
        tenant_id: "acme".into(),
        template_id: created.id.clone(),
        request_id: unique("delete"),
        version: Some(1),
    };
    let archived = client
        .delete_coupon_template(delete.clone())
        .await
        .expect("delete")
        .into_inner();
    let archived = archived.coupon_template.expect("template");
    assert!(archived.archived && !archived.enabled && archived.archive_time.is_some());
    let replay = client
        .delete_coupon_template(delete)
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay.coupon_template.as_ref(), Some(&archived));
    assert_eq!(
        get(app, "acme", &created.id).await.expect("still readable"),
        archived
    );

    let err = client
        .update_coupon_template(update_request("acme", archived.clone(), &["name"]))
        .await
        .expect_err("frozen");
    assert_error(&err, Code::FailedPrecondition, "TEMPLATE_ARCHIVED");
    let err = client
        .add_coupon_stock(pb::AddCouponStockRequest {
            tenant_id: "acme".into(),
            template_id: created.id.clone(),
            request_id: unique("stock"),
            amount: 1,
        })
        .await
        .expect_err("frozen");
    assert_error(&err, Code::FailedPrecondition, "TEMPLATE_ARCHIVED");

    let list = |show_archived| pb::ListCouponTemplatesRequest {
        tenant_id: "acme".into(),
        show_archived,
        ..Default::default()
    };
    let hidden = client
        .list_coupon_templates(list(false))
        .await
        .expect("list")
        .into_inner();
    assert!(hidden.coupon_templates.is_empty());
    let shown = client
        .list_coupon_templates(list(true))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(shown.coupon_templates, vec![archived]);
}

async fn list_all(app: &TestApp, mut request: pb::ListCouponTemplatesRequest) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    loop {
        let page = app
            .templates()
            .list_coupon_templates(request.clone())
            .await
            .expect("page")
            .into_inner();
        pages.push(page.coupon_templates.into_iter().map(|t| t.id).collect());
        if page.next_page_token.is_empty() {
            return pages;
        }
        request.page_token = page.next_page_token;
    }
}

async fn pagination_is_stable_under_inserts(app: &TestApp) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create(app, "acme", template()).await.id);
    }
    let pages = list_all(
        app,
        pb::ListCouponTemplatesRequest {
            tenant_id: "acme".into(),
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(pages.concat(), ids, "oldest first, each once");

    // Insert while paginating: the pages already promised neither repeat nor skip.
    let mut client = app.templates();
    let first = client
        .list_coupon_templates(pb::ListCouponTemplatesRequest {
            tenant_id: "acme".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("first page")
        .into_inner();
    let newcomer = create(app, "acme", template()).await.id;
    let rest = list_all(
        app,
        pb::ListCouponTemplatesRequest {
            tenant_id: "acme".into(),
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        },
    )
    .await
    .concat();
    let seen: Vec<String> = first
        .coupon_templates
        .into_iter()
        .map(|t| t.id)
        .chain(rest)
        .collect();
    let mut expected = ids.clone();
    expected.push(newcomer);
    assert_eq!(seen, expected);

    // A token only fits the query it came from.
    let err = client
        .list_coupon_templates(pb::ListCouponTemplatesRequest {
            tenant_id: "acme".into(),
            page_size: 2,
            enabled: Some(true),
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .expect_err("token of another query");
    assert_invalid(&err, &["page_token"]);
    let err = client
        .list_coupon_templates(pb::ListCouponTemplatesRequest {
            tenant_id: "acme".into(),
            page_size: 101,
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad page");
    assert_invalid(&err, &["page_size", "page_token"]);
}

async fn list_filters_by_enabled_type_and_claimability(app: &TestApp) {
    let now = now_seconds();
    let percent = create(app, "acme", template()).await;
    let fixed = create(
        app,
        "acme",
        pb::CouponTemplate {
            discount: Some(coupon_template::Discount::FixedAmount(
                pb::FixedAmountDiscount {
                    amount: 300,
                    ..Default::default()
                },
            )),
            ..template()
        },
    )
    .await;
    let future = create(
        app,
        "acme",
        pb::CouponTemplate {
            distribution_start_time: at(now + 10 * DAY),
            distribution_end_time: at(now + 20 * DAY),
            ..template()
        },
    )
    .await;
    let disabled = create(
        app,
        "acme",
        pb::CouponTemplate {
            enabled: false,
            ..template()
        },
    )
    .await;
    let ids = |request: pb::ListCouponTemplatesRequest| async move {
        list_all(app, request).await.concat()
    };
    let base = pb::ListCouponTemplatesRequest {
        tenant_id: "acme".into(),
        ..Default::default()
    };
    assert_eq!(
        ids(pb::ListCouponTemplatesRequest {
            enabled: Some(false),
            ..base.clone()
        })
        .await,
        [disabled.id.as_str()]
    );
    assert_eq!(
        ids(pb::ListCouponTemplatesRequest {
            discount_type: pb::DiscountType::FixedAmount as i32,
            ..base.clone()
        })
        .await,
        [fixed.id.as_str()]
    );
    assert_eq!(
        ids(pb::ListCouponTemplatesRequest {
            claimable_at: at(now),
            ..base.clone()
        })
        .await,
        [percent.id.clone(), fixed.id.clone()]
    );
    assert_eq!(
        ids(pb::ListCouponTemplatesRequest {
            claimable_at: at(now + 15 * DAY),
            ..base.clone()
        })
        .await,
        [percent.id.clone(), fixed.id.clone(), future.id]
    );
    assert!(
        ids(pb::ListCouponTemplatesRequest {
            claimable_at: at(now + 400 * DAY),
            ..base.clone()
        })
        .await
        .is_empty()
    );
    let err = app
        .templates()
        .list_coupon_templates(pb::ListCouponTemplatesRequest {
            discount_type: 42,
            ..base
        })
        .await
        .expect_err("unknown type");
    assert_invalid(&err, &["discount_type"]);
}

/// A cached copy no reader can decode (another build's format, or damaged in Redis) is not
/// the caller's problem: the template is read from the database and the copy replaced.
async fn a_damaged_cached_template_is_read_from_the_database(app: &TestApp) {
    let created = crate::fixtures::create_template(app, "acme", template()).await;
    let key = format!("tpl:acme:{}", created.id);
    let damaged = marketing_infra::cache::Versioned {
        version: i64::MAX - 1,
        value: vec![0xff; 16],
    };
    app.state
        .shared()
        .cache
        .put(&key, damaged, std::time::Duration::from_secs(60))
        .await
        .expect("damage the copy");
    let mut templates = app.templates();
    for _ in 0..2 {
        let shown = templates
            .get_coupon_template(pb::GetCouponTemplateRequest {
                tenant_id: "acme".into(),
                template_id: created.id.clone(),
            })
            .await
            .expect("served despite the copy")
            .into_inner()
            .coupon_template
            .expect("template");
        assert_eq!(shown, created);
    }
    let replaced = app
        .state
        .shared()
        .cache
        .get(&key)
        .await
        .expect("cache")
        .expect("a copy");
    assert_ne!(
        replaced.value,
        vec![0xff; 16],
        "the damaged copy was replaced"
    );
}
