//! The node agent (node-agent/, its own crate) as a child process of a
//! test: built on first use into `<target>/node-agent`, stopped with
//! SIGTERM on drop, and whatever it left behind (network namespaces, its
//! bridge) removed.

use super::cluster::ControlPlane;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Builds `ssegate-node-agent` (its own crate and lockfile) into
/// `<target>/node-agent`, next to this test's own target folder.
pub fn build_agent() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/debug/deps/node_agent-HASH
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let target = target.join("node-agent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["build", "--locked", "--manifest-path"])
        .arg(format!("{ROOT}/node-agent/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "building the node agent took over 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "cargo build of node-agent failed:\n{err}");
    target.join("debug/ssegate-node-agent")
}

/// The agent process; stopped (SIGTERM, then SIGKILL) on drop, and any of
/// its network namespaces left behind removed.
pub struct NodeAgent {
    child: Option<Child>,
    log: PathBuf,
    pub prefix: String,
    pub node: String,
}

impl NodeAgent {
    /// Starts an agent for node `agent-PID` with pods in `pod_network`.0/24
    /// (three octets of the test range), mapping `ssegate:test` to the
    /// built ssegate and `shell:test` to /bin/sh.
    pub fn start(cp: &ControlPlane, dir: &Path, pod_network: &str) -> NodeAgent {
        let exe = build_agent();
        let images = dir.join("images.yaml");
        // `ssegate:test`, and the chart's default image (`ssegate:<appVersion>`).
        let chart = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ssegate/Chart.yaml")).unwrap();
        let app_version = chart
            .lines()
            .find_map(|l| l.strip_prefix("appVersion:"))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap();
        // The "image": a copy of the built binary where any uid can run it
        // (the build's target folder may sit under a home that only root
        // may enter, and pods run as uid 65532).
        use std::os::unix::fs::PermissionsExt;
        let image_dir = dir.join("image");
        std::fs::create_dir_all(&image_dir).unwrap();
        let ssegate = image_dir.join("ssegate");
        std::fs::copy(env!("CARGO_BIN_EXE_ssegate"), &ssegate).unwrap();
        for (path, mode) in [(dir, 0o755), (image_dir.as_path(), 0o755), (ssegate.as_path(), 0o755)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let ssegate = ssegate.display();
        std::fs::write(
            &images,
            // `shell:test`: /bin/sh, for pods whose command is a script.
            format!("ssegate:test: {ssegate}\n\"ssegate:{app_version}\": {ssegate}\nshell:test: /bin/sh\n"),
        )
        .unwrap();
        let pid = std::process::id();
        let node = format!("agent-{pid}");
        let prefix = format!("sa{}", pid % 100_000);
        let log = dir.join("agent.log");
        let child = Command::new(exe)
            .args(["--node", &node, "--netns-prefix", &prefix, "--pod-network", pod_network])
            .arg("--kubeconfig")
            .arg(&cp.kubeconfig)
            .arg("--images")
            .arg(&images)
            .arg("--root-dir")
            .arg(dir.join("root"))
            .args(["--heartbeat-seconds", "2", "--backoff-ms", "500"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        NodeAgent {
            child: Some(child),
            log,
            prefix,
            node,
        }
    }

    /// The agent's log, then every container's output (newest pods too).
    pub fn logs(&self) -> String {
        let mut out = std::fs::read_to_string(&self.log).unwrap_or_default();
        let pods = self.log.with_file_name("root").join("pods");
        for pod in std::fs::read_dir(pods).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(pod.path()).into_iter().flatten().flatten() {
                if file.path().extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(file.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    out.push_str(&format!("--- {}\n", file.path().display()));
                    for line in tail.into_iter().rev() {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// Waits (60 s at most) until the agent's Node reports Ready.
    pub fn wait_ready(&self, cp: &ControlPlane) {
        wait_for(Duration::from_secs(60), "node Ready", self, || {
            let ready = cp.get(
                "default",
                &format!("node/{}", self.node),
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            );
            (ready == "True").then_some(())
        });
    }

    pub fn link_exists(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["link", "show", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    pub fn netns(&self) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.strip_prefix(&self.prefix).is_some_and(|r| r.parse::<u8>().is_ok()))
            .map(str::to_owned)
            .collect()
    }
}

impl NodeAgent {
    /// SIGTERM, as a node shutting down; SIGKILL after 15 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.stop();
        for ns in self.netns() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            let _ = Command::new("ip").args(["link", "del", &format!("{ns}h")]).status();
        }
        let bridge = format!("{}br", self.prefix);
        if self.link_exists(&bridge) {
            let _ = Command::new("ip").args(["link", "del", &bridge]).status();
        }
    }
}

/// Polls `f` every 100 ms until it returns `Some`, failing after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, agent: &NodeAgent, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; agent log:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
