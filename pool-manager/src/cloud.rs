//! The `Cloud` trait: everything warmpool asks of OpenStack, with classified
//! errors so callers decide retry, back-off or give-up without parsing text.

use crate::events::CloudService;
use crate::model::PoolKey;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Metadata keys written on every pool server, so the reconciler can find them.
pub const META_POOL: &str = "warmpool.pool";
pub const META_INSTANCE: &str = "warmpool.instance";
/// Metadata key written on every volume warmpool creates for an order: the
/// order's `tenant_project_id`; and on an untagged volume an order names,
/// once the order is served, right before its commit (the allocator's
/// `tag_for_the_tenant`). The volume
/// itself is in warmpool's own project, as everything warmpool creates is,
/// so the tag is what tells whose it is (the allocator refuses it to
/// another tenant's order).
pub const META_TENANT: &str = "warmpool.tenant";

/// Which cloud a store's servers, volumes and ports are in: what the store
/// records at its first start and every later start compares
/// ([`crate::PoolManager::claim_store`]). A store's records name servers,
/// volumes and ports by the ids one cloud gave them, and its pools boot
/// where it runs: started over another cloud, it would boot its pools
/// there, answer its orders with servers that cloud never had and forget
/// them as gone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum CloudIdentity {
    /// The simulated cloud inside the process (cloudsim), new at every
    /// start: one is as good as another.
    #[serde(rename = "embedded")]
    Embedded,
    /// A project of an OpenStack, by the id Keystone gives the project
    /// warmpool's token is scoped to (not by the auth URL, whose host name
    /// may change, nor the project's name, which may be renamed), in a
    /// region, and the tag its pool servers carry: the reconciler lists
    /// pool servers by it, so a store under another tag would find none
    /// of its own.
    #[serde(rename = "openstack")]
    OpenStack {
        project_id: String,
        /// The region warmpool's calls go to (clouds.yaml's `region_name`
        /// or the first of its `regions`, `OS_REGION_NAME` with no entry
        /// named): Keystone is shared by a cloud's regions, so a project
        /// has one id in each while Nova, Cinder and Neutron are other
        /// deployments. `None`: none named (the catalog's one region:
        /// the login refuses none named on several), which is compared as
        /// a region of its own: the catalog's may be another than a
        /// region named, or change.
        #[serde(default)]
        region: Option<String>,
        server_tag: String,
    },
}

/// How the cloud a start is on differs from the one its store recorded
/// ([`CloudIdentity::change_from`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloudChange {
    /// The same cloud.
    None,
    /// The same project in the same region under another server tag: the
    /// store's servers are this cloud's, but the listing by tag shows none
    /// of them.
    ServerTag,
    /// The same project under the same tag, where the store recorded no
    /// region and a region is named now: the same cloud if the region
    /// none named reached was this one (the catalog has the services in
    /// it alone, [`Cloud::services_in_named_region_alone`]), else maybe
    /// another region's.
    RegionNamed,
    /// Another cloud: another kind, project or region. The store's records
    /// name servers, volumes and ports this cloud never had.
    Cloud,
}

impl CloudIdentity {
    /// How `self`, the cloud a start is on, differs from `recorded`, the
    /// one its store serves. Regions are compared as named, `None` too: a
    /// region named and none (the catalog's first) may be two; a region
    /// named where none was recorded, all else the same, is told apart
    /// ([`CloudChange::RegionNamed`]; with another tag too it is another
    /// cloud).
    pub fn change_from(&self, recorded: &CloudIdentity) -> CloudChange {
        match (recorded, self) {
            (CloudIdentity::Embedded, CloudIdentity::Embedded) => CloudChange::None,
            (
                CloudIdentity::OpenStack {
                    project_id: was_project,
                    region: was_region,
                    server_tag: was_tag,
                },
                CloudIdentity::OpenStack {
                    project_id,
                    region,
                    server_tag,
                },
            ) => {
                if was_project == project_id
                    && was_region.is_none()
                    && region.is_some()
                    && was_tag == server_tag
                {
                    CloudChange::RegionNamed
                } else if was_project != project_id || was_region != region {
                    CloudChange::Cloud
                } else if was_tag != server_tag {
                    CloudChange::ServerTag
                } else {
                    CloudChange::None
                }
            }
            _ => CloudChange::Cloud,
        }
    }
}

impl CloudIdentity {
    /// The openstack CLI command listing this cloud's pool servers in its
    /// region (`None`: no region named, or not OpenStack), for a message
    /// asking to check that a store's servers are there.
    pub fn server_list_command(&self) -> Option<String> {
        match self {
            CloudIdentity::OpenStack {
                region: Some(region),
                server_tag,
                ..
            } => Some(format!(
                "openstack --os-region-name {region} server list --tags {server_tag}"
            )),
            _ => None,
        }
    }
}

