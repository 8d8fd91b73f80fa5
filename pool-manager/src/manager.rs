//! `PoolManager`: the one handle the server holds. It owns the store, the
//! cloud, the probe and the background tasks, and offers the API operations.
//! The allocator, replenisher and reconciler extend [`Shared`] in their own
//! modules.

use crate::changes::{ChangeCursor, Changes};
use crate::cloud::{
    collecting_side_calls, failed_at_keystone, BootHeadroom, Cloud, CloudChange, CloudError,
    CloudIdentity, CloudResult, FlavorIops, ImageMiss, Network, NetworkShare, NewPortSpec,
    NewVolumeSpec, Port, Server, ServerSpec, Volume, MAX_RETRY_AFTER, MIN_RETRY_PAUSE,
};
use crate::error::{ApiCall, ManagerError, ManagerResult};
use crate::events::{
    BootOutcome, CloudService, DegradedCause, Event, EventKind, HealthBook, MarkProof, PoolHealth,
    SettingsChange,
};
use crate::gate::{Gate, GateSettings};
use crate::model::{Instance, InstanceState, PoolKey, PoolRecord, PoolSpec, TwinWatch};
use crate::probe::Probe;
use crate::reconciler::LeftAlone;
use crate::sizing::{SizingBook, SizingSettings, SizingStatus};
use crate::store::Store;
use crate::text;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How the manager paces its work. Defaults suit a real cloud.
#[derive(Clone, Debug)]
pub struct ManagerSettings {
    /// How often server, volume and port status is polled while waiting.
    /// Cleanups wait [`crate::cleanup_budget`] of it: 30 polls, and at
    /// least [`crate::CLEANUP_FLOOR`].
    pub poll_interval: Duration,
    /// How often each pool's replenisher re-checks even without a nudge.
    pub replenish_interval: Duration,
    /// How often the reconciler compares the store with the cloud.
    pub reconcile_interval: Duration,
    /// Boots in flight per pool, at most: a hard ceiling. The gate paces
    /// boots per AZ by how the cloud copes; a ceiling below demand x lead
    /// time would cap refills exactly when boots are slow.
    pub max_concurrent_boots: u32,
    /// First back-off after a retryable cloud error; doubles up to 32x.
    pub retry_backoff: Duration,
    /// How `target = auto` pools are sized (demand, lead time, service level).
    pub sizing: SizingSettings,
    /// The per-AZ throttle gate on replenishment boots.
    pub gate: GateSettings,
    /// How long a released allocation is kept (`GetAllocation` finds it, an
    /// `Allocate` with its request id answers with it). `None` (the default):
    /// forever. Older ones are forgotten, checked every [`FORGET_EVERY`]; an
    /// `Allocate` reusing a forgotten request id allocates anew.
    pub keep_released: Option<Duration>,
    /// Seeds the random instance ids. `None` (the default) seeds from the
    /// OS. A simulation sets it so that a replay repeats itself exactly; a
    /// seeded manager restarted on the same store draws the same ids again,
    /// which the store refuses (an instance is written only under a free
    /// id), so a seed is for managers that are never restarted.
    pub instance_id_seed: Option<u64>,
    /// Lets a start on a store that knows no instance and no order
    /// ([`Store::knows_no_instance_or_order`]) go on over a cloud that lists
    /// pool servers: the start-up pass deletes the unsold ones as leaks and
    /// leaves the sold ones (volumes attached) alone, logged, as any pass
    /// does. `false` (the default): such a start is refused before anything
    /// is deleted ([`ManagerError::UnknownServers`]), as the store is more
    /// likely the wrong one (a mistyped data dir, an unmounted volume) or
    /// another manager's servers share the cloud's tag. The same for the
    /// pool servers a store adopted from another cloud has no record of
    /// ([`ManagerSettings::adopt_cloud`]). For a store meant
    /// to be new, once: the start it lets go on notes so in the store
    /// ([`Store::note_unknown_servers_accepted`]), so later starts on it
    /// go on without it; left set, it turns that refusal off for good, on
    /// any store, so a start with it set that does not need it logs a
    /// warning to remove it.
    pub delete_unknown_servers: bool,
    /// Lets a start on a store that recorded another cloud than this
    /// manager's ([`Store::cloud_identity`]) go on: this cloud is recorded
    /// as the store's in its place, and the store's pools boot here, its
    /// orders are answered and its instances reconciled against this
    /// cloud, whose servers they do not name (the reconciler forgets the
    /// unsold ones; sold ones stay their orders' until released); under a
    /// renamed server tag of the same project and region, the store's
    /// servers are still there and served on by id. The store knows none
    /// of this cloud's servers, so the start-up pass judges those it lists
    /// as on a new store: any the store has no record of refuse the start
    /// before anything is done, the adoption unrecorded
    /// ([`ManagerError::UnknownServers`]), unless
    /// [`ManagerSettings::delete_unknown_servers`] is set too. `false`
    /// (the default): such a start is refused before anything is done
    /// ([`ManagerError::CloudChanged`]). The embedded simulated cloud
    /// adopts no store, set or not: it is new at every start and boots
    /// nothing real. For a store meant to move, once: later starts find
    /// this cloud recorded, and a start with it set that adopts nothing
    /// logs a warning to remove it.
    pub adopt_cloud: bool,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            replenish_interval: Duration::from_secs(5),
            reconcile_interval: Duration::from_secs(60),
            // The gate's largest window: the gate, not this, decides how
            // many boots the cloud takes (a pool of 1 purchase a minute at
            // a throttled 450 s lead time needs 8 in flight).
            max_concurrent_boots: crate::gate::DEFAULT_MAX_WINDOW,
            retry_backoff: Duration::from_millis(500),
            sizing: SizingSettings::default(),
            gate: GateSettings::default(),
            keep_released: None,
            instance_id_seed: None,
            delete_unknown_servers: false,
            adopt_cloud: false,
        }
    }
}

/// A pool with its live counts, as `GetPool` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolStatus {
    pub record: PoolRecord,
    /// The target the replenisher works toward now (computed for `auto`);
    /// 0 while the pool drains.
    pub effective_target: u32,
    pub counts: BTreeMap<&'static str, u32>,
    /// The computed target's inputs: demand, lead time, throttle gate.
    pub sizing: SizingStatus,
    /// The service level `sizing.z` is derived from (a manager setting).
    pub service_level: f64,
    /// Whether boots keep failing (see `crate::events::HealthBook`).
    pub health: PoolHealth,
    /// Which pool of its key this is: a pool deleted and created again
    /// under the same key has another. Counted in this process only (0 for
    /// a pool created before it started), so it tells two pools apart for
    /// watchers, which do not outlive it; not stored.
    pub generation: u64,
}

// The service level is a finite setting; equality is used by tests and watchers only.
impl Eq for PoolStatus {}

impl PoolStatus {
    pub fn count(&self, state: InstanceState) -> u32 {
        self.counts.get(state_name(state)).copied().unwrap_or(0)
    }
}

pub fn state_name(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Booting => "booting",
        InstanceState::Warming => "warming",
        InstanceState::Ready => "ready",
        InstanceState::Claimed => "claimed",
        InstanceState::Allocated => "allocated",
        InstanceState::Releasing => "releasing",
        InstanceState::Failed => "failed",
        InstanceState::Deleting => "deleting",
    }
}

/// A boot that became Ready ([`Shared::booted_ready`]).
pub(crate) struct BootedReady {
    pub instance: String,
    /// The image it was booted from.
    pub image: Option<String>,
}

