//! warmpoold: the warmpool daemon.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use pool_manager::store::RecordKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use warmpool_server::config::{CloudConfig, Config};

/// Keeps pools of warm MySQL VMs and hands them out over gRPC.
#[derive(Parser, Debug, Clone)]
#[command(name = "warmpoold", version)]
struct Args {
    /// TOML config file; without one, warmpoold runs the embedded demo
    /// cloud. `check-cloud` and `store` take it too, before or after the
    /// subcommand; a flag beats WARMPOOL_CONFIG.
    #[arg(long, global = true, env = "WARMPOOL_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address (overrides the file).
    #[arg(long, value_parser = warmpool_server::config::parse_socket_addr)]
    listen: Option<SocketAddr>,
    /// Prometheus metrics listen address (overrides the file).
    #[arg(long, value_parser = warmpool_server::config::parse_socket_addr)]
    metrics_listen: Option<SocketAddr>,
    /// Store directory (overrides the file; `check-cloud` and `store` take
    /// it too, before or after the subcommand).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Start on a store that knows no pool server and no order although the
    /// cloud lists pool servers under cloud.server_tag (warmpoold refuses
    /// that start otherwise): the unsold ones are deleted as leaks, the sold
    /// ones (volumes attached) left alone and logged. Once, for a store
    /// meant to be new because the old one is lost: that start notes so in
    /// the store, and later starts on it need no flag.
    #[arg(long)]
    delete_unknown_servers: bool,
    /// Start on a store that recorded another cloud than the configured
    /// one (warmpoold refuses that start otherwise): the configured cloud
    /// is recorded as the store's, and the store's pools boot on it. Once,
    /// for a store meant to move to this cloud: later starts on it need
    /// no flag. The embedded demo cloud (no --config) adopts no store.
    #[arg(long)]
    adopt_cloud: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum Command {
    /// Check that the configured OpenStack is usable: credentials, the pools'
    /// flavors, the image(s), the management networks, the pools' zones in
    /// Nova and Cinder, and quota headroom (Nova's and Neutron's ports) for
    /// each pool's min_ready or its highest operator window min, every
    /// pool's windows counted as if open at once. The
    /// pools are those start-up checks: the store's (data_dir, or
    /// --data-dir), unless a
    /// running warmpoold holds it, and the configured ones it lacks. One
    /// line per check; exits 1 if any fails.
    CheckCloud,
    /// Mend a store warmpoold cannot open because of a record it cannot
    /// read (one a newer version wrote, a damaged disk). Stop warmpoold
    /// first. The store is the config's data_dir, or --data-dir.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(clap::Subcommand, Debug, Clone)]
enum StoreCommand {
    /// List every record this version cannot read, and those set aside,
    /// and the cloud the store serves; exits 1 if any that stops
    /// warmpoold cannot be read, the cloud's record included (a pool's
    /// learned sizing does not: it is listed as a note, to be kept).
    Check,
    /// Move one unreadable record aside: its bytes are kept (in the store's
    /// set_aside tree) and its id stays taken (an order set aside cannot be
    /// bought again; a server of an instance set aside is not deleted), and
    /// warmpoold starts without it. A warmpoold that reads it (the version
    /// that wrote it) moves it back when it starts, unless a record was
    /// written under its key meanwhile: a pool's or its sizing's (a pool
    /// created again) then stays aside for good, superseded; a twin
    /// watch's is merged into the watch of its name; an instance's or an
    /// order's stays aside, holding its key, for a person to compare.
    SetAside {
        /// The record's kind, as `store check` shows it.
        #[arg(value_parser = record_kind_parser())]
        kind: RecordKind,
        /// The record's key, as `store check` shows it.
        key: String,
    },
}

/// An error ends warmpoold with one line, its causes after colons: not
/// anyhow's report, which adds a stack trace wherever RUST_BACKTRACE is set.
/// The daemon's start refused for what no restart mends exits
/// EX_CONFIG (78, [`warmpool_server::needs_an_operator`]), which its
/// supervisor is told not to restart; any other error exits 1.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            match e.downcast_ref::<NeedsAnOperator>() {
                Some(_) => std::process::ExitCode::from(warmpool_server::EXIT_NEEDS_AN_OPERATOR),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

/// The daemon's start, refused for what no restart mends: shown as the
/// error it wraps, its causes after colons.
#[derive(Debug)]
struct NeedsAnOperator(anyhow::Error);

impl std::fmt::Display for NeedsAnOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for NeedsAnOperator {}

/// `error`, marked [`NeedsAnOperator`] when it is such a refusal. For the
/// daemon's start only: the subcommands' exit codes say what they found.
fn classified(error: anyhow::Error) -> anyhow::Error {
    if warmpool_server::needs_an_operator(&error) {
        NeedsAnOperator(error).into()
    } else {
        error
    }
}

/// The command line, with WARMPOOL_CONFIG exported empty taken as unset
/// (as every WARMPOOL_* variable is, warmpoolctl's too): clap would take
/// the empty value and refuse it as --config's, a flag the user never typed.
fn parse_args() -> Args {
    let command = Args::command().mut_args(|arg| {
        let empty = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|value| value.is_empty());
        if empty {
            arg.env(None)
        } else {
            arg
        }
    });
    Args::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

async fn run() -> anyhow::Result<()> {
    // First: SIGHUP's default action ends the process, `systemctl reload`
    // may send it from the moment warmpoold is exec'd (Type=exec), and
    // systemd counts that end as clean, so it does not restart warmpoold.
    // One that comes before start-up is done is taken once it is
    // ([`holding_hangups`]). The subcommands ignore it.
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let args = parse_args();
    // check-cloud prints its own report; only errors are logged beside it,
    // and the warning of a clouds.yaml or secure.yaml every user of the
    // host may read (config.rs), which its report has no line for.
    let default_filter = match args.command {
        Some(Command::CheckCloud) => "error,warmpool_server::config=warn",
        Some(Command::Store(_)) => "error",
        None => "info,sled=warn,h2=warn,tower=warn",
    };
    // Colour only for a person at a terminal: journald, `kubectl logs` and
    // log files would keep the escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    let start_flags = [
        ("--delete-unknown-servers", args.delete_unknown_servers),
        ("--adopt-cloud", args.adopt_cloud),
    ];
    if let (Some(command), Some((flag, _))) = (
        args.command.as_ref(),
        start_flags.iter().find(|(_, given)| *given),
    ) {
        let name = match command {
            Command::CheckCloud => "check-cloud",
            Command::Store(_) => "store",
        };
        Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{flag} is for the daemon's start; {name} does not take it"),
            )
            .exit();
    }
    if let Some(Command::CheckCloud) = &args.command {
        // With the daemon's overrides: `--data-dir` names the store whose
        // pools are checked, as it names the one the daemon serves.
        let config = daemon_config(&args)?;
        std::process::exit(check_cloud(&config).await?);
    }
    if let Some(Command::Store(command)) = &args.command {
        let config = daemon_config(&args)?;
        std::process::exit(store_command(command, &config.data_dir)?);
    }
    let mut config = daemon_config(&args).map_err(|e| classified(e.into()))?;
    config.delete_unknown_servers = args.delete_unknown_servers;
    config.adopt_cloud = args.adopt_cloud;
    // The demo needs no file; a file that runs the embedded cloud is more
    // likely one copied where a real cloud was meant, and the log's info
    // line is easily missed.
    if let (Some(file), CloudConfig::Embedded { .. }) = (&args.config, &config.cloud) {
        tracing::warn!(
            config = %file.display(),
            "{}: [cloud] kind = \"embedded\" (also when the file has no [cloud] section): a \
             simulated cloud inside warmpoold, nothing is booted for real and purchases get \
             servers that do not exist; for a real cloud set kind = \"openstack\" (see \
             deploy/warmpoold.example.toml)",
            file.display()
        );
    }
    // The demo is meant for one machine; listening beyond loopback (as the
    // container image's default command does) lets anyone on the network
    // buy servers that do not exist, so it is said where it shows.
    if args.config.is_none()
        && matches!(config.cloud, CloudConfig::Embedded { .. })
        && !config.listen.ip().is_loopback()
    {
        tracing::warn!(
            listen = %config.listen,
            "the embedded demo cloud serves on {}, beyond this host: a simulated cloud inside \
             warmpoold, nothing is booted for real and purchases get servers that do not exist; \
             for a real cloud pass --config FILE with [cloud] kind = \"openstack\" (see \
             deploy/warmpoold.example.toml)",
            config.listen
        );
    }
    let (shutdown, stop_now) = shutdown_signals()?;
    // What a reload compares the file with, to name what it leaves for a
    // restart.
    #[cfg(unix)]
    let started = config.clone();
    let starting = warmpool_server::start_stoppable(config, shutdown, stop_now);
    #[cfg(unix)]
    let (started_up, held) = holding_hangups(starting, &mut hangups).await;
    #[cfg(not(unix))]
    let started_up = starting.await;
    let running = match started_up {
        Ok(running) => running,
        Err(e) if e.is::<warmpool_server::StoppedDuringStartUp>() => {
            tracing::info!("stopped during start-up, as asked");
            return Ok(());
        }
        Err(e) => return Err(classified(e)),
    };
    #[cfg(unix)]
    reload_on_sighup(
        hangups,
        held,
        Reloading {
            args: args.clone(),
            started,
            grpc_addr: running.grpc_addr,
            access: running.access.clone(),
            tls: running.tls.clone(),
            metrics: running.metrics.clone(),
        },
    );
    running.served.await.context("server task")??;
    Ok(())
}

