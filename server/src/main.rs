//! warmpoold: the warmpool daemon.

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use warmpool_server::config::Config;

/// Keeps pools of warm MySQL VMs and hands them out over gRPC.
#[derive(Parser, Debug)]
#[command(name = "warmpoold", version)]
struct Args {
    /// TOML config file; without one, warmpoold runs the embedded demo cloud.
    #[arg(long, env = "WARMPOOL_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address (overrides the file).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Prometheus metrics listen address (overrides the file).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Store directory (overrides the file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sled=warn,h2=warn,tower=warn".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(metrics_listen) = args.metrics_listen {
        config.metrics_listen = metrics_listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let running = warmpool_server::start(config, shutdown_signal()).await?;
    running.served.await.context("server task")??;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
