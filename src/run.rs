//! Running ssegate: standalone mode, Kubernetes mode, and serving the
//! listeners while a source keeps the table up to date. The binary's
//! `main` parses flags into a [`ServeConfig`] (and a [`ControllerConfig`])
//! and calls these; tests can start ssegate the same way.

use crate::access::cidr::CidrSet;
use crate::admin::{self, AdminState};
use crate::apply::Applier;
use crate::metrics::Metrics;
use crate::model::{empty_table, PortRange};
use crate::proxy::{ClientLimits, Proxy, ProxyProtocol, Workers};
use crate::sources::file::{self, FolderSource};
use crate::sources::kube::{self as kube_source, ClusterState};
use crate::sources::kube_gateway::OwnPorts;
use crate::status::gateway::{GatewayStatusWriter, LiveGatewayApi};
use crate::status::gateway_services::{self, GatewayServiceWriter};
use crate::status::ingress::{IngressStatusWriter, LiveIngresses, Publish};
use crate::status::kube::{KubeStatus, LiveRoutes, StatusWriter};
use crate::status::lease::{LeaseConfig, PodRef};
use crate::status::LogStatus;
use crate::translate::gateway::service::{ServiceTemplate, MANAGED_LABEL};
use crate::translate::ingress_class::ClassPolicy;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// How ssegate serves: its listeners, its data plane, its drain. The
/// binary's flags, checked (`--proxy-protocol` needs `--trusted-proxies`).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub listen_tls: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub drain_delay: Duration,
    pub drain_timeout: Duration,
    /// Data-plane threads; `None`: one per CPU this process may use.
    pub workers: Option<usize>,
    pub https_redirect_port: Option<u16>,
    pub gateway_ports: Option<PortRange>,
    pub access_log: bool,
    pub trusted_proxies: CidrSet,
    pub proxy_protocol: ProxyProtocol,
    pub limits: ClientLimits,
}

/// Kubernetes mode's settings besides serving (the binary's flags).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub kubeconfig: Option<PathBuf>,
    pub namespaces: Vec<String>,
    pub lease_namespace: String,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub tls_secrets: bool,
    pub identity: Option<String>,
    pub pod_uid: Option<String>,
    pub publish_service: Option<String>,
    pub publish_status_address: Option<String>,
    pub gateway_service_selector: Option<String>,
    pub gateway_service_type: String,
    pub gateway_service_prefix: String,
    pub gateway_service_owner: Option<String>,
    pub ingress: ClassPolicy,
    pub serve: ServeConfig,
}

/// Standalone mode: Routes, Ingresses, Gateway API objects, Services and
/// EndpointSlices from the YAML files in `dir`, reloaded as they change.
pub async fn standalone(dir: PathBuf, classes: ClassPolicy, config: ServeConfig) -> anyhow::Result<()> {
    anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
    let table = empty_table();
    let metrics = Arc::new(Metrics::new());
    let (ports_tx, ports_rx) = tokio::sync::watch::channel(Default::default());
    let applier = Arc::new(
        Applier::new(table.clone(), Arc::new(LogStatus::default()))
            .with_metrics(metrics.clone())
            .with_gateway_ports(ports_tx),
    );
    let admin_state = AdminState::new(table.clone(), metrics);
    let source = FolderSource::new(&dir)
        .with_class_policy(classes)
        .with_gateway_ports(config.gateway_ports);
    info!(dir = %dir.display(), "standalone mode");
    let ready = admin_state.clone();
    let run_source = spawn_control(move || async move {
        file::watch(source, applier, Duration::from_millis(10), move || {
            ready.set_ready(true)
        })
        .await
        .context("folder watcher failed")
    });
    serve(
        table,
        admin_state,
        config,
        run_source,
        CancellationToken::new(),
        ports_rx,
    )
    .await
}