/// Runs `start` (warmpoold's start-up); the SIGHUPs that come meanwhile
/// are said to be held (INFO), and whether any came is returned with its
/// outcome: a reload puts tokens and TLS files in force where start-up
/// has yet to put the first ones, so it waits for start-up to end, which
/// can take long (a slow cloud check, Keystone refusing the credentials).
#[cfg(unix)]
async fn holding_hangups<T>(
    start: impl std::future::Future<Output = T>,
    hangups: &mut tokio::signal::unix::Signal,
) -> (T, bool) {
    let mut start = std::pin::pin!(start);
    let mut held = false;
    loop {
        tokio::select! {
            done = &mut start => return (done, held),
            Some(()) = hangups.recv() => {
                held = true;
                tracing::info!(
                    "SIGHUP during start-up: warmpoold reads its config file again once start-up \
                     ends"
                );
            }
        }
    }
}

/// The config in `--config`'s file (or the embedded demo's defaults) with
/// the command line's overrides (`--listen`, `--metrics-listen`,
/// `--data-dir`), checked as a whole: what a daemon started with the same
/// file and flags runs with. The daemon's (at start and again on SIGHUP),
/// `check-cloud`'s and `store`'s one way to their config.
fn daemon_config(args: &Args) -> Result<Config, warmpool_server::config::ConfigError> {
    let overridden =
        |config: Config| config.overridden(args.listen, args.metrics_listen, args.data_dir.clone());
    match &args.config {
        Some(path) => overridden(Config::read(path)?).map_err(|e| e.in_file(path)),
        None => overridden(Config::default()),
    }
}

