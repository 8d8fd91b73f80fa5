//! The simulated cloud's state and rules, shared by every face (in-process
//! `Cloud`, and the HTTP API in [`crate::http`]). Owns servers, volumes, ports, compute hosts,
//! quotas, injected-fault counters and per-method call counts.
//!
//! Nothing here sleeps or spawns: every operation takes `now` and records
//! *when* each pending transition completes (`Timed`). Reads evaluate state
//! as of the `now` they are given. That keeps the model deterministic under a
//! paused tokio clock and free of timer tasks; the faces do the sleeping and
//! hold the lock (a `std::sync::Mutex`) only around these synchronous calls.

use crate::config::{FlavorSpec, Quotas, SimConfig};
use crate::mysql::ListenerGuard;
use pool_manager::cloud::{
    extra_specs_iops, some_names, BootHeadroom, CloudError, CloudResult, FixedIp, FlavorIops,
    Network, NetworkOwner, NetworkShare, NewPortSpec, NewVolumeSpec, Port, QuotaLeft, Server,
    ServerSpec, ServerStatus, Volume, VolumeOwner, VolumeStatus, META_INSTANCE, META_POOL, PORTS,
    PORTS_PER_SERVER,
};
use pool_manager::model::PoolKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::time::Instant;

/// A value with at most one pending change: `current` until `next.0`, then `next.1`.
#[derive(Clone, Debug)]
struct Timed<T> {
    current: T,
    next: Option<(Instant, T)>,
    /// A step after `next`: a volume attaching to a server being deleted is
    /// in use once the attach is done, and available once the server is gone.
    then: Option<(Instant, T)>,
}

impl<T: Clone> Timed<T> {
    fn settled(value: T) -> Self {
        Self {
            current: value,
            next: None,
            then: None,
        }
    }

    fn at(&self, now: Instant) -> &T {
        match (&self.next, &self.then) {
            (_, Some((t, v))) if now >= *t => v,
            (Some((t, v)), _) if now >= *t => v,
            _ => &self.current,
        }
    }

    /// When the last step starts, if it has not yet.
    fn pending_until(&self, now: Instant) -> Option<Instant> {
        [&self.next, &self.then]
            .into_iter()
            .flatten()
            .map(|(t, _)| *t)
            .filter(|t| now < *t)
            .max()
    }

    fn pending(&self, now: Instant) -> bool {
        self.pending_until(now).is_some()
    }

    /// Starts a transition: `during` now, `after` from `done_at` on.
    fn start(&mut self, during: T, done_at: Instant, after: T) {
        self.current = during;
        self.next = Some((done_at, after));
        self.then = None;
    }

    /// Adds a step after the pending transition: `value` from `at` on.
    fn and_then(&mut self, at: Instant, value: T) {
        self.then = Some((at, value));
    }
}

#[derive(Clone, Debug)]
enum Boot {
    Active {
        active_at: Instant,
        /// `None`: mysqld never answers (injected fault).
        mysqld_ready_at: Option<Instant>,
    },
    Error {
        at: Instant,
        fault: String,
    },
}

struct ServerRec {
    seq: u64,
    id: String,
    name: String,
    az: String,
    flavor: String,
    image: String,
    metadata: BTreeMap<String, String>,
    /// Index into `Model::hosts`; `None` for a boot that failed scheduling.
    host: Option<usize>,
    created_at: Instant,
    boot: Boot,
    addr: SocketAddr,
    /// Set by delete: the server is being torn down and is gone from then.
    gone_at: Option<Instant>,
    /// Set by a soft delete (Nova's `reclaim_instance_interval`): when the
    /// server is reclaimed, that is deleted for good.
    reclaim_at: Option<Instant>,
    /// Nova's task_state for a task other than a delete (`migrating`,
    /// `image_snapshot`), set by a test: Nova refuses attaches and detaches
    /// meanwhile.
    task_state: Option<String>,
    /// Volumes and ports whose attach to this server was accepted and not yet
    /// undone by its delete or a port's detach; views filter them by the
    /// object's state at `now` (a volume's detach leaves it here: it is
    /// listed until the detach is done).
    volumes: BTreeSet<String>,
    ports: BTreeSet<String>,
    /// Dropping it stops the server's mysqld listener and frees its port
    /// (the server is gone); a stopped or failed server's is stopped instead
    /// ([`ListenerGuard::stop`]), its port kept.
    listener: Option<ListenerGuard>,
    /// Nova server tags (only the HTTP face sets them).
    tags: BTreeSet<String>,
    /// Network ids the server was booted on, primary first (HTTP face).
    networks: Vec<String>,
    /// The port Nova made for it on its network, deleted with it.
    nova_port: Option<String>,
}

impl ServerRec {
    /// The model's own reading: a server whose delete was accepted is
    /// done with, whatever Nova would still show of it.
    fn status(&self, now: Instant) -> ServerStatus {
        if self.gone_at.is_some() {
            return ServerStatus::Deleted;
        }
        self.shown_status(now)
    }

    /// The status Nova shows: a server being deleted keeps the one it had
    /// (its task_state says `deleting`) until it is gone; a soft-deleted
    /// one is SOFT_DELETED.
    fn shown_status(&self, now: Instant) -> ServerStatus {
        if self.reclaim_at.is_some() {
            return ServerStatus::Deleted;
        }
        match &self.boot {
            Boot::Active { active_at, .. } if now >= *active_at => ServerStatus::Active,
            Boot::Error { at, .. } if now >= *at => ServerStatus::Error,
            _ => ServerStatus::Build,
        }
    }

    fn mysqld_ready(&self, now: Instant) -> bool {
        self.gone_at.is_none()
            && matches!(self.boot, Boot::Active { mysqld_ready_at: Some(t), .. } if now >= t)
    }

    fn building(&self, now: Instant) -> bool {
        self.status(now) == ServerStatus::Build
    }

