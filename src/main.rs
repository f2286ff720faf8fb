//! The ssegate command line: standalone proxy, demo, demo backend, CRD.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;
use ssegate::access::cidr::CidrSet;
use ssegate::demo::DemoBackend;
use ssegate::proxy::normalize::EncodedSlashes;
use ssegate::proxy::{ClientLimits, ProxyProtocol};
use ssegate::run::{self, ControllerConfig, ServeConfig};
use ssegate::sources::file;
use ssegate::translate::ingress_class::ClassPolicy;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    name = "ssegate",
    version,
    about = "An ingress controller and reverse proxy built for Server-Sent Events"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SSEGATE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Scheduling slice, in microseconds, that ssegate's threads ask Linux
    /// for (6.12+; clamped to 100..100000). A woken thread with a shorter
    /// slice than the one running may preempt it, so on a busy core an
    /// event waits less behind a CPU-bound neighbour (whose default slice
    /// is 0.7 to 3 ms); the CPU share is unchanged and no privilege is
    /// needed. 0 keeps the kernel's default. The control thread (config,
    /// table builds) always keeps the default.
    #[arg(long, global = true, default_value_t = 100, env = "SSEGATE_CPU_SLICE_US")]
    cpu_slice_us: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// Address of the proxy listener (HTTP/1.1 and cleartext HTTP/2).
    #[arg(long, default_value = "0.0.0.0:8080", env = "SSEGATE_LISTEN")]
    listen: SocketAddr,
    /// Address of the TLS listener (HTTP/2 and HTTP/1.1 by ALPN), with
    /// certificates picked by SNI from Routes' `tls`. Off when unset.
    #[arg(long, env = "SSEGATE_LISTEN_TLS")]
    listen_tls: Option<SocketAddr>,
    /// Address of the admin listener (/healthz, /readyz, /metrics, /debug/routes).
    #[arg(long, default_value = "127.0.0.1:9090", env = "SSEGATE_ADMIN")]
    admin: SocketAddr,
    /// After SIGTERM, how long to keep serving (already unready) so that
    /// load balancers and endpoints stop sending new traffic first.
    #[arg(long, default_value = "0s", value_parser = duration)]
    drain_delay: Duration,
    /// Then, how long event streams (ended at their next event boundary)
    /// and requests in flight may take before ssegate exits anyway.
    #[arg(long, default_value = "10s", value_parser = duration)]
    drain_timeout: Duration,
    /// Data-plane threads, each with its own single-threaded runtime and
    /// upstream pools; defaults to the CPUs this process may use.
    #[arg(long, env = "SSEGATE_WORKERS")]
    workers: Option<usize>,
    /// The port of the `https://` redirects Ingresses ask for (ssl-redirect):
    /// the TLS listener as clients reach it. Defaults to --listen-tls's own
    /// port, else 443; behind a Service, set the Service's port.
    #[arg(long, env = "SSEGATE_HTTPS_REDIRECT_PORT")]
    https_redirect_port: Option<u16>,
    /// Gives each accepted Gateway of ssegate's class data-plane ports of
    /// its own from this range (FIRST-LAST, e.g. 10000-10099): two per
    /// Gateway (plain, TLS), oldest Gateway first, bound on --listen's
    /// address. A request arriving on one matches only that Gateway's
    /// HTTPRoutes. Off when unset.
    #[arg(long, env = "SSEGATE_GATEWAY_PORTS")]
    gateway_ports: Option<ssegate::model::PortRange>,
    /// Log one line per finished request or stream (target `ssegate::access`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "SSEGATE_ACCESS_LOG")]
    access_log: bool,
    /// The proxies in front of ssegate (load balancers, CDNs) whose
    /// `X-Forwarded-For` and PROXY protocol headers are believed: a
    /// comma-separated list of CIDR networks or addresses. From any other
    /// peer those headers change nothing (docs/security.md: client
    /// addresses). Default: none.
    #[arg(long, value_name = "CIDRS", env = "SSEGATE_TRUSTED_PROXIES")]
    trusted_proxies: Option<CidrSet>,
    /// Listeners on which every connection must start with a PROXY
    /// protocol header (v1 or v2) from one of --trusted-proxies, else it is
    /// closed unanswered: a comma-separated list of `http` (--listen and
    /// Gateways' own plain ports) and `https` (--listen-tls and their TLS
    /// ports). Default (or empty): none.
    #[arg(long, value_name = "LISTENERS", value_parser = listener_kinds, env = "SSEGATE_PROXY_PROTOCOL")]
    proxy_protocol: Option<ProxyProtocol>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Limits and timeouts on client connections (docs/operations.md: Limits and timeouts).
