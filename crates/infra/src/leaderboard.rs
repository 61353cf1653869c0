//! Leaderboards of total points earned, per tenant. A board is either *built* (it holds every
//! member that matters, rebuilt from the database) or missing; callers rebuild a missing board
//! and fall back to the database when the backend is down.
//!
//! A built board is kept for [`BOARD_TTL_SECS`] after it was built, then rebuilt on the next
//! read. A board with no one on it is not kept at all (its next read asks the database
//! again), so reads of made-up tenants leave nothing behind.
//! In process, at most [`MAX_LOCAL_BOARDS`] boards are kept; a board pushed out is rebuilt.
//!
//! Ties go to whoever reached the score first: the Redis member name is
//! `{i64::MAX - reached_at, 20 digits}:{member}`, so among equal scores `ZREVRANGE`'s reverse
//! byte order puts the earliest first. A member's current name is kept in a hash so the old
//! entry can be removed; scores only rise, so a late, lower update never replaces a higher one.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

use async_trait::async_trait;
use deadpool_redis::redis::Script;

use crate::{InfraError, redis::RedisPool};

/// How long a built Redis board lives before it is rebuilt from the database.
pub const BOARD_TTL_SECS: u64 = 3600;
/// Most boards the in-process leaderboard keeps.
pub const MAX_LOCAL_BOARDS: usize = 10_000;

/// A member on a board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub member_id: String,
    pub total_earned: i64,
    /// When the member reached the total (µs since the epoch).
    pub reached_at: i64,
}

#[async_trait]
pub trait Leaderboard: Send + Sync + 'static {
    /// Raises each member's score (ignored when the board is missing, or when lower), in one
    /// round trip.
    async fn record(&self, tenant: &str, standings: &[Standing]) -> Result<(), InfraError>;

    /// The top `n`, best first; `None` when the board is missing (rebuild it).
    async fn top(&self, tenant: &str, n: usize) -> Result<Option<Vec<(String, i64)>>, InfraError>;

    /// Replaces the board with `standings` and marks it built; with no standings, forgets it.
    async fn rebuild(&self, tenant: &str, standings: &[Standing]) -> Result<(), InfraError>;

    /// Forgets the board, so the next read rebuilds it.
    async fn invalidate(&self, tenant: &str) -> Result<(), InfraError>;
}

fn entry_name(standing: &Standing) -> String {
    format!(
        "{:020}:{}",
        i64::MAX - standing.reached_at.max(0),
        standing.member_id
    )
}

/// KEYS: board (zset), names (hash), built marker. ARGV: member, score, name; repeated.
/// Returns how many scores rose. The board and its names expire with the marker.
const RECORD_LUA: &str = r"
local ttl = redis.call('PTTL', KEYS[3])
if ttl == -2 then return 0 end
local raised = 0
for i = 1, #ARGV, 3 do
  local member, score, name = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[2], member)
  local stale = true
  if old then
    local current = redis.call('ZSCORE', KEYS[1], old)
    if current and tonumber(current) >= tonumber(score) then stale = false
    else redis.call('ZREM', KEYS[1], old) end
  end
  if stale then
    redis.call('ZADD', KEYS[1], score, name)
    redis.call('HSET', KEYS[2], member, name)
    raised = raised + 1
  end
end
if ttl > 0 and raised > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return raised
";

/// KEYS: board, names, marker. ARGV: n. `false` when not built.
const TOP_LUA: &str = r"
if redis.call('EXISTS', KEYS[3]) == 0 then return false end
return redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
";

#[derive(Debug, Clone)]
pub struct RedisLeaderboard {
    pool: RedisPool,
    record: Arc<Script>,
    top: Arc<Script>,
}

impl RedisLeaderboard {
    pub fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            record: Arc::new(Script::new(RECORD_LUA)),
            top: Arc::new(Script::new(TOP_LUA)),
        }
    }

    /// The board's keys, one Redis Cluster hash tag for the three (one script uses them all).
    fn keys(&self, tenant: &str) -> [String; 3] {
        [
            self.pool.key(&format!("lb:{{{tenant}}}")),
            self.pool.key(&format!("lb-names:{{{tenant}}}")),
            self.pool.key(&format!("lb-built:{{{tenant}}}")),
        ]
    }
}

#[async_trait]
impl Leaderboard for RedisLeaderboard {
    async fn record(&self, tenant: &str, standings: &[Standing]) -> Result<(), InfraError> {
        if standings.is_empty() {
            return Ok(());
        }
        let [board, names, built] = self.keys(tenant);
        let mut invocation = self.record.key(board);
        invocation.key(names).key(built);
        for standing in standings {
            invocation
                .arg(&standing.member_id)
                .arg(standing.total_earned)
                .arg(entry_name(standing));
        }
        let mut conn = self.pool.connection().await?;
        let _: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(())
    }

