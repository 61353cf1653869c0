//! `marketing-server [serve | migrate]`: serves gRPC (the default), or applies the database
//! migrations and exits. Configuration comes from the environment; see the README.

use std::process::ExitCode;

use marketing_server::{Config, Server, telemetry::init_telemetry};

/// mimalloc instead of the system allocator: a request allocates and frees many small buffers
/// (rows, protobuf messages, HTTP/2 frames), where glibc malloc spent a quarter of the
/// server's CPU in the list-coupons benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: marketing-server [serve | migrate | healthcheck]\n\
    serve        run the gRPC server (default)\n\
    migrate      apply database migrations and exit\n\
    healthcheck  exit 0 if the server at MARKETING_GRPC_ADDR reports SERVING\n\
    configuration: MARKETING_* environment variables (see README)";

enum Command {
    Serve,
    Migrate,
    Healthcheck,
}

fn main() -> ExitCode {
    let command = match std::env::args().nth(1).as_deref() {
        None | Some("serve") => Command::Serve,
        Some("migrate") => Command::Migrate,
        Some("healthcheck") => Command::Healthcheck,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("unknown command {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("marketing: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("marketing: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(command: Command) -> anyhow::Result<()> {
    let config = Config::load()?;
    match command {
        Command::Healthcheck => healthcheck(config.grpc_addr).await,
        Command::Migrate => with_telemetry(config, false).await,
        Command::Serve => with_telemetry(config, true).await,
    }
}

/// Connects and migrates; then serves until a shutdown signal when `serve` is set.
async fn with_telemetry(config: Config, serve: bool) -> anyhow::Result<()> {
    let telemetry = init_telemetry(config.log_format)?;
    tracing::debug!(?config, "configuration");
    let addr = config.grpc_addr;
    let result = async {
        let server = Server::build(config).await?;
        if !serve {
            tracing::info!("migrations applied");
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|err| anyhow::anyhow!("cannot listen on {addr}: {err}"))?;
        server.serve(listener, shutdown_signal()).await
    }
    .await;
    telemetry.shutdown();
    result
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Asks the server listening on `addr` (a wildcard address means this host) for its health.
async fn healthcheck(mut addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(2))
        .connect()
        .await?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?
        .into_inner()
        .status;
    anyhow::ensure!(
        status == ServingStatus::Serving as i32,
        "server at {addr} is not serving (status {status})"
    );
    println!("SERVING");
    Ok(())
}
