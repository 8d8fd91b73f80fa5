//! warmpoold: the warmpool daemon.

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use warmpool_server::config::{CloudConfig, Config};

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Check that the configured OpenStack is usable: credentials, the pools'
    /// flavors, the image(s), the management networks and quota headroom for
    /// the pools' min_ready. One line per check; exits 1 if any fails.
    CheckCloud {
        /// TOML config file (the daemon's).
        #[arg(long, env = "WARMPOOL_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // check-cloud prints its own report; only errors are logged beside it.
    let default_filter = match args.command {
        Some(Command::CheckCloud { .. }) => "error",
        None => "info,sled=warn,h2=warn,tower=warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    if let Some(Command::CheckCloud { config }) = &args.command {
        let config = match config.as_ref().or(args.config.as_ref()) {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        std::process::exit(check_cloud(&config).await);
    }
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    }
    .overridden(args.listen, args.metrics_listen, args.data_dir)?;
    let running = match warmpool_server::start(config, shutdown_signal()?).await {
        Ok(running) => running,
        Err(e) if e.is::<warmpool_server::StoppedDuringStartUp>() => {
            tracing::info!("stopped during start-up, as asked");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    running.served.await.context("server task")??;
    Ok(())
}

/// Prints the report; the exit code is 0 when every check passed.
async fn check_cloud(config: &Config) -> i32 {
    let CloudConfig::OpenStack(os) = &config.cloud else {
        println!("cloud: embedded simulated cloud; nothing to check");
        return 0;
    };
    let (report, _) = warmpool_server::check_cloud::check(config, os).await;
    print!("{report}");
    if report.passed() {
        0
    } else {
        1
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed here, before
/// start-up, so that a signal during the cloud check or the start-up
/// reconcile stops warmpoold in order instead of killing it.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut interrupt =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