#[derive(clap::Args)]
struct ClientArgs {
    /// Time a client has to send a whole request head, from the moment the
    /// connection opens or the first byte of a new request arrives.
    #[arg(long, default_value = "30s", value_parser = duration, env = "SSEGATE_CLIENT_HEADER_TIMEOUT")]
    client_header_timeout: Duration,
    /// How long a connection with no request in flight stays open. Open
    /// event streams are never idle: only `timeouts.idle` ends them.
    #[arg(long, default_value = "75s", value_parser = duration, env = "SSEGATE_KEEPALIVE_TIMEOUT")]
    keepalive_timeout: Duration,
    /// A client that takes no response byte for this long is disconnected.
    #[arg(long, default_value = "60s", value_parser = duration, env = "SSEGATE_CLIENT_SEND_TIMEOUT")]
    client_send_timeout: Duration,
    /// Longest pause while a client uploads a request body (then 408).
    #[arg(long, default_value = "60s", value_parser = duration, env = "SSEGATE_CLIENT_BODY_TIMEOUT")]
    client_body_timeout: Duration,
    /// Largest request head in bytes (request line and headers, or an
    /// HTTP/2 header list); a larger one gets 431. At least 8192.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(8192..), env = "SSEGATE_MAX_REQUEST_HEAD")]
    max_request_head: u32,
    /// HTTP/2: interval between PINGs on a connection.
    #[arg(long, default_value = "60s", value_parser = duration, env = "SSEGATE_H2_PING_INTERVAL")]
    h2_ping_interval: Duration,
    /// HTTP/2: a connection whose PING is not answered within this is closed.
    #[arg(long, default_value = "20s", value_parser = duration, env = "SSEGATE_H2_PING_TIMEOUT")]
    h2_ping_timeout: Duration,
    /// Open client connections at most, over all listeners; further clients
    /// wait in the kernel's backlog. Default: (open-file limit - 128) / 2,
    /// after raising the soft open-file limit to the hard one.
    #[arg(long, env = "SSEGATE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// `%2F` or `%5C` in a request path: `reject` (400) or `keep` (encoded,
    /// part of its segment).
    #[arg(long, value_enum, default_value_t = EncodedSlashesArg::Reject, env = "SSEGATE_ENCODED_SLASHES")]
    encoded_slashes: EncodedSlashesArg,
}

/// Parses --proxy-protocol: `http` and `https`, comma-separated, spaces
/// around them ignored; an empty list (an empty environment variable, as a
/// manifest may set) is none.
fn listener_kinds(list: &str) -> Result<ProxyProtocol, String> {
    let mut listeners = ProxyProtocol::default();
    for kind in list.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        match kind {
            "http" => listeners.http = true,
            "https" => listeners.https = true,
            other => return Err(format!("`{other}` is not a listener: the listeners are http and https")),
        }
    }
    Ok(listeners)
}

impl ProxyArgs {
    /// The flags as the library's serving settings, checked; raises the
    /// open-file limit (the connection budget depends on it).
    fn config(&self) -> anyhow::Result<ServeConfig> {
        let (trusted_proxies, proxy_protocol) = self.client_addresses()?;
        Ok(ServeConfig {
            listen: self.listen,
            listen_tls: self.listen_tls,
            admin: self.admin,
            drain_delay: self.drain_delay,
            drain_timeout: self.drain_timeout,
            workers: self.workers,
            https_redirect_port: self.https_redirect_port,
            gateway_ports: self.gateway_ports,
            access_log: self.access_log,
            trusted_proxies,
            proxy_protocol,
            limits: self.client.limits(),
        })
    }

