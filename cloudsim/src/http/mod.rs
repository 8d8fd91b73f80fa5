//! The HTTP face: the subset of Keystone v3, Nova v2.1, Cinder v3, Neutron
//! v2.0 and Glance v2 that warmpool's OpenStack driver uses, served over the
//! same [`SimCloud`] model as the in-process face, so the model's fault knobs
//! ([`crate::Faults`]) show through both and the driver is exercised over
//! real HTTP with real status codes, headers and bodies.
//!
//! This module owns the listener, the routing (one listener, one path prefix
//! per service: `/identity`, `/compute`, `/volume`, `/network`, `/image`,
//! which the Keystone catalog points at), token validation, the HTTP-only
//! fault knobs ([`HttpFaults`]) and the per-server loopback addresses at
//! which simulated mysqld greets. Each service's routes live in its own
//! module; [`errors`] maps model errors to each service's error shape.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloudsim::http::HttpError> {
//! use cloudsim::http::{HttpFace, HttpSettings};
//! use cloudsim::{SimCloud, SimConfig};
//! let sim = SimCloud::new(SimConfig { time_scale: 0.01, ..SimConfig::default() });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let face = HttpFace::serve(sim.clone(), HttpSettings::default(), listener).await?;
//! println!("{}", face.clouds_yaml("cloudsim"));
//! face.faults().throttle_next(cloudsim::http::Service::Compute, 2, std::time::Duration::from_secs(3));
//! sim.faults().error_next_boots(1, "NoValidHost"); // seen by Nova's GET /servers/{id}
//! face.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Faults: calls that touch servers, volumes, ports, flavors or limits pass
//! the model's API gate like in-process calls do, so [`crate::Faults`]
//! (`api_errors_next`, `hang_after_calls`, `hang_after_calls_take_effect`
//! (the request is served, its response never sent), `slow_calls`, the rate limit,
//! `error_next_boots`, `fail_next_volume_attach`, quotas, ...) shows through
//! HTTP, and [`SimCloud::call_counts`] counts them under the in-process
//! method names where one matches (`create_server`, `get_server`,
//! `delete_server`, `attach_volume`, `detach_volume`, `create_volume`,
//! `get_volume`, `find_volumes_by_name`, `delete_volume`, `create_port`,
//! `get_port`, `find_ports_by_name`, `delete_port`, `attach_port`,
//! `detach_port`, `boot_headroom` for Nova's `/limits`) and otherwise under
//! `list_servers`, `list_servers_detail`, `tag_server`, `list_flavors`,
//! `get_flavor`, `list_volume_attachments`, `list_interfaces`,
//! `volume_limits`, `update_port`. Keystone, version documents, networks,
//! subnets, security groups, key pairs, quotas and images do not pass the
//! gate (they have no model state); [`HttpFaults`] covers them.
//!
//! Readiness: every server created through Nova here gets its own loopback
//! address `127.77.x.y` (all of 127/8 is loopback on Linux) and its mysqld
//! greets at `<that address>:<mysql_port>` once ready; that address is the
//! server's fixed IP in Nova's `addresses`, on its first network. Servers
//! created through the in-process face keep their `127.0.0.1:<random>`
//! listener, so over HTTP they show `127.0.0.1` and greet on another port.
//! If something holds `*:<mysql_port>` (a wildcard bind), no per-server
//! address can be bound: [`HttpFace::serve`] refuses to start
//! ([`HttpError::MysqlPortTaken`]), and a create that meets it later
//! answers 500 naming the cause (logged at WARN): choose another
//! `mysql_port`. With `SimConfig::listeners` off, servers get
//! the model's synthetic addresses and nothing greets.

mod cinder;
pub mod errors;
mod glance;
mod keystone;
mod neutron;
mod nova;

use crate::sim::SimCloud;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
pub use errors::ApiError;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One of the services the face speaks; selects URL prefix, error shape and
/// the HTTP fault counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// Keystone, `/identity`.
    Identity,
    /// Nova, `/compute`.
    Compute,
    /// Cinder, `/volume`.
    Volume,
    /// Neutron, `/network`.
    Network,
    /// Glance, `/image`.
    Image,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Identity,
        Service::Compute,
        Service::Volume,
        Service::Network,
        Service::Image,
    ];

    /// The path prefix the service is served under.
    pub fn prefix(self) -> &'static str {
        match self {
            Service::Identity => "/identity",
            Service::Compute => "/compute",
            Service::Volume => "/volume",
            Service::Network => "/network",
            Service::Image => "/image",
        }
    }
}

/// Errors of starting or stopping the face.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cloudsim HTTP face: listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("cloudsim HTTP face: server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// No server's own address can be bound at `mysql_port`: something
    /// holds it on every address (a wildcard bind), and every server
    /// create would fail.
    #[error("cloudsim HTTP face: the simulated mysqld's port {port} is taken on every address (a local MySQL?), so no server could be created: choose another mysql_port ({source})")]
    MysqlPortTaken { port: u16, source: std::io::Error },
}

/// A user Keystone accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCredentials {
    pub name: String,
    pub password: String,
}

/// An IPv6 subnet in SLAAC mode (`ipv6_ra_mode` and `ipv6_address_mode`
/// `slaac`) beside a network's IPv4 one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlaacSubnet {
    pub id: String,
    /// A /64, as SLAAC needs.
    pub cidr: String,
}

/// A Neutron network (with one IPv4 subnet, and an IPv6 SLAAC one if
/// given) the face serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    pub id: String,
    pub name: String,
    pub subnet_id: String,
    pub cidr: String,
    pub gateway_ip: String,
    /// Shared with every project (an RBAC `access_as_shared` policy of
    /// target `*`).
    pub shared: bool,
    /// Projects, by name (the face's own, or another), an RBAC
    /// `access_as_shared` policy shares the network with. Neutron's
    /// `shared` shows true to the face's project for one shared with it,
    /// as Neutron works `shared` out for the project asking.
    pub shared_with: Vec<String>,
    /// Neutron's `port_security_enabled`, which the network's ports take:
    /// without it a port has no security group, and ML2 refuses a port
    /// create naming any (400 `PortSecurityAndIPRequiredForSecurityGroups`).
    pub port_security_enabled: bool,
    /// A dual-stack network's IPv6 SLAAC subnet: Neutron's IPAM gives
    /// every port on the network an address of it (EUI-64 of the port's
    /// MAC) even when its create named the IPv4 subnet or an address, and
    /// lists a port's addresses ordered as strings (so `2001:db8::...`
    /// comes before `203.0.113.7`). A port create naming this subnet is
    /// refused (400): a port with no IPv4 address is not simulated.
    pub slaac_subnet: Option<SlaacSubnet>,
    /// The project owning it, by name: `None`, the one project the face's
    /// users log in to; `Some`, another, whose network Neutron lists beside
    /// the project's own as it lists every project's to an admin.
    pub other_project: Option<String>,
}

impl NetworkSpec {
    /// A network whose ids derive from its name (stable across runs).
    pub fn new(name: &str, cidr: &str, gateway_ip: &str, shared: bool) -> Self {
        Self {
            id: stable_uuid("network", name),
            name: name.to_string(),
            subnet_id: stable_uuid("subnet", name),
            cidr: cidr.to_string(),
            gateway_ip: gateway_ip.to_string(),
            shared,
            shared_with: Vec::new(),
            port_security_enabled: true,
            slaac_subnet: None,
            other_project: None,
        }
    }

    /// The network shared (an RBAC `access_as_shared` policy) with project
    /// `project` (by name) too.
    pub fn shared_with_project(mut self, project: &str) -> Self {
        self.shared_with.push(project.to_string());
        self
    }

    /// The network made another project's, `project` (by name); its ids
    /// derive from that project too, so that it may share a name with one
    /// of the face's project.
    pub fn of_project(self, project: &str) -> Self {
        let scoped = format!("{project}/{}", self.name);
        Self {
            id: stable_uuid("network", &scoped),
            subnet_id: stable_uuid("subnet", &scoped),
            other_project: Some(project.to_string()),
            ..self
        }
    }

