//! `marketing-bench`: a load generator for the marketing service with ghz's options and
//! outputs, and the goal table of `scripts/bench.sh`.
//!
//! ```text
//! marketing-bench <scenario> [--addr 127.0.0.1:50051] [-c 50] [--connections 1]
//! marketing-bench --call package.Service/Method [-d JSON] [-m JSON] [options as above]
//!                 [-n COUNT | -z DURATION] [--rps N] [-O summary|json] [-o FILE] [--tenant T]
//!                 [--token KEY] [--cacert CA.pem [--cert C.pem --key C.key] [--cname NAME]]
//! marketing-bench report --dir DIR      (reads the JSON files bench.sh wrote)
//! ```

#![forbid(unsafe_code)]

mod call;
mod consumer;
mod report;
mod runner;
mod scenarios;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::{
    report::Stats,
    runner::{Conn, LoadOptions, Token},
};

/// A load generator for the marketing service with ghz's options and outputs, or (`report`)
/// the goal table of `scripts/bench.sh`.
#[derive(Parser)]
#[command(
    name = "marketing-bench",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    report: Option<ReportCommand>,
    #[command(flatten)]
    bench: Option<BenchArgs>,
}

#[derive(Subcommand)]
enum ReportCommand {
    /// The goal table, from the JSON files bench.sh wrote.
    Report {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The scenario to run (see the list in the README, or an error's list); none with --call.
    #[arg(required_unless_present = "call", conflicts_with = "call")]
    scenario: Option<String>,
    /// Instead of a scenario, any unary RPC of the served API, found through server
    /// reflection: `package.Service/Method` (as ghz's --call).
    #[arg(long)]
    call: Option<String>,
    /// --call's request as JSON, with ghz's template actions rendered per call:
    /// {{.RequestNumber}}, {{.WorkerID}}, {{.TimestampUnix}}, {{newUUID}}, {{randomString N}}.
    #[arg(short = 'd', long, requires = "call", default_value = "{}")]
    data: String,
    /// --call's metadata as a JSON object of strings (templates as in --data).
    #[arg(short = 'm', long, requires = "call")]
    metadata: Option<String>,
    /// The server, or replicas separated by commas: connections are spread over them in turn
    /// (at least one each).
    #[arg(long, visible_alias = "host", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Workers sending at once.
    #[arg(short = 'c', long, default_value_t = 50)]
    concurrency: usize,
    /// HTTP/2 connections the workers share.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Stop after this many requests (200 when neither -n nor -z is given).
    #[arg(short = 'n', long)]
    total: Option<u64>,
    /// Stop after this long: 500ms, 10s, 2m, 1h.
    #[arg(short = 'z', long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Requests per second across all workers; unpaced when unset.
    #[arg(short = 'r', long)]
    rps: Option<f64>,
    /// earn-expiring only: when the points it earns expire, in Unix seconds (default: two
    /// minutes after it starts).
    #[arg(long)]
    expire_at: Option<i64>,
    /// summary or json (ghz's formats; pretty is json).
    #[arg(short = 'O', long, default_value = "summary", value_parser = ["summary", "json", "pretty"])]
    format: String,
    /// Where the output goes (stdout when unset).
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// The tenant to act for (a fresh one when unset).
    #[arg(long)]
    tenant: Option<String>,
    /// An API client's key, sent as `authorization: Bearer <key>` on every call.
    #[arg(long)]
    token: Option<String>,
    /// The CA certificate (PEM) the server's certificate must be signed by; connects over TLS.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// A client certificate (PEM) to present, for mTLS (with --key).
    #[arg(long, requires = "key", requires = "cacert")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// The server name to verify the certificate against (default: the address's host).
    #[arg(long)]
    cname: Option<String>,
}

/// TLS, as ghz names its options: trusting `--cacert` turns it on.
struct TlsArgs {
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    cname: Option<String>,
}

impl TlsArgs {
    /// The client TLS configuration, files read; `None` for plain text.
    fn config(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let Some(ca) = &self.cacert else {
            return Ok(None);
        };
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &self.cname {
            tls = tls.domain_name(name);
        }
        Ok(Some(tls))
    }
}

struct Args {
    /// The scenario, or `--call`'s method.
    scenario: String,
    /// `--call`'s data and metadata, when it is a call.
    call: Option<(String, Option<String>)>,
    addr: String,
    load: LoadOptions,
    json: bool,
    output: Option<PathBuf>,
    tenant: Option<String>,
    token: Option<String>,
    tls: TlsArgs,
}

impl From<BenchArgs> for Args {
    fn from(args: BenchArgs) -> Self {
        let total = match (args.total, args.duration) {
            (None, None) => Some(200),
            (total, _) => total,
        };
        let call = args
            .call
            .as_ref()
            .map(|_| (args.data.clone(), args.metadata.clone()));
        Args {
            scenario: args.call.or(args.scenario).unwrap_or_default(),
            call,
            addr: args.addr,
            load: LoadOptions {
                concurrency: args.concurrency,
                connections: args.connections,
                total,
                duration: args.duration,
                rps: args.rps,
                expire_at: args.expire_at,
            },
            json: args.format != "summary",
            output: args.output,
            tenant: args.tenant,
            token: args.token,
            tls: TlsArgs {
                cacert: args.cacert,
                cert: args.cert,
                key: args.key,
                cname: args.cname,
            },
        }
    }
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .with_context(|| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("bad duration unit {other:?} (ms, s, m, h)"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

async fn connect(args: &Args) -> anyhow::Result<Vec<Conn>> {
    let addrs: Vec<&str> = args
        .addr
        .split(',')
        .map(str::trim)
        .filter(|addr| !addr.is_empty())
        .collect();
    anyhow::ensure!(!addrs.is_empty(), "--addr names no server");
    let token = Token(
        args.token
            .as_deref()
            .map(|key| format!("Bearer {key}").parse())
            .transpose()
            .context("--token must be ASCII")?,
    );
    let tls = args.tls.config()?;
    let mut channels = Vec::new();
    for index in 0..args.load.connections.max(addrs.len()) {
        let addr = addrs[index % addrs.len()];
        let uri = match (addr.contains("://"), &tls) {
            (true, _) => addr.to_owned(),
            (false, Some(_)) => format!("https://{addr}"),
            (false, None) => format!("http://{addr}"),
        };
        let mut endpoint = Endpoint::from_shared(uri)?.tcp_nodelay(true);
        if let Some(tls) = &tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        channels.push(Conn::new(channel, token.clone()));
    }
    Ok(channels)
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let channels = connect(&args).await?;
    let tenant = args
        .tenant
        .clone()
        .unwrap_or_else(|| format!("bench-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]));
    let (run, scenario) = match &args.call {
        Some((data, metadata)) => {
            let call = std::sync::Arc::new(
                call::Call::resolve(
                    &channels[0],
                    &args.scenario,
                    data,
                    metadata.as_deref(),
                    args.load.concurrency,
                )
                .await?,
            );
            let run = runner::run(&args.load, &channels, move |channel, n| {
                let call = call.clone();
                async move { call.send(channel, n).await }
            })
            .await;
            (run, json!({}))
        }
        None => tokio::time::timeout(
            scenarios::SETUP_TIMEOUT + args.load.duration.unwrap_or(Duration::from_secs(600)),
            scenarios::run_scenario(&args.scenario, &tenant, &channels, &args.load),
        )
        .await
        .context("the scenario did not finish in time")??,
    };
    let stats = Stats::of(&run);
    let text = if args.json {
        let options = json!({
            "call": args.scenario,
            "host": args.addr,
            "concurrency": args.load.concurrency,
            "connections": args.load.connections,
            "total": args.load.total,
            "duration": args.load.duration.map(|d| d.as_nanos() as u64),
            "rps": args.load.rps,
        });
        serde_json::to_string_pretty(&report::json(&stats, options, scenario))?
    } else {
        let mut text = report::summary(&stats);
        if scenario.as_object().is_some_and(|o| !o.is_empty()) {
            text.push_str(&format!("\nScenario:\n  {scenario}\n"));
        }
        text
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// A goal row: measured, target, and whether it is met.
struct Row {
    scenario: String,
    measured: String,
    goal: String,
    met: bool,
}

fn load_json(dir: &std::path::Path, name: &str) -> anyhow::Result<Value> {
    let path = dir.join(format!("{name}.json"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn ok_rps(run: &Value) -> f64 {
    let ok = run["statusCodeDistribution"]["OK"].as_f64().unwrap_or(0.0);
    let total = run["total"].as_f64().unwrap_or(0.0) / 1e9;
    if total > 0.0 { ok / total } else { 0.0 }
}

fn p99_ms(run: &Value) -> f64 {
    run["latencyDistribution"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["percentage"] == 99))
        .and_then(|p| p["latency"].as_f64())
        .unwrap_or(f64::MAX)
        / 1e6
}

fn unexpected_errors(run: &Value, allowed: &[&str]) -> u64 {
    run["statusCodeDistribution"]
        .as_object()
        .map(|codes| {
            codes
                .iter()
                .filter(|(code, _)| code.as_str() != "OK" && !allowed.contains(&code.as_str()))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// The goal table of the performance issue, from the files bench.sh wrote.
fn goal_table(dir: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let pg = load_json(dir, "pgbench")?;
    let tps = |name: &str| pg[name].as_f64().unwrap_or(0.0);
    let rss_mb = std::fs::read_to_string(dir.join("rss_kb.txt"))
        .ok()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0);
    let mut rows = Vec::new();
    let ratio_row = |scenario: &str,
                     run: &Value,
                     rps: f64,
                     base_name: &str,
                     base: f64,
                     factor: f64,
                     p99_goal: Option<f64>| {
        let p99 = p99_ms(run);
        let ratio = if base > 0.0 { rps / base } else { 0.0 };
        let met = ratio >= factor && p99_goal.is_none_or(|g| p99 <= g);
        Row {
            scenario: scenario.to_owned(),
            measured: format!("{rps:.0}/s ({ratio:.2}x {base_name} {base:.0}), P99 {p99:.1} ms"),
            goal: format!(
                ">= {factor:.1}x {base_name}{}",
                p99_goal
                    .map(|g| format!(", P99 <= {g} ms"))
                    .unwrap_or_default()
            ),
            met,
        }
    };
    let claim_hot = load_json(dir, "claim-hot")?;
    let mut row = ratio_row(
        "claim-hot c=64",
        &claim_hot,
        ok_rps(&claim_hot),
        "hot_claim.sql",
        tps("hot_claim"),
        3.0,
        Some(50.0),
    );
    row.met &= claim_hot["scenario"]["verified"] == true;
    row.goal.push_str(", zero oversell");
    rows.push(row);

    let code = load_json(dir, "claim-code")?;
    let mut row = ratio_row(
        "claim-code c=64",
        &code,
        ok_rps(&code),
        "claim-hot",
        ok_rps(&claim_hot),
        0.8,
        None,
    );
    row.met &= code["scenario"]["verified"] == true;
    row.goal.push_str(", each code claimed once");
    rows.push(row);

    let health = load_json(dir, "health")?;
    let pricing = load_json(dir, "price-order")?;
    rows.push(ratio_row(
        "price-order c=64 (20 lines, 10 coupons)",
        &pricing,
        ok_rps(&pricing),
        "health",
        ok_rps(&health),
        0.3,
        Some(20.0),
    ));

    let applicable = load_json(dir, "applicable-coupons")?;
    let p99 = p99_ms(&applicable);
    rows.push(Row {
        scenario: "applicable-coupons c=64 (20 lines, 50 coupons)".into(),
        measured: format!("{:.0}/s, P99 {p99:.1} ms", ok_rps(&applicable)),
        goal: "P99 <= 20 ms".into(),
        met: p99 <= 20.0 && unexpected_errors(&applicable, &[]) == 0,
    });

    let generating = load_json(dir, "generate-codes")?;
    let seconds = generating["scenario"]["generation_seconds"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let mut row = ratio_row(
        "claims while 1,000,000 codes are generated",
        &generating,
        ok_rps(&generating),
        "claim-hot",
        ok_rps(&claim_hot),
        0.5,
        Some(100.0),
    );
    row.measured = format!(
        "generated in {seconds:.1} s; claims of another template {}",
        row.measured
    );
    row.goal = format!("generation < 60 s; claims {}", row.goal);
    row.met &= seconds < 60.0 && generating["scenario"]["claims_overlapped_generation"] == true;
    rows.push(row);

    let sellout = load_json(dir, "claim-sellout")?;
    rows.push(Row {
        scenario: "claim-sellout".into(),
        measured: format!(
            "{} claimed of {}, sold out after {:.1} s, {} other refusals",
            sellout["scenario"]["granted"],
            sellout["scenario"]["total_stock"],
            sellout["scenario"]["sold_out_after_seconds"]
                .as_f64()
                .unwrap_or(0.0),
            sellout["scenario"]["refused_for_other_reasons"]
        ),
        goal: "exactly the stock; only OUT_OF_STOCK / MEMBER_LIMIT_REACHED".into(),
        met: sellout["scenario"]["verified"] == true,
    });

    let spread = load_json(dir, "deduct-spread")?;
    rows.push(ratio_row(
        "deduct-spread c=64",
        &spread,
        ok_rps(&spread),
        "spread_deduct.sql",
        tps("spread_deduct"),
        1.0,
        Some(50.0),
    ));

    let hot = load_json(dir, "deduct-hot")?;
    let mut row = ratio_row(
        "deduct-hot c=32",
        &hot,
        ok_rps(&hot),
        "hot_update.sql",
        tps("hot_update"),
        0.5,
        None,
    );
    let aborted = hot["scenario"]["concurrent_modification"]
        .as_u64()
        .unwrap_or(u64::MAX);
    row.measured
        .push_str(&format!(", {aborted} CONCURRENT_MODIFICATION"));
    row.goal.push_str(", zero CONCURRENT_MODIFICATION");
    row.met &= aborted == 0;
    rows.push(row);

    let get = load_json(dir, "get-template")?;
    rows.push(ratio_row(
        "get-template c=64",
        &get,
        ok_rps(&get),
        "health",
        ok_rps(&health),
        0.7,
        Some(10.0),
    ));

    let list = load_json(dir, "list-coupons")?;
    rows.push(ratio_row(
        "list-coupons c=64",
        &list,
        ok_rps(&list),
        "point_read.sql",
        tps("point_read"),
        0.3,
        None,
    ));

    // What auth costs (bench.sh with auth on): rounds of get-template with a key against an
    // open replica, each round's ratio, their median.
    let mut ratios = Vec::new();
    for round in 1.. {
        let (Ok(keyed), Ok(open)) = (
            load_json(dir, &format!("auth-{round}-keyed")),
            load_json(dir, &format!("auth-{round}-open")),
        ) else {
            break;
        };
        let open_rps = ok_rps(&open);
        ratios.push(if open_rps > 0.0 {
            ok_rps(&keyed) / open_rps
        } else {
            0.0
        });
    }
    if !ratios.is_empty() {
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        ratios.sort_by(f64::total_cmp);
        let middle = ratios.len() / 2;
        let median = if ratios.len() % 2 == 0 {
            (ratios[middle - 1] + ratios[middle]) / 2.0
        } else {
            ratios[middle]
        };
        rows.push(Row {
            scenario: "auth: get-template with a key / open".into(),
            measured: format!(
                "median {median:.3} of {} rounds ({})",
                ratios.len(),
                shown.join(", ")
            ),
            goal: ">= 0.95 (auth costs at most 5%)".into(),
            met: median >= 0.95,
        });
    }

    // A consumer of the mixed scenario's events keeps up (issue 24).
    let mixed = load_json(dir, "mixed")?;
    let stream = &mixed["scenario"]["event_stream"];
    let lag = stream["lag_at_end_ms"].as_f64().unwrap_or(f64::MAX);
    rows.push(Row {
        scenario: "mixed: a StreamEvents consumer".into(),
        measured: format!(
            "{} events, lag at the end {lag:.0} ms, largest lag {:.0} ms",
            stream["events"],
            stream["max_lag_ms"].as_f64().unwrap_or(f64::NAN)
        ),
        goal: "caught up within 1 s of the run's end".into(),
        met: stream["caught_up"] == true && lag <= 1000.0,
    });

    let mut unexpected = 0;
    for (name, allowed) in [
        ("claim-hot", &[][..]),
        ("claim-code", &[][..]),
        ("price-order", &[][..]),
        ("applicable-coupons", &[][..]),
        ("generate-codes", &[][..]),
        ("claim-sellout", &["ResourceExhausted"][..]),
        ("deduct-spread", &[][..]),
        ("deduct-hot", &[][..]),
        ("health", &[][..]),
        ("get-template", &[][..]),
        ("list-coupons", &[][..]),
        ("mixed", &[][..]),
    ] {
        unexpected += unexpected_errors(&load_json(dir, name)?, allowed);
    }
    rows.push(Row {
        scenario: "every scenario".into(),
        measured: format!("peak RSS {rss_mb:.0} MB, {unexpected} unexpected errors"),
        goal: "RSS <= 150 MB; no unexpected errors".into(),
        met: rss_mb <= 150.0 && unexpected == 0,
    });
    Ok(rows)
}

fn report(dir: PathBuf) -> anyhow::Result<()> {
    let rows = goal_table(&dir)?;
    let pg = load_json(&dir, "pgbench")?;
    println!("| database ceiling (pgbench -c 16 -j 2) | TPS |");
    println!("|---|---|");
    for name in ["hot_claim", "spread_deduct", "hot_update", "point_read"] {
        println!("| `{name}.sql` | {:.0} |", pg[name].as_f64().unwrap_or(0.0));
    }
    println!();
    println!("| scenario | measured | goal | met |");
    println!("|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {} |",
            row.scenario,
            row.measured,
            row.goal,
            if row.met { "yes" } else { "**no**" }
        );
    }
    println!();
    println!("| scenario | requests/s | P50 ms | P99 ms | status codes |");
    println!("|---|---|---|---|---|");
    // Every scenario bench.sh ran (earn-expiring is scripts/mass-expiry.sh's).
    for name in scenarios::NAMES {
        if !dir.join(format!("{name}.json")).exists() {
            continue;
        }
        let run = load_json(&dir, name)?;
        let p50 = run["latencyDistribution"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["percentage"] == 50))
            .and_then(|p| p["latency"].as_f64())
            .unwrap_or(0.0)
            / 1e6;
        println!(
            "| {name} | {:.0} | {p50:.1} | {:.1} | {} |",
            run["rps"].as_f64().unwrap_or(0.0),
            p99_ms(&run),
            run["statusCodeDistribution"]
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (cli.report, cli.bench) {
        (Some(ReportCommand::Report { dir }), _) => report(dir),
        (None, Some(args)) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(bench(args.into()))),
        (None, None) => Err(anyhow::anyhow!("name a scenario, or `report --dir DIR`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "marketing-bench: {err:#}\nscenarios: {}",
                scenarios::NAMES.join(", ")
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ghz_style_options_parse() {
        let args = [
            "claim-hot",
            "-c",
            "64",
            "-z",
            "10s",
            "--connections",
            "4",
            "-O",
            "json",
            "--rps",
            "500",
        ]
        .into_iter()
        .map(String::from);
        let parsed: Args =
            Cli::try_parse_from(std::iter::once("marketing-bench".to_owned()).chain(args))
                .expect("valid")
                .bench
                .expect("a scenario")
                .into();
        assert_eq!(parsed.scenario, "claim-hot");
        assert_eq!(parsed.load.concurrency, 64);
        assert_eq!(parsed.load.connections, 4);
        assert_eq!(parsed.load.duration, Some(Duration::from_secs(10)));
        assert_eq!(parsed.load.rps, Some(500.0));
        assert!(parsed.json);
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert!(Cli::try_parse_from(["marketing-bench", "x", "--bogus"]).is_err());
        let report =
            Cli::try_parse_from(["marketing-bench", "report", "--dir", "d"]).expect("report");
        assert!(matches!(report.report, Some(ReportCommand::Report { .. })));
        let counted: Args = Cli::try_parse_from(["marketing-bench", "health"])
            .expect("defaults")
            .bench
            .expect("a scenario")
            .into();
        assert_eq!(counted.load.total, Some(200));
    }
}