/// What a reload reads the config file with and puts in force.
#[cfg(unix)]
struct Reloading {
    args: Args,
    /// The config warmpoold started with.
    started: Config,
    grpc_addr: SocketAddr,
    access: warmpool_server::access::AccessHandle,
    tls: Option<warmpool_server::tls::TlsHandle>,
    metrics: std::sync::Arc<warmpool_server::metrics::Metrics>,
}

/// On SIGHUP (and once at once when `held`, for one that came during
/// start-up), reads the config file again (with the command line's
/// overrides, as at start), takes its `[[api_tokens]]` and, when warmpoold
/// serves TLS, reads the `[tls]` files again ([`Reloading::reload`]). A
/// reload is all or nothing: one refused changes nothing, and the log and
/// `warmpool_config_last_reload_successful` say so. The task lives as long
/// as the process.
#[cfg(unix)]
fn reload_on_sighup(mut hangups: tokio::signal::unix::Signal, held: bool, reloading: Reloading) {
    tokio::spawn(async move {
        if held {
            reloading.on_sighup();
        }
        while hangups.recv().await.is_some() {
            reloading.on_sighup();
        }
    });
}

#[cfg(unix)]
impl Reloading {
    fn on_sighup(&self) {
        let Some(file) = &self.args.config else {
            tracing::warn!("SIGHUP: no config file to read again (started without --config)");
            return;
        };
        if let Err(e) = self.reload(file) {
            // Before the log line: whoever reads the line and then scrapes
            // sees the refusal.
            self.metrics.config_reload_refused();
            tracing::error!(
                error = format!("{e:#}"),
                "SIGHUP: reload refused; api_tokens and TLS unchanged"
            );
        }
    }

