//! The `resume` scenario: what a client sees when a backend is SIGKILLed
//! under its stream, through ssegate with `sse.resume` on and through nginx
//! with a browser's EventSource behaviour; and what resume costs when no
//! stream needs it.
//!
//! Kill: two upstream processes (the harness's own, `--upstream a` and
//! `--upstream b`, two endpoints of one Service) serve numbered events that
//! resume from `Last-Event-ID + 1`, each data line tagged with the
//! upstream's name. `resume_streams` clients ([`load::event_source`]: on an
//! end, wait `retry` (3 s, EventSource's default) and ask again with
//! `Last-Event-ID`) open over a second, read for two, then upstream `a`
//! (about half the streams) is SIGKILLed. Per client: whether its response
//! ended (a disconnect) and it asked again (a reconnect), ids exactly once
//! and in order, and for the clients on `a` the gap from the kill to their
//! first event from `b`. ssegate's `ssegate_stream_resumes_total` and
//! `ssegate_stream_resume_gap_seconds` are read after the run.
//!
//! Cost: ssegate with resume off and on (the same Route otherwise), each
//! freshly started per measurement: RSS per idle stream that has carried an
//! id (`/idle?id=1`, the harness's idle machinery), cleartext HTTP/1.1 and
//! TLS h2 with one stream per connection, in alternating rounds (`--rounds`,
//! 2 to 3); and the latency scenario's per-event p50 / p99, both running
//! throughout, in interleaved rounds (`--rounds`, at least 2), medians.

use super::load::{self, Transport};
use super::peers::{self, Kind};
use super::upstream;
use super::Options;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A browser's EventSource waits this long before reconnecting, unless the
/// stream said otherwise (`retry:`; the harness's upstream does not).
const EVENTSOURCE_RETRY: Duration = Duration::from_secs(3);

pub async fn run(o: &Options) -> Value {
    let wants = |name: &str| {
        o.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|n| name.starts_with(n.as_str())))
    };
    let mut kill = json!({});
    if wants("ssegate") {
        eprintln!("== resume: ssegate, a backend SIGKILLed");
        kill["ssegate (resume on)"] = ssegate_kill(o).await;
    }
    if wants("nginx") {
        if o.smoke {
            // Its gap is EventSource's 3 s retry by construction: more
            // than a smoke run's second, and nothing of ssegate's.
            kill["nginx + EventSource"] = json!({"skipped": "not in --smoke (waits out the 3 s EventSource retry)"});
        } else {
            eprintln!("== resume: nginx + EventSource, a backend SIGKILLed");
            kill["nginx + EventSource"] = nginx_kill(o).await;
        }
    }
    let cost = if wants("ssegate") { cost(o).await } else { json!({}) };
    json!({"kill": kill, "cost": cost})
}

/// How long clients read after the kill: long enough for the EventSource
/// retry and a reconnect.
fn after_kill(o: &Options, retry_matters: bool) -> Duration {
    if retry_matters {
        Duration::from_secs(o.seconds.max(6))
    } else {
        Duration::from_secs(o.seconds.clamp(1, 5))
    }
}

async fn ssegate_kill(o: &Options) -> Value {
    let mut ups = [upstream::spawn("a"), upstream::spawn("b")];
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = format!(
        "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: bench}}\nspec:\n  proxyBuffering: Disabled\n{}  rules: [{{backendRefs: [{{name: bench, port: 80}}]}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: bench}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n",
        peers::RESUME_ON
    );
    for (name, up) in ["a", "b"].iter().zip(&ups) {
        yaml.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: bench-{name}, labels: {{kubernetes.io/service-name: bench}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n",
            up.addr.port()
        ));
    }
    std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
    let (port, admin) = (peers::free_port(), peers::free_port());
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let child = Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_ssegate"), "standalone", "--dir"])
        .arg(dir.path())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--access-log=false",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let proxy = Reaped(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    if let Err(e) = wait_serving(addr).await {
        return json!({"error": e});
    }
    let mut out = kill_run(o, addr, &mut ups, after_kill(o, false)).await;
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    out["metrics"] = match load::fetch(admin, "/metrics").await {
        Ok(text) => resume_metrics(&text),
        Err(e) => json!({"error": e.to_string()}),
    };
    let warnings: Vec<String> = std::fs::read_to_string(dir.path().join("stderr.log"))
        .unwrap_or_default()
        .lines()
        .take(20)
        .map(str::to_owned)
        .collect();
    out["proxy_log"] = json!(warnings);
    drop(proxy);
    out
}