    /// Nova's 409 for `action` while the server is busy with a task.
    fn busy_refusal(&self, action: &str) -> CloudResult<()> {
        match &self.task_state {
            Some(task) if self.gone_at.is_none() => Err(CloudError::Conflict(format!(
                "Cannot '{action}' instance {} while it is in task_state {task}",
                self.id
            ))),
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct VolState {
    status: VolumeStatus,
    server: Option<String>,
}

struct VolumeRec {
    seq: u64,
    id: String,
    name: String,
    az: String,
    size_gib: u32,
    /// The project owning it: `None`, the one the cloud's user (warmpool)
    /// works in, where both faces create volumes; `Some`, another
    /// (a tenant's volume made for a test).
    project_id: Option<String>,
    /// Cinder's metadata, as given at its create and set since.
    metadata: BTreeMap<String, String>,
    created_at: Instant,
    state: Timed<VolState>,
    gone_at: Option<Instant>,
    /// Snapshots of it (the tenant's): Cinder refuses to delete it meanwhile.
    snapshots: u32,
    /// Its volume type's name.
    volume_type: String,
    /// Of a multiattach type: an attach is taken while it is attached
    /// elsewhere too.
    multiattach: bool,
    /// Servers outside warmpool's view it is attached to besides the one
    /// `state` names (a multiattach volume's; set by tests).
    also_attached: Vec<String>,
}

impl VolumeRec {
    fn view(&self, now: Instant) -> Volume {
        let state = self.state.at(now);
        let status = if self.gone_at.is_some() {
            VolumeStatus::Other("deleting".into())
        } else if state.status == VolumeStatus::Available && !self.also_attached.is_empty() {
            VolumeStatus::InUse
        } else {
            state.status.clone()
        };
        // Cinder lists an attachment once it is made, until the detach completes.
        let mut attached_to = match (&state.status, &state.server) {
            (VolumeStatus::InUse | VolumeStatus::Detaching, Some(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        attached_to.extend(self.also_attached.iter().cloned());
        Volume {
            id: self.id.clone(),
            name: self.name.clone(),
            status,
            availability_zone: self.az.clone(),
            size_gib: self.size_gib,
            attached_to,
            volume_type: Some(self.volume_type.clone()),
            multiattach: self.multiattach,
            metadata: self.metadata.clone(),
            // As an admin, or a reader of its project, sees it.
            owner: match &self.project_id {
                None => VolumeOwner::Warmpool,
                Some(p) => VolumeOwner::Project(p.clone()),
            },
        }
    }

    /// The server this volume is attached or attaching to, as of `now`
    /// (also one whose attach failed in Cinder, `error_attaching`, while
    /// Nova keeps the mapping: deleting the server lets go of it).
    fn attached_server(&self, now: Instant) -> Option<&str> {
        let state = self.state.at(now);
        match &state.status {
            VolumeStatus::Attaching | VolumeStatus::InUse => state.server.as_deref(),
            VolumeStatus::Other(s) if s == ERROR_ATTACHING => state.server.as_deref(),
            _ => None,
        }
    }

    /// The server whose volume list (Nova's block device mappings) shows
    /// this volume as of `now`: the one it is attached to, and the one it
    /// is still detaching from, whose mapping Nova deletes only once the
    /// compute host has detached it. Not for attach checks: a detaching
    /// volume is attached to nothing there.
    fn listed_on(&self, now: Instant) -> Option<&str> {
        let state = self.state.at(now);
        match &state.status {
            VolumeStatus::Detaching => state.server.as_deref(),
            _ => self.attached_server(now),
        }
    }
}

struct PortRec {
    seq: u64,
    id: String,
    name: String,
    network_id: String,
    /// None on a network without a subnet.
    ip: Option<String>,
    created_at: Instant,
    /// The server the port is bound to (`device_id`).
    binding: Timed<Option<String>>,
    /// Nova made it for a server it booted (not made through Neutron).
    by_nova: bool,
    /// The security groups (ids) its create named; `None`: it named none,
    /// and Neutron gave it the project's default group.
    security_groups: Option<Vec<String>>,
}

impl PortRec {
    fn view(&self, now: Instant) -> Port {
        Port {
            id: self.id.clone(),
            name: self.name.clone(),
            network_id: self.network_id.clone(),
            device_id: self.binding.at(now).clone(),
            ip_address: self.ip.clone(),
            // The model knows no subnet ids; the HTTP face shows them.
            fixed_ips: self
                .ip
                .iter()
                .map(|ip| FixedIp {
                    subnet_id: None,
                    ip_address: ip.clone(),
                })
                .collect(),
            address_deferred: false,
        }
    }

    /// The server this port is bound or being bound to.
    fn target(&self) -> Option<&str> {
        match &self.binding.next {
            Some((_, v)) => v.as_deref(),
            None => self.binding.current.as_deref(),
        }
    }
}

#[derive(Clone, Debug)]
struct Host {
    name: String,
    az: String,
    /// When the host's serialized section (see [`crate::BootModel`]) is
    /// free for the next boot placed on it.
    serial_free_at: Option<Instant>,
}

/// Cinder's default volume type, of a volume created naming none.
pub(crate) const DEFAULT_VOLUME_TYPE: &str = "__DEFAULT__";

/// Cinder's status for a volume whose attach failed in Cinder.
const ERROR_ATTACHING: &str = "error_attaching";

/// Cinder's status for a volume whose delete failed in its backend.
const ERROR_DELETING: &str = "error_deleting";

/// Nova's 400 for a detach while the volume is still attaching, after its
/// attach failed, or while an earlier detach is under way (Cinder's
/// begin_detaching wants it `in-use`).
pub(crate) const DETACH_NOT_IN_USE: &str = "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' to detach.";

/// Injected faults; see [`crate::Faults`] for what each does.
#[derive(Clone, Debug, Default)]
pub(crate) struct FaultState {
    pub mysqld_never_starts: u64,
    pub error_boots: u64,
    pub error_boot_fault: String,
    pub fail_volume_attach: u64,
    pub volume_attach_fails_on_host: u64,
    pub volume_attach_fails_at_once: u64,
    pub volume_attach_errors: u64,
    /// Whether Nova keeps the mapping of such an attach (its server's
    /// deletion then lets go of the volume).
    pub volume_attach_error_kept_by_nova: bool,
    pub error_volumes: u64,
    pub volume_delete_errors: u64,
    pub fail_port_attach: u64,
    pub api_errors: u64,
    pub api_error: Option<CloudError>,
    /// By method: how many of its next calls fail, and with what.
    pub method_errors: BTreeMap<String, (u64, CloudError)>,
    /// `Some(n)`: n more calls pass, then every call hangs.
    pub hang_after: Option<u64>,
    /// Whether a call `hang_after` hangs takes effect first (its answer,
    /// not its request, is what never arrives).
    pub hang_takes_effect: bool,
    pub slow: Duration,
    /// How long a deleted server's ports stay bound after it is gone, and
    /// a detached port after the detach.
    pub slow_port_unbind: Duration,
    pub iops_throttled: bool,
}

/// Whether, and where, the API gate hangs a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hang {
    No,
    /// Before the call takes effect: the cloud never hears of it.
    BeforeEffect,
    /// Once the call took effect: the caller never hears of it.
    AfterEffect,
}

/// What the API gate decided for one call.
pub(crate) struct GateDecision {
    pub hang: Hang,
    pub delay: Duration,
    pub error: Option<CloudError>,
}

/// A server as the test inspection API shows it: the `Server` the cloud
/// reports plus what only the simulator knows.
#[derive(Clone, Debug, PartialEq)]
pub struct SimServer {
    pub server: Server,
    pub flavor: String,
    pub image: String,
    /// Compute host name; `None` for a boot that failed scheduling.
    pub host: Option<String>,
    pub created_at: Instant,
    /// When it turns (or turned) ACTIVE; `None` if it goes ERROR.
    pub active_at: Option<Instant>,
    /// When mysqld answers (or answered); `None` if it never will.
    pub mysqld_ready_at: Option<Instant>,
    /// mysqld answers now.
    pub mysqld_ready: bool,
}

/// What only the HTTP face sets when it creates a server.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServerExtras {
    pub tags: BTreeSet<String>,
    /// Network ids, primary (the one `addr` is shown on) first.
    pub networks: Vec<String>,
    /// Why the compute host cannot make the server's ports (Nova's
    /// `SecurityGroupCannotBeApplied`): the boot is accepted and ends in
    /// ERROR with this fault, as a scheduling failure does.
    pub network_fault: Option<String>,
}

/// Everything the HTTP face shows of a server.
#[derive(Clone, Debug)]
pub(crate) struct ServerDetail {
    pub server: Server,
    /// Boot status, ignoring a deletion in progress (Nova keeps showing the
    /// vm state with task state `deleting` until the server is gone).
    pub boot_status: ServerStatus,
    pub deleting: bool,
    /// Soft-deleted (Nova's SOFT_DELETED), not yet reclaimed.
    pub soft_deleted: bool,
    pub flavor: String,
    pub image: String,
    pub tags: BTreeSet<String>,
    pub networks: Vec<String>,
    pub created_at: Instant,
    pub active_at: Option<Instant>,
    pub host: Option<String>,
    /// The fixed address on the primary network (mysqld greets here).
    pub addr: SocketAddr,
    /// Volumes attaching or attached (Nova's block device mappings).
    pub volume_mappings: Vec<String>,
    /// Ports bound to the server now.
    pub ports: Vec<Port>,
}

/// A volume with what Cinder shows beyond the `Volume` view.
#[derive(Clone, Debug)]
pub(crate) struct VolumeDetail {
    pub volume: Volume,
    pub created_at: Instant,
    /// `None`: the project the cloud's user works in.
    pub project_id: Option<String>,
}

/// A port with what Neutron shows beyond the `Port` view.
#[derive(Clone, Debug)]
pub(crate) struct PortDetail {
    pub port: Port,
    pub created_at: Instant,
    /// Bound or being bound (Nova's os-interface attach is synchronous, so
    /// the HTTP face waits for the binding before answering).
    pub target: Option<String>,
    /// The security groups (ids) its create named; `None`: the project's
    /// default group.
    pub security_groups: Option<Vec<String>>,
}

/// Load of one compute host, for inspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLoad {
    pub name: String,
    pub availability_zone: String,
    pub servers: usize,
    pub building: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Server,
    Volume,
}

pub(crate) struct Model {
    pub cfg: SimConfig,
    pub faults: FaultState,
    pub calls: BTreeMap<&'static str, u64>,
    rng: StdRng,
    seq: u64,
    hosts: Vec<Host>,
    servers: HashMap<String, ServerRec>,
    volumes: HashMap<String, VolumeRec>,
    ports: HashMap<String, PortRec>,
    addr_index: HashMap<SocketAddr, String>,
    /// Deleted objects and when they vanish; popped lazily.
    gone_queue: BinaryHeap<Reverse<(Instant, u64, Kind, String)>>,
    /// Soft-deleted servers and when they are reclaimed; popped lazily.
    reclaim_queue: BinaryHeap<Reverse<(Instant, String)>>,
    /// (network, ip) pairs in use.
    used_ips: HashSet<(String, String)>,
    next_ip: u32,
    /// Per network, the IPv4 subnet Neutron's IPAM hands its ports'
    /// addresses from (the HTTP face's), and how far it got; a network
    /// without one takes them from 10.0.0.10 upward (`next_ip`).
    address_pools: HashMap<String, (ipnet::Ipv4Net, u32)>,
    /// The networks port creates are checked against, by id: each one's
    /// subnet id and range. Empty: none checked.
    networks: HashMap<String, (String, ipnet::Ipv4Net)>,
    next_synthetic: u32,
    bucket: Option<(f64, Instant)>,
}

const GREETING_PORT: u16 = 3306;
/// The network of a server booted through the in-process face, which
/// names none: where Nova makes its port.
pub(crate) const MANAGEMENT_NETWORK: &str = "management";
/// Nova's limit on tags per server.
const MAX_SERVER_TAGS: usize = 50;

/// What servers hold against the compute quotas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ComputeUsage {
    pub instances: usize,
    pub cores: u64,
    pub ram_mb: u64,
}

impl Model {
    pub fn new(cfg: SimConfig) -> Self {
        let hosts = cfg
            .availability_zones
            .iter()
            .flat_map(|az| {
                (0..az.hosts).map(move |i| Host {
                    name: format!("{}-compute-{i}", az.name),
                    az: az.name.clone(),
                    serial_free_at: None,
                })
            })
            .collect();
        let faults = FaultState {
            iops_throttled: cfg.iops_throttled,
            ..FaultState::default()
        };
        let networks = cfg.networks.clone();
        let mut model = Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            faults,
            calls: BTreeMap::new(),
            seq: 0,
            hosts,
            servers: HashMap::new(),
            volumes: HashMap::new(),
            ports: HashMap::new(),
            addr_index: HashMap::new(),
            gone_queue: BinaryHeap::new(),
            reclaim_queue: BinaryHeap::new(),
            used_ips: HashSet::new(),
            next_ip: 0,
            address_pools: HashMap::new(),
            networks: HashMap::new(),
            next_synthetic: 0,
            bucket: None,
            cfg,
        };
        for n in networks {
            model.add_network(&n.id, &n.subnet_id, n.cidr);
        }
        model
    }

    // ---- helpers ------------------------------------------------------------

    /// A simulated duration, jittered and scaled to tokio time.
    pub fn latency(&mut self, base: Duration) -> Duration {
        let jitter = self.cfg.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            1.0 + self.rng.gen_range(-jitter..=jitter)
        } else {
            1.0
        };
        base.mul_f64((factor * self.cfg.time_scale).max(0.0))
    }

