//! Route change to live in cluster mode: `kubectl patch` against a real
//! kube-apiserver (scripts/control-plane.sh, its binaries cached by the
//! test command) until ssegate's live table shows the change.
//!
//! The Route needs no reachable backend: the change is read from
//! `/debug/routes`, which shows each match's buffering mode.

use super::peers::free_port;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct ControlPlane {
    env: Vec<(&'static str, String)>,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    fn script(&self, cmd: &str) -> std::process::Output {
        Command::new(format!("{ROOT}/scripts/control-plane.sh"))
            .arg(cmd)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("run scripts/control-plane.sh")
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .map_err(|e| format!("kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The buffering mode `/debug/routes` shows for the Route `bench`.
async fn live_mode(admin: std::net::SocketAddr) -> Option<String> {
    let body = super::load::fetch(admin, "/debug/routes").await.ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["hosts"]
        .as_array()?
        .iter()
        .flat_map(|h| h["matches"].as_array().into_iter().flatten())
        .find(|m| m["route"] == "bench/bench")
        .and_then(|m| m["buffering"].as_str())
        .map(str::to_owned)
}

/// `flips` patches, each timed from kubectl's exit, and from its start, to
/// the first `/debug/routes` that shows it.
pub async fn patch_to_live(flips: usize) -> Value {
    let bin = std::env::var("SSEGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ssegate/bin"));
    if !bin.join("kube-apiserver").exists() || Command::new("kubectl").arg("version").arg("--client").output().is_err()
    {
        return json!({"skipped": "kube-apiserver not installed (scripts/control-plane.sh build)"});
    }
    match run(flips).await {
        Ok(v) => v,
        Err(e) => json!({"error": e}),
    }
}

async fn run(flips: usize) -> Result<Value, String> {
    let dir = PathBuf::from(format!("/tmp/ssegate-bench-cp-{}", std::process::id()));
    let cp = ControlPlane {
        kubeconfig: dir.join("kubeconfig"),
        env: vec![
            ("SSEGATE_CP_DIR", dir.display().to_string()),
            ("ETCD_PORT", free_port().to_string()),
            ("ETCD_PEER_PORT", free_port().to_string()),
            ("API_PORT", free_port().to_string()),
            ("SSEGATE_CP_OWNER", std::process::id().to_string()),
        ],
    };
    let out = cp.script("start");
    if !out.status.success() {
        return Err(format!("control plane: {}", String::from_utf8_lossy(&out.stderr)));
    }
    cp.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &format!("{ROOT}/crds/routes.ssegate.dev.yaml"),
    ])?;
    cp.kubectl(&[
        "wait",
        "--for=condition=established",
        "crd/routes.ssegate.dev",
        "--timeout=60s",
    ])?;
    cp.kubectl(&["create", "namespace", "bench"])?;
    let route = "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {name: bench, namespace: bench}\nspec:\n  proxyBuffering: Disabled\n  rules: [{backendRefs: [{name: none, port: 80}]}]\n";
    let file = dir.join("route.yaml");
    std::fs::write(&file, route).map_err(|e| e.to_string())?;
    cp.kubectl(&["apply", "-f", file.to_str().unwrap()])?;

    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _ssegate = Killed(
        Command::new("taskset")
            .args(["-c", "0", env!("CARGO_BIN_EXE_ssegate"), "controller", "--kubeconfig"])
            .arg(&cp.kubeconfig)
            .args([
                "--namespace",
                "bench",
                "--lease-namespace",
                "bench",
                "--tls-secrets=false",
            ])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin", &admin.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    wait_mode(admin, "Disabled", Duration::from_secs(30)).await?;

    let mut after_exit = Vec::new();
    let mut whole = Vec::new();
    for i in 0..flips {
        let mode = if i % 2 == 0 { "Enabled" } else { "Disabled" };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let patch = format!("{{\"spec\":{{\"proxyBuffering\":\"{mode}\"}}}}");
        cp.kubectl(&["patch", "-n", "bench", "route/bench", "--type=merge", "-p", &patch])?;
        let exited = Instant::now();
        wait_mode(admin, mode, Duration::from_secs(10)).await?;
        after_exit.push(exited.elapsed().as_secs_f64() * 1000.0);
        whole.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        json!({"p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0)})
    };
    let (exit, all) = (summary(after_exit), summary(whole));
    eprintln!(
        "   route change to live (ssegate controller, kubectl patch): p50 {:.1} ms after kubectl exits, {:.1} ms including kubectl",
        exit["p50_ms"].as_f64().unwrap_or_default(),
        all["p50_ms"].as_f64().unwrap_or_default()
    );
    Ok(
        json!({"flips": flips, "p50_ms": exit["p50_ms"], "p99_ms": exit["p99_ms"], "after_kubectl_exit": exit, "including_kubectl": all}),
    )
}

async fn wait_mode(admin: std::net::SocketAddr, mode: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while live_mode(admin).await.as_deref() != Some(mode) {
        if Instant::now() > deadline {
            return Err(format!("{mode} never became live within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}