/// State shared by the API and the background tasks.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub cloud: Arc<dyn Cloud>,
    pub probe: Arc<dyn Probe>,
    pub settings: ManagerSettings,
    /// Bumped on every change of an instance or pool; waiters and watchers
    /// re-read the store when it moves.
    pub changes: Arc<Changes>,
    /// What happened, for metrics and watchers.
    pub events: broadcast::Sender<Event>,
    /// Serializes read-modify-write of pool records (counters, spec), and
    /// what adds to a pool's supply judged on a count of it: the handovers
    /// of late cold boots (against max_ready) and a refill step's boots
    /// (against its target). Held over store calls only, never a cloud
    /// call.
    pub pool_lock: tokio::sync::Mutex<()>,
    /// One reconcile pass at a time (the periodic one, start-up's, one
    /// asked for): two passes rolling back one interrupted allocation could
    /// interleave with a retry of its order, the later pass deleting what
    /// the retry had just made.
    pub reconcile_lock: tokio::sync::Mutex<()>,
    /// Ready instances whose mysqld did not answer the last reconcile
    /// pass's probe; silent on the next pass too, they are replaced.
    pub silent_ready: Mutex<HashSet<String>>,
    /// Ready instances a purchase found silent at their claim since the
    /// last reconcile pass, and put back: purchases claim them last, and
    /// the one that found one silent not again until a pass has heard it.
    /// No look of the reconciler's: two passes still judge them.
    pub silent_at_claim: Mutex<HashSet<String>>,
    /// Per pool, the instance and image of each boot that became Ready
    /// since the pool's last step, a purchase's cold boot aside: each of
    /// the pool's image, while it stays Ready and unclaimed, stands in for
    /// one outdated Ready instance, which the step then retires. Counted at
    /// the source, as a step cannot tell a replacement from a refill by the
    /// instances it lists.
    pub booted_ready: Mutex<HashMap<PoolKey, Vec<BootedReady>>>,
    /// Instances a boot task is driving now, so the reconciler never starts a
    /// second; each held by a `DrivingClaim` (replenisher.rs).
    pub driving: Mutex<HashSet<String>>,
    /// Request ids an Allocate in this process is working on (with how many
    /// calls hold each); the periodic reconciler leaves their `Allocating`
    /// records alone.
    pub in_flight: Mutex<HashMap<String, usize>>,
    /// Request ids whose release a call of this process is carrying out
    /// now (a Release, or a reconcile pass finishing one), each held by a
    /// `ReleaseTurn` (allocator.rs): one call at a time, so that billing's
    /// retry, or a pass, does not send the order's detaches and deletes a
    /// second time while the first call's are under way.
    pub releasing: Mutex<HashSet<String>>,
    /// Woken as each `ReleaseTurn` ends, for a Release waiting its turn.
    pub release_turn_ended: tokio::sync::Notify,
    /// Why the latest try to finish each unfinished release failed, by
    /// request id, for GetAllocation (a release the cloud keeps from
    /// finishing showed only RELEASING). Kept in memory alone: a restart's
    /// first reconcile pass, before the API serves, tries each again.
    pub release_errors: Mutex<HashMap<String, String>>,
    pub tasks: Mutex<JoinSet<()>>,
    /// The API calls running as tasks ([`PoolManager::detached`]), which a
    /// graceful stop waits for ([`PoolManager::finish_calls`]).
    pub calls: watch::Sender<DetachedCalls>,
    pub shutdown: watch::Sender<bool>,
    /// Set by [`PoolManager::stop_waiting`]: purchases waiting for a Ready
    /// instance give up.
    pub stop_waiting: watch::Sender<bool>,
    /// Demand and lead-time estimators per pool (see `crate::sizing`).
    pub sizing: Mutex<SizingBook>,
    /// Pools whose stored learned sizing this version cannot read (a newer
    /// version wrote it): kept for that version, never saved over.
    pub sizing_unreadable: Mutex<std::collections::HashSet<PoolKey>>,
    /// Flavors' disk IOPS limits as the cloud last told them, by flavor
    /// name, for the pools' lead-time priors
    /// ([`Shared::refresh_flavor_iops`]).
    pub flavor_iops: Mutex<HashMap<String, crate::replenisher::FlavorIopsRead>>,
    /// The items reconcile passes keep failing, so that each is warned of
    /// once per problem, not at every pass.
    pub pass_failures: Mutex<crate::reconciler::PassFailures>,
    /// The per-AZ throttle gate (see `crate::gate`).
    pub gate: Arc<Mutex<Gate>>,
    /// Draws new instance ids (see `ManagerSettings::instance_id_seed`).
    pub instance_ids: Mutex<StdRng>,
    /// Draws the random part of allocation attempts' names
    /// ([`Allocation::new`](crate::model::Allocation::new)), seeded beside the instance ids.
    pub attempt_salts: Mutex<StdRng>,
    /// Boot health per pool: the degraded / recovered verdicts.
    pub health: Mutex<HealthBook>,
    /// Held while a pool's health is written to the store
    /// ([`Shared::save_health`]), so that writes land in the order the
    /// book changed in.
    pub health_saving: tokio::sync::Mutex<()>,
    /// Set once the health a previous process stored is back in the book
    /// ([`Shared::restore_health`]).
    pub health_restored: tokio::sync::OnceCell<()>,
    /// Pools created per key since this process started
    /// ([`PoolStatus::generation`]).
    pub generations: Mutex<HashMap<PoolKey, u64>>,
    /// Calls waiting out a Retry-After now, by service (see
    /// [`PoolManager::paused_cloud_calls`]); each held by a [`PausedCall`].
    pub paused: Mutex<BTreeMap<Option<CloudService>, u64>>,
    /// The servers left alone by the last reconcile pass that got through
    /// its sweep of the pool servers, by server id (see
    /// [`PoolManager::servers_left_alone`]).
    pub left_alone: Mutex<HashMap<String, LeftAlone>>,
    /// The cloud [`PoolManager::claim_store`] found, once it has: the
    /// store's, or to be recorded as the store's.
    pub claimed: tokio::sync::OnceCell<CloudIdentity>,
    /// The cloud a store of another one adopts
    /// ([`ManagerSettings::adopt_cloud`]), and how it differs from the
    /// store's, until the start-up pass records it, once it has found no
    /// pool server here the store has no record of
    /// (`Shared::adopt_cloud_at_start`).
    pub adopting: Mutex<Option<(CloudIdentity, CloudChange)>>,
    /// When this process's manager was built: a create the process before
    /// it sent may land until [`crate::reconciler::LATE_CREATE_GRACE`] past it.
    pub started: Instant,
}

/// The API calls running as tasks of the manager.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DetachedCalls {
    /// Set by [`PoolManager::finish_calls`]: no new call starts.
    closed: bool,
    running: usize,
}

/// One API call running as a task ([`PoolManager::detached`]), counted
/// in [`Shared::calls`] until dropped.
struct RunningCall(Arc<Shared>);

impl RunningCall {
    /// `None` once a graceful stop has begun ([`PoolManager::finish_calls`]).
    fn start(shared: &Arc<Shared>) -> Option<Self> {
        let started = shared.calls.send_if_modified(|calls| {
            if calls.closed {
                return false;
            }
            calls.running += 1;
            true
        });
        started.then(|| Self(shared.clone()))
    }
}

impl Drop for RunningCall {
    fn drop(&mut self) {
        self.0
            .calls
            .send_modify(|calls| calls.running = calls.running.saturating_sub(1));
    }
}

/// How often released allocations past `ManagerSettings::keep_released` are
/// looked for: a pass reads every allocation record.
pub const FORGET_EVERY: Duration = Duration::from_secs(3600);

impl Shared {
    /// Why a Ready instance's mysqld does not answer, if it does not: it
    /// did when the instance went Ready, but may have died since (crashed,
    /// OOM-killed) while its server stayed ACTIVE. Asked by a purchase of
    /// what it claims and by the reconciler of what waits in the pools.
    pub(crate) async fn silence_of(&self, instance: &Instance) -> Option<String> {
        match instance.mysql_addr {
            Some(addr) => self.probe.probe(addr).await.err().map(|e| e.to_string()),
            None => Some("no address recorded".into()),
        }
    }

    pub fn changed(&self) {
        self.changes.bump();
    }

    /// Logs (once, here) and broadcasts an event. A boot outcome may make a
    /// verdict on the pool's health, broadcast right after it. A purchase is
    /// counted in its pool's demand here, not by a subscriber: one that
    /// falls behind the broadcast loses events, and sizing must not.
    pub fn emit(&self, pool: Option<&PoolKey>, kind: EventKind) {
        self.emit_boot(pool, kind, None);
    }

    /// As [`Self::emit`], `error` being a failed boot's (of a
    /// [`EventKind::Boot`] event): a verdict it earns names it, for the
    /// operator to mend, not only its kind.
    pub(crate) fn emit_boot(&self, pool: Option<&PoolKey>, kind: EventKind, error: Option<&str>) {
        let at = self.sizing_book().wall_now(&self.settings.sizing);
        let mut verdict = match (&kind, pool) {
            (EventKind::Boot { outcome, lead_time }, Some(key)) => {
                let now = Instant::now();
                let started = lead_time.and_then(|lead| now.checked_sub(lead));
                self.health_book().note_boot(key, *outcome, started, now)
            }
            (
                EventKind::Allocation {
                    request_id,
                    outcome,
                    latency,
                },
                Some(key),
            ) => {
                self.note_demand(key, request_id, *outcome, *latency);
                None
            }
            _ => None,
        };
        if let Some(EventKind::Degraded { last_error, .. }) = &mut verdict {
            *last_error = error.map(str::to_owned);
        }
        for mut kind in std::iter::once(kind).chain(verdict) {
            kind.cap_text();
            let event = Event {
                pool: pool.cloned(),
                kind,
                at,
            };
            event.log();
            // No subscriber is fine: events are for observers only.
            let _ = self.events.send(event);
        }
    }

    fn generations(&self) -> MutexGuard<'_, HashMap<PoolKey, u64>> {
        // Plain counters, as the health book's.
        self.generations.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn generation(&self, key: &PoolKey) -> u64 {
        self.generations().get(key).copied().unwrap_or(0)
    }