    /// Ids come from the seeded generator so that runs are reproducible,
    /// salted (`SimConfig::id_salt`).
    pub(crate) fn new_id(&mut self) -> String {
        let mut bytes: [u8; 16] = self.rng.gen();
        for (byte, salt) in bytes.iter_mut().zip(self.cfg.id_salt.to_le_bytes()) {
            *byte ^= salt;
        }
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Forgets objects whose deletion completed by `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.reclaim_queue.peek() {
            if *at > now {
                break;
            }
            let Reverse((at, id)) = self.reclaim_queue.pop().expect("peeked");
            if self
                .servers
                .get(&id)
                .is_some_and(|s| s.reclaim_at == Some(at))
            {
                self.delete_server(&id, at);
            }
        }
        while let Some(Reverse((at, _, _, _))) = self.gone_queue.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, _, kind, id)) = self.gone_queue.pop().expect("peeked");
            match kind {
                Kind::Server => {
                    if let Some(s) = self.servers.remove(&id) {
                        self.addr_index.remove(&s.addr);
                        // Nova deletes the port it made once the server is gone.
                        if let Some(port) = s.nova_port {
                            self.ports.remove(&port);
                        }
                    }
                }
                Kind::Volume => {
                    self.volumes.remove(&id);
                }
            }
        }
    }

    fn az_known(&self, az: &str) -> bool {
        self.cfg.availability_zones.iter().any(|a| a.name == az)
    }

    fn synthetic_addr(&mut self) -> SocketAddr {
        // 127.1.0.1, 127.1.0.2, ...: unique, never opened.
        self.next_synthetic += 1;
        let ip = Ipv4Addr::from(0x7f01_0000u32 + self.next_synthetic);
        SocketAddr::from((ip, GREETING_PORT))
    }

    fn server_view(&self, s: &ServerRec, now: Instant) -> Server {
        let status = s.shown_status(now);
        let attached_volumes = s
            .volumes
            .iter()
            .filter(|v| {
                self.volumes.get(*v).is_some_and(|vol| {
                    let st = vol.state.at(now);
                    st.status == VolumeStatus::InUse && st.server.as_deref() == Some(&s.id)
                })
            })
            .cloned()
            .collect();
        let attached_ports = s
            .ports
            .iter()
            .filter(|p| {
                self.ports
                    .get(*p)
                    .is_some_and(|port| port.binding.at(now).as_deref() == Some(&s.id))
            })
            .cloned()
            .collect();
        Server {
            id: s.id.clone(),
            name: s.name.clone(),
            status,
            availability_zone: s.az.clone(),
            metadata: s.metadata.clone(),
            // The guest has an address once it is running.
            mysql_addr: (status == ServerStatus::Active).then_some(s.addr),
            fault: match (&s.boot, status) {
                (Boot::Error { fault, .. }, ServerStatus::Error) => Some(fault.clone()),
                _ => None,
            },
            attached_volumes,
            attached_ports,
            deleting: s.gone_at.is_some(),
            busy: s.task_state.clone().filter(|_| s.gone_at.is_none()),
            locked: false,
        }
    }

    fn sim_server(&self, s: &ServerRec, now: Instant) -> SimServer {
        let (active_at, mysqld_ready_at) = match &s.boot {
            Boot::Active {
                active_at,
                mysqld_ready_at,
            } => (Some(*active_at), *mysqld_ready_at),
            Boot::Error { .. } => (None, None),
        };
        SimServer {
            server: self.server_view(s, now),
            flavor: s.flavor.clone(),
            image: s.image.clone(),
            host: s.host.map(|h| self.hosts[h].name.clone()),
            created_at: s.created_at,
            active_at,
            mysqld_ready_at,
            mysqld_ready: s.mysqld_ready(now),
        }
    }

    fn live_server(&self, id: &str) -> CloudResult<&ServerRec> {
        self.servers
            .get(id)
            .ok_or_else(|| CloudError::NotFound(format!("server {id}")))
    }

    // ---- API gate -----------------------------------------------------------

    /// Counts the call and applies the call-level faults and rate limit.
    pub fn enter(&mut self, method: &'static str, now: Instant) -> GateDecision {
        *self.calls.entry(method).or_default() += 1;
        let mut hang = Hang::No;
        if let Some(left) = self.faults.hang_after {
            if left > 0 {
                self.faults.hang_after = Some(left - 1);
            } else if self.faults.hang_takes_effect {
                hang = Hang::AfterEffect;
            } else {
                return GateDecision {
                    hang: Hang::BeforeEffect,
                    delay: Duration::ZERO,
                    error: None,
                };
            }
        }
        let delay = self.faults.slow + self.cfg.scaled(self.cfg.latencies.api_call);
        let error = if self.faults.api_errors > 0 {
            self.faults.api_errors -= 1;
            self.faults.api_error.clone()
        } else if let Some(error) = self.method_error(method) {
            Some(error)
        } else {
            self.rate_limited(now)
        };
        GateDecision { hang, delay, error }
    }

    /// The error [`crate::Faults::fail_next_calls_of`] armed for this call
    /// of `method`, if any is left.
    fn method_error(&mut self, method: &str) -> Option<CloudError> {
        let (left, error) = self.faults.method_errors.get_mut(method)?;
        let error = error.clone();
        *left -= 1;
        if *left == 0 {
            self.faults.method_errors.remove(method);
        }
        Some(error)
    }

    fn rate_limited(&mut self, now: Instant) -> Option<CloudError> {
        let limit = self.cfg.rate_limit.clone()?;
        // Tokens per tokio second: the limit is in simulated time.
        let rate = limit.per_second / self.cfg.time_scale.max(1e-9);
        let burst = f64::from(limit.burst.max(1));
        let (tokens, last) = self.bucket.unwrap_or((burst, now));
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(burst);
        if tokens >= 1.0 {
            self.bucket = Some((tokens - 1.0, now));
            None
        } else {
            self.bucket = Some((tokens, now));
            Some(CloudError::Throttled {
                retry_after: Some(Duration::from_secs_f64((1.0 - tokens) / rate)),
                message: "Rate limit exceeded (simulated 429)".into(),
                unavailable: false,
            })
        }
    }

    // ---- servers ------------------------------------------------------------

    /// Whether servers of `pool`'s flavor can boot in its zone, by the
    /// configuration (Nova's 404 wording for the zone). A missing flavor
    /// is named beside those the cloud has, as the OpenStack driver names
    /// it: this is what the embedded cloud's CreatePool and start-up answer
    /// a demo's user, who has no `openstack flavor list` to turn to.
    pub fn check_boot_placement(&self, pool: &PoolKey) -> CloudResult<()> {
        if self.cfg.flavor_spec(&pool.flavor).is_none() {
            let names: BTreeSet<String> = self
                .cfg
                .flavor_specs()
                .into_iter()
                .map(|f| f.name)
                .collect();
            return Err(CloudError::NotFound(format!(
                "no flavor named '{}' in the simulated cloud (its flavors: {})",
                pool.flavor,
                some_names(&names.into_iter().collect::<Vec<_>>())
            )));
        }
        if !self.cfg.zone_takes_servers(&pool.availability_zone) {
            return Err(CloudError::NotFound(format!(
                "Availability zone {} could not be found.",
                pool.availability_zone
            )));
        }
        Ok(())
    }

    /// Flavor `name`'s disk IOPS limit as its extra specs tell it, by the
    /// configuration: `NotFound` for a flavor the cloud lacks (named as
    /// [`Self::check_boot_placement`] names it), `Unknown` while the
    /// policy hides extra specs.
    pub fn flavor_disk_iops(&self, name: &str) -> CloudResult<FlavorIops> {
        let Some(flavor) = self.cfg.flavor_spec(name) else {
            return Err(CloudError::NotFound(format!(
                "no flavor named '{name}' in the simulated cloud"
            )));
        };
        if self.cfg.flavor_extra_specs_hidden {
            return Ok(FlavorIops::Unknown(format!(
                "the simulated cloud's policy hides flavor {name}'s extra specs"
            )));
        }
        Ok(extra_specs_iops(&flavor.extra_specs))
    }

    /// Whether Cinder has `zone`, by the configuration (Cinder's 400
    /// wording for a volume created there), and takes volumes there.
    /// Cinder's zones are the cloud's, Nova's closed ones too.
    pub fn check_volume_zone(&self, zone: &str) -> CloudResult<()> {
        if !self.cfg.availability_zones.iter().any(|a| a.name == zone) {
            return Err(CloudError::NotFound(format!(
                "Availability zone '{zone}' is invalid."
            )));
        }
        if self.cfg.closed_volume_zones.iter().any(|z| z == zone) {
            return Err(CloudError::NotFound(format!(
                "Availability zone '{zone}' is unavailable: its volume services are down or disabled."
            )));
        }
        Ok(())
    }

    /// Whether servers can boot from `image`, by the configuration (named
    /// as [`Self::check_boot_placement`] names a flavor).
    pub fn check_boot_image(&self, image: &str) -> CloudResult<()> {
        if !self.cfg.images.iter().any(|i| i == image) {
            let names: BTreeSet<String> = self.cfg.images.iter().cloned().collect();
            return Err(CloudError::NotFound(format!(
                "no image named '{image}' in the simulated cloud (its images: {})",
                some_names(&names.into_iter().collect::<Vec<_>>())
            )));
        }
        Ok(())
    }

    /// Headroom is the tightest of instances left and, when those quotas are
    /// set, cores and RAM left divided by the flavor's size. A flavor one
    /// server of which needs more than a quota in all (an instances quota of
    /// 0 included) is beyond it, as the driver reads Nova's `/limits`.
    pub fn boot_headroom(&self, flavor: &str) -> CloudResult<BootHeadroom> {
        let Some(size) = self.cfg.flavor_spec(flavor) else {
            return Err(CloudError::NotFound(format!(
                "Flavor {flavor} could not be found."
            )));
        };
        let quotas = self.compute_quota_rows(&size).into_iter().chain([
            // A server's own port, and the tenant's it takes when sold.
            (
                PORTS,
                (self.cfg.quotas.max_ports != Quotas::UNLIMITED)
                    .then_some(self.cfg.quotas.max_ports as u64),
                self.ports.len() as u64,
                PORTS_PER_SERVER,
            ),
        ]);
        let (mut servers, mut limited_by) = (u64::MAX, String::new());
        let mut left_of = Vec::new();
        for (what, limit, used, each) in quotas {
            if let Some(limit) = limit {
                let unit = if what == "ram" { " MiB" } else { "" };
                if each > limit {
                    return Ok(BootHeadroom::beyond_quota(format!(
                        "{what}: one {flavor} server needs {each}{unit}, the quota is {limit}{unit}"
                    )));
                }
                left_of.push(QuotaLeft::new(what, limit.saturating_sub(used), each));
                let left = limit.saturating_sub(used) / each.max(1);
                if left < servers {
                    servers = left;
                    limited_by = format!("{what}: {used} of {limit} used");
                }
            }
        }
        Ok(BootHeadroom::room(servers, limited_by).with_quotas(left_of))
    }

    /// Instances, vCPUs and RAM held by servers; servers being deleted count
    /// until they are gone, as in Nova. A soft-deleted one counts in none
    /// (Nova's quota counting, `_get_counts_in_db`, leaves vm_state
    /// soft-delete out; only `[quota] count_usage_from_placement` would
    /// keep its cores and RAM), its ports still Neutron's until the reclaim.
    pub fn compute_usage(&self) -> ComputeUsage {
        let mut usage = ComputeUsage::default();
        for s in self.servers.values().filter(|s| s.reclaim_at.is_none()) {
            usage.instances += 1;
            if let Some(f) = self.cfg.flavor_spec_even_retired(&s.flavor) {
                usage.cores += u64::from(f.vcpus);
                usage.ram_mb += f.ram_mb;
            }
        }
        usage
    }

    /// Nova's compute quotas as (name, limit if set, used, one server of
    /// `size`'s need), in the order Nova checks them.
    fn compute_quota_rows(&self, size: &FlavorSpec) -> [(&'static str, Option<u64>, u64, u64); 3] {
        let usage = self.compute_usage();
        [
            (
                "instances",
                Some(self.cfg.quotas.max_instances as u64),
                usage.instances as u64,
                1,
            ),
            (
                "cores",
                self.cfg.max_cores,
                usage.cores,
                u64::from(size.vcpus),
            ),
            ("ram", self.cfg.max_ram_mb, usage.ram_mb, size.ram_mb),
        ]
    }

    /// Nova's quota check of one more server of `size` (a create, a
    /// restore): instances, then cores and RAM, in Nova's words, e.g.
    /// "Quota exceeded for cores: Requested 64, but already used 2 of 20
    /// cores".
    fn check_compute_quotas(&self, size: &FlavorSpec) -> CloudResult<()> {
        for (what, limit, used, each) in self.compute_quota_rows(size) {
            if let Some(limit) = limit {
                if used + each > limit {
                    return Err(CloudError::QuotaExceeded(format!(
                        "Quota exceeded for {what}: Requested {each}, but already used {used} of {limit} {what}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Places and starts a boot. `addr` is the reserved listener address, if
    /// the face opens real sockets. Returns the view and when mysqld is ready.
    pub fn create_server(
        &mut self,
        spec: &ServerSpec,
        now: Instant,
        addr: Option<SocketAddr>,
    ) -> CloudResult<(Server, Option<Instant>)> {
        self.create_server_ext(spec, ServerExtras::default(), now, addr)
    }

    /// [`Model::create_server`] with what only the HTTP face sets.
    pub fn create_server_ext(
        &mut self,
        spec: &ServerSpec,
        extras: ServerExtras,
        now: Instant,
        addr: Option<SocketAddr>,
    ) -> CloudResult<(Server, Option<Instant>)> {
        let az = &spec.pool.availability_zone;
        let Some(size) = self.cfg.flavor_spec(&spec.pool.flavor) else {
            return Err(CloudError::Fatal(format!(
                "Flavor {} could not be found",
                spec.pool.flavor
            )));
        };
        if !self.cfg.images.contains(&spec.image) {
            return Err(CloudError::Fatal(format!(
                "Image {} could not be found",
                spec.image
            )));
        }
        if !self.cfg.zone_takes_servers(az) {
            return Err(CloudError::Fatal(format!(
                "The requested availability zone is not available: {az}"
            )));
        }
        // Nova checks the port quota first (validating the networks), and
        // says so in its LimitExceeded family's words.
        if self.ports.len() >= self.cfg.quotas.max_ports {
            return Err(CloudError::QuotaExceeded(
                "Maximum number of ports exceeded".to_string(),
            ));
        }
        self.check_compute_quotas(&size)?;

        let (host, boot) = if let Some(fault) = extras.network_fault.clone() {
            let at = now + self.latency(self.cfg.boot.error_after);
            (None, Boot::Error { at, fault })
        } else if self.faults.error_boots > 0 {
            self.faults.error_boots -= 1;
            let at = now + self.latency(self.cfg.boot.error_after);
            let fault = self.faults.error_boot_fault.clone();
            (None, Boot::Error { at, fault })
        } else {
            let host = self.least_loaded_host(az, now);
            let bm = self.cfg.boot.clone();
            let throttled = self.faults.iops_throttled;
            let nova_factor = if throttled {
                bm.throttled_nova_factor
            } else {
                1.0
            };
            let mut mysqld = bm.mysqld_start;
            if throttled {
                mysqld = mysqld.mul_f64(bm.throttled_mysqld_factor);
            }
            // The boot first queues for the host's serialized section, holds
            // it for k, then spends the rest of t_alone in parallel with others.
            let section = self.latency(bm.k_per_concurrent.mul_f64(nova_factor));
            let parallel = self.latency(
                bm.t_alone
                    .saturating_sub(bm.k_per_concurrent)
                    .mul_f64(nova_factor),
            );
            let section_start = self.hosts[host].serial_free_at.map_or(now, |t| t.max(now));
            self.hosts[host].serial_free_at = Some(section_start + section);
            let nova = section_start + section + parallel - now;
            let active_at = now + nova;
            let mysqld_ready_at = if self.faults.mysqld_never_starts > 0 {
                self.faults.mysqld_never_starts -= 1;
                None
            } else {
                Some(active_at + self.latency(mysqld))
            };
            (
                Some(host),
                Boot::Active {
                    active_at,
                    mysqld_ready_at,
                },
            )
        };
        let ready_at = match &boot {
            Boot::Active {
                mysqld_ready_at, ..
            } => *mysqld_ready_at,
            Boot::Error { .. } => None,
        };
        let scheduled = host.is_some();
        let id = self.insert_server(spec, now, host, boot, addr);
        let network = extras
            .networks
            .first()
            .cloned()
            .unwrap_or_else(|| MANAGEMENT_NETWORK.to_string());
        if let Some(s) = self.servers.get_mut(&id) {
            s.tags = extras.tags;
            s.networks = extras.networks;
        }
        // A server that failed scheduling never got a network.
        if scheduled {
            self.add_nova_port(&id, network, now);
        }
        let view = self.server_view(&self.servers[&id], now);
        Ok((view, ready_at))
    }

    fn insert_server(
        &mut self,
        spec: &ServerSpec,
        now: Instant,
        host: Option<usize>,
        boot: Boot,
        addr: Option<SocketAddr>,
    ) -> String {
        let id = self.new_id();
        let seq = self.next_seq();
        let addr = addr.unwrap_or_else(|| self.synthetic_addr());
        self.addr_index.insert(addr, id.clone());
        self.servers.insert(
            id.clone(),
            ServerRec {
                seq,
                id: id.clone(),
                name: spec.name.clone(),
                az: spec.pool.availability_zone.clone(),
                flavor: spec.pool.flavor.clone(),
                image: spec.image.clone(),
                metadata: spec.metadata.clone(),
                host,
                created_at: now,
                boot,
                addr,
                gone_at: None,
                reclaim_at: None,
                task_state: None,
                volumes: BTreeSet::new(),
                ports: BTreeSet::new(),
                listener: None,
                tags: BTreeSet::new(),
                networks: Vec::new(),
                nova_port: None,
            },
        );
        id
    }

    /// The port Nova makes for server `id` on `network` as it boots it: no
    /// name, bound to the server, at the server's address, the project's.
    /// Its id is derived from the server's, not drawn from the seeded
    /// random stream the latencies come from: a replay's boots and purchases
    /// then see the same latencies whether servers get ports or not.
    fn add_nova_port(&mut self, id: &str, network: String, now: Instant) {
        let port_id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id.as_bytes()).to_string();
        let seq = self.next_seq();
        let ip = self.servers.get(id).map(|s| s.addr.ip().to_string());
        self.ports.insert(
            port_id.clone(),
            PortRec {
                seq,
                id: port_id.clone(),
                name: String::new(),
                network_id: network,
                ip,
                created_at: now,
                binding: Timed::settled(Some(id.to_string())),
                by_nova: true,
                security_groups: None,
            },
        );
        if let Some(s) = self.servers.get_mut(id) {
            s.nova_port = Some(port_id);
        }
    }

    /// Nova's scheduler stand-in: fewest boots in progress, then fewest
    /// servers, then the first host.
    fn least_loaded_host(&self, az: &str, now: Instant) -> usize {
        let mut load: HashMap<usize, (usize, usize)> = HashMap::new();
        for s in self.servers.values() {
            if let (Some(h), None) = (s.host, s.gone_at) {
                let e = load.entry(h).or_default();
                e.0 += usize::from(s.building(now));
                e.1 += 1;
            }
        }
        (0..self.hosts.len())
            .filter(|&h| self.hosts[h].az == az)
            .min_by_key(|h| (load.get(h).copied().unwrap_or_default(), *h))
            .expect("an availability zone with no hosts")
    }

    /// A server with warmpool metadata that nobody asked for: ACTIVE and ready.
    pub fn inject_leak(
        &mut self,
        pool: &PoolKey,
        now: Instant,
        addr: Option<SocketAddr>,
    ) -> String {
        let instance = self.new_id();
        let mut metadata = BTreeMap::new();
        metadata.insert(META_POOL.to_string(), pool.to_string());
        metadata.insert(META_INSTANCE.to_string(), instance);
        let spec = ServerSpec {
            name: format!("leak-{pool}"),
            pool: pool.clone(),
            image: self.cfg.images.first().cloned().unwrap_or_default(),
            metadata,
        };
        let host = self
            .cfg
            .availability_zones
            .iter()
            .any(|a| a.name == pool.availability_zone && a.hosts > 0)
            .then(|| self.least_loaded_host(&pool.availability_zone, now));
        let boot = Boot::Active {
            active_at: now,
            mysqld_ready_at: Some(now),
        };
        self.insert_server(&spec, now, host, boot, addr)
    }

    pub fn set_listener(&mut self, server_id: &str, guard: ListenerGuard) {
        // If the server was deleted meanwhile, dropping the guard stops it.
        if let Some(s) = self.servers.get_mut(server_id) {
            if s.gone_at.is_none() {
                s.listener = Some(guard);
            }
        }
    }

    pub fn get_server(&self, id: &str, now: Instant) -> CloudResult<Server> {
        Ok(self.server_view(self.live_server(id)?, now))
    }

    /// Servers not being deleted, oldest first.
    fn sorted_servers(&self) -> Vec<&ServerRec> {
        let mut v: Vec<_> = self
            .servers
            .values()
            .filter(|s| s.gone_at.is_none())
            .collect();
        v.sort_by_key(|s| s.seq);
        v
    }

    /// Every server Nova lists: those being deleted too, until they are
    /// gone. Oldest first.
    fn listed_servers(&self) -> Vec<&ServerRec> {
        let mut v: Vec<_> = self.servers.values().collect();
        v.sort_by_key(|s| s.seq);
        v
    }

    pub fn list_pool_servers(&self, now: Instant) -> Vec<Server> {
        self.listed_servers()
            .into_iter()
            .filter(|s| s.metadata.contains_key(META_POOL))
            .map(|s| self.server_view(s, now))
            .collect()
    }

    pub fn sim_servers(&self, now: Instant) -> Vec<SimServer> {
        self.sorted_servers()
            .into_iter()
            .map(|s| self.sim_server(s, now))
            .collect()
    }

    pub fn sim_server_by_id(&self, id: &str, now: Instant) -> Option<SimServer> {
        self.servers.get(id).map(|s| self.sim_server(s, now))
    }

    fn server_detail_of(&self, s: &ServerRec, now: Instant) -> ServerDetail {
        let boot_status = match &s.boot {
            Boot::Active { active_at, .. } if now >= *active_at => ServerStatus::Active,
            Boot::Error { at, .. } if now >= *at => ServerStatus::Error,
            _ => ServerStatus::Build,
        };
        let volume_mappings = s
            .volumes
            .iter()
            .filter(|v| {
                self.volumes
                    .get(*v)
                    .is_some_and(|vol| vol.listed_on(now) == Some(s.id.as_str()))
            })
            .cloned()
            .collect();
        let ports = s
            .ports
            .iter()
            .filter_map(|p| self.ports.get(p))
            .filter(|p| p.binding.at(now).as_deref() == Some(s.id.as_str()))
            .map(|p| p.view(now))
            .collect();
        ServerDetail {
            server: self.server_view(s, now),
            boot_status,
            deleting: s.gone_at.is_some(),
            soft_deleted: s.reclaim_at.is_some(),
            flavor: s.flavor.clone(),
            image: s.image.clone(),
            tags: s.tags.clone(),
            networks: s.networks.clone(),
            created_at: s.created_at,
            active_at: match &s.boot {
                Boot::Active { active_at, .. } => Some(*active_at),
                Boot::Error { .. } => None,
            },
            host: s.host.map(|h| self.hosts[h].name.clone()),
            addr: s.addr,
            volume_mappings,
            ports,
        }
    }

    /// One server (also while it is being deleted), as the HTTP face shows it.
    pub fn server_detail(&self, id: &str, now: Instant) -> Option<ServerDetail> {
        self.servers.get(id).map(|s| self.server_detail_of(s, now))
    }

    /// Every server Nova lists (those being deleted too), oldest first.
    pub fn server_details(&self, now: Instant) -> Vec<ServerDetail> {
        self.listed_servers()
            .into_iter()
            .map(|s| self.server_detail_of(s, now))
            .collect()
    }

    /// Adds a tag; `Ok(true)` if it was new. Nova allows 50 tags a server.
    pub fn add_server_tag(&mut self, id: &str, tag: &str) -> CloudResult<bool> {
        let s = self
            .servers
            .get_mut(id)
            .ok_or_else(|| CloudError::NotFound(format!("server {id}")))?;
        if s.tags.contains(tag) {
            return Ok(false);
        }
        if s.tags.len() >= MAX_SERVER_TAGS {
            return Err(CloudError::Fatal(format!(
                "The number of tags exceeded the per-server limit {MAX_SERVER_TAGS}"
            )));
        }
        s.tags.insert(tag.to_string());
        Ok(true)
    }

    /// The server a volume is attaching or attached to, as of `now`.
    pub fn volume_server(&self, volume_id: &str, now: Instant) -> Option<String> {
        self.volumes
            .get(volume_id)
            .and_then(|v| v.attached_server(now))
            .map(str::to_string)
    }

    /// The server that lists the volume as of `now`: [`Self::volume_server`],
    /// or the one it is still detaching from.
    pub fn volume_listed_on(&self, volume_id: &str, now: Instant) -> Option<String> {
        self.volumes
            .get(volume_id)
            .and_then(|v| v.listed_on(now))
            .map(str::to_string)
    }

    pub fn volume_detail(&self, id: &str, now: Instant) -> Option<VolumeDetail> {
        self.volumes.get(id).map(|v| VolumeDetail {
            volume: v.view(now),
            created_at: v.created_at,
            project_id: v.project_id.clone(),
        })
    }

    /// Volumes not being deleted, oldest first, with Cinder's extra fields.
    pub fn volume_details(&self, now: Instant) -> Vec<VolumeDetail> {
        self.sorted_volumes()
            .into_iter()
            .map(|v| VolumeDetail {
                volume: v.view(now),
                created_at: v.created_at,
                project_id: v.project_id.clone(),
            })
            .collect()
    }

    /// Volumes and gigabytes the cloud user's project holds (deleting
    /// volumes count until gone). Cinder keeps quota per project: other
    /// projects' volumes (tenants') take none of it.
    pub fn volume_usage(&self) -> (usize, u64) {
        let own = self.volumes.values().filter(|v| v.project_id.is_none());
        own.fold((0, 0), |(n, gigabytes), v| {
            (n + 1, gigabytes + u64::from(v.size_gib))
        })
    }

    fn port_detail_of(p: &PortRec, now: Instant) -> PortDetail {
        PortDetail {
            port: p.view(now),
            created_at: p.created_at,
            target: p.target().map(str::to_string),
            security_groups: p.security_groups.clone(),
        }
    }

    pub fn port_detail(&self, id: &str, now: Instant) -> Option<PortDetail> {
        self.ports.get(id).map(|p| Self::port_detail_of(p, now))
    }

    /// All ports, oldest first, with Neutron's extra fields.
    pub fn port_details(&self, now: Instant) -> Vec<PortDetail> {
        self.sorted_ports()
            .into_iter()
            .map(|p| Self::port_detail_of(p, now))
            .collect()
    }

    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    pub fn host_loads(&self, now: Instant) -> Vec<HostLoad> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let on_host = || {
                    self.servers
                        .values()
                        .filter(move |s| s.host == Some(i) && s.gone_at.is_none())
                };
                HostLoad {
                    name: h.name.clone(),
                    availability_zone: h.az.clone(),
                    servers: on_host().count(),
                    building: on_host().filter(|s| s.building(now)).count(),
                }
            })
            .collect()
    }

    /// Starts tearing a server down. Its mysqld stops at once. As in Nova,
    /// whose delete waits on the instance lock for an attach in progress,
    /// a volume still attaching finishes its attach first; attached volumes
    /// stay `in-use` until the server is gone (Cinder's attachment is
    /// deleted last), then are `available`. Ports are unbound when it is gone.
    pub fn delete_server(&mut self, id: &str, now: Instant) {
        let Some(s) = self.servers.get(id) else {
            return;
        };
        if s.gone_at.is_some() {
            return;
        }
        let attach_done = s
            .volumes
            .iter()
            .filter_map(|vid| self.volumes.get(vid))
            .filter(|v| v.attached_server(now) == Some(id))
            .filter_map(|v| v.state.pending_until(now))
            .max()
            .unwrap_or(now);
        let gone_at = attach_done + self.latency(self.cfg.latencies.delete);
        let s = self.servers.get_mut(id).expect("checked above");
        s.gone_at = Some(gone_at);
        s.listener = None;
        let seq = s.seq;
        let volumes = std::mem::take(&mut s.volumes);
        let ports = std::mem::take(&mut s.ports);
        let released = VolState {
            status: VolumeStatus::Available,
            server: None,
        };
        for vid in volumes {
            if let Some(vol) = self.volumes.get_mut(&vid) {
                if vol.attached_server(now) != Some(id) {
                    continue;
                }
                if vol.state.pending(now) {
                    vol.state.and_then(gone_at, released.clone());
                } else {
                    // As it is (in-use, or error_attaching) until then.
                    let shown = vol.state.at(now).clone();
                    vol.state.start(shown, gone_at, released.clone());
                }
            }
        }
        for pid in ports {
            if let Some(port) = self.ports.get_mut(&pid) {
                if port.target() == Some(id) {
                    let shown = port.binding.at(now).clone();
                    let unbound_at = gone_at + self.faults.slow_port_unbind;
                    port.binding.start(shown, unbound_at, None);
                }
            }
        }
        self.gone_queue
            .push(Reverse((gone_at, seq, Kind::Server, id.to_string())));
    }

    /// Whether mysqld behind `addr` answers at `now` (for `SimProbe`).
    pub fn mysqld_ready_at_addr(&self, addr: SocketAddr, now: Instant) -> bool {
        self.addr_index
            .get(&addr)
            .and_then(|id| self.servers.get(id))
            .is_some_and(|s| s.mysqld_ready(now))
    }

    // ---- volumes ------------------------------------------------------------

    pub fn create_volume(&mut self, spec: &NewVolumeSpec, now: Instant) -> CloudResult<Volume> {
        if !self.az_known(&spec.availability_zone) {
            return Err(CloudError::Fatal(format!(
                "Availability zone '{}' is invalid",
                spec.availability_zone
            )));
        }
        if let Some(t) = spec
            .volume_type
            .as_ref()
            .filter(|t| !self.cfg.volume_types.contains(t))
        {
            // Cinder's 404 (VolumeTypeNotFoundByName).
            return Err(CloudError::NotFound(format!(
                "Volume type with name {t} could not be found."
            )));
        }
        // Cinder checks the per-volume limit first (QuotaReserveTask).
        if let Some(limit) = self
            .cfg
            .quotas
            .max_gigabytes_per_volume
            .filter(|limit| u64::from(spec.size_gib) > *limit)
        {
            // Cinder's 413 (VolumeSizeExceedsLimit).
            return Err(CloudError::QuotaExceeded(format!(
                "VolumeSizeExceedsLimit: Requested volume size {}G is larger than maximum allowed limit {limit}G.",
                spec.size_gib
            )));
        }
        let (volumes, consumed) = self.volume_usage();
        let max_gb = self.cfg.quotas.max_gigabytes;
        if consumed + u64::from(spec.size_gib) > max_gb {
            // Cinder's 413 (VolumeSizeExceedsAvailableQuota).
            return Err(CloudError::QuotaExceeded(format!(
                "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested {}G, quota is {max_gb}G and {consumed}G has been consumed.",
                spec.size_gib
            )));
        }
        if volumes >= self.cfg.quotas.max_volumes {
            // Cinder's wording (its 413 body carries exactly this message).
            return Err(CloudError::QuotaExceeded(format!(
                "VolumeLimitExceeded: Maximum number of volumes allowed ({}) exceeded for quota 'volumes'.",
                self.cfg.quotas.max_volumes
            )));
        }
        let done = now + self.latency(self.cfg.latencies.volume_create);
        let mut state = Timed::settled(VolState {
            status: VolumeStatus::Creating,
            server: None,
        });
        let outcome = if self
            .cfg
            .closed_volume_zones
            .contains(&spec.availability_zone)
        {
            // Cinder's API takes the zone; its scheduler finds no backend.
            VolumeStatus::Error
        } else if self.faults.error_volumes > 0 {
            // An injected backend failure: the volume ends in `error`, as
            // when cinder-volume cannot allocate it.
            self.faults.error_volumes -= 1;
            VolumeStatus::Error
        } else {
            VolumeStatus::Available
        };
        state.next = Some((
            done,
            VolState {
                status: outcome,
                server: None,
            },
        ));
        let id = self.insert_volume(spec, None, state, now);
        Ok(self.volumes[&id].view(now))
    }

    /// A volume of `project` (`None`: the cloud user's own, where every
    /// create through either face goes).
    fn insert_volume(
        &mut self,
        spec: &NewVolumeSpec,
        project_id: Option<String>,
        state: Timed<VolState>,
        now: Instant,
    ) -> String {
        let id = self.new_id();
        let seq = self.next_seq();
        self.volumes.insert(
            id.clone(),
            VolumeRec {
                seq,
                id: id.clone(),
                name: spec.name.clone(),
                az: spec.availability_zone.clone(),
                size_gib: spec.size_gib,
                project_id,
                metadata: spec.metadata.clone(),
                created_at: now,
                state,
                gone_at: None,
                snapshots: 0,
                volume_type: spec
                    .volume_type
                    .clone()
                    .unwrap_or_else(|| DEFAULT_VOLUME_TYPE.into()),
                multiattach: false,
                also_attached: Vec::new(),
            },
        );
        id
    }

    /// A tenant's existing volume, already `available` (no API call).
    pub fn create_volume_for_test(&mut self, project: &str, az: &str, size_gib: u32) -> String {
        self.insert_volume_for_test(project, az, size_gib, None)
    }

    /// One of warmpool's own project, untagged, already `available` (no
    /// API call).
    pub fn create_own_volume_for_test(&mut self, az: &str, size_gib: u32) -> String {
        let n = self.seq + 1;
        let spec = NewVolumeSpec {
            name: format!("own-volume-{n}"),
            size_gib,
            volume_type: None,
            availability_zone: az.to_string(),
            metadata: BTreeMap::new(),
        };
        self.insert_volume(
            &spec,
            None,
            Timed::settled(VolState {
                status: VolumeStatus::Available,
                server: None,
            }),
            Instant::now(),
        )
    }

    /// The same, of `volume_type`, a multiattach type.
    pub fn create_multiattach_volume_for_test(
        &mut self,
        project: &str,
        az: &str,
        size_gib: u32,
        volume_type: &str,
    ) -> String {
        let id = self.insert_volume_for_test(project, az, size_gib, Some(volume_type));
        self.volumes.get_mut(&id).expect("just made").multiattach = true;
        id
    }

    fn insert_volume_for_test(
        &mut self,
        project: &str,
        az: &str,
        size_gib: u32,
        volume_type: Option<&str>,
    ) -> String {
        let n = self.seq + 1;
        let spec = NewVolumeSpec {
            name: format!("tenant-volume-{n}"),
            size_gib,
            volume_type: volume_type.map(Into::into),
            availability_zone: az.to_string(),
            metadata: BTreeMap::new(),
        };
        self.insert_volume(
            &spec,
            Some(project.to_string()),
            Timed::settled(VolState {
                status: VolumeStatus::Available,
                server: None,
            }),
            Instant::now(),
        )
    }

    /// Makes a volume `in-use` by a server outside warmpool's view.
    pub fn attach_volume_elsewhere(&mut self, volume_id: &str) -> CloudResult<String> {
        let other = format!("tenant-server-{}", self.new_id());
        let vol = self
            .volumes
            .get_mut(volume_id)
            .ok_or_else(|| CloudError::NotFound(format!("volume {volume_id}")))?;
        vol.state = Timed::settled(VolState {
            status: VolumeStatus::InUse,
            server: Some(other.clone()),
        });
        Ok(other)
    }

    /// An admin retypes the volume to `volume_type`, a multiattach type,
    /// and a server outside warmpool's view attaches it, beside whatever
    /// it is attached or attaching to. Returns that server's id, which
    /// `detach_volume` accepts.
    pub fn attach_volume_elsewhere_too(
        &mut self,
        volume_id: &str,
        volume_type: &str,
    ) -> CloudResult<String> {
        let other = format!("tenant-server-{}", self.new_id());
        let vol = self
            .volumes
            .get_mut(volume_id)
            .filter(|v| v.gone_at.is_none())
            .ok_or_else(|| CloudError::NotFound(format!("volume {volume_id}")))?;
        vol.volume_type = volume_type.into();
        vol.multiattach = true;
        vol.also_attached.push(other.clone());
        Ok(other)
    }

    /// Sets how many snapshots the volume has; false when there is no
    /// such volume.
    pub fn set_volume_snapshots(&mut self, volume_id: &str, snapshots: u32) -> bool {
        match self.volumes.get_mut(volume_id) {
            Some(vol) if vol.gone_at.is_none() => {
                vol.snapshots = snapshots;
                true
            }
            _ => false,
        }
    }

    /// An admin resets a volume Cinder keeps `error_attaching` (`openstack
    /// volume set --state available`): it is `available`, attached to
    /// nothing. False when there is no such volume, or it is not so.
    pub fn reset_error_attaching(&mut self, volume_id: &str, now: Instant) -> bool {
        self.reset_volume_state(volume_id, ERROR_ATTACHING, now)
    }

    /// The same for a volume Cinder keeps `error_deleting`.
    pub fn reset_error_deleting(&mut self, volume_id: &str, now: Instant) -> bool {
        self.reset_volume_state(volume_id, ERROR_DELETING, now)
    }

    fn reset_volume_state(&mut self, volume_id: &str, stuck: &str, now: Instant) -> bool {
        match self.volumes.get_mut(volume_id) {
            Some(vol)
                if vol.gone_at.is_none()
                    && !vol.state.pending(now)
                    && vol.state.at(now).status == VolumeStatus::Other(stuck.into()) =>
            {
                vol.state = Timed::settled(VolState {
                    status: VolumeStatus::Available,
                    server: None,
                });
                true
            }
            _ => false,
        }
    }

    pub fn get_volume(&self, id: &str, now: Instant) -> CloudResult<Volume> {
        self.volumes
            .get(id)
            .map(|v| v.view(now))
            .ok_or_else(|| CloudError::NotFound(format!("volume {id}")))
    }

    /// Cinder's `POST /volumes/{id}/metadata`: the keys given are set, the
    /// others kept. A volume being deleted is refused as Cinder refuses
    /// any change of one.
    pub fn set_volume_metadata(
        &mut self,
        id: &str,
        metadata: &BTreeMap<String, String>,
        now: Instant,
    ) -> CloudResult<()> {
        let vol = self
            .volumes
            .get_mut(id)
            .filter(|v| v.gone_at.is_none_or(|gone| gone > now))
            .ok_or_else(|| CloudError::NotFound(format!("volume {id}")))?;
        if vol.gone_at.is_some() {
            return Err(CloudError::Conflict(format!(
                "volume {id} is being deleted"
            )));
        }
        vol.metadata
            .extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    fn sorted_volumes(&self) -> Vec<&VolumeRec> {
        let mut v: Vec<_> = self
            .volumes
            .values()
            .filter(|v| v.gone_at.is_none())
            .collect();
        v.sort_by_key(|v| v.seq);
        v
    }

    pub fn volumes(&self, now: Instant) -> Vec<Volume> {
        self.sorted_volumes()
            .into_iter()
            .map(|v| v.view(now))
            .collect()
    }

    /// Cinder's `?name=` listing, which shows a volume being deleted
    /// (`deleting`) until it is gone.
    pub fn find_volumes_by_name(&self, name: &str, now: Instant) -> Vec<Volume> {
        let mut found: Vec<&VolumeRec> = self
            .volumes
            .values()
            .filter(|v| v.name == name && v.gone_at.is_none_or(|gone| gone > now))
            .collect();
        found.sort_by_key(|v| v.seq);
        found.into_iter().map(|v| v.view(now)).collect()
    }

    pub fn delete_volume(&mut self, id: &str, now: Instant) -> CloudResult<()> {
        let Some(vol) = self.volumes.get(id) else {
            return Ok(());
        };
        match vol.gone_at {
            Some(gone) if gone <= now => return Ok(()),
            // Cinder refuses a delete of a volume `deleting` (its status is
            // not one a delete starts from), as of one `error_deleting`.
            Some(_) => {
                return Err(CloudError::Conflict(format!(
                    "Invalid volume: Volume {id} status must be available or error, but current status is: deleting"
                )))
            }
            None => {}
        }
        let st = vol.state.at(now);
        let deletable = matches!(st.status, VolumeStatus::Available | VolumeStatus::Error)
            && !vol.state.pending(now)
            && vol.also_attached.is_empty();
        if vol.snapshots > 0 {
            // Cinder's one message for every state it refuses a delete in.
            return Err(CloudError::Conflict(
                "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.".into(),
            ));
        }
        if !deletable {
            return Err(CloudError::Conflict(format!(
                "Invalid volume: Volume {id} status must be available or error, but current status is: {}",
                status_name(&vol.view(now).status)
            )));
        }
        let gone_at = now + self.latency(self.cfg.latencies.delete);
        let vol = self.volumes.get_mut(id).expect("checked above");
        // An injected failure in Cinder's backend: accepted, then kept.
        if self.faults.volume_delete_errors > 0 {
            self.faults.volume_delete_errors -= 1;
            let status = |s: &str| VolState {
                status: VolumeStatus::Other(s.into()),
                server: None,
            };
            vol.state
                .start(status("deleting"), gone_at, status(ERROR_DELETING));
            return Ok(());
        }
        vol.gone_at = Some(gone_at);
        let seq = vol.seq;
        self.gone_queue
            .push(Reverse((gone_at, seq, Kind::Volume, id.to_string())));
        Ok(())
    }

    /// A volume attach as Nova did it below microversion 2.101: the API's
    /// checks and the reserve (volume checks, Cinder's attachment) before
    /// it answers.
    pub fn attach_volume(
        &mut self,
        server_id: &str,
        volume_id: &str,
        now: Instant,
    ) -> CloudResult<()> {
        self.take_attach_failure()?;
        self.reserve_volume_attach(server_id, volume_id, now)
    }

    /// What Nova's API checks of the server before it answers an attach
    /// 202 from microversion 2.101 (ACTIVE, no task); the HTTP face checks
    /// the volume too (there, and attached to no other server), and the
    /// reserve ([`Model::reserve_volume_attach`]) comes later.
    pub fn accept_volume_attach(&mut self, server_id: &str, now: Instant) -> CloudResult<()> {
        self.take_attach_failure()?;
        self.server_takes_attach(server_id, now)
    }

    fn take_attach_failure(&mut self) -> CloudResult<()> {
        if self.faults.fail_volume_attach > 0 {
            self.faults.fail_volume_attach -= 1;
            return Err(CloudError::Transient(
                "injected: volume attach failed (HTTP 500)".into(),
            ));
        }
        Ok(())
    }

    fn server_takes_attach(&self, server_id: &str, now: Instant) -> CloudResult<()> {
        let server = self.live_server(server_id)?;
        let server_status = server.status(now);
        if server_status != ServerStatus::Active {
            return Err(CloudError::Conflict(format!(
                "Cannot 'attach_volume' instance {server_id} while it is in vm_state {}",
                vm_state(server_status)
            )));
        }
        server.busy_refusal("attach_volume")
    }

    /// The conductor's and compute host's part of an attach: the volume
    /// checked and reserved (Cinder's attachment made), the server checked
    /// again, the attach started.
    pub fn reserve_volume_attach(
        &mut self,
        server_id: &str,
        volume_id: &str,
        now: Instant,
    ) -> CloudResult<()> {
        let server_az = self.live_server(server_id)?.az.clone();
        let vol = self
            .volumes
            .get(volume_id)
            .ok_or_else(|| CloudError::NotFound(format!("volume {volume_id}")))?;
        if vol.gone_at.is_some() {
            return Err(CloudError::NotFound(format!("volume {volume_id}")));
        }
        self.server_takes_attach(server_id, now)?;
        // Fencing: only an `available` volume with nothing pending may be
        // attached (a multiattach one may be attached elsewhere too:
        // `also_attached`).
        let st = vol.state.at(now);
        if st.status != VolumeStatus::Available || vol.state.pending(now) {
            return Err(CloudError::Conflict(format!(
                "Invalid volume: volume {volume_id} status must be 'available', but is '{}'",
                status_name(&st.status)
            )));
        }
        // Nova's `[cinder] cross_az_attach = False`: its 400 InvalidVolume,
        // which warmpool's driver reads as the request's fault (`Fatal`).
        if !self.cfg.cross_az_attach && vol.az != server_az {
            return Err(CloudError::Fatal(format!(
                "Invalid volume: Instance {server_id} and volume {volume_id} are not in the same availability_zone. Instance is in {server_az}. Volume is in {}",
                vol.az
            )));
        }
        // An injected failure on the compute host so quick that the attach
        // is undone by the time Nova answers: nothing shows it ever began.
        if self.faults.volume_attach_fails_at_once > 0 {
            self.faults.volume_attach_fails_at_once -= 1;
            return Ok(());
        }
        let done = now + self.latency(self.cfg.latencies.volume_attach);
        // An injected failure on the compute host: Nova accepted the attach,
        // then rolled it back, and Cinder shows the volume `available` again.
        let fails_on_host = self.faults.volume_attach_fails_on_host > 0;
        if fails_on_host {
            self.faults.volume_attach_fails_on_host -= 1;
        }
        // An injected failure in Cinder: the volume ends `error_attaching`.
        let errs = !fails_on_host && self.faults.volume_attach_errors > 0;
        if errs {
            self.faults.volume_attach_errors -= 1;
        }
        let after = if fails_on_host {
            VolState {
                status: VolumeStatus::Available,
                server: None,
            }
        } else if errs {
            VolState {
                status: VolumeStatus::Other(ERROR_ATTACHING.into()),
                server: self
                    .faults
                    .volume_attach_error_kept_by_nova
                    .then(|| server_id.to_string()),
            }
        } else {
            VolState {
                status: VolumeStatus::InUse,
                server: Some(server_id.to_string()),
            }
        };
        let vol = self.volumes.get_mut(volume_id).expect("checked above");
        vol.state.start(
            VolState {
                status: VolumeStatus::Attaching,
                server: Some(server_id.to_string()),
            },
            done,
            after,
        );
        self.servers
            .get_mut(server_id)
            .expect("checked above")
            .volumes
            .insert(volume_id.to_string());
        Ok(())
    }

    /// Nova refuses it (409) while the server is neither ACTIVE nor
    /// SOFT_DELETED: a server in ERROR (its host failed) keeps its volumes
    /// until it is deleted. The volume stays in the server's list until
    /// the detach is done, as Nova's block device mapping does.
    pub fn detach_volume(
        &mut self,
        server_id: &str,
        volume_id: &str,
        now: Instant,
    ) -> CloudResult<()> {
        if let Some(vol) = self.volumes.get_mut(volume_id) {
            if vol.also_attached.iter().any(|s| s == server_id) {
                vol.also_attached.retain(|s| s != server_id);
                return Ok(());
            }
        }
        let Some(vol) = self.volumes.get(volume_id) else {
            return Ok(());
        };
        if vol.attached_server(now) != Some(server_id) {
            return Ok(());
        }
        self.detachable(server_id, Detach::Volume, now)?;
        if vol.state.at(now).status != VolumeStatus::InUse {
            // Still attaching, or its attach failed (error_attaching):
            // Cinder's begin_detaching refuses it; Nova passes the 400 on.
            return Err(CloudError::Conflict(DETACH_NOT_IN_USE.into()));
        }
        let done = now + self.latency(self.cfg.latencies.volume_detach);
        let vol = self.volumes.get_mut(volume_id).expect("checked above");
        vol.state.start(
            VolState {
                status: VolumeStatus::Detaching,
                server: Some(server_id.to_string()),
            },
            done,
            VolState {
                status: VolumeStatus::Available,
                server: None,
            },
        );
        Ok(())
    }

    // ---- ports --------------------------------------------------------------

    pub fn create_port(&mut self, spec: &NewPortSpec, now: Instant) -> CloudResult<Port> {
        self.create_port_in_groups(spec, None, now)
    }

    /// A port whose create named `security_groups` (ids; `None`: none).
    pub fn create_port_in_groups(
        &mut self,
        spec: &NewPortSpec,
        security_groups: Option<Vec<String>>,
        now: Instant,
    ) -> CloudResult<Port> {
        if self.ports.len() >= self.cfg.quotas.max_ports {
            // Neutron's wording (the OverQuota message).
            return Err(CloudError::QuotaExceeded(
                "Quota exceeded for resources: ['port'].".to_string(),
            ));
        }
        self.check_port_placement(spec)?;
        let subnetless = self.cfg.networks_without_subnet.contains(&spec.network_id);
        let ip = match &spec.fixed_ip {
            // Neutron's wording when the network has no subnet to take it from.
            Some(_) if subnetless => {
                return Err(CloudError::Fatal(format!(
                    "Invalid input for operation: Failed to create port on network {}, because fixed_ips included invalid subnet.",
                    spec.network_id
                )))
            }
            None if subnetless => None,
            Some(ip) => {
                if self
                    .used_ips
                    .contains(&(spec.network_id.clone(), ip.clone()))
                {
                    return Err(CloudError::Conflict(format!(
                        "IP address {ip} already allocated in subnet of network {}",
                        spec.network_id
                    )));
                }
                Some(ip.clone())
            }
            None => Some(self.allocate_ip(&spec.network_id)?),
        };
        if let Some(ip) = &ip {
            self.used_ips.insert((spec.network_id.clone(), ip.clone()));
        }
        let id = self.new_id();
        let seq = self.next_seq();
        let port = PortRec {
            seq,
            id: id.clone(),
            name: spec.name.clone(),
            network_id: spec.network_id.clone(),
            ip,
            created_at: now,
            binding: Timed::settled(None),
            by_nova: false,
            security_groups,
        };
        let view = port.view(now);
        self.ports.insert(id, port);
        Ok(view)
    }

    /// A network port creates may name, its one subnet `subnet_id` of
    /// range `cidr`; its ports get addresses of that range from now on.
    pub fn add_network(&mut self, network: &str, subnet_id: &str, cidr: ipnet::Ipv4Net) {
        self.address_pools.insert(network.to_owned(), (cidr, 0));
        self.networks
            .insert(network.to_owned(), (subnet_id.to_owned(), cidr));
    }

    /// Network `id` as Neutron shows it to an admin of warmpool's project
    /// (`shared`: shared with every project or with that one); Neutron's
    /// 404 wording for one not configured. With none configured, any id
    /// is taken (as port creates take it): warmpool's, shared with every
    /// project.
    pub fn network(&self, id: &str) -> CloudResult<Network> {
        let Some(configured) = self.configured_network(id)? else {
            return Ok(Network {
                id: id.to_owned(),
                owner: NetworkOwner::Warmpool,
                shared: true,
                management: None,
            });
        };
        Ok(Network {
            id: configured.id.clone(),
            owner: match &configured.project {
                None => NetworkOwner::Warmpool,
                Some(p) => NetworkOwner::Project(p.clone()),
            },
            shared: configured
                .shares
                .iter()
                .any(|s| matches!(s, NetworkShare::EveryProject | NetworkShare::Warmpool)),
            // The OpenStack driver's judgement, from its settings.
            management: None,
        })
    }

    /// Whom network `id`'s RBAC policies share it with, as an admin sees
    /// them ([`Self::network`]).
    pub fn network_shares(&self, id: &str) -> CloudResult<Vec<NetworkShare>> {
        Ok(match self.configured_network(id)? {
            Some(configured) => configured.shares.clone(),
            None => vec![NetworkShare::EveryProject],
        })
    }

    /// The configured network of id `id` (in any case, as Neutron's
    /// database compares ids); `None` when none is configured.
    fn configured_network(&self, id: &str) -> CloudResult<Option<&crate::config::SimNetwork>> {
        if self.cfg.networks.is_empty() {
            return Ok(None);
        }
        self.cfg
            .networks
            .iter()
            .find(|n| n.id.eq_ignore_ascii_case(id))
            .map(Some)
            .ok_or_else(|| CloudError::NotFound(format!("Network {id} could not be found.")))
    }

    /// Neutron's checks of a port create's network, subnet and address,
    /// in its words: an unknown network is its 404 (`NotFound`), a subnet
    /// of another network or an address the subnet cannot give its 400s
    /// (`Fatal`, as warmpool's driver reads them). Unchecked when no
    /// network is known.
    fn check_port_placement(&self, spec: &NewPortSpec) -> CloudResult<()> {
        if self.networks.is_empty() {
            return Ok(());
        }
        let network = &spec.network_id;
        let Some((subnet_id, cidr)) = self.networks.get(network) else {
            return Err(CloudError::NotFound(format!(
                "Network {network} could not be found."
            )));
        };
        let subnetless = self.cfg.networks_without_subnet.contains(network);
        if let Some(subnet) = spec
            .subnet_id
            .as_deref()
            .filter(|s| subnetless || s != subnet_id)
        {
            return Err(CloudError::Fatal(format!(
                "Invalid input for operation: Failed to create port on network {network}, because fixed_ips included invalid subnet {subnet}."
            )));
        }
        let Some(ip) = spec.fixed_ip.as_deref().filter(|_| !subnetless) else {
            return Ok(());
        };
        // Neutron's `check_subnet_ip`: an IPv4 subnet's network and
        // broadcast addresses are not its to give (but for a /31 or /32).
        let valid = ip.parse::<Ipv4Addr>().is_ok_and(|ip| {
            cidr.contains(&ip)
                && (cidr.prefix_len() >= 31 || (ip != cidr.network() && ip != cidr.broadcast()))
        });
        if !valid {
            return Err(CloudError::Fatal(format!(
                "IP address {ip} is not a valid IP for the specified subnet."
            )));
        }
        Ok(())
    }

    fn allocate_ip(&mut self, network: &str) -> CloudResult<String> {
        if let Some((subnet, next)) = self.address_pools.get_mut(network) {
            // From the tenth address upward (the first in a small subnet),
            // as without a pool, going round the subnet once before it is
            // found full.
            let first = u32::from(subnet.network());
            let broadcast = u32::from(subnet.broadcast()) - first;
            let start = if broadcast > 11 { 10 } else { 1 };
            let count = broadcast.saturating_sub(start);
            for _ in 0..count {
                let ip = Ipv4Addr::from(first + start + *next % count);
                *next += 1;
                let last = ip.octets()[3];
                if last == 0 || last == 255 {
                    continue;
                }
                let ip = ip.to_string();
                if !self.used_ips.contains(&(network.to_string(), ip.clone())) {
                    return Ok(ip);
                }
            }
            // Neutron's IpAddressGenerationFailure.
            return Err(CloudError::Conflict(format!(
                "No more IP addresses available on network {network}."
            )));
        }
        Ok(loop {
            self.next_ip += 1;
            // 10.0.0.10 upward, skipping network and broadcast-looking addresses.
            let ip = Ipv4Addr::from(0x0a00_0009u32 + self.next_ip);
            let last = ip.octets()[3];
            if last == 0 || last == 255 {
                continue;
            }
            let ip = ip.to_string();
            if !self.used_ips.contains(&(network.to_string(), ip.clone())) {
                break ip;
            }
        })
    }

    pub fn get_port(&self, id: &str, now: Instant) -> CloudResult<Port> {
        self.ports
            .get(id)
            .map(|p| p.view(now))
            .ok_or_else(|| CloudError::NotFound(format!("port {id}")))
    }

    fn sorted_ports(&self) -> Vec<&PortRec> {
        let mut v: Vec<_> = self.ports.values().collect();
        v.sort_by_key(|p| p.seq);
        v
    }

    /// The ports made through Neutron (Nova's for its servers left out).
    pub fn ports(&self, now: Instant) -> Vec<Port> {
        self.sorted_ports()
            .into_iter()
            .filter(|p| !p.by_nova)
            .map(|p| p.view(now))
            .collect()
    }

    /// The ports Nova made for the servers it booted.
    pub fn server_ports(&self, now: Instant) -> Vec<Port> {
        self.sorted_ports()
            .into_iter()
            .filter(|p| p.by_nova)
            .map(|p| p.view(now))
            .collect()
    }

    pub fn find_ports_by_name(&self, name: &str, now: Instant) -> Vec<Port> {
        self.sorted_ports()
            .into_iter()
            .filter(|p| p.name == name)
            .map(|p| p.view(now))
            .collect()
    }

    /// Neutron's `PUT /ports/{id}` of the name.
    pub fn rename_port(&mut self, id: &str, name: &str) -> CloudResult<()> {
        let port = self
            .ports
            .get_mut(id)
            .ok_or_else(|| CloudError::NotFound(format!("port {id}")))?;
        port.name = name.to_string();
        Ok(())
    }

    /// Neutron's refusal of a member's delete of a port a server is bound
    /// to (see [`crate::SimConfig::member_port_policy`]), if it applies now,
    /// in the words the testbed's Neutron answered a member with, on its own
    /// project's network and on one shared with it alike.
    pub fn port_delete_refusal(&self, id: &str, now: Instant) -> Option<String> {
        let port = self.ports.get(id)?;
        (self.cfg.member_port_policy && port.binding.at(now).is_some())
            .then(|| "rule:delete_port is disallowed by policy".to_string())
    }

    /// Neutron's refusal of a member's port create setting an address on
    /// another project's configured network (see
    /// [`crate::SimConfig::member_port_policy`]), if it applies: the keys
    /// of its one `fixed_ips` entry are as warmpool's driver sends them
    /// (in order, `ip_address` then `subnet_id`).
    pub fn port_create_refusal(&self, spec: &NewPortSpec) -> Option<String> {
        if !self.cfg.member_port_policy || spec.fixed_ip.is_none() {
            return None;
        }
        let theirs = matches!(
            self.configured_network(&spec.network_id),
            Ok(Some(network)) if network.project.is_some()
        );
        let keys =
            std::iter::once("ip_address").chain(spec.subnet_id.as_ref().map(|_| "subnet_id"));
        theirs.then(|| fixed_ips_refusal(keys))
    }

    /// Neutron deletes a bound port too (the server loses the interface).
    pub fn delete_port(&mut self, id: &str) {
        if let Some(port) = self.ports.remove(id) {
            if let Some(server) = port.target().and_then(|s| self.servers.get_mut(s)) {
                server.ports.remove(id);
            }
            if let Some(ip) = port.ip {
                self.used_ips.remove(&(port.network_id, ip));
            }
        }
    }

    /// Returns when the binding completes (`device_id` set).
    pub fn attach_port(
        &mut self,
        server_id: &str,
        port_id: &str,
        now: Instant,
    ) -> CloudResult<Instant> {
        if self.faults.fail_port_attach > 0 {
            self.faults.fail_port_attach -= 1;
            return Err(CloudError::Transient(
                "injected: port attach failed (HTTP 500)".into(),
            ));
        }
        let server = self.live_server(server_id)?;
        let status = server.status(now);
        server.busy_refusal("attach_interface")?;
        let port = self
            .ports
            .get(port_id)
            .ok_or_else(|| CloudError::NotFound(format!("port {port_id}")))?;
        if status != ServerStatus::Active {
            return Err(CloudError::Conflict(format!(
                "Cannot 'attach_interface' instance {server_id} while it is in vm_state {}",
                vm_state(status)
            )));
        }
        if port.binding.at(now).is_some() || port.binding.pending(now) {
            return Err(CloudError::Conflict(format!(
                "Port {port_id} is still in use."
            )));
        }
        let done = now + self.latency(self.cfg.latencies.port_attach);
        let port = self.ports.get_mut(port_id).expect("checked above");
        port.binding.start(None, done, Some(server_id.to_string()));
        self.servers
            .get_mut(server_id)
            .expect("checked above")
            .ports
            .insert(port_id.to_string());
        Ok(done)
    }

    /// Refused (409) while the server is not ACTIVE, as Nova's
    /// `detach_interface` is (SOFT_DELETED too, unlike a volume's detach).
    pub fn detach_port(&mut self, server_id: &str, port_id: &str, now: Instant) -> CloudResult<()> {
        let Some(port) = self.ports.get(port_id) else {
            return Ok(());
        };
        if port.target() != Some(server_id) {
            return Ok(());
        }
        self.detachable(server_id, Detach::Interface, now)?;
        let done =
            now + self.latency(self.cfg.latencies.port_detach) + self.faults.slow_port_unbind;
        let port = self.ports.get_mut(port_id).expect("checked above");
        let shown = port.binding.at(now).clone();
        port.binding.start(shown, done, None);
        if let Some(s) = self.servers.get_mut(server_id) {
            s.ports.remove(port_id);
        }
        Ok(())
    }
}

/// What a detach lets go of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Detach {
    Volume,
    Interface,
}

impl Model {
    /// Whether Nova lets `what` be detached from the server now: a gone
    /// server has nothing attached, a live one must not be busy with a task
    /// and must be ACTIVE, or SOFT_DELETED for a volume (Nova's
    /// `detach_volume` takes that vm_state, `detach_interface` does not).
    fn detachable(&self, server_id: &str, what: Detach, now: Instant) -> CloudResult<()> {
        let action = match what {
            Detach::Volume => "detach_volume",
            Detach::Interface => "detach_interface",
        };
        match self.servers.get(server_id) {
            Some(s) if s.gone_at.is_none() => match s.status(now) {
                ServerStatus::Active => s.busy_refusal(action),
                _ if s.reclaim_at.is_some() && what == Detach::Volume => s.busy_refusal(action),
                _ if s.reclaim_at.is_some() => Err(CloudError::Conflict(format!(
                    "Cannot '{action}' instance {server_id} while it is in vm_state soft-delete"
                ))),
                status => Err(CloudError::Conflict(format!(
                    "Cannot '{action}' instance {server_id} while it is in vm_state {}",
                    vm_state(status)
                ))),
            },
            _ => Ok(()),
        }
    }

