//! ssegate's benchmark harness: ssegate side by side with a direct
//! connection and with nginx, haproxy, Envoy, Traefik and Caddy, all in one
//! run, reported as ratios. Run it with `bench/run.sh` (see the README).
//!
//! Options (after `--`): `--streams N` (1000), `--rate R` events/s per
//! stream (10), `--idle N` idle streams (10000), `--seconds S` per
//! measurement (10), `--flips N` (50), `--only a,b` target names,
//! `--rounds N` (the latency scenarios, cleartext and over TLS h2, N times
//! per target, interleaved across targets, reported as the median of the
//! rounds: background load that comes and goes then weighs on every target
//! alike), `--out NAME` (results in target/NAME), `--scenarios a,b` (of
//! plain, latency, throughput, h2_latency, h2_events, idle, tls, routes,
//! resume; `h2` for both h2 ones; all by default), `--resume-streams N`
//! (500, the resume scenario's streams), `--busy` (a spinning process on
//! each core throughout, to measure a busy machine), `--quick`, `--smoke`
//! (CI: about a second per scenario, results in target/bench-smoke).
//! `SSEGATE_BENCH_HOLD=S` keeps each idle scenario's streams open S
//! seconds after measuring, to look at the process meanwhile (gdb's
//! `call malloc_stats()`, `heaptrack -p`).
//!
//! `resume` SIGKILLs one of two backends under `--resume-streams` event
//! streams, through ssegate with `sse.resume` on and through nginx with
//! EventSource-like clients, and measures what resume costs when off and
//! on (see `resume.rs`); `--smoke` runs its ssegate part only (nginx's
//! waits out EventSource's 3 s retry).
//!
//! `h2_latency` and `h2_events` are `latency` and `throughput` again, the
//! same upstream streams, over TLS with ALPN `h2` and one stream per
//! connection, for the targets with a TLS listener: what a browser's
//! EventSource on an HTTPS origin gets, comparable with the cleartext rows
//! and, target to target, with nginx's HTTP/2.

mod controller;
mod load;
mod peers;
mod resume;
mod upstream;

use peers::Kind;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Options {
    streams: usize,
    rate: u64,
    idle: usize,
    seconds: u64,
    flips: usize,
    only: Option<Vec<String>>,
    /// Scenarios to run; all when `None`.
    scenarios: Option<Vec<String>>,
    /// A spinning process on each core while measuring.
    busy: bool,
    /// Latency rounds per target, interleaved across targets.
    rounds: usize,
    /// Where results go, under target/.
    out: &'static str,
    /// CI's smoke run: any failure found exits non-zero.
    smoke: bool,
    /// Event streams in the resume scenario's backend kill.
    resume_streams: usize,
}

