//! Command-line surface of `warmpoolctl`, and the pure conversions from
//! parsed flags to request messages (kept here so they can be unit-tested
//! without a server).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use warmpool_client::api;

/// Operate warmpool: pools of pre-booted MySQL VMs.
#[derive(Debug, Parser)]
#[command(
    name = "warmpoolctl",
    version,
    after_help = "Options shown with [env: NAME] can be set in the environment instead. \
                  A variable set to the empty string counts as unset."
)]
pub struct Cli {
    /// The warmpool daemon, "host:port", "http://host:port" or, for one
    /// serving TLS, "https://host:port".
    #[arg(
        long,
        global = true,
        env = "WARMPOOL_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,

    /// How to print results.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// A file holding the bearer token to present, for a daemon with
    /// `[[api_tokens]]` (kept out of the process list and shell history).
    /// A flag beats the environment: --token-file wins over WARMPOOL_TOKEN,
    /// --token over WARMPOOL_TOKEN_FILE; with both variables set, the file.
    #[arg(long, global = true, env = "WARMPOOL_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// The bearer token itself; prefer --token-file.
    #[arg(long, global = true, env = "WARMPOOL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// PEM CA certificates an https:// daemon's certificate must chain to
    /// (default: the system's trusted roots).
    #[arg(long, global = true, env = "WARMPOOL_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// PEM client certificate, for a daemon that requires one (with --key-file).
    #[arg(long, global = true, env = "WARMPOOL_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<std::path::PathBuf>,

    /// PEM private key of --cert-file.
    #[arg(long, global = true, env = "WARMPOOL_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The command line as [`Cli`] defines it, but with a variable exported
/// empty (`WARMPOOL_TOKEN_FILE=`) taken as unset: clap would take its empty
/// value and refuse it as the flag's ("a value is required for
/// '--token-file'"), a flag the user never typed.
pub fn command() -> clap::Command {
    Cli::command().mut_args(|arg| {
        let empty = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|value| value.is_empty());
        if empty {
            arg.env(None)
        } else {
            arg
        }
    })
}

/// Parses `args` (the program's name first) as [`command`] defines them,
/// with a tip when `--request-id` went without its value, or with one
/// starting with '-' as a word of its own: clap's error then names only
/// an unknown flag ("-o" of "-ord"), not the flag it follows, and its tip
/// elsewhere ("use '-- -ord'") would make the id a positional argument,
/// which allocate has none of.
pub fn try_matches_from<I, T>(args: I) -> Result<clap::ArgMatches, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    command()
        .try_get_matches_from(&args)
        .map_err(|err| with_request_id_tip(err, &args))
}

fn with_request_id_tip(mut err: clap::Error, args: &[std::ffi::OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let named = |kind| match err.get(kind) {
        Some(ContextValue::String(arg)) => Some(arg.clone()),
        _ => None,
    };
    // The word right after a bare `--request-id`: where its value goes.
    let after_flag = args
        .windows(2)
        .find(|pair| pair[0] == "--request-id")
        .and_then(|pair| pair[1].to_str());
    let tip = match (err.kind(), named(ContextKind::InvalidArg), after_flag) {
        // Followed by a flag of allocate's, or nothing.
        (ErrorKind::InvalidValue, Some(arg), _) if arg.starts_with("--request-id ") => {
            "an id starting with '-' is given joined to the flag: --request-id=-ord".to_owned()
        }
        // Followed by words no flag of allocate's begins: taken for flags.
        (ErrorKind::UnknownArgument, Some(arg), Some(word))
            if word.starts_with('-') && word.starts_with(arg.as_str()) =>
        {
            format!("to give '{word}' as the request id, join it to the flag: --request-id={word}")
        }
        _ => return err,
    };
    err.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![tip.into()]),
    );
    err
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage pools ("pools" alone lists them).
    Pools {
        #[command(subcommand)]
        command: Option<PoolsCommand>,
    },
    /// List instances, of one pool or of all.
    Instances(InstancesArgs),
    /// Allocate a warm instance for a tenant.
    ///
    /// The same --request-id again answers the same allocation. One already
    /// released (or being released), or in any state but ALLOCATED, is
    /// printed with a warning on stderr and exit status 1: it has no server
    /// to use; a new purchase needs a new --request-id.
    Allocate(AllocateArgs),
    /// Show an allocation.
    Get {
        /// The request id the allocation was made with.
        request_id: String,
    },
    /// Release an allocation: delete its server and port.
    Release(ReleaseArgs),
    /// Live view of every pool (depth, target, hit rate, lead time,
    /// throttling) and of pool events as they happen.
    ///
    /// TARGET "auto:N": the depth auto sizing computed from demand and boot
    /// lead time (a plain N is fixed, or min-ready). LEAD P90 "~": a prior
    /// estimate: no boot measured yet (or too few to outweigh it), or none
    /// within the daemon's lead_max_age (1h by default).
    Watch,
    /// Print a shell completion script, e.g.
    /// `warmpoolctl completions bash > /etc/bash_completion.d/warmpoolctl`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolsCommand {
    /// List pools.
    ///
    /// TARGET "auto:N": the depth auto sizing computed from demand and boot
    /// lead time (a plain N is fixed, or min-ready). MIN "win:N": an open
    /// operator window raises min-ready to N. LEAD P90 "~": a prior
    /// estimate: no boot measured yet (or too few to outweigh it), or none
    /// within the daemon's lead_max_age (1h by default).
    List,
    /// Show one pool.
    Get(PoolKey),
    /// Create a pool.
    Create(PoolCreateArgs),
    /// Change some settings of a pool.
    Update(PoolUpdateArgs),
    /// Drain a pool: stop replenishing it and delete its unallocated instances.
    Delete(PoolKey),
}

/// A pool is named by its flavor and availability zone.
#[derive(Debug, Args)]
pub struct PoolKey {
    /// Nova flavor of the pool's servers, e.g. m1.large.
    pub flavor: String,
    /// Availability zone of the pool.
    pub az: String,
}

