//! Binds and closes Gateways' own data-plane ports as the table's
//! [`GatewayPorts`] change (step 3 of `conformance/TRIAGE.md`'s way to
//! one address per Gateway). Not started by the binary yet: nothing gives
//! a port range, so no Gateway has ports.
//!
//! Each listener is served by [`Proxy::serve_gateway_port`], which looks
//! the port's Gateway up in the current table on every request, so a port
//! that stays bound while it passes to another Gateway needs no rebinding.
//! A port that cannot be bound (in use) is tried again on the next change
//! and after [`RETRY`].

use super::Proxy;
use crate::model::GatewayPorts;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long a port that could not be bound waits before another try.
pub const RETRY: Duration = Duration::from_secs(5);

/// One bound Gateway port.
struct Bound {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// The Gateway ports this replica serves, reconciled with the assignment.
pub struct GatewayListeners {
    proxy: Arc<Proxy>,
    /// The address the ports are bound on (the shared listener's).
    ip: IpAddr,
    drain: Duration,
    bound: BTreeMap<(u16, bool), Bound>,
}

impl GatewayListeners {
    pub fn new(proxy: Arc<Proxy>, ip: IpAddr, drain: Duration) -> Self {
        GatewayListeners {
            proxy,
            ip,
            drain,
            bound: BTreeMap::new(),
        }
    }

    /// The `(port, tls)` listeners bound now.
    pub fn bound(&self) -> Vec<(u16, bool)> {
        self.bound.keys().copied().collect()
    }

    /// Closes the listeners `ports` no longer has and binds those it
    /// gained. Returns whether every wanted one is bound.
    pub fn reconcile(&mut self, ports: &GatewayPorts) -> bool {
        let wanted = ports.listeners();
        let gone: Vec<(u16, bool)> = self.bound.keys().filter(|k| !wanted.contains(k)).copied().collect();
        for key in gone {
            if let Some(b) = self.bound.remove(&key) {
                info!(port = key.0, tls = key.1, "closing a Gateway's port");
                let _ = b.stop.send(());
                // The task drains its connections by itself.
                drop(b.task);
            }
        }
        let mut complete = true;
        for key @ (port, tls) in wanted {
            if self.bound.contains_key(&key) {
                continue;
            }
            match crate::listener::bind(SocketAddr::new(self.ip, port)) {
                Ok(listener) => {
                    info!(port, tls, "serving a Gateway's port");
                    let (stop, stopped) = oneshot::channel::<()>();
                    let task = tokio::spawn(self.proxy.clone().serve_gateway_port(
                        listener,
                        tls,
                        async move {
                            let _ = stopped.await;
                        },
                        self.drain,
                    ));
                    self.bound.insert(key, Bound { stop, task });
                }
                Err(e) => {
                    warn!(port, tls, error = %e, "cannot bind a Gateway's port; trying again later");
                    complete = false;
                }
            }
        }
        complete
    }

    /// Follows `ports` until `shutdown`, then closes every listener and
    /// waits (at most the drain deadline, and a second) for them to drain.
    pub async fn run(mut self, mut ports: watch::Receiver<GatewayPorts>, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let current = ports.borrow_and_update().clone();
            let complete = self.reconcile(&current);
            tokio::select! {
                _ = &mut shutdown => break,
                changed = ports.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(RETRY), if !complete => {}
            }
        }
        let tasks: Vec<_> = std::mem::take(&mut self.bound)
            .into_values()
            .map(|b| {
                let _ = b.stop.send(());
                b.task
            })
            .collect();
        let all = futures_util::future::join_all(tasks);
        let _ = tokio::time::timeout(self.drain + Duration::from_secs(1), all).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectKey, PortClaim, PortRange};

    /// A free pair of loopback ports `p, p+1` (bound and released: another
    /// process could take them meanwhile, which the test would show as a
    /// failed bind).
    async fn free_pair() -> u16 {
        for _ in 0..20 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let p = l.local_addr().unwrap().port();
            if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                return p;
            }
        }
        panic!("no free pair of loopback ports");
    }

    fn ports(first: u16, claims: &[(&str, i64, bool)]) -> GatewayPorts {
        let claims: Vec<PortClaim> = claims
            .iter()
            .map(|(name, created, tls)| PortClaim {
                gateway: ObjectKey::new("infra", *name),
                created_millis: *created,
                tls: *tls,
                held: None,
                listeners: Vec::new(),
            })
            .collect();
        GatewayPorts::assign(Some(PortRange::new(first, first + 1).unwrap()), &claims)
    }

    async fn connects(port: u16) -> bool {
        let attempt = tokio::net::TcpStream::connect(("127.0.0.1", port));
        matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Ok(_)))
    }

    #[tokio::test]
    async fn ports_are_bound_and_closed_as_the_assignment_changes() {
        let first = free_pair().await;
        let proxy = Proxy::new(crate::model::empty_table());
        let (tx, rx) = watch::channel(GatewayPorts::default());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let listeners = GatewayListeners::new(proxy, IpAddr::from([127, 0, 0, 1]), Duration::from_millis(200));
        let task = tokio::spawn(listeners.run(rx, async move {
            let _ = stop_rx.await;
        }));
        // Up to 2 s for the task to catch up with a change.
        let eventually = |port: u16, open: bool| async move {
            for _ in 0..40 {
                if connects(port).await == open {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        };

        tx.send(ports(first, &[("a", 1, true)])).unwrap();
        assert!(eventually(first, true).await, "plain port bound");
        assert!(eventually(first + 1, true).await, "TLS port bound");

        // a loses its HTTPS listener: the TLS port closes, the plain one stays.
        tx.send(ports(first, &[("a", 1, false)])).unwrap();
        assert!(eventually(first + 1, false).await, "TLS port closed");
        assert!(connects(first).await);

        // No Gateway: everything closes; and the task ends on shutdown.
        tx.send(GatewayPorts::default()).unwrap();
        assert!(eventually(first, false).await, "plain port closed");
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_port_in_use_is_reported_and_the_others_are_bound() {
        let first = free_pair().await;
        let _taken = std::net::TcpListener::bind(("127.0.0.1", first + 1)).unwrap();
        let proxy = Proxy::new(crate::model::empty_table());
        let mut l = GatewayListeners::new(proxy, IpAddr::from([127, 0, 0, 1]), Duration::from_millis(200));
        assert!(!l.reconcile(&ports(first, &[("a", 1, true)])));
        assert_eq!(l.bound(), [(first, false)]);
        assert!(l.reconcile(&GatewayPorts::default()));
        assert!(l.bound().is_empty());
    }
}