async fn nginx_kill(o: &Options) -> Value {
    let Some(bin) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        return json!({"skipped": "nginx not installed (bench/setup.sh)"});
    };
    let mut ups = [upstream::spawn("a"), upstream::spawn("b")];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let port = peers::free_port();
    // As the harness's nginx row, with both endpoints in the upstream block
    // (round robin; a refused connect goes to the next one, nginx's default).
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "master_process off; worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log warn; worker_rlimit_nofile 300000;
events {{ worker_connections 200000; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream up {{ server 127.0.0.1:{a}; server 127.0.0.1:{b}; keepalive 1024; keepalive_requests 100000000; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_buffering off;
      proxy_read_timeout 1h;
    }}
  }}
}}
",
            a = ups[0].addr.port(),
            b = ups[1].addr.port(),
        ),
    )
    .unwrap();
    let child = Command::new("taskset")
        .args(["-c", "0", bin, "-c"])
        .arg(dir.path().join("nginx.conf"))
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proxy = Reaped(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    if let Err(e) = wait_serving(addr).await {
        return json!({"error": e});
    }
    let out = kill_run(o, addr, &mut ups, after_kill(o, true)).await;
    drop(proxy);
    out
}

/// A proxy process, killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_serving(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if load::fetch(addr, "/plain")
            .await
            .is_ok_and(|b| b.contains("hello from upstream"))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{addr} did not serve within 20s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The clients, the kill of `ups[0]` (tagged `a`), and their figures.
async fn kill_run(o: &Options, addr: SocketAddr, ups: &mut [upstream::Upstream; 2], after: Duration) -> Value {
    let n = o.resume_streams;
    let kill: Arc<OnceLock<Instant>> = Arc::default();
    let ramp = Duration::from_secs(1);
    let warm = Duration::from_secs(2);
    let start = Instant::now();
    let end = start + ramp + warm + after;
    let rate = o.rate;
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let kill = kill.clone();
            let delay = ramp.mul_f64(i as f64 / n.max(1) as f64);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                load::event_source(addr, rate, EVENTSOURCE_RETRY, end, kill, "a").await
            })
        })
        .collect();
    tokio::time::sleep_until((start + ramp + warm).into()).await;
    let overflows = listen_overflows();
    // The kill's instant is taken before the signal: the gap includes it.
    let _ = kill.set(Instant::now());
    ups[0].kill();
    eprintln!("   SIGKILLed upstream a; reading for {} s", after.as_secs());
    let mut all = Vec::with_capacity(n);
    for c in clients {
        if let Ok(c) = c.await {
            all.push(c);
        }
    }
    let mut out = summarize(n, rate, &all, after);
    // Machine-wide: connections dropped because a listen queue was full
    // (a client's SYN is then retransmitted after 1 s).
    out["listen_overflows"] = json!(listen_overflows().zip(overflows).map(|(b, a)| b.saturating_sub(a)));
    out
}

