//! The Redis connection pool (deadpool-redis), shared by the Redis lock and cache.

use std::time::Duration;

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};

use crate::InfraError;

/// A Redis pool plus the key prefix that namespaces this deployment (or test).
#[derive(Clone)]
pub struct RedisPool {
    pool: Pool,
    prefix: String,
    url: String,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisPool {
    /// Builds the pool; connections are made lazily. Waiting for a connection is bounded so a
    /// Redis outage turns into a fast error the caller can degrade on.
    pub fn new(
        url: &str,
        max_size: usize,
        prefix: &str,
    ) -> Result<Self, deadpool_redis::CreatePoolError> {
        let mut config = Config::from_url(url);
        let mut pool_config = PoolConfig::new(max_size);
        pool_config.timeouts = Timeouts {
            wait: Some(Duration::from_millis(500)),
            create: Some(Duration::from_millis(500)),
            recycle: Some(Duration::from_millis(500)),
        };
        config.pool = Some(pool_config);
        let pool = config.create_pool(Some(Runtime::Tokio1))?;
        Ok(Self {
            pool,
            prefix: prefix.to_owned(),
            url: url.to_owned(),
        })
    }

    pub async fn connection(&self) -> Result<deadpool_redis::Connection, InfraError> {
        Ok(self.pool.get().await?)
    }

    /// A client for connections outside the pool (pub/sub subscriptions).
    pub fn client(&self) -> Result<deadpool_redis::redis::Client, InfraError> {
        Ok(deadpool_redis::redis::Client::open(self.url.as_str())?)
    }

    /// The namespaced key.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Round-trips a PING: for start-up checks.
    pub async fn ping(&self) -> Result<(), InfraError> {
        let mut conn = self.connection().await?;
        deadpool_redis::redis::cmd("PING")
            .query_async::<String>(&mut *conn)
            .await?;
        Ok(())
    }
}