#[derive(Debug, Args)]
// "-1" is a value to refuse by its range, not an unknown flag.
#[command(allow_negative_numbers = true)]
pub struct PoolCreateArgs {
    #[command(flatten)]
    pub key: PoolKey,
    /// Fewest unclaimed instances to keep, Ready or on their way.
    #[arg(long)]
    pub min_ready: u32,
    /// Most unclaimed instances to keep, Ready or on their way.
    #[arg(long)]
    pub max_ready: u32,
    /// Target depth: "auto" (sized from demand and boot lead time) or a
    /// fixed number; 0 means min-ready.
    #[arg(long, value_name = "auto|N", value_parser = parse_target, default_value = "0")]
    pub target: TargetArg,
    /// Image the pool's servers boot from (warmpoold's `cloud.image`, when
    /// set, boots every pool instead, and this one once it is unset: the
    /// cloud must have it all the same).
    #[arg(long)]
    pub image: String,
    /// Give up on a server that is not Ready after this long (at most 1 day;
    /// the server's default: 15m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub boot_timeout: Option<Duration>,
    /// Recycle Ready instances older than this ("never" or 0, the default,
    /// keeps them).
    #[arg(long, value_name = "DURATION|never", value_parser = parse_max_age)]
    pub max_age: Option<Duration>,
    /// Create the pool paused: it boots nothing, neither refills nor
    /// purchases' cold boots.
    #[arg(long)]
    pub paused: bool,
    /// An operator window that raises min-ready while open, e.g.
    /// "Mon-Fri 09:00-18:00 min 10" (UTC; append a fixed offset such as
    /// "UTC+01:00" for another zone). Repeat for several.
    ///
    /// An offset does not follow daylight saving (Berlin is UTC+01:00 in
    /// winter, UTC+02:00 in summer): change the window when the clocks do.
    /// The floor rises at the window's start, and its boots start then: to
    /// be full at a time, open it a fill time early. An AZ's pools share its
    /// boot window, so several windows opening at once fill more slowly.
    #[arg(long = "window", value_name = "WINDOW")]
    pub windows: Vec<String>,
    /// Disk IOPS limit of the flavor: a slower lead-time prior before the
    /// first boot is observed.
    // parse_limit as on update: 0 is refused here, naming the flag, rather
    // than sent for the server to refuse.
    #[arg(long, value_name = "IOPS", value_parser = parse_limit)]
    pub iops_limit: Option<Limit>,
    /// IOPS limit of the volume type purchases attach.
    #[arg(long, value_name = "IOPS", value_parser = parse_limit)]
    pub volume_iops_limit: Option<Limit>,
}

#[derive(Debug, Args)]
// "-1" is a value to refuse by its range, not an unknown flag.
#[command(allow_negative_numbers = true)]
pub struct PoolUpdateArgs {
    #[command(flatten)]
    pub key: PoolKey,
    /// Fewest unclaimed instances to keep, Ready or on their way.
    #[arg(long)]
    pub min_ready: Option<u32>,
    /// Most unclaimed instances to keep, Ready or on their way.
    #[arg(long)]
    pub max_ready: Option<u32>,
    /// Target depth: "auto" (sized from demand and boot lead time) or a
    /// fixed number; 0 means min-ready.
    #[arg(long, value_name = "auto|N", value_parser = parse_target)]
    pub target: Option<TargetArg>,
    /// Image for servers booted from now on; Ready instances of the old one
    /// are replaced, each retired once a new one is Ready (warmpoold's
    /// `cloud.image`, when set, boots every pool instead and nothing is
    /// replaced; the cloud must have the image all the same).
    #[arg(long)]
    pub image: Option<String>,
    /// Give up on a server that is not Ready after this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub boot_timeout: Option<Duration>,
    /// Recycle Ready instances older than this; "never" (or 0) stops
    /// recycling.
    #[arg(long, value_name = "DURATION|never", value_parser = parse_max_age)]
    pub max_age: Option<Duration>,
    /// Stop (true) or resume (false) booting: refills and purchases'
    /// cold boots (boots already started go on).
    #[arg(long)]
    pub paused: Option<bool>,
    /// Replace the pool's operator windows with these (repeat for several),
    /// e.g. "Mon-Fri 09:00-18:00 min 10" (UTC; append a fixed offset such as
    /// "UTC+01:00" for another zone).
    ///
    /// An offset does not follow daylight saving (Berlin is UTC+01:00 in
    /// winter, UTC+02:00 in summer): change the window when the clocks do.
    /// The floor rises at the window's start, and its boots start then: to
    /// be full at a time, open it a fill time early. An AZ's pools share its
    /// boot window, so several windows opening at once fill more slowly.
    #[arg(long = "window", value_name = "WINDOW", conflicts_with = "no_windows")]
    pub windows: Vec<String>,
    /// Remove every operator window.
    #[arg(long)]
    pub no_windows: bool,
    /// Disk IOPS limit of the flavor, or "none".
    #[arg(long, value_name = "IOPS|none", value_parser = parse_limit)]
    pub iops_limit: Option<Limit>,
    /// IOPS limit of the volume type, or "none".
    #[arg(long, value_name = "IOPS|none", value_parser = parse_limit)]
    pub volume_iops_limit: Option<Limit>,
}

/// An IOPS limit on the command line: a number, or "none" to remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub Option<u32>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    match s.parse::<u32>() {
        Ok(0) | Err(_) => Err(format!(
            "{s:?} is not an IOPS limit: give a positive number or \"none\""
        )),
        Ok(n) => Ok(Limit(Some(n))),
    }
}