    /// The id of the project owning the network, of the face's project
    /// `own` or another.
    pub(crate) fn project_id(&self, own: &str) -> String {
        match &self.other_project {
            None => own.to_string(),
            Some(other) => stable_hex("project", other),
        }
    }

    /// The network made dual-stack: an IPv6 SLAAC subnet of `cidr` (a
    /// /64) beside its IPv4 one, its id derived from the network's name.
    pub fn with_slaac_subnet(self, cidr: &str) -> Self {
        Self {
            slaac_subnet: Some(SlaacSubnet {
                id: stable_uuid("subnet-v6", &self.name),
                cidr: cidr.to_string(),
            }),
            ..self
        }
    }
}

/// The address SLAAC gives a port of MAC `mac` on `cidr`: the prefix, and
/// the modified EUI-64 of the MAC (its universal/local bit flipped,
/// `ff:fe` in the middle), as Neutron's IPAM computes it.
pub(crate) fn slaac_address(cidr: &str, mac: &str) -> Option<String> {
    let prefix = cidr.parse::<ipnet::Ipv6Net>().ok()?.network().octets();
    let mac: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let [a, b, c, d, e, f] = mac[..] else {
        return None;
    };
    let mut octets = prefix;
    octets[8..].copy_from_slice(&[a ^ 0x02, b, c, 0xff, 0xfe, d, e, f]);
    Some(std::net::Ipv6Addr::from(octets).to_string())
}

/// A port's `fixed_ips` as Neutron lists them: its IPv4 address, `ipv4`
/// (none on a network without a subnet), on the network's subnet, and with
/// it on a dual-stack network the SLAAC address Neutron's IPAM adds
/// whatever the create named; ordered by address as strings, as Neutron's
/// database orders them. Reads no model state: callers may hold its lock.
pub(crate) fn fixed_ips(
    state: &FaceState,
    network_id: &str,
    port_id: &str,
    ipv4: Option<&str>,
) -> Vec<serde_json::Value> {
    let network = state.settings.networks.iter().find(|n| n.id == network_id);
    let mut ips: Vec<(String, String)> = ipv4
        .map(|ip| {
            let subnet = network.map(|n| n.subnet_id.clone()).unwrap_or_default();
            (ip.to_string(), subnet)
        })
        .into_iter()
        .collect();
    if let Some(slaac) = network
        .filter(|_| ipv4.is_some())
        .and_then(|n| n.slaac_subnet.as_ref())
    {
        if let Some(ip) = slaac_address(&slaac.cidr, &mac_for(port_id)) {
            ips.push((ip, slaac.id.clone()));
        }
    }
    ips.sort();
    ips.into_iter()
        .map(|(ip, subnet)| serde_json::json!({"subnet_id": subnet, "ip_address": ip}))
        .collect()
}

/// What the face serves beyond the model: identity, versions, networks,
/// readiness addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSettings {
    /// Users Keystone accepts (all in domain `domain_name`, all members of
    /// the one project). None has a default project: a login naming no
    /// project gets an unscoped token, without a catalog, as Keystone
    /// gives such a user.
    pub users: Vec<UserCredentials>,
    pub project_name: String,
    pub domain_name: String,
    /// The region the catalog lists every service in first, and the one
    /// `RunningFace::clouds_yaml` names.
    pub region: String,
    /// Further regions the catalog lists every service in, after
    /// `region`, at the same URLs (the face serves them all), as a
    /// deployment of several regions lists each region's endpoints.
    pub other_regions: Vec<String>,
    /// Host put in the URLs of `other_regions`' endpoints in place of the
    /// face's own (`127.0.0.2`, where nothing listens): a call sent to
    /// another region than `region` then fails, naming the URL it went
    /// to. `None` (the default): every region at the face's URLs.
    pub other_regions_host: Option<String>,
    /// The regions a catalog type's endpoints are listed in, in this
    /// order, for the types named here (the others: `region`, then
    /// `other_regions`). Keystone's catalog has no order: each service
    /// lists its regions in the order of its endpoints' random ids, so
    /// two services may name different regions first. A region left out
    /// has no endpoint of that type. Empty by default.
    pub region_order: BTreeMap<&'static str, Vec<String>>,
    /// The interfaces each service has an endpoint of in every region, in
    /// the catalog's order: by default `public`, `internal` and `admin`,
    /// as a real catalog lists them, all at the face's URLs.
    pub interfaces: Vec<&'static str>,
    /// Catalog types whose endpoints have no region (`"region": null`),
    /// as `openstack endpoint create` without `--region` makes them; a
    /// type the face does not serve (`placement`) is listed as a service
    /// of its own, at a URL nothing answers. Empty by default.
    pub regionless_endpoints: Vec<&'static str>,
    /// Lifetime of issued tokens, in tokio time (a short one tests re-auth).
    /// Note osauth 0.5 renews a token once 10 minutes or less of it are
    /// left, so below 10 minutes it authenticates again before every request.
    pub token_lifetime: Duration,
    /// Highest Nova microversion (minimum is 2.1).
    pub nova_max_version: (u16, u16),
    /// Highest Cinder microversion (minimum is 3.0). Below 3.67 (Yoga)
    /// Cinder's API is routed only under the project id.
    pub cinder_max_version: (u16, u16),
    /// Neutron networks; a server booted without `networks` (allowed below
    /// Nova 2.37) lands on the first.
    pub networks: Vec<NetworkSpec>,
    /// Port simulated mysqld greets on, at each server's own loopback
    /// address. 3306 by default: never 127.0.0.1, so a real MariaDB holding
    /// 127.0.0.1:3306 does not clash.
    pub mysql_port: u16,
    /// First two octets of the per-server loopback addresses (`[127, 77]`).
    pub address_prefix: [u8; 2],
    /// Host name or IP put in URLs (catalog, links); default: the listener's
    /// address (`127.0.0.1` if it is bound to 0.0.0.0).
    pub public_host: Option<String>,
    /// How long [`RunningFace::shutdown`] waits for in-flight requests before
    /// aborting them (a request hung by `Faults::hang_after_calls` never ends).
    pub shutdown_grace: Duration,
    /// The most items a server, flavor, network, port or volume listing
    /// answers at once, as Nova's `[api] max_limit`, Neutron's
    /// `pagination_max_limit` and Cinder's `osapi_max_limit` cap it; a full
    /// page links the next. `None`: unlimited (Neutron's default).
    /// Glance pages images by its own defaults whatever this says.
    pub page_limit: Option<usize>,
    /// A broken cloud (or a proxy dropping query strings) that ignores the
    /// `marker` of a paged listing: every page is the first.
    pub ignore_marker: bool,
    /// Custom properties every image carries; Glance shows them at the top
    /// level of the image, beside its own fields.
    pub image_properties: BTreeMap<String, String>,
    /// The catalog types Cinder is registered under: both by default;
    /// deployments of the last decade often have only `volumev3`.
    pub cinder_catalog_types: Vec<&'static str>,
    /// Nova's `reclaim_instance_interval`, in tokio time: above zero, a
    /// delete of a server that was ever ACTIVE only soft-deletes it
    /// (SOFT_DELETED, shown by id but left out of server listings as Nova
    /// leaves it out of a non-admin's) until then, a `forceDelete` or a
    /// `restore`. It keeps its ports and volumes until reclaimed; Nova's
    /// default quota counting frees its instance, cores and RAM at the
    /// soft delete, and a `restore` takes them again (refused, 403, when
    /// the quotas have no room). Zero (Nova's default): deletes are for
    /// good.
    pub reclaim_instance_interval: Duration,
    /// From Nova microversion 2.101 a volume attach is asynchronous: the
    /// API answers 202 once the server may take one and the volume exists
    /// and is attached to no other server (both refused before the answer,
    /// 404 and 400, as the testbed measured at 2.104), and the volume is
    /// reserved (Cinder's attachment, `attaching`) this long after, in
    /// tokio time (not scaled by the model's `time_scale`). How long a
    /// busy compute host takes is not measured (an idle testbed showed the
    /// volume `in-use` 0.2 s after the 202). A refusal met at the reserve
    /// (the volume no longer `available`, in another zone) is seen by no
    /// API caller: Nova records it as an instance-action fault only. Zero:
    /// the reserve is done before the 202 answer, its refusal still
    /// dropped. Below 2.101 the reserve always comes before the answer.
    pub attach_reserve_delay: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            users: vec![UserCredentials {
                name: "pool".into(),
                password: "poolpass".into(),
            }],
            project_name: "service".into(),
            domain_name: "Default".into(),
            region: "RegionOne".into(),
            other_regions: Vec::new(),
            other_regions_host: None,
            region_order: BTreeMap::new(),
            interfaces: vec!["public", "internal", "admin"],
            regionless_endpoints: Vec::new(),
            token_lifetime: Duration::from_secs(3600),
            nova_max_version: (2, 104),
            cinder_max_version: (3, 71),
            networks: vec![
                // The management network: servers' own addresses. Its subnet
                // is the loopback range the face hands out.
                NetworkSpec::new("mgmt-net", "127.77.0.0/16", "127.77.0.254", false),
                // Ports created through Neutron get addresses from 10.0.0.10 on.
                NetworkSpec::new("tenant-net", "10.0.0.0/16", "10.0.0.1", true),
            ],
            mysql_port: 3306,
            address_prefix: [127, 77],
            public_host: None,
            shutdown_grace: Duration::from_secs(5),
            page_limit: None,
            ignore_marker: false,
            image_properties: BTreeMap::new(),
            cinder_catalog_types: vec!["volumev3", "block-storage"],
            reclaim_instance_interval: Duration::ZERO,
            attach_reserve_delay: Duration::ZERO,
        }
    }
}