    /// Reads the config file again and checks every part a reload takes
    /// (a file that loads, of the cloud warmpoold runs on, tokens that do
    /// not open the API, TLS files that load and keep client certificates
    /// asked for) before putting any in force: a file half written when
    /// the signal came must not revoke tokens because its TLS part is
    /// refused, nor renew a certificate because its tokens are. The rest
    /// of the file waits for a restart (`[[pools]]` not even for that,
    /// when the store holds the pool); what of it differs from `started`
    /// is named in the log.
    fn reload(&self, file: &std::path::Path) -> anyhow::Result<()> {
        use warmpool_server::tls::TlsHandle;
        let config = daemon_config(&self.args)?;
        self.started
            .refuse_another_cloud_kind(&config)
            .map_err(|e| e.in_file(file))?;
        // The token and TLS refusals speak of "the file": named, as the
        // refusals above are, so the log says which file to mend.
        let in_file = || format!("config file {}", file.display());
        let tokens = self.access.prepare(config.access()).with_context(in_file)?;
        // systemd's LoadCredential= copies the key when the service
        // starts, and only then: read again, the copy would pair a renewed
        // certificate with the old key and the reload be refused, revoked
        // tokens included, until a restart. The [tls] files are left to
        // the restart, which reads them all, and the log says so.
        let credential_key = config
            .tls
            .as_ref()
            .map(|files| &files.key_file)
            .filter(|key| warmpool_server::a_systemd_credential(key));
        let certificate = match (self.tls.as_ref(), &config.tls) {
            (Some(_), None) => {
                anyhow::bail!(
                    "{}: the file has no [tls] section, and serving plaintext takes a restart",
                    in_file()
                )
            }
            (serving, Some(files)) if credential_key.is_some() => {
                // No file is read, but a file without client_ca_file (half
                // written?) is refused as when they are.
                if let Some(serving) = serving {
                    serving
                        .refuse_dropping_client_certificates(files)
                        .with_context(in_file)?;
                }
                None
            }
            (Some(serving), Some(files)) => Some((
                serving,
                serving.prepare(files).with_context(in_file)?,
                files,
            )),
            // Not served until a restart, but checked now: a reload that
            // took files the restart then fails on would not be all or
            // nothing.
            (None, Some(files)) => {
                TlsHandle::load(files).with_context(in_file)?;
                None
            }
            (None, None) => None,
        };
        let tokens = self.access.apply(tokens);
        let certificate = certificate.map(|(serving, prepared, files)| {
            let stale = prepared.stale_certificate().map(str::to_owned);
            serving.apply(prepared);
            (stale, files)
        });
        self.metrics.config_taken(std::time::SystemTime::now());
        tracing::info!(tokens, "SIGHUP: reloaded api_tokens");
        match certificate {
            // The certificate served expired (or the clock went back) and
            // is still the file's: refusing the reload for it would keep a
            // revoked token working until the certificate is renewed.
            Some((Some(stale), _)) => tracing::error!(
                error = %stale,
                "SIGHUP: reloaded api_tokens and the [tls] files, but the certificate is the one \
                 served, still outside its validity window: every client's TLS handshake fails \
                 until it is renewed"
            ),
            Some((None, files)) => {
                tracing::info!(cert_file = %files.cert_file.display(), "SIGHUP: reloaded the TLS certificate; new connections use it");
            }
            None => {}
        }
        match (credential_key, &self.tls) {
            (Some(key), Some(_)) => tracing::warn!(
                key_file = %key.display(),
                "SIGHUP: tls.key_file {} is systemd's copy of the key, made when warmpoold \
                 started (the unit's LoadCredential=), which a reload does not make again: the \
                 [tls] files are not read again, and warmpoold serves the certificate, key and \
                 client CA it started with; `systemctl restart warmpoold` puts renewed ones in \
                 force",
                key.display()
            ),
            (Some(key), None) => tracing::warn!(
                key_file = %key.display(),
                "SIGHUP: tls.key_file {} is a systemd credential (the unit's LoadCredential=), \
                 copied when the service starts: the [tls] files are read, and checked, by the \
                 restart that turns TLS on (`systemctl restart warmpoold`)",
                key.display()
            ),
            (None, _) => {}
        }
        warmpool_server::warn_of_tokens_in_plaintext(tokens, self.tls.is_some(), self.grpc_addr);
        let waiting = self.started.changed_needing_restart(&config);
        if !waiting.is_empty() {
            let waiting = waiting.join(", ");
            tracing::warn!(
                changed = %waiting,
                "SIGHUP: the file changes {waiting}, which take a restart: warmpoold runs on with \
                 the values it started with"
            );
        }
        if let Some(pools) = self.started.pools_reload_notice(&config) {
            tracing::warn!("SIGHUP: {pools}");
        }
        Ok(())
    }
}

