//! `marketing-server [serve | migrate]`: serves gRPC (the default), or applies the database
//! migrations and exits. Configuration comes from the environment; see the README.

use std::process::ExitCode;

use marketing_server::{Config, Server, telemetry::init_telemetry};

const USAGE: &str = "usage: marketing-server [serve | migrate]\n\
    serve    run the gRPC server (default)\n\
    migrate  apply database migrations and exit\n\
    configuration: MARKETING_* environment variables (see README)";

enum Command {
    Serve,
    Migrate,
}

fn main() -> ExitCode {
    let command = match std::env::args().nth(1).as_deref() {
        None | Some("serve") => Command::Serve,
        Some("migrate") => Command::Migrate,
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
    let telemetry = init_telemetry(config.log_format)?;
    tracing::debug!(?config, "configuration");
    let addr = config.grpc_addr;
    // Building connects and migrates: `migrate` stops there.
    let server = Server::build(config).await?;
    let result = match command {
        Command::Migrate => {
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|err| anyhow::anyhow!("cannot listen on {addr}: {err}"))?;
            server.serve(listener, shutdown_signal()).await
        }
    };
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
