//! The OpenStack implementation of [`Cloud`]: Nova, Cinder, Neutron and
//! Glance over one osauth session.
//!
//! Every call is a raw osauth request with warmpool's own serde types
//! (`nova`, `cinder`, `neutron`), sent unchecked and classified from status,
//! headers and body (`error`). The `openstack` crate is not used: it lacks
//! attachments, interfaces, tags, `/limits` and Cinder microversions, and
//! its errors hide the status that classification needs
//! (`shared/openstack-notes.md`). `session` owns the login, re-login on 401,
//! request ids, timeouts and the per-call log line.
//!
//! Pool servers carry a tag (found with `GET /servers/detail?tags=`, because
//! Nova ignores metadata filters from non-admins) and warmpool's metadata;
//! both are checked again client-side, since a Nova that ignores the tag
//! filter would list every server. The tag goes with the create (Nova 2.52
//! or later; an older Nova is refused at connect).
//!
//! A create answered unclearly (timeout, 5xx, unreadable body) may have
//! taken effect, and its caller retries it: the next create of that server,
//! volume or port name first looks it up by name and adopts what it finds
//! (deleting twins), since a copy whose id warmpool never learned would
//! otherwise outlive the allocation it was made for.
//!
//! This module reads no files: the daemon turns its config and clouds.yaml
//! into [`OpenStackSettings`].

pub mod cinder;
pub mod error;
pub mod neutron;
pub mod nova;
pub mod session;

use crate::cloud::{
    extra_specs_iops, management_network_refusal, note_side_call, side_call_error_rewritten,
    some_names, BootHeadroom, Cloud, CloudError, CloudIdentity, CloudResult, FlavorIops,
    HeadroomCalls, ImageMiss, Network, NetworkShare, NewPortSpec, NewVolumeSpec, Port, Server,
    ServerSpec, ServerStatus, SideCall, Volume, VolumeOwner, VolumeStatus, MAX_RETRY_AFTER,
    META_INSTANCE, META_POOL, MIN_RETRY_PAUSE,
};
use crate::events::CloudService;
use async_trait::async_trait;
use error::{classify_reply, Service};
use neutron::{looks_like_id, Named};
use nova::{AbsoluteLimits, AddressRule, Flavor, QuotaUse};
use reqwest::Method;
use serde::de::DeserializeOwned;
pub use session::ConnectError;
use session::{Call, Connection, Reply};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

pub use osauth::CloudConfig;

/// Tag on every pool server.
pub const DEFAULT_SERVER_TAG: &str = "warmpool";
/// Server names are this plus the instance id.
pub const DEFAULT_SERVER_NAME_PREFIX: &str = "warmpool-";
/// The longest server name Nova takes, in characters.
pub const MAX_SERVER_NAME_CHARS: usize = 255;
/// The longest server name prefix: a server's name is the prefix and its
/// instance id, a UUID (36 characters).
pub const MAX_SERVER_NAME_PREFIX_CHARS: usize = MAX_SERVER_NAME_CHARS - 36;
pub const DEFAULT_MYSQL_PORT: u16 = 3306;
/// A cloud call (including a login) that takes longer failed transiently.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The most pages a listing follows: a cloud whose next links never end
/// (a marker it ignores) gets an error, not an endless loop.
const MAX_PAGES: usize = 1000;

/// How long a lookup of a name (flavor, image, network) is trusted: an
/// operator may replace any of them under the same name (an image rotation).
/// A boot the cloud refuses looks its names up again at once.
const NAME_TTL: Duration = Duration::from_secs(600);

/// How long after a failed lookup of a management network Neutron is not
/// asked for it again, when the failure names no wait (a 5xx, a timeout,
/// the network gone): this after the first failure, doubled at each
/// failure in a row, up to [`NAME_TTL`], while a last name that resolved
/// is read on (with none, not doubled). Every server read and listing
/// needs the name; without a pause, each would send its own lookup to a
/// Neutron that is failing or asking warmpool to back off.
const MANAGEMENT_LOOKUP_BACKOFF: Duration = Duration::from_secs(30);

/// How long the management network is not looked up again after its
/// `failures`-th failed lookup in a row (at least one) failed with `e`:
/// the Retry-After Neutron named (as the throttle gate bounds one), else
/// [`MANAGEMENT_LOOKUP_BACKOFF`] doubled.
fn management_lookup_pause(e: &CloudError, failures: u32) -> Duration {
    match e {
        CloudError::Throttled {
            retry_after: Some(wait),
            ..
        } if !wait.is_zero() => (*wait).clamp(MIN_RETRY_PAUSE, MAX_RETRY_AFTER),
        _ => {
            let doublings = failures.saturating_sub(1).min(16);
            MANAGEMENT_LOOKUP_BACKOFF
                .saturating_mul(1 << doublings)
                .min(NAME_TTL)
        }
    }
}

/// A management network whose lookup failed: not asked for before `until`.
struct LookupPaused {
    until: Instant,
    /// Failed lookups in a row.
    failures: u32,
}

/// How many deleted servers a listing leaves out are read by id at once.
const UNLISTED_LOOKUPS_AT_ONCE: usize = 16;

/// How long after the cloud refused a forceDelete for good (its policy
/// lets only an admin force-delete) none is sent: a policy answers every
/// server alike, and asking at each delete, release retry or reconcile
/// pass would only collect the same 403. Then one is tried again, in case
/// the policy was changed.
const FORCE_DELETE_ASKED_AGAIN_AFTER: Duration = Duration::from_secs(600);

/// Names (or ids) resolved with the cloud, each trusted for [`NAME_TTL`]
/// unless forgotten; the last value resolved is kept after, for a reader
/// that does better with it than with none ([`NameCache::last`]).
struct NameCache<T>(Mutex<HashMap<String, Resolved<T>>>);

struct Resolved<T> {
    value: T,
    at: tokio::time::Instant,
    forgotten: bool,
}

impl<T> Default for NameCache<T> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<T: Clone> NameCache<T> {
    fn get(&self, key: &str) -> Option<T> {
        lock(&self.0)
            .get(key)
            .filter(|r| !r.forgotten && r.at.elapsed() < NAME_TTL)
            .map(|r| r.value.clone())
    }

    /// The value `key` last resolved to, however long ago, forgotten or not.
    fn last(&self, key: &str) -> Option<T> {
        lock(&self.0).get(key).map(|r| r.value.clone())
    }

    fn insert(&self, key: String, value: T) {
        let resolved = Resolved {
            value,
            at: tokio::time::Instant::now(),
            forgotten: false,
        };
        lock(&self.0).insert(key, resolved);
    }

    /// `key` is resolved again at its next [`NameCache::get`].
    fn forget(&self, key: &str) {
        if let Some(r) = lock(&self.0).get_mut(key) {
            r.forgotten = true;
        }
    }
}

/// Neutron's 404 for a group of `tenant_port_security_groups` a port
/// create named, the names forgotten: told as such.
fn group_gone(e: CloudError) -> CloudError {
    match e {
        CloudError::NotFound(refused) => CloudError::NotFound(format!(
            "{refused} (a group of cloud.tenant_port_security_groups, deleted since it was looked up; looked up again at the next port)"
        )),
        e => e,
    }
}

/// How many tenant networks without port security are remembered
/// ([`NetworksWithoutPortSecurity`]); beyond, the one noted longest ago is
/// forgotten, and its next port is sent with the groups again.
const NETWORKS_WITHOUT_PORT_SECURITY_KEPT: usize = 1024;

/// Tenant networks (ids, in lower case: Neutron takes an id in any case) on
/// which Neutron refused a port naming security groups for want of port
/// security, and when. For [`NAME_TTL`] after, a port there is created
/// without the groups, not sent a create bound to fail first; then once
/// with them again, in case an admin turned the network's port security
/// on (a port without groups there would get the project's default).
#[derive(Default)]
struct NetworksWithoutPortSecurity(HashMap<String, Instant>);

impl NetworksWithoutPortSecurity {
    fn contains(&self, network_id: &str, now: Instant) -> bool {
        self.0
            .get(&network_id.to_ascii_lowercase())
            .is_some_and(|at| now.saturating_duration_since(*at) < NAME_TTL)
    }

    /// Notes `network_id` at `now`; whether it was not noted before.
    fn note(&mut self, network_id: &str, now: Instant) -> bool {
        let key = network_id.to_ascii_lowercase();
        if !self.0.contains_key(&key) && self.0.len() >= NETWORKS_WITHOUT_PORT_SECURITY_KEPT {
            let oldest = self.0.iter().min_by_key(|(_, at)| **at);
            if let Some(oldest) = oldest.map(|(k, _)| k.clone()) {
                self.0.remove(&oldest);
            }
        }
        self.0.insert(key, now).is_none()
    }
}

/// How many times a listing starts again after its page marker vanished
/// or a page came round again.
const MAX_LISTING_RESTARTS: u32 = 3;

/// Whether a page request failed because its marker's item is gone:
/// Neutron's 404 for the item, Nova's 400 `marker [id] not found`,
/// Glance's 400 `No image found with ID [id]` (its page for the image).
fn marker_vanished(error: &CloudError) -> bool {
    match error {
        CloudError::NotFound(_) => true,
        CloudError::Fatal(m) => {
            (m.contains("marker") && m.contains("not found"))
                || m.contains("No image found with ID")
        }
        _ => false,
    }
}

/// The names of `items` that `keep` keeps, each once, sorted (unnamed
/// ones left out).
fn names_of(items: Vec<Named>, keep: impl Fn(&Named) -> bool) -> Vec<String> {
    let names: BTreeSet<String> = items
        .into_iter()
        .filter(|item| keep(item))
        .filter_map(|item| item.name)
        .filter(|name| !name.is_empty())
        .collect();
    names.into_iter().collect()
}

/// A failed lookup of an image, network or security group by name or id,
/// told apart by what it says of the object: the start-up check marks
/// the pools naming an object the cloud has no usable one of, and stops
/// for a lookup the cloud never answered, which no pool can boot past.
/// Told by where the failure arose, not by its words: osauth's failures
/// (a service missing from the catalog, a version document refused or
/// routed nowhere) carry no HTTP status to tell them by.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LookupError {
    /// The service answered the lookup, and has no one usable object of
    /// the name: none (`NotFound`), several, or one not active.
    #[error(transparent)]
    Object(CloudError),
    /// The lookup got no such answer: the service is out of reach,
    /// refused or failed the call, or its listing pages without end.
    /// Every lookup through that service fails alike, whatever is named.
    #[error(transparent)]
    Service(CloudError),
}

impl LookupError {
    /// Whether it says something of the object looked up, and so of what
    /// names it.
    pub fn is_about_the_object(&self) -> bool {
        matches!(self, LookupError::Object(_))
    }

    pub fn error(&self) -> &CloudError {
        match self {
            LookupError::Object(e) | LookupError::Service(e) => e,
        }
    }
}

impl From<LookupError> for CloudError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::Object(e) | LookupError::Service(e) => e,
        }
    }
}

/// The error for a listing still linking a next page after [`MAX_PAGES`].
fn endless_listing(what: &str) -> CloudError {
    CloudError::Fatal(format!(
        "{what}: still a next page after {MAX_PAGES} pages (the cloud ignores the marker?)"
    ))
}

/// The markers a paged listing has followed. A cloud that ignores the
/// marker (a proxy dropping the query string) answers a page it gave
/// before: the listing fails there (after its few fresh starts, as Nova
/// may do so while servers build), rather than after [`MAX_PAGES`]
/// requests piling up copies of one page.
#[derive(Default)]
struct Markers(std::collections::HashSet<String>);

impl Markers {
    /// `next`, the marker of the page after the one just read, unless the
    /// listing has been there before.
    fn follow(&mut self, what: &str, next: Option<String>) -> CloudResult<Option<String>> {
        match next {
            Some(marker) if !self.0.insert(marker.clone()) => Err(CloudError::Fatal(format!(
                "{what}: a page came round again (marker {marker}): the cloud ignores the marker"
            ))),
            next => Ok(next),
        }
    }
}

/// Nova microversions warmpool can speak, lowest first. 2.52 (Pike): the
/// pool tag goes with `POST /servers` (2.26 has tags, but Nova tags only a
/// server no longer building, and a pool server untagged while it builds
/// is one the reconciler cannot find). Not 2.101 or later, where a volume
/// attach is asynchronous: Nova answers 202 before the volume is attached.
/// What the testbed measured at 2.104 (deploy/testbed/smoke-output-example.txt):
/// the refusals the request causes still come with the answer (a volume
/// attached to another server 400, a missing one 404, as at 2.79), and the
/// volume was `in-use` at the second look, 0.2 s after the 202. What is
/// not measured is how long a busy compute host takes after the 202 (nor
/// what Nova set to `cross_az_attach = False` answers for another zone's
/// volume): the allocator takes a volume still `available` 5 s after an
/// accepted attach, never seen `attaching`, for an attach the instance's
/// host failed, and would discard warm instances for a reserve that was
/// only slow. Up to 2.100 Nova answers once the volume is reserved.
const NOVA_VERSIONS: [(u16, u16); 2] = [(2, 52), (2, 79)];

/// From this Nova microversion a flavor's detail carries its extra specs
/// (when Nova's policy shows them); below it they are a call of their own.
const EXTRA_SPECS_IN_FLAVOR: (u16, u16) = (2, 61);