impl std::fmt::Display for CloudIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloudIdentity::Embedded => write!(f, "the embedded simulated cloud"),
            CloudIdentity::OpenStack {
                project_id,
                region,
                server_tag,
            } => {
                write!(f, "OpenStack project {project_id}")?;
                if let Some(region) = region {
                    write!(f, " in region {region}")?;
                }
                write!(f, " under the server tag {server_tag:?}")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    pub name: String,
    pub pool: PoolKey,
    pub image: String,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerStatus {
    Build,
    Active,
    Error,
    Deleted,
    /// Nova's SHUTOFF: stopped (by its owner, or by the host), the guest
    /// down until someone starts it again.
    Stopped,
    /// Nova's SHELVED or SHELVED_OFFLOADED: put away until someone
    /// unshelves it.
    Shelved,
    /// Nova's PAUSED: the guest frozen in memory until someone unpauses it.
    Paused,
    /// Nova's SUSPENDED: the guest saved to disk until someone resumes it.
    Suspended,
    /// Nova's RESCUE: booted from a rescue image, its own disk attached
    /// aside, until someone unrescues it.
    Rescued,
    /// Any other (REBOOT, MIGRATING, RESIZE, VERIFY_RESIZE, UNKNOWN...).
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub status: ServerStatus,
    pub availability_zone: String,
    pub metadata: BTreeMap<String, String>,
    /// Where mysqld should answer, once the server has an address.
    pub mysql_addr: Option<SocketAddr>,
    /// The fault Nova reports for an ERROR server (e.g. NoValidHost).
    pub fault: Option<String>,
    pub attached_volumes: Vec<String>,
    pub attached_ports: Vec<String>,
    /// Nova accepted a delete and is tearing the server down (task_state
    /// `deleting`, or `soft-deleting` on a cloud with
    /// `reclaim_instance_interval`). Nova still shows and lists it, with the
    /// status it had, until the compute host is done: seconds, or minutes on
    /// a busy one; then DELETED for a moment before it is gone, also
    /// `deleting`. `Deleted` and not `deleting` is SOFT_DELETED alone.
    pub deleting: bool,
    /// Nova is doing something else to the server right now: its task_state
    /// (`image_snapshot`, `powering-off`, `migrating`...) when not a delete.
    /// Busy is not broken: the task ends by itself and the server is still
    /// good supply, so nothing retires it for that. But Nova refuses an
    /// attach or a detach (409) until the task is done.
    pub busy: Option<String>,
    /// Nova's `locked` (microversion 2.9 and later): its owner or an admin
    /// locked it, and Nova refuses warmpool's actions on it (an attach, a
    /// detach, a delete: 409) until it is unlocked, unless warmpool is
    /// an admin.
    pub locked: bool,
}

impl Server {
    /// Deleted, soft-deleted or being deleted: nothing to boot, probe,
    /// attach to or hand out any more.
    pub fn is_going(&self) -> bool {
        self.deleting || self.status == ServerStatus::Deleted
    }

    /// ACTIVE and not being deleted: a server a purchase can use.
    pub fn is_usable(&self) -> bool {
        self.status == ServerStatus::Active && !self.deleting
    }

    /// Usable, not busy with another task and not locked: Nova takes an
    /// attach now.
    pub fn takes_an_attach_now(&self) -> bool {
        self.is_usable() && self.busy.is_none() && !self.locked
    }

    /// A tenant's volume is attached: only a purchase attaches one to a
    /// pool server, so the server is a tenant's database, not pool supply.
    pub fn holds_a_tenant_volume(&self) -> bool {
        !self.attached_volumes.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeStatus {
    Creating,
    Available,
    Attaching,
    InUse,
    Detaching,
    Error,
    Other(String),
}

impl VolumeStatus {
    /// Cinder's `error_attaching`: an attach of the volume failed in
    /// Cinder. It stays so until Nova deletes the attachment (deleting the
    /// server does) or an admin resets its state.
    pub fn is_error_attaching(&self) -> bool {
        matches!(self, Self::Other(s) if s == "error_attaching")
    }

    /// Cinder's `deleting`: its backend is deleting it (one zeroing a
    /// large volume takes minutes).
    pub fn is_deleting(&self) -> bool {
        matches!(self, Self::Other(s) if s == "deleting")
    }

    /// Cinder's `error_deleting`: its backend failed a delete Cinder had
    /// accepted. It stays so until an admin resets its state.
    pub fn is_error_deleting(&self) -> bool {
        matches!(self, Self::Other(s) if s == "error_deleting")
    }

    /// Cinder's `awaiting-transfer`: someone created a transfer of the
    /// volume to another project. It stays so until the transfer is
    /// accepted (the volume then is the other project's) or deleted.
    pub fn is_awaiting_transfer(&self) -> bool {
        matches!(self, Self::Other(s) if s == "awaiting-transfer")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    pub name: String,
    pub status: VolumeStatus,
    pub availability_zone: String,
    pub size_gib: u32,
    /// Server ids the volume is attached to.
    pub attached_to: Vec<String>,
    /// Cinder's volume type, by name (`None`: Cinder did not say).
    pub volume_type: Option<String>,
    /// Of a multiattach volume type: Cinder lets it be attached to more
    /// than one server at once, so its own reservation no longer keeps a
    /// second attach out.
    pub multiattach: bool,
    /// Cinder's metadata of the volume ([`META_TENANT`] on those warmpool
    /// made for an order or attached for one).
    pub metadata: BTreeMap<String, String>,
    /// The project that owns it, as far as the cloud shows.
    pub owner: VolumeOwner,
}

/// Whose a volume is, as the cloud shows it: Cinder's
/// `os-vol-tenant-attr:tenant_id`, which its default policy shows to a
/// reader of the volume's project and to an admin (a member sees only its
/// own project's volumes), and a deployment's policy may hide.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum VolumeOwner {
    /// The cloud does not say.
    #[default]
    NotShown,
    /// The project warmpool works in: every volume it creates, and any
    /// other made there.
    Warmpool,
    /// Another project, by id.
    Project(String),
}

impl Volume {
    /// The tenant whose order warmpool made it for, or first served it to
    /// ([`META_TENANT`]); or tagged it for right before a crash, the order
    /// then rolled back, which the tag does not tell apart.
    pub fn tagged_tenant(&self) -> Option<&str> {
        self.metadata.get(META_TENANT).map(String::as_str)
    }

    /// Cinder accepted a delete of it: it is `deleting`, or its backend
    /// failed the delete (`error_deleting`, until an admin resets it).
    /// Cinder refuses another delete either way, and a volume left
    /// `error_deleting` is no less a leak for that.
    pub fn is_being_deleted(&self) -> bool {
        self.status.is_deleting() || self.status.is_error_deleting()
    }
}

/// A volume to create, in the project warmpool works in (Cinder creates
/// in the token's project; a member cannot create in another).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewVolumeSpec {
    pub name: String,
    pub size_gib: u32,
    pub volume_type: Option<String>,
    pub availability_zone: String,
    /// Cinder metadata to create it with ([`META_TENANT`]).
    pub metadata: BTreeMap<String, String>,
}

/// A Neutron network as warmpool's user is shown it: what the tenant
/// network's fence judges an order's network by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub id: String,
    /// The project that owns it (Neutron shows it to whoever sees the
    /// network).
    pub owner: NetworkOwner,
    /// Neutron's `shared`, which Neutron works out for the project asking,
    /// an admin's too: true for a network shared with every project, and
    /// for one shared (an RBAC `access_as_shared` policy) with warmpool's
    /// own project alone. So it says nothing of the tenant's use of it:
    /// [`Cloud::network_shares`] does.
    pub shared: bool,
    /// What it is when no tenant's port may go on it whatever its shares:
    /// a management network, which every pool server is on (the OpenStack
    /// driver's "warmpool's management network \"mgmt-net\"", from its
    /// settings), which the network fence refuses before the order is
    /// recorded ([`management_network_refusal`]). `None` for any other.
    pub management: Option<String>,
}

/// Why a tenant's port is refused on network `network_id`, a management
/// network (`what`, [`Network::management`]).
pub fn management_network_refusal(network_id: &str, what: &str) -> String {
    format!(
        "network {network_id} is {what}, which every pool server is on; a tenant's port never goes on it, whatever Neutron shares it with: check the network_id sent (the tenant's own network, or one shared with the tenant)"
    )
}

/// Whose a network is ([`Network::owner`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkOwner {
    /// The project warmpool works in.
    Warmpool,
    /// Another project, by id.
    Project(String),
}