/// Kubernetes mode: the same objects from the apiserver, and status
/// written back by the Lease holder.
pub async fn controller(args: ControllerConfig) -> anyhow::Result<()> {
    let publish = Publish::from_flags(
        args.publish_status_address.as_deref(),
        args.publish_service.as_deref(),
        &args.lease_namespace,
    )
    .map_err(anyhow::Error::msg)?;
    let gateway_services = match (&args.serve.gateway_ports, &args.gateway_service_selector) {
        (Some(_), Some(selector)) => Some(
            ServiceTemplate::from_flags(
                &args.lease_namespace,
                &args.gateway_service_prefix,
                &args.gateway_service_type,
                selector,
            )
            .and_then(|t| t.owned_by(args.gateway_service_owner.as_deref()))
            .map_err(anyhow::Error::msg)?,
        ),
        (Some(range), None) => {
            tracing::warn!(%range, "Gateways get ports of their own but no Service to reach them by: set --gateway-service-selector");
            None
        }
        (None, Some(_)) => anyhow::bail!("--gateway-service-selector needs --gateway-ports"),
        (None, None) => None,
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    let client = kube::Client::try_from(config.clone())?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            crate::process::host_name().unwrap_or_else(|| "ssegate".into()),
            std::process::id()
        )
    });

    let table = empty_table();
    let metrics = Arc::new(Metrics::new());
    let (status_sink, reports) = KubeStatus::new();
    let (ports_tx, ports_rx) = tokio::sync::watch::channel(Default::default());
    let applier = Arc::new(
        Applier::new(table.clone(), Arc::new(status_sink))
            .with_metrics(metrics.clone())
            .with_gateway_ports(ports_tx),
    );
    let own_ports = args.serve.gateway_ports.map(|range| OwnPorts {
        range,
        services: gateway_services
            .as_ref()
            .map(|t| (t.namespace.clone(), format!("{MANAGED_LABEL}={}", t.prefix))),
    });
    let admin_state = AdminState::new(table.clone(), metrics.clone());
    info!(namespaces = ?args.namespaces, %identity, "controller mode");

    // Leadership ends when the Lease is not renewed in time (see status::lease).
    let stopping = CancellationToken::new();
    let leader = crate::status::lease::start(
        client.clone(),
        LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration: Duration::from_secs(args.lease_duration.as_secs().max(2)),
            owner: args
                .identity
                .clone()
                .zip(args.pod_uid.clone())
                .map(|(name, uid)| PodRef { name, uid }),
        },
        stopping.clone(),
    );
    let mut leader_seen = leader.clone();
    let shown = admin_state.clone();
    tokio::spawn(async move {
        loop {
            shown
                .leader
                .store(*leader_seen.borrow_and_update(), std::sync::atomic::Ordering::Relaxed);
            if leader_seen.changed().await.is_err() {
                break;
            }
        }
    });

    // Watches, table builds and status writes run on the control runtime
    // with a client of their own; the Lease stays here, on time.
    let ready = admin_state.clone();
    let run_source = spawn_control(move || async move {
        let client = kube::Client::try_from(config)?;
        let gateway_api = crate::sources::kube_gateway::served(&client).await;
        let stream_policies = gateway_api && crate::sources::kube_gateway::policies_served(&client).await;
        if gateway_api && !stream_policies {
            tracing::warn!("the StreamPolicy CRD is not served: HTTPRoutes get default SSE settings; install crds/streampolicies.ssegate.dev.yaml and restart");
        }
        info!(
            gateway_api,
            "Gateway API {}",
            if gateway_api {
                "served by the cluster: watching GatewayClasses, Gateways, HTTPRoutes and ReferenceGrants"
            } else {
                "not served by the cluster (its CRDs are not installed): not watched; restart ssegate after installing them"
            }
        );
        let (state, _watchers) = ClusterState::start(
            client.clone(),
            &args.namespaces,
            args.tls_secrets,
            args.ingress,
            gateway_api,
            stream_policies,
            own_ports,
        );
        // Each Gateway's own Service, read on every replica (from the
        // sources' watch) and written by the Lease holder; the guard ends
        // the feed with this task.
        // Each writer is supervised: one that panics is logged, counted and
        // started again (writers are level-triggered, so a new one picks up
        // where the old one stood); serving is never stopped for status.
        let mut _own_services_watch = None;
        // True once the sources have listed every kind (when `run` calls
        // `ready`): what the own-Services feed waits for.
        let (listed_tx, listed) = tokio::sync::watch::channel(false);
        if LiveGatewayApi::from_cluster(&state).is_some() {
            let own_services = state.gateway.as_ref().and_then(|g| Some((g, g.own_services()?)));
            let mut services = None;
            if let (Some(template), Some((stores, (store, changed)))) = (gateway_services, own_services) {
                let (feed, guard) = gateway_services::feed(store, changed, listed);
                _own_services_watch = Some(guard);
                let (client, outcome, reports, leader) =
                    (client.clone(), stores.outcome.clone(), reports.clone(), leader.clone());
                let feed_in = feed.clone();
                crate::supervise::supervise("gateway_services", &metrics, move || {
                    GatewayServiceWriter::new(client.clone(), template.clone()).run(
                        outcome.subscribe(),
                        feed_in.clone(),
                        reports.clone(),
                        leader.clone(),
                    )
                });
                services = Some(feed);
            }
            let (client, state, publish, m, reports, leader) = (
                client.clone(),
                state.clone(),
                publish.clone(),
                metrics.clone(),
                reports.clone(),
                leader.clone(),
            );
            crate::supervise::supervise("gateway_status", &metrics, move || {
                let live = LiveGatewayApi::from_cluster(&state).expect("checked");
                let mut writer = GatewayStatusWriter::new(client.clone(), live, publish.clone(), m.clone());
                if let Some(services) = &services {
                    writer = writer.with_own_services(services.clone());
                }
                writer.run(reports.clone(), leader.clone())
            });
        }
        {
            let (client, state, identity, m, reports, leader) = (
                client.clone(),
                state.clone(),
                identity.clone(),
                metrics.clone(),
                reports.clone(),
                leader.clone(),
            );
            crate::supervise::supervise("ingress_status", &metrics, move || {
                let (lookup, changed) = (state.clone(), state.ingresses_changed.clone());
                let live = LiveIngresses::new(move |key| lookup.ingress(key), changed);
                IngressStatusWriter::new(client.clone(), live, publish.clone(), identity.clone(), m.clone())
                    .run(reports.clone(), leader.clone())
            });
        }
        if state.gateway.as_ref().is_some_and(|g| g.has_policies()) {
            let (client, state, leader) = (client.clone(), state.clone(), leader.clone());
            crate::supervise::supervise("stream_policy_status", &metrics, move || {
                let outcome = state.gateway.as_ref().map(|g| g.outcome.subscribe()).expect("checked");
                let lookup = state.clone();
                crate::status::stream_policy::PolicyStatusWriter::new(client.clone(), move |key| {
                    lookup.gateway.as_ref().and_then(|g| g.policy(key))
                })
                .run(outcome, leader.clone())
            });
        }
        {
            let (state, identity, m, reports, leader) = (
                state.clone(),
                identity.clone(),
                metrics.clone(),
                reports.clone(),
                leader.clone(),
            );
            crate::supervise::supervise("route_status", &metrics, move || {
                let (lookup, changed) = (state.clone(), state.routes_changed.clone());
                let live = LiveRoutes::new(move |key| lookup.route(key), changed);
                StatusWriter::new(client.clone(), live, identity.clone(), m.clone())
                    .run(reports.clone(), leader.clone())
            });
        }
        kube_source::run(state, applier, move || {
            ready.set_ready(true);
            listed_tx.send_replace(true);
        })
        .await;
        Ok(())
    });
    serve(table, admin_state, args.serve, run_source, stopping, ports_rx).await
}