    /// Nova's delete with `reclaim_instance_interval` set, for a server that
    /// was ever ACTIVE: the server is only marked SOFT_DELETED. Nova's
    /// listing no longer shows it (the HTTP face leaves it out; it is still
    /// read by id), it keeps its volumes and ports (Neutron's quota) but
    /// counts in no instances, cores or RAM quota, its guest is
    /// powered off (mysqld stops), and it is deleted for good after
    /// `reclaim_after` or by a forceDelete, unless restored. A soft-deleted
    /// server stays so when deleted again.
    pub fn soft_delete_server(&mut self, id: &str, now: Instant, reclaim_after: Duration) {
        let Some(s) = self.servers.get_mut(id) else {
            return;
        };
        if s.gone_at.is_some() || s.reclaim_at.is_some() {
            return;
        }
        let at = now + reclaim_after;
        s.reclaim_at = Some(at);
        if let Some(listener) = &s.listener {
            listener.stop();
        }
        if let Boot::Active {
            mysqld_ready_at, ..
        } = &mut s.boot
        {
            *mysqld_ready_at = None;
        }
        self.reclaim_queue.push(Reverse((at, id.to_string())));
    }

    /// Nova's forceDelete action: deletes a SOFT_DELETED server for good.
    /// Nova before 2023 refused it for a server in any other state (409),
    /// and so does the simulator.
    pub fn force_delete_server(&mut self, id: &str, now: Instant) -> CloudResult<()> {
        let s = self
            .servers
            .get(id)
            .ok_or_else(|| CloudError::NotFound(format!("server {id}")))?;
        if s.gone_at.is_some() || s.reclaim_at.is_none() {
            return Err(CloudError::Conflict(format!(
                "Cannot 'forceDelete' instance {id} while it is in vm_state {}",
                vm_state(s.status(now))
            )));
        }
        self.delete_server(id, now);
        Ok(())
    }

