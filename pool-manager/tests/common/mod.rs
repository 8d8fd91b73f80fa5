//! A pool manager over the in-process cloudsim, on tokio's paused clock.
#![allow(dead_code)]

use cloudsim::{SimCloud, SimConfig};
use pool_manager::cloud::{CloudError, CloudResult};
use pool_manager::model::{Allocation, Instance, PoolRecord};
use pool_manager::model::{
    AllocationParams, EmptyPoolPolicy, InstanceState, NetworkRequest, PoolKey, PoolSpec,
    VolumeRequest, VolumeSource,
};
use pool_manager::sizing::LearnedSizing;
use pool_manager::store::{SledStore, Store, StoreResult};
use pool_manager::{AllocateRequest, ManagerSettings, PoolManager};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub fn settings() -> ManagerSettings {
    ManagerSettings {
        poll_interval: Duration::from_secs(1),
        replenish_interval: Duration::from_secs(2),
        // Tests run reconcile passes themselves.
        reconcile_interval: Duration::from_secs(24 * 3600),
        max_concurrent_boots: 16,
        retry_backoff: Duration::from_millis(200),
        // Ages and release times follow the paused clock.
        sizing: pool_manager::sizing::SizingSettings {
            wall_clock_start: Some(std::time::SystemTime::now()),
            ..Default::default()
        },
        ..ManagerSettings::default()
    }
}

pub fn pool() -> PoolKey {
    PoolKey::new("db.small", "az1")
}

pub fn spec(target: u32) -> PoolSpec {
    PoolSpec {
        min_ready: target,
        max_ready: target.max(1) * 4,
        target: Default::default(),
        image: "mysql-8.0".into(),
        boot_timeout: Duration::from_secs(15 * 60),
        max_age: None,
        paused: false,
        windows: Vec::new(),
        iops_limit: None,
        volume_iops_limit: None,
    }
}

/// `target = auto` between 1 and 50.
pub fn auto_spec() -> PoolSpec {
    PoolSpec {
        target: pool_manager::model::Target::Auto,
        max_ready: 50,
        ..spec(1)
    }
}

/// The id of the one volume `sim` has `error_attaching` (a failed
/// purchase's, left so).
pub fn the_error_attaching_volume(sim: &SimCloud) -> String {
    sim.volumes()
        .into_iter()
        .find(|v| v.status == pool_manager::cloud::VolumeStatus::Other("error_attaching".into()))
        .expect("the purchase's volume is left error_attaching")
        .id
}

pub fn sim() -> Arc<SimCloud> {
    SimCloud::new(SimConfig {
        quotas: cloudsim::Quotas {
            max_instances: 1000,
            max_volumes: 1000,
            max_ports: cloudsim::Quotas::UNLIMITED,
            max_gigabytes: 1000 * 1000,
            max_gigabytes_per_volume: None,
        },
        ..SimConfig::deterministic()
    })
}

pub fn manager_on(sim: &Arc<SimCloud>, store: Arc<dyn Store>) -> PoolManager {
    PoolManager::new(store, sim.clone(), Arc::new(sim.probe()), settings())
}

/// A started manager with one pool at `target`, all Ready.
pub async fn started(sim: &Arc<SimCloud>, store: Arc<dyn Store>, target: u32) -> PoolManager {
    let manager = manager_on(sim, store);
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(target)).await.unwrap();
    wait_ready(&manager, target).await;
    manager
}

pub fn temp_store() -> Arc<dyn Store> {
    Arc::new(SledStore::temporary().unwrap())
}

pub fn open_store(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SledStore::open(dir).unwrap())
}

