//! `AdminService`: one replica's caches, the locks held, evictions and the sweeper's status.
//! Admin clients for all tenants only (declared in the per-RPC table, checked before a
//! handler runs).

use std::time::Duration;

use marketing_domain::{MemberId, TemplateId, TenantId, error::Violations, points_rule};
use marketing_infra::cache::CacheStatsSnapshot;
use marketing_proto::v1::{self as pb, admin_service_server::AdminService as AdminRpcs};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::parse::{Edge, NO_SERVER_LIMIT, finish, tenanted};
use crate::{
    app::admin::{AdminService, CacheView, EvictTarget, Replica},
    wire::{convert::timestamp, status::to_status},
};

/// Locks one page lists at most, and when the request names no size.
const MAX_LOCKS_PAGE: i32 = 1_000;
const DEFAULT_LOCKS_PAGE: i32 = 100;

pub struct Admin {
    admin: AdminService,
}

impl Admin {
    pub fn new(admin: AdminService) -> Self {
        Self { admin }
    }

    fn replica(&self) -> Option<pb::Replica> {
        let Replica { id, started_at } = self.admin.replica();
        Some(pb::Replica {
            id: id.clone(),
            start_time: Some(timestamp(*started_at)),
        })
    }
}

tenanted!(pb::EvictCacheRequest);

fn duration(value: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(value.subsec_nanos()).unwrap_or(0),
    })
}

fn counts(stats: CacheStatsSnapshot) -> pb::CacheCounts {
    let reads = stats.local_hits + stats.remote_hits + stats.misses;
    pb::CacheCounts {
        local_hits: stats.local_hits,
        shared_hits: stats.remote_hits,
        misses: stats.misses,
        hit_rate: if reads == 0 {
            0.0
        } else {
            (stats.local_hits + stats.remote_hits) as f64 / reads as f64
        },
        evictions: stats.evictions,
        remote_evictions: stats.remote_evictions,
    }
}

fn cache_to_proto(view: CacheView) -> pb::CacheStats {
    pb::CacheStats {
        name: view.name.to_owned(),
        kind: view.kind.to_owned(),
        entries: view.entries,
        since_start: Some(counts(view.since_start)),
        last_minute: Some(counts(view.last_minute)),
        window: duration(view.window),
    }
}

/// The request's eviction target, every field checked.
fn evict_target(edge: &Edge<'_, pb::EvictCacheRequest>) -> Result<(TenantId, EvictTarget), Status> {
    use pb::evict_cache_request::Target;
    let request = edge.request;
    let mut violations = Violations::new();
    let tenant = violations.check(TenantId::parse("tenant_id", &request.tenant_id));
    let target = match &request.target {
        Some(Target::TemplateId(id)) => violations
            .check(TemplateId::parse("template_id", id))
            .map(EvictTarget::Template),
        Some(Target::PointsRuleEvent(event)) => violations
            .check(points_rule::parse_event_type("points_rule_event", event))
            .map(EvictTarget::Rule),
        Some(Target::MemberId(member)) => violations
            .check(MemberId::parse("member_id", member))
            .map(EvictTarget::CouponList),
        Some(Target::WholeTenant(true)) => Some(EvictTarget::Tenant),
        Some(Target::WholeTenant(false)) => {
            violations.push("whole_tenant", "must be true when it is the target");
            None
        }
        None => {
            violations.push(
                "target",
                "is required: template_id, points_rule_event, member_id or whole_tenant",
            );
            None
        }
    };
    finish(violations, || Some((tenant?, target?)))
}

#[tonic::async_trait]
impl AdminRpcs for Admin {
    #[instrument(name = "AdminService.GetCacheStats", skip_all)]
    async fn get_cache_stats(
        &self,
        _request: Request<pb::GetCacheStatsRequest>,
    ) -> Result<Response<pb::GetCacheStatsResponse>, Status> {
        Ok(Response::new(pb::GetCacheStatsResponse {
            replica: self.replica(),
            caches: self
                .admin
                .cache_stats()
                .into_iter()
                .map(cache_to_proto)
                .collect(),
        }))
    }

    #[instrument(name = "AdminService.ListActiveLocks", skip_all)]
    async fn list_active_locks(
        &self,
        request: Request<pb::ListActiveLocksRequest>,
    ) -> Result<Response<pb::ListActiveLocksResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::new();
        let size = match request.page_size {
            0 => Some(DEFAULT_LOCKS_PAGE),
            size if (1..=MAX_LOCKS_PAGE).contains(&size) => Some(size),
            _ => {
                violations.push("page_size", format!("must be 0 to {MAX_LOCKS_PAGE}"));
                None
            }
        };
        let cursor = if request.page_token.is_empty() {
            Some(0)
        } else {
            match request.page_token.parse::<u64>() {
                Ok(cursor) if cursor > 0 => Some(cursor),
                _ => {
                    violations.push("page_token", "is not a token this service gave");
                    None
                }
            }
        };
        let (size, cursor) = finish(violations, || Some((size?, cursor?)))?;
        let page = self
            .admin
            .active_locks(cursor, size as usize)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListActiveLocksResponse {
            replica: self.replica(),
            locks: page
                .locks
                .into_iter()
                .map(|held| pb::ActiveLock {
                    key: held.key,
                    holder_replica: held.holder,
                    fence: held.fence.unwrap_or_default(),
                    time_left: duration(held.time_left),
                })
                .collect(),
            next_page_token: match page.next {
                0 => String::new(),
                next => next.to_string(),
            },
        }))
    }

    #[instrument(name = "AdminService.EvictCache", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn evict_cache(
        &self,
        request: Request<pb::EvictCacheRequest>,
    ) -> Result<Response<pb::EvictCacheResponse>, Status> {
        let edge = Edge::new(&request, NO_SERVER_LIMIT, self.admin.shared())?;
        let (tenant, target) = evict_target(&edge)?;
        let dropped = self
            .admin
            .evict(&tenant, &target)
            .await
            .map_err(to_status)?;
        tracing::info!(tenant = %tenant, ?target, local = dropped.local, shared = dropped.shared, actor = ?edge.actor(), "cache evicted by an operator");
        Ok(Response::new(pb::EvictCacheResponse {
            replica: self.replica(),
            local_copies_dropped: dropped.local,
            shared_entries_removed: dropped.shared,
        }))
    }

    #[instrument(name = "AdminService.GetSweeperStatus", skip_all)]
    async fn get_sweeper_status(
        &self,
        _request: Request<pb::GetSweeperStatusRequest>,
    ) -> Result<Response<pb::GetSweeperStatusResponse>, Status> {
        let now = self.admin.shared().clock.now();
        let started = self.admin.replica().started_at;
        Ok(Response::new(pb::GetSweeperStatusResponse {
            replica: self.replica(),
            parts: self
                .admin
                .sweeper
                .parts()
                .into_iter()
                .map(|part| pb::SweeperPart {
                    name: part.name.to_owned(),
                    last_run_time: part.last_run.map(timestamp),
                    last_success_time: part.last_success.map(timestamp),
                    last_items: part.last_items,
                    total_items: part.total_items,
                    runs: part.runs,
                    failures: part.failures,
                    lag: duration(part.lag(now, started)),
                    last_error: part.last_error.unwrap_or_default(),
                })
                .collect(),
        }))
    }
}