    /// Nova's restore action: a SOFT_DELETED server is ACTIVE again and
    /// waits for no reclaim. Refused (409) for a server in any other state.
    /// The simulator powers no guest on again: its mysqld stays stopped.
    pub fn restore_server(&mut self, id: &str, now: Instant) -> CloudResult<()> {
        let s = self
            .servers
            .get_mut(id)
            .ok_or_else(|| CloudError::NotFound(format!("server {id}")))?;
        if s.gone_at.is_some() || s.reclaim_at.is_none() {
            return Err(CloudError::Conflict(format!(
                "Cannot 'restore' instance {id} while it is in vm_state {}",
                vm_state(s.status(now))
            )));
        }
        // Nova's restore checks the quotas, which a soft-deleted server
        // counts in no more (403 from the API, as a create's).
        let flavor = s.flavor.clone();
        if let Some(size) = self.cfg.flavor_spec_even_retired(&flavor) {
            self.check_compute_quotas(&size)?;
        }
        let s = self.servers.get_mut(id).expect("found above");
        // Its entry in the reclaim queue no longer matches, and is skipped.
        s.reclaim_at = None;
        Ok(())
    }

    /// mysqld on a live server stops (crashed, killed by the OOM killer):
    /// the server stays ACTIVE, its mysqld answers no more.
    pub fn stop_mysqld(&mut self, server_id: &str) -> bool {
        match self.servers.get_mut(server_id) {
            Some(s) if s.gone_at.is_none() => {
                if let Boot::Active {
                    mysqld_ready_at, ..
                } = &mut s.boot
                {
                    *mysqld_ready_at = None;
                }
                if let Some(listener) = &s.listener {
                    listener.stop();
                }
                true
            }
            _ => false,
        }
    }

