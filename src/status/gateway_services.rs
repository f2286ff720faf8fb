//! One Service per Gateway (`--gateway-ports` with `--gateway-service-selector`):
//! the Lease holder keeps, in the release's namespace, the Service that
//! gives each accepted Gateway an address of its own, and deletes the
//! Services of Gateways that are gone. What each Service says is decided by
//! [`crate::translate::gateway::service`]; this module does the I/O.
//!
//! Every replica reads the managed Services from the sources' watch (one
//! watch, narrowed by label to this release's, see [`feed`]): the Lease
//! holder to write only what differs, and the Gateway status writer to
//! publish each Gateway's own addresses ([`addresses_by_gateway`]).
//!
//! Writes are server-side applies (field manager `ssegate`, forced), so the
//! fields the apiserver fills in (cluster IPs, node ports) stay its own.
//! Nothing is written before the first table build (until then the
//! translation is empty, and every Service would look stale) nor before
//! the watch has listed the Services.

use super::addresses::{service_addresses, AbortOnDrop, Address};
use super::kube::FIELD_MANAGER;
use super::ECHO_WINDOW;
use crate::model::{ObjectKey, RouteReport};
use crate::translate::gateway::service::{
    desired_services, served_gateway, service_matches, stale_services, ServiceTemplate,
};
use crate::translate::gateway::GatewayOutcome;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

/// The managed Services by name; `None` until the watch has listed them.
pub type ManagedServices = Option<Arc<BTreeMap<String, Service>>>;

/// Republishes the managed Services as the sources' store holds them
/// (one watch, shared with the translation, which reads each Gateway's
/// held slot from them) on every change `changed` signals, until the guard
/// is dropped. Nothing is sent before the sources have listed everything
/// (`listed` turns true; an empty map would say every Service is gone).
/// That is not `store.wait_until_ready()`: kube-runtime wakes only the last
/// of several tasks waiting on it, and the sources wait on the same store.
pub fn feed(
    store: Store<Service>,
    changed: Arc<Notify>,
    mut listed: watch::Receiver<bool>,
) -> (watch::Receiver<ManagedServices>, AbortOnDrop) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        if listed.wait_for(|listed| *listed).await.is_err() {
            return;
        }
        loop {
            // Armed before the read, so a change during it is not missed.
            let next = changed.notified();
            tokio::pin!(next);
            next.as_mut().enable();
            let current: BTreeMap<String, Service> = store
                .state()
                .iter()
                .filter_map(|svc| Some((svc.metadata.name.clone()?, (**svc).clone())))
                .collect();
            tx.send_replace(Some(Arc::new(current)));
            next.await;
        }
    });
    (rx, AbortOnDrop::new(task))
}

/// Each Gateway's addresses from its own Service (named by the Service's
/// annotation); a Service whose load balancer is pending offers none.
pub fn addresses_by_gateway(services: &BTreeMap<String, Service>) -> BTreeMap<ObjectKey, Vec<Address>> {
    services
        .values()
        .filter_map(|svc| Some((served_gateway(svc)?, service_addresses(svc))))
        .collect()
}

/// The writer task (runs on every replica, writes on the Lease holder).
pub struct GatewayServiceWriter {
    client: Client,
    template: ServiceTemplate,
    /// Whether a failed look-up of the owner was logged (once, not on
    /// every sync).
    owner_warned: bool,
    /// What was applied lately, by name: until the watch shows it, the
    /// live Service predates the write, and writing again is waste.
    recent: BTreeMap<String, (Service, Instant)>,
}

impl GatewayServiceWriter {
    pub fn new(client: Client, template: ServiceTemplate) -> Self {
        GatewayServiceWriter {
            client,
            template,
            owner_warned: false,
            recent: BTreeMap::new(),
        }
    }

    /// Looks the owner up while it is not known. When it cannot be read,
    /// the Services are written without it meanwhile and it is looked up
    /// again at the next sync (a missing owner is a setting to fix, not a
    /// reason to retry every second).
    async fn resolve_owner(&mut self, api: &Api<Service>) {
        let Some(name) = self.template.owner_service.as_deref() else {
            return;
        };
        if self.template.owner.is_some() {
            return;
        }
        match api.get(name).await {
            Ok(svc) => {
                self.template.owner = svc.metadata.uid.map(|uid| OwnerReference {
                    api_version: "v1".into(),
                    kind: "Service".into(),
                    name: name.to_owned(),
                    uid,
                    ..Default::default()
                });
            }
            Err(e) if !self.owner_warned => {
                warn!(service = name, error = %e, "cannot read the owner of the Gateways' Services (--gateway-service-owner); writing them without it meanwhile");
                self.owner_warned = true;
            }
            Err(e) => tracing::debug!(service = name, error = %e, "owner of the Gateways' Services still unreadable"),
        }
    }

    /// Runs until its inputs close: applies while `leader` is true, on
    /// every new translation, set of verdicts or change of the Services,
    /// and a periodic resync (the shared loop, `writer_loop.rs`).
    pub async fn run(
        self,
        outcome: watch::Receiver<Arc<GatewayOutcome>>,
        services: watch::Receiver<ManagedServices>,
        reports: watch::Receiver<Arc<Vec<RouteReport>>>,
        leader: watch::Receiver<bool>,
    ) {
        let kind = ServicesKind {
            writer: self,
            outcome,
            services,
            reports,
            built: false,
        };
        // The Services' own changes come through `services`.
        super::writer_loop::run(kind, None, leader).await;
    }