#[derive(Debug, Args)]
pub struct InstancesArgs {
    /// Only this flavor's pool (needs --az). A deleted pool's instances
    /// still allocated are listed too; a pool neither known nor named by
    /// any instance is an error (NOT_FOUND).
    #[arg(long, requires = "az")]
    pub flavor: Option<String>,
    /// Only this availability zone's pool (needs --flavor).
    #[arg(long, requires = "flavor")]
    pub az: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnEmpty {
    /// Wait for the next Ready instance until the timeout.
    Wait,
    /// Fail at once with RESOURCE_EXHAUSTED.
    FailFast,
    /// Boot a dedicated server (takes minutes).
    ColdBoot,
}

impl From<OnEmpty> for api::EmptyPoolPolicy {
    fn from(value: OnEmpty) -> Self {
        match value {
            OnEmpty::Wait => api::EmptyPoolPolicy::Wait,
            OnEmpty::FailFast => api::EmptyPoolPolicy::FailFast,
            OnEmpty::ColdBoot => api::EmptyPoolPolicy::ColdBoot,
        }
    }
}

#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    group(clap::ArgGroup::new("volume").required(true).args(["volume_id", "volume_size"]))
)]
pub struct AllocateArgs {
    /// Idempotency key, e.g. the billing order id. One starting with '-' is
    /// given joined to the flag: --request-id=-ord.
    // Not allow_hyphen_values: a forgotten id (an empty `$ORDER`, unquoted)
    // would take the next flag as the id, `--delete-volume-on-release` a
    // literal id and its volume kept. `try_matches_from` says how to give
    // one starting with '-'.
    #[arg(long)]
    pub request_id: String,
    /// Tenant the order is for: labels it and tags its new volume.
    #[arg(long = "tenant")]
    pub tenant: String,
    /// Flavor of the pool to take the instance from.
    #[arg(long)]
    pub flavor: String,
    /// Availability zone of the pool to take the instance from.
    #[arg(long)]
    pub az: String,
    /// Attach this existing Cinder volume (or --volume-size: a new one).
    #[arg(long)]
    pub volume_id: Option<String>,
    /// Create a new volume of this many GiB.
    #[arg(long, value_name = "GIB")]
    pub volume_size: Option<u32>,
    /// Volume type of the new volume (default: the cloud's).
    #[arg(long, requires = "volume_size")]
    pub volume_type: Option<String>,
    /// Delete the volume when the allocation is released.
    #[arg(long)]
    pub delete_volume_on_release: bool,
    /// Tenant network to attach: its Neutron id, of --tenant's project or
    /// shared with it (the embedded demo cloud has one, `tenant-net`,
    /// shared with every project).
    #[arg(long)]
    pub network: String,
    /// Subnet of --network for the port.
    #[arg(long)]
    pub subnet: Option<String>,
    /// Fixed IP on --subnet.
    #[arg(long, requires = "subnet")]
    pub fixed_ip: Option<String>,
    /// Label the allocation, key=value; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// What to do when the pool has no Ready instance (server default: wait).
    #[arg(long, value_enum)]
    pub on_empty: Option<OnEmpty>,
    /// Bounds the purchase up to the claim of an instance, at most 1h (server
    /// default: 60s, 30m for cold-boot). A claimed instance's attach is given
    /// at least 5 min from the claim, and a failed try's undoing (detach,
    /// port and server deletes) at least 2 min each, so the answer may come
    /// several minutes past the timeout.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    pub request_id: String,
    /// Delete the volume too, whatever the allocation said.
    #[arg(long, conflicts_with = "keep_volume")]
    pub delete_volume: bool,
    /// Keep the volume, whatever the allocation said.
    #[arg(long)]
    pub keep_volume: bool,
}

impl ReleaseArgs {
    /// None leaves the choice made at allocation time in force.
    pub fn delete_volume(&self) -> Option<bool> {
        match (self.delete_volume, self.keep_volume) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

/// `--target`: how deep a pool is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetArg {
    Auto,
    Fixed(u32),
}

impl TargetArg {
    /// Sets the spec's target fields (the mode and the number).
    pub fn apply(self, spec: &mut api::PoolSpec) {
        let (mode, target) = match self {
            TargetArg::Auto => (api::TargetMode::Auto, 0),
            TargetArg::Fixed(n) => (api::TargetMode::Fixed, n),
        };
        spec.target_mode = mode.into();
        spec.target = target;
    }
}

/// Parses `--target`: "auto", a number, or "fixed N".
pub fn parse_target(s: &str) -> Result<TargetArg, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "auto" {
        return Ok(TargetArg::Auto);
    }
    let number = t.strip_prefix("fixed").map_or(t.as_str(), str::trim);
    number
        .parse()
        .map(TargetArg::Fixed)
        .map_err(|_| format!("invalid target {s:?}: use auto or a number of instances, e.g. 5"))
}

/// Parses a humantime duration ("90s", "10m", "1h 30m").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. 90s, 10m, 1h 30m"))
}

/// A `--max-age`: a duration, or "never" (sent as 0, which the server reads
/// as no maximum age).
pub fn parse_max_age(s: &str) -> Result<Duration, String> {
    if s.trim().eq_ignore_ascii_case("never") {
        return Ok(Duration::ZERO);
    }
    parse_duration(s).map_err(|e| format!("{e}, or never"))
}

/// Parses one `--label key=value`. The value may contain '=', the key may not
/// be empty.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("invalid label {s:?}: expected key=value")),
    }
}

/// Collects labels, refusing a key given twice: silently keeping one of two
/// values would hide a typo in a billing-facing label.
pub fn labels_to_map(labels: &[(String, String)]) -> anyhow::Result<HashMap<String, String>> {
    let mut map = HashMap::with_capacity(labels.len());
    for (key, value) in labels {
        if map.insert(key.clone(), value.clone()).is_some() {
            bail!("label {key:?} given more than once");
        }
    }
    Ok(map)
}

/// std → protobuf duration. Only fails past ~292 billion years.
pub fn to_proto_duration(d: Duration) -> anyhow::Result<prost_types::Duration> {
    prost_types::Duration::try_from(d).with_context(|| format!("duration {d:?} is too long"))
}

impl AllocateArgs {
    pub fn to_request(&self) -> anyhow::Result<api::AllocateRequest> {
        use api::volume_spec::Source;
        // clap guarantees exactly one of the two; the fallback is unreachable
        // through the CLI but keeps this function total.
        let source = match (&self.volume_id, self.volume_size) {
            (Some(id), _) => Source::ExistingVolumeId(id.clone()),
            (None, Some(size_gib)) => Source::NewVolume(api::NewVolume {
                size_gib,
                volume_type: self.volume_type.clone().unwrap_or_default(),
            }),
            (None, None) => bail!("give --volume-id or --volume-size"),
        };
        Ok(api::AllocateRequest {
            request_id: self.request_id.clone(),
            tenant_project_id: self.tenant.clone(),
            flavor: self.flavor.clone(),
            availability_zone: self.az.clone(),
            volume: Some(api::VolumeSpec {
                source: Some(source),
                delete_on_release: self.delete_volume_on_release,
            }),
            network: Some(api::NetworkSpec {
                network_id: self.network.clone(),
                subnet_id: self.subnet.clone().unwrap_or_default(),
                fixed_ip: self.fixed_ip.clone().unwrap_or_default(),
            }),
            labels: labels_to_map(&self.labels)?,
            // Unset means UNSPECIFIED, which the server treats as WAIT.
            empty_pool_policy: self
                .on_empty
                .map_or(api::EmptyPoolPolicy::Unspecified, Into::into)
                .into(),
            timeout: self.timeout.map(to_proto_duration).transpose()?,
        })
    }
}

