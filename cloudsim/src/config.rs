//! `SimConfig`: the shape of the simulated cloud (zones, hosts, flavors,
//! images, quotas) and its timing model. The defaults reproduce the field
//! reports in calibration.md (`../shared/calibration.md` beside the
//! repository): a lone boot is ACTIVE after 25 s and its mysqld answers 90 s
//! after the request, the report's unthrottled Trove cold create.
//!
//! Every duration here is *simulated* time; [`SimConfig::time_scale`] turns it
//! into tokio time, so a demo can run 20x faster with `time_scale = 0.05`.

use pool_manager::cloud::NetworkShare;
use std::collections::BTreeMap;
use std::time::Duration;

/// One availability zone and how many compute hosts it has.
#[derive(Clone, Debug, PartialEq)]
pub struct AzConfig {
    pub name: String,
    pub hosts: usize,
}

impl AzConfig {
    pub fn new(name: impl Into<String>, hosts: usize) -> Self {
        Self {
            name: name.into(),
            hosts,
        }
    }
}

/// How long a boot takes.
///
/// Nova phase (request to ACTIVE) on one host: each boot passes once through
/// the host's serialized section (libvirt locks, cgroup changes), which takes
/// `k` and serves one boot at a time in arrival order, and spends the rest of
/// `t_alone` in parallel with the others. A lone boot takes `t_alone`; the
/// n-th of a batch placed on one host at once takes `t_alone + k * (n - 1)`
/// (`T_alone + k * n_concurrent`), so 40 at once take 25 s for the first and
/// about 200 s for the last, as the OpenStack performance study measured. A
/// host's throughput is capped at one boot per `k`: "more concurrency past
/// a point only adds latency" (calibration.md). The queue position is fixed
/// at placement (a deleted boot does not give its turn back), so the model
/// stays a pure function of timestamps.
///
/// Guest phase (ACTIVE to mysqld's greeting: the guest agent's start and
/// config, then mysqld's): `mysqld_start`, 65 s, so a lone unthrottled boot
/// is ready after 90 s. Under IOPS throttling the report measured x2..x3 for
/// the Nova phase, x3..x5 for mysqld's start and x6..x10 for the guest
/// agent's part; the defaults take x2.5 and x4 (62.5 s + 260 s: a lone
/// throttled boot ready after about 5.4 min, the report's "about 6 min").
#[derive(Clone, Debug, PartialEq)]
pub struct BootModel {
    pub t_alone: Duration,
    /// The host's serialized section per boot: the extra Nova time each
    /// concurrent boot on the same host adds (4.5 s default Nova, about
    /// 0.4 s on a tuned host). Part of `t_alone`.
    pub k_per_concurrent: Duration,
    pub mysqld_start: Duration,
    pub throttled_nova_factor: f64,
    pub throttled_mysqld_factor: f64,
    /// When a boot injected to fail (NoValidHost) turns ERROR: scheduling
    /// fails early, before any host is involved.
    pub error_after: Duration,
}

impl Default for BootModel {
    fn default() -> Self {
        Self {
            t_alone: Duration::from_secs(25),
            k_per_concurrent: Duration::from_millis(4500),
            mysqld_start: Duration::from_secs(65),
            throttled_nova_factor: 2.5,
            throttled_mysqld_factor: 4.0,
            error_after: Duration::from_secs(3),
        }
    }
}

/// Latencies of the other operations (simulated time, before jitter).
#[derive(Clone, Debug, PartialEq)]
pub struct Latencies {
    /// `creating` -> `available`.
    pub volume_create: Duration,
    /// `attaching` -> `in-use`.
    pub volume_attach: Duration,
    /// `detaching` -> `available`.
    pub volume_detach: Duration,
    /// Neutron creates ports synchronously: the `create_port` call itself takes this long.
    pub port_create: Duration,
    /// Port attach accepted -> listed on the server (`device_id` set).
    pub port_attach: Duration,
    /// Port detach accepted -> `device_id` cleared.
    pub port_detach: Duration,
    /// Server or volume delete accepted -> gone (404).
    pub delete: Duration,
    /// Round trip of every API call, added before the call takes effect.
    /// Zero by default so that calls "return at once" as the trait promises.
    pub api_call: Duration,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            volume_create: Duration::from_secs(3),
            volume_attach: Duration::from_secs(2),
            volume_detach: Duration::from_secs(2),
            port_create: Duration::from_millis(500),
            port_attach: Duration::from_millis(1500),
            port_detach: Duration::from_secs(1),
            delete: Duration::from_secs(2),
            api_call: Duration::ZERO,
        }
    }
}