    pub(crate) fn health_book(&self) -> MutexGuard<'_, HealthBook> {
        // Plain counters: a panic elsewhere leaves nothing half-done to fear.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts back the boot health a previous process stored for each pool
    /// (once; later calls return at once), before anything can change it:
    /// a pool whose boots kept failing is still degraded, announced by a
    /// [`EventKind::Degraded`] event, and its boots still paused, after a
    /// restart. A record this version cannot read costs its pool the
    /// verdict, not its start. One that no longer tells the pool's health
    /// ([`crate::events::StoredHealth::stale_for`]: a build that keeps none
    /// ran the store since, and deleted the pool and created it again, or
    /// booted it Ready), or one of a store adopted from another cloud (the
    /// verdict was on that cloud), is deleted, its pool starting healthy.
    /// After the store's claim, which says whether it is adopted.
    pub(crate) async fn restore_health(&self) -> ManagerResult<()> {
        self.health_restored
            .get_or_try_init(|| async {
                let adopting = self.adopting.lock().expect("adopting lock").is_some();
                let mut instances = None;
                for pool in self.store.list_pools().await? {
                    let key = &pool.key;
                    let stored = match self.store.get_pool_health(key).await {
                        Ok(Some(stored)) => stored,
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!(pool = %key, error = %e, "cannot read the pool's stored boot health (a newer warmpoold wrote it, or the store is damaged): the pool starts healthy, its failed boots counted anew; nothing to do, its next failed boot writes over the record");
                            continue;
                        }
                    };
                    let stale = if adopting {
                        Some("the store is adopted from another cloud, which the failed boots were on")
                    } else {
                        if instances.is_none() {
                            instances = Some(self.store.list_instances().await?);
                        }
                        let ready_at = instances
                            .iter()
                            .flatten()
                            .filter(|i| i.pool == *key)
                            .filter_map(|i| i.ready_at);
                        stored.stale_for(&pool, ready_at)
                    };
                    if let Some(why) = stale {
                        tracing::info!(pool = %key, why, "not resuming the pool's stored boot health: the pool starts healthy, its failed boots counted anew");
                        if let Err(e) = self.store.put_pool_health(key, None).await {
                            tracing::warn!(pool = %key, error = %e, "cannot delete the pool's stale boot health; the next start judges it again");
                        }
                        continue;
                    }
                    let wall = self.sizing_book().wall_now(&self.settings.sizing);
                    let health = self
                        .health_book()
                        .restore(key, &stored, Instant::now(), wall);
                    let failures = health.consecutive_boot_failures;
                    tracing::info!(pool = %key, failures, "resumed the pool's boot health from the store: its failed boots in a row, and the pause they earned");
                    // Announced again, as a failed start-up cloud check is
                    // at each start: this process's subscribers (the
                    // metrics' episodes) see the episode its recovery ends.
                    if health.degraded {
                        let last = health.last_failure.unwrap_or(BootOutcome::Failed);
                        let cause = DegradedCause::Boots(last);
                        self.emit(
                            Some(key),
                            EventKind::Degraded {
                                cause,
                                consecutive_failures: failures,
                                // The pool's, as the last failed boot wrote it.
                                last_error: pool.last_error.clone(),
                            },
                        );
                    }
                }
                Ok(())
            })
            .await
            .copied()
    }

    /// Writes what a restart keeps of `key`'s health
    /// ([`crate::events::StoredHealth`]) if it changed since it was last
    /// written (durable at the next flush). Failing costs a restart the
    /// verdict, so it is only logged; the next change writes it again.
    pub(crate) async fn save_health(&self, key: &PoolKey) {
        let _in_order = self.health_saving.lock().await;
        let Some(lasting) = self.health_book().unsaved(key) else {
            return;
        };
        let stored = match lasting {
            None => None,
            // Tied to the pool's record as it is now (see `PoolMark`).
            Some(lasting) => match self.store.get_pool(key).await {
                Ok(Some(pool)) => {
                    let wall = self.sizing_book().wall_now(&self.settings.sizing);
                    Some(lasting.stored(&pool, Instant::now(), wall))
                }
                // Deleted: its drain forgot its health.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(pool = %key, error = %e, "cannot read the pool to store its boot health; a restart would find it healthy");
                    return;
                }
            },
        };
        match self.store.put_pool_health(key, stored.as_ref()).await {
            Ok(()) => self.health_book().saved(key, lasting),
            Err(e) => {
                tracing::warn!(pool = %key, error = %e, "cannot store the pool's boot health; a restart would find it healthy")
            }
        }
    }

    /// Forgets `key`'s health, stored too: a pool created under the key of
    /// one deleted is healthy from its first listing.
    pub(crate) async fn forget_health(&self, key: &PoolKey) -> ManagerResult<()> {
        let _in_order = self.health_saving.lock().await;
        self.health_book().forget(key);
        self.store.put_pool_health(key, None).await?;
        Ok(())
    }

    fn paused_calls(&self) -> MutexGuard<'_, BTreeMap<Option<CloudService>, u64>> {
        // Plain counters, as the health book's.
        self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        // Read under the lock `shutdown` sets the flag under: a task spawned
        // as shutdown begins is refused, or lands in the set it aborts.
        let mut tasks = self.tasks.lock().expect("task set lock");
        if *self.shutdown.borrow() {
            return;
        }
        // A finished task stays in the set until joined: reap them here, or
        // every boot and purchase ever made would be kept until shutdown.
        while let Some(finished) = tasks.try_join_next() {
            if let Err(e) = finished {
                if e.is_panic() {
                    tracing::error!(error = %e, "a background task panicked");
                }
            }
        }
        tasks.spawn(task);
    }

    /// Applies `change` to the stored instance until a compare-and-swap
    /// succeeds. `change` returns `None` to leave the record alone; the result
    /// is the record as written, or `None` when absent or left alone. Its
    /// `last_error` is written [`crate::text::capped`].
    pub async fn update_instance(
        &self,
        id: &str,
        mut change: impl FnMut(&Instance) -> Option<Option<Instance>>,
    ) -> ManagerResult<Option<Instance>> {
        loop {
            let Some(current) = self.store.get_instance(id).await? else {
                return Ok(None);
            };
            let Some(mut next) = change(&current) else {
                return Ok(None);
            };
            if let Some(next) = &mut next {
                text::cap(&mut next.last_error);
            }
            if self
                .store
                .cas_instance(Some(&current), next.as_ref())
                .await?
            {
                self.changed();
                return Ok(next);
            }
        }
    }

    pub async fn pool(&self, key: &PoolKey) -> ManagerResult<PoolRecord> {
        self.store
            .get_pool(key)
            .await?
            .ok_or_else(|| ManagerError::PoolNotFound(key.clone()))
    }

    /// Applies `change` to the stored pool, under the pool lock; its
    /// `last_error` is written [`crate::text::capped`].
    pub async fn update_pool(
        &self,
        key: &PoolKey,
        change: impl FnOnce(&mut PoolRecord),
    ) -> ManagerResult<PoolRecord> {
        let _guard = self.pool_lock.lock().await;
        let mut pool = self.pool(key).await?;
        change(&mut pool);
        text::cap(&mut pool.last_error);
        self.store.put_pool(&pool).await?;
        self.changed();
        Ok(pool)
    }

    /// Calls the cloud until it answers something other than a retryable
    /// error, honouring Retry-After, or until `deadline`. Each pause taken
    /// after a throttle (a 429/413, or a 503 naming a Retry-After) is
    /// broadcast as [`EventKind::Throttled`] once over,
    /// and counted in [`PoolManager::paused_cloud_calls`] while it lasts.
    pub async fn retry<T, F, Fut>(&self, deadline: Instant, mut call: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CloudError>>,
    {
        let mut backoff = self.settings.retry_backoff;
        loop {
            // The cloud wrapper notes which service the call went to, so the
            // pause can be attributed to it.
            let attempt = CALL_SERVICE.scope(Cell::new(None), call());
            tokio::pin!(attempt);
            let result = (&mut attempt).await;
            let service = attempt.as_mut().take_value().and_then(Cell::into_inner);
            match result {
                Err(e) if e.is_retryable() => {
                    let throttled = matches!(e, CloudError::Throttled { .. });
                    // A "Retry-After: 0" (Cinder sends it; a token bucket
                    // at its boundary computes it) names no wait: the
                    // growing backoff applies, as without one, instead of
                    // a call (and a Throttled event) every
                    // MIN_RETRY_PAUSE until the deadline. A short wait
                    // named is kept above that floor, so that time moves
                    // on tokio's paused clock.
                    let pause = match &e {
                        CloudError::Throttled {
                            retry_after: Some(after),
                            ..
                        } if !after.is_zero() => (*after).clamp(MIN_RETRY_PAUSE, MAX_RETRY_AFTER),
                        _ => backoff,
                    };
                    if deadline.saturating_duration_since(Instant::now()) <= pause {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, ?pause, "retrying cloud call");
                    {
                        let _counted = throttled.then(|| PausedCall::new(self, service));
                        tokio::time::sleep(pause).await;
                    }
                    // Reported once taken: a call dropped mid-pause (its
                    // caller gave up) did not wait it out.
                    if throttled {
                        self.emit(None, EventKind::Throttled { service, pause });
                    }
                    backoff = backoff
                        .saturating_mul(2)
                        .min(self.settings.retry_backoff.saturating_mul(32));
                }
                other => return other,
            }
        }
    }

    pub async fn pool_status(&self, record: PoolRecord) -> ManagerResult<PoolStatus> {
        let counts = self
            .store
            .count_instances(&record.key)
            .await?
            .into_iter()
            .map(|(state, n)| (state_name(state), n))
            .collect();
        let sizing = self.sizing_status(&record);
        let health = self.health_book().health(&record.key);
        let generation = self.generation(&record.key);
        Ok(PoolStatus {
            effective_target: sizing.target,
            record,
            counts,
            sizing,
            service_level: self.settings.sizing.service_level,
            health,
            generation,
        })
    }
}