impl PoolCreateArgs {
    pub fn to_spec(&self) -> anyhow::Result<api::PoolSpec> {
        let mut spec = api::PoolSpec {
            min_ready: self.min_ready,
            max_ready: self.max_ready,
            image: self.image.clone(),
            boot_timeout: self.boot_timeout.map(to_proto_duration).transpose()?,
            max_age: self.max_age.map(to_proto_duration).transpose()?,
            paused: self.paused,
            windows: self.windows.clone(),
            // "none" on create is no limit, as leaving the flag out.
            iops_limit: self.iops_limit.and_then(|Limit(v)| v),
            volume_iops_limit: self.volume_iops_limit.and_then(|Limit(v)| v),
            // Fields added to the API later keep their defaults.
            ..Default::default()
        };
        self.target.apply(&mut spec);
        Ok(spec)
    }
}

impl PoolUpdateArgs {
    /// The spec to send and its update mask: exactly the fields whose flags
    /// were given, so that e.g. `--paused false` really sends `paused` and an
    /// omitted flag never resets a field to its zero value.
    pub fn to_update(&self) -> anyhow::Result<(api::PoolSpec, Vec<String>)> {
        let mut spec = api::PoolSpec::default();
        let mut mask = Vec::new();
        if let Some(v) = self.min_ready {
            spec.min_ready = v;
            mask.push("min_ready");
        }
        if let Some(v) = self.max_ready {
            spec.max_ready = v;
            mask.push("max_ready");
        }
        if let Some(v) = self.target {
            v.apply(&mut spec);
            mask.push("target");
        }
        if let Some(v) = &self.image {
            spec.image = v.clone();
            mask.push("image");
        }
        if let Some(v) = self.boot_timeout {
            spec.boot_timeout = Some(to_proto_duration(v)?);
            mask.push("boot_timeout");
        }
        if let Some(v) = self.max_age {
            spec.max_age = Some(to_proto_duration(v)?);
            mask.push("max_age");
        }
        if let Some(v) = self.paused {
            spec.paused = v;
            mask.push("paused");
        }
        if !self.windows.is_empty() || self.no_windows {
            spec.windows = self.windows.clone();
            mask.push("windows");
        }
        if let Some(Limit(v)) = self.iops_limit {
            spec.iops_limit = v;
            mask.push("iops_limit");
        }
        if let Some(Limit(v)) = self.volume_iops_limit {
            spec.volume_iops_limit = v;
            mask.push("volume_iops_limit");
        }
        if mask.is_empty() {
            bail!(
                "nothing to update: give at least one of --min-ready, --max-ready, --target, \
                 --image, --boot-timeout, --max-age, --paused, --window, --no-windows, \
                 --iops-limit, --volume-iops-limit"
            );
        }
        Ok((spec, mask.into_iter().map(String::from).collect()))
    }
}

/// A second line for an error whose own text does not say what to change:
/// an Allocate field the server names by its API name (the flag that sets
/// it), a connection refused (no daemon there), one that failed the way a
/// TLS mismatch fails (an HTTP/2
/// frame "of invalid size", a TLS alert), or, once the daemon had answered
/// the connection's handshake (`handshake_answered`), one cut off mid-call.
/// `allocating` is the request id of an Allocate.
pub fn hint(
    error: &str,
    endpoint: &str,
    has_certificate: bool,
    allocating: Option<&str>,
    handshake_answered: bool,
) -> Option<String> {
    if let Some(field) = error
        .strip_prefix("INVALID_ARGUMENT: invalid ")
        .and_then(|rest| rest.split(':').next())
        .filter(|_| allocating.is_some())
    {
        let flag = match field {
            "request_id" => "--request-id",
            "tenant_project_id" => "--tenant",
            "availability_zone" => "--az",
            "timeout" => "--timeout",
            "volume.existing_volume_id" => "--volume-id",
            "volume.new_volume.size_gib" => "--volume-size",
            "volume.new_volume.volume_type" => "--volume-type",
            "network.network_id" => "--network",
            "network.subnet_id" => "--subnet",
            "network.fixed_ip" => "--fixed-ip",
            "labels" => "--label",
            _ => return None,
        };
        return Some(format!("{field} is what {flag} sets"));
    }
    // tonic's words for an HTTP answer without a gRPC status: another
    // service serves HTTP/2 there.
    if error.contains("grpc-status header missing") {
        return Some(format!(
            "{} answers HTTP but not warmpool's gRPC API: dial warmpoold's `listen` address (default 127.0.0.1:50051), not its `metrics_listen` (default port 9464)",
            endpoint.trim()
        ));
    }
    // The OS's words when nothing listens at the address: the daemon is
    // not running, or listens elsewhere.
    if !handshake_answered && error.to_ascii_lowercase().contains("connection refused") {
        return Some(format!(
            "nothing accepts connections at {}: is warmpoold running there? Point warmpoolctl \
             at its `listen` address with --endpoint or WARMPOOL_ENDPOINT (default \
             http://127.0.0.1:50051)",
            endpoint.trim()
        ));
    }
    if handshake_answered {
        // The connection was set up, TLS and all: no setting of it is to
        // blame. The call may have been carried out before the cut.
        if !cut_off(error) {
            return None;
        }
        let broke =
            "the connection broke mid-call (the daemon stopped, or something between cut it off)";
        return Some(match allocating {
            Some(id) => format!(
                "{broke}: the allocation may have been made. Ask again with the same \
                 --request-id {id}, which answers the same allocation, or look it up with \
                 `warmpoolctl get {id}`"
            ),
            None => format!(
                "{broke}: run the command again once the daemon answers (the call may have \
                 taken effect)"
            ),
        });
    }
    tls_hint(error, endpoint, has_certificate)
}

/// Whether `error` reads as a connection the other end closed or reset.
/// The OS writes "Broken pipe" and "Connection reset by peer", h2 "a broken
/// pipe", tonic's transport "connection reset".
fn cut_off(error: &str) -> bool {
    let lowercase = error.to_ascii_lowercase();
    ["broken pipe", "connection closed", "connection reset"]
        .iter()
        .any(|sign| lowercase.contains(sign))
}