/// A token Keystone issued.
#[derive(Clone, Debug)]
pub(crate) struct TokenRec {
    pub user: String,
    pub expires_at: Instant,
    pub issued_at: Instant,
    pub scoped: bool,
    pub audit_id: String,
}

/// HTTP-level fault counters of one service.
#[derive(Clone, Debug, Default)]
struct ServiceFaults {
    throttle: u32,
    throttle_retry_after: Duration,
    server_errors: u32,
    not_found: u32,
    gateway_not_found: u32,
    unauthorized: u32,
    garbage: u32,
    /// Paged listing requests left whose marker's item is gone.
    vanishing_markers: u32,
    /// Paged listing requests left whose marker is unheeded.
    restarted_pages: u32,
    /// Paged listing requests left whose page starts at the marker's item.
    inclusive_markers: u32,
    /// Requests left to answer with an endless body, and its size.
    oversized: (u32, usize),
    slow: Duration,
    /// Answers given in the service's stead to requests of one method and
    /// path (`HttpFaults::answer_next`), first first.
    canned: Vec<Canned>,
}

/// `left` more `method` requests to `path` get `answer`.
#[derive(Clone, Debug)]
struct Canned {
    method: String,
    path: String,
    left: u32,
    answer: CannedAnswer,
}

#[derive(Clone, Debug)]
enum CannedAnswer {
    /// `status` with the JSON `body`.
    Json { status: StatusCode, body: String },
    /// A 429 with this `Retry-After`, in the service's own body shape.
    Throttled(Duration),
    /// `status` (a 3xx) pointing at `location`, with no body.
    Redirect {
        status: StatusCode,
        location: String,
    },
}

/// State shared by every handler.
pub(crate) struct FaceState {
    pub sim: Arc<SimCloud>,
    pub settings: HttpSettings,
    /// `http://host:port`, no trailing slash.
    pub base_url: String,
    pub project_id: String,
    pub domain_id: String,
    tokens: Mutex<HashMap<String, TokenRec>>,
    faults: Mutex<HashMap<Service, ServiceFaults>>,
    /// Wall-clock time of `epoch.0`, to print tokio instants as dates.
    epoch: (Instant, SystemTime),
    next_address: AtomicU32,
    /// Images replaced under their name (`HttpFaults::replace_image`): how
    /// many times, which gives the current one a new id.
    image_revisions: Mutex<HashMap<String, u32>>,
    /// Images Glance shows beside the model's (`HttpFaults::upload_image`).
    uploaded_images: Mutex<Vec<UploadedImage>>,
    /// Ports of other projects Neutron shows beside the model's, as it
    /// shows every project's to an admin (`HttpFaults::add_port_of_project`).
    pub(crate) other_projects_ports: Mutex<Vec<serde_json::Value>>,
    /// Visibility of images by name, where not "public"
    /// (`HttpFaults::set_image_visibility`).
    image_visibility: Mutex<HashMap<String, String>>,
    /// Images hidden from Glance's default listing (`os_hidden`; see
    /// `HttpFaults::hide_image`).
    hidden_images: Mutex<HashSet<String>>,
    /// Networks renamed since start (`HttpFaults::rename_network`): their
    /// name now, by id.
    network_names: Mutex<HashMap<String, String>>,
    /// Set at shutdown: requests still in a handler (e.g. hung by
    /// `Faults::hang_after_calls`) are answered 503 so connections close.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Passwords changed since start (`HttpFaults::change_password`), by user.
    pub(crate) changed_passwords: Mutex<HashMap<String, String>>,
    /// Regions added to the catalog since start (`HttpFaults::add_region`),
    /// listed after the others.
    pub(crate) added_regions: Mutex<Vec<String>>,
    /// Password logins asked for, granted or not.
    pub(crate) password_logins: AtomicU32,
    /// Token requests (`POST /v3/auth/tokens`) received, counted as they
    /// arrive: before any fault, a slowed or answered-in-stead one too.
    token_requests: AtomicU32,
    /// Requests received by each service (`HttpFaults::requests`), counted
    /// as token requests are.
    requests: Mutex<HashMap<Service, u64>>,
    /// Nova's policy refuses the project `forceDelete`
    /// (`HttpFaults::refuse_force_delete`).
    pub(crate) force_delete_refused: AtomicBool,
    /// Neutron's `get_quota` policy refuses the project its quota details.
    pub(crate) quota_details_refused: AtomicBool,
    /// Cinder's policy refuses the project volume metadata writes
    /// (`HttpFaults::refuse_volume_metadata_writes`).
    pub(crate) volume_metadata_writes_refused: AtomicBool,
    /// Tokens are issued from an application credential with access rules
    /// (`HttpFaults::tokens_have_access_rules`).
    pub(crate) tokens_have_access_rules: AtomicBool,
    /// What the next `forceDelete`s answer instead of taking effect
    /// (`HttpFaults::fail_force_delete_next`), first first.
    pub(crate) force_delete_failures: Mutex<std::collections::VecDeque<u16>>,
}

/// An image only Glance knows: Nova cannot boot it.
#[derive(Clone, Debug)]
pub(crate) struct UploadedImage {
    pub id: String,
    pub name: String,
    pub status: String,
    pub created: Instant,
}

tokio::task_local! {
    /// Set by a request's call that is to take effect and then hang
    /// (`Faults::hang_after_calls_take_effect`): the fault layer hangs
    /// the request once its handler has answered.
    static ANSWER_LOST: std::cell::Cell<bool>;
}

