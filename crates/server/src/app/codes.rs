//! Redemption codes, the template side: shared codes created, unique codes generated and
//! listed. (Claims with a code are in `claims`: they join the template's claim batch.)
//!
//! A generation is accepted in one unit (its request id, the bound on the template's codes,
//! its row), then made in chunks, each chunk one unit that adds its codes, counts them on the
//! template and moves the generation's progress, so a generation a replica leaves half done
//! is finished by another from where it stood: the generation's lease passes, and the
//! sweeper or a retry of the request takes it over. The lease is also the fence: a chunk
//! commits only while its replica still holds the lease it started with.

use std::time::Duration;

use marketing_domain::{
    MarketingError, TemplateId, TenantId, UnixMicros,
    coupon_code::{
        CodeKind, CodeShape, CodeText, MAX_SHARED_CODES_PER_TEMPLATE, MAX_UNIQUE_CODES_PER_TEMPLATE,
    },
    coupon_template::CouponTemplate,
    error::Refusal,
};
use marketing_storage::{
    codes::{CodeReads, CodeState, CodeStore, Generation, StoredCode},
    idempotency::IdempotencyKey,
    templates::{TemplateReads, TemplateStore},
    unit::UnitOfWork,
};
use rand::RngCore;
use tokio::time::Instant;
use uuid::Uuid;

use super::{Answer, Begun, TemplateService};
use crate::wire::events::{TemplateChanged, template_event};

/// Codes one chunk of a generation adds (one unit: a bounded transaction).
const CHUNK: i32 = 10_000;
/// How often in a row a chunk that failed for a passing reason is made again before the
/// generation is left to the lease (and another replica, or a retry of its request).
const CHUNK_ATTEMPTS: u32 = 5;
/// How long a replica holds a generation without moving it on; past it another takes over.
const GENERATION_LEASE: Duration = Duration::from_secs(30);
/// How often a caller waiting for a generation looks at its progress.
const POLL: Duration = Duration::from_millis(100);

pub struct CreateSharedCode {
    pub key: IdempotencyKey,
    pub template_id: TemplateId,
    pub code: CodeText,
    pub actor: Option<String>,
}

pub struct GenerateCodes {
    pub key: IdempotencyKey,
    pub template_id: TemplateId,
    pub count: i32,
    pub shape: CodeShape,
    pub actor: Option<String>,
    /// When the caller stops waiting (the generation goes on).
    pub deadline: Instant,
}

pub struct ListCodes {
    pub tenant_id: TenantId,
    pub template_id: TemplateId,
    pub state: Option<CodeState>,
    pub after: Option<String>,
    pub page_size: u64,
}

/// A finished generation: how many codes it made, and the template after it.
pub struct Generated {
    pub template_id: TemplateId,
    pub count: i32,
    pub template: CouponTemplate,
}

impl TemplateService {
    pub async fn create_shared_code(
        &self,
        cmd: CreateSharedCode,
    ) -> Result<Answer<StoredCode>, MarketingError> {
        let mut unit = begin_or_replay!(self.shared, &cmd.key);
        let tenant = &cmd.key.tenant_id;
        let template = open_template(&unit, tenant, cmd.template_id).await?;
        if template.codes.shared >= MAX_SHARED_CODES_PER_TEMPLATE {
            return Err(MarketingError::Refused(Refusal::TooManyCodes {
                kind: "shared",
                limit: MAX_SHARED_CODES_PER_TEMPLATE,
                current: template.codes.shared,
            }));
        }
        let now = self.shared.clock.now();
        if !unit
            .codes()
            .insert_shared(tenant, template.id, &cmd.code, now, cmd.actor.as_deref())
            .await?
        {
            return Err(MarketingError::Refused(Refusal::CodeExists));
        }
        let template = unit
            .templates()
            .add_codes(tenant, template.id, 0, 1)
            .await?;
        unit.record(template_event(
            TemplateChanged::CodesAdded(1, CodeKind::Shared),
            &template,
            &cmd.key.request_id,
        ));
        let code = StoredCode {
            code: cmd.code,
            template_id: template.id,
            kind: CodeKind::Shared,
            claim: None,
            created_at: now,
            actor: cmd.actor,
        };
        self.shared.commit_idempotent(unit, &cmd.key, &code).await?;
        self.cache_template(&template).await;
        tracing::info!(template_id = %template.id, "shared coupon code created");
        Ok(Answer::Fresh(code))
    }