/// Project quotas (one project for the whole simulated cloud). Objects being
/// deleted count until they are gone, as in Nova and Cinder.
#[derive(Clone, Debug, PartialEq)]
pub struct Quotas {
    pub max_instances: usize,
    pub max_volumes: usize,
    /// Neutron's `port`: the ports made through Neutron and those Nova
    /// makes for the servers it boots (one each, on the server's network)
    /// together. [`Quotas::UNLIMITED`] (the default): none (Neutron's -1).
    pub max_ports: usize,
    /// Cinder's `gigabytes`: the sizes of the project's volumes together
    /// (other projects' volumes, tenants', count in theirs).
    pub max_gigabytes: u64,
    /// Cinder's `per_volume_gigabytes`: the largest volume the project may
    /// create, refused above it whatever is free (413
    /// `VolumeSizeExceedsLimit`). `None` (the default): no limit (Cinder's
    /// -1).
    pub max_gigabytes_per_volume: Option<u64>,
}

impl Quotas {
    /// No limit (what OpenStack shows as -1).
    pub const UNLIMITED: usize = usize::MAX;
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_instances: 200,
            max_volumes: 1000,
            max_ports: Self::UNLIMITED,
            // Cinder's default.
            max_gigabytes: 1000,
            max_gigabytes_per_volume: None,
        }
    }
}

/// The size of a flavor, as Nova's flavor API and `/limits` report it.
#[derive(Clone, Debug, PartialEq)]
pub struct FlavorSize {
    pub name: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
}

impl FlavorSize {
    pub fn new(name: impl Into<String>, vcpus: u32, ram_mb: u64, disk_gb: u64) -> Self {
        Self {
            name: name.into(),
            vcpus,
            ram_mb,
            disk_gb,
        }
    }
}

/// A flavor as the cloud shows it: Nova's id (its position in
/// [`SimConfig::flavors`], counting from 1, so ids never equal names and a
/// driver that passes a name where Nova wants an id fails here as it would on
/// a real cloud) and its size.
#[derive(Clone, Debug, PartialEq)]
pub struct FlavorSpec {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    /// Its extra specs ([`SimConfig::flavor_extra_specs`]).
    pub extra_specs: BTreeMap<String, String>,
}

/// A Neutron security group the HTTP face serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityGroupConfig {
    pub name: String,
    /// Its id; `None`: derived from its name (stable across runs).
    pub id: Option<String>,
    /// The project owning it: `None`, the one project the face's users log
    /// in to; `Some(name)`, another project, whose groups a listing shows
    /// beside the project's own as Neutron shows them to an admin.
    pub other_project: Option<String>,
    /// Its rules, as Neutron shows them with the group
    /// (`security_group_rules`); none by default.
    pub rules: Vec<serde_json::Value>,
}

impl SecurityGroupConfig {
    /// A group of the project warmpool logs in to.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            id: None,
            other_project: None,
            rules: Vec::new(),
        }
    }

    /// A group of another project, `project` (by name).
    pub fn of_project(name: impl Into<String>, project: impl Into<String>) -> Self {
        Self {
            other_project: Some(project.into()),
            ..Self::new(name)
        }
    }

    /// The same, with `rule` too (Neutron's JSON of a rule).
    pub fn with_rule(mut self, rule: serde_json::Value) -> Self {
        self.rules.push(rule);
        self
    }
}

/// A Neutron network with its one IPv4 subnet, as the model checks port
/// creates against it, and whose it is, as `Cloud::get_network` and
/// `Cloud::network_shares` show it (to an admin: every RBAC policy).
#[derive(Clone, Debug, PartialEq)]
pub struct SimNetwork {
    pub id: String,
    pub subnet_id: String,
    pub cidr: ipnet::Ipv4Net,
    /// The project owning it: `None`, warmpool's own; `Some`, another, by
    /// id.
    pub project: Option<String>,
    /// Whom its RBAC `access_as_shared` policies share it with.
    pub shares: Vec<NetworkShare>,
}

