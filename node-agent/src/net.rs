//! A network namespace per pod, joined to the host by a veth pair with a
//! /30 in the project's test range (as the tests' `NetnsBackend` does).

use std::net::Ipv4Addr;
use std::process::Command;

/// One pod's network: namespace, host-side interface and addresses.
#[derive(Debug, Clone)]
pub struct PodNet {
    pub netns: String,
    pub host_if: String,
    pub host_ip: Ipv4Addr,
    pub pod_ip: Ipv4Addr,
}

impl PodNet {
    /// Slot `slot` (0..64) of the /24 `base.0`: host `.4s+1`, pod `.4s+2`.
    pub fn new(prefix: &str, base: [u8; 3], slot: u8) -> PodNet {
        let [a, b, c] = base;
        PodNet {
            netns: format!("{prefix}{slot}"),
            host_if: format!("{prefix}{slot}h"),
            host_ip: Ipv4Addr::new(a, b, c, slot * 4 + 1),
            pod_ip: Ipv4Addr::new(a, b, c, slot * 4 + 2),
        }
    }

    /// Creates the namespace, the veth pair and the addresses, and lets
    /// unprivileged processes bind any port inside, as containerd does.
    pub fn create(&self) -> Result<(), String> {
        self.delete();
        let peer = format!("{}p", self.netns);
        let ns = self.netns.as_str();
        let host = format!("{}/30", self.host_ip);
        let pod = format!("{}/30", self.pod_ip);
        let host_ip = self.host_ip.to_string();
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", ns],
            vec!["link", "add", &self.host_if, "type", "veth", "peer", "name", &peer],
            vec!["link", "set", &peer, "netns", ns],
            vec!["addr", "add", &host, "dev", &self.host_if],
            vec!["link", "set", &self.host_if, "up"],
            vec!["-n", ns, "addr", "add", &pod, "dev", &peer],
            vec!["-n", ns, "link", "set", &peer, "up"],
            vec!["-n", ns, "link", "set", "lo", "up"],
            vec!["-n", ns, "route", "add", "default", "via", &host_ip],
        ];
        for args in steps {
            run("ip", &args)?;
        }
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_unprivileged_port_start=0",
            ],
        )
    }

    /// Removes the namespace and the host side of the pair (ignoring what
    /// is already gone).
    pub fn delete(&self) {
        let _ = run("ip", &["netns", "del", &self.netns]);
        let _ = run("ip", &["link", "del", &self.host_if]);
    }

    /// The file a process joins with `setns`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Listens on `127.0.0.1:port` inside the namespace at `netns_path` and
/// forwards each connection to `target` from the agent's own namespace: the
/// pod reaches the apiserver at its own loopback, where the apiserver's
/// certificate (issued for 127.0.0.1) is valid, with no route to the host.
pub async fn forward_into(netns_path: &str, port: u16, target: String) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(netns_path)?;
    // A thread of its own joins the namespace to create the socket; the
    // socket stays in that namespace, the runtime's threads stay in ours.
    let listener = std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
        // SAFETY: setns(2) on this short-lived thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let l = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .join()
    .map_err(|_| std::io::Error::other("forwarder thread panicked"))??;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target.as_str()).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }))
}