/// Marks the request being served to hang once its handler has answered;
/// false outside the fault layer.
pub(crate) fn lose_the_answer() -> bool {
    ANSWER_LOST.try_with(|lost| lost.set(true)).is_ok()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few map operations: recover from poison.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaceState {
    /// The id of the image of this name now.
    pub fn image_id(&self, name: &str) -> String {
        match lock(&self.image_revisions).get(name) {
            None | Some(0) => stable_uuid("image", name),
            Some(revision) => stable_uuid("image", &format!("{name}#{revision}")),
        }
    }

    pub fn uploaded_images(&self) -> Vec<UploadedImage> {
        lock(&self.uploaded_images).clone()
    }

    /// Whether images named `name` are hidden (`os_hidden`).
    pub fn image_hidden(&self, name: &str) -> bool {
        lock(&self.hidden_images).contains(name)
    }

    /// The visibility Glance shows for images named `name`.
    pub fn image_visibility(&self, name: &str) -> String {
        lock(&self.image_visibility)
            .get(name)
            .cloned()
            .unwrap_or_else(|| "public".to_owned())
    }

    pub fn url(&self, service: Service) -> String {
        format!("{}{}", self.base_url, service.prefix())
    }

    /// The name network `n` has now (Neutron's, and the key of Nova's
    /// addresses on it).
    pub fn network_name(&self, n: &NetworkSpec) -> String {
        lock(&self.network_names)
            .get(&n.id)
            .cloned()
            .unwrap_or_else(|| n.name.clone())
    }

    pub fn user_id(&self, name: &str) -> String {
        stable_hex("user", name)
    }

    pub fn issue_token(&self, user: &str, scoped: bool) -> (String, TokenRec) {
        let now = Instant::now();
        let id = format!(
            "gAAAAAB{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let rec = TokenRec {
            user: user.to_string(),
            expires_at: now + self.settings.token_lifetime,
            issued_at: now,
            scoped,
            audit_id: uuid::Uuid::new_v4().simple().to_string()[..22].to_string(),
        };
        lock(&self.tokens).insert(id.clone(), rec.clone());
        (id, rec)
    }

    /// The token if it is known, unexpired and not revoked.
    pub fn valid_token(&self, token: &str) -> Option<TokenRec> {
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        tokens.retain(|_, t| t.expires_at > now);
        tokens.get(token).cloned()
    }

    pub fn revoke_token(&self, token: &str) -> bool {
        lock(&self.tokens).remove(token).is_some()
    }

    /// A tokio instant as wall-clock time.
    pub fn wall(&self, t: Instant) -> SystemTime {
        let (e_tokio, e_wall) = self.epoch;
        if t >= e_tokio {
            e_wall + (t - e_tokio)
        } else {
            e_wall - (e_tokio - t)
        }
    }

    /// Reserves the next free per-server loopback address at `mysql_port`.
    /// Skips addresses another socket (this or another process) holds.
    pub fn reserve_mysql_socket(&self) -> std::io::Result<tokio::net::TcpSocket> {
        const HOSTS: u32 = 254 * 256;
        let [a, b] = self.settings.address_prefix;
        let mut last_err = None;
        for _ in 0..512 {
            let n = self.next_address.fetch_add(1, Ordering::Relaxed) % HOSTS;
            let ip = Ipv4Addr::new(a, b, (n / 254) as u8, (n % 254 + 1) as u8);
            match crate::mysql::reserve_at(SocketAddr::from((ip, self.settings.mysql_port))) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("no free loopback address")))
    }
}

/// The HTTP-only fault knobs (the model's are [`crate::Faults`]). Counters
/// apply to the next responses of one service, before token validation (as
/// a rate-limiting proxy in front of the API would), except `garbage_next`,
/// which lets the call take effect and then corrupts its answer.
#[derive(Clone)]
pub struct HttpFaults {
    state: Arc<FaceState>,
}

impl std::fmt::Debug for HttpFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFaults").finish_non_exhaustive()
    }
}

impl HttpFaults {
    fn with<R>(&self, service: Service, f: impl FnOnce(&mut ServiceFaults) -> R) -> R {
        f(lock(&self.state.faults).entry(service).or_default())
    }

    /// The next `n` requests to `service` get 429 with `Retry-After` (whole
    /// seconds, rounded up) and the service's own body shape; no effect.
    pub fn throttle_next(&self, service: Service, n: u32, retry_after: Duration) {
        self.with(service, |f| {
            f.throttle = n;
            f.throttle_retry_after = retry_after;
        });
    }

    /// The next `n` requests to `service` get a 500 with an HTML body (a
    /// proxy's error page); no effect.
    pub fn server_error_next(&self, service: Service, n: u32) {
        self.with(service, |f| f.server_errors = n);
    }

    /// The next `n` requests to `service` get keystonemiddleware's 401
    /// whatever their token, a fresh one included (a service that cannot
    /// validate tokens Keystone just issued: replication lag, a broken
    /// `keystone_authtoken`); no effect.
    pub fn refuse_tokens_next(&self, service: Service, n: u32) {
        self.with(service, |f| f.unauthorized = n);
    }

    /// The next `n` requests to `service` get a 404 with an HTML body (a
    /// proxy that routes them nowhere); no effect.
    pub fn not_found_next(&self, service: Service, n: u32) {
        self.with(service, |f| f.not_found = n);
    }

    /// The next `n` requests to `service` get a 404 with an API gateway's
    /// own JSON body (Kong's "no Route matched"), not an OpenStack fault;
    /// no effect.
    pub fn gateway_not_found_next(&self, service: Service, n: u32) {
        self.with(service, |f| f.gateway_not_found = n);
    }

    /// The next `n` requests to `service` take effect, then answer 200 with
    /// the first half of their JSON body (a truncated, unparsable answer).
    pub fn garbage_next(&self, service: Service, n: u32) {
        self.with(service, |f| f.garbage = n);
    }

    /// The next `n` listing requests to `service` that carry a page marker
    /// find the marker's item deleted (as when it goes between two pages):
    /// the service answers as it does for an unknown marker.
    pub fn delete_next_markers(&self, service: Service, n: u32) {
        self.with(service, |f| f.vanishing_markers = n);
    }

    /// The next `n` listing requests to `service` that carry a page marker
    /// are answered from the start of the listing, the marker unheeded: as
    /// Nova answers a marker it finds among its build requests (a server
    /// still being scheduled), listing its cells' servers from the first,
    /// so the page ends with the marker's server again (measured on the
    /// testbed at `[api] max_limit = 2`).
    pub fn restart_next_pages(&self, service: Service, n: u32) {
        self.with(service, |f| f.restarted_pages = n);
    }

    /// The next `n` listing requests to `service` that carry a page marker
    /// are answered with a page that starts at the marker's item, the
    /// marker included: as Nova may answer a marker it found among its
    /// build requests once the server has moved to its cell and comes first
    /// there (`[marker's server, an older one]`), a page that does not end
    /// with an item seen before.
    pub fn include_next_markers(&self, service: Service, n: u32) {
        self.with(service, |f| f.inclusive_markers = n);
    }

    /// The next `n` requests to `service` get a 200 whose body is `bytes`
    /// of padding (a misbehaving endpoint streaming without end); no effect.
    pub fn oversized_next(&self, service: Service, n: u32, bytes: usize) {
        self.with(service, |f| f.oversized = (n, bytes));
    }

    /// The next `n` `method` requests to `path` (below the service's
    /// prefix, query aside: `/v2.1/servers`, `/v3/auth/tokens`) are
    /// answered `status` with the JSON `body` and do nothing: a refusal
    /// worded as a real cloud words it that the model does not make
    /// (Nova's unified-limits quota, Keystone's locked account). Other
    /// requests pass, and take no turn.
    pub fn answer_next(
        &self,
        service: Service,
        method: &str,
        path: &str,
        n: u32,
        status: u16,
        body: &str,
    ) {
        self.can(
            service,
            method,
            path,
            n,
            CannedAnswer::Json {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body: body.to_owned(),
            },
        );
    }