    /// Accepts a generation (or finds the one its request id accepted before), makes sure it
    /// runs, and waits for it until the caller's deadline.
    pub async fn generate_codes(&self, cmd: GenerateCodes) -> Result<Generated, MarketingError> {
        let tenant = cmd.key.tenant_id.clone();
        let id = match self.shared.begin_idempotent::<()>(&cmd.key).await? {
            Begun::Replay(first) => Uuid::from_slice(first.bytes())
                .map_err(|_| MarketingError::internal("a generation's record is not its id"))?,
            Begun::Fresh(unit) => {
                let id = self.accept_generation(unit, &cmd).await?;
                self.spawn_generation(tenant.clone(), id);
                id
            }
        };
        loop {
            let generation = self
                .shared
                .db
                .codes()
                .generation(&tenant, id)
                .await?
                .ok_or_else(|| MarketingError::internal("an accepted generation vanished"))?;
            if generation.finished_at.is_some() {
                let template = self
                    .shared
                    .db
                    .templates()
                    .get(&tenant, generation.template_id)
                    .await?;
                return Ok(Generated {
                    template_id: generation.template_id,
                    count: generation.count,
                    template,
                });
            }
            // A generation whose replica stopped is taken over.
            if generation.leased_until < self.shared.clock.now() {
                self.resume_generation(&tenant, id).await?;
            }
            if Instant::now() + POLL > cmd.deadline {
                return Err(MarketingError::DeadlineExceeded);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The unit that accepts a generation: the bound on the template's codes checked under
    /// its row's lock, the generation's row, the request's record (its id).
    async fn accept_generation(
        &self,
        unit: UnitOfWork,
        cmd: &GenerateCodes,
    ) -> Result<Uuid, MarketingError> {
        let tenant = &cmd.key.tenant_id;
        let template = open_template(&unit, tenant, cmd.template_id).await?;
        let current =
            template.codes.unique + unit.codes().pending_generated(tenant, template.id).await?;
        if current + i64::from(cmd.count) > MAX_UNIQUE_CODES_PER_TEMPLATE {
            return Err(MarketingError::Refused(Refusal::TooManyCodes {
                kind: "unique",
                limit: MAX_UNIQUE_CODES_PER_TEMPLATE,
                current,
            }));
        }
        let now = self.shared.clock.now();
        let generation = Generation {
            id: Uuid::now_v7(),
            tenant_id: tenant.clone(),
            template_id: template.id,
            count: cmd.count,
            shape: cmd.shape.clone(),
            generated: 0,
            leased_until: lease_from(now),
            finished_at: None,
            created_at: now,
            actor: cmd.actor.clone(),
            request_id: cmd.key.request_id.clone(),
        };
        unit.codes().insert_generation(&generation).await?;
        let outcome = marketing_storage::idempotency::Outcome {
            status_code: 0,
            response: generation.id.as_bytes().to_vec(),
        };
        unit.commit_answered(&cmd.key, outcome).await?;
        tracing::info!(template_id = %template.id, count = cmd.count, "coupon code generation accepted");
        Ok(generation.id)
    }

    /// Takes over generation `id` when no replica holds it, and runs it.
    pub async fn resume_generation(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<(), MarketingError> {
        let now = self.shared.clock.now();
        let unit = UnitOfWork::begin(&self.shared.db).await?;
        let taken = unit
            .codes()
            .lease_generation(tenant, id, now, lease_from(now))
            .await?;
        unit.commit().await?;
        if taken.is_some() {
            tracing::info!(generation = %id, "taking over a coupon code generation another replica left");
            self.spawn_generation(tenant.clone(), id);
        }
        Ok(())
    }

    /// Finishes one generation that no replica holds, if any (the sweeper's).
    pub async fn resume_abandoned_generation(&self) -> Result<bool, MarketingError> {
        let now = self.shared.clock.now();
        match self.shared.db.codes().abandoned_generation(now).await? {
            Some(generation) => {
                self.resume_generation(&generation.tenant_id, generation.id)
                    .await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Runs generation `id` (held by this replica) to its end in a task of its own: a caller
    /// that stops waiting does not stop it.
    fn spawn_generation(&self, tenant: TenantId, id: Uuid) {
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(err) = service.run_generation(&tenant, id).await {
                tracing::warn!(generation = %id, error = %err, "coupon code generation stopped; another replica or a retry takes it over when its lease passes");
            }
        });
    }

    async fn run_generation(&self, tenant: &TenantId, id: Uuid) -> Result<(), MarketingError> {
        let codes = self.shared.db.codes();
        let Some(mut generation) = codes.generation(tenant, id).await? else {
            return Ok(());
        };
        let mut held = generation.leased_until;
        let mut failures = 0;
        while generation.generated < generation.count {
            match self.generate_chunk(tenant, id, &generation, held).await {
                Ok((added, lease)) => {
                    generation.generated += added;
                    held = lease;
                    failures = 0;
                }
                // A chunk that failed for a passing reason (a busy pool, a lost connection) is
                // made again at once while this replica holds the lease, rather than left for
                // the lease to pass; the fence still refuses it once another replica took over.
                Err(err) if err.is_transient() && failures < CHUNK_ATTEMPTS => {
                    failures += 1;
                    tracing::debug!(generation = %id, error = %err, "a chunk of codes failed; making it again");
                    tokio::time::sleep(Duration::from_millis(100 * failures as u64)).await;
                }
                Err(err) => return Err(err),
            }
        }
        tracing::info!(generation = %id, template_id = %generation.template_id, count = generation.count, "coupon codes generated");
        Ok(())
    }

    /// One chunk of a generation, in one unit fenced by the lease `held`: its codes, the
    /// template's count and the generation's progress. How many codes it added, and the
    /// lease it renewed.
    async fn generate_chunk(
        &self,
        tenant: &TenantId,
        id: Uuid,
        generation: &Generation,
        held: UnixMicros,
    ) -> Result<(i32, UnixMicros), MarketingError> {
        let wanted = (generation.count - generation.generated).min(CHUNK);
        let batch = random_codes(&generation.shape, wanted);
        let now = self.shared.clock.now();
        let mut unit = UnitOfWork::begin(&self.shared.db).await?;
        let added = unit.codes().insert_unique(generation, batch, now).await?;
        let added = i32::try_from(added).unwrap_or(i32::MAX);
        let template = unit
            .templates()
            .add_codes(tenant, generation.template_id, i64::from(added), 0)
            .await?;
        let lease = lease_from(now);
        unit.codes()
            .advance_generation(id, added, held, now, lease)
            .await?;
        let finished = generation.generated + added >= generation.count;
        if finished {
            unit.record(template_event(
                TemplateChanged::CodesAdded(generation.count, CodeKind::Unique),
                &template,
                &generation.request_id,
            ));
        }
        unit.commit().await?;
        self.cache_template(&template).await;
        Ok((added, lease))
    }

    /// A page of a template's codes, and the last code of it when another page may follow.
    pub async fn list_codes(
        &self,
        query: ListCodes,
    ) -> Result<(Vec<StoredCode>, Option<String>), MarketingError> {
        // The template is the caller's (another tenant's is not found).
        self.shared
            .db
            .templates()
            .get(&query.tenant_id, query.template_id)
            .await?;
        let mut page = self
            .shared
            .db
            .codes()
            .list(
                &query.tenant_id,
                query.template_id,
                query.state,
                query.after.as_deref(),
                query.page_size + 1,
            )
            .await?;
        let has_more = page.len() as u64 > query.page_size;
        page.truncate(query.page_size as usize);
        let next = has_more
            .then(|| page.last().map(|code| code.code.as_str().to_owned()))
            .flatten();
        Ok((page, next))
    }
}

/// The template, locked for the unit, when codes may be added to it (not archived).
async fn open_template(
    unit: &UnitOfWork,
    tenant: &TenantId,
    id: TemplateId,
) -> Result<CouponTemplate, MarketingError> {
    let template = unit.templates().get_for_update(tenant, id).await?;
    if template.archived_at.is_some() {
        return Err(MarketingError::Refused(Refusal::TemplateArchived));
    }
    Ok(template)
}

fn lease_from(now: UnixMicros) -> UnixMicros {
    UnixMicros(now.0 + GENERATION_LEASE.as_micros() as i64)
}

/// `count` codes of `shape`, each from the thread's CSPRNG (ChaCha, seeded by the OS).
fn random_codes(shape: &CodeShape, count: i32) -> Vec<CodeText> {
    let mut rng = rand::rng();
    let mut random = vec![0_u8; shape.random_bytes()];
    (0..count)
        .map(|_| {
            rng.fill_bytes(&mut random);
            shape.code_from(&random)
        })
        .collect()
}
