//! `cloudsim`: serves the simulated cloud's OpenStack HTTP face for demos and
//! manual testing, and prints (or writes) a clouds.yaml pointing at it,
//! after comments naming what a warmpoold config for it names.

use anyhow::Context;
use clap::Parser;
use cloudsim::http::{HttpError, HttpFace, HttpSettings, RunningFace};
use cloudsim::{check_time_scale, SimCloud, SimConfig, MAX_TIME_SCALE};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "A simulated OpenStack (Keystone, Nova, Cinder, Neutron, Glance subset)")]
struct Args {
    /// Address to serve on (one port; services under /identity, /compute, ...).
    #[arg(long, default_value = "127.0.0.1:8990")]
    listen: SocketAddr,
    /// Multiplies every simulated latency (1.0 = real-cloud latencies), 0 to 1000.
    #[arg(long, default_value_t = 0.05, value_parser = parse_time_scale)]
    time_scale: f64,
    /// Simulate IOPS throttling (boots 3-5x slower).
    #[arg(long)]
    iops_throttled: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Port simulated mysqld greets on, at each server's own 127.77.x.y address.
    #[arg(long, default_value_t = 3306)]
    mysql_port: u16,
    /// Token lifetime in seconds, 1 to a year (31536000).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_LIFETIME_SECS))]
    token_lifetime: u64,
    /// Name of the cloud in the clouds.yaml.
    #[arg(long, default_value = "cloudsim")]
    cloud_name: String,
    /// Also write the clouds.yaml here.
    #[arg(long)]
    clouds_yaml: Option<PathBuf>,
}

/// A token's lifetime at most: a year, far from overflowing the instant
/// it expires at.
const MAX_TOKEN_LIFETIME_SECS: u64 = 365 * 24 * 3600;

fn parse_time_scale(s: &str) -> Result<f64, String> {
    let scale: f64 = s
        .parse()
        .map_err(|e| format!("{e}: give a number from 0 to at most {MAX_TIME_SCALE}"))?;
    check_time_scale(scale).map_err(|e| e.to_string())
}

/// The simulated cloud and its HTTP face, as `args` ask.
async fn serve(args: &Args) -> anyhow::Result<RunningFace> {
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
    match HttpFace::serve(sim, settings, listener).await {
        Err(HttpError::MysqlPortTaken { port, source }) => anyhow::bail!(
            "port {port} is taken on every address (a local MySQL?): pass --mysql-port M and set mysql_port = M under [cloud] in warmpoold's config ({source})"
        ),
        served => Ok(served?),
    }
}

/// Writes `text` to `path` readable by its owner only: a clouds.yaml holds
/// the password, and warmpoold warns of one every user of the host may
/// read. A file already there (an earlier run's) is narrowed too, as
/// `mode` applies only to a file it creates.
fn write_secret(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
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
    let face = serve(&args).await?;
    let yaml = face.clouds_yaml(&args.cloud_name);
    if let Some(path) = &args.clouds_yaml {
        write_secret(path, &yaml).with_context(|| format!("cannot write {}", path.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from([&["cloudsim"], args].concat())
    }

    /// Settings the simulation cannot run with are refused when parsed,
    /// naming the option, not met later as a panic deep in the model.
    #[test]
    fn unusable_time_scales_and_token_lifetimes_are_refused() {
        for scale in ["inf", "NaN", "-1", "1e18"] {
            let err = parse(&[&format!("--time-scale={scale}")])
                .unwrap_err()
                .to_string();
            assert!(err.contains("--time-scale"), "{scale}: {err}");
            assert!(err.contains("at most 1000"), "{scale}: {err}");
        }
        for lifetime in ["0", "18446744073709551615"] {
            let err = parse(&["--token-lifetime", lifetime])
                .unwrap_err()
                .to_string();
            assert!(err.contains("--token-lifetime"), "{lifetime}: {err}");
        }
        let args = parse(&["--time-scale", "0.01", "--token-lifetime", "60"]).unwrap();
        assert_eq!((args.time_scale, args.token_lifetime), (0.01, 60));
        parse(&["--time-scale", "1000"]).unwrap();
    }

    /// Something holding the mysqld port on every address (a local MySQL,
    /// `docker run -p 3306:3306`) left no server's own address free:
    /// cloudsim served, and answered every server create 500, logging
    /// nothing. It refuses to start, naming the flag and the config key.
    #[tokio::test]
    async fn a_mysql_port_taken_on_every_address_is_refused_at_start() {
        let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let args = parse(&["--listen", "127.0.0.1:0", "--mysql-port", &port.to_string()]).unwrap();
        let err = format!("{:#}", serve(&args).await.unwrap_err());
        assert!(
            err.contains(&format!("port {port} is taken on every address"))
                && err.contains("--mysql-port")
                && err.contains("mysql_port = ")
                && err.contains("[cloud]"),
            "{err}"
        );

        // Free, it serves.
        drop(taken);
        let face = serve(&args).await.unwrap();
        face.shutdown().await.unwrap();
    }
}