/// TcpExt ListenOverflows from /proc/net/netstat.
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (keys, values) = (lines.next()?, lines.next()?);
    let at = keys.split_whitespace().position(|k| k == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

fn summarize(n: usize, rate: u64, all: &[load::EventSourceClient], after: Duration) -> Value {
    let sum = |f: fn(&load::EventSourceClient) -> u64| all.iter().map(f).sum::<u64>();
    let on_killed: Vec<&load::EventSourceClient> = all.iter().filter(|c| c.on_killed == Some(true)).collect();
    let undecided = all.iter().filter(|c| c.on_killed.is_none()).count();
    let mut gaps: Vec<f64> = on_killed
        .iter()
        .filter_map(|c| c.gap)
        .map(|g| g.as_secs_f64() * 1000.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let pick = |q: f64| (!gaps.is_empty()).then(|| gaps[((gaps.len() - 1) as f64 * q).round() as usize]);
    let no_event_after = on_killed.iter().filter(|c| c.gap.is_none()).count();
    let errors: Vec<String> = all.iter().filter_map(|c| c.error.clone()).take(5).collect();
    let killed_disconnects: u64 = on_killed.iter().map(|c| c.disconnects).sum();
    let out = json!({
        "streams": n,
        "clients_done": all.len(),
        "rate": rate,
        "read_after_kill_s": after.as_secs_f64(),
        "on_killed_backend": on_killed.len(),
        "undecided": undecided,
        "events": sum(|c| c.events),
        "disconnects": sum(|c| c.disconnects),
        "disconnects_on_killed": killed_disconnects,
        "reconnects": sum(|c| c.reconnects),
        "duplicate_or_out_of_order_ids": sum(|c| c.duplicates),
        "missing_ids": sum(|c| c.missing),
        "no_event_after_kill": no_event_after,
        "gap_ms": {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": pick(1.0), "min": pick(0.0), "count": gaps.len()},
        "errors": errors,
    });
    eprintln!(
        "   {} streams, {} on the killed backend: gap p50 {:?} ms, p99 {:?} ms, max {:?} ms; {} disconnects, {} reconnects, {} duplicate, {} missing ids, {} with no event after the kill",
        n,
        on_killed.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0),
        out["disconnects"],
        out["reconnects"],
        out["duplicate_or_out_of_order_ids"],
        out["missing_ids"],
        no_event_after
    );
    out
}

/// ssegate's resume counters and gap histogram from `/metrics` text: the
/// lines as they are, and the histogram's count, mean and the buckets that
/// hold its p50 and p99 (summed over routes).
fn resume_metrics(text: &str) -> Value {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ssegate_stream_resume"))
        .collect();
    let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for l in lines
        .iter()
        .filter(|l| l.starts_with("ssegate_stream_resume_gap_seconds_bucket"))
    {
        let Some(le) = l.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += value(l),
            None => buckets.push((le, value(l))),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = |suffix: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("ssegate_stream_resume_gap_seconds_{suffix}")))
            .map(|l| value(l))
            .sum::<f64>()
    };
    let (count, sum) = (total("count"), total("sum"));
    let within = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| count > 0.0 && *c >= q * count)
            .map(|(le, _)| {
                if le.is_finite() {
                    json!(le * 1000.0)
                } else {
                    json!("+Inf")
                }
            })
    };
    let resumes: serde_json::Map<String, Value> = lines
        .iter()
        .filter(|l| l.starts_with("ssegate_stream_resumes_total{"))
        .filter(|l| value(l) > 0.0)
        .map(|l| {
            let labels = l.split('{').nth(1).and_then(|r| r.split('}').next()).unwrap_or("");
            (labels.to_owned(), json!(value(l)))
        })
        .collect();
    json!({
        "resumes": resumes,
        "gap_count": count,
        "gap_mean_ms": if count > 0.0 { Some(sum / count * 1000.0) } else { None },
        "gap_p50_bucket_le_ms": within(0.5),
        "gap_p99_bucket_le_ms": within(0.99),
        "lines": lines,
    })
}