    /// The --trusted-proxies and --proxy-protocol pair, checked: a PROXY
    /// protocol listener with nobody trusted would refuse every connection.
    fn client_addresses(&self) -> anyhow::Result<(CidrSet, ProxyProtocol)> {
        let trusted = self.trusted_proxies.clone().unwrap_or_default();
        let listeners = self.proxy_protocol.unwrap_or_default();
        if listeners.any() && trusted.is_empty() {
            anyhow::bail!(
                "--proxy-protocol needs --trusted-proxies: a PROXY protocol header is believed only from a trusted \
                 peer, so with none trusted every connection on those listeners would be refused"
            );
        }
        Ok((trusted, listeners))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum EncodedSlashesArg {
    Reject,
    Keep,
}

impl ClientArgs {
    fn limits(&self) -> ClientLimits {
        let nofile = ssegate::process::raise_fd_limit();
        ClientLimits {
            header_timeout: self.client_header_timeout,
            keepalive_timeout: self.keepalive_timeout,
            send_timeout: self.client_send_timeout,
            body_timeout: self.client_body_timeout,
            max_head_bytes: self.max_request_head as usize,
            h2_ping_interval: self.h2_ping_interval,
            h2_ping_timeout: self.h2_ping_timeout,
            max_connections: self
                .max_connections
                .unwrap_or_else(|| ssegate::listener::default_max_connections(nofile)),
            encoded_slashes: match self.encoded_slashes {
                EncodedSlashesArg::Reject => EncodedSlashes::Reject,
                EncodedSlashesArg::Keep => EncodedSlashes::Keep,
            },
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve Routes, Ingresses, Gateway API objects, Services,
    /// EndpointSlices and Secrets from a folder of YAML files, reloading
    /// them live. Needs no cluster.
    Standalone {
        /// Folder of YAML files.
        #[arg(long, env = "SSEGATE_DIR")]
        dir: PathBuf,
        #[command(flatten)]
        ingress: IngressArgs,
        #[command(flatten)]
        proxy: ProxyArgs,
    },
    /// Run as a Kubernetes ingress controller: watch Routes, Services and
    /// EndpointSlices, serve traffic, and (as the lease holder) write status.
    Controller(Box<ControllerArgs>),
    /// Run the demo backend and a standalone ssegate in front of it.
    Demo {
        /// Folder of example files; its EndpointSlice points at --backend.
        #[arg(long, default_value = "manifests/examples/standalone")]
        dir: PathBuf,
        /// Address of the demo backend.
        #[arg(long, default_value = "127.0.0.1:8081")]
        backend: SocketAddr,
        #[command(flatten)]
        ingress: IngressArgs,
        #[command(flatten)]
        proxy: ProxyArgs,
    },
    /// Run only the demo SSE backend.
    DemoBackend {
        #[arg(long, default_value = "0.0.0.0:8081")]
        listen: SocketAddr,
        /// Name reported in the first event; defaults to $HOSTNAME.
        #[arg(long, env = "HOSTNAME", default_value = "demo")]
        server_id: String,
        /// On SIGTERM, stop accepting connections and exit once no event
        /// stream is open, or after this long at the latest (below
        /// Kubernetes' default grace period of 30s).
        #[arg(long, default_value = "25s", value_parser = duration)]
        drain_timeout: Duration,
    },
    /// Print a CustomResourceDefinition as YAML: the Route's, or with
    /// `--kind StreamPolicy` the StreamPolicy's.
    Crd {
        #[arg(long, default_value = "Route", value_parser = ["Route", "StreamPolicy"])]
        kind: String,
    },
    /// Print every ingress-nginx annotation with what ssegate does with it
    /// (honoured, unnecessary, ignored or fails closed), as Markdown.
    Annotations,
    /// Print every command's flags (with their environment variables and
    /// defaults) as Markdown: docs/flags.md, kept in step by a test.
    Flags,
    /// Print networking.k8s.io/v1 Ingresses (with their ingress-nginx
    /// annotations) as equivalent Routes: one Route per host. Other
    /// documents pass through unchanged; Services in the input resolve
    /// named ports. Nothing is printed, and the exit status is 1, when any
    /// Ingress cannot be converted.
    Convert {
        /// YAML files (several documents each, or `kubectl get -o yaml`
        /// Lists); `-` or none reads stdin.
        files: Vec<PathBuf>,
    },
}

/// Which Ingresses are ssegate's (docs/ingress-nginx.md).
#[derive(clap::Args)]
struct IngressArgs {
    /// The IngressClass name ssegate answers to, besides every IngressClass
    /// whose controller is `ssegate.dev/ingress`. An Ingress
    /// names it in spec.ingressClassName (or the legacy
    /// kubernetes.io/ingress.class annotation).
    #[arg(long, default_value = ssegate::translate::ingress_class::DEFAULT_CLASS, env = "SSEGATE_INGRESS_CLASS")]
    ingress_class: String,
    /// Also serve Ingresses that name no class (as ingress-nginx's flag).
    /// They are served anyway when one of ssegate's IngressClasses is the
    /// cluster default.
    #[arg(long, default_value_t = false, env = "SSEGATE_WATCH_INGRESS_WITHOUT_CLASS")]
    watch_ingress_without_class: bool,
    /// Also serve Ingresses of this class though its IngressClass names
    /// another controller (repeatable): `nginx`, to take over a team's
    /// Ingresses unedited once ingress-nginx is switched off.
    #[arg(
        long = "claim-ingress-class",
        env = "SSEGATE_CLAIM_INGRESS_CLASSES",
        value_delimiter = ','
    )]
    claimed: Vec<String>,
}

impl IngressArgs {
    fn policy(&self) -> ClassPolicy {
        ClassPolicy {
            class_name: self.ingress_class.clone(),
            without_class: self.watch_ingress_without_class,
            claimed: self.claimed.clone(),
        }
    }
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Kubeconfig file; defaults to $KUBECONFIG, then the in-cluster config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace to watch (repeatable); all namespaces when omitted.
    #[arg(long = "namespace", env = "SSEGATE_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Namespace of the status-writer Lease (the release namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the status-writer Lease.
    #[arg(long, default_value = "ssegate-status")]
    lease_name: String,
    /// How long a Lease stays valid without renewal; another replica takes
    /// over status writing within this time after the holder dies.
    #[arg(long, default_value = "15s", value_parser = duration)]
    lease_duration: Duration,
    /// Watch `kubernetes.io/tls` Secrets for the certificates Routes name
    /// (needs get, list and watch on Secrets). Turn off to run without
    /// any access to Secrets; Routes with `tls` then report the Secret missing.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "SSEGATE_TLS_SECRETS")]
    tls_secrets: bool,
    /// This replica's identity in the Lease; defaults to $POD_NAME, then
    /// `<host name>-<pid>`.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The UID of this replica's Pod (the chart passes `metadata.uid`):
    /// with the identity as its name, the Pod is the Lease's owner while
    /// holding it, so the Lease goes with the last replica.
    #[arg(long, env = "POD_UID")]
    pod_uid: Option<String>,
    /// The Service whose addresses the lease holder writes into
    /// status.loadBalancer of the Ingresses it serves (`namespace/name`, or
    /// a name in --lease-namespace): its load balancer's ingress, else its
    /// spec.externalIPs, else its cluster IPs. As ingress-nginx's flag.
    #[arg(long, env = "SSEGATE_PUBLISH_SERVICE")]
    publish_service: Option<String>,
    /// Fixed addresses (comma-separated IPs or host names) for Ingresses'
    /// status.loadBalancer; wins over --publish-service. With neither,
    /// Ingress status is not written.
    #[arg(long, env = "SSEGATE_PUBLISH_STATUS_ADDRESS")]
    publish_status_address: Option<String>,
    /// With --gateway-ports: the labels of ssegate's own pods
    /// (`key=value,...`). The Lease holder then keeps a Service per
    /// Gateway in --lease-namespace that selects them, mapping the
    /// Gateway's listener ports to its own ports, and publishes that
    /// Service's addresses as the Gateway's. Unset: no such Service.
    #[arg(long, env = "SSEGATE_GATEWAY_SERVICE_SELECTOR")]
    gateway_service_selector: Option<String>,
    /// `spec.type` of each Gateway's own Service.
    #[arg(long, default_value = "LoadBalancer", env = "SSEGATE_GATEWAY_SERVICE_TYPE",
          value_parser = ssegate::translate::gateway::service::SERVICE_TYPES)]
    gateway_service_type: String,
    /// Start of each Gateway's own Service's name, and the value of its
    /// `ssegate.dev/gateway-service` label (the chart uses the release's
    /// full name): `{prefix}-{namespace}-{name}`.
    #[arg(long, default_value = "ssegate", env = "SSEGATE_GATEWAY_SERVICE_PREFIX")]
    gateway_service_prefix: String,
    /// A Service in --lease-namespace (the chart passes its own) that each
    /// Gateway's own Service names as its owner, so that deleting it, as
    /// uninstalling the chart does, deletes them too. Unset: no owner.
    #[arg(long, env = "SSEGATE_GATEWAY_SERVICE_OWNER")]
    gateway_service_owner: Option<String>,
    #[command(flatten)]
    ingress: IngressArgs,
    #[command(flatten)]
    proxy: ProxyArgs,
}