/// Writes `text` to stdout. A reader that has gone (`| head -1`) took what
/// it wanted: no error, so the command ends as its work says, exit code
/// and all (print! would panic). Other failures (a full disk under
/// `> file`) are errors.
fn print_out(text: std::fmt::Arguments) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written,
    }
}

/// `println!` through [`print_out`], in a function returning an
/// `anyhow::Result`.
macro_rules! outln {
    ($($arg:tt)*) => {
        print_out(format_args!("{}\n", format_args!($($arg)*)))
            .context("cannot print to stdout")?
    };
}

/// Prints the report; the exit code is 0 when every check passed, whether
/// or not the report's reader stayed for all of it (`set -o pipefail`
/// scripts read the code).
async fn check_cloud(config: &Config) -> anyhow::Result<i32> {
    use warmpool_server::check_cloud::{check, check_embedded};
    let report = match &config.cloud {
        CloudConfig::OpenStack(os) => check(config, os).await.0,
        CloudConfig::Embedded {
            time_scale,
            iops_throttled,
            seed,
        } => {
            outln!("cloud: embedded simulated cloud");
            let cloud = warmpool_server::embedded_cloud(*time_scale, *iops_throttled, *seed);
            check_embedded(config, cloud.as_ref()).await
        }
    };
    print_out(format_args!("{report}")).context("cannot print to stdout")?;
    Ok(if report.passed() { 0 } else { 1 })
}

/// The record kinds `store set-aside` takes, named as `store check` shows
/// them (the store's tree names).
fn record_kind_parser() -> impl clap::builder::TypedValueParser<Value = RecordKind> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(RecordKind::ALL.map(RecordKind::tree))
        .try_map(|name| RecordKind::from_tree(&name).ok_or("unknown record kind"))
}