    /// The next `n` `method` requests to `path` (as [`Self::answer_next`]
    /// matches them) are answered `status` (301, 302, 307, 308) with
    /// `Location: location` and do nothing: a load balancer in front of an
    /// endpoint the catalog names by `http://` that sends clients to
    /// `https://`.
    pub fn redirect_next(
        &self,
        service: Service,
        method: &str,
        path: &str,
        n: u32,
        status: u16,
        location: &str,
    ) {
        self.can(
            service,
            method,
            path,
            n,
            CannedAnswer::Redirect {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY),
                location: location.to_owned(),
            },
        );
    }

    /// The next `n` `method` requests to `path` (as [`Self::answer_next`]
    /// matches them) get 429 with `Retry-After`, as [`Self::throttle_next`]
    /// answers; no effect. A throttle of one route, where the service's
    /// other requests (a purchase's port create) must pass.
    pub fn throttle_next_on(
        &self,
        service: Service,
        method: &str,
        path: &str,
        n: u32,
        retry_after: Duration,
    ) {
        self.can(
            service,
            method,
            path,
            n,
            CannedAnswer::Throttled(retry_after),
        );
    }

    fn can(&self, service: Service, method: &str, path: &str, n: u32, answer: CannedAnswer) {
        let canned = Canned {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            left: n,
            answer,
        };
        self.with(service, |f| f.canned.push(canned));
    }

    /// Every request to `service` first waits this long (tokio time);
    /// `Duration::ZERO` turns it off.
    pub fn slow(&self, service: Service, delay: Duration) {
        self.with(service, |f| f.slow = delay);
    }

    /// The operator uploads a new image under `name` and deletes the old
    /// one (an image rotation): the name stays, its id changes, and the old
    /// id is unknown to Glance and Nova from now on.
    pub fn replace_image(&self, name: &str) {
        *lock(&self.state.image_revisions)
            .entry(name.to_owned())
            .or_default() += 1;
    }

    /// Another image named `name` appears in Glance, in `status` (an upload
    /// `queued`, `saving` or `killed`, an old image `deactivated`), beside
    /// the model's images; Nova cannot boot it. Its id.
    pub fn upload_image(&self, name: &str, status: &str) -> String {
        let mut uploaded = lock(&self.state.uploaded_images);
        let id = stable_uuid("uploaded-image", &format!("{name}#{}", uploaded.len()));
        uploaded.push(UploadedImage {
            id: id.clone(),
            name: name.to_owned(),
            status: status.to_owned(),
            created: Instant::now(),
        });
        id
    }

    /// A port of another project, `project` (by name), on `network_id`,
    /// its device `device_id` if given (Neutron takes any device id from a
    /// port's owner), which Neutron lists beside the project's own ports to
    /// an admin. Neither Nova nor the quota knows of it. Its id.
    pub fn add_port_of_project(
        &self,
        project: &str,
        network_id: &str,
        device_id: Option<&str>,
    ) -> String {
        self.add_named_port_of_project(project, "", network_id, device_id)
    }

    /// [`HttpFaults::add_port_of_project`], named `name`: a tenant may
    /// give its own port any name, one of warmpool's ports' too.
    pub fn add_named_port_of_project(
        &self,
        project: &str,
        name: &str,
        network_id: &str,
        device_id: Option<&str>,
    ) -> String {
        let mut ports = lock(&self.state.other_projects_ports);
        let id = stable_uuid("other-port", &format!("{project}#{}", ports.len()));
        let port = neutron::port_of_project(
            &self.state,
            &id,
            &stable_hex("project", project),
            name,
            network_id,
            device_id,
        );
        ports.push(port);
        id
    }

    /// Images named `name` get `visibility` ("public", "private",
    /// "shared", "community"). Glance leaves community images out of a
    /// listing that does not ask for them (`visibility=community` or
    /// `all`); Nova boots them by id all the same.
    pub fn set_image_visibility(&self, name: &str, visibility: &str) {
        lock(&self.state.image_visibility).insert(name.to_owned(), visibility.to_owned());
    }

    /// Images named `name` get `os_hidden: true`: Glance leaves them out of
    /// a listing that does not ask for them (`os_hidden=true`); Nova boots
    /// them by id all the same.
    pub fn hide_image(&self, name: &str) {
        lock(&self.state.hidden_images).insert(name.to_owned());
    }

    /// The networks named `name` are named `new_name` from now on (an
    /// operator renamed them in Neutron); Nova's addresses are keyed by
    /// the new name too. Not cleared by [`Self::clear`]: no fault.
    pub fn rename_network(&self, name: &str, new_name: &str) {
        let mut names = lock(&self.state.network_names);
        for n in &self.state.settings.networks {
            let now = names.get(&n.id).cloned().unwrap_or_else(|| n.name.clone());
            if now == name {
                names.insert(n.id.clone(), new_name.to_owned());
            }
        }
    }

    /// Revokes every token issued so far: they all get 401 from now on.
    pub fn revoke_all_tokens(&self) {
        lock(&self.state.tokens).clear();
    }

    /// Every service has endpoints in `region` too from now on (an admin
    /// added a region), at `HttpSettings::other_regions_host` when one is
    /// set: tokens issued from now on carry it in their catalog.
    pub fn add_region(&self, region: &str) {
        lock(&self.state.added_regions).push(region.to_owned());
    }

    /// `user`'s password is `password` from now on (an operator rotated it
    /// in Keystone); logins with the old one get 401.
    pub fn change_password(&self, user: &str, password: &str) {
        lock(&self.state.changed_passwords).insert(user.to_owned(), password.to_owned());
    }

    /// How many password logins Keystone was asked for, granted or not.
    pub fn password_logins(&self) -> u32 {
        self.state.password_logins.load(Ordering::SeqCst)
    }

    /// How many token requests (`POST /v3/auth/tokens`) reached Keystone,
    /// counted on arrival: a login the client gave up on (`slow`) and one
    /// a fault answered count too, as they do for a rate limiter or a
    /// lockout counter in front of Keystone.
    pub fn token_requests(&self) -> u32 {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Requests `service` has received, counted on arrival as
    /// [`Self::token_requests`] are: for a test that a call sent nothing.
    pub fn requests(&self, service: Service) -> u64 {
        lock(&self.state.requests)
            .get(&service)
            .copied()
            .unwrap_or_default()
    }

    /// Nova's `os_compute_api:os-deferred-delete:force` policy made
    /// admin-only (`refused` true) or the project's again (false): while
    /// refused, every `forceDelete` of a server the project can see answers
    /// Nova's 403 policy fault and does nothing (a SOFT_DELETED server
    /// stays so until the reclaim). Not cleared by a count: a policy lasts.
    pub fn refuse_force_delete(&self, refused: bool) {
        self.state
            .force_delete_refused
            .store(refused, Ordering::SeqCst);
    }

    /// Neutron's `get_quota` policy made admin-only (`refused` true) or
    /// the project's again: while refused, `GET /v2.0/quotas/{id}/details`
    /// answers Neutron's 403 policy fault. Not cleared by a count.
    pub fn refuse_quota_details(&self, refused: bool) {
        self.state
            .quota_details_refused
            .store(refused, Ordering::SeqCst);
    }

    /// Cinder's `volume:create_volume_metadata` policy made admin-only
    /// (`refused` true) or the project's again: while refused, every
    /// `POST /volumes/{id}/metadata` of a volume the project has answers
    /// Cinder's 403 policy fault and changes nothing, an empty one too
    /// (Cinder checks the policy before it looks at the keys). Not
    /// cleared by a count.
    pub fn refuse_volume_metadata_writes(&self, refused: bool) {
        self.state
            .volume_metadata_writes_refused
            .store(refused, Ordering::SeqCst);
    }

    /// Tokens as an application credential with access rules makes them
    /// (`has` true) or not: Keystone then validates one (`GET
    /// /v3/auth/tokens`) only for a caller that says it enforces access
    /// rules (`OpenStack-Identity-Access-Rules: 1.0` or later), and answers
    /// anyone else 404 "Failed to validate token" (keystone's token
    /// provider, `_validate_token_access_rules`). Not cleared by a count.
    pub fn tokens_have_access_rules(&self, has: bool) {
        self.state
            .tokens_have_access_rules
            .store(has, Ordering::SeqCst);
    }

    /// The next `n` `forceDelete`s of a server the project can see answer
    /// `status` and do nothing: 401 as keystonemiddleware words it (a
    /// token the service cannot validate; the driver logs in again and
    /// sends the call once more, so it takes two), any other in Nova's
    /// fault shape (400 `badRequest`). Unlike `refuse_force_delete`, not
    /// the policy: a passing failure.
    pub fn fail_force_delete_next(&self, n: u32, status: u16) {
        let mut failures = lock(&self.state.force_delete_failures);
        failures.extend(std::iter::repeat_n(status, n as usize));
    }

    /// Clears every HTTP fault (tokens stay as they are), a refused or
    /// failing `forceDelete` too.
    pub fn clear(&self) {
        lock(&self.state.faults).clear();
        self.refuse_force_delete(false);
        lock(&self.state.force_delete_failures).clear();
        self.refuse_quota_details(false);
        self.refuse_volume_metadata_writes(false);
    }
}