impl ControllerArgs {
    fn config(&self) -> anyhow::Result<ControllerConfig> {
        Ok(ControllerConfig {
            kubeconfig: self.kubeconfig.clone(),
            namespaces: self.namespaces.clone(),
            lease_namespace: self.lease_namespace.clone(),
            lease_name: self.lease_name.clone(),
            lease_duration: self.lease_duration,
            tls_secrets: self.tls_secrets,
            identity: self.identity.clone(),
            pod_uid: self.pod_uid.clone(),
            publish_service: self.publish_service.clone(),
            publish_status_address: self.publish_status_address.clone(),
            gateway_service_selector: self.gateway_service_selector.clone(),
            gateway_service_type: self.gateway_service_type.clone(),
            gateway_service_prefix: self.gateway_service_prefix.clone(),
            gateway_service_owner: self.gateway_service_owner.clone(),
            ingress: self.ingress.policy(),
            serve: self.proxy.config()?,
        })
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    ssegate::api::parse_duration(s).map_err(|e| e.to_string())
}

fn init_logging(format: LogFormat) {
    // kube-client logs every failed request at ERROR, many a second during
    // an apiserver outage; ssegate logs each failure once, with context.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube_client::client::builder=off".into());
    // Colour only for a person at a terminal, never into a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Crd { kind } => {
            let crd = match kind.as_str() {
                "StreamPolicy" => ssegate::api::StreamPolicy::crd(),
                _ => ssegate::api::Route::crd(),
            };
            print!("{}", serde_yaml::to_string(&crd)?);
            return Ok(());
        }
        Command::Convert { files } => return convert(files),
        Command::Annotations => {
            print!("{}", ssegate::translate::ingress_nginx_catalogue::markdown());
            return Ok(());
        }
        Command::Flags => {
            print!("{}", flags_markdown());
            return Ok(());
        }
        command => command,
    };
    init_logging(cli.log_format);
    // Before any thread starts: every thread inherits the slice.
    if let Err(e) = ssegate::process::set_thread_slice(Duration::from_micros(cli.cpu_slice_us)) {
        tracing::warn!(error = %e, "cannot set the scheduling slice; keeping the kernel's default");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(run(command))
}

