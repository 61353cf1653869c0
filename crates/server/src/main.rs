//! `marketing-server [serve | migrate | healthcheck | clients ...]`: serves gRPC (the
//! default), applies the database migrations, checks a server's health, or manages the API
//! clients. Configuration comes from the environment; see the README.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use marketing_domain::{
    UnixMicros,
    auth::{Role, Tenants},
};
use marketing_server::{
    Config, Server,
    app::{self, clients},
    telemetry::init_telemetry,
};

/// mimalloc instead of the system allocator: a request allocates and frees many small buffers
/// (rows, protobuf messages, HTTP/2 frames), where glibc malloc spent a quarter of the
/// server's CPU in the list-coupons benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The marketing service: coupons and loyalty points over gRPC. Configuration comes from
/// MARKETING_* environment variables and an optional config file (see the README).
#[derive(Parser)]
#[command(name = "marketing-server", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Exit 0 if the server at MARKETING_GRPC_ADDR reports SERVING.
    Healthcheck(HealthcheckArgs),
    /// Manage the API clients that may call the server.
    #[command(subcommand)]
    Clients(ClientsCommand),
}

/// How to reach a server that serves TLS (MARKETING_TLS_CERT set), as grpcurl names it.
#[derive(clap::Args)]
struct HealthcheckArgs {
    /// The CA certificate (PEM) the server's certificate is signed by; connects over TLS.
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    /// A client certificate (PEM) to present, under mTLS (MARKETING_TLS_CLIENT_CA).
    #[arg(long, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// The name the server's certificate is checked against.
    #[arg(long, default_value = "localhost")]
    servername: String,
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// Create a client and print its key, alone on the last line (it is shown only once).
    Create {
        /// The client's name, e.g. checkout-eu (letters, digits, '-', '_', '.').
        #[arg(long)]
        name: String,
        /// admin (everything), checkout (claims, coupon use, points changes, reads) or
        /// reader (reads only).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A tenant the client may act for; repeat for several.
        #[arg(long = "tenant", required_unless_present = "all_tenants")]
        tenants: Vec<String>,
        /// Let the client act for every tenant.
        #[arg(long, conflicts_with = "tenants")]
        all_tenants: bool,
    },
    /// Create the first admin client (every tenant) if there is no client yet, and print its
    /// key once; with clients already, do nothing. For a deployment's one-shot first step.
    Bootstrap {
        /// The admin client's name.
        #[arg(long, default_value = "admin")]
        name: String,
        /// A file holding the key to give it (e.g. a secret the operator made with `clients
        /// new-key`); without one, a fresh key is printed.
        #[arg(long)]
        key_file: Option<std::path::PathBuf>,
    },
    /// Print a fresh key, for `bootstrap --key-file` (nothing is stored).
    NewKey,
    /// List the clients, revoked ones too.
    List,
    /// Revoke a client: every replica refuses its key within seconds.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("{text:?} is not a role: admin, checkout or reader"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match runtime.block_on(start(cli.command.unwrap_or(Command::Serve))) {
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
        Command::Healthcheck(args) => healthcheck(&config, args).await,
        Command::Migrate => with_telemetry(config, false).await,
        Command::Serve => with_telemetry(config, true).await,
        Command::Clients(command) => manage_clients(config, command).await,
    }
}

/// The clients commands: on the server's database (migrated first), without a server.
async fn manage_clients(config: Config, command: ClientsCommand) -> anyhow::Result<()> {
    if let ClientsCommand::NewKey = command {
        // Nothing is stored: no database needed.
        println!("{}", clients::new_key().1);
        return Ok(());
    }
    let db = app::open_database(&config).await?;
    let now = UnixMicros::now();
    match command {
        ClientsCommand::Create {
            name,
            role,
            tenants,
            all_tenants,
        } => {
            let tenants = (!all_tenants).then_some(tenants);
            let created = clients::create_client(&db, &name, role, tenants, now).await?;
            println!(
                "created client {} (role {}, tenants {})",
                created.client.name,
                created.client.role,
                tenants_text(&created.client.tenants)
            );
            println!(
                "its key, shown only this once; calls send it as `authorization: Bearer <key>`:"
            );
            println!("{}", created.key);
        }
        ClientsCommand::Bootstrap { name, key_file } => {
            if !clients::list_clients(&db).await?.is_empty() {
                println!("API clients exist already: nothing to do");
                return Ok(());
            }
            let key = match &key_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|err| {
                        anyhow::anyhow!("cannot read the key file {}: {err}", path.display())
                    })?;
                    Some(text.trim().to_owned())
                }
                None => None,
            };
            let created = match clients::create_client_with_key(
                &db,
                &name,
                Role::Admin,
                None,
                now,
                key,
            )
            .await
            {
                Ok(created) => created,
                // Another replica's bootstrap made it meanwhile.
                Err(_) if !clients::list_clients(&db).await?.is_empty() => {
                    println!("API clients exist already: nothing to do");
                    return Ok(());
                }
                Err(err) => return Err(err.into()),
            };
            match key_file {
                Some(path) => println!(
                    "created the first admin client {} with the key in {}",
                    created.client.name,
                    path.display()
                ),
                None => {
                    println!(
                        "created the first admin client {} (every tenant); its key, shown only \
                         this once, sent as `authorization: Bearer <key>`:",
                        created.client.name
                    );
                    println!("{}", created.key);
                }
            }
        }
        // Answered before the database is opened.
        ClientsCommand::NewKey => {}
        ClientsCommand::List => {
            println!(
                "{:<24} {:<9} {:<8} {:<18} tenants",
                "name", "role", "state", "created (unix s)"
            );
            for client in clients::list_clients(&db).await? {
                let state = if client.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<24} {:<9} {:<8} {:<18} {}",
                    client.name,
                    client.role,
                    state,
                    client.created_at.0 / 1_000_000,
                    tenants_text(&client.tenants)
                );
            }
        }
        ClientsCommand::Revoke { name } => {
            anyhow::ensure!(
                clients::revoke_client(&db, &name, now).await?,
                "no active client named {name}"
            );
            println!("revoked client {name}");
        }
    }
    Ok(())
}

fn tenants_text(tenants: &Tenants) -> String {
    match tenants {
        Tenants::All => "*".to_owned(),
        Tenants::Only(ids) => ids
            .iter()
            .map(|id| id.as_str())
            .collect::<Vec<_>>()
            .join(","),
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
async fn healthcheck(config: &Config, args: HealthcheckArgs) -> anyhow::Result<()> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    let mut addr = config.grpc_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))
    };
    let endpoint = match (&config.tls_cert, &args.cacert) {
        (None, None) => Endpoint::from_shared(format!("http://{addr}"))?,
        (Some(_), None) => anyhow::bail!(
            "the server serves TLS (MARKETING_TLS_CERT): give --cacert (and --cert/--key under mTLS)"
        ),
        // Trusting a CA means TLS, whether or not this process's configuration names a cert.
        (_, Some(ca)) => {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(ca)?))
                .domain_name(args.servername.clone());
            if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?
        }
    };
    let channel = endpoint
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
