//! Test clients with real source addresses of their own: a network
//! namespace joined to the host by a veth pair, with two addresses on its
//! side (one in 10.214.0.0/16, one in 172.31.0.0/16), from which `curl`
//! connects to a proxy listening on the host's side. Needs root.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct NetnsClient {
    netns: String,
    host_if: String,
    /// The host's side, where the proxy is reached.
    pub host_ip: Ipv4Addr,
    /// A client address in 10.214.0.0/16.
    pub inside: Ipv4Addr,
    /// A client address in 172.31.0.0/16.
    pub outside: Ipv4Addr,
}

/// What `curl` got: the status and the body.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub body: String,
    pub headers: String,
    /// curl's own complaint, when it failed.
    pub error: String,
}

impl NetnsClient {
    pub fn new() -> NetnsClient {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() % 1000;
        let subnet = ((std::process::id() % 60) * 4 + n) % 250;
        let netns = format!("sc{pid}n{n}");
        let host_if = format!("sc{pid}h{n}");
        let peer_if = format!("sc{pid}p{n}");
        let host_ip: Ipv4Addr = format!("10.214.{subnet}.1").parse().unwrap();
        let inside: Ipv4Addr = format!("10.214.{subnet}.2").parse().unwrap();
        let outside: Ipv4Addr = format!("172.31.{subnet}.2").parse().unwrap();
        let _ = run("ip", &["netns", "del", &netns]);
        let _ = run("ip", &["link", "del", &host_if]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns, "ip"];
            all.extend_from_slice(args);
            all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), netns.clone()],
            ["link", "add", &host_if, "type", "veth", "peer", "name", &peer_if]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ["link", "set", &peer_if, "netns", &netns]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            vec![
                "addr".into(),
                "add".into(),
                format!("{host_ip}/24"),
                "dev".into(),
                host_if.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("172.31.{subnet}.1/24"),
                "dev".into(),
                host_if.clone(),
            ],
            ["link", "set", &host_if, "up"].iter().map(|s| s.to_string()).collect(),
            in_ns(&["addr", "add", &format!("{inside}/24"), "dev", &peer_if]),
            in_ns(&["addr", "add", &format!("{outside}/24"), "dev", &peer_if]),
            in_ns(&["link", "set", &peer_if, "up"]),
            in_ns(&["link", "set", "lo", "up"]),
        ];
        for args in steps {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run("ip", &args);
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        NetnsClient {
            netns,
            host_if,
            host_ip,
            inside,
            outside,
        }
    }

    /// `curl` from `source` inside the namespace, to `url` (on the host's
    /// side), with `extra` arguments; 10 s at most. Run on a blocking
    /// thread, so that servers on the test's own runtime keep answering.
    pub async fn curl(&self, source: Ipv4Addr, url: &str, extra: &[&str]) -> Got {
        let dir = tempfile::tempdir().unwrap();
        let headers = dir.path().join("headers");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.netns, "curl", "-sS", "-m", "10"])
            .args(["--interface", &source.to_string()])
            .args(["-D", headers.to_str().unwrap(), "-w", "\n%{http_code}"])
            .args(extra)
            .arg(url);
        let out = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        Got {
            status: status.trim().parse().unwrap_or(0),
            body: body.to_owned(),
            headers: std::fs::read_to_string(headers).unwrap_or_default(),
            error: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }
}

impl Drop for NetnsClient {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.netns]);
        let _ = run("ip", &["link", "del", &self.host_if]);
    }
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap()
}