/// The running face. Dropping it stops the server too (without waiting).
pub struct RunningFace {
    state: Arc<FaceState>,
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for RunningFace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningFace")
            .field("base_url", &self.state.base_url)
            .finish_non_exhaustive()
    }
}

impl RunningFace {
    /// `http://host:port` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    /// Keystone's v3 URL, as `auth_url` in clouds.yaml.
    pub fn auth_url(&self) -> String {
        format!("{}/v3", self.state.url(Service::Identity))
    }

    /// The root URL of one service (e.g. `http://127.0.0.1:5555/compute`).
    pub fn service_url(&self, service: Service) -> String {
        self.state.url(service)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.state.settings
    }

    /// The project every user is scoped to.
    pub fn project_id(&self) -> &str {
        &self.state.project_id
    }

    /// The id of the one domain, of the users and the project: `default`
    /// for Keystone's default domain ("Default"), as Keystone names it.
    pub fn domain_id(&self) -> &str {
        &self.state.domain_id
    }

    pub fn faults(&self) -> HttpFaults {
        HttpFaults {
            state: self.state.clone(),
        }
    }

    /// What a client's config names, one line each: the management network
    /// (the first, whose subnet is the servers' loopback range), every
    /// other network with its id and its subnet's (a port is asked for by
    /// id), and the flavors, availability zones, images and security groups
    /// of the user's project that the cloud has now.
    pub fn served(&self) -> Vec<String> {
        let state = &self.state;
        let config = state.sim.config();
        let mut lines = Vec::new();
        let mut networks = state.settings.networks.iter();
        if let Some(management) = networks.next() {
            lines.push(format!(
                "management network: {}",
                state.network_name(management)
            ));
        }
        for n in networks {
            let slaac = n
                .slaac_subnet
                .as_ref()
                .map(|s| format!(", IPv6 SLAAC subnet {}", s.id))
                .unwrap_or_default();
            lines.push(format!(
                "tenant network: {} = {}, subnet {}{slaac}",
                state.network_name(n),
                n.id,
                n.subnet_id
            ));
        }
        let flavors: Vec<String> = config.flavor_specs().into_iter().map(|f| f.name).collect();
        lines.push(format!("flavors: {}", flavors.join(", ")));
        let zones: Vec<&str> = config
            .availability_zones
            .iter()
            .map(|az| az.name.as_str())
            .filter(|az| config.zone_takes_servers(az))
            .collect();
        lines.push(format!("availability zones: {}", zones.join(", ")));
        lines.push(format!("images: {}", config.images.join(", ")));
        let groups: Vec<&str> = config
            .security_groups
            .iter()
            .filter(|g| g.other_project.is_none())
            .map(|g| g.name.as_str())
            .collect();
        lines.push(format!("security groups: {}", groups.join(", ")));
        lines
    }

    /// A clouds.yaml with one cloud, `cloud_name`, for the first configured
    /// user (password auth, project scope), as osauth and the openstack CLI
    /// read it.
    pub fn clouds_yaml(&self, cloud_name: &str) -> String {
        let s = &self.state.settings;
        let (user, password) = s
            .users
            .first()
            .map(|u| (u.name.as_str(), u.password.as_str()))
            .unwrap_or(("", ""));
        format!(
            "clouds:\n  {name}:\n    auth:\n      auth_url: {auth}\n      username: {user}\n      password: {password}\n      project_name: {project}\n      user_domain_name: {domain}\n      project_domain_name: {domain}\n    region_name: {region}\n    interface: public\n    identity_api_version: 3\n",
            name = yaml_str(cloud_name),
            auth = yaml_str(&self.auth_url()),
            user = yaml_str(user),
            password = yaml_str(password),
            project = yaml_str(&s.project_name),
            domain = yaml_str(&s.domain_name),
            region = yaml_str(&s.region),
        )
    }

    /// Stops accepting and lets in-flight requests finish, for up to
    /// `HttpSettings::shutdown_grace`: a request hung by
    /// `Faults::hang_after_calls` never finishes, so after the grace the
    /// server task and its connections are aborted.
    pub async fn shutdown(mut self) -> Result<(), HttpError> {
        self.state.stopping.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            let grace = self.state.settings.shutdown_grace;
            match tokio::time::timeout(grace, &mut task).await {
                Ok(joined) => joined??,
                Err(_elapsed) => {
                    task.abort();
                    // An abort is only asked for: the listener closes once
                    // the task is dropped, which the join waits for.
                    let _ = task.await;
                }
            }
        }
        Ok(())
    }
}