/// Whom one of Neutron's RBAC policies (`access_as_shared`) shares a
/// network with: that project may put ports on it as on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkShare {
    /// Every project (the policy's target `*`: a network created
    /// `--share`, such as a provider network for all).
    EveryProject,
    /// The project warmpool works in.
    Warmpool,
    /// Another project, by id.
    Project(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPortSpec {
    pub name: String,
    pub network_id: String,
    pub subnet_id: Option<String>,
    pub fixed_ip: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub id: String,
    pub name: String,
    pub network_id: String,
    pub device_id: Option<String>,
    /// The port's address when nothing was asked of it: its first IPv4
    /// address, else its first. See [`Port::address_for`].
    pub ip_address: Option<String>,
    /// Every address the port has, with its subnet, in the cloud's order:
    /// on a dual-stack network Neutron adds one of each IPv6 SLAAC subnet
    /// to the one asked for, and lists them ordered as strings.
    pub fixed_ips: Vec<FixedIp>,
    /// Neutron gives the port its address once it is bound to a server
    /// (a routed network's `ip_allocation: deferred`). Otherwise a port
    /// created without an address never gets one (a network with no
    /// subnet, or none with a free address).
    pub address_deferred: bool,
}

/// One address of a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedIp {
    /// `None` where the cloud does not say.
    pub subnet_id: Option<String>,
    pub ip_address: String,
}

impl Port {
    /// The address of the port a request for `fixed_ip` on `subnet_id`
    /// (each optional) made: that address, else the first on that subnet,
    /// else [`Port::ip_address`]. Neutron gives a port on a dual-stack
    /// network an IPv6 SLAAC address beside the one asked for, and may list
    /// it first.
    pub fn address_for(&self, subnet_id: Option<&str>, fixed_ip: Option<&str>) -> Option<String> {
        let asked: Option<std::net::IpAddr> = fixed_ip.and_then(|ip| ip.parse().ok());
        let is_asked = |f: &&FixedIp| asked.is_some() && f.ip_address.parse().ok() == asked;
        let on_subnet = |f: &&FixedIp| {
            subnet_id.is_some_and(|s| {
                f.subnet_id
                    .as_deref()
                    .is_some_and(|id| id.eq_ignore_ascii_case(s))
            })
        };
        self.fixed_ips
            .iter()
            .find(is_asked)
            .or_else(|| self.fixed_ips.iter().find(on_subnet))
            .map(|f| f.ip_address.clone())
            .or_else(|| self.ip_address.clone())
    }
}

/// The address a port shows when nothing was asked of it, of its
/// `fixed_ips`: the first IPv4 one, else the first.
pub fn preferred_address(fixed_ips: &[FixedIp]) -> Option<String> {
    let v4 = |f: &&FixedIp| f.ip_address.parse::<std::net::Ipv4Addr>().is_ok();
    fixed_ips
        .iter()
        .find(v4)
        .or_else(|| fixed_ips.first())
        .map(|f| f.ip_address.clone())
}

/// A cloud error, classified by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CloudError {
    /// 429/413, or a 503 naming a Retry-After: slow down; retry after the
    /// given time if the cloud said.
    #[error("cloud throttled the request{}: {message}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    Throttled {
        retry_after: Option<Duration>,
        message: String,
        /// A 503 (maintenance, an overloaded proxy), not a 429/413. A rate
        /// limit refuses a request before anything acts on it; a 503 may
        /// come from behind what already began it, so an attach answered
        /// so may have been done, and its server counts as touched.
        unavailable: bool,
    },
    #[error("cloud quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The object is in a state that forbids the call (in use, task state).
    #[error("the cloud refused the call in the object's current state: {0}")]
    Conflict(String),
    #[error("cloud object not found: {0}")]
    NotFound(String),
    /// 5xx, timeouts, connection errors: worth retrying.
    #[error("transient cloud error: {0}")]
    Transient(String),
    /// The request can never succeed as sent (bad image, auth, 400).
    #[error("cloud error: {0}")]
    Fatal(String),
    /// A delete of a SOFT_DELETED server the cloud takes no further: its
    /// policy refuses warmpool's forceDelete (Nova's 403), so the server
    /// stays until Nova's reclaim whatever warmpool does. Apart from
    /// `Fatal` because callers end the delete there, which they must not
    /// for any other failure (an auth problem passes, and the server would
    /// hold its ports until the reclaim for nothing).
    #[error("cloud error: {0}")]
    LeftToReclaim(String),
    /// The cloud's policy refuses warmpool's user the call (a 403 that is
    /// no quota refusal). Returned only by [`Cloud::set_volume_metadata`]
    /// and [`Cloud::create_port`], whose callers tell it from the other
    /// refusals for good: the allocator's check that it may tag a volume
    /// sends the operator to Cinder's policy for this one alone (a 400 or
    /// a 401 there is no policy to mend), and a purchase's port refused so
    /// says what the policy wants (a member may not choose an address on
    /// another project's network). Any other call's 403 is `Fatal`, and
    /// this is taken as `Fatal` everywhere else.
    #[error("cloud error: {0}")]
    PolicyRefused(String),
}

/// Whether a Nova or Cinder message is a quota refusal: an API's answer,
/// or the fault of a server Nova accepted and then put in ERROR when its
/// conductor's recheck (`recheck_quota`) found the project over quota
/// ("Quota exceeded for instances: Requested 1, but already used 10 of 10
/// instances"). Most say "quota"; Nova's LimitExceeded family says
/// "Maximum number of ports exceeded", Cinder's per-volume size limit
/// "... larger than maximum allowed limit 100G", unified limits (oslo.limit)
/// "Project ... is over a limit for ...". Nova's MaxRetriesExceeded fault
/// ("Exceeded maximum number of retries") is a failed build, not quota.
pub fn mentions_quota(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("quota")
        || m.contains("limitexceeded")
        || (m.contains("maximum number of") && m.contains("exceed") && !m.contains("retries"))
        || m.contains("maximum allowed limit")
        || m.contains("is over a limit for")
}

