//! `SimCloud`: the handle every face shares. Owns the model behind one
//! `std::sync::Mutex` (never held across `.await`), the API gate that applies
//! call-level faults, the runtime fault knobs ([`Faults`]) and the inspection
//! API that tests and benchmarks use to look behind the cloud's back.

use crate::config::{SecurityGroupConfig, SimConfig};
use crate::model::{Hang, HostLoad, Model, SimServer};
use crate::mysql;
use pool_manager::cloud::{CloudError, CloudResult, Port, Volume};
use pool_manager::model::PoolKey;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

pub(crate) struct Inner {
    model: Mutex<Model>,
    pub(crate) listeners: bool,
    pub(crate) mysql_version: String,
    /// Methods whose calls wait at the gate (`Faults::hold_calls`); a
    /// watch, as held calls wait across `.await`, outside the model's lock.
    held: tokio::sync::watch::Sender<BTreeSet<String>>,
    /// Calls hung so far by the hang faults ([`SimCloud::hung_calls`]).
    hung: tokio::sync::watch::Sender<u64>,
}

impl Inner {
    /// Locks the model and drops objects whose deletion completed.
    pub(crate) fn lock_at(&self, now: Instant) -> MutexGuard<'_, Model> {
        // A panic elsewhere while holding the lock leaves the model usable:
        // every mutation is a few field writes, so recover rather than cascade.
        let mut model = self.model.lock().unwrap_or_else(|e| e.into_inner());
        model.expire(now);
        model
    }
}

/// The simulated cloud. Implements [`pool_manager::cloud::Cloud`]; cheap to
/// share through the `Arc` that [`SimCloud::new`] returns.
pub struct SimCloud {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SimCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCloud")
            .field("listeners", &self.inner.listeners)
            .finish_non_exhaustive()
    }
}

/// A call the API gate let through (see [`SimCloud::admit`]).
#[must_use = "a call admitted takes effect, then gives its answer through `answer`"]
pub(crate) struct Admitted<'a> {
    sim: &'a SimCloud,
    hang: bool,
}

impl Admitted<'_> {
    /// The call's answer, once it has taken effect; never, if its answer is
    /// to be lost.
    pub(crate) async fn answer<T>(self, answer: T) -> T {
        if self.hang {
            match self.sim.hang().await {}
        }
        answer
    }
}

