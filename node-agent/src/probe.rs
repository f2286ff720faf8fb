//! One probe attempt: `httpGet` (HTTP/1.1, success on 200..=399) or
//! `tcpSocket` (connect), against the pod IP unless the probe names a host.

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one attempt needs, resolved from the spec so it can run in a task.
#[derive(Debug, Clone)]
pub enum Check {
    Http {
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    /// `exec`, `grpc` or an HTTPS probe: not supported; always fails.
    Unsupported(String),
}

fn port_of(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

impl Check {
    pub fn from_probe(probe: &Probe, container: &Container, pod_ip: Ipv4Addr) -> Check {
        if let Some(h) = &probe.http_get {
            if h.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("https")) {
                return Check::Unsupported("httpGet with scheme HTTPS".into());
            }
            let Some(port) = port_of(&h.port, container) else {
                return Check::Unsupported(format!("unknown port {:?}", h.port));
            };
            return Check::Http {
                host: h.host.clone().unwrap_or_else(|| pod_ip.to_string()),
                port,
                path: h.path.clone().unwrap_or_else(|| "/".into()),
                headers: h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|x| (x.name.clone(), x.value.clone()))
                    .collect(),
            };
        }
        if let Some(t) = &probe.tcp_socket {
            let Some(port) = port_of(&t.port, container) else {
                return Check::Unsupported(format!("unknown port {:?}", t.port));
            };
            return Check::Tcp {
                host: t.host.clone().unwrap_or_else(|| pod_ip.to_string()),
                port,
            };
        }
        Check::Unsupported("exec and grpc probes".into())
    }

    /// Runs one attempt within `timeout`.
    pub async fn run(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.attempt()).await.unwrap_or(false)
    }

    async fn attempt(&self) -> bool {
        match self {
            Check::Tcp { host, port } => TcpStream::connect((host.as_str(), *port)).await.is_ok(),
            Check::Http {
                host,
                port,
                path,
                headers,
            } => {
                let Ok(mut s) = TcpStream::connect((host.as_str(), *port)).await else {
                    return false;
                };
                let mut req = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/ssegate-node-agent\r\nAccept: */*\r\nConnection: close\r\n"
                );
                for (k, v) in headers {
                    req.push_str(&format!("{k}: {v}\r\n"));
                }
                req.push_str("\r\n");
                if s.write_all(req.as_bytes()).await.is_err() {
                    return false;
                }
                let mut head = Vec::new();
                let mut buf = [0u8; 256];
                while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                status_ok(&head)
            }
            Check::Unsupported(why) => {
                tracing::warn!("probe not supported: {why}");
                false
            }
        }
    }
}

/// Whether a response's status line says 200..=399, as the kubelet counts.
pub fn status_ok(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let mut words = text.split(' ');
    words.next().is_some_and(|v| v.starts_with("HTTP/"))
        && words
            .next()
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| (200..400).contains(&c))
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_line() {
        assert!(super::status_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(super::status_ok(b"HTTP/1.1 302 Found\r\n"));
        assert!(!super::status_ok(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(!super::status_ok(b"garbage"));
    }
}