fn tls_hint(error: &str, endpoint: &str, has_certificate: bool) -> Option<String> {
    let endpoint = endpoint.trim();
    let https = endpoint.to_ascii_lowercase().starts_with("https://");
    // The alert when it arrives before the client's first write; a broken
    // pipe, a reset or a closed connection when the client was writing or
    // reading as the daemon closed: which one is a race.
    let cut_off = || cut_off(error);
    let hint = if !https && (error.contains("frame with invalid size") || cut_off()) {
        // A TLS daemon answers HTTP/2 with a TLS alert, read as a frame
        // header; warmpoold's metrics port, HTTP/1.1 only, closes the
        // connection.
        "if the daemon serves TLS, dial https://HOST:PORT (with --ca-file for its CA); if this is warmpoold's `metrics_listen` (default port 9464), dial its `listen` address (default 127.0.0.1:50051)".to_owned()
    } else if https && error.contains("no native certs found") {
        // Without --ca-file the client trusts the system's CAs, and
        // rustls-native-certs found none (no ca-certificates installed,
        // as in a minimal container image).
        "this host has no system CA certificates to check the daemon's certificate with: give the CA that signed it with --ca-file CA.pem (or point SSL_CERT_FILE at a CA bundle)".to_owned()
    } else if https && error.contains("deadline has elapsed") {
        // The connect timeout, which bounds TCP and TLS together, ran out;
        // TCP's own timer reads the same, so either may have waited.
        "nothing answered in time: either the TCP connect (a firewall dropping it, a host that is down) or the TLS handshake did not answer (warmpoold stopped or hung, a load balancer without a live backend); check the host and port, and that warmpoold is running there".to_owned()
    } else if https && error.contains("InvalidContentType") {
        // A plaintext daemon answers the ClientHello with an HTTP/2 frame,
        // which rustls reads as a record of no type it knows.
        let host_port = &endpoint["https://".len()..];
        format!(
            "the daemon does not answer in TLS: if it serves plaintext, dial http://{host_port}"
        )
    } else if https && !has_certificate && (error.contains("CertificateRequired") || cut_off()) {
        "if the daemon requires client certificates, give --cert-file and --key-file".to_owned()
    } else if https && error.contains("UnknownIssuer") {
        "the daemon's certificate does not chain to a CA this client trusts: --ca-file CA.pem"
            .to_owned()
    } else {
        return None;
    };
    Some(hint)
}

/// Where the bearer token comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenSource {
    None,
    File(std::path::PathBuf),
    Literal(String),
}

/// Picks the token between `--token-file` and `--token`. A flag given on
/// the command line beats one from the environment, so one command can use
/// another token than the shell exports; both flags on the command line are
/// a usage error; both from the environment, the file (the safer of the two).
pub fn token_source(cli: &Cli, matches: &clap::ArgMatches) -> Result<TokenSource, clap::Error> {
    use clap::parser::ValueSource;
    let typed = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let (file, literal) = (cli.token_file.clone(), cli.token.clone());
    Ok(match (file, literal) {
        (Some(_), Some(_)) if typed("token_file") && typed("token") => {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--token-file and --token both give the token; use one",
            ))
        }
        (Some(_), Some(literal)) if typed("token") => TokenSource::Literal(literal),
        (Some(path), _) => TokenSource::File(path),
        (None, Some(literal)) => TokenSource::Literal(literal),
        (None, None) => TokenSource::None,
    })
}