fn options() -> Options {
    let mut o = Options {
        streams: 1000,
        rate: 10,
        idle: idle_default(),
        seconds: 10,
        flips: 50,
        only: None,
        scenarios: None,
        busy: false,
        rounds: 1,
        out: "bench",
        smoke: false,
        resume_streams: 500,
    };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--streams" => o.streams = value().parse().unwrap(),
            "--rate" => o.rate = value().parse().unwrap(),
            "--idle" => o.idle = value().parse().unwrap(),
            "--seconds" => o.seconds = value().parse().unwrap(),
            "--flips" => o.flips = value().parse().unwrap(),
            "--resume-streams" => o.resume_streams = value().parse().unwrap(),
            "--only" => o.only = Some(value().split(',').map(str::to_owned).collect()),
            "--rounds" => o.rounds = value().parse::<usize>().unwrap().max(1),
            "--scenarios" => o.scenarios = Some(value().split(',').map(str::to_owned).collect()),
            // Results to target/NAME instead of target/bench.
            "--out" => o.out = Box::leak(value().into_boxed_str()),
            "--busy" => {
                o.busy = true;
                i -= 1;
            }
            "--quick" => {
                (o.streams, o.idle, o.seconds, o.flips, o.resume_streams) = (200, 2000, 3, 20, 200);
                i -= 1;
            }
            // For CI: every scenario and target, about a second each, so the
            // harness cannot rot; results go to target/bench-smoke.
            "--smoke" => {
                (o.streams, o.idle, o.seconds, o.flips, o.out) = (20, 100, 1, 5, "bench-smoke");
                o.resume_streams = 20;
                o.smoke = true;
                i -= 1;
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

impl Options {
    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.as_ref().is_none_or(|s| s.iter().any(|x| x == scenario))
    }

    /// `h2_latency` or `h2_events`, each named or both as `h2`.
    fn wants_h2(&self, scenario: &str) -> bool {
        self.wants(scenario) || self.wants("h2")
    }
}

/// How the h2 scenarios reach a target: TLS, ALPN `h2`, one stream per
/// connection (a page with one EventSource; the cleartext rows have one
/// stream per connection too).
const H2: load::Transport = load::Transport::TlsH2 { per_conn: 1 };

/// One process spinning on each core, at normal priority, for as long as
/// this lives: a busy machine, reproducibly.
struct Busy(Vec<std::process::Child>);

impl Busy {
    fn start(on: bool) -> Busy {
        let cores = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        Busy(
            (0..if on { cores } else { 0 })
                .filter_map(|core| {
                    Command::new("taskset")
                        .args(["-c", &core.to_string(), "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .ok()
                })
                .collect(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The TLS idle scenarios: HTTP/1.1, and HTTP/2 with one stream per
/// connection and with 100 (one browser's connection to an origin carries
/// all its streams).
const TLS_TRANSPORTS: [load::Transport; 3] = [
    load::Transport::TlsH1,
    load::Transport::TlsH2 { per_conn: 1 },
    load::Transport::TlsH2 { per_conn: 100 },
];

/// 10,000 idle streams, unless the descriptor limit cannot hold them: a
/// proxy needs two descriptors per stream (client and upstream side).
fn idle_default() -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(65536);
    10_000.min(limit.saturating_sub(1000) / 2)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Re-runs itself pinned to core 1, leaving core 0 to the proxy under test.
fn pin_to_core_one() {
    if std::env::var_os("SSEGATE_BENCH_PINNED").is_some() || Command::new("taskset").arg("-V").output().is_err() {
        return;
    }
    let status = Command::new("taskset")
        .args(["-c", "1"])
        .arg(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env("SSEGATE_BENCH_PINNED", "1")
        .status()
        .unwrap();
    std::process::exit(status.code().unwrap_or(1));
}

use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--upstream") {
        let id: &'static str = Box::leak(args[i + 1].clone().into_boxed_str());
        upstream::serve_forever(id);
    }
    pin_to_core_one();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let o = options();
    let started = jiff::Timestamp::now();
    let _busy = Busy::start(o.busy);
    let mut rows: Vec<Value> = Vec::new();
    let mut interleaved = if o.rounds > 1 && (o.wants("latency") || o.wants_h2("h2_latency")) {
        interleaved_latency(&o).await
    } else {
        std::collections::HashMap::new()
    };
    for kind in Kind::ALL {
        if let Some(only) = &o.only {
            if !only.iter().any(|n| kind.name().starts_with(n.as_str())) {
                continue;
            }
        }
        eprintln!("== {}", kind.name());
        let up = upstream::spawn("bench");
        let target = match peers::start(kind, up.addr).await {
            Ok(t) => t,
            Err(why) => {
                eprintln!("   skipped: {why}");
                rows.push(json!({"target": kind.name(), "skipped": why}));
                continue;
            }
        };
        let mut row = measure(&o, &target, interleaved.remove(kind.name()).unwrap_or_default()).await;
        let has_tls = target.tls_addr.is_some();
        drop(target);
        // Let the kernel finish tearing down the last target's sockets.
        tokio::time::sleep(Duration::from_secs(3)).await;
        if has_tls && (o.wants("tls") || TLS_TRANSPORTS.iter().any(|t| o.wants(&t.key()))) {
            row["memory_tls"] = idle_over_tls(&o, kind, up.addr).await;
        }
        rows.push(row);
        drop(up);
    }
    let flips = if o.wants("routes") {
        route_flips(&o).await
    } else {
        json!({})
    };
    let rebuild = if o.wants("routes") { rebuild_cost() } else { json!({}) };
    let resume = if o.wants("resume") {
        resume::run(&o).await
    } else {
        json!({})
    };
    let report = json!({
        "date": started.to_string(),
        "commit": commit(),
        "machine": machine(),
        "options": {"streams": o.streams, "rate": o.rate, "idle": o.idle, "seconds": o.seconds, "flips": o.flips, "busy": o.busy, "scenarios": o.scenarios, "rounds": o.rounds, "resume_streams": o.resume_streams},
        "targets": rows,
        "route_change": flips,
        "table_rebuild": rebuild,
        "resume": resume,
    });
    let out = format!("{}/target/{}", env!("CARGO_MANIFEST_DIR"), o.out);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        format!("{out}/results.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    let md = markdown(&report);
    std::fs::write(format!("{out}/results.md"), &md).unwrap();
    println!("{md}");
    eprintln!("wrote {out}/results.json and {out}/results.md");
    if o.smoke {
        let failures = smoke_failures(&report);
        if !failures.is_empty() {
            eprintln!("benchmark smoke FAILED:");
            for f in &failures {
                eprintln!("  - {f}");
            }
            std::process::exit(1);
        }
        eprintln!("benchmark smoke: every scenario ran without errors");
    }
}

/// What makes a smoke run fail: a target that should have run and did not
/// (only a peer that is not installed may be skipped); and, for direct and
/// ssegate, a scenario that errored, a failed stream or request (cleartext
/// or over TLS h2), a throughput over TLS h2 that carried no event, or an
/// idle scenario that opened no stream; and a route-change series that
/// errored.
/// A peer's own errors are its measured behaviour, printed but not failed.
fn smoke_failures(report: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    for row in report["targets"].as_array().into_iter().flatten() {
        let name = row["target"].as_str().unwrap_or("?");
        if let Some(why) = row["skipped"].as_str() {
            if !why.contains("not installed") {
                failures.push(format!("{name}: did not run: {why}"));
            }
            continue;
        }
        let ours = name == "direct" || name.starts_with("ssegate");
        let check = |failures: &mut Vec<String>, what: &str, ok: bool| {
            if !ok && ours {
                failures.push(format!("{name}: {what}: {}", row));
            } else if !ok {
                eprintln!("   note: {name}: {what} (a peer's own behaviour; not a smoke failure)");
            }
        };
        if !row["plain"].is_null() {
            check(
                &mut failures,
                "plain requests failed",
                row["plain"]["errors"].as_u64() == Some(0),
            );
        }
        if !row["latency_ms"].is_null() {
            check(
                &mut failures,
                "event streams failed",
                row["latency_ms"]["failed_streams"].as_u64() == Some(0)
                    && row["latency_ms"]["events"].as_u64().unwrap_or(0) > 0,
            );
        }
        if !row["throughput"].is_null() {
            check(
                &mut failures,
                "throughput errored",
                row["throughput"]["error"].is_null(),
            );
        }
        if !row["h2_latency_ms"].is_null() {
            check(
                &mut failures,
                "event streams over TLS h2 failed",
                row["h2_latency_ms"]["failed_streams"].as_u64() == Some(0)
                    && row["h2_latency_ms"]["events"].as_u64().unwrap_or(0) > 0,
            );
        }
        if !row["h2_throughput"].is_null() {
            check(
                &mut failures,
                "throughput over TLS h2 errored or carried nothing",
                row["h2_throughput"]["error"].is_null()
                    && row["h2_throughput"]["events_per_s"].as_f64().unwrap_or(0.0) > 0.0,
            );
        }
        if !row["memory"].is_null() {
            check(
                &mut failures,
                "no idle stream opened",
                row["memory"]["streams"].as_u64().unwrap_or(0) > 0,
            );
        }
    }
    for row in report["targets"].as_array().into_iter().flatten() {
        let name = row["target"].as_str().unwrap_or("?");
        for (key, v) in row["memory_tls"].as_object().into_iter().flatten() {
            if name.starts_with("ssegate") && v["streams"].as_u64().unwrap_or(0) == 0 {
                failures.push(format!("{name}: no idle stream opened over {key}: {v}"));
            }
        }
    }
    // Resume through ssegate: every stream on the killed backend carried on
    // in its response, every id once and in order; resume off and on both
    // held idle streams and carried events.
    for (name, v) in report["resume"]["kill"].as_object().into_iter().flatten() {
        if !name.starts_with("ssegate") {
            continue;
        }
        let ok = v["error"].is_null()
            && v["disconnects"].as_u64() == Some(0)
            && v["duplicate_or_out_of_order_ids"].as_u64() == Some(0)
            && v["missing_ids"].as_u64() == Some(0)
            && v["no_event_after_kill"].as_u64() == Some(0)
            && v["on_killed_backend"].as_u64().unwrap_or(0) > 0;
        if !ok {
            failures.push(format!("resume, {name}: {v}"));
        }
    }
    for (key, m) in report["resume"]["cost"]["memory"].as_object().into_iter().flatten() {
        if m["off_bytes_per_stream"].is_null() || m["on_bytes_per_stream"].is_null() {
            failures.push(format!("resume cost, {key}: no idle stream opened: {m}"));
        }
    }
    for (name, v) in report["resume"]["cost"]["latency"].as_object().into_iter().flatten() {
        if v["failed_streams"].as_u64() != Some(0) || v["p50"].is_null() {
            failures.push(format!("resume cost, {name}: event streams failed: {v}"));
        }
    }
    for (series, v) in report["route_change"].as_object().into_iter().flatten() {
        if let Some(e) = v["error"].as_str() {
            failures.push(format!("route change, {series}: {e}"));
        }
    }
    for name in ["direct", "ssegate (Disabled)", "ssegate (Enabled)"] {
        let ran = report["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["target"] == name && r["skipped"].is_null());
        if !ran {
            failures.push(format!("{name} did not run"));
        }
    }
    // ssegate (Disabled) serves TLS: a smoke run that wanted the h2
    // scenarios and has no figure from it lost them without an error.
    let wanted = |s: &str| {
        report["options"]["scenarios"]
            .as_array()
            .is_none_or(|l| l.iter().any(|x| x == s || x == "h2"))
    };
    if let Some(row) = report["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["target"] == "ssegate (Disabled)" && r["skipped"].is_null())
    {
        for (scenario, key) in [("h2_latency", "h2_latency_ms"), ("h2_events", "h2_throughput")] {
            if wanted(scenario) && row[key].is_null() {
                failures.push(format!("ssegate (Disabled): no {scenario} figures"));
            }
        }
    }
    failures
}

/// The figures of one latency run, as results.json has them.
fn latency_json(lat: &load::LatencyResult) -> Value {
    let q = |q: f64| ms(lat.hist.value_at_quantile(q));
    json!({"p50": q(0.5), "p99": q(0.99), "p99.9": q(0.999), "events": lat.events, "failed_streams": lat.failed_streams})
}

/// The latency scenarios (cleartext, and over TLS h2 where the target has
/// TLS) `o.rounds` times for every target, in turns (each round starting
/// with the next target), all targets running throughout. Per target, under
/// the row's own keys (`latency_ms`, `h2_latency_ms`): the median of the
/// rounds' p50, p99 and p99.9, and each round.
async fn interleaved_latency(o: &Options) -> std::collections::HashMap<&'static str, Value> {
    let (h1, h2) = (o.wants("latency"), o.wants_h2("h2_latency"));
    let mut running = Vec::new();
    for kind in Kind::ALL {
        let wanted = o
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|n| kind.name().starts_with(n.as_str())));
        if !wanted || kind == Kind::SsegateEnabled {
            continue;
        }
        let up = upstream::spawn("bench");
        if let Ok(target) = peers::start(kind, up.addr).await {
            if h1 || target.tls_addr.is_some() {
                running.push((kind, target, up, Vec::new(), Vec::new()));
            }
        }
    }
    let secs = Duration::from_secs(o.seconds);
    for round in 0..o.rounds {
        for i in 0..running.len() {
            let at = (round + i) % running.len();
            let (kind, target, _, h1_rounds, h2_rounds) = &mut running[at];
            let runs = [
                (h1.then_some(target.addr), load::Transport::Plain, "", h1_rounds),
                (h2.then_some(target.tls_addr).flatten(), H2, " over TLS h2", h2_rounds),
            ];
            for (addr, transport, label, results) in runs {
                let Some(addr) = addr else { continue };
                let lat = load::sse_latency(addr, transport, o.streams, o.rate, secs).await;
                let q = |q: f64| ms(lat.hist.value_at_quantile(q));
                eprintln!(
                    "   round {round}, {}{label}: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
                    kind.name(),
                    q(0.5),
                    q(0.99),
                    q(0.999)
                );
                results.push(latency_json(&lat));
                // The kernel tears the last streams' sockets down.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let summary = |results: &[Value]| {
        let median = |key: &str| {
            let mut v: Vec<f64> = results.iter().filter_map(|r| r[key].as_f64()).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        let sum = |key: &str| results.iter().filter_map(|r| r[key].as_u64()).sum::<u64>();
        json!({
            "p50": median("p50"),
            "p99": median("p99"),
            "p99.9": median("p99.9"),
            "events": sum("events"),
            "failed_streams": sum("failed_streams"),
            "rounds": results,
        })
    };
    running
        .into_iter()
        .map(|(kind, _target, _up, h1_rounds, h2_rounds)| {
            let mut out = json!({});
            if !h1_rounds.is_empty() {
                out["latency_ms"] = summary(&h1_rounds);
            }
            if !h2_rounds.is_empty() {
                out["h2_latency_ms"] = summary(&h2_rounds);
            }
            (kind.name(), out)
        })
        .collect()
}

/// Every per-target scenario but idle-over-TLS; `interleaved` holds the
/// latency figures already measured in rounds, if any (see
/// [`interleaved_latency`]).
async fn measure(o: &Options, target: &peers::Target, interleaved: Value) -> Value {
    let addr = target.addr;
    let secs = Duration::from_secs(o.seconds);
    let is_buffered = target.kind == Kind::SsegateEnabled;
    let mut row = json!({"target": target.kind.name()});

    // Plain requests first: the idle-stream test leaves thousands of
    // sockets for the kernel to tear down, which would weigh on what follows.
    if target.kind != Kind::SsegateDisabled && o.wants("plain") {
        let closed = load::plain(addr, 32, None, Duration::from_secs(o.seconds.min(5))).await;
        let fixed_rate = 5000.0;
        let fixed = load::plain(addr, 32, Some(fixed_rate), Duration::from_secs(o.seconds.min(5))).await;
        eprintln!(
            "   plain: {:.0} req/s closed (p99 {:.3} ms), p99 {:.3} ms at {fixed_rate} req/s, {} errors",
            closed.rps,
            ms(closed.hist.value_at_quantile(0.99)),
            ms(fixed.hist.value_at_quantile(0.99)),
            closed.errors + fixed.errors
        );
        row["plain"] = json!({
            "closed_rps": closed.rps,
            "closed_p99_ms": ms(closed.hist.value_at_quantile(0.99)),
            "fixed_rate": fixed_rate,
            "fixed_p99_ms": ms(fixed.hist.value_at_quantile(0.99)),
            "errors": closed.errors + fixed.errors,
        });
    }
    // The streaming scenarios, cleartext and then over TLS h2 (the targets
    // with a TLS listener): the same upstream streams and figures, under
    // keys prefixed `h2_`.
    let transports = [(Some(addr), load::Transport::Plain, ""), (target.tls_addr, H2, "h2_")];
    for (addr, transport, prefix) in transports {
        let Some(addr) = addr.filter(|_| !is_buffered) else {
            continue;
        };
        let (label, wants_latency, wants_events) = if prefix.is_empty() {
            ("", o.wants("latency"), o.wants("throughput"))
        } else {
            (" over TLS h2", o.wants_h2("h2_latency"), o.wants_h2("h2_events"))
        };
        if !prefix.is_empty() && (wants_latency || wants_events) {
            // The kernel tears the cleartext streams' sockets down.
            tokio::time::sleep(Duration::from_millis(if o.smoke { 300 } else { 1000 })).await;
        }
        let key = format!("{prefix}latency_ms");
        if let Some(latency) = interleaved.get(&key).filter(|v| !v.is_null()) {
            eprintln!(
                "   latency{label} (median of {} interleaved rounds): {latency}",
                o.rounds
            );
            row[&key] = latency.clone();
        } else if wants_latency {
            // The proxy's threads, read when the streams are open and warm
            // (sse_latency's ramp and warm-up take 2 s) and again at the end:
            // which of them ran while events were being measured.
            let threads_before = target.pid().map(|pid| {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    peers::thread_times(pid)
                })
            });
            let lat = load::sse_latency(addr, transport, o.streams, o.rate, secs).await;
            if let (Some(before), Some(pid)) = (threads_before, target.pid()) {
                let threads = peers::thread_delta(&before.await.unwrap(), &peers::thread_times(pid));
                eprintln!("   threads that ran: {threads}");
                row[format!("{prefix}latency_threads")] = threads;
            }
            eprintln!(
                "   latency{label}: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms over {} events ({} streams failed)",
                ms(lat.hist.value_at_quantile(0.5)),
                ms(lat.hist.value_at_quantile(0.99)),
                ms(lat.hist.value_at_quantile(0.999)),
                lat.events,
                lat.failed_streams
            );
            row[&key] = latency_json(&lat);
        }
        if wants_events {
            let key = format!("{prefix}throughput");
            match load::throughput(addr, transport, Duration::from_secs(o.seconds.min(5))).await {
                Ok((eps, bps)) => {
                    eprintln!("   throughput{label}: {:.0} events/s, {:.1} MB/s", eps, bps / 1e6);
                    row[&key] = json!({"events_per_s": eps, "mb_per_s": bps / 1e6});
                }
                Err(e) => {
                    eprintln!("   throughput{label}: {e}");
                    row[&key] = json!({"error": e.to_string()});
                }
            }
        }
    }
    if !is_buffered && o.wants("idle") {
        if let Some(pid) = target.pid() {
            let before = peers::tree_rss(pid);
            let (opened, after) =
                load::hold_idle(addr, load::Transport::Plain, "/idle", o.idle, || peers::tree_rss(pid)).await;
            let per = after.saturating_sub(before) as f64 / opened.max(1) as f64;
            eprintln!("   memory: {opened} idle streams, {:.1} KiB per stream", per / 1024.0);
            row["memory"] =
                json!({"streams": opened, "bytes_per_stream": per, "rss_before": before, "rss_after": after});
        }
    }

    row
}

/// RSS growth per idle stream over TLS, each transport on a freshly started
/// target: a process that already held (and freed) thousands of streams
/// would serve the next ones from its allocator's free lists and look
/// cheaper than it is.
async fn idle_over_tls(o: &Options, kind: Kind, upstream: SocketAddr) -> Value {
    let mut out = json!({});
    for transport in TLS_TRANSPORTS {
        let key = transport.key();
        // `--scenarios tls` runs all three; `--scenarios tls_h1` just one.
        if o.scenarios.is_some() && !o.wants("tls") && !o.wants(&key) {
            continue;
        }
        let target = match peers::start(kind, upstream).await {
            Ok(t) => t,
            Err(why) => {
                out[&key] = json!({"error": why});
                continue;
            }
        };
        let (Some(pid), Some(tls)) = (target.pid(), target.tls_addr) else {
            continue;
        };
        let before = peers::tree_rss(pid);
        let (opened, after) = load::hold_idle(tls, transport, "/idle", o.idle, || peers::tree_rss(pid)).await;
        let per = after.saturating_sub(before) as f64 / opened.max(1) as f64;
        eprintln!(
            "   memory over TLS ({key}): {opened} idle streams, {:.1} KiB per stream",
            per / 1024.0
        );
        out[&key] = json!({"streams": opened, "bytes_per_stream": per, "rss_before": before, "rss_after": after});
        drop(target);
        // The kernel tears the streams' sockets down (less to wait for in CI's smoke).
        tokio::time::sleep(Duration::from_millis(if o.smoke { 300 } else { 3000 })).await;
    }
    out
}

/// Time from a config change to the first request that sees it: ssegate's
/// folder source, and Traefik's file provider, flipping between two upstreams.
async fn route_flips(o: &Options) -> Value {
    let (up_a, up_b) = (upstream::spawn("a"), upstream::spawn("b"));
    let (a, b) = (up_a.addr, up_b.addr);
    let mut out = json!({});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    let services = [("a", a), ("b", b)];
    std::fs::write(&file, peers::ssegate_config("Disabled", &services, "a")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_ssegate"), "standalone", "--dir"])
        .arg(dir.path())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let write = |to: &str| std::fs::write(&file, peers::ssegate_config("Disabled", &services, to)).unwrap();
    out["ssegate standalone"] = flip_series("ssegate standalone", addr, o.flips, write).await;
    let _ = child.kill();
    let _ = child.wait();

    let traefik = peers::venv_bin("traefik");
    if traefik.exists() {
        let tdir = tempfile::tempdir().unwrap();
        let dynamic = tdir.path().join("dynamic.yaml");
        std::fs::write(&dynamic, peers::traefik_dynamic(a)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(tdir.path().join("static.yaml"), peers::traefik_static(port, &dynamic)).unwrap();
        let mut child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(&traefik)
            .arg(format!("--configFile={}", tdir.path().join("static.yaml").display()))
            .env("GOMAXPROCS", "1")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let write = |to: &str| std::fs::write(&dynamic, peers::traefik_dynamic(if to == "a" { a } else { b })).unwrap();
        out["traefik file provider"] = flip_series("traefik file provider", addr, o.flips, write).await;
        let _ = child.kill();
        let _ = child.wait();
    } else {
        out["traefik file provider"] = json!({"skipped": "traefik not installed"});
    }
    out["ssegate controller (kubectl patch)"] = controller::patch_to_live(o.flips.min(20)).await;
    out
}

async fn flip_series(name: &str, addr: SocketAddr, flips: usize, write: impl Fn(&str)) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !load::fetch(addr, "/plain")
        .await
        .is_ok_and(|b| b.contains("upstream a"))
    {
        if Instant::now() > deadline {
            return json!({"error": "never served the first upstream"});
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut times = Vec::new();
    for i in 0..flips {
        let to = if i % 2 == 0 { "b" } else { "a" };
        tokio::time::sleep(Duration::from_millis(150)).await;
        let written = Instant::now();
        write(to);
        loop {
            if let Ok(body) = load::fetch(addr, "/plain").await {
                if body.contains(&format!("upstream {to}")) {
                    break;
                }
            }
            if written.elapsed() > Duration::from_secs(10) {
                return json!({"error": format!("flip {i} never applied")});
            }
        }
        times.push(written.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "   route change to live ({name}): p50 {:.1} ms, p99 {:.1} ms",
        pick(0.5),
        pick(0.99)
    );
    json!({"flips": flips, "p50_ms": pick(0.5), "p99_ms": pick(0.99)})
}

/// Building the table from 10,000 Routes, and rebuilding after one change.
fn rebuild_cost() -> Value {
    use ssegate::model::*;
    let mut objects = Objects::default();
    let svc = ObjectKey::new("default", "svc");
    objects.services.insert(
        svc.clone(),
        ServiceObject {
            key: svc,
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
            }],
        },
    );
    for i in 0..10_000 {
        let key = ObjectKey::new("default", format!("r{i}"));
        let spec: ssegate::api::RouteSpec = serde_yaml::from_str(&format!(
            "hostnames: [h{i}.example.com]\nrules: [{{matches: [{{path: {{value: /p{i}}}}}], backendRefs: [{{name: svc, port: 80}}]}}]"
        ))
        .unwrap();
        objects.routes.insert(
            key.clone(),
            ssegate::translate::route::translate(key, Some(1), i, &spec),
        );
    }
    let time = |objects: &Objects| {
        // The build alone, as `Applier::apply_since` waits for it; the
        // table a build replaces is dropped after the swap (off the path
        // to live), timed apart.
        let (mut builds, mut drops): (Vec<f64>, Vec<f64>) = (0..7)
            .map(|g| {
                let t = Instant::now();
                let table = std::hint::black_box(build_table(objects, g));
                let built = t.elapsed().as_secs_f64() * 1000.0;
                let t = Instant::now();
                drop(table);
                (built, t.elapsed().as_secs_f64() * 1000.0)
            })
            .unzip();
        builds.sort_by(f64::total_cmp);
        drops.sort_by(f64::total_cmp);
        (builds[builds.len() / 2], drops[drops.len() / 2])
    };
    let (full, dropped) = time(&objects);
    let key = ObjectKey::new("default", "r5000");
    let changed = objects.routes.get_mut(&key).unwrap();
    for rule in &mut changed.translated.as_mut().unwrap().rules {
        rule.settings.buffering = ssegate::api::ProxyBuffering::Enabled;
    }
    let (one, _) = time(&objects);
    eprintln!(
        "== table rebuild: 10k routes {full:.1} ms, after one change {one:.1} ms, the old table's drop {dropped:.1} ms (median of 7)"
    );
    json!({"routes": 10_000, "full_ms": full, "one_change_ms": one, "drop_ms": dropped})
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    // Counted from /proc/cpuinfo: the harness itself is pinned to one core.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    json!({"cores": cores, "cpu": cpu})
}

/// The Markdown table: each figure with its ratio to direct and to nginx.
/// The commit measured (and `+dirty` when the tree has changes), so that
/// a committed results file names what it measured.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head}+dirty")
    } else {
        head
    }
}

fn markdown(r: &Value) -> String {
    let targets = r["targets"].as_array().unwrap();
    let find = |name: &str| targets.iter().find(|t| t["target"] == name);
    let direct = find("direct");
    let nginx = find("nginx");
    let get = |t: Option<&Value>, path: &[&str]| -> Option<f64> {
        let mut v = t?;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_f64()
    };
    let ratio = |x: Option<f64>, base: Option<f64>| match (x, base) {
        (Some(x), Some(b)) if b > 0.0 => format!("{:.2}×", x / b),
        _ => "–".into(),
    };
    let mut out = format!(
        "Benchmark {} of commit {} on {} cores ({}); {} streams × {} events/s, {} idle streams, {} s per measurement.\n\n",
        r["date"].as_str().unwrap_or(""),
        r["commit"].as_str().unwrap_or("unknown"),
        r["machine"]["cores"],
        r["machine"]["cpu"].as_str().unwrap_or(""),
        r["options"]["streams"],
        r["options"]["rate"],
        r["options"]["idle"],
        r["options"]["seconds"]
    );
    out.push_str("| target | p50 ms | p99 ms | p99.9 ms | added p99 ms (÷ nginx) | KiB/stream (÷ nginx) | events/s 1 stream (÷ direct) | req/s closed (÷ direct, ÷ nginx) | p99 ms @5k req/s |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let added = |t: Option<&Value>| Some(get(t, &["latency_ms", "p99"])? - get(direct, &["latency_ms", "p99"])?);
    for t in targets {
        let name = t["target"].as_str().unwrap_or("");
        if let Some(why) = t.get("skipped") {
            out.push_str(&format!(
                "| {name} | skipped: {} |||||||| \n",
                why.as_str().unwrap_or("")
            ));
            continue;
        }
        let t = Some(t);
        let f = |v: Option<f64>, digits: usize| v.map_or("–".into(), |v| format!("{v:.digits$}"));
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} ({}) | {} ({}) | {} ({}) | {} ({}, {}) | {} |\n",
            f(get(t, &["latency_ms", "p50"]), 3),
            f(get(t, &["latency_ms", "p99"]), 3),
            f(get(t, &["latency_ms", "p99.9"]), 3),
            f(added(t), 3),
            ratio(added(t), added(nginx)),
            f(get(t, &["memory", "bytes_per_stream"]).map(|b| b / 1024.0), 1),
            ratio(
                get(t, &["memory", "bytes_per_stream"]),
                get(nginx, &["memory", "bytes_per_stream"])
            ),
            f(get(t, &["throughput", "events_per_s"]), 0),
            ratio(
                get(t, &["throughput", "events_per_s"]),
                get(direct, &["throughput", "events_per_s"])
            ),
            f(get(t, &["plain", "closed_rps"]), 0),
            ratio(get(t, &["plain", "closed_rps"]), get(direct, &["plain", "closed_rps"])),
            ratio(get(t, &["plain", "closed_rps"]), get(nginx, &["plain", "closed_rps"])),
            f(get(t, &["plain", "fixed_p99_ms"]), 3),
        ));
    }
    // Over TLS h2, each target against nginx's HTTP/2 (issue 23's goal),
    // with its own cleartext HTTP/1.1 figure beside for what TLS and h2 cost.
    let h2 = |t: &&Value| !t["h2_latency_ms"].is_null() || !t["h2_throughput"].is_null();
    if targets.iter().any(|t| h2(&t)) {
        out.push_str("\nOver TLS, HTTP/2 (ALPN h2, one stream per connection), the same streams as above:\n\n| target | p50 ms | p99 ms (÷ nginx) | p99.9 ms (÷ nginx) | p99 ms cleartext HTTP/1.1 | events/s 1 stream (÷ nginx) | events/s cleartext HTTP/1.1 |\n|---|---|---|---|---|---|---|\n");
        let f = |v: Option<f64>, digits: usize| v.map_or("–".into(), |v| format!("{v:.digits$}"));
        for t in targets.iter().filter(h2) {
            let t = Some(t);
            let error = t.and_then(|t| t["h2_throughput"]["error"].as_str());
            out.push_str(&format!(
                "| {} | {} | {} ({}) | {} ({}) | {} | {} ({}) | {} |\n",
                t.and_then(|t| t["target"].as_str()).unwrap_or(""),
                f(get(t, &["h2_latency_ms", "p50"]), 3),
                f(get(t, &["h2_latency_ms", "p99"]), 3),
                ratio(get(t, &["h2_latency_ms", "p99"]), get(nginx, &["h2_latency_ms", "p99"])),
                f(get(t, &["h2_latency_ms", "p99.9"]), 3),
                ratio(
                    get(t, &["h2_latency_ms", "p99.9"]),
                    get(nginx, &["h2_latency_ms", "p99.9"])
                ),
                f(get(t, &["latency_ms", "p99"]), 3),
                error.map_or_else(
                    || f(get(t, &["h2_throughput", "events_per_s"]), 0),
                    |e| format!("error: {e}")
                ),
                ratio(
                    get(t, &["h2_throughput", "events_per_s"]),
                    get(nginx, &["h2_throughput", "events_per_s"])
                ),
                f(get(t, &["throughput", "events_per_s"]), 0),
            ));
        }
    }
    if targets.iter().any(|t| !t["memory_tls"].is_null()) {
        out.push_str("\nMemory per idle stream, KiB (RSS growth ÷ streams), cleartext and over TLS:\n\n| target | HTTP/1.1 | TLS HTTP/1.1 | TLS h2, 1 stream/conn | TLS h2, 100 streams/conn |\n|---|---|---|---|---|\n");
        for t in targets.iter().filter(|t| !t["memory_tls"].is_null()) {
            let kib = |v: &Value| {
                v["bytes_per_stream"].as_f64().map_or("–".to_owned(), |b| {
                    format!("{:.1} ({} streams)", b / 1024.0, v["streams"])
                })
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                t["target"].as_str().unwrap_or(""),
                kib(&t["memory"]),
                kib(&t["memory_tls"]["tls_h1"]),
                kib(&t["memory_tls"]["tls_h2_1"]),
                kib(&t["memory_tls"]["tls_h2_100"]),
            ));
        }
    }
    if let Some(flips) = r["route_change"].as_object().filter(|f| !f.is_empty()) {
        out.push_str("\nRoute change to live (config write to first request that sees it):\n\n| source | p50 ms | p99 ms |\n|---|---|---|\n");
        for (name, v) in flips {
            match (
                v.get("p50_ms").and_then(Value::as_f64),
                v.get("p99_ms").and_then(Value::as_f64),
            ) {
                (Some(p50), Some(p99)) => out.push_str(&format!("| {name} | {p50:.1} | {p99:.1} |\n")),
                _ => out.push_str(&format!(
                    "| {name} | {} | |\n",
                    v.get("skipped")
                        .or(v.get("error"))
                        .and_then(Value::as_str)
                        .unwrap_or("–")
                )),
            }
        }
    }
    if let (Some(full), Some(one)) = (
        r["table_rebuild"]["full_ms"].as_f64(),
        r["table_rebuild"]["one_change_ms"].as_f64(),
    ) {
        out.push_str(&format!(
            "\nTable rebuild, 10,000 Routes: {full:.1} ms; after one change: {one:.1} ms (every change rebuilds the whole table)."
        ));
        if let Some(dropped) = r["table_rebuild"]["drop_ms"].as_f64() {
            out.push_str(&format!(" The replaced table's drop, after the swap: {dropped:.1} ms."));
        }
        out.push('\n');
    }
    resume_markdown(&r["resume"], &r["options"], &mut out);
    out
}

/// The resume scenario's tables (see `resume.rs`).
fn resume_markdown(r: &Value, options: &Value, out: &mut String) {
    let (r_streams, r_rate) = (&options["streams"], &options["rate"]);
    let f = |v: &Value, digits: usize| v.as_f64().map_or("–".into(), |v| format!("{v:.digits$}"));
    if let Some(kill) = r["kill"].as_object().filter(|k| !k.is_empty()) {
        out.push_str("\nResume: one of two backends SIGKILLed under EventSource-like clients (on an end, wait 3 s, ask again with `Last-Event-ID`); gap = kill to the client's first event from the other backend, for the clients on the killed one:\n\n| through | streams × events/s | on killed backend | gap min ms | gap p50 ms | gap p90 ms | gap p99 ms | gap max ms | client disconnects | reconnects | duplicate / out-of-order ids | missing ids | no event after kill | listen overflows (machine) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for (name, v) in kill {
            if let Some(why) = v["skipped"].as_str().or(v["error"].as_str()) {
                out.push_str(&format!("| {name} | {why} ||||||||||||| \n"));
                continue;
            }
            out.push_str(&format!(
                "| {name} | {} × {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                v["streams"],
                v["rate"],
                v["on_killed_backend"],
                f(&v["gap_ms"]["min"], 1),
                f(&v["gap_ms"]["p50"], 1),
                f(&v["gap_ms"]["p90"], 1),
                f(&v["gap_ms"]["p99"], 1),
                f(&v["gap_ms"]["max"], 1),
                v["disconnects"],
                v["reconnects"],
                v["duplicate_or_out_of_order_ids"],
                v["missing_ids"],
                v["no_event_after_kill"],
                v["listen_overflows"],
            ));
        }
        for (name, v) in kill {
            let m = &v["metrics"];
            if m.is_null() {
                continue;
            }
            let resumes: Vec<String> = m["resumes"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(labels, n)| format!("`{{{labels}}}` {n}"))
                .collect();
            out.push_str(&format!(
                "\n{name}, its own metrics after the run: `ssegate_stream_resumes_total` {}; `ssegate_stream_resume_gap_seconds`: {} resumes, mean {} ms, p50 within the ≤ {} ms bucket, p99 within ≤ {} ms.\n",
                if resumes.is_empty() { "none".to_owned() } else { resumes.join(", ") },
                m["gap_count"],
                f(&m["gap_mean_ms"], 2),
                m["gap_p50_bucket_le_ms"],
                m["gap_p99_bucket_le_ms"],
            ));
        }
    }
    let cost = &r["cost"];
    if cost.as_object().is_some_and(|c| !c.is_empty()) {
        out.push_str(&format!(
            "\nResume off against on, for streams that never need it (ssegate `Disabled`, the same Route with and without `sse.resume`; idle streams that carried an id, `{}`; medians of {} rounds for memory, each on a fresh process, and of {} interleaved rounds of {} streams × {} events/s for latency):\n\n| figure | resume off | resume on | on − off |\n|---|---|---|---|\n",
            cost["idle_path"].as_str().unwrap_or(""),
            cost["rounds"],
            cost["latency_rounds"],
            r_streams,
            r_rate,
        ));
        for (key, label) in [("h1", "HTTP/1.1"), ("tls_h2_1", "TLS h2, 1 stream/conn")] {
            let m = &cost["memory"][key];
            let kib = |v: &Value| v.as_f64().map_or("–".to_owned(), |b| format!("{:.2}", b / 1024.0));
            out.push_str(&format!(
                "| KiB per idle stream, {label} | {} | {} | {} ({} bytes) |\n",
                kib(&m["off_bytes_per_stream"]),
                kib(&m["on_bytes_per_stream"]),
                kib(&m["extra_bytes_per_stream"]),
                f(&m["extra_bytes_per_stream"], 0),
            ));
        }
        let (off, on) = (
            &cost["latency"][peers::Kind::SsegateDisabled.name()],
            &cost["latency"][peers::Kind::SsegateResume.name()],
        );
        for q in ["p50", "p99", "p99.9"] {
            let diff = match (off[q].as_f64(), on[q].as_f64()) {
                (Some(a), Some(b)) => format!("{:+.3}", b - a),
                _ => "–".into(),
            };
            out.push_str(&format!(
                "| per-event {q} ms, HTTP/1.1 (median of rounds) | {} | {} | {diff} |\n",
                f(&off[q], 3),
                f(&on[q], 3)
            ));
        }
        for q in ["p50", "p99", "p99.9"] {
            let (a, b) = (&off["best_round"][q], &on["best_round"][q]);
            let diff = match (a.as_f64(), b.as_f64()) {
                (Some(a), Some(b)) => format!("{:+.3}", b - a),
                _ => "–".into(),
            };
            out.push_str(&format!(
                "| per-event {q} ms, HTTP/1.1 (best round) | {} | {} | {diff} |\n",
                f(a, 3),
                f(b, 3)
            ));
        }
    }
}
