//! A network namespace per pod, joined by a veth pair to a bridge of the
//! agent's own, in the project's test range: every pod and the host share
//! one /24, so pods reach each other and the host reaches them without IP
//! forwarding.

use std::net::Ipv4Addr;
use std::process::Command;

/// The node's bridge: `base.1/24`, the pods' gateway.
pub struct Bridge {
    pub name: String,
    pub ip: Ipv4Addr,
}

impl Bridge {
    pub fn new(prefix: &str, base: [u8; 3]) -> Bridge {
        let [a, b, c] = base;
        Bridge {
            name: format!("{prefix}br"),
            ip: Ipv4Addr::new(a, b, c, 1),
        }
    }

    pub fn create(&self) -> Result<(), String> {
        self.delete();
        run("ip", &["link", "add", &self.name, "type", "bridge"])?;
        run("ip", &["addr", "add", &format!("{}/24", self.ip), "dev", &self.name])?;
        run("ip", &["link", "set", &self.name, "up"])
    }

    pub fn delete(&self) {
        let _ = run("ip", &["link", "del", &self.name]);
    }
}

/// One pod's network: namespace, host-side interface and address.
#[derive(Debug, Clone)]
pub struct PodNet {
    pub netns: String,
    pub host_if: String,
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub pod_ip: Ipv4Addr,
}

impl PodNet {
    /// Slot `slot` (0..198) of the /24 `base.0`: the pod gets `.slot+2`.
    pub fn new(prefix: &str, base: [u8; 3], slot: u8) -> PodNet {
        let [a, b, c] = base;
        let bridge = Bridge::new(prefix, base);
        PodNet {
            netns: format!("{prefix}{slot}"),
            host_if: format!("{prefix}{slot}h"),
            bridge: bridge.name,
            gateway: bridge.ip,
            pod_ip: Ipv4Addr::new(a, b, c, slot + 2),
        }
    }

    /// Creates the namespace, the veth pair on the bridge and the address,
    /// and lets unprivileged processes bind any port inside, as containerd
    /// does.
    pub fn create(&self) -> Result<(), String> {
        self.delete();
        let peer = format!("{}p", self.netns);
        let ns = self.netns.as_str();
        let pod = format!("{}/24", self.pod_ip);
        let gateway = self.gateway.to_string();
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", ns],
            vec!["link", "add", &self.host_if, "type", "veth", "peer", "name", &peer],
            vec!["link", "set", &peer, "netns", ns],
            vec!["link", "set", &self.host_if, "master", &self.bridge],
            vec!["link", "set", &self.host_if, "up"],
            vec!["-n", ns, "addr", "add", &pod, "dev", &peer],
            vec!["-n", ns, "link", "set", &peer, "up"],
            vec!["-n", ns, "link", "set", "lo", "up"],
            vec!["-n", ns, "route", "add", "default", "via", &gateway],
        ];
        for args in steps {
            run("ip", &args)?;
        }
        self.forget_neighbour();
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
        self.forget_neighbour();
    }

    /// Drops the host's neighbour entry for the pod address: a new pod with
    /// the same address has another MAC, and a stale entry would blackhole
    /// the agent's probes to it for half a minute.
    fn forget_neighbour(&self) {
        let ip = self.pod_ip.to_string();
        let _ = run("ip", &["neigh", "flush", "to", &ip, "dev", &self.bridge]);
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