    /// Nova starts (`Some`) or ends (`None`) a task on a live server.
    pub fn set_server_task_state(&mut self, server_id: &str, task_state: Option<&str>) -> bool {
        match self.servers.get_mut(server_id) {
            Some(s) if s.gone_at.is_none() => {
                s.task_state = task_state.map(str::to_owned);
                true
            }
            _ => false,
        }
    }

    /// The server's host failed: it is in ERROR from now on, with `fault`.
    pub fn fail_server(&mut self, server_id: &str, fault: &str, now: Instant) -> bool {
        match self.servers.get_mut(server_id) {
            Some(s) if s.gone_at.is_none() => {
                s.boot = Boot::Error {
                    at: now,
                    fault: fault.to_owned(),
                };
                if let Some(listener) = &s.listener {
                    listener.stop();
                }
                true
            }
            _ => false,
        }
    }
}

/// Neutron's refusal of a port create whose `fixed_ips` sets an address
/// on a network the member's project does not own (its policy's
/// `create_port:fixed_ips:ip_address`, for the network's owner or an
/// admin), whatever the address. The rule names each key of each entry,
/// `keys` in the order of the request (measured on the testbed: two
/// entries naming an address each name it twice).
pub(crate) fn fixed_ips_refusal<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    let rules: Vec<String> = keys
        .into_iter()
        .map(|k| format!("rule:create_port:fixed_ips:{k}"))
        .collect();
    format!(
        "(rule:create_port and (rule:create_port:fixed_ips and ({}))) is disallowed by policy",
        rules.join(" and ")
    )
}

/// Nova's vm_state for a server status, for error messages.
fn vm_state(s: ServerStatus) -> &'static str {
    match s {
        ServerStatus::Build => "building",
        ServerStatus::Active => "active",
        ServerStatus::Error => "error",
        ServerStatus::Deleted => "deleted",
        ServerStatus::Stopped => "stopped",
        ServerStatus::Shelved => "shelved_offloaded",
        ServerStatus::Paused => "paused",
        ServerStatus::Suspended => "suspended",
        ServerStatus::Rescued => "rescued",
        ServerStatus::Other => "unknown",
    }
}

/// Cinder's spelling of a volume status, for error messages.
fn status_name(s: &VolumeStatus) -> &str {
    match s {
        VolumeStatus::Creating => "creating",
        VolumeStatus::Available => "available",
        VolumeStatus::Attaching => "attaching",
        VolumeStatus::InUse => "in-use",
        VolumeStatus::Detaching => "detaching",
        VolumeStatus::Error => "error",
        VolumeStatus::Other(o) => o,
    }
}
