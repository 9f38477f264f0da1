//! `konsen-server`: one node of a konsen cluster, on TCP.
//!
//! Startup: read the settings, open the data dir, listen on this node's
//! endpoint, and hand everything to [`konsen_server::run_node`]. SIGTERM or
//! SIGINT: stop accepting, let the node loop finish the `Ready` in hand
//! (every acknowledged write is already synced), and exit 0. A bad
//! configuration, an unusable data dir or a storage failure exits 1 with
//! the reason. Under systemd (`Type=notify`) it reports ready once
//! listening and stopping on a signal (`notify.rs`).

mod notify;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use konsen_rpc::net::{TcpConnector, tcp_incoming};
use konsen_server::args::Args;
use konsen_server::settings::Settings;
use konsen_server::{logging, open_store, run_node};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(args.log_format);
    // One thread runs the network and the node loop, fsyncs included; only
    // long disk work goes to the blocking pool (node/driver.rs). On a few
    // cores shared by several processes this wakes threads least
    // (docs/performance.md, item 2).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let settings = Arc::new(Settings::load(&args)?);
    let endpoints: Vec<&str> = settings.endpoints.iter().map(|(_, e)| e.as_str()).collect();
    info!(source = %settings.source, cluster_id = settings.cluster_id, "Cluster endpoints: {endpoints:?}");
    if settings.unsafe_stale_reads {
        warn!(
            "UNSAFE: unsafe_stale_reads is on: linearizable reads are served from this node's \
             local state without ReadIndex and MAY BE STALE. For fault-injection tests only; \
             never in production."
        );
    }
    if settings.unsafe_watch_ignore_gaps {
        warn!(
            "UNSAFE: unsafe_watch_ignore_gaps is on: watchers that fall behind LOSE EVENTS. For \
             fault-injection tests only; never in production."
        );
    }
    let store = open_store(&settings)?;

    let endpoint = settings.endpoint();
    let addr = tokio::net::lookup_host(endpoint)
        .await
        .with_context(|| format!("resolving this node's endpoint {endpoint}"))?
        .next()
        .with_context(|| format!("endpoint {endpoint} resolves to no address"))?;
    let (incoming, local) = tcp_incoming(addr)
        .await
        .with_context(|| format!("listening on {endpoint}"))?;
    info!(
        node_id = settings.node_id,
        "Start konsen server on: {:?}",
        local.to_string()
    );

    // Connections are accepted from here on (they queue until the server
    // task polls the listener), so systemd may start dependants now.
    notify::ready();

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let stop = async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!("received {name}; shutting down");
        notify::stopping();
    };
    run_node(settings, store, incoming, TcpConnector, stop).await
}