/// `ssegate convert`: reads every input within the folder source's limits,
/// prints the result, or every problem and no output.
fn convert(files: Vec<PathBuf>) -> anyhow::Result<()> {
    use ssegate::translate::convert_yaml::convert_documents;
    use std::io::Read;
    let limits = file::Limits::default();
    let max = limits.max_file_bytes;
    let files = if files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        files
    };
    let mut inputs = Vec::with_capacity(files.len());
    for f in files {
        let shown = f.display().to_string();
        let text = if shown == "-" {
            let mut text = String::new();
            std::io::stdin()
                .take(max + 1)
                .read_to_string(&mut text)
                .context("cannot read stdin")?;
            anyhow::ensure!(text.len() as u64 <= max, "stdin: more than {max} bytes");
            text
        } else {
            file::read_limited(&f, max).map_err(|e| anyhow::anyhow!("{shown} {e}"))?
        };
        inputs.push((shown, text));
    }
    let out = convert_documents(&inputs, &limits, file::DEFAULT_NAMESPACE).map_err(|errors| {
        for e in &errors {
            eprintln!("error: {e}");
        }
        anyhow::anyhow!("{} problem(s); nothing converted", errors.len())
    })?;
    print!("{}", out.yaml);
    eprintln!(
        "ssegate convert: {} Ingress(es) into {} Route(s); {} other document(s) passed through unchanged",
        out.ingresses, out.routes, out.passed
    );
    Ok(())
}