/// Waits (in simulated time) until the pool has `n` Ready instances.
pub async fn wait_ready(manager: &PoolManager, n: u32) {
    for _ in 0..3600 {
        let status = manager.get_pool(&pool()).await.unwrap();
        if status.count(InstanceState::Ready) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!(
        "pool never reached {n} ready: {:?}",
        manager.get_pool(&pool()).await.unwrap()
    );
}

pub fn request(id: &str, volume: VolumeSource, policy: EmptyPoolPolicy) -> AllocateRequest {
    AllocateRequest {
        params: AllocationParams {
            request_id: id.into(),
            tenant_project_id: "tenant-a".into(),
            pool: pool(),
            volume: VolumeRequest {
                source: volume,
                delete_on_release: false,
            },
            network: NetworkRequest {
                network_id: "tenant-net".into(),
                subnet_id: None,
                fixed_ip: None,
            },
            labels: BTreeMap::from([("order".into(), id.into())]),
        },
        empty_pool: policy,
        timeout: Some(Duration::from_secs(120)),
    }
}

/// `n` purchases (cold-booted on a miss), each released at once, `gap` apart.
pub async fn purchases_every(manager: &PoolManager, n: usize, gap: Duration) {
    for i in 0..n {
        let id = format!("d{i}");
        manager
            .allocate(request(&id, new_volume(), EmptyPoolPolicy::ColdBoot))
            .await
            .unwrap();
        manager.release(&id, Some(true)).await.unwrap();
        tokio::time::sleep(gap).await;
    }
}

/// An Allocate running on its own task, for tests that step in meanwhile.
pub fn spawn_allocate(
    manager: &PoolManager,
    order: AllocateRequest,
) -> tokio::task::JoinHandle<pool_manager::ManagerResult<Allocation>> {
    let manager = manager.clone();
    tokio::spawn(async move { manager.allocate(order).await })
}

pub fn new_volume() -> VolumeSource {
    VolumeSource::New {
        size_gib: 20,
        volume_type: None,
    }
}

/// What must hold whenever the manager is at rest, a crash and restart
/// after too: no instance in two allocations, none tenant-touched that
/// its allocation does not hold, no allocation without its instance, no
/// server the store does not know or that carries another instance's
/// name, and nothing of an order in the cloud but what its record holds:
/// every port an allocation's own (a twin under its name is a stray), and
/// every volume warmpool named one an allocation recorded and keeps (a
/// tenant keeps a released one unless the release deleted it; one whose
/// delete Cinder's backend failed stays while a twin watch names it stuck),
/// and every volume an order names that it did not create (the tenant's
/// own) still there, unless its release was asked to delete it: attached
/// to the order's server while it is Allocated, to none once Released.
pub async fn assert_consistent(sim: &Arc<SimCloud>, manager: &PoolManager) {
    use pool_manager::cloud::META_INSTANCE;
    use pool_manager::model::AllocationState;
    use std::collections::{HashMap, HashSet};

    let instances = manager.list_instances(None).await.unwrap();
    let allocations = manager.list_allocations().await.unwrap();
    let by_request: HashMap<&str, &Allocation> = allocations
        .iter()
        .map(|a| (a.params.request_id.as_str(), a))
        .collect();
    let mut holder: HashMap<&str, &str> = HashMap::new();
    for instance in instances.iter().filter(|i| i.state.is_tenant_touched()) {
        if let Some(request) = instance.request_id.as_deref() {
            let previous = holder.insert(request, instance.id.as_str());
            assert!(
                previous.is_none(),
                "request {request} holds two instances: {instances:#?}"
            );
        }
        let held = instance
            .request_id
            .as_deref()
            .and_then(|request| by_request.get(request))
            .is_some_and(|a| {
                a.state == AllocationState::Allocated
                    && a.instance_id.as_deref() == Some(instance.id.as_str())
            });
        assert!(
            held && instance.state == InstanceState::Allocated,
            "instance {} ({:?}, request {:?}) is a tenant's that no allocation holds: \
             {allocations:#?}",
            instance.id,
            instance.state,
            instance.request_id
        );
    }
    let recorded: HashMap<&str, &str> = instances
        .iter()
        .filter_map(|i| Some((i.server_id.as_deref()?, i.id.as_str())))
        .collect();
    let servers = sim.servers();
    for server in &servers {
        let id = server.server.id.as_str();
        assert!(
            recorded.contains_key(id),
            "server {id} is unknown to the store"
        );
        assert_eq!(
            server
                .server
                .metadata
                .get(META_INSTANCE)
                .map(String::as_str),
            recorded.get(id).copied(),
            "server {id} carries another instance's name"
        );
    }
    // A server a tenant's volume or port touched never serves again: none
    // the pool counts on has one attached.
    let tenant_ports: HashSet<String> = sim.ports().into_iter().map(|p| p.id).collect();
    for instance in instances.iter().filter(|i| i.state.is_supply()) {
        let Some(server) = instance.server_id.as_deref().and_then(|id| sim.server(id)) else {
            continue;
        };
        assert!(
            server.server.attached_volumes.is_empty()
                && !server
                    .server
                    .attached_ports
                    .iter()
                    .any(|p| tenant_ports.contains(p)),
            "instance {} ({:?}) is in the pool with a tenant's volume or port on its server: {:?}",
            instance.id,
            instance.state,
            server.server
        );
    }
    let live: HashSet<&str> = servers.iter().map(|s| s.server.id.as_str()).collect();
    for instance in &instances {
        if let Some(server) = instance.server_id.as_deref() {
            assert!(
                live.contains(server),
                "instance {} names a missing server",
                instance.id
            );
        }
    }
    for allocation in &allocations {
        let request = allocation.params.request_id.as_str();
        match allocation.state {
            AllocationState::Allocated => {
                let instance = holder
                    .get(request)
                    .unwrap_or_else(|| panic!("allocation {request} has no instance"));
                assert_eq!(allocation.instance_id.as_deref(), Some(*instance));
                let server = sim
                    .server(allocation.server_id.as_deref().unwrap())
                    .unwrap();
                assert!(server
                    .server
                    .attached_volumes
                    .contains(allocation.volume_id.as_ref().unwrap()));
                assert!(server
                    .server
                    .attached_ports
                    .contains(allocation.port_id.as_ref().unwrap()));
            }
            AllocationState::Released => assert!(
                !holder.contains_key(request),
                "released allocation {request} still holds an instance"
            ),
            state => panic!("allocation {request} left in {state:?} at rest"),
        }
    }
    // A rolled-back order's, a released one's, a twin: no allocation's.
    for port in sim.ports() {
        assert!(
            allocations
                .iter()
                .any(|a| a.state == AllocationState::Allocated
                    && a.port_id.as_deref() == Some(port.id.as_str())),
            "port {port:?} is no allocation's: {allocations:#?}"
        );
    }
    let volumes = sim.volumes();
    for allocation in &allocations {
        let (false, Some(volume_id)) = (allocation.volume_created, &allocation.volume_id) else {
            continue;
        };
        let request = allocation.params.request_id.as_str();
        if allocation.state == AllocationState::Released
            && allocation.delete_volume_on_release == Some(true)
        {
            continue;
        }
        let volume = volumes
            .iter()
            .find(|v| &v.id == volume_id)
            .unwrap_or_else(|| {
                panic!("the tenant's volume {volume_id} of order {request} was deleted")
            });
        match allocation.state {
            AllocationState::Allocated => assert_eq!(
                volume.attached_to,
                Vec::from_iter(allocation.server_id.clone()),
                "the tenant's volume of order {request} is not attached to its server alone"
            ),
            // Cinder may still be detaching it from the released server.
            _ => assert!(
                matches!(
                    volume.status,
                    pool_manager::cloud::VolumeStatus::Available
                        | pool_manager::cloud::VolumeStatus::Detaching
                ),
                "the tenant's volume of released order {request} is not handed back: {volume:?}"
            ),
        }
    }
    let mut stuck = None;
    for volume in volumes {
        let id = Some(volume.id.as_str());
        if volume.name.starts_with("warmpool-") {
            assert!(
                allocations.iter().any(|a| a.volume_id.as_deref() == id),
                "volume {volume:?} is no allocation's: {allocations:#?}"
            );
        }
        let deleted = allocations.iter().any(|a| {
            a.state == AllocationState::Released
                && a.delete_volume_on_release == Some(true)
                && a.volume_id.as_deref() == id
        });
        if deleted {
            if stuck.is_none() {
                stuck = Some(manager.stuck_volumes().await.unwrap());
            }
            assert!(
                stuck.as_ref().unwrap().contains(&volume.id),
                "volume {volume:?} a release deleted is left, and no watch names it stuck"
            );
        }
    }
}

/// Where a held cloud call waits: before it reaches cloudsim, or after
/// cloudsim answered (the answer is handed back once released).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Before,
    After,
}

/// One held call. `reached` returns once the call is waiting at the hold;
/// the call goes on after `release`.
#[derive(Default)]
pub struct Hold {
    arrived: tokio::sync::Notify,
    go: tokio::sync::Notify,
}

impl Hold {
    pub async fn reached(&self) {
        self.arrived.notified().await
    }

    pub fn release(&self) {
        self.go.notify_one()
    }
}