impl SimNetwork {
    /// A network of warmpool's own project, shared with no one.
    pub fn new(id: impl Into<String>, subnet_id: impl Into<String>, cidr: ipnet::Ipv4Net) -> Self {
        Self {
            id: id.into(),
            subnet_id: subnet_id.into(),
            cidr,
            project: None,
            shares: Vec::new(),
        }
    }

    /// The network made project `project`'s (by id).
    pub fn of_project(self, project: impl Into<String>) -> Self {
        Self {
            project: Some(project.into()),
            ..self
        }
    }

    /// The network shared (RBAC `access_as_shared`) with `with` too.
    pub fn shared_with(mut self, with: NetworkShare) -> Self {
        self.shares.push(with);
        self
    }
}

/// The largest [`SimConfig::time_scale`]: 1000 times slower than a real
/// cloud, which keeps every scaled duration (hours at most, simulated)
/// far from `Duration`'s and `Instant`'s limits.
pub const MAX_TIME_SCALE: f64 = 1000.0;

/// A setting the simulation cannot run with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimConfigError {
    #[error("time_scale {0} is unusable: give a number from 0 to at most {MAX_TIME_SCALE} (1 = real-cloud latencies, 0.05 = 20 times faster)")]
    TimeScale(f64),
    #[error("rate_limit.per_second {0} is unusable: give a number of calls per simulated second above 0 (or no rate limit at all)")]
    RateLimit(f64),
}

/// Checks a time scale: finite, from 0 to [`MAX_TIME_SCALE`].
pub fn check_time_scale(time_scale: f64) -> Result<f64, SimConfigError> {
    if (0.0..=MAX_TIME_SCALE).contains(&time_scale) {
        Ok(time_scale)
    } else {
        Err(SimConfigError::TimeScale(time_scale))
    }
}

/// A token bucket over all API calls, in simulated time; calls over the rate
/// get `CloudError::Throttled` with the (scaled) time until the next token.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// The size of a flavor listed in [`SimConfig::flavors`] but not in
/// [`SimConfig::flavor_sizes`].
pub const DEFAULT_FLAVOR_SIZE: FlavorSize = FlavorSize {
    name: String::new(),
    vcpus: 1,
    ram_mb: 1024,
    disk_gb: 10,
};