/// Whether a Cinder quota refusal is its per-volume size limit
/// (`VolumeSizeExceedsLimit`, the project's `per_volume_gigabytes`):
/// "Requested volume size 500G is larger than maximum allowed limit 100G."
/// (older releases leave the `G` out). A limit on each volume, unlike the
/// quotas that fill: no release makes room under it.
pub fn exceeds_per_volume_limit(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("requested volume size") && m.contains("larger than maximum allowed limit")
}

impl CloudError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Transient(_))
    }

    /// The same error, its class and Retry-After kept, its message
    /// rewritten by `f` (to say what the failed call was for).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            Self::Throttled {
                retry_after,
                message,
                unavailable,
            } => Self::Throttled {
                retry_after,
                message: f(message),
                unavailable,
            },
            Self::QuotaExceeded(m) => Self::QuotaExceeded(f(m)),
            Self::Conflict(m) => Self::Conflict(f(m)),
            Self::NotFound(m) => Self::NotFound(f(m)),
            Self::Transient(m) => Self::Transient(f(m)),
            Self::Fatal(m) => Self::Fatal(f(m)),
            Self::LeftToReclaim(m) => Self::LeftToReclaim(f(m)),
            Self::PolicyRefused(m) => Self::PolicyRefused(f(m)),
        }
    }

    /// Whether the failed call may have been carried out all the same: its
    /// answer was lost (a 5xx, a timeout, an unreadable body), or a 503
    /// came from in front of a service that may already have begun it. A
    /// create answered so may have left its object, and one sent again a
    /// twin. A 429/413 refused the call before anything acted on it, and
    /// the service's own refusals (quota, conflict, a bad request) did
    /// nothing.
    pub fn may_have_been_done(&self) -> bool {
        matches!(
            self,
            Self::Transient(_)
                | Self::Throttled {
                    unavailable: true,
                    ..
                }
        )
    }
}

pub type CloudResult<T> = Result<T, CloudError>;

/// Awaits a create's answer, setting `in_doubt` when the answer leaves the
/// create possibly done ([`CloudError::may_have_been_done`]), so that the
/// caller, retrying, still knows a twin may exist once a later try succeeds.
pub async fn noting_doubt<T>(
    answer: impl std::future::Future<Output = CloudResult<T>>,
    in_doubt: &std::sync::atomic::AtomicBool,
) -> CloudResult<T> {
    let answer = answer.await;
    if answer.as_ref().is_err_and(CloudError::may_have_been_done) {
        in_doubt.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    answer
}

/// The longest Retry-After honoured (the throttle gate's jitter may then
/// stretch it up to twice that). A cloud asking for more (or sending a
/// number too large to be meant) is asked again after this long:
/// taken as sent, such a value would stop a zone's boots until a restart,
/// or overflow the clock arithmetic of the pause.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The shortest pause after a 429/413 whose Retry-After names a wait (an
/// HTTP date a moment away): 429s answered together are one throttling
/// episode. A "Retry-After: 0" (Cinder sends it; Nova's overLimit body
/// says `"retryAfter": "0"`) names none: it is paused as one without
/// Retry-After, on the caller's growing backoff or the gate's default.
pub const MIN_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How many more servers of one flavor the project's quota admits, from
/// Nova's `/limits` (instances, cores and RAM) and Neutron's port quota,
/// whichever binds first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootHeadroom {
    /// `None`: every limit is unlimited (-1).
    pub servers: Option<u64>,
    /// The quota that binds, e.g. "cores: 18 of 20 used", for logs and events.
    pub limited_by: Option<String>,
    /// One server of the flavor needs more than a quota allows in all: no
    /// server of it boots until the quota is raised, whatever is released.
    pub beyond_quota: bool,
    /// Each limited quota: what is left of it and what one server
    /// of the flavor takes. Quota is the project's, so a boot of another
    /// flavor takes that flavor's share of it (the throttle gate counts
    /// boots between polls so). Empty when only `servers` is known: each
    /// boot of any flavor is then counted as one server of this one.
    pub quotas: Vec<QuotaLeft>,
    /// Why the port quota is not counted: the cloud would not tell it (a
    /// policy's 403, no quota details: 404) or failed to (a 5xx, a
    /// timeout, a 429). The headroom is then the compute quotas' alone,
    /// and pools may fill the port quota until purchases' ports are
    /// refused with warm servers idle. `None` when counted or unlimited.
    pub ports_unknown: Option<String>,
    /// The calls the poll made, by service, where it asked more than the
    /// compute service: for a wrapper timing calls by service (the
    /// daemon's metrics), which sees one call. `None`: the compute
    /// service's alone.
    pub calls: Option<HeadroomCalls>,
}

/// What a headroom poll asked of each service: the compute limits, and the
/// port quota beside them (the network service's). The poll's result says
/// how the compute part went; the port-quota read's own outcome is here,
/// as the poll succeeds without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadroomCalls {
    /// How long the compute part took (the flavor, the limits).
    pub compute: Duration,
    /// How long the port-quota read took.
    pub network: Duration,
    /// How the port-quota read failed, a refusal too; `None`: answered.
    pub network_error: Option<CloudError>,
}

/// A call a driver made to another service than the one its method is
/// counted under, as a part of it whose outcome the method's result does
/// not carry: the management network's lookup (Neutron's) that reading an
/// ACTIVE server's address needs, in [`Cloud::read_server`] and
/// [`Cloud::list_pool_servers`] (Nova's), which do without it when it
/// fails. Or Keystone's token request inside any call
/// ([`CloudService::Identity`], failed ones only): its error is the
/// call's, which a wrapper then counts as Keystone's and not again as the
/// call's service's (nor as another side call's that failed with it).
/// For a wrapper timing calls by service (the daemon's metrics): see
/// [`collecting_side_calls`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideCall {
    pub service: CloudService,
    pub took: Duration,
    /// How it failed, a refusal too; `None`: answered.
    pub error: Option<CloudError>,
}

tokio::task_local! {
    static SIDE_CALLS: std::cell::RefCell<Vec<SideCall>>;
}