/// One call waiting out a Retry-After, counted in [`Shared::paused`] for as
/// long as it lives: a call dropped mid-pause (its caller gave up, the
/// manager stopped) ends its pause too, and must not stay counted.
struct PausedCall<'a> {
    shared: &'a Shared,
    service: Option<CloudService>,
}

impl<'a> PausedCall<'a> {
    fn new(shared: &'a Shared, service: Option<CloudService>) -> Self {
        *shared.paused_calls().entry(service).or_default() += 1;
        Self { shared, service }
    }
}

impl Drop for PausedCall<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.shared.paused_calls().get_mut(&self.service) {
            *n = n.saturating_sub(1);
        }
    }
}

tokio::task_local! {
    /// The service of the cloud call one `Shared::retry` attempt makes,
    /// noted by [`ServiceNoting`].
    static CALL_SERVICE: Cell<Option<CloudService>>;
}

/// The service the cloud call of the [`Shared::retry`] attempt (or the
/// [`noting_service`] call) running now went to, once it was made.
pub(crate) fn noted_service() -> Option<CloudService> {
    CALL_SERVICE.try_with(Cell::get).ok().flatten()
}

/// `call`'s outcome, and the service of the last cloud call it made (the
/// one that failed, for a call stopped by its first error): for a caller
/// that tells the gate of a 429, outside [`Shared::retry`] or inside one
/// of its attempts (whose pause is then attributed to the service too).
pub(crate) async fn noting_service<T>(call: impl Future<Output = T>) -> (T, Option<CloudService>) {
    let (outcome, service) = CALL_SERVICE
        .scope(Cell::new(None), async move {
            let outcome = call.await;
            (outcome, noted_service())
        })
        .await;
    if let Some(service) = service {
        let _ = CALL_SERVICE.try_with(|noted| noted.set(Some(service)));
    }
    (outcome, service)
}

/// Wraps the manager's cloud to note which service each call goes to, for
/// [`Shared::retry`]'s pause events and the gate's pauses. Transparent
/// otherwise.
struct ServiceNoting {
    inner: Arc<dyn Cloud>,
}

impl ServiceNoting {
    /// `call` (a method of `service`'s), noted as `service`'s, or as
    /// Keystone's when it failed at a token request inside it (a renewal,
    /// a login again: a failed Identity [`SideCall`](crate::cloud::SideCall) with the call's
    /// error): a Keystone 429 is no 429 of the service called, whose
    /// pause (and, for Nova, a zone's window) it must not take.
    async fn noted<T>(
        service: CloudService,
        call: impl Future<Output = CloudResult<T>>,
    ) -> CloudResult<T> {
        // Outside a retry attempt there is nothing to tell.
        let _ = CALL_SERVICE.try_with(|noted| noted.set(Some(service)));
        let (result, side_calls) = collecting_side_calls(call).await;
        let service = if failed_at_keystone(&side_calls, result.as_ref().err()) {
            CloudService::Identity
        } else {
            service
        };
        let _ = CALL_SERVICE.try_with(|noted| noted.set(Some(service)));
        result
    }
}

#[async_trait::async_trait]
impl Cloud for ServiceNoting {
    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server> {
        Self::noted(CloudService::Compute, self.inner.create_server(spec)).await
    }
    async fn read_server(&self, server_id: &str) -> CloudResult<Server> {
        Self::noted(CloudService::Compute, self.inner.read_server(server_id)).await
    }
    async fn ports_bound_to(&self, server_id: &str) -> CloudResult<Vec<String>> {
        Self::noted(CloudService::Network, self.inner.ports_bound_to(server_id)).await
    }
    async fn list_pool_servers(&self) -> CloudResult<Vec<Server>> {
        Self::noted(CloudService::Compute, self.inner.list_pool_servers()).await
    }
    async fn delete_server(&self, server_id: &str) -> CloudResult<()> {
        Self::noted(CloudService::Compute, self.inner.delete_server(server_id)).await
    }
    async fn create_volume(&self, spec: &NewVolumeSpec) -> CloudResult<Volume> {
        Self::noted(CloudService::Volume, self.inner.create_volume(spec)).await
    }
    async fn get_volume(&self, volume_id: &str) -> CloudResult<Volume> {
        Self::noted(CloudService::Volume, self.inner.get_volume(volume_id)).await
    }
    async fn find_volumes_by_name(&self, name: &str) -> CloudResult<Vec<Volume>> {
        Self::noted(CloudService::Volume, self.inner.find_volumes_by_name(name)).await
    }
    async fn set_volume_metadata(
        &self,
        volume_id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        let call = self.inner.set_volume_metadata(volume_id, metadata);
        Self::noted(CloudService::Volume, call).await
    }
    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        Self::noted(CloudService::Volume, self.inner.delete_volume(volume_id)).await
    }
    async fn attach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()> {
        let call = self.inner.attach_volume(server_id, volume_id);
        Self::noted(CloudService::Compute, call).await
    }
    async fn detach_volume(&self, server_id: &str, volume_id: &str) -> CloudResult<()> {
        let call = self.inner.detach_volume(server_id, volume_id);
        Self::noted(CloudService::Compute, call).await
    }
    async fn get_network(&self, network_id: &str) -> CloudResult<Network> {
        Self::noted(CloudService::Network, self.inner.get_network(network_id)).await
    }
    async fn network_shares(&self, network_id: &str) -> CloudResult<Vec<NetworkShare>> {
        let call = self.inner.network_shares(network_id);
        Self::noted(CloudService::Network, call).await
    }
    async fn create_port(&self, spec: &NewPortSpec) -> CloudResult<Port> {
        Self::noted(CloudService::Network, self.inner.create_port(spec)).await
    }
    async fn get_port(&self, port_id: &str) -> CloudResult<Port> {
        Self::noted(CloudService::Network, self.inner.get_port(port_id)).await
    }
    async fn find_ports_by_name(&self, name: &str) -> CloudResult<Vec<Port>> {
        Self::noted(CloudService::Network, self.inner.find_ports_by_name(name)).await
    }
    async fn delete_port(&self, port_id: &str) -> CloudResult<()> {
        Self::noted(CloudService::Network, self.inner.delete_port(port_id)).await
    }
    async fn attach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()> {
        let call = self.inner.attach_port(server_id, port_id);
        Self::noted(CloudService::Compute, call).await
    }
    async fn detach_port(&self, server_id: &str, port_id: &str) -> CloudResult<()> {
        let call = self.inner.detach_port(server_id, port_id);
        Self::noted(CloudService::Compute, call).await
    }
    fn volume_zone_for(&self, server_az: &str) -> String {
        self.inner.volume_zone_for(server_az)
    }
    fn boot_image(&self, pool_image: &str) -> String {
        self.inner.boot_image(pool_image)
    }
    async fn cloud_identity(&self) -> CloudResult<CloudIdentity> {
        self.inner.cloud_identity().await
    }
    async fn services_in_named_region_alone(&self) -> CloudResult<bool> {
        self.inner.services_in_named_region_alone().await
    }
    async fn boot_headroom(&self, flavor: &str) -> CloudResult<BootHeadroom> {
        Self::noted(CloudService::Compute, self.inner.boot_headroom(flavor)).await
    }
    async fn check_boot_placement(&self, pool: &PoolKey) -> CloudResult<()> {
        Self::noted(CloudService::Compute, self.inner.check_boot_placement(pool)).await
    }
    async fn flavor_disk_iops(&self, flavor: &str) -> CloudResult<FlavorIops> {
        Self::noted(CloudService::Compute, self.inner.flavor_disk_iops(flavor)).await
    }
    async fn check_boot_image(&self, image: &str, miss: ImageMiss) -> CloudResult<()> {
        Self::noted(
            CloudService::Image,
            self.inner.check_boot_image(image, miss),
        )
        .await
    }
    async fn check_volume_zone(&self, pool: &PoolKey) -> CloudResult<()> {
        Self::noted(CloudService::Volume, self.inner.check_volume_zone(pool)).await
    }
}

/// The core's handle. Cheap to clone.
#[derive(Clone)]
pub struct PoolManager {
    pub(crate) shared: Arc<Shared>,
}