#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub availability_zones: Vec<AzConfig>,
    /// Flavors the cloud knows; anything else is `CloudError::Fatal`.
    pub flavors: Vec<String>,
    /// Sizes of the flavors in `flavors`; a flavor missing here has
    /// [`DEFAULT_FLAVOR_SIZE`] (1 vCPU, 1 GiB RAM, 10 GB disk).
    pub flavor_sizes: Vec<FlavorSize>,
    /// Project quota on vCPUs summed over servers; `None`: unlimited.
    pub max_cores: Option<u64>,
    /// Project quota on RAM (MiB) summed over servers; `None`: unlimited.
    pub max_ram_mb: Option<u64>,
    /// Images the cloud knows; anything else is `CloudError::Fatal`.
    pub images: Vec<String>,
    /// Cinder volume types; a volume of any other is refused (404, as
    /// Cinder does). Unset means Cinder's default type.
    pub volume_types: Vec<String>,
    pub boot: BootModel,
    pub latencies: Latencies,
    pub quotas: Quotas,
    /// IOPS throttling at start; can be changed at runtime with
    /// [`crate::Faults::set_iops_throttled`]. Applies to boots placed while set.
    pub iops_throttled: bool,
    /// Multiplies every simulated latency to get tokio time.
    pub time_scale: f64,
    /// Relative jitter on every latency: each is multiplied by a uniform
    /// factor in `1 ± jitter`, drawn from the seeded generator.
    pub jitter: f64,
    /// Seed for jitter and for ids: the same seed and the same call sequence
    /// give the same ids and timings.
    pub seed: u64,
    /// Mixed into every id (servers, volumes, ports): clouds of one seed
    /// with other salts never hand out the same id. The embedded cloud of
    /// warmpoold draws one each start, since it forgets its servers when
    /// the process ends while the store remembers their ids. 0: ids follow
    /// the seed alone.
    pub id_salt: u64,
    /// Open a real TCP listener per server that greets like mysqld once ready.
    /// Off: `mysql_addr` is synthetic and only [`crate::SimProbe`] can probe it.
    pub listeners: bool,
    /// The version string in the greeting.
    pub mysql_version: String,
    /// API rate limit; `None` (default) never throttles unless injected.
    pub rate_limit: Option<RateLimit>,
    /// Neutron's networks: a port create naming another is refused
    /// (`NotFound`, Neutron's 404), and so is one naming a subnet of
    /// another network or an address its subnet cannot give (`Fatal`,
    /// Neutron's 400); ports get addresses of their network's subnet. The
    /// HTTP face adds its own. Empty, with no HTTP face: any network id is
    /// taken, unchecked (for tests that name their own), as a network of
    /// warmpool's project shared with every project.
    pub networks: Vec<SimNetwork>,
    /// Networks with no subnet: a port created on one gets no address
    /// (Neutron creates it with no fixed IP, and binding gives it none).
    pub networks_without_subnet: Vec<String>,
    /// Neutron's default policy as a project member meets it (measured on
    /// the testbed): a port a server is bound to (`device_owner`
    /// `compute:*`) may be deleted only by an admin or a service, so
    /// deleting it is refused (403 "rule:delete_port is disallowed by
    /// policy") until Nova has unbound it, which follows a detach or the
    /// server's deletion asynchronously; and a port create setting an
    /// address (`fixed_ips` `ip_address`) on another project's network,
    /// even one shared with the member's, is refused (403, naming
    /// `rule:create_port:fixed_ips:ip_address`) whatever the address,
    /// where naming a subnet alone is not. The in-process face answers
    /// these as warmpool's driver reads them: `Fatal` and `PolicyRefused`.
    /// Off: any port may be deleted and any address set (as an admin may).
    pub member_port_policy: bool,
    /// Flavors an admin deleted: not listed nor bootable, though servers
    /// booted of them keep running (and using quota). Set at runtime with
    /// [`crate::SimCloud::retire_flavor`].
    pub retired_flavors: Vec<String>,
    /// Nova zones an admin disabled (their hosts down for patching): listed
    /// as not available, and boots in them refused. Cinder's zones stay.
    /// Set at runtime with [`crate::SimCloud::close_zone`].
    pub closed_zones: Vec<String>,
    /// Cinder zones whose cinder-volume services are all disabled or down
    /// (maintenance): listed as not available, and a volume created in one
    /// ends in `error` (Cinder's scheduler finds no backend). Set at
    /// runtime with [`crate::SimCloud::close_volume_zone`].
    pub closed_volume_zones: Vec<String>,
    /// Nova key pairs of the HTTP face's users (Nova keeps key pairs per
    /// user; the face's users share these), as `GET /os-keypairs/{name}`
    /// finds them. A boot's `key_name` is not checked against them.
    pub key_pairs: Vec<String>,
    /// Neutron's security groups (a name may repeat, as Neutron allows).
    /// A boot's `security_groups` are looked up among the project's as
    /// Nova's API does (names or ids; 400 for one missing, 409 for a name
    /// two share), and a port create's too (ids of the project's groups).
    pub security_groups: Vec<SecurityGroupConfig>,
    /// Nova's `[cinder] cross_az_attach`: whether a volume of another
    /// zone than the server's may be attached. On by default, as in Nova;
    /// off, such an attach is refused with Nova's 400 (`Fatal`
    /// in-process, as warmpool's driver reads that answer).
    pub cross_az_attach: bool,
    /// Extra specs of flavors, by flavor name, as Nova shows them (from
    /// microversion 2.61 in a flavor's detail, else `GET
    /// /flavors/{id}/os-extra_specs`): a libvirt front-end QoS such as
    /// `quota:disk_total_iops_sec` tells warmpool a flavor's disk IOPS
    /// limit, which its lead-time prior is stretched for. They only tell:
    /// boots slow down under `iops_throttled`. None by default; set at
    /// runtime with [`crate::SimCloud::set_flavor_extra_specs`].
    pub flavor_extra_specs: BTreeMap<String, BTreeMap<String, String>>,
    /// Nova's policy hides flavors' extra specs from the cloud's users
    /// (`os_compute_api:os-flavor-extra-specs:index` tightened to admins):
    /// flavor details leave them out, their own call is refused 403, and
    /// the in-process face answers `FlavorIops::Unknown`.
    pub flavor_extra_specs_hidden: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            availability_zones: vec![AzConfig::new("az1", 4), AzConfig::new("az2", 4)],
            flavors: vec!["db.small".into(), "db.medium".into(), "db.large".into()],
            flavor_sizes: vec![
                FlavorSize::new("db.small", 1, 1024, 10),
                FlavorSize::new("db.medium", 2, 4096, 20),
                FlavorSize::new("db.large", 4, 8192, 40),
            ],
            max_cores: None,
            max_ram_mb: None,
            images: vec!["mysql-8.0".into()],
            volume_types: vec!["__DEFAULT__".into()],
            boot: BootModel::default(),
            latencies: Latencies::default(),
            quotas: Quotas::default(),
            iops_throttled: false,
            time_scale: 1.0,
            jitter: 0.1,
            seed: 1,
            id_salt: 0,
            listeners: true,
            mysql_version: "8.0.36-cloudsim".into(),
            rate_limit: None,
            networks: Vec::new(),
            networks_without_subnet: Vec::new(),
            member_port_policy: false,
            retired_flavors: Vec::new(),
            closed_zones: Vec::new(),
            closed_volume_zones: Vec::new(),
            key_pairs: Vec::new(),
            // Neutron gives every project one.
            security_groups: vec![SecurityGroupConfig::new("default")],
            cross_az_attach: true,
            flavor_extra_specs: BTreeMap::new(),
            flavor_extra_specs_hidden: false,
        }
    }
}