/// Answers a cloud call (named by its `Cloud` method) instead of cloudsim,
/// or lets it through with `None`.
pub type Fault = Box<dyn Fn(&'static str) -> Option<CloudError> + Send + Sync>;

/// cloudsim, except that a call the test armed with [`GatedCloud::hold_next`]
/// waits until the test releases it (interleavings are set up with Notify,
/// not with sleeps), and that a test's [`Fault`] may answer a call in
/// cloudsim's stead (it never reaches cloudsim, as a real 429 does not
/// reach the service behind the rate limiter).
pub struct GatedCloud {
    pub sim: Arc<SimCloud>,
    holds: std::sync::Mutex<Vec<(&'static str, At, Arc<Hold>)>>,
    /// Calls done by cloudsim whose answer the caller sees as an error.
    lost_answers: std::sync::Mutex<Vec<(&'static str, CloudError)>>,
    undone_deletes: std::sync::atomic::AtomicU32,
    fault: Option<Fault>,
    /// One image for every pool, as the OpenStack driver's `image` override.
    image_override: std::sync::Mutex<Option<String>>,
    /// The OpenStack driver's `server_tag`, when set ([`GatedCloud::tag_servers`]).
    server_tag: std::sync::Mutex<Option<String>>,
    /// The tag each server was created under, by server id.
    tags: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Volume ids are found in any case ([`GatedCloud::find_volumes_in_any_case`]).
    volume_ids_any_case: std::sync::atomic::AtomicBool,
    /// `get_volume` answers shown in another status ([`GatedCloud::show_volume_status_after`]).
    volume_status_shown: std::sync::Mutex<Option<(u32, pool_manager::cloud::VolumeStatus)>>,
    /// `get_volume` answers list these attachments ([`GatedCloud::show_volume_attached_to`]).
    volume_attachments_shown: std::sync::Mutex<Option<Vec<String>>>,
    /// How servers are shown, by id ([`GatedCloud::show_server`]).
    servers_shown: std::sync::Mutex<std::collections::HashMap<String, ServerShown>>,
    /// How every other server is shown ([`GatedCloud::show_every_server`]).
    every_server_shown: std::sync::Mutex<Option<ServerShown>>,
    /// The process using it died ([`GatedCloud::die`]).
    dead: std::sync::atomic::AtomicBool,
    /// The cloud it says it is ([`GatedCloud::identify_as`]).
    identity: std::sync::Mutex<Option<pool_manager::cloud::CloudIdentity>>,
    /// Each `check_boot_image`'s image and what its miss was to name
    /// ([`GatedCloud::image_checks`]).
    image_checks: std::sync::Mutex<Vec<(String, pool_manager::cloud::ImageMiss)>>,
    /// `boot_headroom` answers this ([`GatedCloud::show_headroom`]).
    headroom_shown: std::sync::Mutex<Option<pool_manager::cloud::BootHeadroom>>,
}

/// What a test changes in a server as the cloud shows it.
pub type ServerShown = Arc<dyn Fn(&mut pool_manager::cloud::Server) + Send + Sync>;

impl GatedCloud {
    pub fn new(sim: &Arc<SimCloud>) -> Arc<Self> {
        Arc::new(Self {
            sim: sim.clone(),
            holds: Default::default(),
            lost_answers: Default::default(),
            undone_deletes: Default::default(),
            fault: None,
            image_override: Default::default(),
            server_tag: Default::default(),
            tags: Default::default(),
            volume_ids_any_case: Default::default(),
            volume_status_shown: Default::default(),
            volume_attachments_shown: Default::default(),
            servers_shown: Default::default(),
            every_server_shown: Default::default(),
            dead: Default::default(),
            identity: Default::default(),
            image_checks: Default::default(),
            headroom_shown: Default::default(),
        })
    }

    /// Asks `fault` before every call.
    pub fn with_fault(
        sim: &Arc<SimCloud>,
        fault: impl Fn(&'static str) -> Option<CloudError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            sim: sim.clone(),
            holds: Default::default(),
            lost_answers: Default::default(),
            undone_deletes: Default::default(),
            fault: Some(Box::new(fault)),
            image_override: Default::default(),
            server_tag: Default::default(),
            tags: Default::default(),
            volume_ids_any_case: Default::default(),
            volume_status_shown: Default::default(),
            volume_attachments_shown: Default::default(),
            servers_shown: Default::default(),
            every_server_shown: Default::default(),
            dead: Default::default(),
            identity: Default::default(),
            image_checks: Default::default(),
            headroom_shown: Default::default(),
        })
    }

    /// Refuses every call of `method` with `error` while the returned switch
    /// is on (it starts as `on`), the cloud's answer to a locked object.
    pub fn refusing(
        sim: &Arc<SimCloud>,
        method: &'static str,
        error: CloudError,
        on: bool,
    ) -> (Arc<Self>, Arc<std::sync::atomic::AtomicBool>) {
        use std::sync::atomic::{AtomicBool, Ordering};
        let switch = Arc::new(AtomicBool::new(on));
        let cloud = Self::with_fault(sim, {
            let switch = switch.clone();
            move |called| (called == method && switch.load(Ordering::SeqCst)).then(|| error.clone())
        });
        (cloud, switch)
    }

    /// Fails as many of the next calls of `method` with `error` as the
    /// returned count says (it starts at 0), counting down.
    pub fn failing_next(
        sim: &Arc<SimCloud>,
        method: &'static str,
        error: CloudError,
    ) -> (Arc<Self>, Arc<std::sync::atomic::AtomicU32>) {
        use std::sync::atomic::{AtomicU32, Ordering};
        let left = Arc::new(AtomicU32::new(0));
        let cloud = Self::with_fault(sim, {
            let left = left.clone();
            move |called| {
                let armed = called == method
                    && left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                armed.then(|| error.clone())
            }
        });
        (cloud, left)
    }

    /// The `check_boot_image` calls made since the last call of this one:
    /// each one's image and [`pool_manager::cloud::ImageMiss`] (the
    /// OpenStack driver lists Glance's images for `NameOffered` only).
    pub fn image_checks(&self) -> Vec<(String, pool_manager::cloud::ImageMiss)> {
        std::mem::take(&mut *self.image_checks.lock().unwrap())
    }

    /// Boots every pool's servers from `image` (`None`: each pool's own),
    /// as the OpenStack driver does with its `image` override.
    pub fn boot_every_pool_from(&self, image: Option<&str>) {
        *self.image_override.lock().unwrap() = image.map(Into::into);
    }

    /// Tags servers as the OpenStack driver does with its `server_tag`:
    /// servers created from now on carry `tag`, the pool-server listing
    /// shows only those created under it, and the cloud's identity is an
    /// OpenStack project's under it. Called again, the tag is renamed:
    /// the servers made before keep theirs, still there by id.
    pub fn tag_servers(&self, tag: &str) {
        *self.server_tag.lock().unwrap() = Some(tag.into());
    }

    /// Says it is `identity` (over what [`GatedCloud::tag_servers`]
    /// makes it), listing every pool server as before: cloudsim standing
    /// for an OpenStack project that a store may move to, which the
    /// embedded cloud never is.
    pub fn identify_as(&self, identity: pool_manager::cloud::CloudIdentity) {
        *self.identity.lock().unwrap() = Some(identity);
    }

    /// Finds a volume by its id in any case, as Cinder on MySQL does (its
    /// collation compares case-insensitively); Nova still lists the
    /// attachment under Cinder's own, lower-case id.
    pub fn find_volumes_in_any_case(&self) {
        self.volume_ids_any_case
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// After the next `looks` answers of `get_volume`, every one shows the
    /// volume in `status` (`None`: as cloudsim has it again), as when Cinder
    /// starts something on it (a backup) between two looks of a purchase.
    pub fn show_volume_status_after(
        &self,
        looks: u32,
        status: Option<pool_manager::cloud::VolumeStatus>,
    ) {
        *self.volume_status_shown.lock().unwrap() = status.map(|s| (looks, s));
    }

    /// Every answer of `get_volume` lists the volume attached to `servers`
    /// (`None`: as cloudsim has it again), as Cinder lists an attachment
    /// Nova failed to delete with its server (a stale attachment).
    pub fn show_volume_attached_to(&self, servers: Option<Vec<String>>) {
        *self.volume_attachments_shown.lock().unwrap() = servers;
    }

    /// Every answer naming server `id` (`get_server`, the pool-server
    /// listing) shows it changed by `shown`, as Nova shows what cloudsim
    /// does not model (a status such as REBOOT, SHUTOFF or PAUSED, a lock).
    pub fn show_server(
        &self,
        id: &str,
        shown: impl Fn(&mut pool_manager::cloud::Server) + Send + Sync + 'static,
    ) {
        self.servers_shown
            .lock()
            .unwrap()
            .insert(id.to_owned(), Arc::new(shown));
    }

    /// Every answer naming a server [`GatedCloud::show_server`] was not
    /// given for, servers yet to be made too, shows it changed by `shown`.
    pub fn show_every_server(
        &self,
        shown: impl Fn(&mut pool_manager::cloud::Server) + Send + Sync + 'static,
    ) {
        *self.every_server_shown.lock().unwrap() = Some(Arc::new(shown));
    }

    /// `server` as [`GatedCloud::show_server`] and
    /// [`GatedCloud::show_every_server`] show it.
    fn shown_server(&self, mut server: pool_manager::cloud::Server) -> pool_manager::cloud::Server {
        let shown = self.servers_shown.lock().unwrap().get(&server.id).cloned();
        let shown = shown.or_else(|| self.every_server_shown.lock().unwrap().clone());
        if let Some(shown) = shown {
            shown(&mut server);
        }
        server
    }

    /// `volume` as [`GatedCloud::show_volume_status_after`] and
    /// [`GatedCloud::show_volume_attached_to`] show it.
    fn shown(&self, mut volume: pool_manager::cloud::Volume) -> pool_manager::cloud::Volume {
        if let Some(servers) = self.volume_attachments_shown.lock().unwrap().as_ref() {
            volume.attached_to = servers.clone();
        }
        if let Some((looks, status)) = self.volume_status_shown.lock().unwrap().as_mut() {
            match looks.checked_sub(1) {
                Some(left) => *looks = left,
                None => volume.status = status.clone(),
            }
        }
        volume
    }

    /// `id` as cloudsim knows it.
    fn volume_id(&self, id: &str) -> String {
        if self
            .volume_ids_any_case
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            id.to_ascii_lowercase()
        } else {
            id.to_owned()
        }
    }

    /// `boot_headroom` answers `headroom` for every flavor once cloudsim
    /// was asked (it is counted, held and faulted as ever): limits
    /// cloudsim's model does not show, such as every one unlimited.
    pub fn show_headroom(&self, headroom: pool_manager::cloud::BootHeadroom) {
        *self.headroom_shown.lock().unwrap() = Some(headroom);
    }

    /// The next call of `method` waits at `at`.
    pub fn hold_next(&self, method: &'static str, at: At) -> Arc<Hold> {
        let hold = Arc::new(Hold::default());
        self.holds.lock().unwrap().push((method, at, hold.clone()));
        hold
    }

    /// The next call of `method` reaches cloudsim, which does it, but its
    /// answer is lost on the way back (a timeout, a proxy's 502): the
    /// caller sees a transient error.
    pub fn lose_next_answer(&self, method: &'static str) {
        self.lose_next_answer_as(
            method,
            CloudError::Transient(format!("{method}: the answer was lost (timed out)")),
        );
    }

    /// The next call of `method` reaches cloudsim, which does it, but the
    /// caller is answered `error`: a 503 from a proxy or a maintenance
    /// page in front of a service that already acted on the request.
    pub fn lose_next_answer_as(&self, method: &'static str, error: CloudError) {
        self.lost_answers.lock().unwrap().push((method, error));
    }

    /// The next `delete_server` is answered as accepted but never reaches
    /// cloudsim: Nova took the delete and the compute host then failed it,
    /// which leaves the server as it was (no longer `deleting`, its volumes
    /// attached).
    pub fn undo_next_delete(&self) {
        self.undone_deletes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The process calling the cloud through this gate dies: no call of
    /// it reaches the cloud from now on, and none that is under way is
    /// answered (each waits forever, as a dead process's calls do; the
    /// cloud still carries out one it had begun).
    pub fn die(&self) {
        self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    async fn unless_dead(&self) {
        if self.dead.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    async fn gate(&self, method: &'static str, at: At) {
        let hold = {
            let mut holds = self.holds.lock().unwrap();
            holds
                .iter()
                .position(|(m, a, _)| *m == method && *a == at)
                .map(|i| holds.remove(i).2)
        };
        if let Some(hold) = hold {
            hold.arrived.notify_one();
            hold.go.notified().await;
        }
    }

    async fn call<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = CloudResult<T>>,
    ) -> CloudResult<T> {
        self.gate(method, At::Before).await;
        self.unless_dead().await;
        if let Some(error) = self.fault.as_ref().and_then(|fault| fault(method)) {
            return Err(error);
        }
        let answer = call.await;
        self.unless_dead().await;
        self.gate(method, At::After).await;
        let lost = {
            let mut lost = self.lost_answers.lock().unwrap();
            lost.iter()
                .position(|(m, _)| *m == method)
                .map(|i| lost.remove(i).1)
        };
        match lost {
            Some(error) => Err(error),
            None => answer,
        }
    }
}

mod gated {
    use super::GatedCloud;
    use pool_manager::cloud::*;

    #[async_trait::async_trait]
    impl Cloud for GatedCloud {
        async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server> {
            let spec = ServerSpec {
                image: self.boot_image(&spec.image),
                ..spec.clone()
            };
            let created = self
                .call("create_server", self.sim.create_server(&spec))
                .await;
            if let (Ok(server), Some(tag)) = (&created, self.server_tag.lock().unwrap().clone()) {
                self.tags.lock().unwrap().insert(server.id.clone(), tag);
            }
            created
        }
        async fn read_server(&self, id: &str) -> CloudResult<Server> {
            let server = self.call("get_server", self.sim.read_server(id)).await?;
            Ok(self.shown_server(server))
        }
        async fn ports_bound_to(&self, id: &str) -> CloudResult<Vec<String>> {
            self.call("ports_bound_to", self.sim.ports_bound_to(id))
                .await
        }
        async fn list_pool_servers(&self) -> CloudResult<Vec<Server>> {
            let listed: Vec<Server> = self
                .call("list_pool_servers", self.sim.list_pool_servers())
                .await?
                .into_iter()
                .map(|s| self.shown_server(s))
                .collect();
            let Some(tag) = self.server_tag.lock().unwrap().clone() else {
                return Ok(listed);
            };
            let tags = self.tags.lock().unwrap();
            Ok(listed
                .into_iter()
                .filter(|s| tags.get(&s.id) == Some(&tag))
                .collect())
        }
        async fn delete_server(&self, id: &str) -> CloudResult<()> {
            use std::sync::atomic::Ordering;
            let undo = |n: u32| n.checked_sub(1);
            if self
                .undone_deletes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, undo)
                .is_ok()
            {
                return Ok(());
            }
            self.call("delete_server", self.sim.delete_server(id)).await
        }
        async fn create_volume(&self, spec: &NewVolumeSpec) -> CloudResult<Volume> {
            self.call("create_volume", self.sim.create_volume(spec))
                .await
        }
        async fn get_volume(&self, id: &str) -> CloudResult<Volume> {
            let id = self.volume_id(id);
            let volume = self.call("get_volume", self.sim.get_volume(&id)).await?;
            Ok(self.shown(volume))
        }
        async fn find_volumes_by_name(&self, name: &str) -> CloudResult<Vec<Volume>> {
            self.call("find_volumes_by_name", self.sim.find_volumes_by_name(name))
                .await
        }
        async fn set_volume_metadata(
            &self,
            id: &str,
            metadata: &std::collections::BTreeMap<String, String>,
        ) -> CloudResult<()> {
            let id = self.volume_id(id);
            let call = self.sim.set_volume_metadata(&id, metadata);
            self.call("set_volume_metadata", call).await
        }
        async fn delete_volume(&self, id: &str) -> CloudResult<()> {
            let id = self.volume_id(id);
            self.call("delete_volume", self.sim.delete_volume(&id))
                .await
        }
        async fn attach_volume(&self, server: &str, volume: &str) -> CloudResult<()> {
            let volume = self.volume_id(volume);
            self.call("attach_volume", self.sim.attach_volume(server, &volume))
                .await
        }
        async fn detach_volume(&self, server: &str, volume: &str) -> CloudResult<()> {
            let volume = self.volume_id(volume);
            self.call("detach_volume", self.sim.detach_volume(server, &volume))
                .await
        }
        async fn get_network(&self, id: &str) -> CloudResult<Network> {
            self.call("get_network", self.sim.get_network(id)).await
        }
        async fn network_shares(&self, id: &str) -> CloudResult<Vec<NetworkShare>> {
            self.call("network_shares", self.sim.network_shares(id))
                .await
        }
        async fn create_port(&self, spec: &NewPortSpec) -> CloudResult<Port> {
            self.call("create_port", self.sim.create_port(spec)).await
        }
        async fn get_port(&self, id: &str) -> CloudResult<Port> {
            self.call("get_port", self.sim.get_port(id)).await
        }
        async fn find_ports_by_name(&self, name: &str) -> CloudResult<Vec<Port>> {
            self.call("find_ports_by_name", self.sim.find_ports_by_name(name))
                .await
        }
        async fn delete_port(&self, id: &str) -> CloudResult<()> {
            self.call("delete_port", self.sim.delete_port(id)).await
        }
        async fn attach_port(&self, server: &str, port: &str) -> CloudResult<()> {
            self.call("attach_port", self.sim.attach_port(server, port))
                .await
        }
        async fn detach_port(&self, server: &str, port: &str) -> CloudResult<()> {
            self.call("detach_port", self.sim.detach_port(server, port))
                .await
        }
        async fn boot_headroom(&self, flavor: &str) -> CloudResult<BootHeadroom> {
            let read = self
                .call("boot_headroom", self.sim.boot_headroom(flavor))
                .await;
            let shown = self.headroom_shown.lock().unwrap().clone();
            match shown {
                Some(headroom) => read.map(|_| headroom),
                None => read,
            }
        }
        async fn check_boot_placement(
            &self,
            pool: &pool_manager::model::PoolKey,
        ) -> CloudResult<()> {
            self.call("check_boot_placement", self.sim.check_boot_placement(pool))
                .await
        }
        async fn flavor_disk_iops(&self, flavor: &str) -> CloudResult<FlavorIops> {
            self.call("flavor_disk_iops", self.sim.flavor_disk_iops(flavor))
                .await
        }
        async fn check_boot_image(&self, image: &str, miss: ImageMiss) -> CloudResult<()> {
            self.image_checks.lock().unwrap().push((image.into(), miss));
            self.call("check_boot_image", self.sim.check_boot_image(image, miss))
                .await
        }
        async fn check_volume_zone(&self, pool: &pool_manager::model::PoolKey) -> CloudResult<()> {
            self.call("check_volume_zone", self.sim.check_volume_zone(pool))
                .await
        }
        fn volume_zone_for(&self, server_az: &str) -> String {
            self.sim.volume_zone_for(server_az)
        }
        fn boot_image(&self, pool_image: &str) -> String {
            let image = self.image_override.lock().unwrap().clone();
            image.unwrap_or_else(|| self.sim.boot_image(pool_image))
        }
        async fn cloud_identity(&self) -> CloudResult<CloudIdentity> {
            if let Some(identity) = self.identity.lock().unwrap().clone() {
                return Ok(identity);
            }
            let tag = self.server_tag.lock().unwrap().clone();
            match tag {
                Some(server_tag) => Ok(CloudIdentity::OpenStack {
                    project_id: "cloudsim".into(),
                    region: Some("RegionOne".into()),
                    server_tag,
                }),
                None => self.sim.cloud_identity().await,
            }
        }
        async fn services_in_named_region_alone(&self) -> CloudResult<bool> {
            Ok(false)
        }
    }
}

/// The OpenStack project [`on_a_project`] stands for.
pub fn a_project() -> pool_manager::cloud::CloudIdentity {
    pool_manager::cloud::CloudIdentity::OpenStack {
        project_id: "cloudsim-project".into(),
        region: Some("RegionOne".into()),
        server_tag: "warmpool".into(),
    }
}

/// cloudsim as an OpenStack project ([`a_project`]), listing every pool
/// server as cloudsim does: a cloud a store may be adopted by, which the
/// embedded one is not.
pub fn on_a_project(sim: &Arc<SimCloud>) -> Arc<GatedCloud> {
    let cloud = GatedCloud::new(sim);
    cloud.identify_as(a_project());
    cloud
}

/// A manager over `cloud` (cloudsim behind a gate), not started.
pub fn manager_over(cloud: &Arc<GatedCloud>, store: Arc<dyn Store>) -> PoolManager {
    PoolManager::new(
        store,
        cloud.clone(),
        Arc::new(cloud.sim.probe()),
        settings(),
    )
}

/// A started manager over `cloud` (cloudsim behind a gate) with one pool
/// of `n` Ready instances.
pub async fn started_over(cloud: &Arc<GatedCloud>, store: Arc<dyn Store>, n: u32) -> PoolManager {
    let manager = manager_over(cloud, store);
    manager.start().await.unwrap();
    manager.create_pool(pool(), spec(n)).await.unwrap();
    wait_ready(&manager, n).await;
    manager
}

/// [`started_over`], the pool then paused: nothing boots behind the
/// test's back.
pub async fn started_paused(cloud: &Arc<GatedCloud>, store: Arc<dyn Store>, n: u32) -> PoolManager {
    let manager = started_over(cloud, store, n).await;
    manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    manager
}

/// What a test's store does around a real store's writes. Every hook has a
/// default that does nothing, so a test states only its own fault.
#[async_trait::async_trait]
pub trait StoreHooks: Send + Sync + 'static {
    /// Before a pool is read; an error is its answer.
    fn before_get_pool(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Before a pool is read, after [`StoreHooks::before_get_pool`] let it.
    async fn reading_pool(&self) {}
    /// Before an instance swap reaches the store; an error is its answer.
    fn before_instance_swap(&self, _new: Option<&Instance>) -> StoreResult<()> {
        Ok(())
    }
    /// Before an allocation swap reaches the store; an error is its answer.
    fn before_allocation_swap(&self, _new: Option<&Allocation>) -> StoreResult<()> {
        Ok(())
    }
    /// After an instance swap, with whether it swapped.
    fn after_instance_swap(&self, _expected: Option<&Instance>, _swapped: bool) {}
    /// After an allocation swap, with whether it swapped.
    fn after_allocation_swap(&self, _expected: Option<&Allocation>, _swapped: bool) {}
    /// Before a flush reaches the store; an error is its answer.
    async fn before_flush(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Before a pool record is written.
    async fn before_put_pool(&self, _pool: &PoolRecord) {}
    /// Before a pool record is deleted; an error is its answer.
    fn before_delete_pool(&self) -> StoreResult<()> {
        Ok(())
    }
    /// After a write took effect, with what it wrote.
    fn written(&self, _write: Write) {}
    /// After a pool's untouched instances were listed, before the answer.
    async fn after_list_untouched(&self) {}
    /// After every instance was listed, before the answer.
    async fn after_list_instances(&self) {}
    /// Before an instance is read by its id.
    async fn before_get_instance(&self, _id: &str) {}
    /// Before the store is asked whether a record was set aside.
    async fn before_is_set_aside(&self, _kind: pool_manager::store::RecordKind) {}
    /// Before every call, before the hooks above (a test's yields to the
    /// other tasks, so that two purchases' calls interleave).
    async fn before_call(&self) {}
    /// After an allocation was read, before the reader has the answer.
    async fn after_get_allocation(&self, _request_id: &str) {}
}

/// One write a store took, as [`StoreHooks::written`] hears of it.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant, reason = "a test's short log of writes")]
pub enum Write {
    Pool(PoolRecord),
    PoolDeleted(PoolKey),
    LearnedSizing(PoolKey, LearnedSizing),
    PoolHealth(PoolKey, Option<pool_manager::events::StoredHealth>),
    /// The instance of this id is now `new` (`None`: gone).
    Instance(String, Option<Instance>),
    /// The allocation of this request id is now `new` (`None`: gone).
    Allocation(String, Option<Allocation>),
    TwinWatch(pool_manager::model::TwinWatch),
    TwinWatchDeleted(String),
    UnknownServersAccepted(std::time::SystemTime),
    CloudIdentity(pool_manager::cloud::CloudIdentity),
}

impl Write {
    /// Does it again on `store`, whatever `store` holds there now.
    pub async fn replay(&self, store: &dyn Store) -> StoreResult<()> {
        match self {
            Write::Pool(pool) => store.put_pool(pool).await,
            Write::PoolDeleted(key) => store.delete_pool(key).await,
            Write::LearnedSizing(key, learned) => store.put_learned_sizing(key, learned).await,
            Write::PoolHealth(key, health) => store.put_pool_health(key, health.as_ref()).await,
            Write::Instance(id, new) => {
                let current = store.get_instance(id).await?;
                if current.is_none() && new.is_none() {
                    return Ok(());
                }
                assert!(store.cas_instance(current.as_ref(), new.as_ref()).await?);
                Ok(())
            }
            Write::Allocation(id, new) => {
                let current = store.get_allocation(id).await?;
                if current.is_none() && new.is_none() {
                    return Ok(());
                }
                assert!(store.cas_allocation(current.as_ref(), new.as_ref()).await?);
                Ok(())
            }
            Write::TwinWatch(watch) => store.put_twin_watch(watch).await,
            Write::UnknownServersAccepted(at) => store.note_unknown_servers_accepted(*at).await,
            Write::CloudIdentity(identity) => store.record_cloud_identity(identity).await,
            Write::TwinWatchDeleted(name) => {
                let watches = store.list_twin_watches().await?;
                if let Some(current) = watches.iter().find(|w| &w.name == name) {
                    assert!(store.cas_twin_watch(Some(current), None).await?);
                }
                Ok(())
            }
        }
    }
}

/// What a process that dies at an unlucky moment leaves on disk: the writes
/// a flush had begun to make durable, and of the ones after them a prefix
/// (a store keeps a prefix of its writes; the ones no flush covered may be
/// lost, all or some). Used as the hooks of a [`HookedStore`];
/// [`CrashImage::crash`] is the moment the process dies.
#[derive(Default)]
pub struct CrashImage {
    state: std::sync::Mutex<CrashImageState>,
}

#[derive(Default)]
struct CrashImageState {
    durable: Vec<Write>,
    unflushed: Vec<Write>,
    crashed: bool,
}

impl CrashImage {
    /// The process dies now: nothing written or flushed from here on
    /// reaches the image.
    pub fn crash(&self) {
        self.state.lock().unwrap().crashed = true;
    }

    /// A store in `dir` holding what survived the crash, as the restarted
    /// process opens it: the flushed writes and the first
    /// `kept(unflushed writes)` of the others.
    pub async fn reopen(&self, dir: &Path, kept: impl Fn(usize) -> usize) -> Arc<dyn Store> {
        let durable = {
            let state = self.state.lock().unwrap();
            assert!(state.crashed, "the process has not crashed yet");
            let kept = kept(state.unflushed.len()).min(state.unflushed.len());
            let mut durable = state.durable.clone();
            durable.extend_from_slice(&state.unflushed[..kept]);
            durable
        };
        {
            let store = SledStore::open(dir).unwrap();
            for write in &durable {
                write.replay(&store).await.unwrap();
            }
            store.flush().await.unwrap();
        }
        open_store(dir)
    }
}

#[async_trait::async_trait]
impl StoreHooks for CrashImage {
    fn written(&self, write: Write) {
        let mut state = self.state.lock().unwrap();
        if !state.crashed {
            state.unflushed.push(write);
        }
    }

    async fn before_flush(&self) -> StoreResult<()> {
        let mut state = self.state.lock().unwrap();
        if !state.crashed {
            let flushed = std::mem::take(&mut state.unflushed);
            state.durable.extend(flushed);
        }
        Ok(())
    }
}

/// A real store with a test's [`StoreHooks`] around its writes; every call
/// is forwarded, the listings a store may answer faster included. Its
/// flush ends at the same point of a paused-clock test's schedule whatever
/// the disk's speed.
pub struct HookedStore<H> {
    pub inner: Arc<dyn Store>,
    pub hooks: H,
}

impl<H: StoreHooks> HookedStore<H> {
    /// Over a temporary sled store.
    pub fn new(hooks: H) -> Arc<Self> {
        Arc::new(Self {
            inner: temp_store(),
            hooks,
        })
    }
}

#[async_trait::async_trait]
impl<H: StoreHooks> Store for HookedStore<H> {
    async fn get_pool(&self, key: &PoolKey) -> StoreResult<Option<PoolRecord>> {
        self.hooks.before_call().await;
        self.hooks.before_get_pool()?;
        self.hooks.reading_pool().await;
        self.inner.get_pool(key).await
    }
    async fn list_pools(&self) -> StoreResult<Vec<PoolRecord>> {
        self.hooks.before_call().await;
        self.inner.list_pools().await
    }
    async fn put_pool(&self, pool: &PoolRecord) -> StoreResult<()> {
        self.hooks.before_call().await;
        self.hooks.before_put_pool(pool).await;
        self.inner.put_pool(pool).await?;
        self.hooks.written(Write::Pool(pool.clone()));
        Ok(())
    }
    async fn delete_pool(&self, key: &PoolKey) -> StoreResult<()> {
        self.hooks.before_call().await;
        self.hooks.before_delete_pool()?;
        self.inner.delete_pool(key).await?;
        self.hooks.written(Write::PoolDeleted(key.clone()));
        Ok(())
    }
    async fn get_learned_sizing(&self, key: &PoolKey) -> StoreResult<Option<LearnedSizing>> {
        self.hooks.before_call().await;
        self.inner.get_learned_sizing(key).await
    }
    async fn put_learned_sizing(&self, key: &PoolKey, learned: &LearnedSizing) -> StoreResult<()> {
        self.hooks.before_call().await;
        self.inner.put_learned_sizing(key, learned).await?;
        self.hooks
            .written(Write::LearnedSizing(key.clone(), learned.clone()));
        Ok(())
    }
    async fn get_pool_health(
        &self,
        key: &PoolKey,
    ) -> StoreResult<Option<pool_manager::events::StoredHealth>> {
        self.hooks.before_call().await;
        self.inner.get_pool_health(key).await
    }
    async fn put_pool_health(
        &self,
        key: &PoolKey,
        health: Option<&pool_manager::events::StoredHealth>,
    ) -> StoreResult<()> {
        self.hooks.before_call().await;
        self.inner.put_pool_health(key, health).await?;
        self.hooks
            .written(Write::PoolHealth(key.clone(), health.cloned()));
        Ok(())
    }
    async fn get_instance(&self, id: &str) -> StoreResult<Option<Instance>> {
        self.hooks.before_call().await;
        self.hooks.before_get_instance(id).await;
        self.inner.get_instance(id).await
    }
    async fn list_instances(&self) -> StoreResult<Vec<Instance>> {
        self.hooks.before_call().await;
        let listed = self.inner.list_instances().await;
        self.hooks.after_list_instances().await;
        listed
    }
    async fn list_untouched_instances(&self, pool: &PoolKey) -> StoreResult<Vec<Instance>> {
        self.hooks.before_call().await;
        let listed = self.inner.list_untouched_instances(pool).await;
        self.hooks.after_list_untouched().await;
        listed
    }
    async fn count_instances(&self, pool: &PoolKey) -> StoreResult<BTreeMap<InstanceState, u32>> {
        self.hooks.before_call().await;
        self.inner.count_instances(pool).await
    }
    async fn count_instances_by_pool(
        &self,
    ) -> StoreResult<BTreeMap<PoolKey, BTreeMap<InstanceState, u32>>> {
        self.hooks.before_call().await;
        self.inner.count_instances_by_pool().await
    }
    async fn cas_instance(
        &self,
        expected: Option<&Instance>,
        new: Option<&Instance>,
    ) -> StoreResult<bool> {
        self.hooks.before_call().await;
        self.hooks.before_instance_swap(new)?;
        let swapped = self.inner.cas_instance(expected, new).await?;
        if swapped {
            let id = new.or(expected).map(|i| i.id.clone()).unwrap_or_default();
            self.hooks.written(Write::Instance(id, new.cloned()));
        }
        self.hooks.after_instance_swap(expected, swapped);
        Ok(swapped)
    }
    async fn put_twin_watch(&self, watch: &pool_manager::model::TwinWatch) -> StoreResult<()> {
        self.hooks.before_call().await;
        self.inner.put_twin_watch(watch).await?;
        self.hooks.written(Write::TwinWatch(watch.clone()));
        Ok(())
    }
    async fn list_twin_watches(&self) -> StoreResult<Vec<pool_manager::model::TwinWatch>> {
        self.hooks.before_call().await;
        self.inner.list_twin_watches().await
    }
    async fn list_twin_watches_of(
        &self,
        request_id: &str,
    ) -> StoreResult<Vec<pool_manager::model::TwinWatch>> {
        self.hooks.before_call().await;
        self.inner.list_twin_watches_of(request_id).await
    }
    async fn cas_twin_watch(
        &self,
        expected: Option<&pool_manager::model::TwinWatch>,
        new: Option<&pool_manager::model::TwinWatch>,
    ) -> StoreResult<bool> {
        self.hooks.before_call().await;
        let swapped = self.inner.cas_twin_watch(expected, new).await?;
        if swapped {
            let name = || expected.map(|w| w.name.clone()).unwrap_or_default();
            self.hooks.written(match new {
                Some(new) => Write::TwinWatch(new.clone()),
                None => Write::TwinWatchDeleted(name()),
            });
        }
        Ok(swapped)
    }
    async fn get_allocation(&self, request_id: &str) -> StoreResult<Option<Allocation>> {
        self.hooks.before_call().await;
        let read = self.inner.get_allocation(request_id).await;
        self.hooks.after_get_allocation(request_id).await;
        read
    }
    async fn list_allocations(&self) -> StoreResult<Vec<Allocation>> {
        self.hooks.before_call().await;
        self.inner.list_allocations().await
    }
    async fn list_unfinished_allocations(&self) -> StoreResult<Vec<Allocation>> {
        self.hooks.before_call().await;
        self.inner.list_unfinished_allocations().await
    }
    async fn list_released_before(
        &self,
        before: std::time::SystemTime,
    ) -> StoreResult<Vec<String>> {
        self.hooks.before_call().await;
        self.inner.list_released_before(before).await
    }
    async fn cas_allocation(
        &self,
        expected: Option<&Allocation>,
        new: Option<&Allocation>,
    ) -> StoreResult<bool> {
        self.hooks.before_call().await;
        self.hooks.before_allocation_swap(new)?;
        let swapped = self.inner.cas_allocation(expected, new).await?;
        if swapped {
            let id = new
                .or(expected)
                .map(|a| a.params.request_id.clone())
                .unwrap_or_default();
            self.hooks.written(Write::Allocation(id, new.cloned()));
        }
        self.hooks.after_allocation_swap(expected, swapped);
        Ok(swapped)
    }
    async fn is_set_aside(
        &self,
        kind: pool_manager::store::RecordKind,
        key: &str,
    ) -> StoreResult<bool> {
        self.hooks.before_call().await;
        self.hooks.before_is_set_aside(kind).await;
        self.inner.is_set_aside(kind, key).await
    }
    async fn knows_no_instance_or_order(&self) -> StoreResult<bool> {
        self.hooks.before_call().await;
        self.inner.knows_no_instance_or_order().await
    }
    async fn note_unknown_servers_accepted(&self, at: std::time::SystemTime) -> StoreResult<()> {
        self.hooks.before_call().await;
        self.inner.note_unknown_servers_accepted(at).await?;
        self.hooks.written(Write::UnknownServersAccepted(at));
        Ok(())
    }
    async fn unknown_servers_accepted(&self) -> StoreResult<bool> {
        self.hooks.before_call().await;
        self.inner.unknown_servers_accepted().await
    }
    async fn cloud_identity(&self) -> StoreResult<Option<pool_manager::cloud::CloudIdentity>> {
        self.hooks.before_call().await;
        self.inner.cloud_identity().await
    }
    async fn record_cloud_identity(
        &self,
        identity: &pool_manager::cloud::CloudIdentity,
    ) -> StoreResult<()> {
        self.hooks.before_call().await;
        self.inner.record_cloud_identity(identity).await?;
        self.hooks.written(Write::CloudIdentity(identity.clone()));
        Ok(())
    }

    async fn flush(&self) -> StoreResult<()> {
        self.hooks.before_call().await;
        self.hooks.before_flush().await?;
        // sled's flush runs on a blocking thread for as long as the disk
        // takes, and a paused-clock test's other tasks run meanwhile, at the
        // same instant: how far they get would be the machine's speed (a
        // refill's boot sent before a crash the test arms, or after). Held
        // here on the runtime's thread instead, then one yield as a flush
        // that the disk ends at once: every run interleaves the same way.
        // Unconstrained: a task that has spent tokio's cooperative budget
        // would be told "not ready" by the blocking task's handle at every
        // poll, and `block_on` would poll it again forever. The inner store
        // must need no other task of this runtime to flush (a sled store
        // needs only a blocking thread).
        let flushed = futures::executor::block_on(tokio::task::unconstrained(self.inner.flush()));
        tokio::task::yield_now().await;
        flushed
    }
}

/// The log capture: the lines (INFO and above) written on this thread,
/// which a paused-clock test's tasks run on, while the guard is held.
#[allow(unused_imports)] // as dead_code: a test binary may not capture
pub use warmpool_test_support::Logs;