/// `call`'s outcome, and the [`SideCall`]s it made (its driver noted with
/// [`note_side_call`]), in order. A collector around this one (a wrapper
/// outside the one calling: the manager's, which tells the gate a Keystone
/// 429 from the called service's) is told of them too.
pub async fn collecting_side_calls<T>(
    call: impl std::future::Future<Output = T>,
) -> (T, Vec<SideCall>) {
    let (outcome, calls) = SIDE_CALLS
        .scope(std::cell::RefCell::new(Vec::new()), async move {
            let outcome = call.await;
            (outcome, SIDE_CALLS.with(std::cell::RefCell::take))
        })
        .await;
    let _ = SIDE_CALLS.try_with(|outer| outer.borrow_mut().extend(calls.iter().cloned()));
    (outcome, calls)
}

/// Tells the caller collecting side calls, if one is, of `call`.
pub fn note_side_call(call: SideCall) {
    let _ = SIDE_CALLS.try_with(|calls| calls.borrow_mut().push(call));
}

/// Whether `error` (a call's) is the failure of a token request among the
/// call's `side_calls`: the call failed at Keystone, not at its service.
pub fn failed_at_keystone(side_calls: &[SideCall], error: Option<&CloudError>) -> bool {
    error.is_some_and(|error| {
        side_calls.iter().any(|side| {
            side.service == crate::events::CloudService::Identity
                && side.error.as_ref() == Some(error)
        })
    })
}

/// Tells the caller collecting side calls that the error `was` of the
/// side calls noted so far is now `now` (a driver rewrote its message to
/// say what the call was for, [`CloudError::map_message`]): a wrapper
/// tells a call that failed at Keystone by finding its error among them,
/// and would count a rewritten one as the called service's failure too.
pub fn side_call_error_rewritten(was: &CloudError, now: &CloudError) {
    let _ = SIDE_CALLS.try_with(|calls| {
        for call in calls.borrow_mut().iter_mut() {
            if call.error.as_ref() == Some(was) {
                call.error = Some(now.clone());
            }
        }
    });
}

/// The port quota's resource name: a pool server holds its own port on
/// the management network from its boot, and takes the tenant's when it
/// is sold, both in warmpool's project.
pub const PORTS: &str = "ports";

/// What one server takes of [`PORTS`]: its own, and the tenant's.
pub const PORTS_PER_SERVER: u64 = 2;

/// One limited quota at a headroom poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaLeft {
    /// "instances", "cores", "ram" (MiB) or [`PORTS`].
    pub resource: &'static str,
    pub left: u64,
    /// What one server of the polled flavor takes of it.
    pub per_server: u64,
}

impl QuotaLeft {
    pub fn new(resource: &'static str, left: u64, per_server: u64) -> Self {
        Self {
            resource,
            left,
            per_server,
        }
    }
}

impl BootHeadroom {
    pub const UNLIMITED: BootHeadroom = BootHeadroom {
        servers: None,
        limited_by: None,
        beyond_quota: false,
        quotas: Vec::new(),
        ports_unknown: None,
        calls: None,
    };

    /// Room for `servers` more, `limited_by` the quota that binds.
    pub fn room(servers: u64, limited_by: String) -> Self {
        Self {
            servers: Some(servers),
            limited_by: Some(limited_by),
            ..Self::UNLIMITED
        }
    }

    /// No room ever: `why` names the quota one server exceeds.
    pub fn beyond_quota(why: String) -> Self {
        Self {
            servers: Some(0),
            limited_by: Some(why),
            beyond_quota: true,
            ..Self::UNLIMITED
        }
    }

    /// With what is left of each limited quota (see [`Self::quotas`]).
    pub fn with_quotas(mut self, quotas: Vec<QuotaLeft>) -> Self {
        self.quotas = quotas;
        self
    }

    /// Without the port quota, for `why` (see [`Self::ports_unknown`]).
    pub fn with_ports_unknown(mut self, why: String) -> Self {
        self.ports_unknown = Some(why);
        self
    }
}

/// A flavor's disk IOPS limit as the cloud tells it
/// ([`Cloud::flavor_disk_iops`]): the libvirt front-end QoS an operator
/// sets in the flavor's extra specs, which throttles the disk a server
/// boots from (calibration.md: such a cloud boots 3-5x slower).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlavorIops {
    /// The flavor's extra specs limit its disk to this many IOPS, by this
    /// key (check-cloud names it).
    Limited(u32, IopsExtraSpec),
    /// Its extra specs set no disk IOPS limit.
    Unlimited,
    /// The cloud would not tell: its policy hides flavor extra specs from
    /// warmpool's user (Nova's `os-flavor-extra-specs:index`). Not an
    /// error: the limit is unknown, and a pool's own `iops_limit` is the
    /// way to give it.
    Unknown(String),
}

impl FlavorIops {
    /// The limit, if one is known.
    pub fn limit(&self) -> Option<u32> {
        match self {
            Self::Limited(iops, _) => Some(*iops),
            Self::Unlimited | Self::Unknown(_) => None,
        }
    }
}

/// Nova's libvirt front-end QoS keys a flavor's disk IOPS limit is read
/// from: the total, else the lower of the read and write limits.
pub const EXTRA_SPEC_TOTAL_IOPS: &str = "quota:disk_total_iops_sec";
pub const EXTRA_SPEC_READ_IOPS: &str = "quota:disk_read_iops_sec";
pub const EXTRA_SPEC_WRITE_IOPS: &str = "quota:disk_write_iops_sec";

/// Which of a flavor's extra specs its disk IOPS limit
/// ([`FlavorIops::Limited`]) was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IopsExtraSpec {
    /// [`EXTRA_SPEC_TOTAL_IOPS`].
    Total,
    /// [`EXTRA_SPEC_READ_IOPS`]: the lower of the read and write limits,
    /// or the only one set.
    Read,
    /// [`EXTRA_SPEC_WRITE_IOPS`], as [`Self::Read`].
    Write,
}

impl IopsExtraSpec {
    /// The extra spec's key.
    pub fn key(self) -> &'static str {
        match self {
            Self::Total => EXTRA_SPEC_TOTAL_IOPS,
            Self::Read => EXTRA_SPEC_READ_IOPS,
            Self::Write => EXTRA_SPEC_WRITE_IOPS,
        }
    }
}