/// Everything the driver needs, as plain values: the daemon fills it from
/// its config file and clouds.yaml (or `OS_*` variables).
#[derive(Clone)]
pub struct OpenStackSettings {
    /// Credentials, region, interface, CA: one clouds.yaml entry.
    pub auth: CloudConfig,
    /// Image every pool boots, by name or id; `None`: each pool's own
    /// `image` (name or id). Names are resolved through Glance once.
    pub image: Option<String>,
    /// Network (name or id) every server gets its first port on; its fixed
    /// address is where mysqld is probed.
    pub management_network: String,
    /// Security groups (names or ids, of warmpool's project) of pool
    /// servers (Nova gives them to the boot's port, on the management
    /// network); empty: Nova's default.
    pub security_groups: Vec<String>,
    /// Security groups (names or ids, of warmpool's project) of the port
    /// made on the tenant's network at each sale, which is warmpool's
    /// project's and so not the tenant's to change; empty: none named, and
    /// Neutron gives the project's default group.
    pub tenant_port_security_groups: Vec<String>,
    /// Nova keypair for pool servers (one of the user warmpool logs in as).
    pub key_name: Option<String>,
    /// Server name = prefix + instance id.
    pub server_name_prefix: String,
    /// Tag marking pool servers.
    pub server_tag: String,
    /// mysqld's port on the management address.
    pub mysql_port: u16,
    /// For test clouds whose servers run no mysqld, e.g. deploy/testbed on
    /// Nova's fake virt driver: probe this host:port for every server.
    pub probe_address_override: Option<SocketAddr>,
    /// Per pool availability zone overrides.
    pub availability_zones: BTreeMap<String, AzSettings>,
    /// Bound on every cloud call, login included.
    pub request_timeout: Duration,
}

/// What differs per availability zone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AzSettings {
    /// Management network of servers in this AZ (name or id).
    pub management_network: Option<String>,
    /// Cinder AZ new volumes of this pool AZ are created in, when Cinder's
    /// zones are not named like Nova's (e.g. a single "nova").
    pub volume_availability_zone: Option<String>,
}

/// `auth` is left out: osauth's `CloudConfig` Debug shows the password,
/// token or application credential secret as they are.
impl std::fmt::Debug for OpenStackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            auth: _,
            image,
            management_network,
            security_groups,
            tenant_port_security_groups,
            key_name,
            server_name_prefix,
            server_tag,
            mysql_port,
            probe_address_override,
            availability_zones,
            request_timeout,
        } = self;
        f.debug_struct("OpenStackSettings")
            .field("auth", &format_args!("<not shown>"))
            .field("image", image)
            .field("management_network", management_network)
            .field("security_groups", security_groups)
            .field("tenant_port_security_groups", tenant_port_security_groups)
            .field("key_name", key_name)
            .field("server_name_prefix", server_name_prefix)
            .field("server_tag", server_tag)
            .field("mysql_port", mysql_port)
            .field("probe_address_override", probe_address_override)
            .field("availability_zones", availability_zones)
            .field("request_timeout", request_timeout)
            .finish()
    }
}

impl OpenStackSettings {
    /// Settings with every default: tag `warmpool`, names `warmpool-<id>`,
    /// mysqld on 3306, 30 s per call, no image override, no security
    /// groups (of servers or of tenants' ports), no key.
    pub fn new(auth: CloudConfig, management_network: impl Into<String>) -> Self {
        Self {
            auth,
            image: None,
            management_network: management_network.into(),
            security_groups: Vec::new(),
            tenant_port_security_groups: Vec::new(),
            key_name: None,
            server_name_prefix: DEFAULT_SERVER_NAME_PREFIX.to_owned(),
            server_tag: DEFAULT_SERVER_TAG.to_owned(),
            mysql_port: DEFAULT_MYSQL_PORT,
            probe_address_override: None,
            availability_zones: BTreeMap::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The management network (name or id) for servers in `az`.
    pub fn management_network_for(&self, az: &str) -> &str {
        self.availability_zones
            .get(az)
            .and_then(|o| o.management_network.as_deref())
            .unwrap_or(&self.management_network)
    }

    /// Every management network named, the default first, each once.
    pub fn management_networks(&self) -> Vec<&str> {
        let mut all = vec![self.management_network.as_str()];
        for o in self.availability_zones.values() {
            if let Some(n) = o.management_network.as_deref() {
                if !all.contains(&n) {
                    all.push(n);
                }
            }
        }
        all
    }
}

/// An [`OpenStackCloud`] is cheap to clone: clones share the session and caches.
#[derive(Clone)]
pub struct OpenStackCloud {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Arc<Connection>,
    settings: OpenStackSettings,
    nova_version: (u16, u16),
    flavors: NameCache<Flavor>,
    /// Flavors' disk IOPS limits by flavor id, read from their own extra
    /// specs call below [`EXTRA_SPECS_IN_FLAVOR`] (from it, the flavor
    /// cache holds them).
    flavor_iops: NameCache<FlavorIops>,
    images: NameCache<String>,
    networks: NameCache<Named>,
    /// The groups of `tenant_port_security_groups`, by name or id.
    security_groups: NameCache<Named>,
    /// Tenant networks whose ports take no security groups.
    networks_without_port_security: Mutex<NetworksWithoutPortSecurity>,
    /// Servers, volumes and ports (by service and name) whose create failed
    /// without a clear answer (timeout, 5xx, unreadable body): the cloud may
    /// have created them, so the next create of the name looks first instead
    /// of making a twin nothing would ever delete.
    uncertain_creates: Mutex<UncertainCreates>,
    /// Pool servers last seen SOFT_DELETED: a cloud with Nova's
    /// `reclaim_instance_interval` set only soft-deletes, and deleting such
    /// a server again does nothing, while it keeps its volumes and ports
    /// until the reclaim (Nova's default quota counting frees its instance,
    /// cores and RAM at the soft delete). `delete_server` force-deletes these (and
    /// forgets one whose forceDelete the cloud refuses for good). A mark
    /// follows what the cloud last said of the server (by id, in a listing,
    /// a 404, a forceDelete refused as the server is not SOFT_DELETED); a
    /// listing leaving a server out says nothing of it, since Nova leaves
    /// SOFT_DELETED servers out of a non-admin's listing.
    soft_deleted: Mutex<HashSet<String>>,
    /// Servers this process sent a delete, until the cloud answers 404 for
    /// them. The listing looks these up by id when it leaves them out: a
    /// server the cloud only soft-deleted is never listed again, and
    /// without this no one would see it to force-delete it. After a
    /// restart, servers soft-deleted before it wait for Nova's reclaim.
    deletes_sent: Mutex<HashSet<String>>,
    /// The cloud's last refusal for good of a forceDelete (Nova's policy
    /// `os_compute_api:os-deferred-delete:force` admin-only), and when:
    /// see [`FORCE_DELETE_ASKED_AGAIN_AFTER`].
    force_delete_refused: Mutex<Option<(tokio::time::Instant, String)>>,
    /// Neutron refused the port quota's details: warned of, until it tells.
    port_quota_unknown: AtomicBool,
    /// The last read of the port quota failed (a 5xx, a timeout): warned of
    /// once per outage, not at every poll of every flavor.
    port_quota_failing: AtomicBool,
    /// Zones whose management network could not be looked up, and why,
    /// as last warned of: once per problem, not per server read or per
    /// reconcile pass.
    unaddressed_zones: Mutex<HashMap<String, String>>,
    /// Management networks (by setting) whose last lookup failed, and until
    /// when none is sent ([`management_lookup_pause`]).
    management_lookups_paused: Mutex<HashMap<String, LookupPaused>>,
    /// Held while a management network is looked up: the reads that need
    /// it meanwhile (boot polls of several servers at once) wait for that
    /// one answer rather than each sending a lookup.
    management_lookup: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for OpenStackCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStackCloud")
            .field("identity", &self.inner.conn.identity())
            .field("nova_version", &self.inner.nova_version)
            .finish()
    }
}

/// The cloud's ids of what a server is booted with.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BootIds {
    flavor: String,
    image: String,
    network: String,
}

/// `reply` to `call`, a non-2xx one as its classified error.
fn checked(call: &Call, reply: Reply) -> CloudResult<Reply> {
    if reply.is_success() {
        Ok(reply)
    } else {
        Err(classify_reply(call, &reply))
    }
}

/// Why the port quota was not read: Neutron would not tell it (403, 404),
/// or failed to. Either way the headroom is Nova's quotas' alone; the
/// text is what the pools' status and check-cloud say of the ports.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PortQuotaUnread {
    #[error("Neutron refused the quota details: {0}")]
    Refused(CloudError),
    #[error("reading Neutron's quota details failed: {0}")]
    Failed(CloudError),
}

/// `call`'s outcome and how long it took.
async fn timed<T>(call: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    (call.await, started.elapsed())
}

