//! The Redis connection pool (deadpool-redis), shared by the Redis lock and cache.

use std::time::Duration;

use deadpool_redis::{
    Manager, Pool, PoolConfig, Runtime, Timeouts,
    redis::{ConnectionInfo, IntoConnectionInfo, io::tcp::TcpSettings},
};

use crate::InfraError;

/// A Redis pool plus the key prefix that namespaces this deployment (or test).
#[derive(Clone)]
pub struct RedisPool {
    pool: Pool,
    prefix: String,
    info: ConnectionInfo,
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
    /// Redis outage turns into a fast error the caller can degrade on. Connections set
    /// `TCP_NODELAY` (the redis crate leaves Nagle's algorithm on): without it, two commands
    /// written back to back on one multiplexed connection can wait ~40 ms for a delayed ACK.
    pub fn new(url: &str, max_size: usize, prefix: &str) -> Result<Self, InfraError> {
        let info = url
            .into_connection_info()?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let mut pool_config = PoolConfig::new(max_size);
        pool_config.timeouts = Timeouts {
            wait: Some(Duration::from_millis(500)),
            create: Some(Duration::from_millis(500)),
            recycle: Some(Duration::from_millis(500)),
        };
        let pool = Pool::builder(Manager::new(info.clone())?)
            .config(pool_config)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|err| InfraError::Config(err.to_string()))?;
        Ok(Self {
            pool,
            prefix: prefix.to_owned(),
            info,
        })
    }

    pub async fn connection(&self) -> Result<deadpool_redis::Connection, InfraError> {
        Ok(self.pool.get().await?)
    }

    /// A client for connections outside the pool (pub/sub subscriptions).
    pub fn client(&self) -> Result<deadpool_redis::redis::Client, InfraError> {
        Ok(deadpool_redis::redis::Client::open(self.info.clone())?)
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