impl Drop for RunningFace {
    fn drop(&mut self) {
        self.state.stopping.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A single-quoted YAML scalar.
fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Starts the face.
pub struct HttpFace;

impl HttpFace {
    /// Serves the face on `listener` until [`RunningFace::shutdown`] (or
    /// drop). Must be called within a tokio runtime.
    pub async fn serve(
        sim: Arc<SimCloud>,
        settings: HttpSettings,
        listener: tokio::net::TcpListener,
    ) -> Result<RunningFace, HttpError> {
        let local_addr = listener.local_addr()?;
        let host = match &settings.public_host {
            Some(h) => h.clone(),
            None if local_addr.ip().is_unspecified() => "127.0.0.1".to_string(),
            None => local_addr.ip().to_string(),
        };
        let base_url = format!("http://{host}:{}", local_addr.port());
        let project_id = stable_hex("project", &settings.project_name);
        let state = Arc::new(FaceState {
            sim,
            base_url,
            project_id,
            domain_id: if settings.domain_name == "Default" {
                "default".to_string()
            } else {
                stable_hex("domain", &settings.domain_name)
            },
            settings,
            tokens: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            epoch: (Instant::now(), SystemTime::now()),
            // A random start keeps concurrent faces (other test processes)
            // from racing for the same addresses.
            next_address: AtomicU32::new(rand::random::<u16>().into()),
            image_revisions: Mutex::default(),
            image_visibility: Mutex::default(),
            hidden_images: Mutex::default(),
            network_names: Mutex::default(),
            uploaded_images: Mutex::default(),
            other_projects_ports: Mutex::default(),
            stopping: tokio::sync::watch::channel(false).0,
            changed_passwords: Mutex::new(HashMap::new()),
            added_regions: Mutex::default(),
            password_logins: AtomicU32::new(0),
            token_requests: AtomicU32::new(0),
            requests: Mutex::new(HashMap::new()),
            force_delete_refused: AtomicBool::new(false),
            quota_details_refused: AtomicBool::new(false),
            volume_metadata_writes_refused: AtomicBool::new(false),
            tokens_have_access_rules: AtomicBool::new(false),
            force_delete_failures: Mutex::default(),
        });
        {
            // The model checks port creates against Neutron's networks and
            // hands a port an address of its network's subnet.
            let mut model = state.sim.inner.lock_at(Instant::now());
            for n in &state.settings.networks {
                if let Ok(cidr) = n.cidr.parse::<ipnet::Ipv4Net>() {
                    model.add_network(&n.id, &n.subnet_id, cidr);
                }
            }
        }
        // A server's address is bound only at its create: a port held on
        // every address (a local MySQL, `docker run -p 3306:3306`) would
        // fail every create, and the face would serve a cloud that boots
        // nothing. One address reserved as a create's is, and let go.
        if state.sim.inner.listeners {
            match state.reserve_mysql_socket() {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(HttpError::MysqlPortTaken {
                        port: state.settings.mysql_port,
                        source: e,
                    })
                }
                Err(e) => tracing::warn!(
                    mysql_port = state.settings.mysql_port,
                    "cloudsim: cannot bind a server's own loopback address for its simulated mysqld ({e}): server creates will answer 500"
                ),
            }
        }
        let app = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(base_url = %state.base_url, "cloudsim HTTP face serving");
        Ok(RunningFace {
            state,
            local_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

fn router(state: Arc<FaceState>) -> Router {
    Router::new()
        .nest(
            Service::Identity.prefix(),
            with_faults(keystone::routes(state.clone()), &state, Service::Identity),
        )
        .nest(
            Service::Compute.prefix(),
            with_faults(nova::routes(state.clone()), &state, Service::Compute),
        )
        .nest(
            Service::Volume.prefix(),
            with_faults(cinder::routes(state.clone()), &state, Service::Volume),
        )
        .nest(
            Service::Network.prefix(),
            with_faults(neutron::routes(state.clone()), &state, Service::Network),
        )
        .nest(
            Service::Image.prefix(),
            with_faults(glance::routes(state.clone()), &state, Service::Image),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "404 Not Found\n\nThe resource could not be found.\n",
            )
        })
}

fn with_faults(router: Router, state: &Arc<FaceState>, service: Service) -> Router {
    router
        .fallback(move || async move {
            // Neutron and Keystone answer unrouted URLs in JSON; the others
            // with webob's HTML page.
            match service {
                Service::Network | Service::Identity => {
                    ApiError::not_found(service, "The resource could not be found.").into_response()
                }
                _ => errors::webob_page(StatusCode::NOT_FOUND, "The resource could not be found."),
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), service),
            fault_layer,
        ))
}

const PROXY_404: &str = "<html><head><title>404 Not Found</title></head><body>\n<h1>Not Found</h1>\nThe requested URL was not found on this server.\n</body></html>\n";
/// Kong's answer for a route it does not have.
const GATEWAY_404: &str = r#"{"message":"no Route matched with those values"}"#;
const PROXY_500: &str = "<html><head><title>500 Internal Server Error</title></head><body>\n<h1>Internal Server Error</h1>\nThe server encountered an internal error or misconfiguration and was unable to complete your request.\n</body></html>\n";

/// The HTTP fault knobs, and the request id every OpenStack service sends.
async fn fault_layer(
    State((state, service)): State<(Arc<FaceState>, Service)>,
    mut request: Request,
    next: Next,
) -> Response {
    if service == Service::Identity
        && request.method() == axum::http::Method::POST
        && request.uri().path() == "/v3/auth/tokens"
    {
        state.token_requests.fetch_add(1, Ordering::SeqCst);
    }
    *lock(&state.requests).entry(service).or_default() += 1;
    let (slow, throttle, proxy_error, unauthorized, canned, oversized, garbage) = {
        let mut faults = lock(&state.faults);
        let f = faults.entry(service).or_default();
        // A marker no item has (the marker's item deleted meanwhile).
        rewrite_marker(&mut f.vanishing_markers, &mut request, |_| {
            Some(uuid::Uuid::new_v4().to_string())
        });
        // The marker unheeded: the listing from its start.
        rewrite_marker(&mut f.restarted_pages, &mut request, |_| None);
        rewrite_marker(&mut f.inclusive_markers, &mut request, |marker| {
            Some(format!("{INCLUSIVE_MARKER}{marker}"))
        });
        let throttle = (f.throttle > 0).then(|| {
            f.throttle -= 1;
            f.throttle_retry_after
        });
        let proxy_error = if throttle.is_some() {
            None
        } else if f.server_errors > 0 {
            f.server_errors -= 1;
            Some((StatusCode::INTERNAL_SERVER_ERROR, "text/html", PROXY_500))
        } else if f.not_found > 0 {
            f.not_found -= 1;
            Some((StatusCode::NOT_FOUND, "text/html", PROXY_404))
        } else if f.gateway_not_found > 0 {
            f.gateway_not_found -= 1;
            Some((StatusCode::NOT_FOUND, "application/json", GATEWAY_404))
        } else {
            None
        };
        let unauthorized = throttle.is_none() && proxy_error.is_none() && f.unauthorized > 0;
        if unauthorized {
            f.unauthorized -= 1;
        }
        let canned = if throttle.is_some() || proxy_error.is_some() || unauthorized {
            None
        } else {
            let (method, path) = (request.method().as_str(), request.uri().path());
            f.canned
                .iter_mut()
                .find(|c| c.left > 0 && c.method == method && c.path == path)
                .map(|c| {
                    c.left -= 1;
                    c.answer.clone()
                })
        };
        f.canned.retain(|c| c.left > 0);
        // A request answered in the service's stead takes no other fault.
        let answered =
            throttle.is_some() || proxy_error.is_some() || unauthorized || canned.is_some();
        let oversized = (!answered && f.oversized.0 > 0).then(|| {
            f.oversized.0 -= 1;
            f.oversized.1
        });
        let garbage = !answered && f.garbage > 0;
        if garbage {
            f.garbage -= 1;
        }
        (
            f.slow,
            throttle,
            proxy_error,
            unauthorized,
            canned,
            oversized,
            garbage,
        )
    };
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    let throttle = throttle.or(match &canned {
        Some(CannedAnswer::Throttled(retry_after)) => Some(*retry_after),
        _ => None,
    });
    let mut resp = if let Some(retry_after) = throttle {
        ApiError::from_cloud(
            service,
            pool_manager::cloud::CloudError::Throttled {
                retry_after: Some(retry_after),
                message: "This request was rate-limited.".into(),
                unavailable: false,
            },
        )
        .into_response()
    } else if let Some((status, content_type, page)) = proxy_error {
        (status, [(header::CONTENT_TYPE, content_type)], page).into_response()
    } else if unauthorized {
        ApiError::new(
            service,
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        )
        .into_response()
    } else if let Some(CannedAnswer::Json { status, body }) = canned {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else if let Some(CannedAnswer::Redirect { status, location }) = canned {
        (status, [(header::LOCATION, location)]).into_response()
    } else if let Some(bytes) = oversized {
        (StatusCode::OK, vec![b' '; bytes]).into_response()
    } else {
        let mut stopping = state.stopping.subscribe();
        let served = ANSWER_LOST.scope(std::cell::Cell::new(false), async {
            let resp = next.run(request).await;
            if ANSWER_LOST.with(|lost| lost.get()) {
                match state.sim.hang().await {}
            }
            resp
        });
        let resp = tokio::select! {
            resp = served => resp,
            _ = stopping.wait_for(|s| *s) => ApiError::new(
                service,
                StatusCode::SERVICE_UNAVAILABLE,
                "cloudsim is shutting down",
            )
            .into_response(),
        };
        if garbage {
            truncate_body(resp).await
        } else {
            resp
        }
    };
    let id = format!("req-{}", uuid::Uuid::new_v4());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut()
            .insert("x-openstack-request-id", v.clone());
        if service == Service::Compute {
            resp.headers_mut().insert("x-compute-request-id", v);
        }
    }
    resp
}

/// Before a marker, asks [`cut_page`] to start the page at the marker's
/// item rather than after it ([`HttpFaults::include_next_markers`]).
const INCLUSIVE_MARKER: &str = "cloudsim-inclusive:";

/// While `left` lasts, gives `request`'s page marker the value `marker`
/// makes of it (`None`: no marker); a request without a marker uses none
/// of `left`.
fn rewrite_marker(left: &mut u32, request: &mut Request, marker: impl Fn(&str) -> Option<String>) {
    if *left == 0 {
        return;
    }
    let uri = request.uri();
    let Some(query) = uri.query() else {
        return;
    };
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if !pairs.iter().any(|(k, _)| k == "marker") {
        return;
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.into_iter().filter_map(|(k, v)| {
            if k == "marker" {
                marker(&v).map(|v| (k, v))
            } else {
                Some((k, v))
            }
        }))
        .finish();
    if let Ok(rewritten) = format!("{}?{query}", uri.path()).parse() {
        *left -= 1;
        *request.uri_mut() = rewritten;
    }
}

/// 200 with the first half of the real body (at least a dangling `{"`).
async fn truncate_body(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let mut cut = bytes.slice(..bytes.len() / 2).to_vec();
    if cut.is_empty() {
        cut = b"{\"".to_vec();
    }
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(cut))
}

/// keystonemiddleware: every non-discovery route needs a valid token.
pub(crate) async fn require_token(
    State((state, service)): State<(Arc<FaceState>, Service)>,
    request: Request,
    next: Next,
) -> Response {
    let valid = request
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| state.valid_token(t))
        .is_some_and(|t| t.scoped);
    if valid {
        next.run(request).await
    } else {
        ApiError::unauthorized(service, &state.url(Service::Identity)).into_response()
    }
}

