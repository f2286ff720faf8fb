//! The real `ssegate` binary as a child process.

use super::{client, free_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

pub struct Ssegate {
    child: Option<Child>,
    log: PathBuf,
    pub proxy: String,
    pub admin: String,
}

impl Drop for Ssegate {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Ssegate {
    /// Starts `ssegate controller` against the test control plane, watching
    /// `namespace` (also the Lease's), as replica `identity`, with `extra`
    /// arguments.
    pub async fn controller(namespace: &str, identity: &str, extra: &[&str], log_dir: &Path) -> Ssegate {
        let kubeconfig = super::cluster::control_plane().kubeconfig.to_str().unwrap().to_owned();
        let mut args = vec![
            "controller",
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            namespace,
            "--lease-namespace",
            namespace,
            "--identity",
            identity,
        ];
        args.extend_from_slice(extra);
        Ssegate::start(&args, log_dir).await
    }

    /// Starts `ssegate ARGS --listen .. --admin ..` and waits for `/readyz`.
    pub async fn start(args: &[&str], log_dir: &Path) -> Ssegate {
        Ssegate::start_with(args, log_dir, |_| {}).await
    }

    /// As [`Ssegate::start`], letting the caller adjust the command first
    /// (resource limits, environment).
    pub async fn start_with(args: &[&str], log_dir: &Path, configure: impl FnOnce(&mut Command)) -> Ssegate {
        Ssegate::start_on("127.0.0.1", args, log_dir, configure).await
    }

    /// As [`Ssegate::start_with`], with the proxy listening on `ip` (such
    /// as `0.0.0.0`, for clients in network namespaces); `proxy` still
    /// names 127.0.0.1.
    pub async fn start_on(ip: &str, args: &[&str], log_dir: &Path, configure: impl FnOnce(&mut Command)) -> Ssegate {
        let (proxy, admin) = (free_port(), free_port());
        let log = log_dir.join(format!("ssegate-{proxy}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_ssegate"));
        configure(&mut command);
        let child = command
            .args(args)
            .args([
                "--listen",
                &format!("{ip}:{proxy}"),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ])
            .env("RUST_LOG", "info,ssegate=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let running = Ssegate {
            child: Some(child),
            log,
            proxy: format!("http://127.0.0.1:{proxy}"),
            admin: format!("http://127.0.0.1:{admin}"),
        };
        running.wait_ready(Duration::from_secs(30)).await;
        running
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The status of a zero-event stream request through the proxy for `host`.
    pub async fn status_of(&self, host: &str) -> u16 {
        client()
            .get(format!("{}/.sse?count=0", self.proxy))
            .header("host", host)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The admin port's `/metrics`, as text.
    pub async fn metrics_text(&self) -> String {
        client()
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `127.0.0.1:PORT` of the proxy listener, for raw sockets.
    pub fn proxy_addr(&self) -> String {
        self.proxy.trim_start_matches("http://").to_owned()
    }

    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = client().get(format!("{}/readyz", self.admin)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "ssegate never became ready:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM, as Kubernetes does.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    /// Waits for the process to exit by itself; `None` if it has not within `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        client()
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The buffering mode the live table gives Route `name` (any namespace).
    pub async fn buffering_of(&self, name: &str) -> String {
        let v = self.admin_json("/debug/routes").await;
        let suffix = format!("/{name}");
        v["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|h| h["matches"].as_array().into_iter().flatten())
            .find(|m| m["route"].as_str().is_some_and(|r| r.ends_with(&suffix)))
            .and_then(|m| m["buffering"].as_str())
            .unwrap_or("")
            .to_owned()
    }
}
