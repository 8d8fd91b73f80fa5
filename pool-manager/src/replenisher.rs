//! Keeps each pool at its target: one replenisher task per pool counts the
//! supply (booting + warming + ready), asks the pure decider in
//! [`crate::sizing`] how many boots to start (given the target, the demand
//! and lead-time estimates, and what the AZ's throttle gate in
//! [`crate::gate`] allows), starts them, retires the Ready instances the
//! pool no longer wants (past `max_age`, of an old image, above
//! `max_ready`, a surplus above the target that lasted a cooldown), and drains the pool when it is deleted; a step the cloud
//! or the store fails is tried again after the interval, so the task
//! outlives it. Purchases reach the demand estimator
//! as they are reported ([`Shared::emit`]). A boot task drives one instance from
//! `Booting` to `Ready`, or to `Deleting` and gone, and reports its lead time
//! and any 429/quota answers to the estimators and the gate. The replenisher
//! also resumes its pool's estimators from the store when it starts and
//! saves them at most every [`LEARNED_SIZING_SAVE_EVERY`], when they learned
//! something since the last save.

use crate::allocator::deadline_after;
use crate::changes::ChangeCursor;
use crate::cloud::{
    mentions_quota, BootHeadroom, CloudError, CloudResult, FlavorIops, Server, ServerSpec,
    ServerStatus, VolumeStatus, EXTRA_SPEC_READ_IOPS, EXTRA_SPEC_TOTAL_IOPS, EXTRA_SPEC_WRITE_IOPS,
    META_INSTANCE, META_POOL,
};
use crate::error::{ManagerError, ManagerResult};
use crate::events::{AllocationOutcome, BootOutcome, CloudService, EventKind};
use crate::gate::{self, BootSignal, BootTicket, Hold, ThrottledCall};
use crate::manager::{noting_service, BootedReady, Shared};
use crate::model::{Instance, InstanceState, PoolKey, PoolRecord, PoolSpec};
use crate::sizing::{self, Backoff, BootPlan, Inputs, PlanReason, SizingBook, SizingStatus};
use crate::text;
use rand::Rng;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The longest a replenisher waits after a change before it looks again.
const STEP_DEBOUNCE: Duration = Duration::from_secs(1);

/// The longest pause between boots of a pool whose boots keep failing
/// ([`crate::events::PoolHealth::boot_backoff`]): how late a fixed cloud
/// is noticed.
pub const BOOT_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How often at most a pool's estimators are written to the store, when
/// they learned something since the last write (and at shutdown): a crash
/// forgets at most this much of what they learned. A pool that learned
/// nothing new (no purchase, no boot) writes nothing: its stored record,
/// aged over the time since, is what it knows.
pub const LEARNED_SIZING_SAVE_EVERY: Duration = Duration::from_secs(60);

/// How long a warming VM's mysqld may refuse its probes before the boot
/// looks at the server (again): one in ERROR (its host died) or deleted
/// fails the boot then, rather than count as supply until the boot
/// timeout (15 min by default). Past a normal warm-up (mysqld answers
/// about a minute after ACTIVE), so a boot whose mysqld answers within it
/// makes no extra call; a slow one (a throttled disk) makes one per period.
pub const WARMING_SERVER_LOOK_AFTER: Duration = Duration::from_secs(120);

/// How long a flavor's disk IOPS limit read from the cloud
/// ([`crate::cloud::Cloud::flavor_disk_iops`]) is used before it is read
/// again: an operator may change the flavor's extra specs (the OpenStack
/// driver trusts a flavor lookup as long).
pub const FLAVOR_IOPS_TTL: Duration = Duration::from_secs(600);

/// How long after a failed read of a flavor's disk IOPS limit it is read
/// again, doubled at each failure in a row up to [`FLAVOR_IOPS_TTL`] (the
/// last one read, if any, is used meanwhile): on OpenStack a failed read
/// may be a whole flavor listing.
const FLAVOR_IOPS_RETRY: Duration = Duration::from_secs(30);

/// How long a step waits for its flavor's first disk IOPS read, so that a
/// new pool's first targets are sized for the limit; a read still under
/// way then goes on in the background, and the step boots on the prior
/// known so far. A hanging Nova would otherwise hold the step up to its
/// request timeout (30 s by default), and the pool's boots with it.
const FLAVOR_IOPS_FIRST_WAIT: Duration = Duration::from_secs(2);

/// A flavor's disk IOPS limit as last read from the cloud.
#[derive(Clone, Debug)]
pub(crate) struct FlavorIopsRead {
    /// `None` until a read succeeds.
    pub iops: Option<FlavorIops>,
    /// When it is read again.
    pub next_read: Instant,
    /// Failed reads in a row, for the retry's backoff.
    pub failures: u32,
    /// Why the last read failed (the flavor not found too), until one
    /// succeeds: GetPool says it while no limit is known.
    pub last_error: Option<String>,
    /// A read is under way: the flavor's pools send no other.
    pub reading: bool,
}

/// Marks a flavor's disk IOPS read as under way while it lives: dropped
/// (the read done, or dropped unfinished at shutdown), the flavor may be
/// read again.
struct FlavorIopsReading {
    shared: Arc<Shared>,
    flavor: String,
}

impl Drop for FlavorIopsReading {
    fn drop(&mut self) {
        let mut known = self
            .shared
            .flavor_iops
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(read) = known.get_mut(&self.flavor) {
            read.reading = false;
        }
    }
}

/// Between why an instance is being deleted and why its server is not
/// gone, in its `last_error`.
const DELETE_REFUSED: &str = "; not deleted yet: ";

/// At which transient failure in a row (a 5xx, a timeout) of one boot's
/// server create the cloud's error is shown, as the instance's and the
/// pool's last error, and logged at WARN, once per boot. The create is
/// retried until boot_timeout (15 min by default) all the same, and a
/// Nova failing every create showed only a booting instance and a healthy
/// pool for that long. The third, as a pool is degraded at its third
/// failed boot: one or two are a blip (an API worker restarting), three
/// in a row (about 1.5 s apart from the first at the default
/// `retry_backoff`, more on a slow answer) a cloud failing for now.
const CREATE_FAILURES_SHOWN: u32 = 3;