impl SimCloud {
    pub fn new(config: SimConfig) -> Arc<SimCloud> {
        assert!(
            config.availability_zones.iter().all(|az| az.hosts > 0),
            "every availability zone needs at least one compute host"
        );
        if let Err(e) = config.validate() {
            panic!("cloudsim cannot run with this SimConfig: {e}");
        }
        Arc::new(SimCloud {
            inner: Arc::new(Inner {
                listeners: config.listeners,
                mysql_version: config.mysql_version.clone(),
                model: Mutex::new(Model::new(config)),
                held: tokio::sync::watch::Sender::new(BTreeSet::new()),
                hung: tokio::sync::watch::Sender::new(0),
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Model> {
        self.inner.lock_at(Instant::now())
    }

    /// Runs the API gate for one call: counts it, then hangs, holds, delays
    /// or fails it as the injected faults say. A call admitted is to take
    /// effect and pass its answer through [`Admitted::answer`], which loses
    /// it under [`Faults::hang_after_calls_take_effect`].
    pub(crate) async fn admit(&self, method: &'static str) -> CloudResult<Admitted<'_>> {
        let decision = self.lock().enter(method, Instant::now());
        if decision.hang == Hang::BeforeEffect {
            match self.hang().await {}
        }
        if self.inner.held.borrow().contains(method) {
            // A release since the look above is seen at once.
            let mut held = self.inner.held.subscribe();
            let _ = held.wait_for(|held| !held.contains(method)).await;
        }
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        let hang = decision.hang == Hang::AfterEffect;
        match decision.error {
            // A refused call has no effect to take: its answer is lost now.
            Some(_) if hang => match self.hang().await {},
            Some(e) => Err(e),
            None => Ok(Admitted { sim: self, hang }),
        }
    }

    /// [`SimCloud::admit`] for the HTTP face, whose fault layer hangs the
    /// request once its handler has answered when the call is to take
    /// effect before it hangs.
    pub(crate) async fn gate(&self, method: &'static str) -> CloudResult<()> {
        let admitted = self.admit(method).await?;
        if admitted.hang && !crate::http::lose_the_answer() {
            // Outside the fault layer there is no answer to lose later.
            match self.hang().await {}
        }
        Ok(())
    }

    /// A "crashed" peer: the caller's task is expected to be aborted.
    pub(crate) async fn hang(&self) -> std::convert::Infallible {
        self.inner.hung.send_modify(|n| *n += 1);
        std::future::pending().await
    }

    /// Sleeps for a simulated latency (jittered, scaled).
    pub(crate) async fn take(&self, base: Duration) {
        let d = self.lock().latency(base);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    /// The runtime fault knobs.
    pub fn faults(&self) -> Faults {
        Faults {
            inner: self.inner.clone(),
        }
    }

    /// The configuration the cloud was built with (fault knobs excluded).
    pub fn config(&self) -> SimConfig {
        self.lock().cfg.clone()
    }

    /// A simulated duration in tokio time (`time_scale` applied, no jitter).
    pub fn scaled(&self, d: Duration) -> Duration {
        self.lock().cfg.scaled(d)
    }

    /// API calls so far, per `Cloud` method name (e.g. `"create_server"`),
    /// including calls that failed, hung or were throttled.
    pub fn call_counts(&self) -> BTreeMap<&'static str, u64> {
        self.lock().calls.clone()
    }

    /// How many calls the hang faults ([`Faults::hang_after_calls`],
    /// [`Faults::hang_after_calls_take_effect`]) have hung so far, counted
    /// as each starts to hang (after its effect, if it takes one): a crash
    /// test waits on it to kill the process at that moment.
    pub fn hung_calls(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.hung.subscribe()
    }

    pub fn total_calls(&self) -> u64 {
        self.lock().calls.values().sum()
    }

    pub fn reset_call_counts(&self) {
        self.lock().calls.clear();
    }

    /// An admin deletes flavor `name`: it is no longer listed and boots of
    /// it are refused; its servers keep running.
    pub fn retire_flavor(&self, name: &str) {
        self.lock().cfg.retired_flavors.push(name.to_owned());
    }

    /// An admin sets flavor `name`'s extra specs (Nova's `openstack flavor
    /// set --property`), replacing those it had.
    pub fn set_flavor_extra_specs(&self, name: &str, specs: BTreeMap<String, String>) {
        self.lock()
            .cfg
            .flavor_extra_specs
            .insert(name.to_owned(), specs);
    }

    /// An admin's policy hides flavors' extra specs from the cloud's users
    /// (`hidden`), or shows them again.
    pub fn hide_flavor_extra_specs(&self, hidden: bool) {
        self.lock().cfg.flavor_extra_specs_hidden = hidden;
    }

    /// An admin sets the project's instances quota to `max` (servers over
    /// it keep running; boots are refused until some are gone).
    pub fn set_max_instances(&self, max: usize) {
        self.lock().cfg.quotas.max_instances = max;
    }

    /// An admin deletes the security groups named `name` of the project
    /// (Neutron lets one go only once no port has it: not checked here).
    pub fn delete_security_group(&self, name: &str) {
        self.lock()
            .cfg
            .security_groups
            .retain(|g| g.name != name || g.other_project.is_some());
    }

    /// An admin deletes the project's security groups named `name` and
    /// creates one of that name: it has a new id, returned.
    pub fn replace_security_group(&self, name: &str) -> String {
        let mut model = self.lock();
        let id = model.new_id();
        model
            .cfg
            .security_groups
            .retain(|g| g.name != name || g.other_project.is_some());
        model.cfg.security_groups.push(SecurityGroupConfig {
            id: Some(id.clone()),
            ..SecurityGroupConfig::new(name)
        });
        id
    }

    /// An admin disables Nova zone `az` (its hosts patched): listed as not
    /// available, boots in it refused; its servers keep running.
    pub fn close_zone(&self, az: &str) {
        self.lock().cfg.closed_zones.push(az.to_owned());
    }

    /// The admin enables Nova zone `az` again ([`SimCloud::close_zone`]).
    pub fn reopen_zone(&self, az: &str) {
        self.lock().cfg.closed_zones.retain(|z| z != az);
    }

    /// An admin disables every cinder-volume service of Cinder zone `zone`
    /// (or they are down): listed as not available, new volumes there end
    /// in `error`; its volumes stay.
    pub fn close_volume_zone(&self, zone: &str) {
        self.lock().cfg.closed_volume_zones.push(zone.to_owned());
    }

    /// The admin brings Cinder zone `zone`'s services back
    /// ([`SimCloud::close_volume_zone`]).
    pub fn reopen_volume_zone(&self, zone: &str) {
        self.lock().cfg.closed_volume_zones.retain(|z| z != zone);
    }

    /// Servers not being deleted, oldest first, with simulator-only details.
    pub fn servers(&self) -> Vec<SimServer> {
        let now = Instant::now();
        self.inner.lock_at(now).sim_servers(now)
    }

    /// One server, also while it is being deleted (status `Deleted`).
    pub fn server(&self, server_id: &str) -> Option<SimServer> {
        let now = Instant::now();
        self.inner.lock_at(now).sim_server_by_id(server_id, now)
    }

    /// Volumes not being deleted, oldest first.
    pub fn volumes(&self) -> Vec<Volume> {
        let now = Instant::now();
        self.inner.lock_at(now).volumes(now)
    }

    /// The ports made through Neutron (what warmpool makes for tenants),
    /// oldest first; not those Nova makes for the servers it boots
    /// ([`Self::server_ports`]).
    pub fn ports(&self) -> Vec<Port> {
        let now = Instant::now();
        self.inner.lock_at(now).ports(now)
    }

    /// The port Nova made for each server it booted (on the server's
    /// network, named "", bound to it; deleted with it), oldest first.
    /// They count against the port quota as the others do.
    pub fn server_ports(&self) -> Vec<Port> {
        let now = Instant::now();
        self.inner.lock_at(now).server_ports(now)
    }

    /// Per compute host: servers on it and boots in progress.
    pub fn hosts(&self) -> Vec<HostLoad> {
        let now = Instant::now();
        self.inner.lock_at(now).host_loads(now)
    }

    /// A tenant's existing volume, already `available`. Not an API call (no
    /// faults, not counted). Returns its id.
    pub fn create_volume_for_test(&self, project: &str, az: &str, size_gib: u32) -> String {
        self.lock().create_volume_for_test(project, az, size_gib)
    }

    /// A volume of warmpool's own project with no tenant tag, already
    /// `available`: made there by an operator, or kept by a warmpool from
    /// before the tag. Not an API call. Returns its id.
    pub fn create_own_volume_for_test(&self, az: &str, size_gib: u32) -> String {
        self.lock().create_own_volume_for_test(az, size_gib)
    }

    /// A tenant's existing volume of `volume_type`, a multiattach type,
    /// already `available`. Not an API call. Returns its id.
    pub fn create_multiattach_volume_for_test(
        &self,
        project: &str,
        az: &str,
        size_gib: u32,
        volume_type: &str,
    ) -> String {
        self.lock()
            .create_multiattach_volume_for_test(project, az, size_gib, volume_type)
    }

    /// Makes a volume `in-use` by a server warmpool does not know (another
    /// tenant VM). Returns that server's id, which `detach_volume` accepts.
    pub fn attach_volume_elsewhere(&self, volume_id: &str) -> CloudResult<String> {
        self.lock().attach_volume_elsewhere(volume_id)
    }

    /// An admin retypes the volume to `volume_type`, a multiattach type,
    /// and a server warmpool does not know attaches it, beside any server
    /// it is attached or attaching to. Not an API call. Returns that
    /// server's id, which `detach_volume` accepts.
    pub fn attach_volume_elsewhere_too(
        &self,
        volume_id: &str,
        volume_type: &str,
    ) -> CloudResult<String> {
        self.lock()
            .attach_volume_elsewhere_too(volume_id, volume_type)
    }

    /// The tenant takes `n` snapshots of the volume (0: deletes them);
    /// while it has any, Cinder refuses to delete it. Not an API call.
    /// False when there is no such volume.
    pub fn set_volume_snapshots(&self, volume_id: &str, n: u32) -> bool {
        self.inner
            .lock_at(Instant::now())
            .set_volume_snapshots(volume_id, n)
    }

    /// An admin resets a volume Cinder keeps `error_attaching` to
    /// `available` (`openstack volume set --state available`). Not an API
    /// call. False when there is no such volume, or it is not so.
    pub fn reset_error_attaching(&self, volume_id: &str) -> bool {
        let now = Instant::now();
        self.inner
            .lock_at(now)
            .reset_error_attaching(volume_id, now)
    }

    /// An admin resets a volume Cinder keeps `error_deleting` to
    /// `available` (`openstack volume set --state available`). Not an API
    /// call. False when there is no such volume, or it is not so.
    pub fn reset_error_deleting(&self, volume_id: &str) -> bool {
        let now = Instant::now();
        self.inner.lock_at(now).reset_error_deleting(volume_id, now)
    }

    /// The server's host fails: the server is in ERROR (with `fault`) from
    /// now on and Nova refuses to detach anything from it; deleting it
    /// still frees its volumes and ports. Not an API call. False when there
    /// is no such live server.
    pub fn fail_server(&self, server_id: &str, fault: &str) -> bool {
        let now = Instant::now();
        self.inner.lock_at(now).fail_server(server_id, fault, now)
    }

    /// Nova's restore of a SOFT_DELETED server, as an operator would send
    /// it: ACTIVE again, its mysqld stopped. Not an API call of the face's
    /// client. False when the server is not soft-deleted.
    pub fn restore_server(&self, server_id: &str) -> bool {
        let now = Instant::now();
        self.inner
            .lock_at(now)
            .restore_server(server_id, now)
            .is_ok()
    }

    /// Nova starts a task on the server (`Some`: an operator's snapshot,
    /// `image_snapshot`; a live migration, `migrating`) or ends it (`None`).
    /// The server stays ACTIVE here (Nova shows most tasks so; a live
    /// migration as MIGRATING) and its mysqld answers, but Nova refuses
    /// attaches and detaches (409) meanwhile. Not an API call. False when
    /// there is no such live server.
    pub fn set_server_task_state(&self, server_id: &str, task_state: Option<&str>) -> bool {
        self.inner
            .lock_at(Instant::now())
            .set_server_task_state(server_id, task_state)
    }

    /// mysqld on the server stops answering (it crashed); the server stays
    /// ACTIVE. Not an API call. False when there is no such live server.
    pub fn stop_mysqld(&self, server_id: &str) -> bool {
        self.inner.lock_at(Instant::now()).stop_mysqld(server_id)
    }

    /// Creates an ACTIVE, mysqld-ready server carrying warmpool metadata for
    /// `pool` (`META_POOL` = `pool.to_string()`, a random `META_INSTANCE`)
    /// that no store knows: a leak for the reconciler. Not an API call.
    /// With listeners on, call it inside a tokio runtime.
    pub fn inject_leak(&self, pool: &PoolKey) -> String {
        let socket = self.reserve_socket();
        let addr = socket.as_ref().and_then(|s| s.local_addr().ok());
        let now = Instant::now();
        let mut model = self.inner.lock_at(now);
        let id = model.inject_leak(pool, now, addr);
        if let Some(socket) = socket {
            let guard = mysql::spawn_listener(socket, Some(now), self.inner.mysql_version.clone());
            model.set_listener(&id, guard);
        }
        id
    }

    /// With listeners on and a runtime present, a bound socket for a new server.
    pub(crate) fn reserve_socket(&self) -> Option<tokio::net::TcpSocket> {
        if !self.inner.listeners || tokio::runtime::Handle::try_current().is_err() {
            return None;
        }
        match mysql::reserve() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cloudsim: cannot reserve a port for simulated mysqld: {e}");
                None
            }
        }
    }
}

/// Runtime fault injection; a cheap clone that shares the cloud's state.
/// Counters ("next n") are consumed only by calls that reach the point where
/// the fault applies, so each fires exactly n times.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults {
    fn with<R>(&self, f: impl FnOnce(&mut crate::model::FaultState) -> R) -> R {
        f(&mut self.inner.lock_at(Instant::now()).faults)
    }

    /// The next `n` servers that boot to ACTIVE never get a mysqld that answers.
    pub fn mysqld_never_starts_next(&self, n: u64) {
        self.with(|f| f.mysqld_never_starts = n);
    }

    /// The next `n` servers go ERROR (after `boot.error_after`) with this
    /// fault message, e.g. `"NoValidHost"`.
    pub fn error_next_boots(&self, n: u64, fault: impl Into<String>) {
        let fault = fault.into();
        self.with(|f| {
            f.error_boots = n;
            f.error_boot_fault = fault;
        });
    }

    /// The next `n` `attach_volume` calls return `CloudError::Transient`.
    pub fn fail_next_volume_attach(&self, n: u64) {
        self.with(|f| f.fail_volume_attach = n);
    }

    /// The next `n` accepted `attach_volume` calls fail on the compute
    /// host: the volume is `attaching` for the attach latency, then
    /// `available` again, attached to nothing.
    pub fn fail_next_volume_attach_on_host(&self, n: u64) {
        self.with(|f| f.volume_attach_fails_on_host = n);
    }

    /// The next `n` accepted `attach_volume` calls fail in Cinder (its
    /// backend cannot export the volume, say): the volume is `attaching` for
    /// the attach latency, then `error_attaching`, attached to nothing.
    /// `kept_by_nova`: Nova keeps the attach's mapping, so deleting the
    /// server lets go of the volume (Cinder has it `available` again);
    /// otherwise it stays `error_attaching` (until an admin resets it).
    pub fn error_next_volume_attach(&self, n: u64, kept_by_nova: bool) {
        self.with(|f| {
            f.volume_attach_errors = n;
            f.volume_attach_error_kept_by_nova = kept_by_nova;
        });
    }

    /// The next `n` accepted `attach_volume` calls fail on the compute
    /// host at once: the volume is `available` again (never seen
    /// `attaching`) and the server lists no attachment of it by the time
    /// the call answers.
    pub fn fail_next_volume_attach_on_host_at_once(&self, n: u64) {
        self.with(|f| f.volume_attach_fails_at_once = n);
    }

    /// The next `n` volumes created go `creating` -> `error` instead of
    /// `available` (the create call itself succeeds).
    pub fn error_next_volumes(&self, n: u64) {
        self.with(|f| f.error_volumes = n);
    }

    /// The next `n` accepted `delete_volume` calls fail in Cinder's
    /// backend: the volume is `deleting` for the delete latency, then
    /// `error_deleting`, and Cinder refuses its delete until an admin
    /// resets its state.
    pub fn error_next_volume_deletes(&self, n: u64) {
        self.with(|f| f.volume_delete_errors = n);
    }

    /// The next `n` `attach_port` calls return `CloudError::Transient`.
    pub fn fail_next_port_attach(&self, n: u64) {
        self.with(|f| f.fail_port_attach = n);
    }

    /// The next `n` API calls of any kind return `error` without effect.
    pub fn api_errors_next(&self, n: u64, error: CloudError) {
        self.with(|f| {
            f.api_errors = n;
            f.api_error = Some(error);
        });
    }

    /// The next `n` calls of `method` (named as [`SimCloud::call_counts`]
    /// names them, e.g. `"delete_server"`) return `error` without effect:
    /// a 5xx or 429 from the API in front of one service's call while the
    /// others pass. Calls of other methods do not count; armed again, the
    /// method's count and error are replaced.
    pub fn fail_next_calls_of(&self, method: &str, n: u64, error: CloudError) {
        self.with(|f| {
            if n == 0 {
                f.method_errors.remove(method);
            } else {
                f.method_errors.insert(method.to_owned(), (n, error));
            }
        });
    }

    /// After `n` more API calls, every call hangs forever (a crashed process
    /// or a dead cloud), before it takes effect. `hang_after_calls(0)`: the
    /// very next call hangs.
    pub fn hang_after_calls(&self, n: u64) {
        self.with(|f| {
            f.hang_after = Some(n);
            f.hang_takes_effect = false;
        });
    }

    /// After `n` more API calls, every call takes effect in the cloud and
    /// then hangs forever, its answer never given (a process that crashed
    /// while the cloud carried out its request: a server created whose id
    /// it never learned, a delete done it never recorded). A call the gate
    /// fails (`api_errors_next`, the rate limit) has no effect and hangs.
    /// `hang_after_calls_take_effect(0)`: the very next call does so.
    pub fn hang_after_calls_take_effect(&self, n: u64) {
        self.with(|f| {
            f.hang_after = Some(n);
            f.hang_takes_effect = true;
        });
    }

    /// New calls stop hanging (calls already hung stay hung).
    pub fn clear_hang(&self) {
        self.with(|f| {
            f.hang_after = None;
            f.hang_takes_effect = false;
        });
    }

    /// Calls of `method` (named as [`SimCloud::call_counts`] names them,
    /// e.g. `"create_server"`) from now on wait at the gate, counted, until
    /// [`Faults::release_calls`]: a step of warmpool's held mid-way for as
    /// long as a test needs, however fast or slow the machine.
    pub fn hold_calls(&self, method: &str) {
        self.inner.held.send_modify(|held| {
            held.insert(method.to_owned());
        });
    }

    /// The calls of `method` held so far go on, and those to come pass.
    pub fn release_calls(&self, method: &str) {
        self.inner.held.send_modify(|held| {
            held.remove(method);
        });
    }

    /// Every API call first sleeps this long, in tokio time (not scaled).
    /// `Duration::ZERO` turns it off.
    pub fn slow_calls(&self, delay: Duration) {
        self.with(|f| f.slow = delay);
    }

    /// The ports of servers deleted from now on stay bound this long after
    /// the server is gone, and ports detached from now on this long after
    /// the detach (Neutron's agent behind), in tokio time (not scaled).
    /// `Duration::ZERO` turns it off.
    pub fn slow_port_unbind(&self, delay: Duration) {
        self.with(|f| f.slow_port_unbind = delay);
    }

    /// IOPS throttling for boots placed from now on: the Nova and guest
    /// phases stretched by `BootModel`'s throttled factors (x2.5 and x4 by
    /// default; the benchmarks set their own).
    pub fn set_iops_throttled(&self, throttled: bool) {
        self.with(|f| f.iops_throttled = throttled);
    }

    pub fn iops_throttled(&self) -> bool {
        self.with(|f| f.iops_throttled)
    }

    /// Clears every fault, held calls released; IOPS throttling goes back
    /// to the configured value.
    pub fn clear(&self) {
        self.inner.held.send_modify(BTreeSet::clear);
        let mut model = self.inner.lock_at(Instant::now());
        model.faults = crate::model::FaultState {
            iops_throttled: model.cfg.iops_throttled,
            ..Default::default()
        };
    }
}