/// The library's [`warmpool_client::check_token_transport`], before
/// connecting: a token bound for plaintext to a remote host is refused even
/// when the daemon is down.
pub fn check_token_transport(endpoint: &str, has_token: bool) -> anyhow::Result<()> {
    if has_token {
        warmpool_client::check_token_transport(endpoint)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    /// A daemon that cut the connection off hints at TLS, whether the OS
    /// ("Broken pipe (os error 32)") or h2 ("a broken pipe") words it.
    #[test]
    fn a_connection_cut_off_hints_at_tls_however_it_is_capitalised() {
        for cut in [
            "cannot connect to http://h:1: Broken pipe (os error 32)",
            "cannot connect to http://h:1: Connection reset by peer (os error 104)",
            "UNKNOWN: transport error: stream closed because of a broken pipe",
            "CANCELLED: operation was canceled: Connection closed",
            "UNKNOWN: transport error: connection reset",
        ] {
            let plaintext = tls_hint(cut, "h:1", false).unwrap_or_default();
            assert!(plaintext.contains("dial https://"), "{cut}: {plaintext}");
            let https = tls_hint(cut, "https://h:1", false).unwrap_or_default();
            assert!(https.contains("--cert-file"), "{cut}: {https}");
        }
    }

    /// A daemon not running (or another port) refuses the connection,
    /// which says nothing of what to check: the hint asks whether
    /// warmpoold runs there and names the flag and variable that point
    /// warmpoolctl elsewhere, with the default.
    #[test]
    fn a_connection_refused_asks_whether_warmpoold_runs_there() {
        for endpoint in ["http://127.0.0.1:50052", "https://127.0.0.1:50052"] {
            let error = format!("cannot connect to {endpoint}: Connection refused (os error 111)");
            let hinted = hint(&error, endpoint, false, None, false).unwrap_or_default();
            for part in [
                "is warmpoold running there?",
                "--endpoint",
                "WARMPOOL_ENDPOINT",
                "default http://127.0.0.1:50051",
            ] {
                assert!(hinted.contains(part), "{part:?} not in: {hinted}");
            }
        }
    }

    /// https:// without --ca-file on a host that has no CA bundle fails
    /// before dialling, in rustls-native-certs' words, which do not say
    /// what to give instead.
    #[test]
    fn no_native_certificates_hint_at_the_ca_file() {
        let error = "cannot connect to https://h:1: no native certs found";
        let hinted = hint(error, "https://h:1", false, None, false).unwrap_or_default();
        assert!(hinted.contains("--ca-file"), "{hinted}");
        assert!(hinted.contains("SSL_CERT_FILE"), "{hinted}");
    }

    /// A peer that accepts TCP and never answers the TLS handshake fails
    /// with "deadline has elapsed", which does not say what waited.
    #[test]
    fn a_tls_handshake_that_timed_out_hints_at_a_silent_peer() {
        let error = "cannot connect to https://h:1: deadline has elapsed";
        let hinted = hint(error, "https://h:1", false, None, false).unwrap_or_default();
        assert!(
            hinted.contains("the TLS handshake did not answer"),
            "{hinted}"
        );
    }

    /// Once the daemon had answered the handshake, a connection cut off is
    /// no TLS or port mismatch: the hint says to ask again, for Allocate
    /// with the same request id.
    #[test]
    fn a_connection_cut_off_after_the_handshake_hints_at_asking_again() {
        for cut in [
            "UNKNOWN: transport error: stream closed because of a broken pipe",
            "CANCELLED: operation was canceled: Connection closed",
            "UNKNOWN: transport error: connection reset",
        ] {
            for endpoint in ["h:1", "https://h:1"] {
                let allocate =
                    hint(cut, endpoint, false, Some("order-7"), true).unwrap_or_default();
                assert!(
                    !allocate.contains("TLS") && !allocate.contains("--cert-file"),
                    "{allocate}"
                );
                assert!(allocate.contains("mid-call"), "{cut}: {allocate}");
                assert!(allocate.contains("--request-id order-7"), "{allocate}");
                assert!(allocate.contains("`warmpoolctl get order-7`"), "{allocate}");
                let other = hint(cut, endpoint, false, None, true).unwrap_or_default();
                assert!(
                    other.contains("mid-call") && other.contains("run the command again"),
                    "{other}"
                );
            }
        }
        // Other failures after the handshake get no hint about the connection.
        assert_eq!(
            hint("UNKNOWN: frame with invalid size", "h:1", false, None, true),
            None
        );
        // Before it, the same words still hint at TLS.
        let before = hint(
            "UNKNOWN: transport error: connection reset",
            "h:1",
            false,
            Some("o"),
            false,
        );
        assert!(before.unwrap_or_default().contains("dial https://"));
        // The field hints do not depend on the connection.
        let field = hint(
            "INVALID_ARGUMENT: invalid network.subnet_id: x",
            "h:1",
            false,
            Some("o"),
            true,
        );
        assert_eq!(
            field.as_deref(),
            Some("network.subnet_id is what --subnet sets")
        );
    }

    #[test]
    fn a_token_goes_in_plaintext_only_to_loopback_or_when_asked() {
        for ok in [
            ("db-pool:50051", false),
            ("127.0.0.1:50051", true),
            ("localhost:50051", true),
            ("[::1]:50051", true),
            ("http://db-pool:50051", true),
            ("https://db-pool:50051", true),
        ] {
            assert!(check_token_transport(ok.0, ok.1).is_ok(), "{ok:?}");
        }
        for refused in ["db-pool:50051", "10.0.0.7:50051", "[fd00::7]:50051"] {
            let err = check_token_transport(refused, true)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("https://{refused}")), "{err}");
        }
    }
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("warmpoolctl").chain(args.iter().copied()))
    }

    /// The spec `pools create f a --min-ready 1 --max-ready 9 --image mysql`
    /// plus `extra` sends.
    fn create_spec(extra: &[&str]) -> api::PoolSpec {
        let mut args = vec![
            "pools",
            "create",
            "f",
            "a",
            "--min-ready",
            "1",
            "--max-ready",
            "9",
            "--image",
            "mysql",
        ];
        args.extend_from_slice(extra);
        match parse(&args).unwrap().command {
            Command::Pools {
                command: Some(PoolsCommand::Create(args)),
            } => args.to_spec().unwrap(),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn update_args(args: &[&str]) -> PoolUpdateArgs {
        let mut full = vec!["pools", "update", "m1.large", "az1"];
        full.extend_from_slice(args);
        match parse(&full).unwrap().command {
            Command::Pools {
                command: Some(PoolsCommand::Update(args)),
            } => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    /// A pool created without --boot-timeout or --max-age gets the
    /// server's defaults (15m, never), as one created by the API or the
    /// config file does.
    #[test]
    fn create_leaves_unset_durations_to_the_server() {
        let spec = create_spec(&[]);
        assert_eq!((spec.boot_timeout, spec.max_age), (None, None));
        let spec = create_spec(&["--max-age", "never", "--boot-timeout", "20m"]);
        assert_eq!(
            spec.max_age,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 0
            })
        );
        assert_eq!(spec.boot_timeout.map(|d| d.seconds), Some(1200));
        let (spec, mask) = update_args(&["--max-age", "never"]).to_update().unwrap();
        assert_eq!(mask, ["max_age"]);
        assert_eq!(spec.max_age.map(|d| d.seconds), Some(0));
        assert!(parse_max_age("forever").unwrap_err().contains("never"));
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn update_mask_names_exactly_the_given_flags() {
        let (spec, mask) = update_args(&["--max-ready", "9", "--paused", "false"])
            .to_update()
            .unwrap();
        assert_eq!(mask, ["max_ready", "paused"]);
        assert_eq!(spec.max_ready, 9);
        assert!(!spec.paused);

        let (spec, mask) = update_args(&[
            "--min-ready",
            "1",
            "--target",
            "0",
            "--image",
            "mysql-8.4",
            "--boot-timeout",
            "5m",
            "--max-age",
            "12h",
            "--max-ready",
            "3",
        ])
        .to_update()
        .unwrap();
        // Field order, not flag order: a stable mask is easier to read in logs.
        assert_eq!(
            mask,
            [
                "min_ready",
                "max_ready",
                "target",
                "image",
                "boot_timeout",
                "max_age"
            ]
        );
        assert_eq!(spec.image, "mysql-8.4");
        assert_eq!(
            spec.boot_timeout,
            Some(prost_types::Duration {
                seconds: 300,
                nanos: 0
            })
        );
        assert_eq!(
            spec.max_age,
            Some(prost_types::Duration {
                seconds: 43_200,
                nanos: 0
            })
        );
    }

    #[test]
    fn target_is_auto_or_a_number() {
        let (spec, mask) = update_args(&["--target", "auto"]).to_update().unwrap();
        assert_eq!(mask, ["target"]);
        assert_eq!(spec.target_mode, i32::from(api::TargetMode::Auto));
        let (spec, _) = update_args(&["--target", "7"]).to_update().unwrap();
        assert_eq!(spec.target_mode, i32::from(api::TargetMode::Fixed));
        assert_eq!(spec.target, 7);
        assert_eq!(parse_target("fixed 3"), Ok(TargetArg::Fixed(3)));
        assert_eq!(parse_target("AUTO"), Ok(TargetArg::Auto));
        let err = parse(&["pools", "update", "f", "a", "--target", "lots"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid target \"lots\""), "{err}");

        let spec = create_spec(&["--target", "auto"]);
        assert_eq!(spec.target_mode, i32::from(api::TargetMode::Auto));
        let spec = create_spec(&[]);
        assert_eq!(
            (spec.target_mode, spec.target),
            (i32::from(api::TargetMode::Fixed), 0),
            "default: min-ready"
        );
    }

    #[test]
    fn update_without_flags_is_an_error() {
        let err = update_args(&[]).to_update().unwrap_err().to_string();
        assert!(err.starts_with("nothing to update"), "{err}");
    }

    #[test]
    fn windows_and_iops_limits_on_create_and_update() {
        let (spec, mask) = update_args(&[
            "--window",
            "Mon-Fri 09:00-18:00 min 10",
            "--window",
            "Sat 10:00-12:00 min 2",
            "--iops-limit",
            "none",
            "--volume-iops-limit",
            "300",
        ])
        .to_update()
        .unwrap();
        assert_eq!(mask, ["windows", "iops_limit", "volume_iops_limit"]);
        assert_eq!(spec.windows.len(), 2);
        assert_eq!(spec.iops_limit, None);
        assert_eq!(spec.volume_iops_limit, Some(300));

        let (spec, mask) = update_args(&["--no-windows"]).to_update().unwrap();
        assert_eq!(mask, ["windows"]);
        assert!(spec.windows.is_empty());

        assert!(parse(&["pools", "update", "f", "a", "--iops-limit", "0"]).is_err());
        let create_with = |flag, value| {
            let mut args = vec!["pools", "create", "f", "a", "--min-ready", "1"];
            args.extend(["--max-ready", "2", "--image", "i", flag, value]);
            parse(&args)
        };
        for flag in ["--iops-limit", "--volume-iops-limit"] {
            let err = create_with(flag, "0").unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
            assert!(err.contains("\"0\" is not an IOPS limit"), "{err}");
        }
        assert_eq!(create_spec(&["--iops-limit", "none"]).iops_limit, None);
        assert!(parse(&[
            "pools",
            "update",
            "f",
            "a",
            "--no-windows",
            "--window",
            "daily 00:00-24:00 min 1"
        ])
        .is_err());

        let spec = create_spec(&["--window", "daily 08:00-20:00 min 2", "--iops-limit", "500"]);
        assert_eq!(spec.windows, ["daily 08:00-20:00 min 2"]);
        assert_eq!(spec.iops_limit, Some(500));
        assert_eq!(spec.volume_iops_limit, None);
    }

    /// The tables' markers are explained where the tables are asked for.
    #[test]
    fn table_markers_are_explained_in_the_help() {
        let cli = Cli::command();
        let long_about = |cmd: &clap::Command| {
            cmd.get_long_about()
                .map(|h| h.to_string())
                .unwrap_or_default()
        };
        let watch = long_about(cli.find_subcommand("watch").unwrap());
        let pools = cli.find_subcommand("pools").unwrap();
        let list = long_about(pools.find_subcommand("list").unwrap());
        for (what, help) in [("watch", &watch), ("pools list", &list)] {
            assert!(help.contains("\"auto:N\""), "{what}: {help}");
            assert!(help.contains("\"~\""), "{what}: {help}");
        }
        assert!(list.contains("\"win:N\""), "{list}");
    }

    /// The proto (AllocateRequest.timeout): the attach is given at least
    /// 5 min from the claim, and each step of a failed try's undoing at
    /// least 2 min, so the call may answer several minutes past the
    /// timeout; "up to 5 min past it" promised a bound the server does not
    /// keep.
    #[test]
    fn allocate_timeout_help_says_how_far_past_it_the_answer_may_come() {
        let cli = Cli::command();
        let timeout = cli
            .find_subcommand("allocate")
            .unwrap()
            .get_arguments()
            .find(|a| a.get_id() == "timeout")
            .unwrap();
        let help = timeout
            .get_long_help()
            .or(timeout.get_help())
            .unwrap()
            .to_string();
        assert!(help.contains("at least 5 min from the claim"), "{help}");
        assert!(help.contains("at least 2 min each"), "{help}");
        assert!(help.contains("several minutes past the timeout"), "{help}");
        assert!(!help.contains("up to 5 min past"), "{help}");
    }

    /// Both --window helps say windows are read in UTC.
    #[test]
    fn window_help_names_the_zone() {
        let cli = Cli::command();
        let pools = cli.find_subcommand("pools").unwrap();
        for sub in ["create", "update"] {
            let window = pools
                .find_subcommand(sub)
                .unwrap()
                .get_arguments()
                .find(|a| a.get_id() == "windows")
                .unwrap();
            let help = window
                .get_long_help()
                .or(window.get_help())
                .unwrap()
                .to_string();
            assert!(help.contains("(UTC;"), "{sub}: {help}");
            assert!(help.contains("UTC+02:00"), "{sub}: {help}");
        }
    }

    #[test]
    fn paused_takes_an_explicit_bool_on_update() {
        assert!(parse(&["pools", "update", "f", "a", "--paused", "maybe"]).is_err());
        assert_eq!(update_args(&["--paused", "true"]).paused, Some(true));
    }

    #[test]
    fn labels_parse_and_report_the_bad_one() {
        assert_eq!(parse_label("team=db"), Ok(("team".into(), "db".into())));
        assert_eq!(parse_label("q=a=b"), Ok(("q".into(), "a=b".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        let err = parse_label("novalue").unwrap_err();
        assert!(err.contains("\"novalue\""), "{err}");
        assert!(parse_label("=v").unwrap_err().contains("\"=v\""));

        let err = parse(&[
            "allocate",
            "--request-id",
            "r",
            "--tenant",
            "t",
            "--flavor",
            "f",
            "--az",
            "a",
            "--volume-size",
            "10",
            "--network",
            "n",
            "--label",
            "ok=1",
            "--label",
            "oops",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"oops\""), "{err}");
    }

    #[test]
    fn duplicate_label_keys_are_refused() {
        let labels = [
            ("a".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
        ];
        let err = labels_to_map(&labels).unwrap_err().to_string();
        assert!(err.contains("\"a\""), "{err}");
    }

    #[test]
    fn bad_durations_are_reported() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        for bad in ["10", "ten minutes", "5x", ""] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid duration {bad:?}")),
                "{err}"
            );
        }
        let err = parse(&["pools", "update", "f", "a", "--max-age", "3 fortnights"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration \"3 fortnights\""), "{err}");
    }

    #[test]
    fn allocate_builds_the_request() {
        let cli = parse(&[
            "allocate",
            "--request-id",
            "order-7",
            "--tenant",
            "proj",
            "--flavor",
            "m1",
            "--az",
            "az1",
            "--volume-size",
            "20",
            "--volume-type",
            "ssd",
            "--delete-volume-on-release",
            "--network",
            "net",
            "--subnet",
            "sub",
            "--fixed-ip",
            "10.0.0.5",
            "--label",
            "tier=gold",
            "--on-empty",
            "fail-fast",
            "--timeout",
            "2m",
        ])
        .unwrap();
        let Command::Allocate(args) = cli.command else {
            panic!()
        };
        let req = args.to_request().unwrap();
        assert_eq!(req.request_id, "order-7");
        assert_eq!(req.tenant_project_id, "proj");
        let volume = req.volume.unwrap();
        assert!(volume.delete_on_release);
        assert_eq!(
            volume.source,
            Some(api::volume_spec::Source::NewVolume(api::NewVolume {
                size_gib: 20,
                volume_type: "ssd".into()
            }))
        );
        assert_eq!(req.network.unwrap().fixed_ip, "10.0.0.5");
        assert_eq!(req.labels.get("tier").map(String::as_str), Some("gold"));
        assert_eq!(
            req.empty_pool_policy,
            i32::from(api::EmptyPoolPolicy::FailFast)
        );
        assert_eq!(
            req.timeout,
            Some(prost_types::Duration {
                seconds: 120,
                nanos: 0
            })
        );
    }

    /// Parses as `main` does: [`try_matches_from`], then the flags read.
    fn parse_checked(args: &[&str]) -> Result<Cli, clap::Error> {
        let argv = std::iter::once("warmpoolctl").chain(args.iter().copied());
        try_matches_from(argv).and_then(|matches| Cli::from_arg_matches(&matches))
    }

    /// `allocate`, the request id given by `id_args`, the other flags it
    /// needs after it.
    fn allocate_with(id_args: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec!["allocate"];
        args.extend_from_slice(id_args);
        args.extend([
            "--tenant",
            "t",
            "--flavor",
            "f",
            "--az",
            "a",
            "--volume-size",
            "1",
            "--network",
            "n",
        ]);
        parse_checked(&args)
    }

    /// The proto allows '-' anywhere in a request id, the first character
    /// included: one starting with '-' is given joined to its flag.
    #[test]
    fn a_request_id_starting_with_a_hyphen_is_given_as_flag_equals_id() {
        for id in ["-ord", "--ord-1", "-"] {
            let given = format!("--request-id={id}");
            let cli = allocate_with(&[&given]).unwrap_or_else(|e| panic!("{given}: {e}"));
            let Command::Allocate(allocate) = cli.command else {
                panic!("{given}")
            };
            assert_eq!(allocate.request_id, id);
        }
    }

    /// A forgotten id (a script's empty `$ORDER`, unquoted) must not take
    /// the next flag as the id: `--request-id --delete-volume-on-release`
    /// bought a database under the id "--delete-volume-on-release", its
    /// volume kept on release, and the next empty `$ORDER` was answered
    /// that same allocation. A usage error (exit 2), with the way to give
    /// an id that does start with '-'.
    #[test]
    fn a_forgotten_request_id_takes_no_flag_as_the_id() {
        for next in [
            "--delete-volume-on-release",
            "--tenant",
            "--help",
            "-h",
            "-V",
        ] {
            let err = allocate_with(&["--request-id", next])
                .map(|cli| cli.command)
                .expect_err(next);
            let text = err.to_string();
            assert_eq!(err.exit_code(), 2, "{next}: {text}");
            assert!(text.contains("--request-id"), "{next}: {text}");
            assert!(
                text.contains("tip: ") && text.contains("--request-id=-"),
                "{next}: {text}"
            );
        }
    }

    /// An id starting with '-' as a word of its own reads as flags ("-ord"
    /// as -o -r -d). clap's error names only "-o", and "-- -ord", its tip
    /// for a positional argument, is no way to give a flag's value: the
    /// tip says to join it to its flag.
    #[test]
    fn a_hyphen_id_as_a_word_of_its_own_is_refused_saying_how_to_give_it() {
        for id in ["-ord", "--ord-1"] {
            let err = allocate_with(&["--request-id", id])
                .map(|cli| cli.command)
                .expect_err(id);
            let text = err.to_string();
            assert_eq!(err.exit_code(), 2, "{id}: {text}");
            assert!(text.contains(&format!("--request-id={id}")), "{id}: {text}");
            assert!(!text.contains(&format!("-- {id}")), "{id}: {text}");
        }
    }

    /// Every Allocate field the server names in INVALID_ARGUMENT that a
    /// flag sets under another name gets the flag.
    #[test]
    fn allocate_field_errors_name_the_flag() {
        for (field, flag) in [
            ("availability_zone", "--az"),
            ("timeout", "--timeout"),
            ("tenant_project_id", "--tenant"),
        ] {
            let error = format!("INVALID_ARGUMENT: invalid {field}: bad");
            assert_eq!(
                hint(&error, "h:1", false, Some("o"), true),
                Some(format!("{field} is what {flag} sets"))
            );
        }
    }

    #[test]
    fn allocate_needs_exactly_one_volume_source() {
        let base = [
            "allocate",
            "--request-id",
            "r",
            "--tenant",
            "t",
            "--flavor",
            "f",
            "--az",
            "a",
            "--network",
            "n",
        ];
        assert!(parse(&base).is_err(), "no volume source");
        let both: Vec<_> = base
            .iter()
            .copied()
            .chain(["--volume-id", "v", "--volume-size", "1"])
            .collect();
        assert!(parse(&both).is_err(), "two volume sources");
        let existing: Vec<_> = base.iter().copied().chain(["--volume-id", "v"]).collect();
        assert!(parse(&existing).is_ok());
    }

    #[test]
    fn bare_pools_means_list() {
        let cli = parse(&["pools"]).unwrap();
        assert!(matches!(cli.command, Command::Pools { command: None }));
        assert_eq!(cli.endpoint, "http://127.0.0.1:50051");
        assert_eq!(cli.output, OutputFormat::Table);
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = parse(&["watch", "--output", "json", "--endpoint", "h:1"]).unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.endpoint, "h:1");
    }

    #[test]
    fn completions_take_a_known_shell() {
        let cli = parse(&["completions", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Completions {
                shell: clap_complete::Shell::Zsh
            }
        ));
        assert!(parse(&["completions", "cmd.exe"]).is_err());
        assert!(parse(&["completions"]).is_err());
    }

    #[test]
    fn release_volume_choice() {
        let release = |args: &[&str]| {
            let mut full = vec!["release", "r"];
            full.extend_from_slice(args);
            match parse(&full).map(|c| c.command) {
                Ok(Command::Release(r)) => Ok(r.delete_volume()),
                Ok(other) => panic!("parsed as {other:?}"),
                Err(e) => Err(e),
            }
        };
        assert_eq!(release(&[]).unwrap(), None);
        assert_eq!(release(&["--delete-volume"]).unwrap(), Some(true));
        assert_eq!(release(&["--keep-volume"]).unwrap(), Some(false));
        assert!(release(&["--keep-volume", "--delete-volume"]).is_err());
    }
}
