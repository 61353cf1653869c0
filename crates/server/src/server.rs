//! Wiring: the gRPC services, health, reflection (v1 and v1alpha), and graceful shutdown.

use std::{future::Future, time::Duration};

use marketing_proto::v1::{
    coupon_template_service_server::CouponTemplateServiceServer,
    points_account_service_server::PointsAccountServiceServer,
    user_coupon_service_server::UserCouponServiceServer,
};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::{
    app::AppState,
    config::Config,
    grpc::{CouponTemplates, Points, UserCoupons},
};

/// Serves on `listener` until `shutdown` completes. Then health turns NOT_SERVING, the server
/// waits `shutdown_drain_delay`, stops accepting, lets in-flight calls finish, and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::build(config).await?.serve(listener, shutdown).await
}

/// A server that is connected and migrated but not yet serving.
pub struct Server {
    app: AppState,
}

impl Server {
    /// Connects to the database (migrating it) and to Redis, or sets up the embedded mode.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Ok(Self {
            app: AppState::connect(config).await?,
        })
    }

    pub fn app(&self) -> &AppState {
        &self.app
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = self.app;
        let (health, health_service) = tonic_health::server::health_reporter();
        let service_names = [
            "marketing.v1.CouponTemplateService",
            "marketing.v1.UserCouponService",
            "marketing.v1.PointsAccountService",
        ];
        for name in service_names {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(marketing_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let drain_delay = app.config.shutdown_drain_delay;
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for name in service_names {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            tokio::time::sleep(drain_delay).await;
        };

        let sweeper = tokio::spawn(sweep_forever(app.clone()));
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "serving gRPC");
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .timeout(Duration::from_secs(30))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(CouponTemplateServiceServer::new(CouponTemplates::new(
                app.clone(),
            )))
            .add_service(UserCouponServiceServer::new(UserCoupons::new(app.clone())))
            .add_service(PointsAccountServiceServer::new(Points::new(app.clone())))
            .serve_with_incoming_shutdown(incoming, signal)
            .await?;
        // Aborting mid-sweep rolls its statement back: nothing is half-done.
        sweeper.abort();
        app.db.close().await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Every `sweep_interval`, on every replica: releases lapsed coupon locks, expires coupons,
/// releases lapsed points holds and expires points lots (all safe to run concurrently).
async fn sweep_forever(app: AppState) {
    const BATCH: u64 = 500;
    let mut interval = tokio::time::interval(app.config.sweep_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match app.sweep_coupons(BATCH).await {
            Ok((0, 0)) => {}
            Ok((unlocked, expired)) => tracing::info!(unlocked, expired, "coupon sweep"),
            Err(err) => tracing::warn!(error = %err, "coupon sweep failed; retrying next interval"),
        }
        match app.sweep_points(BATCH).await {
            Ok((0, 0)) => {}
            Ok((holds_released, accounts_expired)) => {
                tracing::info!(holds_released, accounts_expired, "points sweep");
            }
            Err(err) => tracing::warn!(error = %err, "points sweep failed; retrying next interval"),
        }
    }
}
