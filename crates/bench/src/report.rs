//! ghz's two outputs: the text summary and `-O json` (ghz's field names, durations in
//! nanoseconds), computed from a run's samples.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde_json::{Value, json};
use tonic::Code;

use crate::runner::Run;

const PERCENTILES: [u32; 7] = [10, 25, 50, 75, 90, 95, 99];

/// The statistics ghz prints.
#[derive(Debug, Clone)]
pub struct Stats {
    pub count: usize,
    pub total: Duration,
    pub slowest: Duration,
    pub fastest: Duration,
    pub average: Duration,
    pub rps: f64,
    pub percentiles: Vec<(u32, Duration)>,
    pub status_codes: BTreeMap<String, usize>,
    pub errors: BTreeMap<String, usize>,
    pub histogram: Vec<(Duration, usize)>,
}

fn code_name(code: Code) -> String {
    // ghz prints codes in Go's spelling: OK, ResourceExhausted, ...
    match code {
        Code::Ok => "OK".to_owned(),
        other => format!("{other:?}"),
    }
}

impl Stats {
    pub fn of(run: &Run) -> Self {
        let mut latencies: Vec<Duration> = run.samples.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        let count = latencies.len();
        let sum: Duration = latencies.iter().sum();
        let percentile = |p: u32| -> Duration {
            if count == 0 {
                return Duration::ZERO;
            }
            let rank = ((f64::from(p) / 100.0) * count as f64).ceil() as usize;
            latencies[rank.clamp(1, count) - 1]
        };
        let mut status_codes = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for sample in &run.samples {
            *status_codes.entry(code_name(sample.code)).or_default() += 1;
            if let Some(error) = &sample.error {
                *errors.entry(error.clone()).or_default() += 1;
            }
        }
        let fastest = latencies.first().copied().unwrap_or_default();
        let slowest = latencies.last().copied().unwrap_or_default();
        Self {
            count,
            total: run.total,
            slowest,
            fastest,
            average: if count == 0 {
                Duration::ZERO
            } else {
                sum / count as u32
            },
            rps: if run.total.is_zero() {
                0.0
            } else {
                count as f64 / run.total.as_secs_f64()
            },
            percentiles: PERCENTILES.iter().map(|p| (*p, percentile(*p))).collect(),
            status_codes,
            errors,
            histogram: histogram(&latencies, fastest, slowest),
        }
    }
}

/// Ten equal buckets between the fastest and the slowest call, like ghz.
fn histogram(sorted: &[Duration], fastest: Duration, slowest: Duration) -> Vec<(Duration, usize)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let step = (slowest - fastest) / 10;
    let mut buckets: Vec<(Duration, usize)> = (0..=10).map(|i| (fastest + step * i, 0)).collect();
    for latency in sorted {
        let index = buckets
            .iter()
            .position(|(mark, _)| latency <= mark)
            .unwrap_or(buckets.len() - 1);
        buckets[index].1 += 1;
    }
    buckets
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// ghz's text summary.
pub fn summary(stats: &Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nSummary:");
    let _ = writeln!(out, "  Count:\t{}", stats.count);
    let _ = writeln!(out, "  Total:\t{}", ms(stats.total));
    let _ = writeln!(out, "  Slowest:\t{}", ms(stats.slowest));
    let _ = writeln!(out, "  Fastest:\t{}", ms(stats.fastest));
    let _ = writeln!(out, "  Average:\t{}", ms(stats.average));
    let _ = writeln!(out, "  Requests/sec:\t{:.2}", stats.rps);
    let _ = writeln!(out, "\nResponse time histogram:");
    let widest = stats
        .histogram
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(1)
        .max(1);
    for (mark, n) in &stats.histogram {
        let bar = "∎".repeat(n * 40 / widest);
        let _ = writeln!(out, "  {:.3} [{n}]\t|{bar}", mark.as_secs_f64() * 1000.0);
    }
    let _ = writeln!(out, "\nLatency distribution:");
    for (p, d) in &stats.percentiles {
        let _ = writeln!(out, "  {p} % in {} ", ms(*d));
    }
    let _ = writeln!(out, "\nStatus code distribution:");
    for (code, n) in &stats.status_codes {
        let _ = writeln!(out, "  [{code}]\t{n} responses");
    }
    if !stats.errors.is_empty() {
        let _ = writeln!(out, "\nError distribution:");
        for (error, n) in &stats.errors {
            let _ = writeln!(out, "  [{n}]\t{error}");
        }
    }
    out
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// ghz's `-O json`, plus a `scenario` object with what the scenario measured and verified.
pub fn json(stats: &Stats, options: Value, scenario: Value) -> Value {
    json!({
        // RFC 3339, as ghz writes it.
        "date": prost_types::Timestamp::from(std::time::SystemTime::now()).to_string(),
        "endReason": "normal",
        "options": options,
        "count": stats.count,
        "total": nanos(stats.total),
        "average": nanos(stats.average),
        "fastest": nanos(stats.fastest),
        "slowest": nanos(stats.slowest),
        "rps": stats.rps,
        "histogram": stats.histogram.iter().map(|(mark, n)| json!({
            "mark": mark.as_secs_f64(),
            "count": n,
            "frequency": if stats.count == 0 { 0.0 } else { *n as f64 / stats.count as f64 },
        })).collect::<Vec<_>>(),
        "latencyDistribution": stats.percentiles.iter().map(|(p, d)| json!({
            "percentage": p,
            "latency": nanos(*d),
        })).collect::<Vec<_>>(),
        "statusCodeDistribution": stats.status_codes,
        "errorDistribution": stats.errors,
        "scenario": scenario,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Sample;

    fn run(latencies_ms: &[u64]) -> Run {
        Run {
            samples: latencies_ms
                .iter()
                .map(|ms| Sample {
                    at: Duration::ZERO,
                    latency: Duration::from_millis(*ms),
                    code: if *ms > 90 {
                        Code::ResourceExhausted
                    } else {
                        Code::Ok
                    },
                    error: (*ms > 90)
                        .then(|| "rpc error: code = ResourceExhausted desc = x".into()),
                })
                .collect(),
            total: Duration::from_secs(1),
        }
    }

    #[test]
    fn percentiles_and_distributions() {
        let stats = Stats::of(&run(&(1..=100).collect::<Vec<_>>()));
        assert_eq!(stats.count, 100);
        assert_eq!(stats.percentiles[2], (50, Duration::from_millis(50)));
        assert_eq!(stats.percentiles[6], (99, Duration::from_millis(99)));
        assert_eq!(stats.fastest, Duration::from_millis(1));
        assert_eq!(stats.status_codes.get("OK"), Some(&90));
        assert_eq!(stats.status_codes.get("ResourceExhausted"), Some(&10));
        assert_eq!(stats.histogram.iter().map(|(_, n)| n).sum::<usize>(), 100);
        let out = json(&stats, json!({}), json!({}));
        assert_eq!(out["latencyDistribution"][2]["latency"], 50_000_000);
        assert_eq!(out["statusCodeDistribution"]["OK"], 90);
        // ghz's date: RFC 3339 (2026-12-07T22:21:00.123456789Z).
        let date = out["date"].as_str().expect("a string");
        assert!(
            date.len() >= 20 && date.as_bytes()[10] == b'T' && date.ends_with('Z'),
            "{date}"
        );
        assert!(summary(&stats).contains("Requests/sec:\t100.00"));
    }
}