/// Runs a `store` subcommand; the exit code.
fn store_command(command: &StoreCommand, data_dir: &std::path::Path) -> anyhow::Result<i32> {
    use pool_manager::store::{SetAside, StoreError, StoreRepair};
    let repair = match StoreRepair::open(data_dir, std::time::Duration::from_secs(1)) {
        Ok(repair) => repair,
        // These name the data dir themselves.
        Err(
            e @ (StoreError::NoStore { .. }
            | StoreError::Inaccessible { .. }
            | StoreError::Locked { .. }),
        ) => return Err(e.into()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open the store in {}", data_dir.display()))
        }
    };
    match command {
        StoreCommand::Check => {
            // A pool's learned sizing this version cannot read does not stop
            // the daemon, which keeps it unsaved over for the version that
            // wrote it. Set aside, it would not come back: this version
            // would save fresh sizing under its key, which supersedes the
            // copy set aside for good.
            let (kept, unreadable): (Vec<_>, Vec<_>) = repair
                .unreadable()?
                .into_iter()
                .partition(|record| record.kind == RecordKind::LearnedSizing);
            for record in &unreadable {
                outln!(
                    "unreadable {} {}: {}",
                    record.kind.tree(),
                    record.key,
                    record.error
                );
            }
            for record in &kept {
                outln!(
                    "note: {} {} cannot be read ({}): the daemon starts with it, sizing the pool \
                     from scratch, and keeps it for the version that wrote it; do not set it aside",
                    record.kind.tree(),
                    record.key,
                    record.error
                );
            }
            // Nor does a pool's boot health: the pool starts healthy. The
            // tree is no record kind, so `store set-aside` does not take it.
            let health = repair.unreadable_pool_health()?;
            for record in &health {
                outln!(
                    "note: pool_health {} cannot be read ({}): the daemon starts with it, the \
                     pool starts healthy (its failed boots in a row counted anew), and its next \
                     change of health writes over it; nothing to do",
                    record.key,
                    record.error
                );
            }
            for record in repair.set_aside_records()? {
                if record.superseded {
                    outln!(
                        "set aside {} {}: superseded by the record written under its key since \
                         (a pool created again, sizing saved anew); it will not come back",
                        record.kind.tree(),
                        record.key
                    );
                } else {
                    outln!("set aside {} {}", record.kind.tree(), record.key);
                }
            }
            // A line of the report like the other records', not an end
            // to it: the daemon does not start on it either, and the
            // summary still counts what else cannot be read.
            let cloud_unreadable = match repair.cloud_identity() {
                Ok(Some(cloud)) => {
                    outln!("cloud: {cloud}");
                    false
                }
                Ok(None) => {
                    outln!("cloud: none recorded yet (warmpoold records it when it starts)");
                    false
                }
                Err(StoreError::UnreadableCloud { error }) => {
                    outln!(
                        "cloud: cannot be read ({error}): a newer warmpoold may have written it, \
                         and this one does not start on the store: run that version; `store \
                         set-aside` does not take it (which cloud the store serves cannot be \
                         done without)"
                    );
                    true
                }
                Err(e) => return Err(e.into()),
            };
            let stopping = unreadable.len() + usize::from(cloud_unreadable);
            if stopping == 0 && kept.is_empty() && health.is_empty() {
                outln!("every record in {} can be read", data_dir.display());
                Ok(0)
            } else if stopping == 0 {
                outln!(
                    "every record warmpoold needs in {} can be read",
                    data_dir.display()
                );
                Ok(0)
            } else {
                let remedy = match (unreadable.is_empty(), cloud_unreadable) {
                    (false, false) => {
                        "run the warmpoold version that wrote them, or `warmpoold store \
                         set-aside KIND KEY` for each"
                    }
                    (false, true) => {
                        "run the warmpoold version that wrote them, or `warmpoold store \
                         set-aside KIND KEY` for each but the cloud's, which only that version \
                         mends"
                    }
                    (true, _) => "run the warmpoold version that wrote the cloud's",
                };
                outln!("{stopping} record(s) cannot be read: {remedy}");
                Ok(1)
            }
        }
        StoreCommand::SetAside { kind, key } => {
            let kind = *kind;
            match repair.set_aside(kind, key)? {
                SetAside::Moved => {
                    outln!("set aside {} {key}", kind.tree());
                    Ok(0)
                }
                SetAside::AlreadySetAside => {
                    outln!("{} {key} is already set aside", kind.tree());
                    Ok(0)
                }
                SetAside::NoSuchRecord => {
                    eprintln!("no {} record {key} in {}", kind.tree(), data_dir.display());
                    Ok(1)
                }
                SetAside::Ambiguous => {
                    eprintln!(
                        "more than one {} record shows as {key}; none was set aside",
                        kind.tree()
                    );
                    Ok(1)
                }
                SetAside::Readable => {
                    eprintln!(
                        "{} {key} can be read; only unreadable records are set aside",
                        kind.tree()
                    );
                    Ok(1)
                }
            }
        }
    }
}

/// The first SIGINT or SIGTERM (a graceful stop) and the second (stop
/// now, without waiting out the grace period). The handlers are installed
/// here, before start-up, so that a signal during the cloud check or the
/// start-up reconcile stops warmpoold in order instead of killing it.
fn shutdown_signals() -> anyhow::Result<(
    impl std::future::Future<Output = ()>,
    impl std::future::Future<Output = ()>,
)> {
    let (count_tx, count) = tokio::sync::watch::channel(0u32);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut interrupt =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
                count_tx.send_modify(|n| *n += 1);
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            count_tx.send_modify(|n| *n += 1);
        }
    });
    let signalled = |times: u32| {
        let mut count = count.clone();
        async move {
            let _ = count.wait_for(|n| *n >= times).await;
        }
    };
    Ok((signalled(1), signalled(2)))
}
