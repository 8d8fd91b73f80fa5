//! `cloudsim`: serves the simulated cloud's OpenStack HTTP face for demos and
//! manual testing, and prints (or writes) a clouds.yaml pointing at it,
//! after comments naming what a warmpoold config for it names.

use anyhow::Context;
use clap::Parser;
use cloudsim::http::{HttpFace, HttpSettings};
use cloudsim::{SimCloud, SimConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "A simulated OpenStack (Keystone, Nova, Cinder, Neutron, Glance subset)")]
struct Args {
    /// Address to serve on (one port; services under /identity, /compute, ...).
    #[arg(long, default_value = "127.0.0.1:8990")]
    listen: SocketAddr,
    /// Multiplies every simulated latency (1.0 = real-cloud latencies).
    #[arg(long, default_value_t = 0.05)]
    time_scale: f64,
    /// Simulate IOPS throttling (boots 3-5x slower).
    #[arg(long)]
    iops_throttled: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Port simulated mysqld greets on, at each server's own 127.77.x.y address.
    #[arg(long, default_value_t = 3306)]
    mysql_port: u16,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime: u64,
    /// Name of the cloud in the clouds.yaml.
    #[arg(long, default_value = "cloudsim")]
    cloud_name: String,
    /// Also write the clouds.yaml here.
    #[arg(long)]
    clouds_yaml: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs on stderr: stdout carries only the clouds.yaml and its comments.
    // Colour only for a person at a terminal, as warmpoold's: a log file
    // or journald would keep the escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let sim = SimCloud::new(SimConfig {
        time_scale: args.time_scale,
        iops_throttled: args.iops_throttled,
        seed: args.seed,
        // It forgets everything when it stops; a warmpoold store does not:
        // ids of a later run must not repeat the earlier run's.
        id_salt: rand::random(),
        ..SimConfig::default()
    });
    let settings = HttpSettings {
        mysql_port: args.mysql_port,
        token_lifetime: std::time::Duration::from_secs(args.token_lifetime),
        ..HttpSettings::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let face = HttpFace::serve(sim, settings, listener).await?;
    let yaml = face.clouds_yaml(&args.cloud_name);
    if let Some(path) = &args.clouds_yaml {
        std::fs::write(path, &yaml).with_context(|| format!("cannot write {}", path.display()))?;
        tracing::info!(path = %path.display(), "wrote clouds.yaml");
    }
    // What a warmpoold config names, as comments: stdout stays a clouds.yaml.
    println!("# cloudsim serving at {}", face.base_url());
    match &args.clouds_yaml {
        Some(path) => println!(
            "# clouds.yaml: {}, cloud {:?}",
            path.display(),
            args.cloud_name
        ),
        None => println!(
            "# clouds.yaml: below (--clouds-yaml FILE writes it), cloud {:?}",
            args.cloud_name
        ),
    }
    for line in face.served() {
        println!("# {line}");
    }
    print!("{yaml}");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    face.shutdown().await?;
    Ok(())
}