/// Resume off against on, for streams that never need it.
async fn cost(o: &Options) -> Value {
    // RSS per stream varies little from run to run (and each round holds
    // thousands of streams): at most three rounds. Latency, which a busy
    // machine's bursts move, gets every round asked for.
    let (rounds, latency_rounds) = if o.smoke {
        (1, 1)
    } else {
        (o.rounds.clamp(2, 3), o.rounds.max(2))
    };
    let kinds = [Kind::SsegateDisabled, Kind::SsegateResume];
    let mut out = json!({"rounds": rounds, "latency_rounds": latency_rounds, "idle_path": "/idle?id=1"});
    let up = upstream::spawn("bench");
    for transport in [Transport::Plain, Transport::TlsH2 { per_conn: 1 }] {
        let key = transport.key();
        let mut per_kind: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut listed: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            // Alternating which goes first.
            for k in 0..2 {
                let at = (round + k) % 2;
                let kind = kinds[at];
                let target = match peers::start(kind, up.addr).await {
                    Ok(t) => t,
                    Err(why) => {
                        out["memory"][&key] = json!({"error": why});
                        continue;
                    }
                };
                let (Some(pid), Some(addr)) = (
                    target.pid(),
                    if transport == Transport::Plain {
                        Some(target.addr)
                    } else {
                        target.tls_addr
                    },
                ) else {
                    continue;
                };
                let before = peers::tree_rss(pid);
                let (opened, after) =
                    load::hold_idle(addr, transport, "/idle?id=1", o.idle, || peers::tree_rss(pid)).await;
                let per = after.saturating_sub(before) as f64 / opened.max(1) as f64;
                eprintln!(
                    "   resume cost, round {round}, {} ({key}): {opened} idle streams, {:.1} KiB per stream",
                    kind.name(),
                    per / 1024.0
                );
                if opened > 0 {
                    per_kind[at].push(per);
                }
                listed[at].push(json!({"streams": opened, "bytes_per_stream": per}));
                drop(target);
                tokio::time::sleep(Duration::from_millis(if o.smoke { 300 } else { 3000 })).await;
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        let (off, on) = (median(&mut per_kind[0]), median(&mut per_kind[1]));
        for (at, kind) in kinds.iter().enumerate() {
            out["memory"][&key]["rounds"][kind.name()] = json!(listed[at]);
        }
        out["memory"][&key]["off_bytes_per_stream"] = json!(off);
        out["memory"][&key]["on_bytes_per_stream"] = json!(on);
        out["memory"][&key]["extra_bytes_per_stream"] = json!(off.zip(on).map(|(a, b)| b - a));
    }
    drop(up);

    // Latency: both running throughout, in turns.
    let mut running = Vec::new();
    for kind in kinds {
        let up = upstream::spawn("bench");
        match peers::start(kind, up.addr).await {
            Ok(t) => running.push((kind, t, up, Vec::new())),
            Err(why) => out["latency"][kind.name()] = json!({"error": why}),
        }
    }
    let secs = Duration::from_secs(o.seconds);
    for round in 0..latency_rounds {
        for i in 0..running.len() {
            let at = (round + i) % running.len();
            let (kind, target, _, results) = &mut running[at];
            let lat = load::sse_latency(target.addr, Transport::Plain, o.streams, o.rate, secs).await;
            let v = super::latency_json(&lat);
            eprintln!("   resume cost, round {round}, {} latency: {v}", kind.name());
            results.push(v);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    for (kind, _target, _up, results) in running {
        let median = |key: &str| {
            let mut v: Vec<f64> = results.iter().filter_map(|r| r[key].as_f64()).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        let best = |key: &str| results.iter().filter_map(|r| r[key].as_f64()).min_by(f64::total_cmp);
        out["latency"][kind.name()] = json!({
            // The round least disturbed by the machine's other load.
            "best_round": {"p50": best("p50"), "p99": best("p99"), "p99.9": best("p99.9")},
            "p50": median("p50"),
            "p99": median("p99"),
            "p99.9": median("p99.9"),
            "failed_streams": results.iter().filter_map(|r| r["failed_streams"].as_u64()).sum::<u64>(),
            "rounds": results,
        });
    }
    out
}