    async fn top(&self, tenant: &str, n: usize) -> Result<Option<Vec<(String, i64)>>, InfraError> {
        let [board, names, built] = self.keys(tenant);
        let mut conn = self.pool.connection().await?;
        let rows: Option<Vec<(String, f64)>> = self
            .top
            .key(board)
            .key(names)
            .key(built)
            .arg(n)
            .invoke_async(&mut conn)
            .await?;
        Ok(rows.map(|rows| {
            rows.into_iter()
                .map(|(name, score)| {
                    let member = name
                        .split_once(':')
                        .map_or(name.as_str(), |(_, m)| m)
                        .to_owned();
                    // Scores are whole numbers below 2^53: exact in f64.
                    (member, score as i64)
                })
                .collect()
        }))
    }

    async fn rebuild(&self, tenant: &str, standings: &[Standing]) -> Result<(), InfraError> {
        let [board, names, built] = self.keys(tenant);
        let mut conn = self.pool.connection().await?;
        let mut pipe = deadpool_redis::redis::pipe();
        pipe.atomic().del(&board).del(&names);
        if standings.is_empty() {
            pipe.del(&built).query_async::<()>(&mut conn).await?;
            return Ok(());
        }
        for standing in standings {
            let name = entry_name(standing);
            pipe.zadd(&board, &name, standing.total_earned).hset(
                &names,
                &standing.member_id,
                &name,
            );
        }
        pipe.set_ex(&built, 1, BOARD_TTL_SECS)
            .expire(&board, BOARD_TTL_SECS as i64)
            .expire(&names, BOARD_TTL_SECS as i64);
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn invalidate(&self, tenant: &str) -> Result<(), InfraError> {
        let [_, _, built] = self.keys(tenant);
        let mut conn = self.pool.connection().await?;
        deadpool_redis::redis::cmd("DEL")
            .arg(built)
            .query_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Board {
    /// (score descending, reached ascending, member).
    ranking: BTreeSet<(std::cmp::Reverse<i64>, i64, String)>,
    by_member: HashMap<String, (i64, i64)>,
}

/// The in-process leaderboard of the embedded mode.
#[derive(Debug, Default)]
pub struct LocalLeaderboard {
    boards: Mutex<HashMap<String, Board>>,
}

impl LocalLeaderboard {
    pub fn new() -> Self {
        Self::default()
    }

    fn boards(&self) -> std::sync::MutexGuard<'_, HashMap<String, Board>> {
        // Each change of a board is completed under the lock or not at all.
        self.boards.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Leaderboard for LocalLeaderboard {
    async fn record(&self, tenant: &str, standings: &[Standing]) -> Result<(), InfraError> {
        let mut boards = self.boards();
        let Some(board) = boards.get_mut(tenant) else {
            return Ok(());
        };
        for standing in standings {
            if let Some(&(score, reached)) = board.by_member.get(&standing.member_id) {
                if score >= standing.total_earned {
                    continue;
                }
                board.ranking.remove(&(
                    std::cmp::Reverse(score),
                    reached,
                    standing.member_id.clone(),
                ));
            }
            board.ranking.insert((
                std::cmp::Reverse(standing.total_earned),
                standing.reached_at,
                standing.member_id.clone(),
            ));
            board.by_member.insert(
                standing.member_id.clone(),
                (standing.total_earned, standing.reached_at),
            );
        }
        Ok(())
    }

    async fn top(&self, tenant: &str, n: usize) -> Result<Option<Vec<(String, i64)>>, InfraError> {
        Ok(self.boards().get(tenant).map(|board| {
            board
                .ranking
                .iter()
                .take(n)
                .map(|(score, _, member)| (member.clone(), score.0))
                .collect()
        }))
    }

    async fn rebuild(&self, tenant: &str, standings: &[Standing]) -> Result<(), InfraError> {
        let mut board = Board::default();
        for s in standings {
            board.ranking.insert((
                std::cmp::Reverse(s.total_earned),
                s.reached_at,
                s.member_id.clone(),
            ));
            board
                .by_member
                .insert(s.member_id.clone(), (s.total_earned, s.reached_at));
        }
        let mut boards = self.boards();
        if standings.is_empty() {
            boards.remove(tenant);
            return Ok(());
        }
        if boards.len() >= MAX_LOCAL_BOARDS
            && !boards.contains_key(tenant)
            && let Some(pushed_out) = boards.keys().next().cloned()
        {
            // Any board may go: a missing board is rebuilt on its next read.
            boards.remove(&pushed_out);
        }
        boards.insert(tenant.to_owned(), board);
        Ok(())
    }

    async fn invalidate(&self, tenant: &str) -> Result<(), InfraError> {
        self.boards().remove(tenant);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_reach_sorts_higher_among_equal_scores() {
        let early = entry_name(&Standing {
            member_id: "b".into(),
            total_earned: 10,
            reached_at: 100,
        });
        let late = entry_name(&Standing {
            member_id: "a".into(),
            total_earned: 10,
            reached_at: 200,
        });
        // ZREVRANGE lists greater names first among equal scores.
        assert!(early > late);
    }
}