/// Runs the configuration side (watching sources, parsing, table builds,
/// status publishing) on a thread with a tokio runtime of its own, so that
/// a long parse or build never delays accepting connections or answering
/// `/healthz` on the main runtime. `make` builds the work on that thread.
/// The returned future ends when the work does, with its error, or when
/// the thread panics.
fn spawn_control<F, Fut>(make: F) -> impl std::future::Future<Output = anyhow::Result<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("ssegate-control".into())
        .spawn(move || {
            // Config work yields to the data plane on a busy core, not
            // the other way round.
            let _ = crate::process::set_thread_slice(Duration::ZERO);
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the control runtime")
                .and_then(|runtime| runtime.block_on(make()));
            let _ = done_tx.send(result);
        });
    async move {
        spawned.context("cannot start the control thread")?;
        done_rx
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the control thread panicked")))
    }
}

/// Serves the proxy and admin listeners while `source` keeps the table up
/// to date; on SIGTERM or Ctrl-C, turns unready, cancels `stopping` (the
/// status Lease is handed on) and drains.
pub async fn serve(
    table: crate::model::SharedTable,
    admin_state: Arc<AdminState>,
    args: ServeConfig,
    source: impl std::future::Future<Output = anyhow::Result<()>>,
    stopping: CancellationToken,
    gateway_ports: tokio::sync::watch::Receiver<crate::model::GatewayPorts>,
) -> anyhow::Result<()> {
    let (trusted_proxies, proxy_protocol) = (args.trusted_proxies.clone(), args.proxy_protocol);
    let proxy_listener =
        crate::listener::bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin_listener =
        crate::listener::bind(args.admin).with_context(|| format!("cannot listen on {} for admin", args.admin))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The admin port outlives the drain: probes keep their answers
    // (/readyz 503, /healthz 200) and /metrics shows the streams ending.
    let (admin_stop_tx, admin_stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin_state.clone(),
        wait_stop(admin_stop_rx),
    ));
    let tls_listener = match args.listen_tls {
        Some(addr) => Some(crate::listener::bind(addr).with_context(|| format!("cannot listen on {addr} for TLS"))?),
        None => None,
    };
    info!(listen = %args.listen, tls = ?args.listen_tls, admin = %args.admin, "ssegate serving");
    info!(
        trusted_proxies = %trusted_proxies,
        proxy_protocol_http = proxy_protocol.http,
        proxy_protocol_https = proxy_protocol.https,
        "client addresses"
    );

    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let workers = Workers::start(workers).context("cannot start the data-plane threads")?;
    info!(workers = workers.len(), "data plane started");
    let limits = args.limits;
    info!(?limits, "client limits");
    let proxy = Proxy::builder(table)
        .metrics(admin_state.metrics.clone())
        .access_log(args.access_log)
        .workers(workers)
        .limits(limits)
        .trusted_proxies(trusted_proxies)
        .proxy_protocol(proxy_protocol)
        .https_port(
            args.https_redirect_port
                .unwrap_or_else(|| args.listen_tls.map_or(443, |a| a.port())),
        )
        .build();
    let tls_task = tls_listener.map(|listener| {
        tokio::spawn(
            proxy
                .clone()
                .serve_tls(listener, wait_stop(stop_rx.clone()), args.drain_timeout),
        )
    });
    // Each Gateway's own ports (--gateway-ports), bound and closed as the table changes.
    let gateway_task = args.gateway_ports.map(|range| {
        info!(%range, "serving Gateways on ports of their own");
        let listeners =
            crate::proxy::gateway_listeners::GatewayListeners::new(proxy.clone(), args.listen.ip(), args.drain_timeout);
        tokio::spawn(listeners.run(gateway_ports, wait_stop(stop_rx.clone())))
    });
    let proxy_task = tokio::spawn(proxy.serve(proxy_listener, wait_stop(stop_rx), args.drain_timeout));

    tokio::select! {
        _ = shutdown_signal() => info!(delay = ?args.drain_delay, "shutting down: unready, then draining"),
        res = source => res?,
    }
    admin_state.set_ready(false);
    stopping.cancel();
    tokio::time::sleep(args.drain_delay).await;
    let _ = stop_tx.send(true);
    proxy_task.await??;
    if let Some(task) = tls_task {
        task.await??;
    }
    if let Some(task) = gateway_task {
        task.await?;
    }
    let _ = admin_stop_tx.send(true);
    let _ = admin_task.await;
    Ok(())
}

async fn wait_stop(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
