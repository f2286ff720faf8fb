//! The ssegate command line: standalone proxy, demo, demo backend, CRD.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;
use ssegate::admin::{self, AdminState};
use ssegate::demo::DemoBackend;
use ssegate::model::empty_table;
use ssegate::proxy::Proxy;
use ssegate::sources::file::{self, FolderSource};
use ssegate::sources::Applier;
use ssegate::status::LogStatus;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::info;

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
    /// Address of the admin listener (/healthz, /readyz, /debug/routes).
    #[arg(long, default_value = "127.0.0.1:9090", env = "SSEGATE_ADMIN")]
    admin: SocketAddr,
    /// How long open connections may take to finish after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = duration)]
    drain_timeout: Duration,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Routes, Services and EndpointSlices from a folder of YAML files,
    /// reloading them live. Needs no cluster.
    Standalone {
        /// Folder of YAML files.
        #[arg(long, env = "SSEGATE_DIR")]
        dir: PathBuf,
        #[command(flatten)]
        proxy: ProxyArgs,
    },
    /// Run the demo backend and a standalone ssegate in front of it.
    Demo {
        /// Folder of example files; its EndpointSlice points at --backend.
        #[arg(long, default_value = "manifests/examples/standalone")]
        dir: PathBuf,
        /// Address of the demo backend.
        #[arg(long, default_value = "127.0.0.1:8081")]
        backend: SocketAddr,
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
    },
    /// Print the Route CustomResourceDefinition as YAML.
    Crd,
}

fn duration(s: &str) -> Result<Duration, String> {
    ssegate::api::parse_duration(s).map_err(|e| e.to_string())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Crd = cli.command {
        print!("{}", serde_yaml::to_string(&ssegate::api::Route::crd())?);
        return Ok(());
    }
    init_logging(cli.log_format);
    match cli.command {
        Command::Standalone { dir, proxy } => standalone(dir, proxy).await,
        Command::Demo { dir, backend, proxy } => {
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
            standalone(dir, proxy).await
        }
        Command::DemoBackend { listen, server_id } => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            info!(%listen, "demo backend serving /.sse /json /chatty");
            DemoBackend::new(server_id).serve(listener).await;
            Ok(())
        }
        Command::Crd => unreachable!(),
    }
}

async fn standalone(dir: PathBuf, args: ProxyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
    let table = empty_table();
    let applier = Arc::new(Applier::new(table.clone(), Arc::new(LogStatus::default())));
    let source = FolderSource::new(&dir);
    let admin_state = AdminState::new(table.clone());

    let proxy_listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin_listener = TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("cannot listen on {} for admin", args.admin))?;

    let watcher = tokio::spawn(file::watch(source, applier.clone(), Duration::from_millis(10)));
    // The watcher publishes the first table before it waits for changes.
    while table.load().generation == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        anyhow::ensure!(
            !watcher.is_finished(),
            "the folder watcher stopped before the first load"
        );
    }
    admin_state.set_ready(true);
    info!(listen = %args.listen, admin = %args.admin, dir = %dir.display(), "ssegate standalone serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin_state.clone(),
        wait_stop(stop_rx.clone()),
    ));
    let proxy_task = tokio::spawn(Proxy::new(table).serve(proxy_listener, wait_stop(stop_rx), args.drain_timeout));

    tokio::select! {
        _ = shutdown_signal() => info!("shutting down"),
        res = watcher => {
            res.context("folder watcher panicked")?.context("folder watcher failed")?;
        }
    }
    admin_state.set_ready(false);
    let _ = stop_tx.send(true);
    proxy_task.await??;
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