/// Parses a JSON request body; malformed JSON is the service's 400 naming
/// the problem.
pub(crate) fn parse_body(service: Service, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::malformed_body(service))
}

/// A deterministic UUID for a named object (image, network) of a kind.
pub(crate) fn stable_uuid(kind: &str, name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("cloudsim/{kind}/{name}").as_bytes(),
    )
    .to_string()
}

/// The id Keystone gives project `name` in the face: the face's own
/// project's ([`RunningFace::project_id`]) or another's, such as one
/// owning a network ([`NetworkSpec::of_project`]).
pub fn project_id_of(name: &str) -> String {
    stable_hex("project", name)
}

/// Keystone-style ids: 32 hex digits.
pub(crate) fn stable_hex(kind: &str, name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("cloudsim/{kind}/{name}").as_bytes(),
    )
    .simple()
    .to_string()
}

/// A MAC address derived from an object id (Neutron's `fa:16:3e` prefix).
pub(crate) fn mac_for(id: &str) -> String {
    let u = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id.as_bytes());
    let b = u.as_bytes();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// Date and time in UTC: (year, month, day, hour, minute, second, micros).
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        d.subsec_micros(),
    )
}

/// `2026-11-25T10:00:00Z` (Nova, Neutron, Glance).
pub(crate) fn iso_seconds(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `2026-11-25T10:00:00.123456Z` (Keystone) or without the `Z` (Cinder).
pub(crate) fn iso_micros(t: SystemTime, zulu: bool) -> String {
    let (y, mo, d, h, mi, s, us) = civil(t);
    let z = if zulu { "Z" } else { "" };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}{z}")
}

/// A microversion `major.minor`.
pub(crate) fn parse_version(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Why a listing's page cannot be given.
#[derive(Debug)]
pub(crate) enum PageError {
    /// The `limit` is not a number: a 400 everywhere.
    BadLimit(String),
    /// No item has the marker's id (it was deleted): Nova answers 400
    /// `marker [id] not found`, Neutron 404 as for the item itself, Cinder
    /// 404 `Marker [id] could not be found.`, Glance 400 `No image found
    /// with ID [id]`.
    UnknownMarker(String),
}

/// The items (in listing order) after the one whose `id` is the query's
/// `marker`, at most the query's `limit` (none or 0: `default`) capped by
/// `max`; `None` bounds nothing. With the marker of the page after when
/// this one is full. An unknown marker or a limit that is not a number is
/// an error, which each service answers its own way.
pub(crate) fn cut_page(
    items: Vec<serde_json::Value>,
    q: &[(String, String)],
    ignore_marker: bool,
    default: Option<usize>,
    max: Option<usize>,
) -> Result<(Vec<serde_json::Value>, Option<String>), PageError> {
    let value = |key: &str| {
        q.iter()
            .filter(|(k, _)| !(ignore_marker && k == "marker"))
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let asked = match value("limit") {
        None => None,
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            PageError::BadLimit(format!("limit must be a non-negative integer, got {l:?}"))
        })?),
    };
    let limit = match (asked.filter(|l| *l > 0).or(default), max) {
        (Some(a), Some(max)) => Some(a.min(max)),
        (a, max) => a.or(max),
    };
    let start = match value("marker") {
        None => 0,
        Some(marker) => {
            let (marker, after) = match marker.strip_prefix(INCLUSIVE_MARKER) {
                Some(marker) => (marker, 0),
                None => (marker, 1),
            };
            items
                .iter()
                .position(|i| i["id"] == marker)
                .ok_or_else(|| PageError::UnknownMarker(marker.to_owned()))?
                + after
        }
    };
    let rest = items.into_iter().skip(start);
    let Some(limit) = limit else {
        return Ok((rest.collect(), None));
    };
    let page: Vec<serde_json::Value> = rest.take(limit).collect();
    let next = (page.len() == limit).then(|| {
        let last = page.last().map(|i| i["id"].clone()).unwrap_or_default();
        last.as_str().unwrap_or_default().to_owned()
    });
    Ok((page, next))
}

/// One page of a listing as Nova and Neutron page it ([`cut_page`] at
/// `page_limit`). A full page links the next (`rel: next`, the same query
/// with the page's limit and its last id as the marker).
pub(crate) fn page(
    items: Vec<serde_json::Value>,
    q: &[(String, String)],
    settings: &HttpSettings,
    url: &str,
) -> Result<(Vec<serde_json::Value>, Option<serde_json::Value>), PageError> {
    let page_limit = settings.page_limit;
    let (page, next_marker) = cut_page(items, q, settings.ignore_marker, None, page_limit)?;
    let next = next_marker.map(|marker| {
        let mut query: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| k != "marker" && k != "limit")
            .cloned()
            .collect();
        query.push(("limit".into(), page.len().to_string()));
        query.push(("marker".into(), marker));
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        serde_json::json!([{"rel": "next", "href": format!("{url}?{encoded}")}])
    });
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(iso_seconds(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_600_000) + Duration::from_micros(42);
        // 2026-11-25T09:46:40Z
        assert_eq!(iso_seconds(t), "2026-11-25T09:46:40Z");
        assert_eq!(iso_micros(t, true), "2026-11-25T09:46:40.000042Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso_seconds(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn listings_page_after_the_marker_and_link_a_full_page() {
        let items: Vec<serde_json::Value> = ["a", "b", "c"]
            .iter()
            .map(|id| serde_json::json!({ "id": id }))
            .collect();
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let limited = |page_limit: Option<usize>| HttpSettings {
            page_limit,
            ..HttpSettings::default()
        };
        let (none, two) = (limited(None), limited(Some(2)));
        let ids = |page: &[serde_json::Value]| -> Vec<String> {
            page.iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let (all, next) = page(items.clone(), &[], &none, "http://x/ports").unwrap();
        assert_eq!(
            (ids(&all), next),
            (vec!["a".into(), "b".into(), "c".into()], None)
        );

        let (first, next) = page(
            items.clone(),
            &q(&[("name", "p q")]),
            &two,
            "http://x/ports",
        )
        .unwrap();
        assert_eq!(ids(&first), ["a", "b"]);
        let next = next.expect("a full page links the next");
        assert_eq!(next[0]["rel"], "next");
        assert_eq!(next[0]["href"], "http://x/ports?name=p+q&limit=2&marker=b");

        let (last, next) = page(items.clone(), &q(&[("marker", "b")]), &two, "u").unwrap();
        assert_eq!((ids(&last), next), (vec!["c".into()], None));
        let (one, _) = page(items.clone(), &q(&[("limit", "1")]), &two, "u").unwrap();
        assert_eq!(ids(&one), ["a"]);
        assert!(page(items.clone(), &q(&[("marker", "zz")]), &none, "u").is_err());
        assert!(page(items.clone(), &q(&[("limit", "-1")]), &none, "u").is_err());
        let broken = HttpSettings {
            ignore_marker: true,
            ..limited(Some(2))
        };
        let (again, _) = page(items, &q(&[("marker", "b")]), &broken, "u").unwrap();
        assert_eq!(ids(&again), ["a", "b"], "a cloud ignoring the marker");
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("2.101"), Some((2, 101)));
        assert_eq!(parse_version(" 3.0 "), Some((3, 0)));
        assert_eq!(parse_version("latest"), None);
        assert_eq!(parse_version("2."), None);
    }
}