/// The disk IOPS limit a flavor's extra specs set: `quota:disk_total_iops_sec`,
/// else the lower of `quota:disk_read_iops_sec` and
/// `quota:disk_write_iops_sec` (either alone if only one is set). libvirt
/// takes 0 as "no limit"; a value that is no number limits nothing warmpool
/// can tell, so it is left out as well.
pub fn extra_specs_iops(specs: &BTreeMap<String, String>) -> FlavorIops {
    let limit = |key: &str| {
        specs
            .get(key)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&iops| iops > 0)
            .map(|iops| u32::try_from(iops).unwrap_or(u32::MAX))
    };
    let read = limit(EXTRA_SPEC_READ_IOPS).map(|iops| (iops, IopsExtraSpec::Read));
    let write = limit(EXTRA_SPEC_WRITE_IOPS).map(|iops| (iops, IopsExtraSpec::Write));
    let read_write = match (read, write) {
        (Some(r), Some(w)) => Some(if w.0 < r.0 { w } else { r }),
        (r, w) => r.or(w),
    };
    let total = limit(EXTRA_SPEC_TOTAL_IOPS).map(|iops| (iops, IopsExtraSpec::Total));
    match total.or(read_write) {
        Some((iops, from)) => FlavorIops::Limited(iops, from),
        None => FlavorIops::Unlimited,
    }
}

/// The most names a failed lookup's message lists of those the cloud has.
pub const NAMES_SHOWN: usize = 10;

/// What [`Cloud::check_boot_image`]'s `NotFound` for an image the cloud
/// lacks says besides the image. Naming those on offer may cost a request
/// more (the OpenStack driver lists Glance's images, paged on a large
/// cloud), worth it only where someone reads the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageMiss {
    /// Named beside the images on offer (the first ten, and how many
    /// more): CreatePool and UpdatePool answer it, start-up reports it.
    NameOffered,
    /// The image alone: a degraded pool's recheck, made again after every
    /// pause, reads only whether it passed.
    Alone,
}