async fn run(command: Command) -> anyhow::Result<()> {
    // Flag combinations that cannot serve are refused before anything
    // starts (a cluster connection, the demo backend).
    match &command {
        Command::Standalone { proxy, .. } | Command::Demo { proxy, .. } => proxy.client_addresses().map(drop)?,
        Command::Controller(args) => args.proxy.client_addresses().map(drop)?,
        _ => {}
    }
    match command {
        Command::Standalone { dir, ingress, proxy } => run::standalone(dir, ingress.policy(), proxy.config()?).await,
        Command::Controller(args) => run::controller(args.config()?).await,
        Command::Demo {
            dir,
            backend,
            ingress,
            proxy,
        } => {
            let listener = TcpListener::bind(backend)
                .await
                .with_context(|| format!("cannot listen on {backend} for the demo backend"))?;
            tokio::spawn(DemoBackend::new("demo-1").serve(listener));
            println!(
                "ssegate demo: backend on {backend}, proxy on {}.\n\
                 Try:  curl -N http://127.0.0.1:{}/.sse\n\
                 Then edit proxyBuffering in {}/demo.yaml (Disabled, Enabled, Auto): new requests follow at once.",
                proxy.listen,
                proxy.listen.port(),
                dir.display()
            );
            run::standalone(dir, ingress.policy(), proxy.config()?).await
        }
        Command::DemoBackend {
            listen,
            server_id,
            drain_timeout,
        } => {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            info!(%listen, "demo backend serving /.sse /json /chatty");
            let demo = DemoBackend::new(server_id);
            tokio::spawn(demo.clone().serve(listener));
            term.recv().await;
            info!(
                open = demo.open_streams(),
                limit = ?drain_timeout,
                "SIGTERM: demo backend draining (no new connections; exits once no event stream is open)"
            );
            match demo.drain(drain_timeout).await {
                Ok(took) => info!(took = ?took, "demo backend drained"),
                Err(open) => {
                    warn!(open, limit = ?drain_timeout, "demo backend drain limit passed: exiting with event streams open")
                }
            }
            Ok(())
        }
        Command::Crd { .. } | Command::Convert { .. } | Command::Annotations | Command::Flags => unreachable!(),
    }
}

/// Every command's flags as Markdown tables, from clap's own description
/// of them, so the reference cannot drift from the binary.
fn flags_markdown() -> String {
    use clap::CommandFactory;
    use std::fmt::Write;
    let cli = Cli::command();
    let mut out = String::from(
        "# ssegate flags\n\nGenerated by `ssegate flags` (`cargo run -- flags > docs/flags.md`); a test fails when it is stale.\n",
    );
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let table = |out: &mut String, cmd: &clap::Command| {
        let args: Vec<&clap::Arg> = cmd
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            .collect();
        if args.is_empty() {
            out.push_str("\nNo flags.\n");
            return;
        }
        out.push_str("\n| flag | environment | default | meaning |\n|---|---|---|---|\n");
        for a in args {
            let name = match (a.get_long(), a.get_value_names()) {
                (Some(long), Some(v)) if a.get_action().takes_values() => format!("`--{long} <{}>`", v.join(" ")),
                (Some(long), _) => format!("`--{long}`"),
                (None, _) => format!("`<{}>`", a.get_id()),
            };
            let env = a
                .get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default();
            let default: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = if default.is_empty() {
                String::new()
            } else {
                format!("`{}`", default.join(","))
            };
            let help = a
                .get_long_help()
                .or(a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let _ = writeln!(out, "| {name} | {env} | {default} | {} |", cell(&help));
        }
    };
    let _ = write!(out, "\n## ssegate (every command)\n");
    table(&mut out, &cli);
    for sub in cli.get_subcommands() {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let _ = write!(out, "\n## ssegate {}\n\n{}\n", sub.get_name(), cell(&about));
        table(&mut out, sub);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_flag_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/flags.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == super::flags_markdown(),
            "docs/flags.md is stale: cargo run -- flags > docs/flags.md"
        );
    }
}