impl SimConfig {
    /// Defaults for paused-clock tests and large benchmarks: no sockets, no
    /// jitter (exact, predictable timings).
    pub fn deterministic() -> Self {
        Self {
            listeners: false,
            jitter: 0.0,
            ..Self::default()
        }
    }

    /// Every flavor with its id and size, in `flavors` order; a retired
    /// one is left out (the others keep their ids).
    pub fn flavor_specs(&self) -> Vec<FlavorSpec> {
        self.flavors
            .iter()
            .enumerate()
            .filter(|(_, name)| !self.retired_flavors.contains(name))
            .map(|(i, name)| self.spec_of(i, name))
            .collect()
    }

    /// The flavor named `name`, if the cloud knows it and it is not retired.
    pub fn flavor_spec(&self, name: &str) -> Option<FlavorSpec> {
        if self.retired_flavors.iter().any(|f| f == name) {
            return None;
        }
        self.flavor_spec_even_retired(name)
    }

    /// The flavor named `name`, retired or not: what servers booted of it
    /// still are.
    pub fn flavor_spec_even_retired(&self, name: &str) -> Option<FlavorSpec> {
        let i = self.flavors.iter().position(|f| f == name)?;
        Some(self.spec_of(i, name))
    }

    /// Whether Nova boots servers in `az`: a zone it has, not closed.
    pub fn zone_takes_servers(&self, az: &str) -> bool {
        self.availability_zones.iter().any(|a| a.name == az)
            && !self.closed_zones.iter().any(|z| z == az)
    }

    fn spec_of(&self, index: usize, name: &str) -> FlavorSpec {
        let size = self
            .flavor_sizes
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .unwrap_or_else(|| FlavorSize {
                name: name.to_string(),
                ..DEFAULT_FLAVOR_SIZE
            });
        FlavorSpec {
            id: (index + 1).to_string(),
            name: name.to_string(),
            vcpus: size.vcpus,
            ram_mb: size.ram_mb,
            disk_gb: size.disk_gb,
            extra_specs: self
                .flavor_extra_specs
                .get(name)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Refuses settings the simulation cannot run with (each would end in a
    /// panic deep in the model: a duration overflowing, or made of
    /// infinity).
    pub fn validate(&self) -> Result<(), SimConfigError> {
        check_time_scale(self.time_scale)?;
        if let Some(limit) = &self.rate_limit {
            if !(limit.per_second.is_finite() && limit.per_second > 0.0) {
                return Err(SimConfigError::RateLimit(limit.per_second));
            }
        }
        Ok(())
    }

    /// Simulated duration -> tokio duration.
    pub fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.time_scale.max(0.0))
    }
}