/// The first [`NAMES_SHOWN`] of `names` and how many more: what a lookup
/// of a name a cloud lacks lists beside it (the OpenStack driver's, the
/// simulator's, check-cloud's), so that a misspelt name is seen at a
/// glance without a cloud of hundreds filling the message.
pub fn some_names(names: &[String]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    let shown = names[..names.len().min(NAMES_SHOWN)].join(", ");
    match names.len().saturating_sub(NAMES_SHOWN) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// What warmpool needs of the cloud. Calls return once the cloud accepted the
/// request; completion (ACTIVE, `in-use`) is observed with the `get_*` calls.
#[async_trait]
pub trait Cloud: Send + Sync + 'static {
    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server>;
    /// A server, with its ports once it is ACTIVE: for a caller that goes
    /// by `attached_ports` (the allocator's verify, and its look at a port
    /// attach Nova refused as a conflict, read the two halves themselves,
    /// to name the service that failed). A port read that fails fails the
    /// whole: verify must not pass (nor discard, as failed) a server whose
    /// port it could not see. A caller that goes only by what Nova
    /// shows calls [`Cloud::read_server`]: a Neutron listing per read of
    /// an ACTIVE server would cost an API call for nothing, and Neutron's
    /// trouble would fail a read Nova answered (no boot got past ACTIVE
    /// during a Neutron outage). One call per service asked, so that a
    /// wrapper (the daemon's metrics, the manager's note of a paused
    /// call's service) sees each: a wrapper forwards those, and leaves
    /// this one be.
    async fn get_server(&self, server_id: &str) -> CloudResult<Server> {
        let mut server = self.read_server(server_id).await?;
        if server.status == ServerStatus::Active {
            server.attached_ports = self.ports_bound_to(server_id).await?;
        }
        Ok(server)
    }
    /// A server as the compute service (Nova) shows it: status, task,
    /// deletion, fault, address, attached volumes. `attached_ports` may be
    /// left empty (the OpenStack driver reads no ports for it): a caller
    /// that goes by them calls [`Cloud::get_server`]. Every other read of
    /// a server calls this one.
    async fn read_server(&self, server_id: &str) -> CloudResult<Server>;
    /// The ports bound to server `server_id`, as the network service
    /// (Neutron) lists them. For [`Cloud::get_server`]'s use: a caller
    /// calls that.
    async fn ports_bound_to(&self, server_id: &str) -> CloudResult<Vec<String>>;
    /// Every server that carries warmpool's pool metadata. A server whose
    /// address cannot be read now is listed without one (`mysql_addr`
    /// `None`): the listing's readers go by ids, status and metadata.
    /// `attached_ports` may be left empty (the OpenStack driver reads no
    /// ports for it): read a server's ports with [`Cloud::get_server`].
    async fn list_pool_servers(&self) -> CloudResult<Vec<Server>>;
    /// Idempotent: deleting a missing server is Ok. `LeftToReclaim` for
    /// a SOFT_DELETED server the cloud will not delete for good.
    async fn delete_server(&self, server_id: &str) -> CloudResult<()>;

    async fn create_volume(&self, spec: &NewVolumeSpec) -> CloudResult<Volume>;
    async fn get_volume(&self, volume_id: &str) -> CloudResult<Volume>;
    async fn find_volumes_by_name(&self, name: &str) -> CloudResult<Vec<Volume>>;
    /// Sets `metadata`'s keys on the volume, leaving its other keys as they
    /// are (Cinder's `POST /volumes/{id}/metadata`). Idempotent. The
    /// allocator tags an untagged volume with its tenant ([`META_TENANT`])
    /// once the order it holds it for is served. Empty, it changes nothing
    /// but is refused as any write is (Cinder checks its policy before the
    /// keys): the allocator's check, before an order is recorded, that it
    /// may tag the volume. `PolicyRefused` when the cloud's policy refuses
    /// the write (Cinder's 403).
    async fn set_volume_metadata(
        &self,
        volume_id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CloudResult<()>;
    /// Idempotent: deleting a missing volume is Ok.
    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()>;
    /// Fails with `Conflict` unless the volume is `available`.
    async fn attach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()>;
    /// Idempotent: detaching a volume that is not attached is Ok.
    async fn detach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()>;

    /// Network `network_id` as the network service (Neutron) shows it;
    /// `NotFound` if it has none of that id that warmpool's user can see
    /// (a member sees its project's networks and those shared with it).
    /// A network no tenant's port may go on whatever its shares (the
    /// OpenStack driver's management networks, which it refuses at the
    /// port's create too) says so in [`Network::management`]: Neutron
    /// refused nothing, so the call did not fail.
    /// No default: a wrapper that forgot it would fence no network.
    async fn get_network(&self, network_id: &str) -> CloudResult<Network>;
    /// Whom Neutron's RBAC policies share network `network_id` with
    /// (`access_as_shared`), as far as warmpool's user is shown them: an
    /// admin sees every policy, a member (Neutron's default policy) only
    /// those of its own project's networks. No default, as above.
    async fn network_shares(&self, network_id: &str) -> CloudResult<Vec<NetworkShare>>;
    /// `PolicyRefused` when the cloud's policy refuses warmpool's user the
    /// port (Neutron's default refuses a member an address it chooses on
    /// another project's network).
    async fn create_port(&self, spec: &NewPortSpec) -> CloudResult<Port>;
    async fn get_port(&self, port_id: &str) -> CloudResult<Port>;
    async fn find_ports_by_name(&self, name: &str) -> CloudResult<Vec<Port>>;
    /// Idempotent: deleting a missing port is Ok.
    async fn delete_port(&self, port_id: &str) -> CloudResult<()>;
    async fn attach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()>;
    async fn detach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()>;

    /// Quota headroom for booting servers of `flavor` (Nova `/limits`, and
    /// the port quota where the cloud tells it: [`PORTS`], as the cloud
    /// counts them, the caller keeping what unsold servers will take). A
    /// port quota that cannot be read leaves the compute quotas' headroom,
    /// saying so ([`BootHeadroom::ports_unknown`], and its read's outcome
    /// in [`BootHeadroom::calls`]).
    async fn boot_headroom(&self, flavor: &str) -> CloudResult<BootHeadroom>;

    /// Whether `pool`'s servers can boot from `image`, and its purchases'
    /// new volumes be made in its zone: `NotFound` naming the flavor, zone,
    /// volume zone or image the cloud does not know. A pool is checked when it is
    /// created or its image changes, so a typo is refused at once instead
    /// of failing every boot or purchase. One call per service asked, so
    /// that a wrapper (the daemon's metrics) sees each: a wrapper forwards
    /// those, and leaves this one (and [`Cloud::recheck_boot_spec`]) be.
    async fn check_boot_spec(&self, pool: &PoolKey, image: &str) -> CloudResult<()> {
        self.check_boot_placement(pool).await?;
        self.check_volume_zone(pool).await?;
        self.check_boot_image(image, ImageMiss::NameOffered).await
    }

    /// [`Cloud::check_boot_spec`] for a degraded pool's periodic recheck
    /// ([`crate::events::HealthBook::note_recheck`]), which counts only
    /// whether it passes: an image the cloud lacks is named alone
    /// ([`ImageMiss::Alone`]), with no listing of the images on offer
    /// after every pause while it is missing.
    async fn recheck_boot_spec(&self, pool: &PoolKey, image: &str) -> CloudResult<()> {
        self.check_boot_placement(pool).await?;
        self.check_volume_zone(pool).await?;
        self.check_boot_image(image, ImageMiss::Alone).await
    }

    /// Whether the compute service knows `pool`'s flavor and boots servers
    /// in its zone (Nova): `NotFound` naming the one it does not. Lookups
    /// may be cached.
    async fn check_boot_placement(&self, pool: &PoolKey) -> CloudResult<()>;

    /// The disk IOPS limit of `flavor` (name or id) as the compute service
    /// tells it ([`FlavorIops`], from its extra specs): the lead-time prior
    /// of a pool that sets no `iops_limit` of its own is stretched for it.
    /// A policy that hides extra specs is `Ok(FlavorIops::Unknown)`, not an
    /// error; a flavor the cloud lacks is `NotFound`. Lookups may be
    /// cached. No default, for the reason below: a wrapper that forgot it
    /// would leave every pool on the unthrottled prior.
    async fn flavor_disk_iops(&self, flavor: &str) -> CloudResult<FlavorIops>;

    /// Whether the image service has `image` to boot from (Glance):
    /// `NotFound` naming it, and, as `miss` asks, those on offer. Lookups
    /// may be cached.
    async fn check_boot_image(&self, image: &str, miss: ImageMiss) -> CloudResult<()>;

    /// Whether the block-storage service (Cinder) has the zone new volumes
    /// of `pool`'s purchases are created in ([`Cloud::volume_zone_for`]
    /// its zone): `NotFound` naming it. Boots never touch it, so without
    /// this a pool fills and only its purchases fail. No default, for the
    /// reason below: a wrapper that forgot it would check nothing.
    async fn check_volume_zone(&self, pool: &PoolKey) -> CloudResult<()>;

    /// The volume availability zone that serves servers in `server_az`.
    /// Nova and Cinder zones often differ (a single Cinder zone `nova` for
    /// every compute zone is common); the volume fence compares against this.
    /// No default on purpose: a wrapper that forgot to forward it would
    /// silently fence every volume of such a cloud out.
    fn volume_zone_for(&self, server_az: &str) -> String;

    /// The image a server of a pool whose spec names `pool_image` boots
    /// from: `pool_image`, unless the cloud boots one image for every pool
    /// (the OpenStack driver's `image` override). Instances record it, so a
    /// pool replaces what no longer matches. No default, for the reason
    /// above: a wrapper that forgot it would record what is not booted.
    fn boot_image(&self, pool_image: &str) -> String;

    /// Which cloud this is, as a store records it ([`CloudIdentity`]).
    /// No default, for the reason above: a wrapper that forgot it would
    /// let a store move between clouds unnoticed.
    async fn cloud_identity(&self) -> CloudResult<CloudIdentity>;

    /// Whether this cloud names a region and has the services warmpool
    /// calls in it alone (its catalog read now): then a store that
    /// recorded no region (an older warmpoold's, or one run with none
    /// named) served this region, as with none named each service goes
    /// to the one region it is in ([`crate::PoolManager::claim_store`]
    /// records the region then). `false` with no region named; an error
    /// when the catalog cannot be read (a transient one for an outage). No default, for the
    /// reason above: a wrapper that forgot it would refuse such a store.
    async fn services_in_named_region_alone(&self) -> CloudResult<bool>;
}

#[cfg(test)]
mod tests {
    use super::{
        exceeds_per_volume_limit, extra_specs_iops, mentions_quota, CloudChange, CloudError,
        CloudIdentity, FlavorIops, IopsExtraSpec,
    };
    use std::time::Duration;

    fn openstack(project: &str, region: Option<&str>, tag: &str) -> CloudIdentity {
        CloudIdentity::OpenStack {
            project_id: project.into(),
            region: region.map(Into::into),
            server_tag: tag.into(),
        }
    }

    /// The project, the region (none named too), the tag and the kind are
    /// compared; a change of the tag alone, and a region named where none
    /// was recorded, are told apart.
    #[test]
    fn a_change_of_cloud_is_told_from_a_change_of_tag() {
        let here = openstack("p1", Some("r1"), "warmpool");
        let cases = [
            (openstack("p1", Some("r1"), "warmpool"), CloudChange::None),
            (openstack("p1", None, "warmpool"), CloudChange::RegionNamed),
            (openstack("p1", Some("r1"), "old"), CloudChange::ServerTag),
            (openstack("p1", None, "old"), CloudChange::Cloud),
            (openstack("p1", Some("r2"), "warmpool"), CloudChange::Cloud),
            (openstack("p1", Some("r2"), "old"), CloudChange::Cloud),
            (openstack("p2", Some("r1"), "warmpool"), CloudChange::Cloud),
            (CloudIdentity::Embedded, CloudChange::Cloud),
        ];
        for (recorded, change) in cases {
            assert_eq!(here.change_from(&recorded), change, "{recorded}");
        }
        let unnamed = openstack("p1", None, "warmpool");
        assert_eq!(
            unnamed.change_from(&openstack("p1", Some("r1"), "warmpool")),
            CloudChange::Cloud
        );
        assert_eq!(unnamed.change_from(&unnamed), CloudChange::None);
        assert_eq!(
            CloudIdentity::Embedded.change_from(&CloudIdentity::Embedded),
            CloudChange::None
        );
        // No region named is recorded as such, and read back.
        let recorded = serde_json::to_string(&unnamed).unwrap();
        assert!(recorded.contains(r#""region":null"#), "{recorded}");
        assert_eq!(
            serde_json::from_str::<CloudIdentity>(&recorded).unwrap(),
            unnamed
        );
    }

    /// A rate limit turns a call away before anything acts on it; a 503
    /// may come from in front of a service that already did it.
    #[test]
    fn a_503_or_a_lost_answer_may_have_been_done_a_rate_limit_not() {
        let throttled = |unavailable| CloudError::Throttled {
            retry_after: Some(Duration::from_secs(1)),
            message: "busy".into(),
            unavailable,
        };
        assert!(throttled(true).may_have_been_done());
        assert!(CloudError::Transient("timed out".into()).may_have_been_done());
        assert!(!throttled(false).may_have_been_done());
        for refused in [
            CloudError::QuotaExceeded("ports".into()),
            CloudError::Conflict("in use".into()),
            CloudError::NotFound("network".into()),
            CloudError::Fatal("bad request".into()),
        ] {
            assert!(!refused.may_have_been_done(), "{refused:?}");
        }
    }

    /// Faults of servers Nova put in ERROR (conductor's quota recheck,
    /// unified limits) and of builds that failed otherwise.
    #[test]
    fn server_faults_tell_quota_from_a_failed_build() {
        for quota in [
            "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances",
            "Quota exceeded for cores: Requested 4, but already used 18 of 20 cores",
            "Quota exceeded for ram: Requested 8192, but already used 49152 of 51200 ram",
            "Project 5a1d is over a limit for [Resource servers is over limit of 10 due to current usage 10 and delta 1]",
        ] {
            assert!(mentions_quota(quota), "{quota}");
        }
        for failed in [
            "No valid host was found. There are not enough hosts available.",
            "Exceeded maximum number of retries. Exhausted all hosts available for retrying build failures for instance 1f2e.",
            "Build of instance 1f2e aborted: Failed to allocate the network(s), not rescheduling.",
        ] {
            assert!(!mentions_quota(failed), "{failed}");
        }
    }

    /// Cinder's per-volume size limit, as its releases word it, is told
    /// from the quotas that fill (gigabytes, volumes), which a release
    /// frees room under.
    #[test]
    fn the_per_volume_size_limit_is_told_from_quotas_that_fill() {
        for limit in [
            "POST /volumes: Requested volume size 500G is larger than maximum allowed limit 100G. (HTTP 413)",
            "Requested volume size 500 is larger than maximum allowed limit 100.",
        ] {
            assert!(mentions_quota(limit), "{limit}");
            assert!(exceeds_per_volume_limit(limit), "{limit}");
        }
        for quota in [
            "Requested volume or snapshot exceeds allowed gigabytes quota. Requested 500G, quota is 1000G and 600G has been consumed.",
            "VolumeLimitExceeded: Maximum number of volumes allowed (10) exceeded for quota 'volumes'.",
        ] {
            assert!(!exceeds_per_volume_limit(quota), "{quota}");
        }
    }

    /// The total limit wins; else the lower of read and write, either
    /// alone if only one is set; 0 (libvirt's "no limit") and values that
    /// are no number limit nothing.
    #[test]
    fn a_flavors_disk_iops_limit_is_read_from_its_extra_specs() {
        let specs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cases = [
            (vec![], FlavorIops::Unlimited),
            (vec![("hw:cpu_policy", "dedicated")], FlavorIops::Unlimited),
            (
                vec![("quota:disk_total_iops_sec", "6400")],
                FlavorIops::Limited(6400, IopsExtraSpec::Total),
            ),
            (
                vec![
                    ("quota:disk_total_iops_sec", "6400"),
                    ("quota:disk_read_iops_sec", "100"),
                ],
                FlavorIops::Limited(6400, IopsExtraSpec::Total),
            ),
            (
                vec![
                    ("quota:disk_read_iops_sec", "3000"),
                    ("quota:disk_write_iops_sec", "1500"),
                ],
                FlavorIops::Limited(1500, IopsExtraSpec::Write),
            ),
            (
                vec![("quota:disk_write_iops_sec", " 800 ")],
                FlavorIops::Limited(800, IopsExtraSpec::Write),
            ),
            (
                vec![
                    ("quota:disk_total_iops_sec", "0"),
                    ("quota:disk_read_iops_sec", "500"),
                ],
                FlavorIops::Limited(500, IopsExtraSpec::Read),
            ),
            (
                vec![("quota:disk_total_iops_sec", "lots")],
                FlavorIops::Unlimited,
            ),
            (
                vec![("quota:disk_total_iops_sec", "99999999999")],
                FlavorIops::Limited(u32::MAX, IopsExtraSpec::Total),
            ),
            (
                vec![("quota:disk_total_bytes_sec", "52428800")],
                FlavorIops::Unlimited,
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(extra_specs_iops(&specs(&pairs)), expected, "{pairs:?}");
        }
        assert_eq!(FlavorIops::Limited(7, IopsExtraSpec::Read).limit(), Some(7));
        assert_eq!(FlavorIops::Unknown("policy".into()).limit(), None);
    }
}