/// Why a boot did not produce a Ready instance.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cloud refused the boot: {0}")]
    Cloud(#[from] CloudError),
    /// The server broke or went away: the text says which (`server went
    /// to ERROR: <fault>`, `server was deleted`, ...).
    #[error("{0}")]
    ServerError(String),
    #[error("not ready within the boot timeout: {0}")]
    Timeout(String),
    /// Someone else (a drain, the reconciler) took the instance over.
    #[error("instance was taken over while booting")]
    Superseded,
    #[error(transparent)]
    Manager(#[from] Box<ManagerError>),
}

impl From<ManagerError> for BootError {
    fn from(e: ManagerError) -> Self {
        Self::Manager(Box::new(e))
    }
}

/// The outcome to report for a finished boot; `None` when it was taken over.
fn boot_outcome(result: &Result<Instance, BootError>) -> Option<BootOutcome> {
    Some(match result {
        Ok(_) => BootOutcome::Ready,
        Err(BootError::Superseded) => return None,
        Err(BootError::Cloud(CloudError::QuotaExceeded(_))) => BootOutcome::Quota,
        Err(BootError::Cloud(CloudError::Throttled { .. })) => BootOutcome::RateLimited,
        Err(BootError::ServerError(fault)) if fault.contains("NoValidHost") => {
            BootOutcome::NoValidHost
        }
        Err(BootError::Timeout(_)) => BootOutcome::Timeout,
        Err(_) => BootOutcome::Failed,
    })
}

impl Shared {
    pub(crate) fn start_replenisher(self: &Arc<Self>, pool: PoolKey) {
        let shared = self.clone();
        self.spawn(async move {
            shared.replenish_loop(&pool).await;
        });
    }

    /// Runs until the pool is gone (deleted, or drained) or the manager
    /// stops. Nothing else ends it: a step the cloud or the store fails,
    /// and a failed read of the pool itself, are tried again after the
    /// interval.
    async fn replenish_loop(self: &Arc<Self>, key: &PoolKey) {
        let mut changes = self.changes.subscribe();
        let mut next_save = Instant::now() + LEARNED_SIZING_SAVE_EVERY;
        loop {
            let pool = match self.store.get_pool(key).await {
                Ok(Some(pool)) => Some(pool),
                Ok(None) => {
                    self.sizing_book().forget(key);
                    return;
                }
                Err(e) => {
                    tracing::warn!(pool = %key, error = %e, "cannot read the pool; trying again");
                    None
                }
            };
            // Not saved, it is looked at again at every step: what a quiet
            // pool learns next is saved at once.
            if Instant::now() >= next_save && self.save_new_learned_sizing(key).await {
                next_save = Instant::now() + LEARNED_SIZING_SAVE_EVERY;
            }
            let mut wake = deadline_after(Instant::now(), self.settings.replenish_interval);
            // A step the cloud or the store fails (a retirement's delete
            // refused, a flush failing) is tried again after the interval:
            // the pool keeps its replenisher.
            if let Some(pool) = pool {
                // Read before the step reads the time: a window that opens
                // while the step runs wakes the next one at once.
                if let Some(edge) = self.next_window_change(&pool.spec) {
                    wake = wake.min(edge);
                }
                if self.step(&pool, &mut wake).await {
                    return;
                }
            }
            self.wait_for_next_step(wake, &mut changes).await;
        }
    }

    /// One drain or replenish step of `pool`; a step that fails is logged
    /// (the next one tries again). Whether the pool is gone (drained and
    /// deleted); `wake` moves up to the end of a gate hold.
    async fn step(self: &Arc<Self>, pool: &PoolRecord, wake: &mut Instant) -> bool {
        let key = &pool.key;
        if pool.draining {
            match self.drain_step(pool).await {
                Ok(true) => {
                    tracing::info!(pool = %key, "pool drained and deleted");
                    self.sizing_book().forget(key);
                    return true;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(pool = %key, error = %e, "drain step failed; trying again")
                }
            }
        } else if pool.spec.paused {
            // Boots nothing, but keeps to max_ready: reads no flavor limit
            // for a prior it has no use for.
            if let Err(e) = self.paused_step(pool).await {
                tracing::warn!(pool = %key, error = %e, "paused pool's step failed; trying again")
            }
        } else {
            // A pool's own iops_limit overrides the flavor's: not read.
            if pool.spec.iops_limit.is_none() {
                self.refresh_flavor_iops(&key.flavor).await;
            }
            match self.replenish_step(pool).await {
                // Come back as soon as the gate opens again.
                Ok(Some(hold)) => *wake = (*wake).min(hold.until()),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(pool = %key, error = %e, "replenish step failed; trying again")
                }
            }
        }
        false
    }

    /// A paused pool's step: retires Ready instances above max_ready.
    async fn paused_step(&self, pool: &PoolRecord) -> ManagerResult<()> {
        let image = self.cloud.boot_image(&pool.spec.image);
        let (instances, renewal, census) = self.census_of(pool, &image).await?;
        // Renewal waits for the pool to be resumed: its boots' replacements
        // are not kept for then (a step counts again what it finds).
        self.take_booted_ready(&pool.key, &image);
        // A replenish step under way when the pool was paused may have
        // stored its plan after the pause dropped the last one: a paused
        // pool boots nothing, so it has no plan to show.
        self.sizing_book().drop_plan(&pool.key);
        // Now, not once resumed: an image changed while the pool is paused
        // would be stamped on records of servers still on this one, and
        // they would never be replaced.
        self.stamp_unknown_images(&instances, &image).await?;
        // A resumed pool waits a whole cooldown before it retires a surplus.
        let settings = &self.settings.sizing;
        let now = Instant::now();
        self.sizing_book()
            .surplus_outlasted(&pool.key, false, now, settings);
        let due = Retirements::over_cap(&census, pool.spec.max_ready, false, 0);
        self.retire(pool, &instances, &renewal, due).await
    }

    /// When an operator window of `spec` next opens or closes, on the
    /// manager's wall clock: the interval may be an hour, and a window's
    /// floor should not wait for it.
    fn next_window_change(&self, spec: &PoolSpec) -> Option<Instant> {
        if spec.windows.is_empty() {
            return None;
        }
        let wall = self.sizing_book().wall_now(&self.settings.sizing);
        let edge = crate::schedule::next_change(&spec.windows, wall)?;
        let until = edge.duration_since(wall).unwrap_or_default();
        Some(deadline_after(Instant::now(), until))
    }

    /// Waits for a change, the timer or the end of a hold.
    async fn wait_for_next_step(&self, mut wake: Instant, changes: &mut ChangeCursor) {
        loop {
            tokio::select! {
                // Not a random pick when both are ready: replays repeat.
                biased;
                _ = tokio::time::sleep_until(wake) => return,
                _ = changes.changed() => {
                    // One allocation or boot changes several records in a
                    // row: coalesce them into one step.
                    tokio::time::sleep(self.settings.poll_interval.min(STEP_DEBOUNCE)).await;
                    changes.mark_seen();
                    wake = Instant::now();
                }
            }
        }
    }

    /// Puts back what a previous manager learned about the pool. A store
    /// that cannot say costs the pool its history, not its replenisher.
    /// On a store adopted from another cloud (`of_another_cloud`: another
    /// project, region or kind, not a renamed server tag nor a region named
    /// for a store that recorded none) the lead times
    /// were that cloud's, and are not put back: this one's boots may take
    /// many times as long (a demo store's seconds adopted onto OpenStack),
    /// and three or more old ones would outweigh this cloud's prior for up
    /// to `lead_max_age`. Its demand is put back: purchases are the
    /// tenants', who buy through this warmpool whichever cloud it boots
    /// on, and so are the orders counted (one asked again still counts
    /// once).
    pub(crate) async fn restore_learned_sizing(&self, key: &PoolKey, of_another_cloud: bool) {
        match self.store.get_learned_sizing(key).await {
            Ok(Some(mut learned)) => {
                let dropped = if of_another_cloud {
                    std::mem::take(&mut learned.leads).len()
                } else {
                    0
                };
                self.sizing_book()
                    .restore(key, &learned, Instant::now(), &self.settings.sizing);
                if dropped > 0 {
                    // The stored record still holds them, and the store
                    // names this cloud already: a crash before the next
                    // save would resume them. Saved at once (and marked
                    // unsaved, so a failed write is tried again).
                    self.sizing_book().unsaved(key);
                    tracing::info!(pool = %key, boots = dropped, "not resuming the pool's boot lead times: they were the other cloud's (the store is adopted); the pool's lead time is its prior until this cloud's boots are measured");
                    self.save_learned_sizing(key).await;
                }
                tracing::info!(pool = %key, boots = learned.leads.len(), "resumed sizing from the store");
            }
            Ok(None) => {}
            Err(e @ crate::store::StoreError::Unreadable { .. }) => {
                tracing::warn!(pool = %key, error = %e, "the pool's learned sizing is one this version cannot read (`warmpoold store check` notes it)");
                self.sizing_unreadable
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone());
            }
            Err(e) => {
                tracing::warn!(pool = %key, error = %e, "cannot read the pool's learned sizing; sizing it from scratch")
            }
        }
    }

    /// Writes what the pool's estimators learned (made durable by the next
    /// flush). Failing costs a restart some history, so it is only logged.
    pub(crate) async fn save_learned_sizing(&self, key: &PoolKey) {
        if self.sizing_is_unreadable(key) {
            return;
        }
        let learned = self
            .sizing_book()
            .learned(key, Instant::now(), &self.settings.sizing);
        if let Some(learned) = learned {
            if let Err(e) = self.store.put_learned_sizing(key, &learned).await {
                tracing::warn!(pool = %key, error = %e, "cannot save the pool's learned sizing");
            }
        }
    }

    /// As [`Shared::save_learned_sizing`], if the pool's estimators learned
    /// something since the last save; whether they did (a failed write is
    /// tried again at the next call).
    async fn save_new_learned_sizing(&self, key: &PoolKey) -> bool {
        if self.sizing_is_unreadable(key) {
            return false;
        }
        let learned =
            self.sizing_book()
                .learned_since_saved(key, Instant::now(), &self.settings.sizing);
        let Some(learned) = learned else {
            return false;
        };
        if let Err(e) = self.store.put_learned_sizing(key, &learned).await {
            tracing::warn!(pool = %key, error = %e, "cannot save the pool's learned sizing");
            self.sizing_book().unsaved(key);
        }
        true
    }

    /// Whether the pool's stored learned sizing is one this version cannot
    /// read: it is kept, not written over.
    fn sizing_is_unreadable(&self, key: &PoolKey) -> bool {
        self.sizing_unreadable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    pub(crate) fn sizing_book(&self) -> MutexGuard<'_, SizingBook> {
        self.sizing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds the pool's demand estimator at a purchase's end: every order
    /// that wanted an instance counts, once however often it is retried,
    /// dated back to when its Allocate started. One that found the pool
    /// empty was counted then ([`Shared::count_order`]), and is not again.
    pub(crate) fn note_demand(
        &self,
        key: &PoolKey,
        request_id: &str,
        outcome: AllocationOutcome,
        latency: Duration,
    ) {
        if matches!(
            outcome,
            AllocationOutcome::Warm
                | AllocationOutcome::Cold
                | AllocationOutcome::Waited
                | AllocationOutcome::Exhausted
        ) {
            let now = Instant::now();
            self.count_order(key, request_id, now.checked_sub(latency).unwrap_or(now));
        }
    }

    /// Counts order `request_id`, whose Allocate started at `started`, in
    /// its pool's demand now (once within `demand_long`, however often it
    /// is counted: [`SizingBook::record_allocation`]). A purchase that
    /// finds its pool empty is counted so at once, not at its end: a cold
    /// boot's ends a lead time later, a wait's when an instance comes, and
    /// a burst into an empty pool would lift the forecast only then.
    pub(crate) fn count_order(&self, key: &PoolKey, request_id: &str, started: Instant) {
        let now = Instant::now();
        self.sizing_book()
            .record_allocation(key, request_id, started, now, &self.settings.sizing);
    }

    /// The disk IOPS limit the cloud last told for `flavor`, if it told one.
    pub(crate) fn cloud_flavor_iops(&self, flavor: &str) -> Option<u32> {
        self.flavor_iops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(flavor)
            .and_then(|read| read.iops.as_ref())
            .and_then(FlavorIops::limit)
    }

    /// Why the cloud told no disk IOPS limit for `flavor` that a pool's
    /// prior could use; `None` once one is known. `paused`: the pool
    /// asking reads none itself.
    fn cloud_flavor_iops_unknown(&self, flavor: &str, paused: bool) -> Option<String> {
        let known = self.flavor_iops.lock().unwrap_or_else(|e| e.into_inner());
        let read = known.get(flavor);
        let told = match read.and_then(|read| read.iops.as_ref()) {
            Some(FlavorIops::Limited(..)) => return None,
            Some(FlavorIops::Unlimited) => Some(format!(
                "flavor {flavor}'s extra specs set no disk IOPS limit (none of {EXTRA_SPEC_TOTAL_IOPS}, {EXTRA_SPEC_READ_IOPS}, {EXTRA_SPEC_WRITE_IOPS} above 0)"
            )),
            Some(FlavorIops::Unknown(why)) => Some(why.clone()),
            None => None,
        };
        let failed = read.and_then(|read| read.last_error.as_deref());
        Some(match (told, failed) {
            (Some(told), Some(failed)) => format!("{told} (as last read; {failed})"),
            (Some(told), None) => told,
            (None, Some(failed)) => failed.to_owned(),
            (None, None) if paused && read.is_none() => {
                "not read yet (a paused pool reads none; it is read when the pool is resumed)"
                    .to_owned()
            }
            (None, None) => "not read yet".to_owned(),
        })
    }

    /// Reads `flavor`'s disk IOPS limit from the cloud (its extra specs),
    /// for the lead-time prior of its pools that set no `iops_limit`, when
    /// it is due ([`FLAVOR_IOPS_TTL`], [`FLAVOR_IOPS_RETRY`] backed off
    /// after a failed read) and no other read of it is under way: before a
    /// step computes the prior, so a new pool's first targets are sized
    /// for it. The step waits for the flavor's first read at most
    /// [`FLAVOR_IOPS_FIRST_WAIT`], and for a later one not at all (it uses
    /// the last limit read): a read the cloud does not answer at once goes
    /// on in the background. A cloud that will not tell (a policy hiding
    /// extra specs) is said once at info; a failed read is logged at
    /// debug, keeps the last limit read and fails nothing: the limit only
    /// sets the prior, which the pool's measured boots replace.
    pub(crate) async fn refresh_flavor_iops(self: &Arc<Self>, flavor: &str) {
        let first = {
            let now = Instant::now();
            let mut known = self.flavor_iops.lock().unwrap_or_else(|e| e.into_inner());
            let first = !known.contains_key(flavor);
            let read = known.entry(flavor.to_owned()).or_insert(FlavorIopsRead {
                iops: None,
                next_read: now,
                failures: 0,
                last_error: None,
                reading: false,
            });
            // Marked under the lock the due check holds: pools of one
            // flavor stepping at once send one read.
            if read.reading || now < read.next_read {
                return;
            }
            read.reading = true;
            first
        };
        let reading = FlavorIopsReading {
            shared: self.clone(),
            flavor: flavor.to_owned(),
        };
        let mut read = Box::pin(async move {
            let result = reading.shared.cloud.flavor_disk_iops(&reading.flavor).await;
            reading.shared.note_flavor_iops(&reading.flavor, result);
        });
        // Polled here first: a cloud that answers at once (a cached
        // lookup, the embedded cloud) is done within the step, as before,
        // with no task spawned (a replay's order of tasks is unchanged).
        if std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx)))
            .await
            .is_ready()
        {
            return;
        }
        if first
            && tokio::time::timeout(FLAVOR_IOPS_FIRST_WAIT, read.as_mut())
                .await
                .is_ok()
        {
            return;
        }
        self.spawn(read);
    }

    /// Keeps the outcome of a read of `flavor`'s disk IOPS limit
    /// ([`Shared::refresh_flavor_iops`]) and when to read it again.
    fn note_flavor_iops(&self, flavor: &str, result: CloudResult<FlavorIops>) {
        let now = Instant::now();
        let mut known = self.flavor_iops.lock().unwrap_or_else(|e| e.into_inner());
        let Some(read) = known.get_mut(flavor) else {
            return;
        };
        match result {
            Ok(iops) => {
                read.next_read = now + FLAVOR_IOPS_TTL;
                read.failures = 0;
                read.last_error = None;
                if read.iops.as_ref() == Some(&iops) {
                    return;
                }
                let before = read.iops.replace(iops.clone());
                match iops {
                    FlavorIops::Limited(iops, _) => {
                        tracing::info!(%flavor, iops, "the flavor's disk IOPS limit, from its extra specs: the lead-time prior of its pools that set no iops_limit is stretched for it")
                    }
                    FlavorIops::Unlimited if before.is_some_and(|b| b.limit().is_some()) => {
                        tracing::info!(%flavor, "the flavor's extra specs no longer limit its disk IOPS: its pools' lead-time prior is no longer stretched for them")
                    }
                    FlavorIops::Unlimited => {
                        tracing::debug!(%flavor, "the flavor's extra specs set no disk IOPS limit")
                    }
                    FlavorIops::Unknown(why) => {
                        tracing::info!(%flavor, why, "the cloud does not tell the flavor's disk IOPS limit: the lead-time prior of its pools is stretched only for a pool's own iops_limit (and volume_iops_limit)")
                    }
                }
            }
            // A retired flavor (its pool's servers still running) is not
            // looked for again soon: on OpenStack each miss re-lists every
            // flavor. Its last limit, if any, is kept, as for an Unknown.
            Err(CloudError::NotFound(missing)) => {
                read.next_read = now + FLAVOR_IOPS_TTL;
                read.last_error = Some(format!("the cloud has no such flavor: {missing}"));
                tracing::debug!(%flavor, error = %missing, "the cloud has no such flavor to read its disk IOPS limit from; its pools' lead-time prior uses the last one read, if any");
            }
            Err(e) => {
                let retry = FLAVOR_IOPS_RETRY
                    .saturating_mul(1 << read.failures.min(16))
                    .min(FLAVOR_IOPS_TTL);
                read.failures = read.failures.saturating_add(1);
                read.next_read = now + retry;
                read.last_error = Some(format!("the read failed: {e}"));
                tracing::debug!(%flavor, error = %e, retry_in = ?retry, "cannot read the flavor's disk IOPS limit yet; its pools' lead-time prior uses the last one read, if any");
            }
        }
    }

    /// The pool's computed target and its inputs, now.
    pub(crate) fn sizing_status(&self, record: &PoolRecord) -> SizingStatus {
        let now = Instant::now();
        let settings = &self.settings.sizing;
        let z = settings.z();
        let spec = &record.spec;
        let cloud_flavor = self.cloud_flavor_iops(&record.key.flavor);
        let prior = sizing::prior_for(spec, settings, cloud_flavor);
        let (demand, lead, last_plan, wall) = {
            let mut book = self.sizing_book();
            let (demand, lead, plan) = book.peek(&record.key, now, prior, settings);
            (demand, lead, plan, book.wall_now(settings))
        };
        let demand_in_lead = demand.forecast * lead.p90.as_secs_f64();
        // A window open at or below min_ready raises nothing.
        let window_min =
            crate::schedule::scheduled_min(&spec.windows, wall).filter(|&min| min > spec.min_ready);
        let target = sizing::target_for(
            spec.min_ready_at(wall),
            spec.max_ready,
            spec.target,
            demand_in_lead,
            settings.service_level,
        );
        // A draining pool boots nothing: it works toward no target, and the
        // plan its last replenish step made (a "quota" one, say) is history
        // that would read as still holding it back.
        let (target, window_min, last_plan) = if record.draining {
            (0, None, None)
        } else {
            (target, window_min, last_plan)
        };
        // A pool whose start-up check is pending boots nothing until the
        // check is made again, which waits out the pauses of every service
        // it calls (`replenish_step`): a Cinder or Glance pause holds it
        // too, though it holds no refill.
        let check_pending = self.health_book().health(&record.key).check_pending();
        let (mut gate, quota) = {
            let mut gate = gate::lock(&self.gate);
            let (az, flavor) = (&record.key.availability_zone, &record.key.flavor);
            let mut status = gate.status(az, flavor, now);
            let recheck_pause = check_pending
                .then(|| gate.paused_until(Self::RECHECK_SERVICES, az, flavor, now))
                .flatten();
            if let Some((until, service)) = recheck_pause {
                if status.hold.is_none_or(|hold| hold.until() < until) {
                    status.hold = Some(Hold::Throttled { until, service });
                }
            }
            (status, gate.headroom_status(flavor))
        };
        if record.draining {
            // Nothing of it waits for the gate: a hold would read as one
            // holding its drain back.
            gate.hold = None;
        }
        SizingStatus {
            auto: spec.is_auto(),
            target,
            demand,
            demand_in_lead,
            lead,
            z,
            gate,
            quota,
            window_min,
            last_plan,
            prior,
            prior_iops_limit: sizing::prior_iops_limit(spec, cloud_flavor),
            prior_iops_unknown: spec
                .iops_limit
                .is_none()
                .then(|| self.cloud_flavor_iops_unknown(&record.key.flavor, spec.paused))
                .flatten(),
        }
    }

    /// Polls the flavor's quota headroom from the cloud when the cached one
    /// is due and the zone is not waiting out a throttle
    /// ([`gate::Gate::refill_poll_due`]). A failing poll caps nothing (the
    /// refusal-driven pause still works) and is tried again after the
    /// interval; a 429 is the gate's.
    pub(crate) async fn refresh_headroom(&self, pool: &PoolKey) {
        let flavor = &pool.flavor;
        let boots_at_send = {
            let mut gate = gate::lock(&self.gate);
            if !gate.refill_poll_due(&pool.availability_zone, flavor, Instant::now()) {
                return;
            }
            gate.boots_started()
        };
        let (result, service) = noting_service(self.poll_headroom(flavor)).await;
        let now = Instant::now();
        let mut gate = gate::lock(&self.gate);
        match result {
            Ok((h, sales_ports)) => {
                tracing::debug!(%flavor, servers = ?h.servers, limited_by = ?h.limited_by, sales_ports, "quota headroom");
                if gate.headroom_failing(flavor) {
                    tracing::info!(%flavor, "quota headroom can be read again: boots are capped by it again");
                }
                if h.beyond_quota && !gate.headroom_status(flavor).beyond_quota {
                    tracing::warn!(%flavor, limited_by = ?h.limited_by, "one server of the flavor needs more than the project's whole quota: its pools boot nothing and cold boots are refused until the quota is raised");
                }
                gate.headroom_polled(flavor, boots_at_send, h, sales_ports, now);
            }
            Err(e) => {
                if let ManagerError::Cloud(CloudError::Throttled { retry_after, .. }) = &e {
                    // Nova's limits (Neutron's port quota failing is no
                    // failed poll): the refills' own call. Or the token
                    // renewal inside it: Keystone's, which halves nothing.
                    let az = &pool.availability_zone;
                    let call = ThrottledCall::new(service, true);
                    gate.throttled(az, call, *retry_after, now);
                }
                // Once per outage: a pool below its target polls every
                // `headroom_interval`, 2,880 times a day at the default.
                if gate.headroom_failing(flavor) {
                    tracing::debug!(%flavor, error = %e, "cannot read quota headroom yet");
                } else {
                    tracing::warn!(%flavor, error = %e, "cannot read quota headroom; boots are paced by quota refusals only until it can be read again (logged at info; each failed poll meanwhile at debug)");
                }
                gate.headroom_failed(flavor, e.to_string(), now);
            }
        }
    }

    /// The services a pool's cloud check ([`Self::recheck`]) calls: it waits
    /// out their throttle pauses.
    const RECHECK_SERVICES: &'static [CloudService] = &[
        CloudService::Compute,
        CloudService::Volume,
        CloudService::Image,
        // Each call needs a token: a renewal Keystone throttled.
        CloudService::Identity,
    ];

    /// Makes the pool's start-up cloud check again, for its mark
    /// ([`crate::events::HealthBook::note_recheck`]): the check a pool
    /// created through the API gets ([`crate::cloud::Cloud::recheck_boot_spec`]:
    /// its flavor, compute zone, Cinder zone and image, an image the cloud
    /// lacks named alone, with no listing of those on offer), which looks at
    /// what a boot never touches (a purchase's volume zone) without booting
    /// anything. A check the cloud does not answer counts as failing: it is
    /// made again after the next pause; a 429 is the gate's (with the gate
    /// on, the check is made again when the throttled service's pause is
    /// over, and no longer pause is counted).
    async fn recheck(&self, pool: &PoolRecord) {
        let key = &pool.key;
        // The image the pool boots, as the start-up check of a stored pool
        // looks at (under the driver's `image` override, the override: the
        // pool's own image, perhaps long deleted, boots nothing then, and
        // its check would keep the mark until a restart).
        let image = self.cloud.boot_image(&pool.spec.image);
        let (result, service) = noting_service(self.cloud.recheck_boot_spec(key, &image)).await;
        let now = Instant::now();
        match &result {
            Ok(()) => {}
            Err(CloudError::NotFound(problem)) => {
                tracing::debug!(pool = %key, problem, "the pool's cloud check still fails: it stays degraded, checked again after its pause")
            }
            Err(e @ CloudError::Throttled { retry_after, .. }) if self.settings.gate.enabled => {
                // The gate's pause, not the pool's: the check is made again
                // once the throttled service's pause is over, and a 429
                // says nothing of what it looks at, so it earns no longer
                // pause. No boot's call: the zone's window stays.
                let call = ThrottledCall::new(service, false);
                gate::lock(&self.gate).throttled(&key.availability_zone, call, *retry_after, now);
                tracing::debug!(pool = %key, error = %e, "the pool's cloud check was throttled: it stays degraded, checked again once the service's throttle is over");
                return;
            }
            Err(e) => {
                tracing::debug!(pool = %key, error = %e, "cannot make the pool's cloud check again: it stays degraded, checked again after its pause")
            }
        }
        let verdict = self.health_book().note_recheck(key, result.is_ok(), now);
        match verdict {
            Some(kind) => self.emit(Some(key), kind),
            None if result.is_ok() => {
                tracing::info!(pool = %key, "the pool's cloud check passes again: its next Ready boot ends its degraded state (only a boot shows what the check does not look at, a management network, or that boots fail no more)")
            }
            None => {}
        }
    }

    /// The flavor's quota headroom as the cloud reports it, and the ports
    /// the unsold instances (every pool's: the quota is the project's) will
    /// yet take for their sales ([`gate::ports_kept_for_sale`]), counted
    /// just before the cloud is asked. A cold boot's instance counts too,
    /// though its order made its port already: too many kept while it boots.
    pub(crate) async fn poll_headroom(&self, flavor: &str) -> ManagerResult<(BootHeadroom, u64)> {
        let sales_ports: u64 = self
            .store
            .count_instances_by_pool()
            .await?
            .values()
            .flatten()
            .map(|(state, n)| gate::ports_kept_for_sale(*state).saturating_mul(u64::from(*n)))
            .sum();
        Ok((self.cloud.boot_headroom(flavor).await?, sales_ports))
    }

    /// Starts the boots the decider asks for. Returns the gate's hold, if
    /// new boots must wait for one.
    async fn replenish_step(self: &Arc<Self>, pool: &PoolRecord) -> ManagerResult<Option<Hold>> {
        let image = self.cloud.boot_image(&pool.spec.image);
        // Outdated Ready instances (past max_age, or of an old image) are
        // not supply: their replacements boot now, and they are retired
        // once the replacements are Ready.
        let (instances, renewal, census) = self.census_of(pool, &image).await?;
        // One a purchase took since it became Ready replaces nothing: its
        // refill is not Ready, and the outdated instance still serves.
        let replacements: Vec<String> = self
            .take_booted_ready(&pool.key, &image)
            .into_iter()
            .filter(|id| {
                instances
                    .iter()
                    .any(|i| &i.id == id && renewal.stands_in(i, &pool.key))
            })
            .collect();
        self.stamp_unknown_images(&instances, &image).await?;
        let Census {
            supply, in_flight, ..
        } = census;
        let now = Instant::now();
        let az = &pool.key.availability_zone;
        let settings = &self.settings.sizing;
        let prior = sizing::prior_for(
            &pool.spec,
            settings,
            self.cloud_flavor_iops(&pool.key.flavor),
        );
        let (demand, lead, wall) = {
            let mut book = self.sizing_book();
            let (demand, lead) = book.estimates(&pool.key, now, prior, settings);
            (demand, lead, book.wall_now(settings))
        };
        // After failed boots, one at a time once the pause is over.
        let base = self.settings.replenish_interval;
        let mut health = self.health_book().health(&pool.key);
        // A start-up check's mark is ended by the check passing again, made
        // here after each pause: no boot shows a Cinder zone mended. Not
        // while a service it calls waits out a throttle (a Retry-After the
        // cloud asked for, as the headroom poll does): made once it is over.
        let throttled_until = health
            .check_pending()
            .then(|| {
                gate::lock(&self.gate)
                    .paused_until(Self::RECHECK_SERVICES, az, &pool.key.flavor, now)
                    .map(|(until, _)| until)
            })
            .flatten();
        if health.recheck_due(base, BOOT_BACKOFF_MAX, now) && throttled_until.is_none() {
            self.recheck(pool).await;
            health = self.health_book().health(&pool.key);
        }
        // While the check is yet to pass the pool boots nothing (its boots
        // would fail as the check does, or prove nothing of what it looks
        // at): paused until the check is made again.
        let backoff = if health.check_pending() {
            let recheck_at = health.recheck_at(base, BOOT_BACKOFF_MAX).unwrap_or(now);
            let until = throttled_until.map_or(recheck_at, |t| t.max(recheck_at));
            Some(Backoff::Paused { until })
        } else {
            health
                .boot_backoff(base, BOOT_BACKOFF_MAX, self.settings.gate.enabled)
                .map(|until| {
                    if until > now {
                        Backoff::Paused { until }
                    } else {
                        Backoff::OneAtATime
                    }
                })
        };
        let inputs = |spec: &PoolSpec, census: &Census, gate| Inputs {
            min_ready: spec.min_ready_at(wall),
            max_ready: spec.max_ready,
            target: spec.target,
            supply: census.supply,
            in_flight: census.in_flight,
            demand,
            lead,
            service_level: settings.service_level,
            pool_boot_cap: self.settings.max_concurrent_boots,
            backoff,
            awaits_ready_boot: health.awaits_ready_boot(),
            gate,
        };
        // The target does not depend on the gate; the boots do, below.
        let (target, wanted) = {
            let admission = gate::lock(&self.gate).admission(az, &pool.key.flavor, now);
            let inputs = inputs(&pool.spec, &census, admission);
            let target = sizing::decide(&inputs).target;
            (target, sizing::wanted(&inputs, target))
        };
        // Quota headroom matters only to a pool that wants to boot (its
        // deficit, or a degraded pool's one boot at its target: the plan's
        // own count, so that no pool boots blind where it would wait for
        // room): poll it then (at most every headroom_interval per flavor,
        // sooner only after a quota refusal; servers freed do not make it
        // due, as a purchase in line re-reads for those), not at rest, and
        // not while Nova waits out a throttle (its boots are held
        // anyway), nor while the pool's boots wait for its start-up check
        // (none is made before the check passes: the poll would be every
        // headroom_interval for nothing).
        if wanted > 0
            && !health.check_pending()
            && self.settings.gate.enabled
            && gate::lock(&self.gate).refill_poll_due(az, &pool.key.flavor, now)
        {
            self.refresh_headroom(&pool.key).await;
        }
        // Under steady demand a refill is nearly always in flight, so
        // besides this all-at-once retirement of a quiet pool, each boot of
        // the pool's image that became Ready since the last step retires one
        // outdated instance (`replacements`): the new image reaches tenants
        // under load too, one replacement at a time.
        let replaced = in_flight == 0 && supply >= target;
        // Outdated instances are not supply (above): their replacements
        // booting beside them do not put the pool over max_ready. Boots in
        // flight above it are retired once Ready: retiring Ready instances
        // for them would leave the pool short for a lead time. But Ready
        // ones are never more than max_ready, outdated ones going first:
        // with a max_age shorter than a refill, the pool is never all
        // replaced at once, and outdated instances kept until then would
        // pile up a server a boot.
        let sized = SizedFrom {
            demand_in_lead: demand.forecast.max(0.0) * lead.p90.as_secs_f64(),
            forecast: demand.forecast,
        };
        let keep = sized.keep(&pool.spec, target, wall, settings);
        let surplus_outlasted = self.sizing_book().surplus_outlasted(
            &pool.key,
            census.fresh_ready() > keep,
            now,
            settings,
        );
        let mut due = Retirements::over_cap(&census, pool.spec.max_ready, replaced, target)
            .replacing(replacements)
            .sized_from(sized);
        if surplus_outlasted {
            due = due.down_to(keep, &census);
        }
        self.retire(pool, &instances, &renewal, due).await?;
        // The plan and its boots' tickets under one lock: the room and the
        // headroom this pool takes are gone at once for the AZ's other
        // pools. A ticket not handed to a boot (a failed record) ends when
        // dropped.
        let (admission, mut plan, tickets) = {
            let mut gate = gate::lock(&self.gate);
            let admission = gate.admission(az, &pool.key.flavor, Instant::now());
            let plan: BootPlan = sizing::decide(&inputs(&pool.spec, &census, admission));
            let tickets: Vec<BootTicket> = (0..plan.boots_now)
                .map(|_| {
                    BootTicket::start_locked(&self.gate, &mut gate, az, &pool.key.flavor, true)
                })
                .collect();
            (admission, plan, tickets)
        };
        if !tickets.is_empty() {
            // Decided again, and the boots recorded, under the pool lock
            // that a late cold boot's handover and every change of the pool
            // take, on the pool and its supply read again: since the count
            // above, the step may have waited on the cloud (the quota look,
            // retirements' deletes) and on the lock, while a handover joined
            // the pool or an operator paused, deleted or changed it. Only
            // the store is called under the lock (the boots' cloud calls run
            // on their own tasks), so other pools' steps and handovers wait
            // on no cloud. A ticket left over ends, dropped.
            let _guard = self.pool_lock.lock().await;
            let Some((pool, census)) = self.recount(&pool.key).await? else {
                return Ok(None);
            };
            if pool.draining || pool.spec.paused {
                return Ok(None);
            }
            plan = sizing::decide(&inputs(&pool.spec, &census, admission));
            // The pool may want more boots now than the first plan took
            // tickets for (its floor raised meanwhile): the next step
            // starts those. The plan shown says what this one started.
            let tickets_held = u32::try_from(tickets.len()).unwrap_or(u32::MAX);
            plan.boots_now = plan.boots_now.min(tickets_held);
            for ticket in tickets.into_iter().take(plan.boots_now as usize) {
                let (instance, claim) = self.record_new_instance(&pool, None).await?;
                ticket.recorded();
                let shared = self.clone();
                self.spawn(async move {
                    let _ = shared
                        .drive_boot_with(instance, claim, ticket, Timed::FromNow)
                        .await;
                });
            }
        }
        let previous = self.sizing_book().set_plan(&pool.key, plan, settings);
        let was_quota = previous.is_some_and(|p| p.reason == PlanReason::Quota);
        match (was_quota, plan.reason == PlanReason::Quota) {
            // Only the one boot a degraded pool makes at its target waits:
            // its purchases are served as usual.
            (false, true) if supply >= plan.target => tracing::warn!(
                pool = %pool.key,
                target = plan.target,
                supply,
                "the project's quota leaves no room for the one boot beyond its target that would show this degraded pool's cloud fixed: it stays degraded until room for a server frees up"
            ),
            (false, true) => tracing::warn!(
                pool = %pool.key,
                target = plan.target,
                supply,
                "the project's quota leaves no room: the pool boots nothing until it does (purchases still cold-boot when it frees up)"
            ),
            (true, false) => tracing::info!(pool = %pool.key, "quota room again: the pool boots"),
            _ => {}
        }
        // Come back when the hold ends only if it is what keeps boots back.
        let held = matches!(plan.reason, PlanReason::Throttled | PlanReason::Quota);
        Ok(admission
            .hold
            .filter(|hold| held && hold.until() > Instant::now()))
    }

    /// The pool's supply now, counted as a replenish step counts it:
    /// unreserved instances booting, warming or Ready, and not outdated.
    pub(crate) async fn supply_of(&self, pool: &PoolRecord) -> ManagerResult<u32> {
        Ok(self.census_now(pool).await?.supply)
    }

    /// How a step counts `pool` now, against the image its spec boots.
    async fn census_now(&self, pool: &PoolRecord) -> ManagerResult<Census> {
        let image = self.cloud.boot_image(&pool.spec.image);
        Ok(self.census_of(pool, &image).await?.2)
    }

    /// The pool as stored now and its census, for a step that has waited
    /// (on the cloud, on the pool lock) since it read them: an operator may
    /// have paused, deleted or changed the pool meanwhile. `None` once the
    /// pool is gone.
    async fn recount(&self, key: &PoolKey) -> ManagerResult<Option<(PoolRecord, Census)>> {
        let Some(pool) = self.store.get_pool(key).await? else {
            return Ok(None);
        };
        let census = self.census_now(&pool).await?;
        Ok(Some((pool, census)))
    }

    /// The pool's instances, which of them are due for renewal (servers of
    /// `image` are current), and how a step counts them.
    async fn census_of<'a>(
        &self,
        pool: &PoolRecord,
        image: &'a str,
    ) -> ManagerResult<(Vec<Instance>, Renewal<'a>, Census)> {
        let instances = self.store.list_untouched_instances(&pool.key).await?;
        let wall = self.sizing_book().wall_now(&self.settings.sizing);
        let renewal = Renewal::new(&pool.spec, image, wall);
        let census = Census::of(&instances, &renewal);
        Ok((instances, renewal, census))
    }

    /// The instances of the boots of `image` that became Ready in `pool`
    /// since its last step ([`Shared::booted_ready`]), forgotten as they
    /// are told: one of another image (the pool's changed since it booted)
    /// is outdated itself, and replaces nothing.
    fn take_booted_ready(&self, pool: &PoolKey, image: &str) -> Vec<String> {
        let booted = self
            .booted_ready
            .lock()
            .expect("booted-ready lock")
            .remove(pool)
            .unwrap_or_default();
        booted
            .into_iter()
            .filter(|booted| booted.image.as_deref() == Some(image))
            .map(|booted| booted.instance)
            .collect()
    }

    /// Whether instance `id` still stands in for an outdated one of `pool`:
    /// Ready, unclaimed and not due itself.
    async fn still_stands_in(
        &self,
        id: &str,
        pool: &PoolKey,
        renewal: &Renewal<'_>,
    ) -> ManagerResult<bool> {
        let instance = self.store.get_instance(id).await?;
        Ok(instance.is_some_and(|i| renewal.stands_in(&i, pool)))
    }

    /// Names `image` in the records written before instances kept their
    /// image (an upgrade): taken to be of the pool's image now, so the
    /// upgrade replaces nothing, and an image change after it finds them.
    /// Each record is written once; a write lost to a crash is redone.
    async fn stamp_unknown_images(&self, instances: &[Instance], image: &str) -> ManagerResult<()> {
        for instance in instances.iter().filter(|i| i.image.is_none()) {
            self.update_instance(&instance.id, |current| {
                current.image.is_none().then(|| {
                    let mut next = current.clone();
                    next.image = Some(image.to_owned());
                    Some(next)
                })
            })
            .await?;
        }
        Ok(())
    }

    /// Retires Ready instances the pool should no longer hold (see
    /// [`Retirements`]), oldest first. Each is retired only if it is still
    /// Ready and unclaimed: a purchase may take it meanwhile, and then it is
    /// the purchase's; one renewed only if still outdated by the pool's spec
    /// as it is then.
    async fn retire(
        &self,
        pool: &PoolRecord,
        instances: &[Instance],
        renewal: &Renewal<'_>,
        due: Retirements,
    ) -> ManagerResult<()> {
        let Retirements {
            replaced,
            target,
            fresh: mut over_cap,
            outdated: mut outdated_over_cap,
            replacements,
            mut above_target,
            keep,
            sized,
        } = due;
        let mut ready: Vec<&Instance> = instances
            .iter()
            .filter(|i| {
                i.pool == pool.key && i.state == InstanceState::Ready && i.request_id.is_none()
            })
            .collect();
        ready.sort_by_key(|i| i.ready_at);
        let mut replacements = replacements.iter();
        let mut doomed: Vec<(&Instance, Retirement)> = Vec::new();
        for instance in ready {
            let due = renewal.due(instance);
            if let Some(why) =
                due.filter(|_| replaced || outdated_over_cap > 0 || replacements.len() > 0)
            {
                // A replacement Ready stands in for one outdated instance,
                // whichever cause retires it.
                let replacement = replacements.next();
                let cause = match replacement {
                    _ if outdated_over_cap > 0 => Retirement::OutdatedOverCap(why),
                    Some(by) => Retirement::ReplacementReady(why, by),
                    None => Retirement::Replaced(why),
                };
                outdated_over_cap = outdated_over_cap.saturating_sub(1);
                doomed.push((instance, cause));
            } else if due.is_none() && over_cap > 0 {
                over_cap -= 1;
                doomed.push((instance, Retirement::FreshOverCap));
            } else if due.is_none() && above_target > 0 {
                above_target -= 1;
                doomed.push((instance, Retirement::AboveTarget));
            }
        }
        for (instance, cause) in doomed {
            // Each retirement waits for the cloud's delete: purchases may
            // have taken the fresh instances since the step's listing, an
            // outdated one still serves until its replacement stands, and
            // the operator may have changed max_ready, so each is judged
            // again on what is Ready now, by the pool as it is now.
            let Some((current, census)) = self.recount(&pool.key).await? else {
                return Ok(());
            };
            let max_ready = current.spec.max_ready;
            // The target and the keep of the pool as it is now: raised
            // (min_ready, a window opening) while a delete ran, they keep
            // what the step would otherwise delete and the next boot back.
            let (target, keep) = match sized {
                Some(sized) => {
                    let settings = &self.settings.sizing;
                    let wall = self.sizing_book().wall_now(settings);
                    sized.target_and_keep(&current.spec, wall, settings)
                }
                None => (target, keep),
            };
            let (fresh, outdated) = (census.fresh_ready(), census.outdated);
            // An outdated one is judged by the pool's spec now too: an
            // image or max_age change reverted meanwhile makes it current
            // again, and a pool's current instances are not renewed.
            let image_now = self.cloud.boot_image(&current.spec.image);
            let wall = self.sizing_book().wall_now(&self.settings.sizing);
            let renewal_now = Renewal::new(&current.spec, &image_now, wall);
            let why_now = renewal_now.due(instance);
            let still_due = match cause {
                Retirement::Replaced(_)
                | Retirement::ReplacementReady(..)
                | Retirement::OutdatedOverCap(_)
                    if why_now.is_none() =>
                {
                    false
                }
                Retirement::Replaced(_) => fresh >= target,
                // Its replacement still stands (a purchase may have taken
                // it meanwhile, and its refill is not Ready: the outdated
                // one serves until then), and the pool keeps its target,
                // counting what is in flight and the outdated instances it
                // keeps.
                Retirement::ReplacementReady(_, by) => {
                    census.supply + outdated > target
                        && self.still_stands_in(by, &pool.key, &renewal_now).await?
                }
                Retirement::OutdatedOverCap(_) => fresh + outdated > max_ready,
                Retirement::FreshOverCap => fresh > max_ready,
                Retirement::AboveTarget => fresh > keep,
            };
            if !still_due {
                continue;
            }
            let reason = match cause {
                Retirement::Replaced(why)
                | Retirement::ReplacementReady(why, _)
                | Retirement::OutdatedOverCap(why) => {
                    renewal_now.reason(instance, why_now.unwrap_or(why))
                }
                Retirement::FreshOverCap => format!("above the pool's max_ready of {max_ready}"),
                Retirement::AboveTarget => format!(
                    "above the pool's target of {target} for {} (keeping {keep}: the target and what purchases are expected to take meanwhile, or the min of a window opening within that time)",
                    humantime::format_duration(self.settings.sizing.cooldown)
                ),
            };
            let retired = self
                .update_instance(&instance.id, |current| {
                    (current.state == InstanceState::Ready && current.request_id.is_none()).then(
                        || {
                            let mut next = current.clone();
                            next.state = InstanceState::Deleting;
                            next.last_error = Some(format!("retired: {reason}"));
                            Some(next)
                        },
                    )
                })
                .await?;
            if let Some(retired) = retired {
                self.store.flush().await?;
                tracing::info!(pool = %pool.key, instance = %retired.id, %reason, "retiring a Ready instance");
                self.finish_delete(&retired).await?;
            }
        }
        Ok(())
    }

    /// Deletes the pool's unclaimed instances; true once none is left and the
    /// pool record is gone.
    async fn drain_step(self: &Arc<Self>, pool: &PoolRecord) -> ManagerResult<bool> {
        // Nothing is replaced in a draining pool, nor in one created again
        // under its key.
        self.take_booted_ready(&pool.key, &pool.spec.image);
        let mut left = 0;
        for instance in self.store.list_untouched_instances(&pool.key).await? {
            if instance.counts_as_supply() {
                // Listed a moment ago: an Allocate may have claimed it since.
                self.discard_instance_if(&instance.id, "pool drained", Instance::counts_as_supply)
                    .await?;
            } else {
                // One kept for a late create the reconciler drops once its
                // grace is over, pool or not: nothing of the pool to wait for.
                let kept_for_late_create =
                    instance.state == InstanceState::Deleting && self.awaits_late_create(&instance);
                if !self.left_to_its_create(&instance) && !kept_for_late_create {
                    left += 1;
                }
            }
        }
        if left == 0 {
            let _guard = self.pool_lock.lock().await;
            self.store.delete_pool(&pool.key).await?;
            // Its stored health went with it.
            self.health_book().forget(&pool.key);
            // The pool is gone, flushed or not: this task must end, or it
            // would take a pool created again under the key for its own (a
            // second replenisher). A crash before the next flush brings
            // the record back, still draining, and the restart drains it.
            if let Err(e) = self.store.flush().await {
                tracing::warn!(pool = %pool.key, error = %e, "cannot flush the deletion of a drained pool; a later flush will");
            }
            self.changed();
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes a new `Booting` instance; the record exists before the server.
    /// Its driving claim is taken before the record is visible (so a
    /// reconcile pass cannot take a record whose boot task has not started
    /// yet for one left by a crash) and comes with it, for the caller to
    /// hand to [`Self::drive_boot_with`].
    pub(crate) async fn record_new_instance(
        self: &Arc<Self>,
        pool: &PoolRecord,
        reserved_for: Option<String>,
    ) -> ManagerResult<(Instance, DrivingClaim)> {
        let mut instance = Instance {
            id: self.new_instance_id(),
            pool: pool.key.clone(),
            server_id: None,
            state: InstanceState::Booting,
            // On the clock a resumed boot's deadline is judged by (the
            // wall clock tokio time moves).
            created_at: self.sizing_book().wall_now(&self.settings.sizing),
            ready_at: None,
            attempts: 1,
            last_error: None,
            request_id: reserved_for,
            mysql_addr: None,
            image: Some(self.cloud.boot_image(&pool.spec.image)),
        };
        let claim = loop {
            // A claim already held is a taken id, driven by another task.
            let Some(claim) = DrivingClaim::take(self, &instance.id) else {
                instance.id = self.new_instance_id();
                continue;
            };
            let written = match self.store.cas_instance(None, Some(&instance)).await {
                Ok(true) => match self.store.flush().await {
                    Ok(()) => Ok(true),
                    Err(e) => {
                        // Not on disk: taken back, or it would stand as
                        // supply with no boot behind it until a reconcile
                        // pass drops it.
                        if let Err(undo) = self.store.cas_instance(Some(&instance), None).await {
                            tracing::warn!(instance = %instance.id, error = %undo, "cannot take back a new instance whose record was not flushed; the reconciler drops it");
                        }
                        Err(e)
                    }
                },
                other => other,
            };
            // Not written, the claim is let go of as it is dropped.
            match written {
                Ok(true) => break claim,
                // The id is taken (a seeded generator restarted on its
                // store draws its ids again): that record is not ours.
                Ok(false) => instance.id = self.new_instance_id(),
                Err(e) => return Err(e.into()),
            }
        };
        self.changed();
        Ok((instance, claim))
    }

    /// A random (version 4) UUID from the manager's id generator.
    fn new_instance_id(&self) -> String {
        let bytes = self
            .instance_ids
            .lock()
            .expect("instance id generator lock")
            .gen();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    /// Drives one instance to `Ready`; on failure discards it and returns why.
    /// `claim` is the instance's driving claim, let go of when the boot ends
    /// (or its task does, a panic too). The boot counts toward its AZ's load
    /// but is not held by the gate (purchases and resumed boots).
    pub(crate) async fn drive_boot(
        self: &Arc<Self>,
        instance: Instance,
        claim: DrivingClaim,
        timed: Timed,
    ) -> Result<Instance, BootError> {
        let pool = &instance.pool;
        let ticket = BootTicket::start(&self.gate, &pool.availability_zone, &pool.flavor, false);
        self.drive_boot_with(instance, claim, ticket, timed).await
    }

    /// As [`Self::drive_boot`], its gate `ticket` started by the caller.
    pub(crate) async fn drive_boot_with(
        self: &Arc<Self>,
        instance: Instance,
        claim: DrivingClaim,
        ticket: BootTicket,
        timed: Timed,
    ) -> Result<Instance, BootError> {
        let started = Instant::now();
        let mut watch = (timed == Timed::FromNow).then(|| LeadWatch::start(self, &instance));
        // The boot as the gate knows it, for a quota refusal's report once
        // its ticket is finished.
        let boot = ticket.info().cloned();
        let mut ticket = Some(ticket);
        let mut result = self.boot_to_ready(&instance, &mut ticket, timed).await;
        // A server deleted under the boot because its record was taken (a
        // drain) is no failed boot.
        if matches!(&result, Err(e) if !matches!(e, BootError::Superseded))
            && self.taken_from_boot(&instance.id).await
        {
            result = Err(BootError::Superseded);
        }
        let lead_time = started.elapsed();
        if let (Err(BootError::Cloud(CloudError::QuotaExceeded(_))), Some(boot)) = (&result, &boot)
        {
            gate::lock(&self.gate).quota_exceeded(boot, Instant::now());
        }
        if let Some(watch) = &mut watch {
            watch.finish(result.is_ok().then_some(lead_time));
        }
        if let Some(ticket) = ticket {
            ticket.finish(BootSignal::NoSignal);
        }
        // Logged before the boot's event: the verdict the failure may earn
        // (the pool degraded) reads after its cause.
        let error = match &result {
            Err(BootError::Superseded) | Ok(_) => None,
            Err(e) => {
                tracing::warn!(pool = %instance.pool, instance = %instance.id, error = %e, "boot failed");
                Some(e.to_string())
            }
        };
        if let Some(outcome) = boot_outcome(&result) {
            let lead_time = (timed == Timed::FromNow).then_some(lead_time);
            let boot = EventKind::Boot { outcome, lead_time };
            self.emit_boot(Some(&instance.pool), boot, error.as_deref());
            // Before the instance is discarded, so before a drain can end.
            self.save_health(&instance.pool).await;
        }
        // A failed boot still drives its instance until it is discarded: a
        // reconcile pass in between would resume it (the boot failing again,
        // reported twice).
        let result = self.finish_failed_boot(&instance, result).await;
        drop(claim);
        result
    }

    /// The deadline of a boot resumed from its record: `boot_timeout` after
    /// its boot was requested (the instance's creation), not after the
    /// resume, or each restart (a crash loop: forever) would give a server
    /// whose mysqld never answers a whole new timeout. Never sooner than a
    /// poll from now: one resumed right at its end still gets a look.
    fn resumed_boot_deadline(&self, instance: &Instance, boot_timeout: Duration) -> Instant {
        let now = Instant::now();
        // On the clock the creation time was read on (`record_new_instance`).
        let wall = self.sizing_book().wall_now(&self.settings.sizing);
        // Created "after" now, the wall clock stepped back: it counts from now.
        let since_request = wall
            .duration_since(instance.created_at)
            .unwrap_or(Duration::ZERO);
        let left = boot_timeout
            .saturating_sub(since_request)
            .max(self.settings.poll_interval);
        deadline_after(now, left)
    }

    /// Whether the instance's record is no longer its boot's to move on:
    /// gone or being deleted (a drain, a retirement). A store that cannot
    /// say leaves it to the boot.
    async fn taken_from_boot(&self, id: &str) -> bool {
        match self.store.get_instance(id).await {
            Ok(None) => true,
            Ok(Some(current)) => current.state == InstanceState::Deleting,
            Err(_) => false,
        }
    }

    /// Records why a boot failed and discards its instance; other results
    /// pass through.
    async fn finish_failed_boot(
        &self,
        instance: &Instance,
        result: Result<Instance, BootError>,
    ) -> Result<Instance, BootError> {
        match result {
            Ok(ready) => Ok(ready),
            Err(BootError::Superseded) => Err(BootError::Superseded),
            Err(e) => {
                // Warned of by the caller, before its event.
                let message = e.to_string();
                // `Failed` first, until its delete is done: a late cold
                // boot's handover judges the boot by its record under the
                // pool lock, which the pool's update below waits on, and
                // must not hand the pool an instance about to be deleted,
                // nor tell its purchase a failed boot was undone. Only
                // while it is still this boot's: a task resumed from a
                // stale listing may drive an instance a purchase has taken.
                let failed = self
                    .update_instance(&instance.id, |current| {
                        matches!(
                            current.state,
                            InstanceState::Booting | InstanceState::Warming
                        )
                        .then(|| {
                            let mut next = current.clone();
                            next.state = InstanceState::Failed;
                            next.last_error = Some(message.clone());
                            Some(next)
                        })
                    })
                    .await;
                let at = self.sizing_book().wall_now(&self.settings.sizing);
                let _ = self
                    .update_pool(&instance.pool, |p| {
                        p.last_error = Some(message.clone());
                        p.last_error_at = Some(at);
                    })
                    .await;
                let discarded = match failed {
                    Ok(Some(failed)) => match self.store.flush().await {
                        Ok(()) => self.finish_delete(&failed).await,
                        Err(e) => Err(e.into()),
                    },
                    // Taken meanwhile: whoever took it discards it.
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(discard) = discarded {
                    tracing::warn!(instance = %instance.id, error = %discard, "discard failed; reconciler will retry");
                }
                Err(e)
            }
        }
    }

    /// Awaits a Nova call made for a boot in `az` (its create or a status
    /// read), telling the gate when the cloud throttled it (a 429, a 413
    /// that is no quota, a 503 with a Retry-After): a compute 429 to a
    /// boot, which pauses Nova's refills everywhere and halves the zone's
    /// window. A Glance or Neutron lookup in a create is counted so too
    /// (the wrapper knows the method's service alone). A 429 to the token
    /// renewal inside the call is Keystone's ([`CloudService::Identity`]):
    /// it pauses refills (they need tokens) but halves no window.
    async fn watch_throttle<T>(
        &self,
        az: &str,
        call: impl Future<Output = CloudResult<T>>,
    ) -> CloudResult<T> {
        let (result, service) = noting_service(call).await;
        if let Err(CloudError::Throttled { retry_after, .. }) = &result {
            let now = Instant::now();
            let call = ThrottledCall::new(service, true);
            gate::lock(&self.gate).throttled(az, call, *retry_after, now);
        }
        result
    }

    /// Drives the instance to `Ready`. The gate's `ticket` is finished when
    /// the server becomes ACTIVE: the gate limits builds, the part of a boot
    /// that compute hosts serialize (mysqld then starts inside the guest).
    async fn boot_to_ready(
        &self,
        instance: &Instance,
        ticket: &mut Option<BootTicket>,
        timed: Timed,
    ) -> Result<Instance, BootError> {
        let az = instance.pool.availability_zone.as_str();
        let pool = match self.pool(&instance.pool).await {
            Ok(pool) => pool,
            Err(e) => {
                // No create sent: a record taken meanwhile (a drain, which
                // deletes the pool record before this read) names no server
                // to come, and is not left to the next reconcile pass.
                if instance.server_id.is_none() {
                    self.forget_taken_boot(instance).await;
                }
                return Err(e.into());
            }
        };
        let deadline = match timed {
            Timed::FromNow => deadline_after(Instant::now(), pool.spec.boot_timeout),
            Timed::Not => self.resumed_boot_deadline(instance, pool.spec.boot_timeout),
        };
        let mut instance = instance.clone();
        // Only a build this task requested measures the build time.
        let mut requested = None;

        if instance.server_id.is_none() {
            let spec = ServerSpec {
                name: format!("warmpool-{}", instance.id),
                pool: instance.pool.clone(),
                // The record's image, not the pool's now: the record must
                // say what the server runs for an image change to find it.
                image: instance
                    .image
                    .clone()
                    .unwrap_or_else(|| pool.spec.image.clone()),
                metadata: BTreeMap::from([
                    (META_POOL.to_string(), instance.pool.to_string()),
                    (META_INSTANCE.to_string(), instance.id.clone()),
                ]),
            };
            // From the create the cloud took: a 429's pause before it is no
            // build time, and would read to the gate as build inflation.
            let mut sent = Instant::now();
            let in_doubt = std::sync::atomic::AtomicBool::new(false);
            let failures = std::sync::atomic::AtomicU32::new(0);
            let (failures, booting, timeout) = (&failures, &instance, pool.spec.boot_timeout);
            let created = self
                .retry(deadline, || {
                    sent = Instant::now();
                    let answer = crate::cloud::noting_doubt(
                        self.watch_throttle(az, self.cloud.create_server(&spec)),
                        &in_doubt,
                    );
                    async move {
                        let answer = answer.await;
                        if let Err(e @ CloudError::Transient(_)) = &answer {
                            let n = failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                            if n == CREATE_FAILURES_SHOWN {
                                self.note_create_failing(booting, e, n, timeout).await;
                            }
                        }
                        answer
                    }
                })
                .await;
            let in_doubt = in_doubt.into_inner();
            let server = match created {
                Ok(server) => {
                    requested = Some(sent);
                    server
                }
                // An answer that may hide a server the cloud made (a 5xx,
                // a timeout, a 503 from in front of Nova): booted on if the
                // cloud lists it, as the failed boot would leave it to the
                // reconciler, deleted as a leak. Its build is not timed:
                // it began at an earlier create.
                Err(e) if in_doubt => match self.server_made_for(&instance).await {
                    Ok(Some(server)) => {
                        tracing::info!(instance = %instance.id, server = %server.id, error = %e, "a create answered with an error had made the server; booting on it");
                        server
                    }
                    // The cloud lists none: the create did not land (so
                    // far), so it holds no quota, and keeping its headroom
                    // until the next poll would hold refills back. One
                    // landing later is the reconciler's, as a leak.
                    Ok(None) => {
                        if let Some(ticket) = ticket.take() {
                            ticket.finish(BootSignal::Refused);
                        }
                        self.forget_taken_boot(&instance).await;
                        return Err(e.into());
                    }
                    // Unknown: the server may hold quota until the next
                    // poll. A record taken meanwhile is kept for the
                    // reconciler, which looks for a server naming it.
                    Err(()) => return Err(e.into()),
                },
                // Every answer was a refusal that holds no quota.
                Err(e) => {
                    if let Some(ticket) = ticket.take() {
                        ticket.finish(BootSignal::Refused);
                    }
                    self.forget_taken_boot(&instance).await;
                    return Err(e.into());
                }
            };
            // Also on a record taken while the create was on its way (a
            // drain, a purchase's rollback): it was kept for this answer
            // (`left_to_its_create`), and once it names the server, a
            // delete refused or cut short by a crash is finished as any
            // `Deleting` instance's, no leak.
            let recorded = self
                .update_instance(&instance.id, |current| {
                    let taken =
                        current.state == InstanceState::Deleting && current.server_id.is_none();
                    (current.state == InstanceState::Booting || taken).then(|| {
                        let mut next = current.clone();
                        next.server_id = Some(server.id.clone());
                        // What kept the create from landing is over (a
                        // taken record keeps why it is being deleted).
                        if !taken {
                            next.last_error = None;
                        }
                        Some(next)
                    })
                })
                .await;
            match recorded {
                Ok(Some(next)) if next.state == InstanceState::Deleting => {
                    tracing::info!(instance = %next.id, server = %server.id, "the boot was taken while its create was on its way; deleting the server it made");
                    if let Err(e) = self.finish_delete(&next).await {
                        tracing::warn!(instance = %next.id, server = %server.id, error = %e, "cannot delete the server of a boot taken while its create was on its way; the next reconcile pass deletes it");
                    }
                    return Err(BootError::Superseded);
                }
                Ok(Some(next)) => instance = next,
                // Gone, or moved on by someone else while the create was
                // in flight: the server is ours to delete. Left to the
                // next reconcile pass, it would be deleted as a leak, an
                // alert for nothing.
                Ok(None) => {
                    self.delete_unrecorded_server(&instance, &server.id).await;
                    return Err(BootError::Superseded);
                }
                // The server's id may not be on record: the failed boot's
                // discard would not delete it, and the reconciler would
                // take it for a leak.
                Err(e) => {
                    self.delete_unrecorded_server(&instance, &server.id).await;
                    return Err(e.into());
                }
            }
        }
        let server_id = instance.server_id.clone().expect("set above");
        // The cloud counts the server, made now or before a resume.
        if let Some(ticket) = ticket {
            ticket.create_answered();
        }

        if instance.state == InstanceState::Booting {
            let mut active_unaddressed = false;
            let mysql_addr = loop {
                let mut attempts = 0;
                let server = match self
                    .retry(deadline, || {
                        attempts += 1;
                        self.watch_throttle(az, self.cloud.read_server(&server_id))
                    })
                    .await
                {
                    // The server the cloud made is gone: no refusal of the
                    // boot as asked, which a cold boot answers as such.
                    Err(CloudError::NotFound(_)) => {
                        return Err(BootError::ServerError("server was deleted".into()))
                    }
                    other => other?,
                };
                if server.deleting {
                    return Err(BootError::ServerError("server is being deleted".into()));
                }
                match server.status {
                    ServerStatus::Active => {
                        // After a retry's pause (a 429's Retry-After) the
                        // server may have become ACTIVE anywhere in it: the
                        // build is not timed, as the whole pause would read
                        // to the gate as build inflation.
                        let measured = requested.filter(|_| attempts == 1);
                        if let Some(ticket) = ticket.take() {
                            ticket.finish(measured.map_or(BootSignal::Unmeasured, |at| {
                                BootSignal::Built {
                                    build: at.elapsed(),
                                }
                            }));
                        }
                        if server.mysql_addr.is_some() {
                            break server.mysql_addr;
                        }
                        // ACTIVE, its address not read yet: Nova lists it
                        // a moment late, or the driver could not look up
                        // the network it is on (Neutron failing). Not a
                        // broken server: polled on until it shows.
                        active_unaddressed = true;
                    }
                    ServerStatus::Error => {
                        let fault = server.fault.unwrap_or_else(|| "no fault given".into());
                        // Nova took the create, then its quota recheck
                        // refused it: a quota refusal, as a refused create
                        // is (the gate's to pause), not a failed boot.
                        if mentions_quota(&fault) {
                            return Err(BootError::Cloud(CloudError::QuotaExceeded(format!(
                                "server went to ERROR: {fault}"
                            ))));
                        }
                        return Err(BootError::ServerError(format!(
                            "server went to ERROR: {fault}"
                        )));
                    }
                    ServerStatus::Deleted => {
                        return Err(BootError::ServerError("server was deleted".into()))
                    }
                    _ => {}
                }
                if Instant::now() >= deadline {
                    return Err(BootError::Timeout(if active_unaddressed {
                        "server became ACTIVE, but its address on the management network was never read (is Neutron answering, and the management_network setting its network's name or id?)".into()
                    } else {
                        "server never became ACTIVE".into()
                    }));
                }
                tokio::time::sleep(self.settings.poll_interval).await;
            };
            instance = self
                .transition(&instance, InstanceState::Booting, |next| {
                    next.state = InstanceState::Warming;
                    next.mysql_addr = mysql_addr;
                })
                .await?;
        }

        let Some(addr) = instance.mysql_addr else {
            return Err(BootError::ServerError(
                "server has no address to probe".into(),
            ));
        };
        let mut last_probe_error;
        let mut next_look = deadline_after(Instant::now(), WARMING_SERVER_LOOK_AFTER);
        loop {
            match self.probe.probe(addr).await {
                Ok(version) => {
                    tracing::debug!(instance = %instance.id, %version, "mysqld answered");
                    break;
                }
                Err(e) => last_probe_error = e,
            }
            // On the instance while it warms, not only once the boot
            // timeout (15 min by default) has gone by; written when it
            // appears or changes, not at every probe.
            // Capped as it will be stored, so that it compares equal.
            let waiting = text::capped(format!(
                "mysqld not answering yet: {}",
                last_probe_error.while_booting()
            ));
            if instance.last_error.as_deref() != Some(waiting.as_str()) {
                let noted = self
                    .transition(&instance, InstanceState::Warming, |next| {
                        next.last_error = Some(waiting.clone());
                    })
                    .await;
                match noted {
                    Ok(noted) => instance = noted,
                    Err(BootError::Superseded) => return Err(BootError::Superseded),
                    // Only what it shows is lost: the probes go on.
                    Err(e) => {
                        tracing::warn!(instance = %instance.id, error = %e, "cannot record why mysqld does not answer yet")
                    }
                }
            }
            // A drain may delete the server under the probes.
            if self.taken_from_boot(&instance.id).await {
                return Err(BootError::Superseded);
            }
            if Instant::now() >= next_look {
                self.look_at_warming_server(az, &server_id).await?;
                next_look = deadline_after(Instant::now(), WARMING_SERVER_LOOK_AFTER);
            }
            if Instant::now() >= deadline {
                return Err(BootError::Timeout(format!(
                    "mysqld never answered: {last_probe_error}"
                )));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
        // On the clock max_age is judged by (the wall clock tokio time moves).
        let ready_at = self.sizing_book().wall_now(&self.settings.sizing);
        let ready = self
            .transition(&instance, InstanceState::Warming, |next| {
                next.state = InstanceState::Ready;
                next.ready_at = Some(ready_at);
                // What kept mysqld from answering is over.
                next.last_error = None;
            })
            .await?;
        // A purchase's cold boot is its own, no replacement of the pool's.
        if ready.request_id.is_none() {
            self.booted_ready
                .lock()
                .expect("booted-ready lock")
                .entry(ready.pool.clone())
                .or_default()
                .push(BootedReady {
                    instance: ready.id.clone(),
                    image: ready.image.clone(),
                });
        }
        tracing::info!(pool = %ready.pool, instance = %ready.id, "instance ready");
        Ok(ready)
    }

    /// Shows why a boot's server create keeps failing transiently (Nova
    /// answering 500, a timeout), once per boot: logged at WARN, on the
    /// instance while it is still the boot's (`Booting`, no server), and
    /// then as its pool's last error unless its failed boots degrade the
    /// pool (its last error then says why). Such a pool's is logged at
    /// debug: its every boot failing so, each would be two warnings, this
    /// and the boot's failure, which names the same error. Not a pool a
    /// failed cloud check degraded (its mark waiting for a Ready boot once
    /// the check passes again): nothing else would show these creates
    /// failing before boot_timeout, its last error still naming the check
    /// mended since. The retries go on meanwhile; a store that fails this
    /// loses only what it shows.
    async fn note_create_failing(
        &self,
        instance: &Instance,
        error: &CloudError,
        failures: u32,
        boot_timeout: Duration,
    ) {
        let message = format!(
            "the server create failed {failures} times in a row ({error}); retried until boot_timeout ({})",
            humantime::format_duration(boot_timeout)
        );
        let by_boots = self
            .health_book()
            .health(&instance.pool)
            .degraded_by_boots();
        if by_boots {
            tracing::debug!(pool = %instance.pool, instance = %instance.id, error = %error, failures, "the cloud keeps failing this boot's server create; retrying it until boot_timeout");
        } else {
            tracing::warn!(pool = %instance.pool, instance = %instance.id, error = %error, failures, "the cloud keeps failing this boot's server create; retrying it until boot_timeout");
        }
        // Written even when it holds the message already (a boot resumed
        // after a restart, failing alike): once per boot, and its answer
        // says whether the record is still this boot's.
        let noted = self
            .update_instance(&instance.id, |current| {
                (current.state == InstanceState::Booting && current.server_id.is_none()).then(
                    || {
                        let mut next = current.clone();
                        next.last_error = Some(message.clone());
                        Some(next)
                    },
                )
            })
            .await;
        match noted {
            Ok(Some(_)) => {}
            // Taken from the boot meanwhile (a drain, a purchase's
            // rollback: it is being deleted): its pool, or one created
            // again under the key, is not to read about it.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(instance = %instance.id, error = %e, "cannot record why the server create fails");
                return;
            }
        }
        if by_boots {
            return;
        }
        let at = self.sizing_book().wall_now(&self.settings.sizing);
        let _ = self
            .update_pool(&instance.pool, |p| {
                p.last_error = Some(format!("instance {}: {message}", instance.id));
                p.last_error_at = Some(at);
            })
            .await;
    }

    /// The server a boot's create left in doubt made for `instance`, if
    /// the cloud lists one naming it now (`Err` when the list failed: no
    /// one knows). One look: a cloud that does not
    /// answer it (still unavailable) or a server landing after it leaves
    /// the server to the reconciler, which deletes it as a leak.
    async fn server_made_for(&self, instance: &Instance) -> Result<Option<Server>, ()> {
        match self.cloud.list_pool_servers().await {
            Ok(servers) => Ok(servers.into_iter().find(|s| {
                !s.deleting
                    && s.status != ServerStatus::Deleted
                    && s.metadata.get(META_INSTANCE) == Some(&instance.id)
            })),
            Err(e) => {
                tracing::warn!(instance = %instance.id, error = %e, "cannot look for the server a create answered with an error may have made; a reconcile pass deletes it as a leak if it did");
                Err(())
            }
        }
    }

    /// Deletes the server a boot's create made that its record does not
    /// name, retried as any cleanup's delete. One the cloud still refuses
    /// is the next reconcile pass's (as a leak).
    async fn delete_unrecorded_server(&self, instance: &Instance, server_id: &str) {
        let deleted = self
            .retry(self.cleanup_deadline(), || {
                self.cloud.delete_server(server_id)
            })
            .await;
        match deleted {
            Ok(()) => self.watch_until_freed(server_id),
            Err(e) => {
                tracing::warn!(instance = %instance.id, server = %server_id, error = %e, "cannot delete the server of a boot whose record does not name it; the next reconcile pass deletes it as a leak");
            }
        }
    }

    /// Fails the boot of a warming VM whose server is gone or in ERROR: the
    /// reconciler leaves alone what a boot task drives. A look the cloud
    /// does not answer says nothing; the next one is due a period later.
    async fn look_at_warming_server(&self, az: &str, server_id: &str) -> Result<(), BootError> {
        let server = match self
            .watch_throttle(az, self.cloud.read_server(server_id))
            .await
        {
            Ok(server) => server,
            Err(CloudError::NotFound(_)) => {
                return Err(BootError::ServerError("server was deleted".into()))
            }
            Err(e) => {
                tracing::debug!(server = %server_id, error = %e, "cannot look at a warming server; looking again later");
                return Ok(());
            }
        };
        if server.deleting || server.status == ServerStatus::Deleted {
            return Err(BootError::ServerError("server was deleted".into()));
        }
        if server.status == ServerStatus::Error {
            let fault = server.fault.unwrap_or_else(|| "no fault given".into());
            return Err(BootError::ServerError(format!(
                "server went to ERROR: {fault}"
            )));
        }
        Ok(())
    }

    /// Moves the instance on from `from`, or reports that someone else moved it.
    async fn transition(
        &self,
        instance: &Instance,
        from: InstanceState,
        change: impl Fn(&mut Instance),
    ) -> Result<Instance, BootError> {
        self.update_instance(&instance.id, |current| {
            (current.state == from).then(|| {
                let mut next = current.clone();
                change(&mut next);
                Some(next)
            })
        })
        .await?
        .ok_or(BootError::Superseded)
    }

    /// Takes an instance out of service for good: `Deleting` is recorded
    /// first, then the server is deleted, then the record goes.
    pub(crate) async fn discard_instance(&self, id: &str, reason: &str) -> ManagerResult<()> {
        self.discard_instance_if(id, reason, |_| true).await
    }

    /// As [`Self::discard_instance`], but only while `still` holds of the
    /// stored record. A caller that judged the instance on an earlier read
    /// (a drain, a rollback) must not take it from whoever moved it on
    /// since, such as an Allocate that claimed it.
    pub(crate) async fn discard_instance_if(
        &self,
        id: &str,
        reason: &str,
        still: impl Fn(&Instance) -> bool,
    ) -> ManagerResult<()> {
        let begun = |current: &Instance| {
            matches!(
                current.state,
                InstanceState::Failed | InstanceState::Deleting
            )
        };
        let deleting = self
            .update_instance(id, |current| {
                (!begun(current) && still(current)).then(|| {
                    let mut next = current.clone();
                    next.state = InstanceState::Deleting;
                    next.last_error = Some(reason.to_string());
                    Some(next)
                })
            })
            .await?;
        let deleting = match deleting {
            Some(deleting) => deleting,
            None => match self.store.get_instance(id).await? {
                // A delete begun before (maybe interrupted; a failed boot's
                // too): finishing it is idempotent.
                Some(current) if begun(&current) => current,
                _ => return Ok(()),
            },
        };
        self.store.flush().await?;
        if self.left_to_its_create(&deleting) {
            tracing::debug!(instance = %id, "its create is on its way; its boot task deletes the server it makes");
            return Ok(());
        }
        self.finish_delete(&deleting).await
    }

    /// Whether `instance` is being deleted while its boot's create is on
    /// its way: no server recorded yet, its boot task still running. Its
    /// record is all that names the server the create may make, so it is
    /// kept, `Deleting`, for that task: the task records the server and
    /// deletes it, or drops the record once its create made none. Dropped
    /// now, a crash or a stop before the create's answer would leave the
    /// server to the restart as a leak (or, on a store left knowing
    /// nothing, as unknown servers refusing the start); kept, the restart
    /// finds the server by the instance's id and deletes it as its own. A
    /// drain does not wait for it: the pool record goes, the instance's
    /// stays until its task is done.
    pub(crate) fn left_to_its_create(&self, instance: &Instance) -> bool {
        instance.state == InstanceState::Deleting
            && instance.server_id.is_none()
            && self
                .driving
                .lock()
                .expect("driving lock")
                .contains(&instance.id)
    }

    /// Drops the record of a boot taken from it while its create was on
    /// its way (see [`Self::left_to_its_create`]), once the create made no
    /// server: nothing else is left to delete.
    async fn forget_taken_boot(&self, instance: &Instance) {
        let forgotten = self
            .update_instance(&instance.id, |current| {
                (current.state == InstanceState::Deleting && current.server_id.is_none())
                    .then_some(None)
            })
            .await;
        if let Err(e) = forgotten {
            tracing::warn!(instance = %instance.id, error = %e, "cannot drop the record of a boot taken from it whose create made no server; the next reconcile pass drops it");
        }
    }

    /// Deletes the server of a `Deleting` (or `Failed`, `Releasing`) instance and its
    /// record. The record of a server a purchase had goes only once the
    /// server is gone: it may hold the tenant's volume (a detach Nova
    /// refused), and the reconciler never deletes a server it does not
    /// know that holds one, so a delete the compute host failed after Nova
    /// accepted it would leave the server up, holding the volume, for good.
    /// A pool server's delete that fails so is the leak sweep's.
    ///
    /// `instance` naming no server is dropped only while the stored record
    /// names none either: it may be a copy read before the boot task of a
    /// record taken mid-create (see [`Self::left_to_its_create`]) recorded
    /// the server its create made and ended, its delete refused. Dropped
    /// by that copy, the record naming the server would go and the next
    /// reconcile pass would delete the server as a leak; kept, that pass
    /// deletes it as the instance's.
    pub(crate) async fn finish_delete(&self, instance: &Instance) -> ManagerResult<()> {
        let Some(server_id) = &instance.server_id else {
            self.update_instance(&instance.id, |current| {
                current.server_id.is_none().then_some(None)
            })
            .await?;
            return Ok(());
        };
        let deadline = self.cleanup_deadline();
        if instance.request_id.is_some() {
            self.delete_server_until_gone(server_id, deadline).await?;
        } else if let Err(e) = self
            .retry(deadline, || self.cloud.delete_server(server_id))
            .await
        {
            self.note_delete_refused(instance, server_id, &e).await;
            return Err(e.into());
        } else {
            self.watch_until_freed(server_id);
        }
        self.update_instance(&instance.id, |_| Some(None)).await?;
        Ok(())
    }

    /// Sends the delete of a `Deleting` instance's server once, with no
    /// retry, and drops its record once the cloud accepted it: for an
    /// instance a purchase writes off with nothing of a tenant's on it.
    /// [`Self::finish_delete`] waits out a 429's Retry-After, or a 5xx's
    /// backoff, up to the cleanup budget (2 min), and the buyer would wait
    /// with it. A delete the cloud does not take leaves the record
    /// `Deleting`, which each reconcile pass deletes again (noting why the
    /// server stays, if it does).
    pub(crate) async fn delete_once(&self, instance: &Instance) -> ManagerResult<()> {
        debug_assert!(
            instance.state == InstanceState::Deleting && instance.request_id.is_none(),
            "{instance:?}"
        );
        if let Some(server_id) = &instance.server_id {
            self.cloud.delete_server(server_id).await?;
            self.watch_until_freed(server_id);
        }
        self.update_instance(&instance.id, |_| Some(None)).await?;
        Ok(())
    }

    /// A delete of `server_id` the cloud took and warmpool does not wait
    /// out (a retirement's, a drain's, a failed boot's, the reconciler's):
    /// while a purchase waits for quota, the server is read until it is
    /// gone, within the cleanup budget, then counted freed
    /// ([`gate::Gate::server_freed`]) and the waiters woken, so that the
    /// room is theirs then rather than at the next poll of the limits.
    /// Nova counts a server until its compute host is done with it, so a
    /// poll at once would not show the room. With no purchase waiting,
    /// nothing is read: refills see the room at their next poll. A read
    /// that fails, or a server no longer being deleted (left SOFT_DELETED,
    /// or its delete failed on the host), ends the watch: its room, if
    /// any, shows at the next poll.
    pub(crate) fn watch_until_freed(&self, server_id: &str) {
        if !gate::lock(&self.gate).purchases_waiting() {
            return;
        }
        let (cloud, gate, changes) = (self.cloud.clone(), self.gate.clone(), self.changes.clone());
        let server_id = server_id.to_owned();
        let pause = self.settings.poll_interval.min(Duration::from_millis(500));
        let deadline = self.cleanup_deadline();
        self.spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(pause).await;
                match cloud.read_server(&server_id).await {
                    Err(CloudError::NotFound(_)) => {
                        gate::lock(&gate).server_freed();
                        // The waiters look again on a change of the store.
                        changes.bump();
                        return;
                    }
                    Ok(server) if server.deleting => {}
                    _ => return,
                }
            }
        });
    }

    /// Shows why a pool instance's server is still there, on the instance
    /// (after why it is being deleted) and as its pool's last error unless
    /// the pool is degraded: a retirement or a drain the cloud keeps
    /// refusing (a locked server) showed only a `deleting` count. Written when it changes, not at
    /// every pass that is refused the same way; a store that fails this
    /// loses only what it shows.
    async fn note_delete_refused(&self, instance: &Instance, server_id: &str, error: &CloudError) {
        // What `retry` gave up on: a refusal the operator must lift, or a
        // throttle or outage (a Retry-After past the cleanup deadline, a
        // 5xx, a timeout) that passes by itself.
        let refused = if error.is_retryable() {
            format!(
                "the delete of server {server_id} failed for now ({error}); each reconcile pass tries again"
            )
        } else {
            format!(
                "the cloud refused to delete server {server_id} ({error}); each reconcile pass tries again: unlock or fix the server in the cloud, or delete it there"
            )
        };
        // Each half within the cap of a stored text, so that neither is
        // cut off by it and what was shown compares equal.
        let half = text::MAX_KEPT_TEXT_CHARS / 2;
        let refused = text::cut(&refused, half - DELETE_REFUSED.len());
        let why = |current: &Instance| {
            let reason = current
                .last_error
                .as_deref()
                .map(|e| e.split_once(DELETE_REFUSED).map_or(e, |(reason, _)| reason))
                .unwrap_or("being deleted");
            format!("{}{DELETE_REFUSED}{refused}", text::cut(reason, half))
        };
        let noted = self
            .update_instance(&instance.id, |current| {
                let shown = why(current);
                (matches!(
                    current.state,
                    InstanceState::Deleting | InstanceState::Failed
                ) && current.last_error.as_deref() != Some(shown.as_str()))
                .then(|| {
                    let mut next = current.clone();
                    next.last_error = Some(shown);
                    Some(next)
                })
            })
            .await;
        let shown = match noted {
            Ok(Some(noted)) => noted.last_error.unwrap_or_default(),
            // Shown already, or gone.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(instance = %instance.id, error = %e, "cannot record why the instance's server is not deleted");
                why(instance)
            }
        };
        // A degraded pool's last error says why it is degraded, which is
        // where operators are told to look: the instance shows this one.
        let degraded = self.health_book().health(&instance.pool).degraded;
        if degraded {
            return;
        }
        let at = self.sizing_book().wall_now(&self.settings.sizing);
        let message = format!("instance {}: {shown}", instance.id);
        let _ = self
            .update_pool(&instance.pool, |p| {
                p.last_error = Some(message);
                p.last_error_at = Some(at);
            })
            .await;
    }

    /// Deletes a server and waits until it is gone. Nova shows a delete it
    /// accepted as `deleting` until the compute host is done; a server
    /// that is not, and is still there, had its delete fail on the host,
    /// and is sent it again. So is a SOFT_DELETED one (a cloud with
    /// `reclaim_instance_interval`): it holds the tenant's volume and port
    /// until the reclaim, and the driver makes the delete of a server it
    /// saw soft-deleted a forceDelete. The server is not looked at first:
    /// that would cost every delete on every cloud a call, to spare a
    /// server already SOFT_DELETED that this process has not seen so (a
    /// release asked again after a restart) one plain delete, which Nova
    /// may take as another soft delete (putting the reclaim off) and which
    /// the forceDelete that follows makes moot.
    ///
    /// Where the cloud refuses the forceDelete for good (a policy letting
    /// only an admin force-delete), the server stays SOFT_DELETED until
    /// Nova reclaims it whatever warmpool does, holding its ports:
    /// that is as deleted as it gets, and done, with a warning. Not while
    /// a volume is still attached to it (its detach was refused, or the
    /// server was deleted by hand before a release could detach it, or its
    /// detach is still under way): that is the tenant's, which a release
    /// hands back (kept, to attach elsewhere, or deleted). Nova detaches a
    /// volume from a SOFT_DELETED server (unlike a port), so it is detached
    /// and waited for (see [`Shared::left_soft_deleted`]).
    pub(crate) async fn delete_server_until_gone(
        &self,
        server_id: &str,
        deadline: Instant,
    ) -> ManagerResult<()> {
        let pause = self.settings.poll_interval.min(Duration::from_millis(500));
        // The server as last seen, if SOFT_DELETED with nothing under way.
        let soft = |server: Server| {
            (server.status == ServerStatus::Deleted && !server.deleting).then_some(server)
        };
        let mut soft_deleted = None;
        loop {
            match self
                .retry(deadline, || self.cloud.delete_server(server_id))
                .await
            {
                Ok(()) => {}
                // The driver's word that the cloud takes the server no
                // further; any other failure leaves the delete unfinished.
                Err(CloudError::LeftToReclaim(refused)) => {
                    // Whether it holds a volume: as seen SOFT_DELETED by
                    // the wait below, else (the driver saw it so) looked at.
                    let seen = match soft_deleted {
                        Some(server) => Some(server),
                        None => match self.cloud.read_server(server_id).await {
                            Err(CloudError::NotFound(_)) => {
                                gate::lock(&self.gate).server_freed();
                                return Ok(());
                            }
                            Ok(server) => soft(server),
                            Err(_) => None,
                        },
                    };
                    return match seen {
                        Some(server) => self.left_soft_deleted(&server, &refused, deadline).await,
                        None => Err(CloudError::LeftToReclaim(refused).into()),
                    };
                }
                Err(e) => return Err(e.into()),
            }
            loop {
                if Instant::now() >= deadline {
                    return Err(CloudError::Transient(format!(
                        "server {server_id} is still there after its delete"
                    ))
                    .into());
                }
                tokio::time::sleep(pause).await;
                match self.cloud.read_server(server_id).await {
                    // Its quota is free: a purchase waiting for quota
                    // sees it at its next look, not at the next poll.
                    Err(CloudError::NotFound(_)) => {
                        gate::lock(&self.gate).server_freed();
                        return Ok(());
                    }
                    Ok(server) if !server.deleting => {
                        soft_deleted = soft(server);
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
}

impl Shared {
    /// The end of a delete the cloud takes no further than SOFT_DELETED,
    /// its forceDelete `refused` (see [`Shared::delete_server_until_gone`]):
    /// done once no volume is attached to the server any more. Each one it
    /// still lists is detached from it (Nova's `detach_volume` takes a
    /// SOFT_DELETED server) and waited for in Cinder, within `deadline`:
    /// Nova lists a volume until the compute host has detached it, so one
    /// listed may be on its way already.
    async fn left_soft_deleted(
        &self,
        server: &Server,
        refused: &str,
        deadline: Instant,
    ) -> ManagerResult<()> {
        for volume_id in &server.attached_volumes {
            self.detach_from_soft_deleted(&server.id, volume_id, refused, deadline)
                .await?;
        }
        tracing::warn!(server = %server.id, reason = %refused, "server left SOFT_DELETED: it keeps its ports until Nova reclaims it (Nova's default quota counting frees its instance, cores and RAM at the soft delete)");
        Ok(())
    }

    /// Detaches `volume_id` from SOFT_DELETED `server_id` and waits until
    /// Cinder shows it attached there no more. One `detaching` already is
    /// only waited for; a detach the compute host fails puts the volume
    /// back `in-use`, and it is sent again.
    async fn detach_from_soft_deleted(
        &self,
        server_id: &str,
        volume_id: &str,
        refused: &str,
        deadline: Instant,
    ) -> ManagerResult<()> {
        let pause = self.settings.poll_interval.min(Duration::from_millis(500));
        loop {
            let volume = match self
                .retry(deadline, || self.cloud.get_volume(volume_id))
                .await
            {
                Err(CloudError::NotFound(_)) => return Ok(()),
                other => other?,
            };
            if !volume.attached_to.iter().any(|s| s == server_id) {
                return Ok(());
            }
            if volume.status != VolumeStatus::Detaching {
                match self
                    .retry(deadline, || self.cloud.detach_volume(server_id, volume_id))
                    .await
                {
                    Ok(()) => {}
                    // Nova's answer for the server's state (a task under
                    // way) or the volume's (error_attaching, which only an
                    // admin's reset or the reclaim ends): waiting out the
                    // deadline here would hold up every caller, a release,
                    // a reconcile pass, for nothing it can change.
                    Err(CloudError::Conflict(why)) => {
                        return Err(ManagerError::FailedPrecondition(format!(
                            "volume {volume_id} is still attached to server {server_id}, which stays SOFT_DELETED until Nova reclaims it ({refused}), and Nova refuses to detach it now: {why}. Call again once Nova takes the detach (the reconciler also retries at each pass); Nova's reclaim, or an admin's forceDelete of the server, frees the volume too"
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if Instant::now() >= deadline {
                // Still detaching, which the compute host finishes in the
                // end: the same call again (or the reconciler) sees it done.
                return Err(CloudError::Transient(format!(
                    "volume {volume_id} is not detached yet from server {server_id}, which stays SOFT_DELETED until Nova reclaims it; the detach goes on: call again to see it done (the reconciler also retries at each pass)"
                ))
                .into());
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// Why a Ready instance is retired, judged again when its turn comes.
#[derive(Clone, Copy)]
enum Retirement<'a> {
    /// Outdated, and the fresh supply meets the target without it.
    Replaced(Outdated),
    /// Outdated, and a boot of the pool's image (this instance) became
    /// Ready since the last step and still stands, Ready and unclaimed:
    /// the pool holds its target without the outdated one, counting what
    /// is in flight.
    ReplacementReady(Outdated, &'a str),
    /// Outdated, and the pool's Ready instances are above max_ready.
    OutdatedOverCap(Outdated),
    /// Fresh, and the fresh ones alone are above max_ready.
    FreshOverCap,
    /// Fresh, and the fresh ones have been above the target for a cooldown.
    AboveTarget,
}

/// An instance's driving claim: held by the one task of this process that
/// drives its boot, so that the reconciler starts no second driver for it.
/// It is let go of when dropped, so however the task ends (it returns,
/// panics, is aborted at shutdown, or is never started) the next reconcile
/// pass takes the instance over; a claim left held would keep it Booting
/// or Warming, counted as supply, until a restart.
pub(crate) struct DrivingClaim {
    shared: Arc<Shared>,
    id: String,
}

impl DrivingClaim {
    /// Claims the instance; `None` when a task already drives it.
    pub(crate) fn take(shared: &Arc<Shared>, id: &str) -> Option<Self> {
        let claimed = shared
            .driving
            .lock()
            .expect("driving lock")
            .insert(id.to_owned());
        claimed.then(|| Self {
            shared: shared.clone(),
            id: id.to_owned(),
        })
    }
}

impl Drop for DrivingClaim {
    fn drop(&mut self) {
        self.shared
            .driving
            .lock()
            .expect("driving lock")
            .remove(&self.id);
    }
}

/// Whether a boot task measures its boot's lead time, and where its
/// deadline counts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timed {
    /// The boot starts with the task: measured, its deadline from now.
    FromNow,
    /// Resumed (the reconciler found it left by an earlier manager, or by
    /// a task that died): it started before the task, when exactly is not
    /// known, so it is not measured; its deadline counts from the
    /// instance's creation.
    Not,
}

/// Tells the pool's lead-time estimator that a boot is in flight, and that
/// it ended, exactly once (also when the boot's future is dropped).
struct LeadWatch {
    shared: Arc<Shared>,
    pool: PoolKey,
    instance: String,
    done: bool,
}

impl LeadWatch {
    fn start(shared: &Arc<Shared>, instance: &Instance) -> Self {
        shared.sizing_book().boot_started(
            &instance.pool,
            &instance.id,
            Instant::now(),
            &shared.settings.sizing,
        );
        Self {
            shared: shared.clone(),
            pool: instance.pool.clone(),
            instance: instance.id.clone(),
            done: false,
        }
    }

    fn finish(&mut self, lead: Option<Duration>) {
        if !std::mem::replace(&mut self.done, true) {
            self.shared.sizing_book().boot_finished(
                &self.pool,
                &self.instance,
                lead,
                Instant::now(),
                &self.shared.settings.sizing,
            );
        }
    }
}

impl Drop for LeadWatch {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// The Ready instances a replenish step retires.
#[derive(Clone, Debug)]
struct Retirements {
    /// Every outdated one: the fresh supply meets the target with nothing
    /// left in flight, so the pool never dips for it.
    replaced: bool,
    /// The target `replaced` was judged against, judged again before each
    /// such retirement: purchases may take fresh instances meanwhile.
    target: u32,
    /// The oldest fresh ones beyond `max_ready` (an operator lowered it).
    fresh: u32,
    /// The oldest outdated ones beyond `max_ready`, fresh and outdated
    /// counted together.
    outdated: u32,
    /// The oldest outdated ones, one for each boot of the pool's image that
    /// became Ready since the last step and still stands (these
    /// instances), judged again before each such retirement.
    replacements: Vec<String>,
    /// The oldest fresh ones beyond `keep`, after those beyond `max_ready`.
    above_target: u32,
    /// The fresh ones a lasting surplus leaves ([`SizedFrom::keep`]),
    /// judged again before each such retirement.
    keep: u32,
    /// What `target` and `keep` were sized from, to size them again for
    /// the pool's spec when each retirement's turn comes; `None`: they
    /// stay (a paused pool's step retires nothing for them).
    sized: Option<SizedFrom>,
}

/// The estimates a step sized its pool's target from.
#[derive(Clone, Copy, Debug)]
struct SizedFrom {
    /// D: the demand forecast x the lead time p90.
    demand_in_lead: f64,
    /// Allocations per second the target is sized for.
    forecast: f64,
}

impl SizedFrom {
    /// The target and the fresh Ready instances a lasting surplus keeps,
    /// for `spec` at `wall` (an open window raises the target's floor, one
    /// opening within a cooldown the keep), as a replenish step sizes them.
    fn target_and_keep(
        &self,
        spec: &PoolSpec,
        wall: SystemTime,
        settings: &sizing::SizingSettings,
    ) -> (u32, u32) {
        let target = sizing::target_for(
            spec.min_ready_at(wall),
            spec.max_ready,
            spec.target,
            self.demand_in_lead,
            settings.service_level,
        );
        (target, self.keep(spec, target, wall, settings))
    }

    /// The fresh Ready instances a lasting surplus above `target` keeps at
    /// `wall`: [`sizing::surplus_kept`], and at least the highest floor in
    /// force within a cooldown from `wall` (a window opening then). A
    /// surplus goes once it lasted a cooldown, so that one that comes back
    /// costs no boot; a window opening within the cooldown is such a
    /// comeback, known ahead: what it would boot again is not retired.
    fn keep(
        &self,
        spec: &PoolSpec,
        target: u32,
        wall: SystemTime,
        settings: &sizing::SizingSettings,
    ) -> u32 {
        let kept = sizing::surplus_kept(
            target,
            self.forecast,
            settings.cooldown,
            settings.service_level,
        );
        let floor_ahead = spec
            .min_ready_within(wall, settings.cooldown)
            .min(spec.max_ready);
        kept.max(floor_ahead)
    }
}

/// A pool's untouched instances, counted for a step.
#[derive(Clone, Copy, Debug)]
struct Census {
    /// Booting, warming and fresh Ready instances.
    supply: u32,
    /// Of those, the ones not Ready yet.
    in_flight: u32,
    /// Ready instances due for replacement (not supply).
    outdated: u32,
}

impl Census {
    fn of(instances: &[Instance], renewal: &Renewal<'_>) -> Self {
        let mut census = Census {
            supply: 0,
            in_flight: 0,
            outdated: 0,
        };
        for i in instances.iter().filter(|i| i.counts_as_supply()) {
            if renewal.due(i).is_some() {
                census.outdated += 1;
            } else {
                census.supply += 1;
                if i.state != InstanceState::Ready {
                    census.in_flight += 1;
                }
            }
        }
        census
    }

    fn fresh_ready(&self) -> u32 {
        self.supply - self.in_flight
    }
}

impl Retirements {
    /// What goes for `max_ready`, and for renewal if `replaced`.
    fn over_cap(census: &Census, max_ready: u32, replaced: bool, target: u32) -> Self {
        let fresh_ready = census.fresh_ready();
        Retirements {
            replaced,
            target,
            fresh: fresh_ready.saturating_sub(max_ready),
            outdated: (fresh_ready + census.outdated).saturating_sub(max_ready),
            replacements: Vec::new(),
            above_target: 0,
            keep: target,
            sized: None,
        }
    }

    /// Also one outdated one for each of `replacements` Ready.
    fn replacing(self, replacements: Vec<String>) -> Self {
        Retirements {
            replacements,
            ..self
        }
    }

    /// Judged against the target sized from these estimates, again before
    /// each retirement.
    fn sized_from(self, sized: SizedFrom) -> Self {
        Retirements {
            sized: Some(sized),
            ..self
        }
    }

    /// Also the fresh Ready ones above `keep` (a surplus that lasted).
    fn down_to(self, keep: u32, census: &Census) -> Self {
        Retirements {
            above_target: (census.fresh_ready() - self.fresh).saturating_sub(keep),
            keep,
            ..self
        }
    }
}

/// Why a Ready instance is due for replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outdated {
    /// Ready for the pool's `max_age` or longer.
    Aged,
    /// Booted from an image the pool no longer names: a new image (a
    /// patched MySQL) reaches new tenants without waiting for `max_age`.
    OldImage,
}

/// Judges a pool's Ready instances against its spec: which are outdated.
struct Renewal<'a> {
    max_age: Option<Duration>,
    /// What the pool's servers boot from now ([`crate::cloud::Cloud::boot_image`]).
    image: &'a str,
    now: SystemTime,
}

impl<'a> Renewal<'a> {
    fn new(spec: &crate::model::PoolSpec, image: &'a str, now: SystemTime) -> Self {
        Self {
            max_age: spec.max_age.filter(|d| !d.is_zero()),
            image,
            now,
        }
    }

    /// Whether `instance` stands in for an outdated one of `pool`: Ready,
    /// unclaimed (a purchase's is no replacement), not due itself.
    fn stands_in(&self, instance: &Instance, pool: &PoolKey) -> bool {
        &instance.pool == pool
            && instance.state == InstanceState::Ready
            && instance.request_id.is_none()
            && self.due(instance).is_none()
    }

    /// Why `instance` should be replaced, if it is Ready and should be.
    /// An instance whose image is unknown (recorded before instances kept
    /// it, not yet stamped) is judged by age.
    fn due(&self, instance: &Instance) -> Option<Outdated> {
        if instance.state != InstanceState::Ready {
            return None;
        }
        if instance.is_of_other_image(self.image) {
            return Some(Outdated::OldImage);
        }
        let (max_age, ready_at) = (self.max_age?, instance.ready_at?);
        let age = self.now.duration_since(ready_at).ok()?;
        (age >= max_age).then_some(Outdated::Aged)
    }

    /// The reason a retirement logs and leaves in `last_error`.
    fn reason(&self, instance: &Instance, why: Outdated) -> String {
        match why {
            Outdated::Aged => "older than the pool's max_age".into(),
            Outdated::OldImage => format!(
                "booted from image {}; the pool now boots {}",
                instance.image.as_deref().unwrap_or("?"),
                self.image
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(image: Option<&str>, ready_for: Duration, now: SystemTime) -> Instance {
        Instance {
            id: "i1".into(),
            pool: PoolKey::new("db.small", "az1"),
            server_id: Some("s1".into()),
            state: InstanceState::Ready,
            created_at: now - ready_for,
            ready_at: Some(now - ready_for),
            attempts: 1,
            last_error: None,
            request_id: None,
            mysql_addr: None,
            image: image.map(Into::into),
        }
    }

    #[test]
    fn ready_instances_are_outdated_by_age_or_by_image() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut spec = crate::model::tests::spec();
        spec.max_age = Some(Duration::from_secs(3600));
        let renewal = Renewal::new(&spec, "mysql-8.4", now);
        let minute = Duration::from_secs(60);

        assert_eq!(renewal.due(&ready(Some("mysql-8.4"), minute, now)), None);
        let old = ready(Some("mysql-8.0"), minute, now);
        assert_eq!(renewal.due(&old), Some(Outdated::OldImage));
        assert_eq!(
            renewal.reason(&old, Outdated::OldImage),
            "booted from image mysql-8.0; the pool now boots mysql-8.4"
        );
        let hour = Duration::from_secs(3600);
        assert_eq!(
            renewal.due(&ready(Some("mysql-8.4"), hour, now)),
            Some(Outdated::Aged)
        );
        // Unknown (recorded before instances kept their image): judged by
        // age alone until stamped, so an upgrade does not replace every pool.
        assert_eq!(renewal.due(&ready(None, minute, now)), None);
        assert_eq!(renewal.due(&ready(None, hour, now)), Some(Outdated::Aged));
        // Only Ready instances are judged; a boot of the old image is
        // judged once it is Ready.
        let mut booting = old.clone();
        booting.state = InstanceState::Warming;
        assert_eq!(renewal.due(&booting), None);
    }
}