/// A lookup's failed call, saying what it looked up where: the call
/// alone ("GET /networks") names neither the service nor the object.
fn looking_up(e: CloudError, service: Service, kind: &str, name_or_id: &str) -> CloudError {
    let said = e.clone().map_message(|m| {
        format!(
            "looking up {kind} '{name_or_id}' in {}: {m}",
            service.project()
        )
    });
    // A failed token request's side call carries the error as it is now,
    // so that the metrics count it as Keystone's alone.
    side_call_error_rewritten(&e, &said);
    said
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> CloudError {
    CloudError::Transient(format!("{what}: unreadable answer: {e}"))
}

impl OpenStackCloud {
    /// Logs in and negotiates Nova's microversion. Names (image, networks,
    /// flavors) are resolved on first use and cached for [`NAME_TTL`]; a
    /// boot the cloud refuses looks them up again.
    pub async fn connect(settings: OpenStackSettings) -> CloudResult<Self> {
        Ok(Self::connect_telling_refusal(settings).await?)
    }

    /// [`Self::connect`], telling a login Keystone refused
    /// ([`ConnectError::CredentialsRefused`]) from every other failure: the
    /// daemon's start-up waits the former out rather than exiting (a
    /// supervisor's restarts would each try the password again).
    pub async fn connect_telling_refusal(
        settings: OpenStackSettings,
    ) -> Result<Self, ConnectError> {
        let conn = Connection::connect(settings.auth.clone(), settings.request_timeout).await?;
        let nova_version = conn
            .pick_compute_version(&NOVA_VERSIONS)
            .await
            .map_err(ConnectError::Failed)?
            .ok_or_else(|| {
                ConnectError::Failed(CloudError::Fatal(
                    "Nova does not support microversion 2.52 (tags given when a server is created; Nova of Pike or later), which warmpool needs"
                        .into(),
                ))
            })?;
        tracing::info!(
            identity = conn.identity(),
            region = conn.region_note(),
            nova_microversion = %format!("{}.{}", nova_version.0, nova_version.1),
            "logged in to OpenStack"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                settings,
                nova_version,
                flavors: NameCache::default(),
                flavor_iops: NameCache::default(),
                images: NameCache::default(),
                networks: NameCache::default(),
                security_groups: NameCache::default(),
                networks_without_port_security: Mutex::default(),
                uncertain_creates: Mutex::default(),
                soft_deleted: Mutex::default(),
                deletes_sent: Mutex::default(),
                force_delete_refused: Mutex::default(),
                port_quota_unknown: AtomicBool::new(false),
                port_quota_failing: AtomicBool::new(false),
                unaddressed_zones: Mutex::default(),
                management_lookups_paused: Mutex::default(),
                management_lookup: tokio::sync::Mutex::default(),
            }),
        })
    }

    pub fn settings(&self) -> &OpenStackSettings {
        &self.inner.settings
    }

    /// "user pool in project service".
    pub fn identity(&self) -> &str {
        self.inner.conn.identity()
    }

    /// "region RegionOne", or with none named what the catalog has ("no
    /// region named (the catalog has one, RegionOne)").
    pub fn region_note(&self) -> &str {
        self.inner.conn.region_note()
    }

    /// The Nova microversion in use, e.g. "2.79".
    pub fn compute_microversion(&self) -> String {
        let (a, b) = self.inner.nova_version;
        format!("{a}.{b}")
    }

    fn nova(&self, method: Method, path: &[&str]) -> Call {
        Call::new(Service::Compute, method, path.iter().copied())
            .microversion(Some(self.inner.nova_version))
    }

    /// Sends `call`; a non-2xx answer becomes its classified error.
    async fn request(&self, call: Call) -> CloudResult<Reply> {
        let reply = self.inner.conn.send(&call).await?;
        checked(&call, reply)
    }

    async fn fetch<T: DeserializeOwned>(&self, call: Call) -> CloudResult<T> {
        let what = call.describe();
        let reply = self.request(call).await?;
        serde_json::from_str(&reply.body).map_err(|e| unreadable(&what, e))
    }

    /// For deletes and detaches: a missing object is the wanted outcome.
    async fn request_idempotent(&self, call: Call) -> CloudResult<()> {
        match self.request(call).await {
            Ok(_) | Err(CloudError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends a create of the object named `name`. A retryable failure
    /// leaves it uncertain whether the object exists (see
    /// `uncertain_creates`); only a success settles it, since a clear
    /// refusal of this create says nothing of an earlier one.
    async fn create<T: DeserializeOwned>(&self, name: &str, call: Call) -> CloudResult<T> {
        let reply = self.inner.conn.send(&call).await;
        self.created(name, &call, reply)
    }

    /// [`Self::create`]'s outcome, once `reply` answered `call`: for a
    /// caller that reads the answer itself first.
    fn created<T: DeserializeOwned>(
        &self,
        name: &str,
        call: &Call,
        reply: CloudResult<Reply>,
    ) -> CloudResult<T> {
        let service = call.service;
        let result = reply
            .and_then(|reply| checked(call, reply))
            .and_then(|reply| {
                serde_json::from_str(&reply.body).map_err(|e| unreadable(&call.describe(), e))
            });
        match &result {
            Ok(_) => self.create_settled(service, name),
            Err(e) if e.is_retryable() => {
                lock(&self.inner.uncertain_creates).mark(service, name, Instant::now());
            }
            Err(_) => {}
        }
        result
    }

    /// The image a pool's servers boot from: the configured override, or
    /// the pool's.
    fn image_name<'a>(&'a self, pool_image: &'a str) -> &'a str {
        self.inner.settings.image.as_deref().unwrap_or(pool_image)
    }

    /// The ids a boot of `spec` is sent with; a name the cloud does not know
    /// is `Fatal` (no boot of the pool can succeed).
    async fn boot_ids(&self, spec: &ServerSpec) -> CloudResult<BootIds> {
        let unknown_is_fatal = |e| match e {
            CloudError::NotFound(m) => CloudError::Fatal(m),
            e => e,
        };
        let az = spec.pool.availability_zone.as_str();
        let flavor = self
            .flavor(&spec.pool.flavor)
            .await
            .map_err(unknown_is_fatal)?;
        let image = self
            .image_id(self.image_name(&spec.image))
            .await
            .map_err(unknown_is_fatal)?;
        let network = self
            .network(self.inner.settings.management_network_for(az))
            .await
            .map_err(unknown_is_fatal)?;
        Ok(BootIds {
            flavor: flavor.id,
            image,
            network: network.id,
        })
    }

    /// Refuses a tenant's port on a management network
    /// ([`Self::management_network_of`]) at its create, after the fence
    /// (a name may resolve elsewhere meanwhile).
    async fn refuse_management_network(&self, network_id: &str) -> CloudResult<()> {
        match self.management_network_of(network_id).await? {
            Some(what) => Err(CloudError::Fatal(management_network_refusal(
                network_id, &what,
            ))),
            None => Ok(()),
        }
    }

    /// What network `network_id` is, if it is a management network or may
    /// be one ("warmpool's management network \"mgmt-net\""): a tenant's
    /// port on the network every pool server sits on would put the
    /// tenant's database beside every other tenant's warm instances.
    /// A name that fails to resolve (ambiguous now, renamed, Neutron
    /// failing) is judged by the network it last resolved to, which the
    /// pool servers booted since are on: failing the tenant's port for
    /// it would fail every purchase for a name no tenant gave. With
    /// nothing resolved before (the name ambiguous since start), the pool
    /// servers may be on any network of the name: the port is refused on
    /// one of those, taken elsewhere. A management network the cloud does
    /// not have, and never had since start, is not one the port can be on
    /// (its pools' boots fail for it); any other failed look with nothing
    /// resolved before fails the call, to be asked again. Told by the
    /// network fence's [`Cloud::get_network`] ([`Network::management`]),
    /// before an order is recorded, and again at the port's create
    /// ([`Self::refuse_management_network`]).
    async fn management_network_of(&self, network_id: &str) -> CloudResult<Option<String>> {
        for name in self.inner.settings.management_networks() {
            let network = match self.look_up_network(name).await {
                Ok(network) => network,
                Err(e) => match (self.inner.networks.last(name), e) {
                    (Some(last), _) => last,
                    (None, LookupError::Object(CloudError::NotFound(_))) => continue,
                    // Neutron answered with several networks of the name.
                    (None, LookupError::Object(CloudError::Fatal(_))) => {
                        let namesakes = self.networks_named(name).await?;
                        if namesakes
                            .iter()
                            .any(|id| id.eq_ignore_ascii_case(network_id))
                        {
                            return Ok(Some(format!(
                                "one of {} networks named as warmpool's management network {name:?}",
                                namesakes.len()
                            )));
                        }
                        continue;
                    }
                    (None, e) => return Err(e.into()),
                },
            };
            // Neutron takes an id in any case as the network it names.
            if network.id.eq_ignore_ascii_case(network_id) {
                return Ok(Some(format!("warmpool's management network {name:?}")));
            }
        }
        Ok(None)
    }

    /// Nova's refusal of a boot for its key pair ("Invalid key_name
    /// provided.") or a security group ("Security group X not found.", or
    /// a name two groups share) says nothing of where the name comes from:
    /// a key pair or group deleted since start-up's check refuses every
    /// boot.
    fn name_the_setting(&self, refused: String) -> String {
        let settings = &self.inner.settings;
        match &settings.key_name {
            Some(key) if refused.contains("Invalid key_name") => format!(
                "{refused}: the setting cloud.key_name {key:?} names no key pair of {} (Nova keeps key pairs per user: create or import it as that user, or change the setting; `warmpoold check-cloud` checks it)",
                self.identity()
            ),
            _ if refused_for_a_security_group(&refused) && !settings.security_groups.is_empty() => format!(
                "{refused}: the setting cloud.security_groups {:?} names a group Nova does not find exactly once among those of warmpool's project ({}): create the group, give the id of one of two groups of a name, or change the setting; `warmpoold check-cloud` checks it",
                settings.security_groups,
                self.identity()
            ),
            _ => refused,
        }
    }

    fn forget_boot_names(&self, spec: &ServerSpec) {
        let az = spec.pool.availability_zone.as_str();
        self.inner.flavors.forget(&spec.pool.flavor);
        self.inner.images.forget(self.image_name(&spec.image));
        self.inner
            .networks
            .forget(self.inner.settings.management_network_for(az));
    }

    fn create_uncertain(&self, service: Service, name: &str) -> bool {
        lock(&self.inner.uncertain_creates).is_marked(service, name)
    }

    fn create_settled(&self, service: Service, name: &str) {
        lock(&self.inner.uncertain_creates).settle(service, name);
    }

    /// A flavor by name or id (cached; the list is re-read on a miss).
    pub async fn flavor(&self, name_or_id: &str) -> CloudResult<Flavor> {
        if let Some(f) = self.inner.flavors.get(name_or_id) {
            return Ok(f);
        }
        // Nova pages flavors at [api] max_limit, as it pages servers.
        let flavors = self
            .list_all(
                "GET /flavors/detail",
                || self.nova(Method::GET, &["flavors", "detail"]),
                |page: nova::FlavorsBody| {
                    let has_next = nova::has_next(page.flavors_links.as_deref());
                    (page.flavors, has_next)
                },
                |f| f.id.clone(),
            )
            .await
            .map_err(|e| looking_up(e, Service::Compute, "flavor", name_or_id))?;
        // Named beside a miss: the whole list is in hand, and a misspelt
        // or retired flavor is then fixed without `openstack flavor list`
        // (CreatePool's answer, start-up's and check-cloud's).
        let names: BTreeSet<String> = flavors
            .iter()
            .filter(|f| !f.name.is_empty())
            .map(|f| f.name.clone())
            .collect();
        let cache = &self.inner.flavors;
        for f in flavors {
            cache.insert(f.id.clone(), f.clone());
            cache.insert(f.name.clone(), f);
        }
        cache.get(name_or_id).ok_or_else(|| {
            let names: Vec<String> = names.into_iter().collect();
            CloudError::NotFound(format!(
                "no flavor named '{name_or_id}' is visible to {} (visible flavors: {})",
                self.identity(),
                some_names(&names)
            ))
        })
    }

    /// [`Cloud::flavor_disk_iops`]: from the flavor's detail from
    /// [`EXTRA_SPECS_IN_FLAVOR`] (cached with the flavor), else from its
    /// `os-extra_specs` (cached as long). Nova's policy
    /// (`os_compute_api:os-flavor-extra-specs:index`, a project reader's by
    /// default, an admin's on clouds that tighten it) may hide them: the
    /// detail then leaves them out, and the call of their own is refused
    /// 403. Either is an answer, the limit unknown, not an error.
    ///
    /// Each call it sends to Nova (the flavor listing of a cache miss, the
    /// `os-extra_specs` call) is told as a [`SideCall`] of its own: a
    /// wrapper timing calls counts those, and not an answer from the cache
    /// (the replenisher asks every 10 minutes per flavor), which would pull
    /// Nova's latency towards 0 ms.
    pub async fn flavor_disk_iops_of(&self, name_or_id: &str) -> CloudResult<FlavorIops> {
        let sent = |took, error: Option<&CloudError>| {
            note_side_call(SideCall {
                service: CloudService::Compute,
                took,
                error: error.cloned(),
            })
        };
        let flavor = match self.inner.flavors.get(name_or_id) {
            Some(flavor) => flavor,
            None => {
                let (flavor, took) = timed(self.flavor(name_or_id)).await;
                sent(took, flavor.as_ref().err());
                flavor?
            }
        };
        if let Some(specs) = &flavor.extra_specs {
            return Ok(extra_specs_iops(specs));
        }
        let hidden = || {
            FlavorIops::Unknown(format!(
                "Nova's policy (os_compute_api:os-flavor-extra-specs:index) does not show flavor {}'s extra specs to {}",
                flavor.name,
                self.identity()
            ))
        };
        if self.inner.nova_version >= EXTRA_SPECS_IN_FLAVOR {
            return Ok(hidden());
        }
        if let Some(known) = self.inner.flavor_iops.get(&flavor.id) {
            return Ok(known);
        }
        let call = self
            .nova(Method::GET, &["flavors", &flavor.id, "os-extra_specs"])
            .forbidden_is_an_answer();
        let looking = |e| looking_up(e, Service::Compute, "the extra specs of flavor", name_or_id);
        let (iops, took) = timed(async {
            let reply = self.inner.conn.send(&call).await.map_err(looking)?;
            if reply.status == 403 {
                return Ok(hidden());
            }
            let reply = checked(&call, reply).map_err(looking)?;
            let body: nova::ExtraSpecsBody =
                serde_json::from_str(&reply.body).map_err(|e| unreadable(&call.describe(), e))?;
            Ok(extra_specs_iops(&body.extra_specs.unwrap_or_default()))
        })
        .await;
        sent(took, iops.as_ref().err());
        let iops = iops?;
        tracing::debug!(flavor = %flavor.name, iops = ?iops, "flavor's disk IOPS limit");
        self.inner
            .flavor_iops
            .insert(flavor.id.clone(), iops.clone());
        Ok(iops)
    }

    /// The UUID of an image given by name or id (Glance; cached).
    pub async fn image_id(&self, name_or_id: &str) -> CloudResult<String> {
        Ok(self.look_up_image(name_or_id).await?)
    }

    /// [`Self::image_id`], its failure told as of the image or of Glance.
    pub async fn look_up_image(&self, name_or_id: &str) -> Result<String, LookupError> {
        if let Some(id) = self.inner.images.get(name_or_id) {
            return Ok(id);
        }
        // Beside the image in use, a name may have failed or unfinished
        // uploads and deactivated old images: they make no ambiguity.
        let active = |i: &Named| i.status.as_deref().is_none_or(|s| s == "active");
        // Glance pages at limit_param_default (25), newest first: failed
        // uploads since the active image can push it past the first page.
        let image = self
            .resolve(
                Service::Image,
                &["images"],
                |page: neutron::ImagesBody| {
                    let has_next = page.next.as_deref().is_some_and(|n| !n.is_empty());
                    (page.images, has_next)
                },
                name_or_id,
                "image",
                active,
            )
            .await?;
        // A queued or deactivated image fails every boot.
        if let Some(status) = image.status.as_deref().filter(|s| *s != "active") {
            return Err(LookupError::Object(CloudError::Fatal(format!(
                "image '{name_or_id}' ({}) is {status}, not active",
                image.id
            ))));
        }
        let id = image.id;
        self.inner.images.insert(name_or_id.to_owned(), id.clone());
        Ok(id)
    }

    /// `image`'s id as Glance has it now, not as cached. A pool's own image
    /// that Glance lacks under the `image` override says it is one, and
    /// names the override.
    pub async fn check_image(&self, image: &str) -> Result<String, LookupError> {
        self.inner.images.forget(image);
        match (self.look_up_image(image).await, &self.inner.settings.image) {
            (Err(LookupError::Object(CloudError::NotFound(m))), Some(every_pool))
                if every_pool != image =>
            {
                Err(LookupError::Object(CloudError::NotFound(format!(
                    "{m} (the pool's own image: the setting cloud.image '{every_pool}' boots every pool, and the pool's image once that is unset)"
                ))))
            }
            (found, _) => found,
        }
    }

    /// [`Self::check_image`] for CreatePool and UpdatePool: an image Glance
    /// lacks is named beside those it offers (as a flavor Nova lacks is, and
    /// as check-cloud names them), so a misspelt or retired image is fixed
    /// without `openstack image list`. Not in the lookup itself: a boot's
    /// miss needs no listing, and check-cloud adds its own. Nor for a
    /// degraded pool's recheck ([`ImageMiss::Alone`]): nobody reads its
    /// message, and it would list Glance's images after every pause. A
    /// listing that fails adds nothing.
    async fn check_offered_image(&self, image: &str, miss: ImageMiss) -> CloudResult<()> {
        match self.check_image(image).await {
            Ok(_) => Ok(()),
            Err(LookupError::Object(CloudError::NotFound(m))) if miss == ImageMiss::NameOffered => {
                let offered = match self.image_names().await {
                    Ok(names) => format!(" (visible images: {})", some_names(&names)),
                    Err(_) => String::new(),
                };
                Err(CloudError::NotFound(format!("{m}{offered}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A Neutron network given by name or id (cached).
    pub async fn network(&self, name_or_id: &str) -> CloudResult<Named> {
        Ok(self.look_up_network(name_or_id).await?)
    }

    /// [`Self::network`], its failure told as of the network or of Neutron.
    pub async fn look_up_network(&self, name_or_id: &str) -> Result<Named, LookupError> {
        if let Some(n) = self.inner.networks.get(name_or_id) {
            return Ok(n);
        }
        // A name is looked for among warmpool's project's networks first,
        // then among all others alike: Neutron lists an admin every
        // project's networks, and any project may give one the management
        // network's name, which would otherwise be ambiguous, failing
        // every boot and tenant port. `shared` ranks nothing: a tenant may
        // RBAC-share its own network with warmpool's project (Neutron then
        // shows it shared), and ranked above another project's management
        // network it would have the pool servers boot on the tenant's
        // network. A namesake there is ambiguous, asking for the id. An id
        // needs no project.
        let project = match looks_like_id(name_or_id) {
            true => None,
            false => Some(self.inner.conn.project_id().await.map_err(|e| {
                LookupError::Service(looking_up(e, Service::Network, "network", name_or_id))
            })?),
        };
        let own = |n: &Named| n.project_id.is_some() && n.project_id == project;
        let rank = |n: &Named| Some(if own(n) { 0 } else { 1 });
        // Neutron pages at pagination_max_limit when one is set.
        let network = self
            .resolve_ranked(
                Service::Network,
                &["networks"],
                |page: neutron::NetworksBody| {
                    let has_next = nova::has_next(page.networks_links.as_deref());
                    (page.networks, has_next)
                },
                name_or_id,
                "network",
                rank,
            )
            .await?;
        self.inner
            .networks
            .insert(name_or_id.to_owned(), network.clone());
        Ok(network)
    }

    /// The ids of every network Neutron lists under the name `name`
    /// (uncached: asked only while the name is ambiguous).
    async fn networks_named(&self, name: &str) -> CloudResult<Vec<String>> {
        let listing = || Call::new(Service::Network, Method::GET, ["networks"]).query("name", name);
        let what = listing().describe();
        let networks = self
            .list_all(
                &what,
                listing,
                |page: neutron::NetworksBody| {
                    let has_next = nova::has_next(page.networks_links.as_deref());
                    (page.networks, has_next)
                },
                |n: &Named| n.id.clone(),
            )
            .await
            .map_err(|e| looking_up(e, Service::Network, "network", name))?;
        // The name filter is exact on Neutron; checked anyway.
        Ok(networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .map(|n| n.id)
            .collect())
    }

    /// The key pair `name` of the user warmpool logs in as: Nova keeps key
    /// pairs per user, and refuses a boot naming one its user lacks.
    pub async fn key_pair(&self, name: &str) -> CloudResult<nova::Keypair> {
        let call = self.nova(Method::GET, &["os-keypairs", name]);
        match self.fetch::<nova::KeypairBody>(call).await {
            Ok(body) => Ok(body.keypair),
            Err(CloudError::NotFound(_)) => Err(CloudError::NotFound(format!(
                "{} has no key pair of that name (Nova keeps key pairs per user: create or import it as the user warmpool authenticates as)",
                self.identity()
            ))),
            Err(e) => Err(e),
        }
    }

    /// The ids of `tenant_port_security_groups`, each looked up as
    /// [`Self::security_group`] does (a port of warmpool's project takes
    /// only that project's groups) and cached for [`NAME_TTL`]. A name that
    /// is not exactly one group there fails every port: Fatal, naming the
    /// setting.
    async fn tenant_port_security_group_ids(&self) -> CloudResult<Vec<String>> {
        let mut ids = Vec::new();
        for name in &self.inner.settings.tenant_port_security_groups {
            let group = match self.inner.security_groups.get(name) {
                Some(group) => group,
                None => {
                    let group = self.security_group(name).await.map_err(|e| {
                        let said = match &e {
                            CloudError::NotFound(m) | CloudError::Fatal(m) => CloudError::Fatal(
                                format!("cloud.tenant_port_security_groups {name:?}: {m}"),
                            ),
                            _ => return e,
                        };
                        // As `looking_up`: a failed token request's side
                        // call must carry the error as the caller sees it,
                        // or the metrics count it under Neutron too.
                        side_call_error_rewritten(&e, &said);
                        said
                    })?;
                    self.inner
                        .security_groups
                        .insert(name.clone(), group.clone());
                    group
                }
            };
            ids.push(group.id);
        }
        Ok(ids)
    }

    fn forget_tenant_port_security_groups(&self) {
        for name in &self.inner.settings.tenant_port_security_groups {
            self.inner.security_groups.forget(name);
        }
    }

    /// `POST /ports` of `spec`, naming the security groups `groups` (ids).
    /// A network without port security filters nothing, and ML2 takes no
    /// group on its ports (its 400): the groups mean nothing there, so the
    /// port is sent again without them, and the network noted.
    async fn post_port(
        &self,
        spec: &NewPortSpec,
        mut groups: Vec<String>,
    ) -> CloudResult<neutron::PortBody> {
        let post = |groups: &[String]| {
            Call::new(Service::Network, Method::POST, ["ports"])
                .json(neutron::create_port_body(spec, groups))
        };
        let call = post(&groups);
        let mut reply = self.inner.conn.send(&call).await;
        if !groups.is_empty()
            && reply
                .as_ref()
                .is_ok_and(neutron::refused_for_want_of_port_security)
        {
            if lock(&self.inner.networks_without_port_security)
                .note(&spec.network_id, Instant::now())
            {
                tracing::info!(
                    network = %spec.network_id,
                    "tenant network without port security: Neutron takes no security groups on its ports, and filters nothing there; its ports are made without cloud.tenant_port_security_groups"
                );
            }
            groups.clear();
            reply = self.inner.conn.send(&post(&groups)).await;
        }
        // Neutron's policy refusing warmpool's user the port (a member may
        // not choose an address on another project's network) is told
        // from the create's other refusals by its status alone: the
        // purchase's answer says what to do about it.
        let refused_by_policy = reply.as_ref().is_ok_and(|r| r.status == 403);
        match self.created(&spec.name, &call, reply) {
            Err(CloudError::Fatal(refused)) if refused_by_policy => {
                Err(CloudError::PolicyRefused(refused))
            }
            other => other,
        }
    }

    /// The security group `name_or_id` names among those of warmpool's
    /// project, as Nova looks up a boot's groups (only there: an admin's
    /// listing shows every project's). Looked up afresh: the cloud check
    /// asks this.
    pub async fn security_group(&self, name_or_id: &str) -> CloudResult<Named> {
        let project = self.inner.conn.project_id().await?;
        let ours = |g: &Named| g.project_id.as_deref() == Some(project.as_str());
        let group = self
            .resolve(
                Service::Network,
                &["security-groups"],
                |page: neutron::SecurityGroupsBody| {
                    let has_next = nova::has_next(page.security_groups_links.as_deref());
                    (page.security_groups, has_next)
                },
                name_or_id,
                "security group",
                ours,
            )
            .await?;
        if !ours(&group) {
            return Err(CloudError::NotFound(format!(
                "security group '{name_or_id}' ({}) belongs to project {}, not to warmpool's ({}): Nova gives a server only groups of its own project",
                group.id,
                group.project_id.as_deref().unwrap_or("unknown"),
                self.identity()
            )));
        }
        Ok(group)
    }

    /// The address ranges (`cidr`) of network `network_id`'s subnets: for
    /// check-cloud's look at what the management groups admit.
    pub async fn subnet_cidrs(&self, network_id: &str) -> CloudResult<Vec<String>> {
        let listing = || {
            Call::new(Service::Network, Method::GET, ["subnets"])
                .query("network_id", network_id)
                .query("fields", "id")
                .query("fields", "cidr")
        };
        let subnets = self
            .list_all(
                &listing().describe(),
                listing,
                |page: neutron::SubnetsBody| {
                    let has_next = nova::has_next(page.subnets_links.as_deref());
                    (page.subnets, has_next)
                },
                |s: &neutron::SubnetCidr| s.id.clone(),
            )
            .await?;
        Ok(subnets.into_iter().filter_map(|s| s.cidr).collect())
    }

    /// The names of the networks warmpool's user sees, each once, sorted:
    /// for a message about one it does not find.
    pub async fn network_names(&self) -> CloudResult<Vec<String>> {
        let listing = || {
            Call::new(Service::Network, Method::GET, ["networks"])
                .query("fields", "id")
                .query("fields", "name")
        };
        let networks = self
            .list_all(
                &listing().describe(),
                listing,
                |page: neutron::NetworksBody| {
                    let has_next = nova::has_next(page.networks_links.as_deref());
                    (page.networks, has_next)
                },
                |n: &Named| n.id.clone(),
            )
            .await?;
        Ok(names_of(networks, |_| true))
    }

    /// The names of the active images Glance lists to warmpool's user by
    /// default (community and hidden ones, which a lookup by name finds
    /// too, would swamp them), each once, sorted.
    pub async fn image_names(&self) -> CloudResult<Vec<String>> {
        // Glance's api_limit_max (1000), not its 25 a page.
        let listing = || Call::new(Service::Image, Method::GET, ["images"]).query("limit", "1000");
        let images = self
            .list_all(
                &listing().describe(),
                listing,
                |page: neutron::ImagesBody| {
                    let has_next = page.next.as_deref().is_some_and(|n| !n.is_empty());
                    (page.images, has_next)
                },
                |i: &Named| i.id.clone(),
            )
            .await?;
        Ok(names_of(images, |i| {
            i.status.as_deref().is_none_or(|s| s == "active")
        }))
    }

    /// The names of warmpool's project's security groups (those a boot
    /// may name), each once, sorted.
    pub async fn security_group_names(&self) -> CloudResult<Vec<String>> {
        let project = self.inner.conn.project_id().await?;
        let listing = || {
            Call::new(Service::Network, Method::GET, ["security-groups"])
                .query("project_id", project.as_str())
                .query("fields", "id")
                .query("fields", "name")
                .query("fields", "project_id")
        };
        let groups = self
            .list_all(
                &listing().describe(),
                listing,
                |page: neutron::SecurityGroupsBody| {
                    let has_next = nova::has_next(page.security_groups_links.as_deref());
                    (page.security_groups, has_next)
                },
                |g: &Named| g.id.clone(),
            )
            .await?;
        Ok(names_of(groups, |g| {
            g.project_id.as_deref() == Some(project.as_str())
        }))
    }

    /// Looks `name_or_id` up by id (when it looks like one), then by name
    /// over every page of the listing (`page_of` reads a page's items and
    /// whether a next one is linked); exactly one match of the name that
    /// `counts` is required. With none counting, one that does not is
    /// returned, for the caller to say why it cannot be used.
    async fn resolve<B: DeserializeOwned>(
        &self,
        service: Service,
        collection: &[&str],
        page_of: impl Fn(B) -> (Vec<Named>, bool),
        name_or_id: &str,
        kind: &str,
        counts: impl Fn(&Named) -> bool,
    ) -> Result<Named, LookupError> {
        let rank = |n: &Named| counts(n).then_some(0);
        self.resolve_ranked(service, collection, page_of, name_or_id, kind, rank)
            .await
    }

    /// [`Self::resolve`], the matches of the name that count ranked
    /// (`rank`: `None` does not count, lower is preferred): exactly one of
    /// the best rank present is required; one of a worse rank makes no
    /// ambiguity.
    async fn resolve_ranked<B: DeserializeOwned>(
        &self,
        service: Service,
        collection: &[&str],
        page_of: impl Fn(B) -> (Vec<Named>, bool),
        name_or_id: &str,
        kind: &str,
        rank: impl Fn(&Named) -> Option<u8>,
    ) -> Result<Named, LookupError> {
        let failed = |e| LookupError::Service(looking_up(e, service, kind, name_or_id));
        if looks_like_id(name_or_id) {
            let mut path: Vec<&str> = collection.to_vec();
            path.push(name_or_id);
            let call = Call::new(service, Method::GET, path.iter().copied());
            match self.fetch::<serde_json::Value>(call).await {
                Ok(body) => {
                    // Glance answers the bare image (its custom properties
                    // beside its fields, so one may be named "image"),
                    // Neutron wraps it under its kind ("security_group").
                    let item = match service {
                        Service::Image => body,
                        _ => body.get(kind.replace(' ', "_")).cloned().unwrap_or(body),
                    };
                    return serde_json::from_value(item)
                        .map_err(|e| failed(unreadable(&format!("GET {kind} {name_or_id}"), e)));
                }
                Err(CloudError::NotFound(_)) => {}
                Err(e) => return Err(failed(e)),
            }
        }
        let listing = |hidden: bool| {
            let call = Call::new(service, Method::GET, collection.iter().copied())
                .query("name", name_or_id);
            // Glance leaves community images (a golden image published to
            // every project) out unless asked, and hidden ones (`os_hidden`,
            // kept out of users' image lists) unless asked for alone; Nova
            // boots them all the same.
            match (service, hidden) {
                (Service::Image, false) => call.query("visibility", "all"),
                (Service::Image, true) => {
                    call.query("visibility", "all").query("os_hidden", "true")
                }
                _ => call,
            }
        };
        let what = listing(false).describe();
        let mut items = self
            .list_all(&what, || listing(false), &page_of, |n: &Named| n.id.clone())
            .await
            .map_err(failed)?;
        let named = |items: &[Named]| items.iter().any(|n| n.name.as_deref() == Some(name_or_id));
        if service == Service::Image && !named(&items) {
            let what = listing(true).describe();
            items = self
                .list_all(&what, || listing(true), &page_of, |n: &Named| n.id.clone())
                .await
                .map_err(failed)?;
        }
        // The name filter is exact on Glance and Neutron; checked anyway.
        let (counted, others): (Vec<Named>, Vec<Named>) = items
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name_or_id))
            .partition(|n| rank(n).is_some());
        let best = counted.iter().filter_map(&rank).min();
        let mut counted: Vec<Named> = counted.into_iter().filter(|n| rank(n) == best).collect();
        match counted.len() {
            0 => others.into_iter().next().ok_or_else(|| {
                LookupError::Object(CloudError::NotFound(format!(
                    "no {kind} named '{name_or_id}' is visible to {}",
                    self.identity()
                )))
            }),
            1 => Ok(counted.remove(0)),
            n => Err(LookupError::Object(CloudError::Fatal(format!(
                "{n} {kind}s are named '{name_or_id}'; give its id instead"
            )))),
        }
    }

    /// Nova's absolute limits of the project.
    pub async fn limits(&self) -> CloudResult<AbsoluteLimits> {
        let body: nova::LimitsBody = self.fetch(self.nova(Method::GET, &["limits"])).await?;
        Ok(body.limits.absolute)
    }

    /// The id of the project this user works in (Keystone's answer about
    /// its own token): where everything warmpool creates lives.
    pub async fn project_id(&self) -> CloudResult<String> {
        self.inner.conn.project_id().await
    }

    /// The project's Neutron port quota (the quota_details extension): a
    /// pool server's own port and a sold one's tenant port both count in
    /// it. `None` when unlimited. Not read when Neutron will not tell (its
    /// policy's 403, the extension missing: 404; warned of once) or fails
    /// to: the headroom is then Nova's quotas' alone.
    pub async fn port_quota(&self) -> Result<Option<QuotaUse>, PortQuotaUnread> {
        let project = self
            .inner
            .conn
            .project_id()
            .await
            .map_err(PortQuotaUnread::Failed)?;
        let call = Call::new(
            Service::Network,
            Method::GET,
            ["quotas", project.as_str(), "details"],
        );
        let what = call.describe();
        let reply = self
            .inner
            .conn
            .send(&call)
            .await
            .map_err(PortQuotaUnread::Failed)?;
        if matches!(reply.status, 403 | 404) {
            if !self.inner.port_quota_unknown.swap(true, Ordering::Relaxed) {
                let answer = error::parse_fault(&reply.body).message;
                tracing::warn!(call = %what, status = reply.status, %answer, "Neutron does not tell warmpool its port quota: quota headroom counts Nova's quotas only, so pools may fill the port quota until purchases' ports are refused with warm servers idle; let the project read its own quota (Neutron's get_quota policy, the quota_details extension) or keep the port quota at twice the servers the pools may hold");
            }
            // The policy's rule is named for what it guards ("rule:get_quota
            // is disallowed by policy"): no quota refused this read.
            return Err(PortQuotaUnread::Refused(
                match classify_reply(&call, &reply) {
                    CloudError::QuotaExceeded(message) => CloudError::Fatal(message),
                    e => e,
                },
            ));
        }
        let reply = checked(&call, reply).map_err(PortQuotaUnread::Failed)?;
        let body: neutron::QuotaDetailsBody = serde_json::from_str(&reply.body)
            .map_err(|e| PortQuotaUnread::Failed(unreadable(&what, e)))?;
        self.inner
            .port_quota_unknown
            .store(false, Ordering::Relaxed);
        Ok(body.quota.ports())
    }

    fn address_rule<'a>(&'a self, network_name: &'a str) -> AddressRule<'a> {
        AddressRule {
            network_name,
            mysql_port: self.inner.settings.mysql_port,
            probe_override: self.inner.settings.probe_address_override,
        }
    }

    /// The pool AZ a server belongs to: from its metadata (set at create),
    /// else Nova's AZ.
    fn pool_az(server: &nova::NovaServer) -> String {
        server
            .metadata
            .as_ref()
            .and_then(|m| m.get(META_POOL))
            .and_then(|p| p.rsplit_once('@'))
            .map(|(_, az)| az.to_owned())
            .or_else(|| server.availability_zone.clone())
            .unwrap_or_default()
    }

    /// warmpool's view of `server`. Its management address is read only
    /// where one is given (an ACTIVE server, no probe override), which
    /// takes the name of its zone's management network: without one (see
    /// [`Self::management_network_name`]) the server is as Nova showed it,
    /// without its address.
    async fn view(&self, server: nova::NovaServer) -> Server {
        let name = if self.addressed(&server) {
            self.management_network_name(&Self::pool_az(&server)).await
        } else {
            Some(String::new())
        };
        self.view_on(server, name.as_deref())
    }

    /// warmpool's view of `server`, its address read on the network named
    /// `network_name` (`None`: not read, `mysql_addr` is `None`).
    fn view_on(&self, server: nova::NovaServer, network_name: Option<&str>) -> Server {
        {
            let mut soft_deleted = lock(&self.inner.soft_deleted);
            if server.status.as_deref() == Some("SOFT_DELETED") {
                soft_deleted.insert(server.id.clone());
            } else {
                soft_deleted.remove(&server.id);
            }
        }
        let mut view = nova::to_server(server, &self.address_rule(network_name.unwrap_or("")));
        if network_name.is_none() {
            view.mysql_addr = None;
        }
        view
    }

    /// Whether `server`'s address is read: ACTIVE, and no probe override.
    fn addressed(&self, server: &nova::NovaServer) -> bool {
        self.inner.settings.probe_address_override.is_none()
            && nova::server_status(server.status.as_deref().unwrap_or_default())
                == ServerStatus::Active
    }

    /// The name of zone `az`'s management network, which Nova keys its
    /// servers' addresses by, to read an address on: as looked up (and
    /// cached for [`NAME_TTL`]), or while a lookup fails (Neutron down or
    /// throttling, the network renamed or its share withdrawn, a second one
    /// given its name), the last name that resolved; `None` when none ever
    /// did (a process's first lookup failing). A failed lookup fails no
    /// read Nova answered: as the server's NotFound its reader would take
    /// it for deleted, as Fatal for broken, and as any error the boots
    /// polling their servers would wait for Neutron, which Nova boots
    /// without. The reader goes on with what Nova showed, without an
    /// address where there is no name (a boot polls on until one shows).
    ///
    /// After a failed lookup, Neutron is not asked again until its
    /// Retry-After has passed, or [`management_lookup_pause`]'s backoff
    /// when it named none: the reads meanwhile go on with the last name.
    /// The lookup is the network service's call ([`note_side_call`]): a
    /// Neutron 429 is never counted as Nova's, nor pauses Nova's calls. A
    /// failure is warned of once while it lasts (a 429 only at debug: a
    /// passing refusal, no problem of the network's), and its end told.
    async fn management_network_name(&self, az: &str) -> Option<String> {
        let settings = &self.inner.settings;
        let network = settings.management_network_for(az);
        let named = |n: Named| n.name.unwrap_or_default();
        if let Some(found) = self.inner.networks.get(network) {
            return Some(named(found));
        }
        let _one_lookup = self.inner.management_lookup.lock().await;
        if let Some(found) = self.inner.networks.get(network) {
            return Some(named(found));
        }
        let last = self.inner.networks.last(network).map(named);
        let paused = lock(&self.inner.management_lookups_paused)
            .get(network)
            .is_some_and(|p| Instant::now() < p.until);
        if paused {
            return last;
        }
        let (found, took) = timed(self.network(network)).await;
        note_side_call(SideCall {
            service: CloudService::Network,
            took,
            error: found.as_ref().err().cloned(),
        });
        let e = match found {
            Ok(found) => {
                lock(&self.inner.management_lookups_paused).remove(network);
                if lock(&self.inner.unaddressed_zones).remove(az).is_some() {
                    tracing::info!(zone = %az, network, "the management network of the zone is looked up again: its servers' addresses are read on its name");
                }
                return Some(named(found));
            }
            Err(e) => e,
        };
        let asked_again_in = {
            let mut paused = lock(&self.inner.management_lookups_paused);
            let failures = paused.get(network).map_or(0, |p| p.failures) + 1;
            // With no name to go on, every read lacks the address its boot
            // waits for: ask again at the first backoff, never doubled, so
            // the address shows soon after Neutron recovers.
            let doubled_after = if last.is_some() { failures } else { 1 };
            let pause = management_lookup_pause(&e, doubled_after);
            paused.insert(
                network.to_owned(),
                LookupPaused {
                    until: Instant::now() + pause,
                    failures,
                },
            );
            humantime::format_duration(pause).to_string()
        };
        if let CloudError::Throttled { .. } = e {
            tracing::debug!(zone = %az, network, error = %e, last_name = ?last, %asked_again_in, "management network lookup throttled; the zone's servers' addresses are read on the last name that resolved, if any, until Neutron is asked again");
            return last;
        }
        let setting = match settings.availability_zones.get(az) {
            Some(AzSettings {
                management_network: Some(_),
                ..
            }) => format!("availability_zones.{az}.management_network"),
            _ => "management_network".to_owned(),
        };
        let why = format!(
            "the management network '{network}' of zone {az} (setting {setting}) cannot be looked up: {e}"
        );
        let mut failing = lock(&self.inner.unaddressed_zones);
        if failing.get(az) != Some(&why) {
            match &last {
                Some(name) => {
                    tracing::warn!(zone = %az, error = %why, %asked_again_in, "the zone's servers' addresses are read on the management network's last name that resolved, '{name}', until it is looked up again (a network renamed since shows none)")
                }
                None => {
                    tracing::warn!(zone = %az, error = %why, %asked_again_in, "the zone's servers are read and listed without their addresses (their boots cannot reach mysqld until this is mended)")
                }
            }
            failing.insert(az.to_owned(), why);
        }
        last
    }

    /// The management network names of `zones` for the pool-server
    /// listing, each looked up once ([`Self::management_network_name`]);
    /// `None` for a zone with none, whose servers are listed without an
    /// address. No reader of the listing uses one (the reconciler and the
    /// adoption of a crash's server go by ids and metadata), so a lookup
    /// failing fails no reconcile pass.
    async fn listing_network_names(
        &self,
        zones: BTreeSet<String>,
    ) -> HashMap<String, Option<String>> {
        let mut names = HashMap::new();
        for az in zones {
            let name = self.management_network_name(&az).await;
            names.insert(az, name);
        }
        names
    }

    /// The cloud says the server is gone: nothing is left to force-delete
    /// or to look for.
    fn forget_server(&self, server_id: &str) {
        lock(&self.inner.soft_deleted).remove(server_id);
        lock(&self.inner.deletes_sent).remove(server_id);
    }

    /// Why no forceDelete is sent now: the cloud refused one for good less
    /// than [`FORCE_DELETE_ASKED_AGAIN_AFTER`] ago, if it did.
    fn force_delete_refused_lately(&self) -> Option<String> {
        let refused = lock(&self.inner.force_delete_refused);
        let (at, refused) = refused.as_ref()?;
        (at.elapsed() < FORCE_DELETE_ASKED_AGAIN_AFTER).then(|| {
            format!(
                "the cloud refused warmpool's forceDelete {} s ago ({refused}), and is asked again {} min after a refusal",
                at.elapsed().as_secs(),
                FORCE_DELETE_ASKED_AGAIN_AFTER.as_secs() / 60
            )
        })
    }

    /// The answer to a delete of a SOFT_DELETED server the cloud will not
    /// force-delete, `why`. Nothing warmpool may do ends it before Nova's
    /// reclaim, so the server is forgotten (no longer read by id at each
    /// listing, which the reconciler would take for a delete to finish).
    fn left_to_reclaim(&self, server_id: &str, why: &str) -> CloudError {
        self.forget_server(server_id);
        CloudError::LeftToReclaim(format!(
            "server {server_id} stays SOFT_DELETED, keeping its ports and volumes until Nova reclaims it (reclaim_instance_interval; Nova's default quota counting frees its instance, cores and RAM at the soft delete): {why}. Let warmpool's user force-delete (Nova's policy os_compute_api:os-deferred-delete:force)"
        ))
    }

    /// The servers this process sent a delete that `listed` leaves out and
    /// the cloud still has, read by id: SOFT_DELETED ones (which Nova never
    /// lists to a non-admin) are what the listing's reader must see to
    /// finish their delete. One that cannot be read now is looked up again
    /// by the next listing.
    async fn unlisted_deletes(&self, listed: &[nova::NovaServer]) -> Vec<nova::NovaServer> {
        let unlisted: Vec<String> = lock(&self.inner.deletes_sent)
            .iter()
            .filter(|id| !listed.iter().any(|s| &s.id == *id))
            .cloned()
            .collect();
        let mut still_there = Vec::new();
        for some in unlisted.chunks(UNLISTED_LOOKUPS_AT_ONCE) {
            let answers = futures::future::join_all(some.iter().map(|id| async move {
                let call = self.nova(Method::GET, &["servers", id.as_str()]);
                (id, self.fetch::<nova::ServerBody>(call).await)
            }))
            .await;
            for (id, answer) in answers {
                match answer {
                    Ok(body) => still_there.push(body.server),
                    Err(CloudError::NotFound(_)) => self.forget_server(id),
                    Err(e) => {
                        tracing::debug!(server = %id, error = %e, "cannot read a deleted server the listing leaves out; looking again next time");
                    }
                }
            }
        }
        still_there
    }

    /// Every page of `GET /servers/detail` filtered by `key=value`.
    async fn list_servers_where(
        &self,
        what: &str,
        key: &str,
        value: &str,
    ) -> CloudResult<Vec<nova::NovaServer>> {
        self.list_all(
            what,
            || {
                self.nova(Method::GET, &["servers", "detail"])
                    .query(key, value)
            },
            |page: nova::ServersBody| {
                let has_next = nova::has_next(page.servers_links.as_deref());
                (page.servers, has_next)
            },
            |s| s.id.clone(),
        )
        .await
    }

    /// Every item of a paged listing, following `next` from the first page:
    /// `listing()` asks for the first page (a marker is added for the
    /// others), `page_of` reads a page's items and whether a next one is
    /// linked. The item a marker names may be deleted between two pages
    /// (Neutron then answers 404, Nova 400 once the row is archived), and
    /// Nova may answer a page ending with the marker's item again: the
    /// listing starts again from the first page, a few times at most. An
    /// item a page repeats elsewhere (Nova's page may start with the
    /// marker's server) is listed once, where it was first found.
    async fn list_all<B: DeserializeOwned, T>(
        &self,
        what: &str,
        listing: impl Fn() -> Call,
        page_of: impl Fn(B) -> (Vec<T>, bool),
        id_of: impl Fn(&T) -> String,
    ) -> CloudResult<Vec<T>> {
        let mut restarts = 0;
        'listing: loop {
            let mut found = Vec::new();
            let mut ids = HashSet::new();
            let mut marker: Option<String> = None;
            let mut followed = Markers::default();
            for _ in 0..MAX_PAGES {
                let mut call = listing();
                if let Some(m) = &marker {
                    call = call.query("marker", m.as_str());
                }
                let body: B = match self.fetch(call).await {
                    Ok(body) => body,
                    Err(e)
                        if marker.is_some()
                            && marker_vanished(&e)
                            && restarts < MAX_LISTING_RESTARTS =>
                    {
                        restarts += 1;
                        tracing::debug!(what, error = %e, "a page marker's item was deleted; listing again from the first page");
                        continue 'listing;
                    }
                    Err(e) => return Err(e),
                };
                let (items, has_next) = page_of(body);
                marker = match followed.follow(what, items.last().map(&id_of)) {
                    Ok(next) => next,
                    // Nova answers a marker it finds among its build
                    // requests (a server still being scheduled) with its
                    // cells' servers from the first: the page may end with
                    // the marker's server again. Once builds move on, a
                    // listing from the first page gets past it; a cloud
                    // ignoring the marker comes round every time.
                    Err(e) if restarts < MAX_LISTING_RESTARTS => {
                        restarts += 1;
                        tracing::debug!(what, error = %e, "a page came round again; listing again from the first page");
                        continue 'listing;
                    }
                    Err(e) => return Err(e),
                };
                // Callers read the list (start-up adoption), not a map by
                // id: a server listed twice would be adopted twice.
                found.extend(items.into_iter().filter(|i| ids.insert(id_of(i))));
                if !has_next || marker.is_none() {
                    return Ok(found);
                }
            }
            return Err(endless_listing(what));
        }
    }

    /// The ports bound to server `server_id`, from warmpool's project's
    /// ports: every port a pool server holds is there (Nova's at the boot,
    /// the tenant's warmpool makes), and another project's port naming the
    /// server as its device (an admin sees those) is none of its.
    async fn ports_of(&self, server_id: &str) -> CloudResult<Vec<String>> {
        let project = self.inner.conn.project_id().await?;
        // Neutron pages at pagination_max_limit when one is set.
        let ports = self
            .list_all(
                "GET /v2.0/ports",
                || {
                    Call::new(Service::Network, Method::GET, ["ports"])
                        .query("project_id", project.as_str())
                        .query("device_id", server_id)
                        .query("fields", "id")
                        .query("fields", "device_id")
                },
                |page: neutron::PortsBody| {
                    let has_next = nova::has_next(page.ports_links.as_deref());
                    (page.ports, has_next)
                },
                |p| p.id.clone(),
            )
            .await?;
        Ok(ports
            .into_iter()
            .filter(|p| p.device_id.as_deref() == Some(server_id))
            .map(|p| p.id)
            .collect())
    }

    /// Cinder's availability zones, those that take volumes now and those
    /// it lists as not available.
    pub async fn volume_zones(&self) -> CloudResult<Zones> {
        self.zones(Service::BlockStorage).await
    }

    /// Nova's availability zones that take servers now.
    pub async fn compute_zones(&self) -> CloudResult<Vec<String>> {
        Ok(self.zones(Service::Compute).await?.available)
    }

    /// A service's `GET /os-availability-zone` (Nova and Cinder answer
    /// alike).
    async fn zones(&self, service: Service) -> CloudResult<Zones> {
        let body: cinder::ZonesBody = self
            .fetch(Call::new(service, Method::GET, ["os-availability-zone"]))
            .await?;
        let mut zones = Zones::default();
        for z in body.availability_zone_info {
            if z.zone_state.available {
                zones.available.push(z.zone_name);
            } else {
                zones.unavailable.push(z.zone_name);
            }
        }
        Ok(zones)
    }

    /// `NotFound` naming Nova's zones unless `az` is one that takes
    /// servers: a pool in another boots nothing but refusals.
    pub async fn check_compute_zone(&self, az: &str) -> CloudResult<()> {
        match missing_compute_zone(az, &self.compute_zones().await?) {
            None => Ok(()),
            Some(problem) => Err(CloudError::NotFound(problem)),
        }
    }

    /// `NotFound` unless Cinder has the zone new volumes of pools in `az`
    /// are created in ([`Self::volume_az`]) and takes volumes there; the
    /// message tells a zone Cinder lacks from one it lists as unavailable
    /// ([`volume_zone_problem`]).
    pub async fn check_volume_zone_of(&self, az: &str) -> CloudResult<()> {
        match volume_zone_problem(az, &self.volume_az(az), &self.volume_zones().await?) {
            None => Ok(()),
            Some(problem) => Err(CloudError::NotFound(problem)),
        }
    }

    /// Cinder AZ for a new volume of pool AZ `az`.
    pub fn volume_az(&self, az: &str) -> String {
        self.inner
            .settings
            .availability_zones
            .get(az)
            .and_then(|o| o.volume_availability_zone.clone())
            .unwrap_or_else(|| az.to_owned())
    }

    /// Volumes are reported in Cinder's own zone; the allocator's fence maps
    /// the pool's zone through `Cloud::volume_zone_for`. The owning project,
    /// where Cinder shows it, is told from warmpool's own (asked of Keystone
    /// once, and only then).
    async fn volume_view(&self, mut v: cinder::CinderVolume) -> CloudResult<Volume> {
        let owner = match v.tenant_id.take() {
            None => VolumeOwner::NotShown,
            Some(p) if p == self.inner.conn.project_id().await? => VolumeOwner::Warmpool,
            Some(p) => VolumeOwner::Project(p),
        };
        Ok(cinder::to_volume(v, owner))
    }
}

impl OpenStackCloud {
    /// A server named `name` carrying `spec`'s instance metadata, if Nova
    /// has one. Nova's `name` filter is a regex search (hence the escapes);
    /// the exact name is checked here.
    async fn find_created(&self, name: &str, spec: &ServerSpec) -> CloudResult<Option<Server>> {
        let pattern = regex_escape(name);
        // Every page: the pattern matches longer names too (newer servers
        // may be listed first), and a twin may be on any page.
        let servers = self
            .list_servers_where("GET /servers/detail?name", "name", &pattern)
            .await?;
        let wanted = spec.metadata.get(META_INSTANCE);
        for s in servers {
            let same = s.name.as_deref() == Some(name)
                && s.metadata.as_ref().and_then(|m| m.get(META_INSTANCE)) == wanted;
            if same {
                return Ok(Some(self.view(s).await));
            }
        }
        Ok(None)
    }
}

impl OpenStackCloud {
    /// The volume an uncertain create of `name` made, if Cinder has one. Its
    /// status is whatever the lost answer would have led to: `creating` is
    /// waited out by the caller, `error` fails the caller as it would have.
    /// Twins (a lost create, then another create that failed unclearly too)
    /// are deleted, since nothing else would; one that Cinder will not
    /// delete yet (still `creating`) fails the call transiently, so the
    /// caller's retry comes back to finish the job.
    async fn adopt_volume(&self, name: &str) -> CloudResult<Option<Volume>> {
        let mut found: Vec<Volume> = self
            .find_volumes_by_name(name)
            .await?
            .into_iter()
            .filter(|v| !v.is_being_deleted())
            .collect();
        // A usable one over one in error; then by id, so that retries after
        // a twin that could not be deleted yet choose alike.
        found.sort_by(|a, b| {
            (a.status == VolumeStatus::Error, &a.id).cmp(&(b.status == VolumeStatus::Error, &b.id))
        });
        let mut found = found.into_iter();
        let Some(keep) = found.next() else {
            return Ok(None);
        };
        for twin in found {
            tracing::warn!(volume = %twin.id, kept = %keep.id, %name, "deleting a twin volume left by lost create answers");
            self.delete_volume(&twin.id).await.map_err(|e| match e {
                CloudError::Conflict(m) => CloudError::Transient(format!(
                    "twin volume {} of {name} cannot be deleted yet: {m}",
                    twin.id
                )),
                e => e,
            })?;
        }
        Ok(Some(keep))
    }

    /// The port an uncertain create of `spec` made, if Neutron has one on
    /// its network; twins are deleted (see `adopt_volume`).
    async fn adopt_port(&self, spec: &NewPortSpec) -> CloudResult<Option<Port>> {
        let mut found: Vec<Port> = self
            .find_ports_by_name(&spec.name)
            .await?
            .into_iter()
            // Neutron takes a network id in either case and answers the
            // canonical one.
            .filter(|p| p.network_id.eq_ignore_ascii_case(&spec.network_id))
            // A create makes an unbound port, so a bound one is no
            // create's answer: it is an earlier try's of the attempt (its
            // ports share the attempt's name), maybe held by a
            // SOFT_DELETED server until Nova's reclaim. Adopted, its
            // attach to the new server would be refused, the port in use;
            // deleted, Neutron refuses a member the delete of a bound port.
            // The twin watch of the attempt's name deletes it once free.
            .filter(|p| p.device_id.is_none())
            .collect();
        // By id, so that retries after a twin that could not be deleted
        // choose alike.
        found.sort_by(|a, b| a.id.cmp(&b.id));
        let mut found = found.into_iter();
        let Some(keep) = found.next() else {
            return Ok(None);
        };
        for twin in found {
            tracing::warn!(port = %twin.id, kept = %keep.id, name = %spec.name, "deleting a twin port left by lost create answers");
            // The kept port serves the order all the same; a twin exists
            // only where a create lost its answer, which marks the order's
            // creates in doubt, so its name's twin watch deletes what is
            // left here. Failing the create instead would fail the try
            // over a port it does not use.
            if let Err(e) = self.delete_port(&twin.id).await {
                tracing::warn!(port = %twin.id, kept = %keep.id, name = %spec.name, error = %e, "cannot delete a twin port now; the twin watch of its name deletes it later");
            }
        }
        Ok(Some(keep))
    }
}

/// A service's availability zones, as its `GET /os-availability-zone`
/// lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zones {
    /// Marked available: Nova boots servers, Cinder makes volumes there.
    pub available: Vec<String>,
    /// Listed but marked not available: every service of the zone (Nova's
    /// compute hosts, Cinder's cinder-volume) disabled or down.
    pub unavailable: Vec<String>,
}

impl Zones {
    /// Whether the service lists `zone` but does not take work there now.
    pub fn is_unavailable(&self, zone: &str) -> bool {
        self.unavailable.iter().any(|z| z == zone)
    }
}

/// What is wrong with `zone`, the Cinder zone new volumes of pools in `az`
/// are created in, by Cinder's `zones`; `None` if it takes volumes. A zone
/// Cinder lists as unavailable is named so: the config is right, and
/// volume_availability_zone is no fix for a maintenance.
pub fn volume_zone_problem(az: &str, zone: &str, zones: &Zones) -> Option<String> {
    if zones.available.iter().any(|z| z == zone) {
        return None;
    }
    if zones.is_unavailable(zone) {
        return Some(format!(
            "volumes of pools in {az} are created in Cinder zone '{zone}', which Cinder reports unavailable (its volume services there are down or disabled): new volumes there fail until an admin brings them back"
        ));
    }
    let listed: Vec<String> = zones
        .available
        .iter()
        .cloned()
        .chain(
            zones
                .unavailable
                .iter()
                .map(|z| format!("{z} (unavailable)")),
        )
        .collect();
    let known = if listed.is_empty() {
        "none".to_owned()
    } else {
        listed.join(", ")
    };
    Some(format!(
        "volumes of pools in {az} are created in Cinder zone '{zone}', which Cinder does not have (its zones: {known}); set volume_availability_zone for {az}"
    ))
}

/// What is wrong when `az` is not among Nova's `zones`; `None` if it is.
pub fn missing_compute_zone(az: &str, zones: &[String]) -> Option<String> {
    if zones.iter().any(|z| z == az) {
        return None;
    }
    let known = if zones.is_empty() {
        "none".to_owned()
    } else {
        zones.join(", ")
    };
    Some(format!(
        "Nova has no availability zone '{az}' that takes servers (its zones: {known})"
    ))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if ".^$*+?()[]{}|\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How long a create left uncertain is remembered. Its name is asked for
/// again by whoever retries it: a boot within its timeout (a day at most),
/// an order's volume or port within the reconciler's redo. A name nobody
/// creates again is forgotten after this, so the set does not grow with
/// every uncertain create for as long as the daemon runs; an object such a
/// create made is left to the leak sweep, as it was before.
const UNCERTAIN_CREATE_MEMORY: Duration = Duration::from_secs(2 * 86_400);

/// The creates left uncertain (see `Inner::uncertain_creates`), with when
/// each was last left so.
#[derive(Debug, Default)]
struct UncertainCreates(HashMap<(Service, String), Instant>);

impl UncertainCreates {
    fn mark(&mut self, service: Service, name: &str, now: Instant) {
        self.0
            .retain(|_, at| now.saturating_duration_since(*at) < UNCERTAIN_CREATE_MEMORY);
        self.0.insert((service, name.to_owned()), now);
    }

    fn is_marked(&self, service: Service, name: &str) -> bool {
        self.0.contains_key(&(service, name.to_owned()))
    }

    fn settle(&mut self, service: Service, name: &str) {
        self.0.remove(&(service, name.to_owned()));
    }
}

/// Whether Nova refused a boot for one of its security groups: one it
/// does not find (400 `SecurityGroupNotFound`), or a name it finds twice
/// (409 `NoUniqueMatch`, in neutronclient's words, "Multiple
/// security_group matches found"). Nova's fault names no type: only the
/// text tells.
fn refused_for_a_security_group(refused: &str) -> bool {
    let lower = refused.to_ascii_lowercase();
    lower.contains("security group") || lower.contains("security_group")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Cloud for OpenStackCloud {
    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server> {
        let settings = &self.inner.settings;
        let az = spec.pool.availability_zone.as_str();
        let ids = self.boot_ids(spec).await?;
        let instance = spec
            .metadata
            .get(META_INSTANCE)
            .cloned()
            .unwrap_or_else(|| spec.name.clone());
        let name = format!("{}{instance}", settings.server_name_prefix);
        let tags = [settings.server_tag.clone()];
        let body = |ids: &BootIds| {
            nova::create_body(&nova::CreateServer {
                name: &name,
                flavor_id: &ids.flavor,
                image_id: &ids.image,
                network_id: &ids.network,
                availability_zone: az,
                metadata: &spec.metadata,
                tags: &tags,
                security_groups: &settings.security_groups,
                key_name: settings.key_name.as_deref(),
            })
        };
        if self.create_uncertain(Service::Compute, &name) {
            if let Some(existing) = self.find_created(&name, spec).await? {
                self.create_settled(Service::Compute, &name);
                tracing::info!(server = %existing.id, %name, "an earlier create of this server took effect; using it");
                return Ok(existing);
            }
        }
        let post = |ids: &BootIds| self.nova(Method::POST, &["servers"]).json(body(ids));
        let created: nova::ServerBody = match self.create(&name, post(&ids)).await {
            // A name two groups share (Nova's 409 NoUniqueMatch) is no
            // passing conflict: every boot meets it until the setting or
            // the groups change.
            Err(CloudError::Conflict(refused)) if refused_for_a_security_group(&refused) => {
                return Err(CloudError::Fatal(self.name_the_setting(refused)))
            }
            // A flavor or image replaced under its name (an image rotation)
            // leaves an id the cloud no longer knows: look the names up
            // again, and boot once more if they now name something else.
            Err(CloudError::Fatal(refused)) => {
                self.forget_boot_names(spec);
                let fresh = self.boot_ids(spec).await?;
                if fresh == ids {
                    return Err(CloudError::Fatal(self.name_the_setting(refused)));
                }
                tracing::info!(flavor = %spec.pool.flavor, image = %self.image_name(&spec.image), "the flavor or image changed under its name; booting with the new one");
                self.create(&name, post(&fresh))
                    .await
                    .map_err(|e| match e {
                        CloudError::Fatal(refused) => {
                            CloudError::Fatal(self.name_the_setting(refused))
                        }
                        e => e,
                    })?
            }
            other => other?,
        };
        let id = created.server.id;
        Ok(Server {
            id,
            name,
            status: ServerStatus::Build,
            availability_zone: az.to_owned(),
            metadata: spec.metadata.clone(),
            mysql_addr: None,
            fault: None,
            attached_volumes: Vec::new(),
            attached_ports: Vec::new(),
            deleting: false,
            busy: None,
            locked: false,
        })
    }

    async fn read_server(&self, server_id: &str) -> CloudResult<Server> {
        let body: nova::ServerBody = match self
            .fetch(self.nova(Method::GET, &["servers", server_id]))
            .await
        {
            Err(e @ CloudError::NotFound(_)) => {
                self.forget_server(server_id);
                return Err(e);
            }
            other => other?,
        };
        Ok(self.view(body.server).await)
    }

    async fn ports_bound_to(&self, server_id: &str) -> CloudResult<Vec<String>> {
        self.ports_of(server_id).await
    }

    async fn list_pool_servers(&self) -> CloudResult<Vec<Server>> {
        let tag = &self.inner.settings.server_tag;
        // Nova pages at osapi_max_limit (1000 by default).
        let mut found = self
            .list_servers_where("GET /servers/detail", "tags", tag)
            .await?;
        // Nova leaves SOFT_DELETED servers out: those warmpool deleted
        // still need their forceDelete, and only the listing's reader (the
        // reconciler) is left to send it.
        found.extend(self.unlisted_deletes(&found).await);
        // No port listing: none of the listing's readers goes by ports (the
        // allocator's verify reads a server's own through `get_server`), and
        // Neutron's trouble would otherwise fail the listing, and with it
        // the start-up and every reconcile pass, though Nova answered.
        found.retain(|s| {
            let tagged = s.tags.as_ref().is_some_and(|t| t.contains(tag));
            let ours = s
                .metadata
                .as_ref()
                .is_some_and(|m| m.contains_key(META_POOL));
            tagged && ours
        });
        let zones = found
            .iter()
            .filter(|s| self.addressed(s))
            .map(Self::pool_az)
            .collect();
        let names = self.listing_network_names(zones).await;
        let mut servers = Vec::new();
        for s in found {
            let name = if self.addressed(&s) {
                names.get(&Self::pool_az(&s)).cloned().flatten()
            } else {
                Some(String::new())
            };
            servers.push(self.view_on(s, name.as_deref()));
        }
        Ok(servers)
    }

    async fn delete_server(&self, server_id: &str) -> CloudResult<()> {
        lock(&self.inner.deletes_sent).insert(server_id.to_owned());
        if lock(&self.inner.soft_deleted).contains(server_id) {
            if let Some(why) = self.force_delete_refused_lately() {
                return Err(self.left_to_reclaim(server_id, &why));
            }
            // Nova before 2023 force-deletes only a SOFT_DELETED server, so
            // this is sent only for one seen so.
            let force = self
                .nova(Method::POST, &["servers", server_id, "action"])
                .json(serde_json::json!({ "forceDelete": null }));
            // The status is kept: only it tells the policy's refusal from
            // the other Fatal answers (below).
            let reply = self.inner.conn.send(&force).await?;
            let status = reply.status;
            match checked(&force, reply) {
                Ok(_) | Err(CloudError::NotFound(_)) => {
                    lock(&self.inner.soft_deleted).remove(server_id);
                    *lock(&self.inner.force_delete_refused) = None;
                    return Ok(());
                }
                // Refused for good: Nova's 403 where the policy lets only
                // an admin force-delete. A plain delete would do nothing
                // (Nova may even take it as another soft delete and put the
                // reclaim off), so the server is left to the reclaim. Not
                // any other Fatal (a 401 after the re-login, a 400; the
                // login's failures come from `send`): those pass, and taken
                // as the policy they would leave every server deleted in
                // the next 10 minutes to the reclaim, holding its ports. They fail this delete, asked again later.
                Err(CloudError::Fatal(refused)) if status == 403 => {
                    tracing::warn!(server = server_id, reason = %refused, "the cloud refuses warmpool's forceDelete: servers it soft-deletes keep their ports and volumes until Nova reclaims them (Nova's default quota counting frees their instances, cores and RAM at the soft delete); let warmpool's user force-delete (Nova's policy os_compute_api:os-deferred-delete:force)");
                    *lock(&self.inner.force_delete_refused) =
                        Some((tokio::time::Instant::now(), refused.clone()));
                    let why = format!("the cloud refuses its forceDelete ({refused})");
                    return Err(self.left_to_reclaim(server_id, &why));
                }
                // No longer SOFT_DELETED (restored since it was seen so, or
                // a forceDelete already under way): the mark was stale, and
                // the plain delete below is what such a server takes.
                Err(CloudError::Conflict(refused)) => {
                    tracing::debug!(server = server_id, reason = %refused, "forceDelete refused; deleting the server as one not soft-deleted");
                    lock(&self.inner.soft_deleted).remove(server_id);
                }
                Err(e) => return Err(e),
            }
        }
        self.request_idempotent(self.nova(Method::DELETE, &["servers", server_id]))
            .await
    }

    async fn create_volume(&self, spec: &NewVolumeSpec) -> CloudResult<Volume> {
        if self.create_uncertain(Service::BlockStorage, &spec.name) {
            if let Some(existing) = self.adopt_volume(&spec.name).await? {
                self.create_settled(Service::BlockStorage, &spec.name);
                tracing::info!(volume = %existing.id, name = %spec.name, "an earlier create of this volume took effect; using it");
                return Ok(existing);
            }
        }
        let az = self.volume_az(&spec.availability_zone);
        let call = Call::new(Service::BlockStorage, Method::POST, ["volumes"])
            .json(cinder::create_body(spec, Some(&az)));
        let body: cinder::VolumeBody = self.create(&spec.name, call).await?;
        self.volume_view(body.volume).await
    }

    async fn get_volume(&self, volume_id: &str) -> CloudResult<Volume> {
        let call = Call::new(Service::BlockStorage, Method::GET, ["volumes", volume_id]);
        let body: cinder::VolumeBody = self.fetch(call).await?;
        self.volume_view(body.volume).await
    }

    async fn find_volumes_by_name(&self, name: &str) -> CloudResult<Vec<Volume>> {
        // Cinder pages at osapi_max_limit; twins may be on any page.
        let volumes = self
            .list_all(
                "GET /volumes/detail?name",
                || {
                    Call::new(Service::BlockStorage, Method::GET, ["volumes", "detail"])
                        .query("name", name)
                },
                |page: cinder::VolumesBody| {
                    let has_next = nova::has_next(page.volumes_links.as_deref());
                    (page.volumes, has_next)
                },
                |v| v.id.clone(),
            )
            .await?;
        let mut found = Vec::new();
        for v in volumes {
            if v.name.as_deref().unwrap_or_default() == name {
                found.push(self.volume_view(v).await?);
            }
        }
        Ok(found)
    }

    /// Cinder merges the keys into the volume's metadata (a `PUT` would
    /// replace all of them); its default policy lets a member of the
    /// volume's project do it.
    async fn set_volume_metadata(
        &self,
        volume_id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        let call = Call::new(
            Service::BlockStorage,
            Method::POST,
            ["volumes", volume_id, "metadata"],
        )
        .json(serde_json::json!({ "metadata": metadata }));
        // The status is kept: only it tells the policy's refusal from the
        // other Fatal answers (a 400 for a volume being uploaded or
        // migrated, a 401 after the login again).
        let reply = self.inner.conn.send(&call).await?;
        let status = reply.status;
        match checked(&call, reply) {
            Ok(_) => Ok(()),
            Err(CloudError::Fatal(refused)) if status == 403 => {
                Err(CloudError::PolicyRefused(refused))
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        self.request_idempotent(Call::new(
            Service::BlockStorage,
            Method::DELETE,
            ["volumes", volume_id],
        ))
        .await
    }

    async fn attach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()> {
        // 200 with a body at the microversions spoken; only the status is
        // read, so a 202 with none (2.101 and later) would do too.
        // Completion shows as the volume going `in-use`.
        self.request(
            self.nova(
                Method::POST,
                &["servers", server_id, "os-volume_attachments"],
            )
            .json(serde_json::json!({ "volumeAttachment": { "volumeId": volume_id } })),
        )
        .await
        .map(drop)
    }

    async fn detach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()> {
        let detach = self
            .request_idempotent(self.nova(
                Method::DELETE,
                &["servers", server_id, "os-volume_attachments", volume_id],
            ))
            .await;
        match detach {
            // Nova answers 400 "Volume status must be 'in-use' ... to detach"
            // while an earlier detach is still running: that one will do.
            Err(CloudError::Conflict(message)) => {
                let volume = self.get_volume(volume_id).await?;
                let attached_here = volume.attached_to.iter().any(|s| s == server_id);
                if !attached_here
                    || matches!(
                        volume.status,
                        crate::cloud::VolumeStatus::Detaching
                            | crate::cloud::VolumeStatus::Available
                    )
                {
                    Ok(())
                } else {
                    Err(CloudError::Conflict(message))
                }
            }
            other => other,
        }
    }

    /// Read afresh, not from the name cache: an order's network is given
    /// by id, and whose it is is what the read is for. Whether it is a
    /// management network is judged first ([`Self::management_network_of`]:
    /// its name's lookup is cached).
    async fn get_network(&self, network_id: &str) -> CloudResult<Network> {
        // The fence's look: a management network is said to be one here,
        // for the fence to refuse before the order is recorded, and not
        // judge by its shares, which could only send the operator to share
        // what no share makes a tenant's. Said, not failed: Neutron
        // refused nothing, and the call is no failure of Neutron's.
        let management = self.management_network_of(network_id).await?;
        let call = Call::new(Service::Network, Method::GET, ["networks", network_id]);
        let what = call.describe();
        let body: neutron::NetworkBody = self.fetch(call).await?;
        let own = self.inner.conn.project_id().await?;
        let network = neutron::to_network(body.network, &own).map_err(|e| unreadable(&what, e))?;
        Ok(Network {
            management,
            ..network
        })
    }

    async fn network_shares(&self, network_id: &str) -> CloudResult<Vec<NetworkShare>> {
        // Neutron pages at pagination_max_limit, as every listing.
        let policies = self
            .list_all(
                "GET /rbac-policies",
                || {
                    Call::new(Service::Network, Method::GET, ["rbac-policies"])
                        .query("object_type", "network")
                        .query("object_id", network_id)
                        .query("action", "access_as_shared")
                },
                |page: neutron::RbacPoliciesBody| {
                    let has_next = nova::has_next(page.rbac_policies_links.as_deref());
                    (page.rbac_policies, has_next)
                },
                |p| p.id.clone(),
            )
            .await?;
        let own = self.inner.conn.project_id().await?;
        Ok(neutron::network_shares(policies, network_id, &own))
    }

    async fn create_port(&self, spec: &NewPortSpec) -> CloudResult<Port> {
        self.refuse_management_network(&spec.network_id).await?;
        if self.create_uncertain(Service::Network, &spec.name) {
            if let Some(existing) = self.adopt_port(spec).await? {
                self.create_settled(Service::Network, &spec.name);
                tracing::info!(port = %existing.id, name = %spec.name, "an earlier create of this port took effect; using it");
                return Ok(existing);
            }
        }
        let without_port_security = lock(&self.inner.networks_without_port_security)
            .contains(&spec.network_id, Instant::now());
        let groups = if without_port_security {
            Vec::new()
        } else {
            self.tenant_port_security_group_ids().await?
        };
        let refuses_a_group = |e: &CloudError, groups: &[String]| matches!(e, CloudError::NotFound(m) if groups.iter().any(|g| m.contains(g.as_str())));
        let body = match self.post_port(spec, groups.clone()).await {
            // A group deleted since it was looked up: replaced under its
            // name, the port is made with the new one; a name now naming
            // no group is Fatal, naming the setting.
            Err(e) if refuses_a_group(&e, &groups) => {
                self.forget_tenant_port_security_groups();
                let fresh = self.tenant_port_security_group_ids().await?;
                if fresh == groups {
                    self.forget_tenant_port_security_groups();
                    return Err(group_gone(e));
                }
                tracing::info!(
                    groups = ?self.inner.settings.tenant_port_security_groups,
                    "a group of cloud.tenant_port_security_groups was replaced under its name; the port is made with the new one"
                );
                match self.post_port(spec, fresh.clone()).await {
                    Err(e) if refuses_a_group(&e, &fresh) => {
                        self.forget_tenant_port_security_groups();
                        return Err(group_gone(e));
                    }
                    other => other?,
                }
            }
            other => other?,
        };
        Ok(neutron::to_port(body.port))
    }

    async fn get_port(&self, port_id: &str) -> CloudResult<Port> {
        let call = Call::new(Service::Network, Method::GET, ["ports", port_id]);
        let body: neutron::PortBody = self.fetch(call).await?;
        Ok(neutron::to_port(body.port))
    }

    /// Warmpool's project's ports only, as [`Self::ports_of`] reads them:
    /// an admin is listed every project's, and a tenant may name a port of
    /// its own (on its own network) as warmpool names an order's. Found by
    /// name, a port is adopted after a lost create (the tenant could change
    /// it) or deleted by a twin watch.
    async fn find_ports_by_name(&self, name: &str) -> CloudResult<Vec<Port>> {
        let project = self.inner.conn.project_id().await?;
        // Neutron pages at pagination_max_limit; twins may be on any page.
        let ports = self
            .list_all(
                "GET /v2.0/ports?name",
                || {
                    Call::new(Service::Network, Method::GET, ["ports"])
                        .query("name", name)
                        .query("project_id", project.as_str())
                },
                |page: neutron::PortsBody| {
                    let has_next = nova::has_next(page.ports_links.as_deref());
                    (page.ports, has_next)
                },
                |p| p.id.clone(),
            )
            .await?;
        // Checked too: a filter Neutron (or a proxy) left out would list
        // every project's. An answer without the field is the filter's.
        Ok(ports
            .into_iter()
            .filter(|p| p.project_id.as_deref().is_none_or(|p| p == project))
            .map(neutron::to_port)
            .filter(|p| p.name == name)
            .collect())
    }

    async fn delete_port(&self, port_id: &str) -> CloudResult<()> {
        self.request_idempotent(Call::new(
            Service::Network,
            Method::DELETE,
            ["ports", port_id],
        ))
        .await
    }

    async fn attach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()> {
        self.request(
            self.nova(Method::POST, &["servers", server_id, "os-interface"])
                .json(serde_json::json!({ "interfaceAttachment": { "port_id": port_id } })),
        )
        .await
        .map(drop)
    }

    async fn detach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()> {
        self.request_idempotent(self.nova(
            Method::DELETE,
            &["servers", server_id, "os-interface", port_id],
        ))
        .await
    }

    fn volume_zone_for(&self, server_az: &str) -> String {
        self.volume_az(server_az)
    }

    fn boot_image(&self, pool_image: &str) -> String {
        self.image_name(pool_image).to_owned()
    }

    async fn cloud_identity(&self) -> CloudResult<CloudIdentity> {
        Ok(CloudIdentity::OpenStack {
            project_id: self.inner.conn.project_id().await?,
            region: self.inner.conn.region().map(str::to_owned),
            server_tag: self.inner.settings.server_tag.clone(),
        })
    }

    async fn services_in_named_region_alone(&self) -> CloudResult<bool> {
        self.inner.conn.services_in_named_region_alone().await
    }

    async fn boot_headroom(&self, flavor: &str) -> CloudResult<BootHeadroom> {
        let (flavor, flavor_took) = timed(self.flavor(flavor)).await;
        let flavor = flavor?;
        let ((limits, limits_took), (ports, ports_took)) =
            tokio::join!(timed(self.limits()), timed(self.port_quota()));
        // Neutron's trouble (a 5xx, a timeout, a 429) is no reason to stop
        // or throttle the boots Nova's quotas admit.
        let failing = &self.inner.port_quota_failing;
        let (ports, unread) = match ports {
            Ok(ports) => {
                if failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("Neutron's port quota is read again: quota headroom counts it");
                }
                (ports, None)
            }
            Err(unread) => {
                let why = unread.to_string();
                match unread {
                    // Answered: an outage is over, and the refusal warned of.
                    PortQuotaUnread::Refused(e) => {
                        failing.store(false, Ordering::Relaxed);
                        (None, Some((why, e)))
                    }
                    PortQuotaUnread::Failed(e) => {
                        if failing.swap(true, Ordering::Relaxed) {
                            tracing::debug!(error = %e, "still cannot read Neutron's port quota");
                        } else {
                            tracing::warn!(error = %e, "cannot read Neutron's port quota: quota headroom is Nova's quotas' alone until it answers (not warned of again before then)");
                        }
                        (None, Some((why, e)))
                    }
                }
            }
        };
        let mut headroom = limits?.headroom(&flavor, ports.as_ref());
        let (why, network_error) = unread.unzip();
        headroom.ports_unknown = why;
        headroom.calls = Some(HeadroomCalls {
            compute: flavor_took + limits_took,
            network: ports_took,
            network_error,
        });
        Ok(headroom)
    }

    async fn check_boot_placement(&self, pool: &crate::model::PoolKey) -> CloudResult<()> {
        // What the cloud says now, not what was cached.
        self.inner.flavors.forget(&pool.flavor);
        self.flavor(&pool.flavor).await?;
        self.check_compute_zone(&pool.availability_zone).await
    }

    async fn check_volume_zone(&self, pool: &crate::model::PoolKey) -> CloudResult<()> {
        self.check_volume_zone_of(&pool.availability_zone).await
    }

    async fn flavor_disk_iops(&self, flavor: &str) -> CloudResult<FlavorIops> {
        self.flavor_disk_iops_of(flavor).await
    }

    /// Under the `image` override, the pool's own image too: it boots
    /// nothing while the override is set, but does once it is unset, so a
    /// typo is refused now, as without the override, rather than stored,
    /// shown as the pool's image, and failing every boot later.
    async fn check_boot_image(&self, image: &str, miss: ImageMiss) -> CloudResult<()> {
        if let Some(every_pool) = &self.inner.settings.image {
            self.check_offered_image(every_pool, miss).await?;
            if every_pool == image {
                return Ok(());
            }
        }
        self.check_offered_image(image, miss).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed management network lookup waits out the Retry-After
    /// Neutron named (bounded as the throttle gate bounds one), else 30 s
    /// doubling with each failure in a row up to the name's ten minutes.
    #[test]
    fn a_failed_management_lookup_pauses_for_the_retry_after_or_a_doubling_backoff() {
        let throttled = |wait: Option<Duration>| CloudError::Throttled {
            retry_after: wait,
            message: "429".into(),
            unavailable: false,
        };
        let secs = |e: &CloudError, n: u32| management_lookup_pause(e, n).as_secs();
        let failing = CloudError::Transient("500".into());
        let pauses: Vec<u64> = (1..=7).map(|n| secs(&failing, n)).collect();
        assert_eq!(pauses, [30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(secs(&failing, u32::MAX), 600);
        let asked = throttled(Some(Duration::from_secs(45)));
        assert_eq!((secs(&asked, 1), secs(&asked, 5)), (45, 45));
        assert_eq!(secs(&throttled(Some(Duration::from_secs(86_400))), 1), 3600);
        // "Retry-After: 0" and none name no wait: the backoff applies.
        assert_eq!(secs(&throttled(Some(Duration::ZERO)), 2), 60);
        assert_eq!(secs(&throttled(None), 1), 30);
    }

    #[test]
    fn an_uncertain_create_is_remembered_until_settled_or_long_forgotten() {
        let t0 = Instant::now();
        let mut uncertain = UncertainCreates::default();
        uncertain.mark(Service::Compute, "wp-a", t0);
        uncertain.mark(Service::BlockStorage, "wp-a", t0);
        assert!(uncertain.is_marked(Service::Compute, "wp-a"));
        assert!(!uncertain.is_marked(Service::Network, "wp-a"));
        uncertain.settle(Service::BlockStorage, "wp-a");
        assert!(!uncertain.is_marked(Service::BlockStorage, "wp-a"));

        // A later uncertain create keeps what is recent and drops what
        // nobody created again within the memory.
        uncertain.mark(Service::Network, "wp-b", t0 + UNCERTAIN_CREATE_MEMORY / 2);
        assert!(uncertain.is_marked(Service::Compute, "wp-a"));
        uncertain.mark(Service::Network, "wp-c", t0 + UNCERTAIN_CREATE_MEMORY);
        assert!(!uncertain.is_marked(Service::Compute, "wp-a"));
        assert!(uncertain.is_marked(Service::Network, "wp-b"));
        assert_eq!(uncertain.0.len(), 2);
    }

    #[test]
    fn a_missing_volume_zone_names_cinders_unavailable_zones_as_such() {
        let zones = Zones {
            available: vec!["az1".into()],
            unavailable: vec!["az2".into()],
        };
        assert_eq!(volume_zone_problem("az1", "az1", &zones), None);
        let missing = volume_zone_problem("az3", "nova", &zones).unwrap();
        assert!(
            missing.contains("(its zones: az1, az2 (unavailable)); set volume_availability_zone"),
            "{missing}"
        );
    }

    /// A network without port security is noted once (the first note says
    /// so, for the one log line), in any case, trusted for NAME_TTL, and
    /// the notes are bounded: the oldest makes room.
    #[test]
    fn networks_without_port_security_are_noted_for_a_while_and_bounded() {
        let t0 = Instant::now();
        let mut open = NetworksWithoutPortSecurity::default();
        assert!(open.note("NET-A", t0));
        assert!(!open.note("net-a", t0));
        assert!(open.contains("net-a", t0 + NAME_TTL / 2));
        assert!(!open.contains("net-a", t0 + NAME_TTL));
        assert!(!open.note("net-a", t0 + NAME_TTL));
        assert!(open.contains("net-a", t0 + NAME_TTL));

        for i in 1..NETWORKS_WITHOUT_PORT_SECURITY_KEPT {
            open.note(&format!("net-{i}"), t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(open.0.len(), NETWORKS_WITHOUT_PORT_SECURITY_KEPT);
        assert!(open.note("net-new", t0 + NAME_TTL));
        assert_eq!(open.0.len(), NETWORKS_WITHOUT_PORT_SECURITY_KEPT);
        assert!(!open.0.contains_key("net-1"), "the oldest note made room");
        assert!(open.contains("net-a", t0 + NAME_TTL));
    }
}