impl PoolManager {
    /// Builds the manager. Nothing runs until [`PoolManager::start`].
    pub fn new(
        store: Arc<dyn Store>,
        cloud: Arc<dyn Cloud>,
        probe: Arc<dyn Probe>,
        settings: ManagerSettings,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                cloud: Arc::new(ServiceNoting { inner: cloud }),
                probe,
                changes: Arc::default(),
                events: broadcast::channel(1024).0,
                pool_lock: tokio::sync::Mutex::new(()),
                reconcile_lock: tokio::sync::Mutex::new(()),
                silent_ready: Mutex::default(),
                silent_at_claim: Mutex::default(),
                booted_ready: Mutex::default(),
                driving: Mutex::new(HashSet::new()),
                in_flight: Mutex::new(HashMap::new()),
                releasing: Mutex::default(),
                release_turn_ended: tokio::sync::Notify::new(),
                release_errors: Mutex::default(),
                tasks: Mutex::new(JoinSet::new()),
                calls: watch::channel(DetachedCalls::default()).0,
                shutdown: watch::channel(false).0,
                stop_waiting: watch::channel(false).0,
                sizing: Mutex::new(SizingBook::default()),
                sizing_unreadable: Mutex::default(),
                flavor_iops: Mutex::default(),
                pass_failures: Mutex::default(),
                gate: Arc::new(Mutex::new(Gate::new(settings.gate.clone()))),
                health: Mutex::new(HealthBook::default()),
                health_saving: tokio::sync::Mutex::new(()),
                health_restored: tokio::sync::OnceCell::new(),
                generations: Mutex::default(),
                paused: Mutex::default(),
                left_alone: Mutex::default(),
                claimed: tokio::sync::OnceCell::new(),
                adopting: Mutex::default(),
                started: Instant::now(),
                instance_ids: Mutex::new(seeded(settings.instance_id_seed)),
                attempt_salts: Mutex::new(seeded(
                    settings.instance_id_seed.map(|seed| seed.wrapping_add(1)),
                )),
                settings,
            }),
        }
    }

    /// Claims the store for this manager's cloud
    /// ([`PoolManager::claim_store`]), reconciles the store with the cloud
    /// (finishing or rolling back what a
    /// crash interrupted), then starts one replenisher per pool and the
    /// periodic reconciler. Call before serving mutations. On a store that
    /// knows no instance and no order, a cloud listing pool servers is
    /// refused before anything is deleted ([`ManagerError::UnknownServers`])
    /// unless [`ManagerSettings::delete_unknown_servers`] is set; so is,
    /// on a store adopted from another cloud, a cloud listing pool servers
    /// the store has no record of.
    pub async fn start(&self) -> ManagerResult<()> {
        self.claim_store().await?;
        // Read before the start-up pass, which records the adoption and
        // forgets it. A store of no region adopted in the region named
        // serves the servers it did (the operator saw them listed there),
        // as one under a renamed tag does: its lead times stay.
        let of_another_cloud = matches!(
            *self.shared.adopting.lock().expect("adopting lock"),
            Some((_, CloudChange::Cloud))
        );
        // Before the start-up pass, whose resumed boots may fail.
        self.shared.restore_health().await?;
        let needed = self.shared.reconcile_at_start().await?;
        if self.shared.settings.delete_unknown_servers && !needed {
            // Left set, the next start on the wrong store (a mistyped data
            // dir, an unmounted volume) deletes the pool servers it does
            // not know as leaks: the refusal it disables protects every
            // start, as --adopt-cloud's does.
            tracing::warn!(
                "--delete-unknown-servers is set, but this start did not need it (the store knows the pool servers the cloud lists, or is noted as meant to be new, or the cloud lists none it does not know): the flag is for one start, on a store meant to be new; remove it, or a later start on the wrong store (a mistyped data dir, an unmounted volume) deletes every unsold pool server that store does not know"
            );
        }
        for pool in self.shared.store.list_pools().await? {
            if let Err((field, message)) = pool.spec.validate() {
                tracing::warn!(pool = %pool.key, field, "{message}: the stored settings break a rule newer than them; change {field} to mend it");
            }
            // Before any purchase can be counted: restoring replaces what
            // the pool's estimators hold.
            self.shared
                .restore_learned_sizing(&pool.key, of_another_cloud)
                .await;
            self.shared.start_replenisher(pool.key);
        }
        let shared = self.shared.clone();
        self.shared
            .spawn(async move { shared.reconcile_loop().await });
        if self.shared.settings.keep_released.is_some() {
            let shared = self.shared.clone();
            self.shared.spawn(async move { shared.forget_loop().await });
        }
        Ok(())
    }

    /// Compares the cloud the store serves ([`Store::cloud_identity`]) with
    /// this manager's ([`Cloud::cloud_identity`]), before anything else is
    /// done with either. A store that recorded none (a new one, or one an
    /// older version wrote) records this one, as one that recorded no
    /// region records this one's when its catalog has the services in the
    /// region named alone ([`Cloud::services_in_named_region_alone`]:
    /// none named reached that region too); one that recorded another is
    /// refused
    /// ([`ManagerError::CloudChanged`]) unless
    /// [`ManagerSettings::adopt_cloud`] is set and this cloud is not the
    /// embedded one, which adopts no store. What it records is flushed
    /// before it returns, so no boot on this cloud is ever durable without
    /// it. An adoption is recorded by [`PoolManager::start`]'s reconcile
    /// pass instead, before it does anything else and once it has found no
    /// pool server here the store has no record of: a store adopted from
    /// another cloud knows none of this one's, as a new store knows none
    /// ([`ManagerError::UnknownServers`]). [`PoolManager::start`] calls it
    /// first; a caller that writes to the store before the start (a pool
    /// it marks unusable) calls it before that. Once it has answered, it
    /// answers the same without looking again.
    pub async fn claim_store(&self) -> ManagerResult<CloudIdentity> {
        self.shared
            .claimed
            .get_or_try_init(|| self.claim_store_now())
            .await
            .cloned()
    }

    async fn claim_store_now(&self) -> ManagerResult<CloudIdentity> {
        let shared = &self.shared;
        let current = shared
            .retry(shared.cleanup_deadline(), || shared.cloud.cloud_identity())
            .await?;
        let recorded = shared.store.cloud_identity().await?;
        // A store that recorded no region (an older warmpoold's, or one
        // run with none named) served the region each service was in:
        // the one named now, when the catalog has them all in it alone.
        // Not asked with --adopt-cloud, which adopts the store whatever
        // the catalog says: a Keystone refusing the catalog for good would
        // else stop the start the flag is there to get past.
        let region_named = recorded
            .as_ref()
            .is_some_and(|recorded| current.change_from(recorded) == CloudChange::RegionNamed)
            && !shared.settings.adopt_cloud
            && match shared
                .retry(shared.cleanup_deadline(), || {
                    shared.cloud.services_in_named_region_alone()
                })
                .await
            {
                Ok(alone) => alone,
                // An outage: the start fails (exit 1), and a later one
                // asks again.
                Err(e) if e.is_retryable() => return Err(e.into()),
                // Refused for good (a 403, a gateway's 404): the catalog
                // cannot tell, and the store is refused as when it lacks
                // the services, a refusal --adopt-cloud gets past.
                Err(e) => {
                    tracing::warn!(cloud = %current, error = %e, "the service catalog cannot be read to tell whether the services warmpool calls are in the region named alone: the store, which recorded no region, is refused as if they were not");
                    false
                }
            };
        let adopts = !region_named
            && recorded.as_ref().is_some_and(|recorded| {
                matches!(
                    current.change_from(recorded),
                    CloudChange::ServerTag | CloudChange::RegionNamed | CloudChange::Cloud
                )
            });
        if shared.settings.adopt_cloud && !adopts {
            // Left set, the next store of another cloud it meets is taken
            // over unasked: the refusal it disables protects every start.
            tracing::warn!(
                cloud = %current,
                "--adopt-cloud is set, but the store serves this cloud already (or records it now): the flag is for one start, to move a store to another cloud; remove it, or a later start on a store of another cloud takes that store over unasked"
            );
        }
        match recorded {
            Some(recorded) => match current.change_from(&recorded) {
                CloudChange::None => return Ok(current),
                CloudChange::RegionNamed if region_named => tracing::info!(
                    %recorded,
                    cloud = %current,
                    "the store recorded no region, and the service catalog has the services warmpool calls in the region named alone, which no region named reached too: the store records it"
                ),
                // The embedded cloud is new at every start and boots
                // nothing real: a store it adopted would forget the real
                // cloud's servers as gone, boot its pools in the
                // simulation, and be refused by the next start on the
                // cloud it served (warmpoold's --adopt-cloud given
                // without --config, which runs the demo).
                CloudChange::ServerTag | CloudChange::RegionNamed | CloudChange::Cloud
                    if !shared.settings.adopt_cloud || current == CloudIdentity::Embedded =>
                {
                    return Err(ManagerError::CloudChanged {
                        recorded: Box::new(recorded),
                        current: Box::new(current),
                    })
                }
                change @ (CloudChange::ServerTag
                | CloudChange::RegionNamed
                | CloudChange::Cloud) => {
                    tracing::warn!(
                        %recorded,
                        %current,
                        "the store served {recorded}: as --adopt-cloud asks, it is to serve {current}, recorded once the start-up reconcile finds no pool server here the store has no record of"
                    );
                    *shared.adopting.lock().expect("adopting lock") =
                        Some((current.clone(), change));
                    return Ok(current);
                }
            },
            None => tracing::info!(cloud = %current, "the store records the cloud it serves"),
        }
        shared.store.record_cloud_identity(&current).await?;
        shared.store.flush().await?;
        Ok(current)
    }

    /// Runs one reconcile pass now.
    pub async fn reconcile(&self) -> ManagerResult<()> {
        self.shared.reconcile_once().await
    }

    /// Forgets the allocations released longer than
    /// [`ManagerSettings::keep_released`] ago (none when it is `None`), now;
    /// returns how many. The manager does this every [`FORGET_EVERY`].
    pub async fn forget_released(&self) -> ManagerResult<usize> {
        self.shared.forget_released().await
    }

    /// The first step of a graceful stop: purchases waiting for a Ready
    /// instance (`EmptyPoolPolicy::Wait`), or for quota room for a cold
    /// boot, give up with [`ManagerError::ShuttingDown`] and undo what they
    /// created, and later ones do not wait (nor does a call repeating an
    /// order under way wait for its answer), so that none holds the stop for
    /// its whole timeout with nothing claimed; nor does a purchase that
    /// finds its pool empty start a cold boot, which would take longer
    /// than any grace period. Purchases already holding an instance, or
    /// cold-booting one, go on (a cold boot its purchase is stopped with
    /// is handed to its pool, [`PoolManager::shutdown`]).
    pub fn stop_waiting(&self) {
        self.shared.stop_waiting.send_replace(true);
    }

    /// The second step of a graceful stop: API calls started from now on
    /// (Allocate, Release, CreatePool, UpdatePool, DeletePool) answer
    /// [`ManagerError::ShuttingDown`], and those running (their callers may
    /// have stopped waiting for them) are waited for, up to `within`.
    /// Returns how many are still running then: [`PoolManager::shutdown`]
    /// stops them where they are, for the next start's reconcile to finish
    /// or undo.
    pub async fn finish_calls(&self, within: Duration) -> usize {
        self.shared.calls.send_modify(|calls| calls.closed = true);
        let mut calls = self.shared.calls.subscribe();
        // The sender lives in `shared`, which `self` holds: never closed.
        let _ = tokio::time::timeout(within, calls.wait_for(|calls| calls.running == 0)).await;
        let left = calls.borrow().running;
        left
    }

    /// How many API calls are running as tasks of the manager now, their
    /// callers waiting for them or not.
    pub fn calls_running(&self) -> usize {
        self.shared.calls.borrow().running
    }

    /// Whether a graceful stop refuses new calls ([`PoolManager::finish_calls`]).
    pub(crate) fn calls_closed(&self) -> bool {
        self.shared.calls.borrow().closed
    }

    /// Stops background tasks (boots in flight are resumed by the next
    /// start's reconcile) and the API calls still running (for a graceful
    /// stop, call [`PoolManager::finish_calls`] first), hands the cold
    /// boots of the purchases so stopped to their pools where they have
    /// room (the next start rolls the orders back, not the boots), saves
    /// what the estimators learned and flushes the store.
    pub async fn shutdown(&self) -> ManagerResult<()> {
        let mut tasks = {
            let mut tasks = self.shared.tasks.lock().expect("task set lock");
            self.shared.shutdown.send_replace(true);
            std::mem::take(&mut *tasks)
        };
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        self.shared.driving.lock().expect("driving lock").clear();
        self.shared.hand_over_cold_boots().await;
        // Best effort: failing to save sizing must not keep the store unflushed.
        match self.shared.store.list_pools().await {
            Ok(pools) => {
                for pool in pools {
                    self.shared.save_learned_sizing(&pool.key).await;
                    // A boot's task stopped between its outcome and its write.
                    self.shared.save_health(&pool.key).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list pools to save their learned sizing"),
        }
        self.shared.store.flush().await?;
        Ok(())
    }

    /// Every event from now on (boots, allocations, leaks, settings, health
    /// verdicts, throttle pauses).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// A cursor on the changes of pools and instances; `changed()` returns
    /// once one happens that the cursor has not seen.
    pub fn subscribe(&self) -> ChangeCursor {
        self.shared.changes.subscribe()
    }

    pub async fn list_pools(&self) -> ManagerResult<Vec<PoolStatus>> {
        let mut statuses = Vec::new();
        for record in self.shared.store.list_pools().await? {
            statuses.push(self.shared.pool_status(record).await?);
        }
        Ok(statuses)
    }

    /// Marks a stored pool its cloud check found unusable (its flavor,
    /// image, zone or volumes' Cinder zone gone since it was created):
    /// degraded, with `problem` as its last error, so operators see it in
    /// GetPool, the metrics and `warmpoolctl`, instead of warmpoold
    /// refusing to start for every other pool. The mark is an episode as
    /// failed boots make one: a [`EventKind::Degraded`] event (logged once,
    /// counted by the metrics) that `Recovered` ends once what `proof`
    /// names is seen: the pool's boot spec check
    /// ([`crate::cloud::Cloud::recheck_boot_spec`]) passing again, made
    /// after each pause, and, for [`MarkProof::RecheckAndBoot`], a Ready boot
    /// (one at its target boots one server for it:
    /// [`crate::sizing::decide`]). Meanwhile its boots are paced as failed
    /// boots are.
    pub async fn mark_unusable(
        &self,
        key: &PoolKey,
        problem: &str,
        proof: MarkProof,
    ) -> ManagerResult<()> {
        // The mark joins the failed boots a previous process stored.
        self.shared.restore_health().await?;
        let at = self
            .shared
            .sizing_book()
            .wall_now(&self.shared.settings.sizing);
        self.shared
            .update_pool(key, |p| {
                p.last_error = Some(problem.to_owned());
                p.last_error_at = Some(at);
            })
            .await?;
        let verdict =
            self.shared
                .health_book()
                .note_check_failed(key, problem, proof, Instant::now());
        if let Some(kind) = verdict {
            self.shared.emit(Some(key), kind);
        }
        Ok(())
    }

    pub async fn get_pool(&self, key: &PoolKey) -> ManagerResult<PoolStatus> {
        let record = self.shared.pool(key).await?;
        self.shared.pool_status(record).await
    }

    /// Runs `work` as a task of the manager and waits for its answer, so a
    /// caller that stops waiting (a gRPC client's deadline drops the
    /// handler) does not leave it half done: a pool written but never
    /// served, a settings change or deletion stored but never announced
    /// nor logged, a purchase for the reconciler to undo. A graceful stop
    /// waits for it ([`PoolManager::finish_calls`]), and once that has
    /// begun it is refused ([`ManagerError::ShuttingDown`]).
    pub(crate) async fn detached<T: Send + 'static>(
        &self,
        call: ApiCall,
        work: impl Future<Output = ManagerResult<T>> + Send + 'static,
    ) -> ManagerResult<T> {
        let Some(running) = RunningCall::start(&self.shared) else {
            return Err(ManagerError::ShuttingDown { call });
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.shared.spawn(async move {
            // Counted until the task ends, aborted too (or, never started,
            // dropped with it).
            let _running = running;
            let _ = answer.send(work.await);
        });
        match answered.await {
            Ok(answer) => answer,
            // Aborted, or never started: the manager stops.
            Err(_) if *self.shared.shutdown.borrow() => Err(ManagerError::ShuttingDown { call }),
            // The task panicked (Rust's panic hook wrote where, on
            // stderr). Told "shutting down", a client would wait for a
            // restart that is not coming.
            Err(_) => {
                tracing::error!("a call's task panicked; answering it as an internal error");
                Err(ManagerError::Internal(
                    "the call failed unexpectedly (its task panicked: a bug in warmpool; \
                     warmpoold's log, its stderr, has the panic, to report); what it left half \
                     done is for the reconciler to finish or undo, so call again with the same \
                     request to learn where it stands"
                        .into(),
                ))
            }
        }
    }

    /// Creates the pool and starts serving it; runs to its end even if the
    /// caller stops waiting.
    pub async fn create_pool(&self, key: PoolKey, spec: PoolSpec) -> ManagerResult<PoolStatus> {
        let manager = self.clone();
        self.detached(ApiCall::CreatePool, async move {
            manager.create_pool_now(key, spec).await
        })
        .await
    }

    async fn create_pool_now(&self, key: PoolKey, spec: PoolSpec) -> ManagerResult<PoolStatus> {
        validate_pool_key(&key)?;
        spec.validate()
            .map_err(|(field, message)| ManagerError::invalid(field, message))?;
        // A pool that exists is the answer before the cloud is asked about
        // the spec (checked again under the lock: a create may race).
        self.refuse_existing(&key).await?;
        self.check_boot_spec(&key, &spec.image).await?;
        {
            let _guard = self.shared.pool_lock.lock().await;
            self.refuse_existing(&key).await?;
            // Before the record is there, so that no listing reads the new
            // pool with the old one's health (its drain forgot it; a crash
            // may have kept it) or generation.
            self.shared.forget_health(&key).await?;
            *self.shared.generations().entry(key.clone()).or_default() += 1;
            let record = PoolRecord::new(key.clone(), spec);
            self.shared.store.put_pool(&record).await?;
            if let Err(e) = self.shared.store.flush().await {
                // Not on disk: take it back, so that the answer (an error)
                // and the pools listed agree, and a retry creates it.
                if let Err(undo) = self.shared.store.delete_pool(&key).await {
                    // Listed, and answering ALREADY_EXISTS: it is served
                    // like any pool, or it would never fill.
                    tracing::warn!(pool = %key, error = %undo, "cannot take back a pool whose record was not flushed; serving it");
                    self.shared.start_replenisher(key.clone());
                    return Err(ManagerError::unconfirmed(format_args!("pool {key}"), e));
                }
                return Err(ManagerError::not_recorded(format_args!("pool {key}"), e));
            }
            // Purchases of a pool of the same name deleted earlier that
            // finished after its drain left their demand behind; its drain
            // deleted a sizing record this version could not read, so the
            // new pool's is saved.
            self.shared.sizing_book().forget(&key);
            self.shared
                .sizing_unreadable
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            // Logged as an update's change and a deletion are: the audit
            // trail of what was asked of the pools, their start included.
            tracing::info!(pool = %key, spec = ?record.spec, "pool created");
        }
        self.shared.changed();
        self.shared.start_replenisher(key.clone());
        self.get_pool(&key).await
    }

    /// ALREADY_EXISTS for a pool the store has, FAILED_PRECONDITION for one
    /// still being deleted.
    async fn refuse_existing(&self, key: &PoolKey) -> ManagerResult<()> {
        match self.shared.store.get_pool(key).await? {
            Some(existing) if existing.draining => Err(ManagerError::FailedPrecondition(format!(
                "pool {key} is being deleted; create it again once it is gone"
            ))),
            Some(_) => Err(ManagerError::PoolExists(key.clone())),
            None => Ok(()),
        }
    }

    /// Whether the cloud can boot `key`'s servers from `image` and make its
    /// purchases' volumes (a flavor, image or zone it does not know is the
    /// caller's to fix).
    async fn check_boot_spec(&self, key: &PoolKey, image: &str) -> ManagerResult<()> {
        match self.shared.cloud.check_boot_spec(key, image).await {
            Ok(()) => Ok(()),
            Err(CloudError::NotFound(unknown)) => Err(ManagerError::FailedPrecondition(format!(
                "pool {key} cannot serve: {unknown}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the spec after `change`; refuses an inconsistent result, or
    /// an image the cloud does not know. Runs to its end even if the caller
    /// stops waiting: a change stored is announced (`SettingsChanged`), the
    /// replenishers woken, and logged.
    pub async fn update_pool(
        &self,
        key: &PoolKey,
        change: impl Fn(&mut PoolSpec) + Send + Sync + 'static,
    ) -> ManagerResult<PoolStatus> {
        let manager = self.clone();
        let key = key.clone();
        self.detached(ApiCall::UpdatePool, async move {
            manager.update_pool_now(&key, change).await
        })
        .await
    }

    async fn update_pool_now(
        &self,
        key: &PoolKey,
        change: impl Fn(&mut PoolSpec),
    ) -> ManagerResult<PoolStatus> {
        // A new image is checked before the pool lock is taken: it may take a
        // cloud call, and the replenishers wait on that lock.
        let current = self.shared.pool(key).await?.spec;
        let mut changed = current.clone();
        change(&mut changed);
        check_change(key, &current, &changed)?;
        if changed.image != current.image {
            self.check_boot_spec(key, &changed.image).await?;
        }
        let (record, flushed) = {
            let _guard = self.shared.pool_lock.lock().await;
            let mut record = self.shared.pool(key).await?;
            if record.draining {
                return Err(ManagerError::FailedPrecondition(format!(
                    "pool {key} is being deleted, so it takes no changes: create it again with the settings wanted once it is gone"
                )));
            }
            let stored = record.spec.clone();
            change(&mut record.spec);
            check_change(key, &stored, &record.spec)?;
            if record.spec == stored {
                // Nothing to write or announce; flushed all the same, so a
                // call repeated after a flush failed is answered only once
                // the spec is on disk.
                drop(_guard);
                unconfirmed_change(self.shared.store.flush().await, key, "change")?;
                return self.shared.pool_status(record).await;
            }
            self.shared.store.put_pool(&record).await?;
            // The answer shows no plan rather than the old settings' one
            // ("at target" for a target just raised) until the next step.
            self.shared.sizing_book().drop_plan(key);
            // A new boot spec is the operator's fix for failing boots: its
            // boots do not wait out the old one's pause.
            let cloud = &self.shared.cloud;
            if cloud.boot_image(&record.spec.image) != cloud.boot_image(&stored.image)
                || record.spec.boot_timeout != stored.boot_timeout
            {
                let lifted = self
                    .shared
                    .health_book()
                    .boot_spec_changed(key, Instant::now());
                if lifted {
                    tracing::info!(pool = %key, "what the pool boots changed: its boots no longer wait out the pause its failed boots earned");
                    self.shared.save_health(key).await;
                }
            }
            (record, self.shared.store.flush().await)
        };
        // A flush that failed leaves the change in effect all the same (the
        // answer says call again): announced and logged as any change.
        self.shared.changed();
        tracing::info!(pool = %key, spec = ?record.spec, "pool settings changed");
        self.shared.emit(
            Some(key),
            EventKind::SettingsChanged {
                change: SettingsChange::Updated,
            },
        );
        unconfirmed_change(flushed, key, "change")?;
        self.shared.pool_status(record).await
    }

    /// Starts draining: no more boots; unclaimed instances are deleted; the
    /// pool record goes once they are gone. Allocations are not touched.
    /// Runs to its end even if the caller stops waiting (its log line
    /// included).
    pub async fn delete_pool(&self, key: &PoolKey) -> ManagerResult<PoolStatus> {
        let manager = self.clone();
        let key = key.clone();
        self.detached(ApiCall::DeletePool, async move {
            manager.delete_pool_now(&key).await
        })
        .await
    }

    async fn delete_pool_now(&self, key: &PoolKey) -> ManagerResult<PoolStatus> {
        let mut already_draining = false;
        let record = self
            .shared
            .update_pool(key, |p| {
                already_draining = p.draining;
                p.draining = true;
            })
            .await?;
        let flushed = self.shared.store.flush().await;
        // In effect even if the flush failed (the answer says call again);
        // a deletion asked for again is announced once.
        if !already_draining {
            tracing::info!(pool = %key, "pool draining");
            self.shared.emit(
                Some(key),
                EventKind::SettingsChanged {
                    change: SettingsChange::Deleting,
                },
            );
        }
        unconfirmed_change(flushed, key, "deletion")?;
        self.shared.pool_status(record).await
    }

    /// How many instances each pool has in each state, for every pool some
    /// instance names, whether or not its record still exists (as
    /// [`PoolManager::list_instances`]: a deleted pool's tenants' instances
    /// outlive it). Pools with no instance, and states with none, are left
    /// out. Answered from the store's counts, not by reading the instances.
    pub async fn instance_counts(
        &self,
    ) -> ManagerResult<BTreeMap<PoolKey, BTreeMap<InstanceState, u32>>> {
        Ok(self.shared.store.count_instances_by_pool().await?)
    }

    /// The volumes warmpool was to delete that are not gone yet because
    /// Cinder refuses their delete until a cloud admin resets them: new
    /// volumes rolled-back purchases left `error_attaching` (each refuses
    /// its order), and volumes of rolled-back or released orders whose
    /// delete Cinder's backend failed (`error_deleting`). Each holds Cinder
    /// quota: warmpool's own project's, for every volume warmpool created.
    pub async fn stuck_volumes(&self) -> ManagerResult<Vec<String>> {
        let watches = self.shared.store.list_twin_watches().await?;
        Ok(watches
            .iter()
            .flat_map(TwinWatch::stuck_volumes)
            .map(str::to_owned)
            .collect())
    }

    /// How many cloud calls are waiting out a Retry-After (the pause of a
    /// 429/413, or of a 503 naming one) now, by the service they went to (`None`: one the manager
    /// could not attribute), every service listed. Counted from the start of
    /// each pause, which [`EventKind::Throttled`] reports only at its end,
    /// up to [`MAX_RETRY_AFTER`] later.
    pub fn paused_cloud_calls(&self) -> BTreeMap<Option<CloudService>, u64> {
        let paused = self.shared.paused_calls();
        CloudService::ALL
            .into_iter()
            .chain([CloudService::Identity])
            .map(Some)
            .chain([None])
            .map(|service| (service, paused.get(&service).copied().unwrap_or(0)))
            .collect()
    }

    /// The bytes the store takes on disk ([`Store::size_on_disk`]); `None`
    /// for a store kept in memory.
    pub async fn store_size_on_disk(&self) -> ManagerResult<Option<u64>> {
        Ok(self.shared.store.size_on_disk().await?)
    }

    /// How many pool servers the last reconcile pass left alone, by why,
    /// every reason listed: each needs an operator, and the pass only logs
    /// it (see [`LeftAlone`]). A server the pass could not read again is
    /// counted as the pass before found it.
    pub fn servers_left_alone(&self) -> BTreeMap<LeftAlone, usize> {
        let left_alone = self.shared.left_alone.lock().expect("left-alone lock");
        LeftAlone::ALL
            .into_iter()
            .map(|why| (why, left_alone.values().filter(|&&w| w == why).count()))
            .collect()
    }

    /// Instances of one pool, or of all pools when `pool` is `None`, ordered
    /// by pool, age and id (the order `ListInstances` pages through).
    ///
    /// A pool's instances are listed whether or not its record still
    /// exists: a deleted pool's record goes once it is drained, while its
    /// tenants' instances stay until released. So a pool never known, or
    /// gone with nothing left, lists nothing here (a NotFound would fail a
    /// listing's later pages once its last instance went); `ListInstances`
    /// answers NOT_FOUND for a first page of a pool neither known nor named.
    pub async fn list_instances(&self, pool: Option<&PoolKey>) -> ManagerResult<Vec<Instance>> {
        let mut instances = self.shared.store.list_instances().await?;
        instances.retain(|i| pool.is_none_or(|key| &i.pool == key));
        instances
            .sort_by(|a, b| (&a.pool, a.created_at, &a.id).cmp(&(&b.pool, b.created_at, &b.id)));
        Ok(instances)
    }
}

/// A generator from `seed`, or from the OS when there is none.
fn seeded(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_entropy(),
    }
}

/// Refuses a changed spec that breaks a rule, unless the stored spec broke
/// it the same way already (a pool stored before the rule existed, e.g. a
/// `max_age` under its floor): then a change of something else (pausing the
/// pool, a new image) goes through, and the old value is logged. Every rule
/// is judged: one kept from the stored settings hides no other.
fn check_change(key: &PoolKey, stored: &PoolSpec, changed: &PoolSpec) -> ManagerResult<()> {
    let kept = stored.problems();
    let (old, new): (Vec<_>, Vec<_>) = changed
        .problems()
        .into_iter()
        .partition(|problem| kept.contains(problem));
    if let Some((field, message)) = new.into_iter().next() {
        return Err(ManagerError::invalid(field, message));
    }
    for (field, message) in old {
        tracing::warn!(pool = %key, field, "{message}: kept from the stored settings; change {field} to mend it");
    }
    Ok(())
}

/// A pool change written but not confirmed on disk is in effect all the
/// same (the replenisher reads the store): the answer is to call again,
/// which writes and flushes it again, not a failure.
fn unconfirmed_change(
    flushed: crate::store::StoreResult<()>,
    key: &PoolKey,
    what: &str,
) -> ManagerResult<()> {
    flushed.map_err(|e| ManagerError::unconfirmed(format!("the {what} of pool {key}"), e))
}

pub(crate) fn validate_pool_key(key: &PoolKey) -> ManagerResult<()> {
    validate_name("flavor", &key.flavor)?;
    validate_name("availability_zone", &key.availability_zone)
}

pub(crate) fn validate_name(field: &'static str, value: &str) -> ManagerResult<()> {
    match crate::model::name_problem(value) {
        Some(problem) => Err(ManagerError::invalid(field, problem)),
        None => Ok(()),
    }
}

/// An id the OpenStack driver puts into a URL path: a name
/// ([`validate_name`]) that is also one path segment
/// ([`crate::model::path_segment_problem`]).
pub(crate) fn validate_path_id(field: &'static str, value: &str) -> ManagerResult<()> {
    validate_name(field, value)?;
    match crate::model::path_segment_problem(value) {
        Some(problem) => Err(ManagerError::invalid(field, problem)),
        None => Ok(()),
    }
}

/// An optional name that was given: blank is refused as blank, since
/// "is required" would send the caller to fill in a field it may leave
/// empty; anything else as [`validate_name`] judges it.
pub(crate) fn validate_optional_name(field: &'static str, value: &str) -> ManagerResult<()> {
    if value.trim().is_empty() {
        return Err(ManagerError::invalid(
            field,
            "must not be blank; leave it empty for none",
        ));
    }
    validate_name(field, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::MysqlGreetingProbe;
    use crate::store::SledStore;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A cloud no test here calls: `retry` is handed its calls.
    struct NoCloud;

    #[async_trait::async_trait]
    impl Cloud for NoCloud {
        async fn create_server(&self, _: &ServerSpec) -> CloudResult<Server> {
            unreachable!()
        }
        async fn read_server(&self, _: &str) -> CloudResult<Server> {
            unreachable!()
        }
        async fn ports_bound_to(&self, _: &str) -> CloudResult<Vec<String>> {
            unreachable!()
        }
        async fn list_pool_servers(&self) -> CloudResult<Vec<Server>> {
            unreachable!()
        }
        async fn delete_server(&self, _: &str) -> CloudResult<()> {
            unreachable!()
        }
        async fn create_volume(&self, _: &NewVolumeSpec) -> CloudResult<Volume> {
            unreachable!()
        }
        async fn get_volume(&self, _: &str) -> CloudResult<Volume> {
            unreachable!()
        }
        async fn find_volumes_by_name(&self, _: &str) -> CloudResult<Vec<Volume>> {
            unreachable!()
        }
        async fn set_volume_metadata(
            &self,
            _: &str,
            _: &BTreeMap<String, String>,
        ) -> CloudResult<()> {
            unreachable!()
        }
        async fn delete_volume(&self, _: &str) -> CloudResult<()> {
            unreachable!()
        }
        async fn attach_volume(&self, _: &str, _: &str) -> CloudResult<()> {
            unreachable!()
        }
        async fn detach_volume(&self, _: &str, _: &str) -> CloudResult<()> {
            unreachable!()
        }
        async fn get_network(&self, _: &str) -> CloudResult<Network> {
            unreachable!()
        }
        async fn network_shares(&self, _: &str) -> CloudResult<Vec<NetworkShare>> {
            unreachable!()
        }
        async fn create_port(&self, _: &NewPortSpec) -> CloudResult<Port> {
            unreachable!()
        }
        async fn get_port(&self, _: &str) -> CloudResult<Port> {
            unreachable!()
        }
        async fn find_ports_by_name(&self, _: &str) -> CloudResult<Vec<Port>> {
            unreachable!()
        }
        async fn delete_port(&self, _: &str) -> CloudResult<()> {
            unreachable!()
        }
        async fn attach_port(&self, _: &str, _: &str) -> CloudResult<()> {
            unreachable!()
        }
        async fn detach_port(&self, _: &str, _: &str) -> CloudResult<()> {
            unreachable!()
        }
        async fn boot_headroom(&self, _: &str) -> CloudResult<BootHeadroom> {
            unreachable!()
        }
        async fn check_boot_placement(&self, _: &PoolKey) -> CloudResult<()> {
            unreachable!()
        }
        async fn flavor_disk_iops(&self, _: &str) -> CloudResult<FlavorIops> {
            unreachable!()
        }
        async fn check_boot_image(&self, _: &str, _: ImageMiss) -> CloudResult<()> {
            unreachable!()
        }
        async fn check_volume_zone(&self, _: &PoolKey) -> CloudResult<()> {
            unreachable!()
        }
        fn volume_zone_for(&self, _: &str) -> String {
            unreachable!()
        }
        fn boot_image(&self, _: &str) -> String {
            unreachable!()
        }
        async fn cloud_identity(&self) -> CloudResult<CloudIdentity> {
            unreachable!()
        }
        async fn services_in_named_region_alone(&self) -> CloudResult<bool> {
            unreachable!()
        }
    }

    fn manager() -> PoolManager {
        PoolManager::new(
            Arc::new(SledStore::temporary().unwrap()),
            Arc::new(NoCloud),
            Arc::new(MysqlGreetingProbe {
                timeout: Duration::from_secs(1),
            }),
            ManagerSettings::default(),
        )
    }

    /// How many times `retry` calls a cloud that answers every call
    /// Throttled with `retry_after`, within `within`.
    async fn attempts(retry_after: Option<Duration>, within: Duration) -> u32 {
        let manager = manager();
        let calls = AtomicU32::new(0);
        let result: CloudResult<()> = manager
            .shared
            .retry(Instant::now() + within, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    Err(CloudError::Throttled {
                        retry_after,
                        message: "This request was rate-limited.".into(),
                        unavailable: false,
                    })
                }
            })
            .await;
        assert!(
            matches!(result, Err(CloudError::Throttled { .. })),
            "{result:?}"
        );
        calls.load(Ordering::SeqCst)
    }

    /// A "Retry-After: 0" names no wait: the call is asked again on the
    /// growing backoff, as one without Retry-After is, not every
    /// `MIN_RETRY_PAUSE` (and logged and reported each time) until its
    /// deadline.
    #[tokio::test(start_paused = true)]
    async fn a_zero_retry_after_backs_off_as_none_does() {
        let within = Duration::from_secs(5);
        // The attempts the backoff schedule fits in: one at once, one
        // after each pause that ends before the deadline.
        let settings = ManagerSettings::default();
        let (mut scheduled, mut waited, mut pause) = (1, Duration::ZERO, settings.retry_backoff);
        while waited + pause < within {
            waited += pause;
            scheduled += 1;
            pause = (pause * 2).min(settings.retry_backoff * 32);
        }
        let without = attempts(None, within).await;
        assert!(without <= scheduled, "{without} > {scheduled}");
        let zero = attempts(Some(Duration::ZERO), within).await;
        assert!(
            zero <= scheduled,
            "Retry-After 0: {zero} attempts in {within:?}; the backoff fits {scheduled}"
        );
    }
}