    /// Applies every wanted Service that differs from the live one and
    /// deletes the stale ones. False when something failed.
    async fn sync(&mut self, outcome: &GatewayOutcome, live: &BTreeMap<String, Service>) -> bool {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.template.namespace);
        self.resolve_owner(&api).await;
        let mut ok = true;
        let wanted = desired_services(&self.template, &outcome.gateways, &outcome.ports);
        self.recent.retain(|_, (_, at)| at.elapsed() < ECHO_WINDOW);
        for want in &wanted {
            let Some(name) = want.metadata.name.as_deref() else {
                continue;
            };
            if live.get(name).is_some_and(|l| service_matches(want, l)) {
                continue;
            }
            if self.recent.get(name).is_some_and(|(written, _)| written == want) {
                // Written a moment ago; the watch has not shown it yet.
                ok = false;
                continue;
            }
            let gateway = served_gateway(want).map(|k| k.to_string()).unwrap_or_default();
            let mut body = serde_json::to_value(want).unwrap_or_default();
            body["apiVersion"] = "v1".into();
            body["kind"] = "Service".into();
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api.patch(name, &params, &Patch::Apply(&body)).await {
                Ok(_) => {
                    info!(service = name, %gateway, "Gateway's own Service written");
                    self.recent.insert(name.to_owned(), (want.clone(), Instant::now()));
                }
                Err(e) => {
                    warn!(service = name, %gateway, error = %e, "cannot write the Gateway's own Service; will retry");
                    ok = false;
                }
            }
        }
        let existing: Vec<Service> = live.values().cloned().collect();
        for name in stale_services(&existing, &wanted) {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => info!(service = %name, "Service of a Gateway that is gone (or got no ports) deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    warn!(service = %name, error = %e, "cannot delete a stale Gateway Service; will retry");
                    ok = false;
                }
            }
        }
        ok
    }
}

/// The Gateway Services writer's inputs, for the shared loop.
struct ServicesKind {
    writer: GatewayServiceWriter,
    outcome: watch::Receiver<Arc<GatewayOutcome>>,
    services: watch::Receiver<ManagedServices>,
    reports: watch::Receiver<Arc<Vec<RouteReport>>>,
    /// Nothing is applied before the first table build.
    built: bool,
}

impl super::writer_loop::StatusKind for ServicesKind {
    const NAME: &'static str = "Gateway Services";

    async fn sync(&mut self, _: &watch::Receiver<bool>) -> Option<bool> {
        self.built |= self.reports.has_changed().unwrap_or(false);
        // Not before the store has listed them: an empty map would say
        // every Service is gone.
        let live = self.services.borrow_and_update().clone()?;
        if !self.built {
            return None;
        }
        let plan = self.outcome.borrow_and_update().clone();
        Some(self.writer.sync(&plan, &live).await)
    }

    async fn input_changed(&mut self) -> bool {
        tokio::select! {
            r = self.reports.changed() => {
                self.built |= r.is_ok();
                r.is_ok()
            }
            o = self.outcome.changed() => o.is_ok(),
            s = self.services.changed() => s.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// The feed must send once the Services are listed even when another
    /// task waits on the same store: kube-runtime's `wait_until_ready` keeps
    /// one waker (a oneshot receiver's), so of two tasks waiting at once only
    /// the one that polled last is woken. The sources' own wait on the store
    /// once left the feed asleep, and Gateway status waiting, for good.
    #[tokio::test]
    async fn the_feed_sends_once_listed_while_another_task_waits_on_the_store() {
        use kube::runtime::{reflector, watcher};
        let (store, mut writer) = reflector::store::<Service>();
        let (listed_tx, listed_rx) = watch::channel(false);
        let (mut rx, _guard) = feed(store.clone(), Arc::new(Notify::new()), listed_rx);
        tokio::task::yield_now().await;
        // The sources' wait, polled after the feed's.
        let sources = tokio::spawn(async move {
            let _ = store.wait_until_ready().await;
            listed_tx.send_replace(true);
        });
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(5), sources)
            .await
            .unwrap()
            .unwrap();
        let sent = tokio::time::timeout(std::time::Duration::from_secs(5), rx.wait_for(|v| v.is_some())).await;
        assert!(
            sent.is_ok(),
            "the feed sent nothing within 5 s of the store being listed"
        );
    }

    fn managed(name: &str, gateway: Option<&str>, lb_ip: Option<&str>) -> (String, Service) {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: gateway.map(|g| {
                    BTreeMap::from([(
                        crate::translate::gateway::service::GATEWAY_ANNOTATION.to_owned(),
                        g.to_owned(),
                    )])
                }),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                cluster_ip: Some("10.96.0.30".into()),
                ..Default::default()
            }),
            status: lb_ip.map(|ip| ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some(ip.into()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
        };
        (name.to_owned(), svc)
    }

    #[test]
    fn each_gateway_gets_its_own_services_load_balancer_addresses() {
        let services = BTreeMap::from([
            managed("ssegate-infra-a", Some("infra/a"), Some("10.213.249.201")),
            managed("ssegate-infra-b", Some("infra/b"), None),
            managed("ssegate-odd", Some("no-slash"), Some("10.213.249.203")),
            managed("ssegate-bare", None, Some("10.213.249.204")),
        ]);
        let by_gateway = addresses_by_gateway(&services);
        assert_eq!(
            by_gateway,
            BTreeMap::from([
                (
                    ObjectKey::new("infra", "a"),
                    vec![Address::Ip("10.213.249.201".into())]
                ),
                (ObjectKey::new("infra", "b"), vec![]),
            ]),
            "a pending load balancer offers no address (not the cluster IP); a Service without a valid annotation is no Gateway's"
        );
    }
}
