//! The reconciler: compares the store with the cloud, at start-up (before
//! the API serves mutations) and periodically. It finishes or rolls back what
//! a crash interrupted, resumes boots, and deletes servers the store does not
//! know. Every action is idempotent: a crash mid-reconcile is repaired by the
//! next pass. A repair the cloud refuses fails that item alone (logged, and
//! tried again by the next pass); the pass goes on to the others.
//!
//! | store says | cloud says | action |
//! |---|---|---|
//! | allocation `Allocating`, no Allocate of this process on it | - | roll back (discard its instance, `Claimed` or already `Allocated`, or a cold boot's `Booting` one, whose server is looked up by its instance id if its create's answer was not flushed; one found with none, within [`LATE_CREATE_GRACE`] of this process's start, is only marked `Deleting` (kept from then, see the next rows), for the `Failed`/`Deleting` row below; delete its port (one its SOFT_DELETED server keeps bound until Nova's reclaim is left to the name's watch instead) and created volume (watched before its delete is sent; one already `deleting` or `error_deleting`, an earlier try's delete accepted, counts as deleted), watch its name if a create may have been on its way or Cinder refuses that volume's delete as `error_attaching`, drop the record) |
//! | allocation `Releasing`, no Release of this process carrying it out | - | finish the release (a Release called meanwhile waits for this one; a volume it deletes is watched before its delete is sent; one already being deleted counts as deleted; a port its SOFT_DELETED server keeps bound until Nova's reclaim is left to the name's watch, written before the order is `Released`) |
//! | a name watched (`TwinWatch`) whose order's release a call of this process is carrying out | - | left to the next pass (the release writes the watch of its volume before the delete) |
//! | a name watched (`TwinWatch`: a create of it may have been done unrecorded, a rollback left its new volume `error_attaching`, a volume of the order was deleted, or a port of it was left bound to a SOFT_DELETED server) | volumes, ports of that name (not listed for a watch of deleted volumes and bound ports alone); each deleted volume, by id; each bound port, by id | delete them but the committed allocation's own and the bound ports, naming each volume whose delete Cinder accepted (now or earlier: `deleting`, `error_deleting`) as deleted; a deleted volume gone (404) is dropped, one `error_deleting` marked stuck (announced by the pass that marks it), one an admin reset deleted again; each bound port is sent one delete, no waiting (Neutron refuses it until Nova's reclaim or an admin's forceDelete unbinds it), and dropped once taken; a refused one is looked at: still bound, asked again next pass; gone, dropped; unbound by now, sent its delete again; a look that fails for good (a 404 for a path Neutron routes nowhere) is logged as a warning naming it; one Neutron cannot answer now (a 5xx, a timeout, a 429) is one try a pass, no delete sent; so is the delete (one failing so, a proxy's 404 or a 413 naming no quota too, leaves the port for the next pass); end the watch once it is over and nothing of the name is left but deleted volumes, all gone, and no bound port (a volume Cinder keeps `error_attaching` fails the item at once, each pass, until an admin resets it; the watch names it as stuck until its delete is accepted) |
//! | instance `Claimed`, allocation `Allocated` naming it | - | mark the instance `Allocated` (left by versions that marked the allocation first) |
//! | instance `Claimed`, allocation `Allocated` naming another, or none live | - | discard it (a claim left over) |
//! | instance `Booting`, no server id | server with its instance id | adopt the server |
//! | instance `Booting`, no server id, no task of this process driving it | none | within [`LATE_CREATE_GRACE`] of this process's start, mark it `Deleting`, its `created_at` now, a note added to its `last_error` (its create, sent before a crash, may land after this listing: see the `Failed`/`Deleting` row); later, drop the record |
//! | instance `Booting`/`Warming`/`Ready` | server gone (or SOFT_DELETED); one missing from the listing is asked for by id first (the listing is older than the instances read after it, and Nova lists no SOFT_DELETED server) | drop the record; a SOFT_DELETED server (deleted by hand on a cloud with `reclaim_instance_interval`) is deleted for good (the driver's forceDelete), as no later pass would see it |
//! | instance `Booting`/`Warming`/`Ready`, unsold, no task of this process driving it | server with a volume attached (only a purchase attaches one, after its claim: sold after this record was written, the store a copy restored from a backup) | drop the record, leave the server (a tenant's), log an error, count it left alone (`unknown_sold`) |
//! | instance `Booting`/`Warming` | server exists | resume the boot task |
//! | instance `Ready`, unclaimed, its pool's record gone (and not set aside as unreadable) | server exists | discard it: no replenisher is left to (one a purchase put back, no attach having reached it, after the drain had deleted the pool, left by a crash or an older version); judged again under the pool lock, so a pool created again under its key meanwhile keeps it |
//! | instance `Ready`, unclaimed | server in ERROR (its host failed) | discard it (the pool refills) |
//! | instance `Ready` | server busy with a task (a task_state other than a delete: a snapshot, a migration, a rebuild) | nothing for that: busy is not broken, the task ends by itself. Not probed while busy (a cold migration or a non-live snapshot takes the guest down), and a silence counted before the task is forgotten: the rows below judge it anew once the task is over. One Nova leaves busy for good (a task_state stuck until an admin resets it) stays Ready until a purchase claims it (Nova refuses the attach, 409: the purchase discards it and takes the next), or `max_age` or an image change retires it |
//! | instance `Ready`, unclaimed | server not busy (ACTIVE, or stopped, shelved, paused by an operator: no task brings mysqld back), mysqld silent on this pass's probe and the last's | discard it (the pool refills) |
//! | instance `Failed`/`Deleting`, no task of this process driving it | - | delete the server, drop the record; one with no server recorded (taken by a drain or a purchase's rollback while its create was on its way, its task ended before the answer: a crash, a stop) first records the server carrying its instance id, if one not on its way out is listed, and deletes it as its own, no leak; with none listed, keeps the record until [`LATE_CREATE_GRACE`] past this process's start or its `created_at` (when it was first kept so) is over, its pool gone or not (a create a crashed process sent may land late: its server is then deleted as the record's, no leak), then drops it only if it still names no server (its task may have recorded one after the listing and ended, its delete refused: the next pass deletes that server as the record's) |
//! | instance `Allocated`/`Releasing`, its order `Released`, or gone and not set aside (a release drops its instance's record first: this one was set aside by an older version that then released the order, and moved back at this version's open) | server gone (or SOFT_DELETED; one missing from the listing is asked for by id first) | drop the record (a SOFT_DELETED server is deleted for good) |
//! | instance `Allocated`/`Releasing`, its order `Released` naming it | server exists | do the release's instance step again: detach the order's volume, delete the server until gone, drop the record |
//! | instance `Allocated`/`Releasing`, its order gone (not set aside) | server exists | leave it, log a warning (a tenant's, its order's record lost) |
//! | nothing | server with warmpool metadata, being deleted (task_state `deleting`, or `soft-deleting`: Nova lists it until the host is done) | leave it: a delete sent before its record was dropped, not a leak |
//! | nothing | server with warmpool metadata, SOFT_DELETED (a cloud with `reclaim_instance_interval`; Nova does not list these, the OpenStack driver's listing adds those it deleted) | delete it for good (the driver's forceDelete), no leak event; where the cloud's policy refuses the forceDelete (403), leave it to Nova's reclaim, logging a warning (the driver forgets it) |
//! | nothing at all: no instance, allocation, twin watch or set-aside record, and no start on it let go on so before (start-up pass only) | pool servers, not being deleted nor SOFT_DELETED | refuse the start before anything is deleted (`ManagerError::UnknownServers`: the wrong store, or another manager's servers under the same tag), unless `delete_unknown_servers` is set: then note in the store that it is meant to be new (flushed first; later starts on it go on without the flag) and go on as below |
//! | a store adopted from another cloud (`adopt_cloud`; start-up pass only, before anything else) | pool servers, not being deleted nor SOFT_DELETED, that no record names (by server id, instance id or an instance set aside) | refuse the start before anything is done, the adoption unrecorded (`ManagerError::UnknownServers`, `adopted`), unless `delete_unknown_servers` is set: then note it as above; with none, or so let go on, record the new cloud (flushed first) and go on as below |
//! | nothing | server with warmpool metadata naming an instance a boot task of this process still drives (its record gone or moved on while its create was on its way, or while the task's delete of it waits out a 429; a drain or a purchase's rollback keeps such a record, `Deleting`, for the task) | leave it: the task deletes it itself; once the task has ended (its delete refused past the cleanup budget, or the task gone), the rows below judge it |
//! | nothing | server with warmpool metadata, no volume attached (read again by id first: the listing is older than the instances read after it, and a server deleted in between, its record then dropped, is listed ACTIVE; gone or going now, it is left) | delete it (leak) |
//! | nothing | server with warmpool metadata and a volume attached (read again by id first, as above) | leave it, log an error (a tenant's, its record lost), count it left alone (`unknown_sold`) |
//! | instance record set aside as unreadable | server naming the instance (a volume attached or not) | leave it, log a warning (a release of its allocation deletes it by the allocation's server id), count it left alone (`set_aside`) |
//! | instance `Claimed`, its allocation's record set aside as unreadable | - | leave it, log a warning, count its server left alone (`set_aside`) |
//! | instance with another server recorded | server naming the instance | delete it (a twin of a retried create), once no boot task of this process drives the instance |
//!
//! The servers left alone ([`LeftAlone`]) are counted by each pass that
//! gets through the sweep of unknown servers, for the metrics: each waits
//! for an operator, which a log line every pass does not get.
//!
//! Allocations are listed once per pass but each is read again right
//! before it is acted on: an Allocate may answer, or a Release finish,
//! while the pass works on an earlier one.
//!
//! Beside the passes, when `ManagerSettings::keep_released` is set, a loop
//! of its own forgets released allocations older than that, hourly (a look
//! at every allocation record is too much for every pass).

use crate::allocator::{LetGoBy, ReleaseTurn};
use crate::cloud::{CloudError, CloudIdentity, Server, ServerStatus, VolumeStatus, META_INSTANCE};
use crate::error::{ManagerError, ManagerResult};
use crate::events::EventKind;
use crate::manager::Shared;
use crate::model::{AllocationState, Instance, InstanceState, PoolKey, TwinWatch};
use crate::replenisher::{DrivingClaim, Timed};
use crate::store::{pool_record_key, RecordKind};
use crate::text;
use std::collections::{HashMap, HashSet};
use std::mem::Discriminant;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Why a reconcile pass leaves alone a pool server it would otherwise
/// delete or repair: each waits for an operator, and every pass finds it
/// again ([`crate::PoolManager::servers_left_alone`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeftAlone {
    /// No record names it, and a tenant's volume is attached: sold, its
    /// order's record lost (a store wiped, or restored from an old copy).
    /// Never deleted as a leak; settle it with billing and delete it by
    /// hand if it is no one's.
    UnknownSold,
    /// Its instance's record, or the record of the order that claimed it,
    /// was set aside as unreadable (`warmpoold store set-aside`): the
    /// version that wrote it may have sold it. It comes back when a
    /// warmpoold that reads the record starts.
    SetAside,
}

impl LeftAlone {
    pub const ALL: [LeftAlone; 2] = [LeftAlone::UnknownSold, LeftAlone::SetAside];

    /// The `reason` label of the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            LeftAlone::UnknownSold => "unknown_sold",
            LeftAlone::SetAside => "set_aside",
        }
    }
}

/// How many Ready instances a reconcile pass probes at once: a pass over
/// a large pool whose mysqlds all time out takes the probe timeout times
/// the pool's size over this, not times its size.
const PROBES_AT_ONCE: usize = 32;

/// How long past a restart a boot's create sent before the crash may still
/// land: a boot whose record names no server and no server carrying its
/// id is listed is kept, `Deleting`, this long (see
/// [`Shared::awaits_late_create`]), so that the server a late create
/// makes is deleted as that boot's own, not taken for a leak (nor, on a
/// store that knew that boot alone, for an unknown server refusing the
/// start). The dead process's create waited at most its request timeout
/// ([`crate::openstack::DEFAULT_REQUEST_TIMEOUT`], 30 s) for an answer,
/// but a request it sent may sit longer in a proxy's or Nova API's queue
/// after it gave up: ten times that covers a load balancer's own request
/// timeout (often 60 s) and a slow API worker. Kept longer costs only a
/// record counted `deleting` (a drain of its pool does not wait for it).
/// It runs from when the record was first kept, by the wall clock (see
/// [`Shared::keep_for_late_create`]), so restarts within it do not start
/// it again.
pub const LATE_CREATE_GRACE: Duration = Duration::from_secs(5 * 60);

/// How often an item every reconcile pass fails the same way is warned of
/// again while it lasts; the passes in between log it at debug.
pub const PASS_FAILURE_REMINDED_EVERY: Duration = Duration::from_secs(3600);

/// What kind of problem failed an item: its error's kind, not its words,
/// which may differ from pass to pass (a retry's wait, a request id).
pub(crate) type Problem = (Discriminant<ManagerError>, Option<Discriminant<CloudError>>);

pub(crate) fn problem_of(e: &ManagerError) -> Problem {
    let cloud = match e {
        ManagerError::Cloud(c) => Some(std::mem::discriminant(c)),
        _ => None,
    };
    (std::mem::discriminant(e), cloud)
}

/// The items reconcile passes failed, and when each was last warned of:
/// one the cloud keeps refusing (a locked server) is warned of once per
/// problem, and reminded of every [`PASS_FAILURE_REMINDED_EVERY`], not at
/// every pass (1,440 lines a day at the default interval).
#[derive(Debug, Default)]
pub(crate) struct PassFailures {
    /// "{doing} {what}" -> the problem, when last warned of, last seen.
    items: HashMap<String, (Problem, Instant, Instant)>,
}

impl PassFailures {
    /// Notes that `item` failed with `problem` at `now`; whether to warn.
    pub(crate) fn failed(&mut self, item: String, problem: Problem, now: Instant) -> bool {
        // An item that stopped failing without succeeding (gone, or
        // repaired some other way) is forgotten a while after: bounded.
        self.items.retain(|_, (_, _, seen)| {
            now.saturating_duration_since(*seen) <= 2 * PASS_FAILURE_REMINDED_EVERY
        });
        match self.items.get_mut(&item) {
            Some((was, warned, seen)) if *was == problem => {
                *seen = now;
                let remind = now.saturating_duration_since(*warned) >= PASS_FAILURE_REMINDED_EVERY;
                if remind {
                    *warned = now;
                }
                remind
            }
            _ => {
                self.items.insert(item, (problem, now, now));
                true
            }
        }
    }

    /// `item` succeeded: failing again is warned of at once.
    pub(crate) fn done(&mut self, item: &str) {
        self.items.remove(item);
    }

    /// Whether `item` failed at the last pass that tried it.
    fn failing(&self, item: &str) -> bool {
        self.items.contains_key(item)
    }
}

impl Shared {
    /// What one item of a pass came to. A cloud that keeps refusing one
    /// repair (a locked server, a volume stuck detaching) fails that item
    /// only: it is logged (warned of once per problem and hourly while it
    /// lasts, [`PassFailures`]) and retried by the next pass, and the pass
    /// goes on, so one stuck item keeps neither the others nor a restart
    /// (whose start-up pass this is too) from being repaired. A failing
    /// store ends the pass.
    fn go_on<T>(
        &self,
        result: ManagerResult<T>,
        doing: &str,
        what: &str,
    ) -> ManagerResult<Option<T>> {
        let item = format!("{doing} {what}");
        match result {
            Ok(done) => {
                self.pass_failures().done(&item);
                Ok(Some(done))
            }
            Err(e @ ManagerError::Store(_)) => Err(e),
            Err(e) => {
                let warn = self
                    .pass_failures()
                    .failed(item, problem_of(&e), Instant::now());
                if warn {
                    tracing::warn!(error = %e, "{doing} {what} failed; the next reconcile pass retries (warned of again hourly while it fails so; each pass's try is logged at debug)");
                } else {
                    tracing::debug!(error = %e, "{doing} {what} failed again; the next reconcile pass retries");
                }
                Ok(None)
            }
        }
    }

    pub(crate) fn pass_failures(&self) -> std::sync::MutexGuard<'_, PassFailures> {
        self.pass_failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key`'s pool record is gone, and not set aside as
    /// unreadable (a pool created again takes the instances of one set
    /// aside back); looked up once per pass, in `seen`.
    async fn pool_gone(
        &self,
        key: &PoolKey,
        seen: &mut HashMap<PoolKey, bool>,
    ) -> ManagerResult<bool> {
        if let Some(&gone) = seen.get(key) {
            return Ok(gone);
        }
        let gone = self.store.get_pool(key).await?.is_none()
            && !self
                .store
                .is_set_aside(RecordKind::Pool, &pool_record_key(key))
                .await?;
        seen.insert(key.clone(), gone);
        Ok(gone)
    }

    /// Discards a Ready, unclaimed instance whose pool is gone, judged
    /// again under the lock a pool's creation takes: a pool created again
    /// under the key since the pass looked takes it as its own.
    async fn discard_orphan(&self, instance: &Instance) -> ManagerResult<()> {
        let deleting = {
            let _guard = self.pool_lock.lock().await;
            if self.store.get_pool(&instance.pool).await?.is_some() {
                return Ok(());
            }
            let deleting = self
                .update_instance(&instance.id, |current| {
                    (current.state == InstanceState::Ready && current.request_id.is_none()).then(
                        || {
                            let mut next = current.clone();
                            next.state = InstanceState::Deleting;
                            next.last_error = Some("pool deleted".into());
                            Some(next)
                        },
                    )
                })
                .await?;
            let Some(deleting) = deleting else {
                return Ok(());
            };
            self.store.flush().await?;
            deleting
        };
        self.finish_delete(&deleting).await
    }

    pub(crate) async fn forget_loop(self: &Arc<Self>) {
        loop {
            tokio::time::sleep(crate::manager::FORGET_EVERY).await;
            match self.forget_released().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    forgotten = n,
                    "forgot allocations released longer than keep_released ago"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot forget old released allocations; the next pass retries")
                }
            }
        }
    }

    /// Drops `Released` allocations older than `keep_released` (by their
    /// release time, or their creation for records from before it was kept).
    /// Only a record still so when read again is dropped (compare-and-swap).
    /// The store lists the ids alone: every order ever made is a record.
    pub(crate) async fn forget_released(&self) -> ManagerResult<usize> {
        let Some(keep) = self.settings.keep_released else {
            return Ok(0);
        };
        let now = self.sizing_book().wall_now(&self.settings.sizing);
        let Some(before) = now.checked_sub(keep) else {
            return Ok(0);
        };
        let mut forgotten = 0;
        for request_id in self.store.list_released_before(before).await? {
            let Some(allocation) = self.store.get_allocation(&request_id).await? else {
                continue;
            };
            if allocation.released_before(before)
                && self.store.cas_allocation(Some(&allocation), None).await?
            {
                forgotten += 1;
            }
        }
        if forgotten > 0 {
            self.store.flush().await?;
        }
        Ok(forgotten)
    }

    pub(crate) async fn reconcile_loop(self: &Arc<Self>) {
        loop {
            tokio::time::sleep(self.settings.reconcile_interval).await;
            // A pass that fails the same way at every pass (a cloud down
            // for an hour, a listing refused) is warned of once per
            // problem and hourly while it lasts, as a pass's items are,
            // not at every pass; and its end is said.
            const PASS: &str = "reconcile pass";
            match self.reconcile_once().await {
                Ok(()) => {
                    let mut failures = self.pass_failures();
                    if failures.failing(PASS) {
                        failures.done(PASS);
                        drop(failures);
                        tracing::info!("reconcile passes succeed again");
                    }
                }
                Err(e) => {
                    let warn =
                        self.pass_failures()
                            .failed(PASS.into(), problem_of(&e), Instant::now());
                    if warn {
                        tracing::warn!(error = %e, "reconcile pass failed; next pass retries (warned of again hourly while it fails so; each pass's failure is logged at debug)");
                    } else {
                        tracing::debug!(error = %e, "reconcile pass failed again; next pass retries");
                    }
                }
            }
        }
    }

    pub(crate) async fn reconcile_once(self: &Arc<Self>) -> ManagerResult<()> {
        self.reconcile_pass(false).await.map(|_| ())
    }

    /// The start-up pass: [`Shared::reconcile_once`], but on a store that
    /// knows no instance and no order, or one adopted from another cloud,
    /// it takes no pool server the cloud lists for a leak unless
    /// `delete_unknown_servers` says so. Whether it did: whether this
    /// start needed the flag.
    pub(crate) async fn reconcile_at_start(self: &Arc<Self>) -> ManagerResult<bool> {
        self.reconcile_pass(true).await
    }

    /// One pass; whether `delete_unknown_servers` let it go on over pool
    /// servers the store has no record of (only ever at start).
    async fn reconcile_pass(self: &Arc<Self>, at_start: bool) -> ManagerResult<bool> {
        let _one_pass = self.reconcile_lock.lock().await;
        let adopting = self.adopting.lock().expect("adopting lock").clone();
        let mut unknown_servers_let_go = false;
        if let Some((adopting, _)) = adopting.filter(|_| at_start) {
            unknown_servers_let_go = self.adopt_cloud_at_start(&adopting).await?;
        }
        // Read before the pass writes anything. Such a store has nothing
        // for the steps before the server listing to do.
        let new_store = at_start && self.store.knows_no_instance_or_order().await?;
        // Allocations first: their rollbacks discard instances the later steps would see.
        // The listing only says which records to look at: finishing one
        // release takes seconds, in which an Allocate listed as in flight
        // may answer and a Release may finish, so each is read again
        // right before acting on it.
        for listed in self.store.list_unfinished_allocations().await? {
            let request_id = listed.params.request_id.as_str();
            match listed.state {
                AllocationState::Allocating => {
                    if let Some(allocation) = self.abandoned_allocation(request_id).await? {
                        // Once: a rollback the cloud refuses is tried at
                        // every pass, and warned of as it fails.
                        let item = format!("rolling back allocation {request_id}");
                        if self.pass_failures().failing(&item) {
                            tracing::debug!(
                                request_id,
                                "rolling back interrupted allocation again"
                            );
                        } else {
                            tracing::warn!(request_id, "rolling back interrupted allocation");
                        }
                        let rolled_back = self.roll_back(&allocation, true).await;
                        self.go_on(rolled_back, "rolling back allocation", request_id)?;
                    }
                }
                AllocationState::Releasing => {
                    // A release another call carries out now (a Release
                    // still under way) is that call's to finish; a Release
                    // called meanwhile waits for this pass's.
                    let Some(_turn) = ReleaseTurn::try_take(self, request_id) else {
                        continue;
                    };
                    if let Some(allocation) = self.store.get_allocation(request_id).await? {
                        if allocation.state == AllocationState::Releasing {
                            let released = self.finish_release(allocation).await;
                            self.go_on(released, "finishing the release of", request_id)?;
                        }
                    }
                }
                _ => {}
            }
        }

        for watch in self.store.list_twin_watches().await? {
            // A release under way writes its order's watch (its volume's,
            // a bound port's) before it deletes what the watch names: the
            // step would find that volume unattached and delete it too.
            // The next pass looks.
            let Some(_turn) = ReleaseTurn::try_take(self, &watch.request_id) else {
                continue;
            };
            let watched = self.watch_for_twins(&watch).await;
            self.go_on(watched, "looking for the twins of", &watch.name)?;
        }

        // Retried like the pass's other calls: at start-up a 503 or a 429
        // here would otherwise stop the daemon.
        let servers: HashMap<String, Server> = self
            .retry(self.cleanup_deadline(), || self.cloud.list_pool_servers())
            .await?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        if new_store {
            let unknown: Vec<&Server> = servers.values().filter(|s| !s.is_going()).collect();
            unknown_servers_let_go |= self.unknown_servers_at_start(&unknown, false).await?;
        }
        let by_instance: HashMap<&str, &Server> = servers
            .values()
            .filter_map(|s| s.metadata.get(META_INSTANCE).map(|id| (id.as_str(), s)))
            .collect();

        let instances = self.store.list_instances().await?;
        let mut to_probe = Vec::new();
        // By pool key: whether the record is gone (not set aside).
        let mut pools_gone: HashMap<PoolKey, bool> = HashMap::new();
        // By server id; published once the sweep of unknown servers is done.
        let mut left_alone = HashMap::new();
        for instance in &instances {
            let driving = self
                .driving
                .lock()
                .expect("driving lock")
                .contains(&instance.id);
            let mut server = instance
                .server_id
                .as_ref()
                .and_then(|id| servers.get(id))
                .cloned();
            let unlisted = instance
                .server_id
                .as_ref()
                .filter(|id| !servers.contains_key(id.as_str()));
            if let Some(id) = unlisted.filter(|_| instance.state.is_supply() && !driving) {
                match self.server_after_all(id).await {
                    Some(found) => server = found,
                    None => continue,
                }
            }
            // A boot whose create's answer never came (a graceful stop
            // aborted it) records no server: its server is the one carrying
            // its id, judged like any other before it is adopted below.
            if instance.state == InstanceState::Booting && instance.server_id.is_none() {
                server = by_instance
                    .get(instance.id.as_str())
                    .map(|&found| found.clone());
            }
            // Unsold, yet its server holds a tenant's volume: only a
            // purchase attaches one, after its claim, so the server was sold
            // after this record was written: the store is a copy restored
            // from a backup. Never sold again nor deleted: forgotten, the
            // server is one no record names, a tenant's, left alone.
            let sold_since = instance.state.is_supply()
                && instance.request_id.is_none()
                && !driving
                && server.as_ref().is_some_and(|s| s.holds_a_tenant_volume());
            if let (true, Some(server)) = (sold_since, &server) {
                tracing::error!(instance = %instance.id, server = %server.id, volumes = ?server.attached_volumes, "the server of an unsold instance has volumes attached: sold after the store was copied (a store restored from a backup)? Forgetting the instance and leaving the server alone; delete it by hand if it is no one's");
                self.update_instance(&instance.id, |current| {
                    (*current == *instance).then_some(None)
                })
                .await?;
                if self.store.get_instance(&instance.id).await?.is_none() {
                    left_alone.insert(server.id.clone(), LeftAlone::UnknownSold);
                }
                continue;
            }
            // A soft-deleted server (SOFT_DELETED), or one being deleted,
            // is as good as gone.
            let server_exists = server.as_ref().is_some_and(|s| !s.is_going());
            let orphaned = instance.state == InstanceState::Ready
                && instance.request_id.is_none()
                && self.pool_gone(&instance.pool, &mut pools_gone).await?;
            match instance.state {
                InstanceState::Booting if instance.server_id.is_none() => {
                    if driving {
                        continue;
                    }
                    match by_instance.get(instance.id.as_str()) {
                        Some(server) => {
                            tracing::info!(instance = %instance.id, server = %server.id, "adopting server created before a crash");
                            if let Some(adopted) =
                                self.adopt_server(&instance.id, &server.id).await?
                            {
                                self.resume_boot(adopted);
                            }
                        }
                        None if self.late_create_may_land() => {
                            self.keep_for_late_create(&instance.id, |current| {
                                *current == *instance
                            })
                            .await?;
                        }
                        None => {
                            self.update_instance(&instance.id, |current| {
                                (*current == *instance).then_some(None)
                            })
                            .await?;
                        }
                    }
                }
                InstanceState::Booting | InstanceState::Warming | InstanceState::Ready
                    if !server_exists =>
                {
                    if driving {
                        continue;
                    }
                    tracing::warn!(instance = %instance.id, server = %instance.server_id.as_deref().unwrap_or("none"), "server vanished from the cloud; forgetting the instance");
                    self.update_instance(&instance.id, |current| {
                        (*current == *instance).then_some(None)
                    })
                    .await?;
                    // Deleted by someone else (an operator) on a cloud that
                    // only soft-deletes: it holds its ports until the
                    // reclaim, and Nova lists it no more, so once its record
                    // is gone nothing would see it again. It was deleted
                    // once already: the driver's forceDelete finishes it.
                    let soft_deleted =
                        server.filter(|s| s.status == ServerStatus::Deleted && !s.deleting);
                    if let Some(soft_deleted) = soft_deleted {
                        self.finish_soft_delete(&soft_deleted.id).await?;
                    }
                }
                InstanceState::Booting | InstanceState::Warming => {
                    if !driving {
                        self.resume_boot(instance.clone());
                    }
                }
                InstanceState::Claimed => {
                    let request = instance.request_id.as_deref().unwrap_or_default();
                    let allocation = self.store.get_allocation(request).await?;
                    // Only the instance its allocation names is the
                    // purchase's: another claimed for it is a claim left
                    // over, no one's, and is discarded below.
                    let names_it = allocation
                        .as_ref()
                        .is_some_and(|a| a.instance_id.as_ref() == Some(&instance.id));
                    match allocation.map(|a| a.state) {
                        Some(AllocationState::Allocated) if names_it => {
                            self.update_instance(&instance.id, |current| {
                                (current.state == InstanceState::Claimed).then(|| {
                                    let mut next = current.clone();
                                    next.state = InstanceState::Allocated;
                                    Some(next)
                                })
                            })
                            .await?;
                        }
                        Some(AllocationState::Allocating) => {} // its Allocate is running now
                        // Its allocation's record was set aside as
                        // unreadable: it may be the tenant's already.
                        None if self
                            .store
                            .is_set_aside(RecordKind::Allocation, request)
                            .await? =>
                        {
                            tracing::warn!(instance = %instance.id, request_id = request, "claimed instance of an allocation set aside as unreadable; left alone");
                            if let Some(server) = &instance.server_id {
                                left_alone.insert(server.clone(), LeftAlone::SetAside);
                            }
                        }
                        _ => {
                            tracing::warn!(instance = %instance.id, request_id = request, "claimed instance without a live allocation; discarding");
                            // Only as listed: the listing may be stale by now.
                            let discarded = self
                                .discard_instance_if(
                                    &instance.id,
                                    "claim without allocation",
                                    |current| {
                                        current.state == InstanceState::Claimed
                                            && current.request_id == instance.request_id
                                    },
                                )
                                .await;
                            self.go_on(discarded, "discarding instance", &instance.id)?;
                        }
                    }
                }
                InstanceState::Failed | InstanceState::Deleting => {
                    let awaiting_late_create = !by_instance.contains_key(instance.id.as_str())
                        && self.awaits_late_create(instance);
                    if awaiting_late_create {
                        tracing::debug!(instance = %instance.id, "no server yet for a boot whose create may land late; kept until its grace is over");
                    } else if !driving {
                        let deleted = self
                            .finish_delete_found(instance, by_instance.get(instance.id.as_str()))
                            .await;
                        self.go_on(deleted, "deleting instance", &instance.id)?;
                    }
                }
                // Its pool was drained and deleted without it (put back by
                // a purchase the drain left it to, before a crash or by a
                // version that did not look): no replenisher is left to take it.
                InstanceState::Ready if orphaned => {
                    tracing::warn!(instance = %instance.id, pool = %instance.pool, server = %instance.server_id.as_deref().unwrap_or("none"), "Ready instance of a pool that is gone; discarding it");
                    let discarded = self.discard_orphan(instance).await;
                    self.go_on(discarded, "discarding instance", &instance.id)?;
                }
                // Its host failed: replace it now rather than when a
                // purchase finds it. Only while it is still unclaimed.
                InstanceState::Ready
                    if instance.request_id.is_none()
                        && instance
                            .server_id
                            .as_ref()
                            .and_then(|id| servers.get(id))
                            .is_some_and(|s| s.status == ServerStatus::Error) =>
                {
                    tracing::warn!(instance = %instance.id, server = %instance.server_id.as_deref().unwrap_or("none"), "Ready instance's server is in ERROR; replacing it");
                    let discarded = self
                        .discard_instance_if(&instance.id, "server in ERROR", |current| {
                            current.state == InstanceState::Ready && current.request_id.is_none()
                        })
                        .await;
                    self.go_on(discarded, "discarding instance", &instance.id)?;
                }
                // Busy is not broken: a task that takes the guest down (a
                // cold migration, a non-live snapshot, a rebuild) silences
                // mysqld until it ends by itself. Not probed meanwhile, its
                // silence from before forgotten with it: judged from
                // scratch once the task is over.
                InstanceState::Ready => {
                    let busy = server.as_ref().is_some_and(|s| s.busy.is_some());
                    if instance.request_id.is_none() && !busy {
                        to_probe.push(instance);
                    }
                }
                InstanceState::Allocated | InstanceState::Releasing => {
                    let settled = self.settle_sold(instance, server).await;
                    self.go_on(settled, "settling the sold instance", &instance.id)?;
                }
            }
        }
        self.recheck_ready(to_probe).await?;

        let known_servers: HashSet<&str> = instances
            .iter()
            .filter_map(|i| i.server_id.as_deref())
            .collect();
        // A server naming an instance is that instance's only while the
        // instance has none recorded (its create's answer is on the way, or
        // adoption above takes it). Once it has one, another server naming
        // it is a twin: a create retried after a lost answer that took
        // effect late.
        let awaiting_server: HashSet<&str> = instances
            .iter()
            .filter(|i| i.server_id.is_none())
            .map(|i| i.id.as_str())
            .collect();
        let last_pass = self.left_alone.lock().expect("left-alone lock").clone();
        for listed in servers.values() {
            let owned = known_servers.contains(listed.id.as_str())
                || listed
                    .metadata
                    .get(META_INSTANCE)
                    .is_some_and(|id| awaiting_server.contains(id.as_str()));
            if owned || self.leave_going(listed).await? {
                continue;
            }
            // Made by a create still in flight (or being deleted through a
            // 429's pause) for an instance a drain or a purchase's rollback
            // dropped meanwhile: its boot task, which still holds the
            // claim, deletes it; taken here it would be a false leak
            // alert. Looked at before the server is read again below: a
            // task whose claim is gone by now sent its delete before that
            // read, which then finds the server going, and one that could
            // not (or died) leaves a leak that this read finds as it is.
            // A twin of a boot still driven waits for the boot's end too.
            let driven = listed.metadata.get(META_INSTANCE).is_some_and(|id| {
                self.driving
                    .lock()
                    .expect("driving lock")
                    .contains(id.as_str())
            });
            if driven {
                tracing::debug!(server = %listed.id, name = %listed.name, "a pool server no record names is still its boot task's to delete; left to it");
                continue;
            }
            // Judged on the server as it is now, not as listed: the listing
            // is older than the instances read after it, and a server
            // deleted in between (a retirement, a drain, a release), its
            // record then dropped, is listed as it was, ACTIVE and maybe
            // holding the tenant's volume, with no record naming it. Only
            // the servers about to be called leaks (rare) are read again.
            let server = match self.server_after_all(&listed.id).await {
                Some(Some(server)) => server,
                Some(None) => continue,
                // Unread this time: still left alone as the last pass found it.
                None => {
                    if let Some(&why) = last_pass.get(&listed.id) {
                        left_alone.insert(listed.id.clone(), why);
                    }
                    continue;
                }
            };
            if self.leave_going(&server).await? {
                continue;
            }
            // Before the volume: its record exists, set aside, not lost.
            let instance = server.metadata.get(META_INSTANCE);
            if let Some(id) = instance {
                if self.store.is_set_aside(RecordKind::Instance, id).await? {
                    tracing::warn!(server = %server.id, instance = %id, "the server of an instance whose record was set aside as unreadable; left alone");
                    left_alone.insert(server.id.clone(), LeftAlone::SetAside);
                    continue;
                }
            }
            if server.holds_a_tenant_volume() {
                // Only a purchase attaches a volume to a pool server, and a
                // purchase is recorded before it: the store has lost its
                // record (wiped, restored from an old copy). A tenant's
                // database is never deleted as a leak.
                tracing::error!(server = %server.id, name = %server.name, volumes = ?server.attached_volumes, "a pool server the store does not know has volumes attached: a tenant's database whose record was lost? Left alone; delete it by hand if it is no one's");
                left_alone.insert(server.id.clone(), LeftAlone::UnknownSold);
                continue;
            }
            // The LeakDeleted event logs it once done.
            tracing::debug!(server = %server.id, name = %server.name, "deleting leaked server");
            let deleted = self.cloud.delete_server(&server.id).await;
            if self
                .go_on(
                    deleted.map_err(Into::into),
                    "deleting leaked server",
                    &server.id,
                )?
                .is_none()
            {
                continue;
            }
            self.watch_until_freed(&server.id);
            let pool = self
                .store
                .list_pools()
                .await?
                .into_iter()
                .map(|p| p.key)
                .find(|k| server.metadata.get(crate::cloud::META_POOL) == Some(&k.to_string()));
            self.emit(
                pool.as_ref(),
                crate::events::EventKind::LeakDeleted {
                    server_id: server.id.clone(),
                },
            );
        }
        *self.left_alone.lock().expect("left-alone lock") = left_alone;
        self.store.flush().await?;
        Ok(unknown_servers_let_go)
    }

    /// On a store that knows no instance and no order, every pool server
    /// the cloud lists (but those on their way out) would be a leak: the
    /// store is more likely the wrong one (a mistyped or relative data dir,
    /// an unmounted volume's empty mount point, a store wiped after
    /// corruption) or another manager's servers share the tag than every
    /// server leaked. So would every one a store adopted from another
    /// cloud has no record of (`adopted`). `unknown` are those servers.
    /// Refused before anything is deleted, unless
    /// `delete_unknown_servers` says they are meant to go: then
    /// the store notes so, flushed before anything is deleted, and later
    /// starts on it go on without the flag (this start may write nothing
    /// else: sold servers left alone, pools at target 0 or paused, a crash
    /// mid-pass). Whether the flag let it go on: none of `unknown`, none
    /// needed.
    async fn unknown_servers_at_start(
        &self,
        unknown: &[&Server],
        adopted: bool,
    ) -> ManagerResult<bool> {
        if unknown.is_empty() {
            return Ok(false);
        }
        let sold = unknown.iter().filter(|s| s.holds_a_tenant_volume()).count();
        if !self.settings.delete_unknown_servers {
            return Err(ManagerError::UnknownServers {
                servers: unknown.len(),
                sold,
                adopted,
            });
        }
        let unsold = unknown.len() - sold;
        if adopted {
            tracing::warn!(
                unsold,
                sold,
                "the store adopted from another cloud has no record of pool servers this cloud lists: as delete_unknown_servers asks, the unsold ones are deleted as leaks; the sold ones are left alone"
            );
        } else {
            tracing::warn!(
                unsold,
                sold,
                "the store knows no pool server and no order: as delete_unknown_servers asks, the unsold pool servers the cloud lists are deleted as leaks; the sold ones are left alone"
            );
        }
        let now = self.sizing_book().wall_now(&self.settings.sizing);
        self.store.note_unknown_servers_accepted(now).await?;
        self.store.flush().await?;
        Ok(true)
    }

    /// A store adopted from another cloud (`ManagerSettings::adopt_cloud`)
    /// has records of none of this cloud's servers (a renamed tag's too:
    /// the store's own keep the old tag and are not listed under the new
    /// one), so the pool servers listed here that it has no record of are
    /// judged as a new store's are ([`Shared::unknown_servers_at_start`]),
    /// before the pass does anything else. Then, and only then, `current`
    /// is recorded as the store's cloud, flushed before the pass goes on:
    /// a refused adoption leaves the store the other cloud's, so a later
    /// start without the flag is refused again rather than deleting them.
    /// Whether `delete_unknown_servers` let it go on over such servers.
    async fn adopt_cloud_at_start(&self, current: &CloudIdentity) -> ManagerResult<bool> {
        let servers = self
            .retry(self.cleanup_deadline(), || self.cloud.list_pool_servers())
            .await?;
        let instances = self.store.list_instances().await?;
        let known_servers: HashSet<&str> = instances
            .iter()
            .filter_map(|i| i.server_id.as_deref())
            .collect();
        let known_instances: HashSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
        let mut unknown = Vec::new();
        for server in &servers {
            if server.is_going() || known_servers.contains(server.id.as_str()) {
                continue;
            }
            // Its instance's (awaiting its server id, or a twin), or one
            // set aside as unreadable: the store has a record of it.
            if let Some(id) = server.metadata.get(META_INSTANCE) {
                if known_instances.contains(id.as_str())
                    || self.store.is_set_aside(RecordKind::Instance, id).await?
                {
                    continue;
                }
            }
            unknown.push(server);
        }
        let let_go = self.unknown_servers_at_start(&unknown, true).await?;
        self.store.record_cloud_identity(current).await?;
        self.store.flush().await?;
        *self.adopting.lock().expect("adopting lock") = None;
        tracing::info!(cloud = %current, "the store serves {current} from now on");
        Ok(let_go)
    }

    /// A sold instance (`Allocated`, `Releasing`) whose order is no longer
    /// live: `Released`, or gone (not set aside). A release drops its
    /// instance's record before it marks the order `Released`, so such a
    /// record came back from elsewhere: an older warmpoold set it aside as
    /// unreadable and released the order meanwhile (deleting the server
    /// the order recorded), and this version's open moved it back. Nothing
    /// else looks at it again: it would stay sold, counted in its pool, for
    /// good. Its server gone, the record is forgotten; still there, an
    /// order `Released` naming it has its release's instance step done
    /// again (the tenant is done with it), and one without its order is
    /// left alone (a tenant's, its order's record lost). A live order's
    /// instance is its own, its server its tenant's: the order's release
    /// deletes it (this pass's, above, for one `Releasing`).
    async fn settle_sold(&self, instance: &Instance, listed: Option<Server>) -> ManagerResult<()> {
        let request_id = instance.request_id.as_deref().unwrap_or_default();
        let released = match self.store.get_allocation(request_id).await? {
            Some(allocation) if allocation.state != AllocationState::Released => return Ok(()),
            Some(allocation) => Some(allocation),
            None if self
                .store
                .is_set_aside(RecordKind::Allocation, request_id)
                .await? =>
            {
                return Ok(())
            }
            None => None,
        };
        // As listed still: a release that ended since the listing (its
        // instance dropped, then its order Released) left nothing to settle
        // nor to warn of.
        if self.store.get_instance(&instance.id).await?.as_ref() != Some(instance) {
            return Ok(());
        }
        let server = match (listed, &instance.server_id) {
            (Some(server), _) => Some(server),
            (None, None) => None,
            (None, Some(id)) => match self.server_after_all(id).await {
                Some(found) => found,
                None => return Ok(()),
            },
        };
        if server.as_ref().is_none_or(|s| s.is_going()) {
            tracing::warn!(instance = %instance.id, request_id, server = %instance.server_id.as_deref().unwrap_or("none"), "sold instance whose order is released or gone, its server gone too; forgetting the instance");
            self.update_instance(&instance.id, |current| {
                (*current == *instance).then_some(None)
            })
            .await?;
            let soft_deleted = server.filter(|s| s.status == ServerStatus::Deleted && !s.deleting);
            if let Some(soft_deleted) = soft_deleted {
                self.finish_soft_delete(&soft_deleted.id).await?;
            }
            return Ok(());
        }
        match released {
            // As listed still: a release that ended since the listing
            // (its instance dropped, then the order Released) left nothing.
            Some(allocation)
                if allocation.instance_id.as_ref() == Some(&instance.id)
                    && allocation.server_id == instance.server_id
                    && self.store.get_instance(&instance.id).await?.as_ref() == Some(instance) =>
            {
                tracing::warn!(instance = %instance.id, request_id, server = %instance.server_id.as_deref().unwrap_or("none"), "the server of a released order is still there; deleting it as its release does");
                let deadline = self.cleanup_deadline();
                self.release_instance(&allocation, &instance.id, deadline)
                    .await
            }
            _ => {
                tracing::warn!(instance = %instance.id, request_id, server = %instance.server_id.as_deref().unwrap_or("none"), "sold instance whose order's record is gone (or names another instance), its server still there; left alone");
                Ok(())
            }
        }
    }

    /// A server read by id, the pass's listing being older than the
    /// instances read after it: one missing from it may have been created
    /// by a boot gone Ready in between (and Nova lists no SOFT_DELETED
    /// server), and one no record names may have been deleted in between.
    /// `Some(None)`: gone; `None`: the cloud could not say, and the server
    /// is left to the next pass.
    async fn server_after_all(&self, server_id: &str) -> Option<Option<Server>> {
        match self.cloud.read_server(server_id).await {
            Ok(server) => Some(Some(server)),
            Err(CloudError::NotFound(_)) => Some(None),
            Err(e) => {
                tracing::warn!(server = server_id, error = %e, "cannot tell whether a pool server is still there; the next reconcile pass looks again");
                None
            }
        }
    }

    /// Whether a pool server no record names is on its way out, so that it
    /// is no leak: being deleted, or SOFT_DELETED (whose delete is finished
    /// here).
    async fn leave_going(&self, server: &Server) -> ManagerResult<bool> {
        if server.deleting {
            // Nova lists a server until its delete is done: most often one
            // warmpool deleted a moment ago and then forgot (a discard, a
            // retirement, this pass's rollback). If Nova's delete fails,
            // the server leaves `deleting` and a later pass deletes it.
            tracing::debug!(server = %server.id, name = %server.name, "a pool server the store does not know is being deleted");
            return Ok(true);
        }
        if server.status == ServerStatus::Deleted {
            // Soft-deleted (a cloud with Nova's reclaim_instance_interval
            // set), by warmpool or by hand: it keeps its ports until the
            // reclaim, so the delete is finished now. No leak: it was
            // deleted once already.
            self.finish_soft_delete(&server.id).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Deletes for good a SOFT_DELETED server no record keeps: the
    /// OpenStack driver sends it a forceDelete, and until the cloud says it
    /// is gone, reads it by id at each listing, though Nova lists it no
    /// more. A failure is logged and left to the next pass; a forceDelete
    /// the cloud refuses for good (a policy letting only an admin do it)
    /// leaves the server to Nova's reclaim, and the driver forgets it.
    async fn finish_soft_delete(&self, server_id: &str) -> ManagerResult<()> {
        tracing::debug!(
            server = server_id,
            "finishing the delete of a soft-deleted server"
        );
        match self.cloud.delete_server(server_id).await {
            Err(CloudError::LeftToReclaim(refused)) => {
                tracing::warn!(server = server_id, reason = %refused, "soft-deleted server left to Nova's reclaim");
            }
            deleted => {
                if self
                    .go_on(
                        deleted.map_err(Into::into),
                        "deleting soft-deleted server",
                        server_id,
                    )?
                    .is_some()
                {
                    self.watch_until_freed(server_id);
                }
            }
        }
        Ok(())
    }

    /// Finishes the delete of a `Failed` or `Deleting` instance no task
    /// drives. One with no server recorded was taken from its boot while
    /// the create was on its way (a drain, a purchase's rollback), and
    /// that boot's task ended before the answer (a crash, a stop): the
    /// server its create made, `found` by the instance's id, is recorded
    /// and deleted as the instance's, not swept later as a leak. One
    /// already on its way out needs no delete: the record just goes.
    async fn finish_delete_found(
        &self,
        instance: &Instance,
        found: Option<&&Server>,
    ) -> ManagerResult<()> {
        let found = found.filter(|s| instance.server_id.is_none() && !s.is_going());
        let Some(server) = found else {
            return self.finish_delete(instance).await;
        };
        tracing::info!(instance = %instance.id, server = %server.id, "deleting the server a create made for an instance taken while the create was on its way");
        match self.adopt_server(&instance.id, &server.id).await? {
            Some(adopted) => self.finish_delete(&adopted).await,
            // Moved on since the listing (another pass): its own now.
            None => Ok(()),
        }
    }

    /// Whether a create the process before this one sent may still land
    /// (see [`LATE_CREATE_GRACE`]).
    pub(crate) fn late_create_may_land(&self) -> bool {
        self.started.elapsed() < LATE_CREATE_GRACE
    }

    /// Whether `instance`, naming no server, is kept for a create that may
    /// land late: within [`LATE_CREATE_GRACE`] of this process's start and
    /// of its `created_at` ([`Self::keep_for_late_create`] sets that to
    /// when it was kept, so a crash loop does not keep it for ever).
    pub(crate) fn awaits_late_create(&self, instance: &Instance) -> bool {
        if instance.server_id.is_some() || !self.late_create_may_land() {
            return false;
        }
        let wall = self.sizing_book().wall_now(&self.settings.sizing);
        // Created "after" now, the wall clock stepped back: still within.
        wall.duration_since(instance.created_at)
            .map_or(true, |since| since < LATE_CREATE_GRACE)
    }

    /// Marks `Deleting` a boot that names no server and that no task of
    /// this process drives, found after a restart with no server carrying
    /// its id (while `still` holds of the stored record): its create may
    /// have been sent before the crash and land yet. Dropped, the record
    /// would leave that server to be taken for a leak (or, on a store
    /// that knew that boot alone, for an unknown server refusing the
    /// start); kept so, the passes delete the server as the boot's own if
    /// it shows, and drop the record once [`LATE_CREATE_GRACE`] past the
    /// keeping is over if none does. The keeping's wall-clock time replaces
    /// the record's `created_at`, which later processes count the grace
    /// from (a crash loop would otherwise keep it for ever); its
    /// `last_error`, the boot's own diagnosis, is kept with a note added.
    pub(crate) async fn keep_for_late_create(
        &self,
        instance_id: &str,
        still: impl Fn(&Instance) -> bool,
    ) -> ManagerResult<()> {
        const NOTE: &str = "a restart found no server of its create, which may land late";
        let kept_at = self.sizing_book().wall_now(&self.settings.sizing);
        let kept = self
            .update_instance(instance_id, |current| {
                (current.state != InstanceState::Deleting
                    && current.server_id.is_none()
                    && still(current))
                .then(|| {
                    let mut next = current.clone();
                    next.state = InstanceState::Deleting;
                    next.created_at = kept_at;
                    next.last_error = Some(match &current.last_error {
                        Some(own) => format!(
                            "{}; {NOTE}",
                            text::cut(own, text::MAX_KEPT_TEXT_CHARS - NOTE.len() - 2)
                        ),
                        None => NOTE.into(),
                    });
                    Some(next)
                })
            })
            .await?;
        if kept.is_some() {
            tracing::info!(instance = %instance_id, "a boot a crash interrupted before its create's answer: its server may land late; kept, Deleting, to delete it as the boot's own if it does");
        }
        Ok(())
    }

    /// Records `server_id` as the server of an instance that has none
    /// recorded: a create Nova answered whose id a crash kept from the
    /// record. `None` if the record has one by now (or is gone).
    pub(crate) async fn adopt_server(
        &self,
        instance_id: &str,
        server_id: &str,
    ) -> ManagerResult<Option<Instance>> {
        self.update_instance(instance_id, |current| {
            current.server_id.is_none().then(|| {
                let mut next = current.clone();
                next.server_id = Some(server_id.to_owned());
                Some(next)
            })
        })
        .await
    }

    /// Probes unclaimed Ready instances (their servers exist, are not in
    /// ERROR and are not busy with a task), a bounded number at once: mysqld may have died since an
    /// instance went Ready. One silent on this pass and the last is
    /// discarded, so the pool refills and its depth counts only databases
    /// that answer; one silent pass is let be (mysqld restarting, a lost
    /// packet). A purchase probes what it claims anyway, and puts back one
    /// silent then, for the passes to judge: its look counts as none of
    /// theirs (a probe failing on warmpoold's side would make every mysqld
    /// look dead at once).
    async fn recheck_ready(&self, ready: Vec<&Instance>) -> ManagerResult<()> {
        let mut silent_now = Vec::new();
        for some in ready.chunks(PROBES_AT_ONCE) {
            let answers = futures::future::join_all(some.iter().map(|i| self.silence_of(i))).await;
            silent_now.extend(
                some.iter()
                    .zip(answers)
                    .filter_map(|(instance, silence)| Some((*instance, silence?))),
            );
        }
        let silent_before = std::mem::replace(
            &mut *self.silent_ready.lock().expect("silent-ready lock"),
            silent_now.iter().map(|(i, _)| i.id.clone()).collect(),
        );
        let silent_at_claim =
            std::mem::take(&mut *self.silent_at_claim.lock().expect("silent-at-claim lock"));
        // A purchase does not claim again what it found silent while it
        // is counted so (`claim_ready`): one waiting looks again once this
        // pass has heard such an instance, which writes nothing to the
        // store.
        if silent_before
            .iter()
            .chain(&silent_at_claim)
            .any(|id| !silent_now.iter().any(|(i, _)| &i.id == id))
        {
            self.changed();
        }
        for (instance, reason) in silent_now {
            if !silent_before.contains(&instance.id) {
                tracing::info!(instance = %instance.id, server = %instance.server_id.as_deref().unwrap_or("none"), pool = %instance.pool, %reason, "Ready instance's mysqld did not answer; replaced if still silent on the next pass");
                continue;
            }
            tracing::warn!(instance = %instance.id, server = %instance.server_id.as_deref().unwrap_or("none"), pool = %instance.pool, %reason, "Ready instance's mysqld silent on two passes; replacing it");
            let discarded = self
                .discard_instance_if(
                    &instance.id,
                    &format!("mysqld stopped answering: {reason}"),
                    |current| current.state == InstanceState::Ready && current.request_id.is_none(),
                )
                .await;
            self.go_on(discarded, "discarding instance", &instance.id)?;
        }
        Ok(())
    }

    fn resume_boot(self: &Arc<Self>, instance: Instance) {
        let Some(claim) = DrivingClaim::take(self, &instance.id) else {
            return;
        };
        let shared = self.clone();
        self.spawn(async move {
            let _ = shared.drive_boot(instance, claim, Timed::Not).await;
        });
    }

    /// The request's record, if it is `Allocating` and no Allocate in this
    /// process works on it. An Allocate is in flight from before it writes
    /// the record until the record has left `Allocating`, so a record read
    /// between two looks that both find the request idle is no live
    /// Allocate's: one would have had to start and answer in between. Looking
    /// only after the read misses an Allocate that answered in between;
    /// looking only before it, one that wrote its record in between.
    async fn abandoned_allocation(
        &self,
        request_id: &str,
    ) -> ManagerResult<Option<crate::model::Allocation>> {
        if self.is_in_flight(request_id) {
            return Ok(None);
        }
        let current = self.store.get_allocation(request_id).await?;
        Ok(current
            .filter(|a| a.state == AllocationState::Allocating && !self.is_in_flight(request_id)))
    }

    /// Deletes whatever carries a watched name but what the watch keeps,
    /// follows up every volume of it whose delete Cinder accepted and every
    /// port left bound to a SOFT_DELETED server, and ends the watch once it
    /// is over (after that last look) and those volumes and ports are
    /// gone. A look that fails keeps the watch, past its end too: it
    /// may hold the only record of a volume a rollback could not delete
    /// (`error_attaching`), or whose delete Cinder's backend failed
    /// (`error_deleting`); that failure is warned of by
    /// [`Shared::delete_twins`], not returned.
    async fn watch_for_twins(&self, watch: &TwinWatch) -> ManagerResult<()> {
        let now = self.sizing_book().wall_now(&self.settings.sizing);
        let mut next = watch.clone();
        let mut all_deleted = Ok(());
        if watch.lists_by_name() {
            let left;
            (left, all_deleted) = self.delete_twins(watch, self.cleanup_deadline()).await;
            let going = &left.going_volumes;
            // Deleted or gone, the stuck volume among them: no longer
            // stuck, nor counted so; one deleted is followed up below, as
            // every volume whose delete was accepted, until it is gone (an
            // admin's reset comes hours after the watch's end, and Cinder's
            // backend may fail that delete too). So are those deleted
            // while another twin could not be (the stuck volume, still
            // refused), which keeps the watch.
            let stuck_going = next
                .stuck_volume
                .as_ref()
                .is_some_and(|v| going.contains(v));
            if all_deleted.is_ok() || stuck_going {
                next.stuck_volume = None;
            }
            // And a failed try's port a SOFT_DELETED server keeps bound,
            // should no watch name it yet: by id from now on.
            left.follow_in(&mut next);
        }
        let (mut stuck, mut gone) = (Vec::new(), Vec::new());
        for deleted in &mut next.deleted_volumes {
            // Retried like the pass's other calls: a pass looks at the
            // volume of every release since the last pass, often more
            // than the cloud's burst of calls. A 429 left to the next pass
            // kept the watch, and the watches piled up.
            let looked = self
                .retry(self.cleanup_deadline(), || {
                    self.cloud.get_volume(&deleted.id)
                })
                .await;
            match looked {
                Err(CloudError::NotFound(_)) => gone.push(deleted.id.clone()),
                Err(e) => return Err(e.into()),
                Ok(v) if v.status.is_error_deleting() => {
                    if !deleted.stuck {
                        stuck.push(deleted.id.clone());
                    }
                    deleted.stuck = true;
                }
                Ok(v) => {
                    // An admin reset it, or the delete was never sent (the
                    // watch is written first): delete it. Or still being
                    // deleted, which may take minutes, or still detaching:
                    // look again next pass.
                    if v.status == VolumeStatus::Available && v.attached_to.is_empty() {
                        let deadline = self.cleanup_deadline();
                        self.delete_volume_when_free(&deleted.id, LetGoBy::AnyServer, deadline)
                            .await?;
                    }
                    deleted.stuck = false;
                }
            }
        }
        next.deleted_volumes.retain(|d| !gone.contains(&d.id));
        // Ports a SOFT_DELETED server keeps bound, each refused its delete
        // once already (the release's, the rollback's, the try's): Neutron
        // refuses a member that delete until Nova's reclaim (or an admin's
        // forceDelete) unbinds the port, maybe days on. Each pass looks at
        // the port, and deletes it once unbound: a delete sent at every
        // pass was refused at every pass, a warning and a `fatal` call
        // each, 60 an hour at the default interval.
        let mut freed = Vec::new();
        for port_id in &next.bound_ports {
            // One key per call, paced apart: under one key a read failing
            // for now (warned of) then, a pass on, the delete failing the
            // same way (both Transient) left the delete's failure at debug
            // for an hour, the only warning about a read since answered.
            let item = format!("deleting port {port_id}, which a SOFT_DELETED server kept bound,");
            let reading =
                format!("reading port {port_id}, which a SOFT_DELETED server kept bound,");
            let reading_server =
                format!("reading the server holding port {port_id}, which a SOFT_DELETED server kept bound,");
            // One look a pass, not retried, as the read of the server
            // below and the delete: a look retried until the cleanup
            // deadline (then the delete too) held the pass, and the
            // Releases behind its lock, minutes per waiting port while
            // Neutron was down.
            let looked = self.cloud.get_port(port_id).await;
            if !matches!(&looked, Err(e) if e.is_retryable()) {
                self.pass_failures().done(&reading);
            }
            // `Some`: the look failed for good, which says nothing of the
            // binding; the delete is sent anyway, and its refusal warned of
            // with the look's error (the one to mend, a wrong endpoint's 404).
            let unlooked = match looked {
                // Neutron down or throttling: the delete would fail so
                // too, after its own retries. The port waits for the
                // next pass, no delete sent.
                Err(e) if e.is_retryable() => {
                    let warn = self.pass_failures().failed(
                        reading,
                        problem_of(&e.clone().into()),
                        Instant::now(),
                    );
                    if warn {
                        tracing::warn!(name = %watch.name, port = %port_id, error = %e, "cannot tell whether port {port_id}, which a SOFT_DELETED server kept bound, is free to delete: Neutron's read of it fails; the port stays until it answers (the next pass asks again; warned of again hourly while it fails)");
                    } else {
                        tracing::debug!(name = %watch.name, port = %port_id, error = %e, "Neutron's read of a port a SOFT_DELETED server kept bound fails again; the next pass asks again");
                    }
                    continue;
                }
                Err(CloudError::NotFound(_)) => {
                    tracing::info!(name = %watch.name, port = %port_id, "the port a SOFT_DELETED server kept bound is gone already");
                    self.pass_failures().done(&item);
                    self.pass_failures().done(&reading_server);
                    freed.push(port_id.clone());
                    continue;
                }
                // A device_id can outlive its server (Nova's reclaim
                // failing to clear it, an admin's forceDelete while Neutron
                // was down): taken for a binding, the port would wait for
                // ever, no delete sent, nothing said above debug. Nova's
                // 404 for the server says it is gone for good (a 404 for a
                // path routed nowhere is Fatal, not NotFound): the delete
                // is sent as for an unbound port.
                //
                // One read a pass, not retried: a port waits days, and a
                // read retried until the cleanup deadline held the pass
                // (and the Releases behind its lock) minutes per port
                // while Nova was down.
                Ok(port) if port.device_id.is_some() => {
                    let server = port.device_id.as_deref().unwrap_or_default();
                    let read = self.cloud.read_server(server).await;
                    if read.is_ok() || matches!(read, Err(CloudError::NotFound(_))) {
                        self.pass_failures().done(&reading_server);
                    }
                    match read {
                        Err(CloudError::NotFound(_)) => {
                            tracing::debug!(name = %watch.name, port = %port_id, server, "a port left bound to a SOFT_DELETED server names a server Nova no longer has; deleting it");
                            None
                        }
                        // Neutron shows the port bound, and refuses its
                        // delete while it is: none is sent until Nova
                        // says the server is gone.
                        Err(e) => {
                            let warn = self.pass_failures().failed(
                                reading_server,
                                problem_of(&e.clone().into()),
                                Instant::now(),
                            );
                            if warn {
                                tracing::warn!(name = %watch.name, port = %port_id, server, error = %e, "cannot tell whether the SOFT_DELETED server holding port {port_id} is gone: Nova's read of it fails; the port stays until it answers (the next pass asks again; warned of again hourly while it fails)");
                            } else {
                                tracing::debug!(name = %watch.name, port = %port_id, server, error = %e, "Nova's read of the server holding a port a SOFT_DELETED server kept bound fails again; the next pass asks again");
                            }
                            continue;
                        }
                        Ok(_) => {
                            tracing::debug!(name = %watch.name, port = %port_id, server, "a port left bound to a SOFT_DELETED server is still bound; the next pass looks again");
                            continue;
                        }
                    }
                }
                Ok(_) => None,
                Err(e) => Some(e),
            };
            // One delete a pass too, not retried: an answer that passes
            // by itself to the driver (a 5xx, a 429, but also a proxy's 404
            // without Neutron's fault, Transient, or a 413 naming no quota,
            // Throttled, which may not pass) was retried until the cleanup
            // deadline, holding the pass (and the Releases behind its lock)
            // minutes per port. The port waits for the next pass.
            let deleted = self.cloud.delete_port(port_id).await;
            let refused = match deleted {
                Ok(()) => {
                    tracing::info!(name = %watch.name, port = %port_id, "deleted the port a SOFT_DELETED server kept bound, which Nova has let go of");
                    self.pass_failures().done(&item);
                    self.pass_failures().done(&reading_server);
                    freed.push(port_id.clone());
                    continue;
                }
                // Refused: not always the binding's (a 404 for a path
                // Neutron routes nowhere is Fatal too). Warned of once per
                // port and kind of refusal, and hourly while it lasts.
                Err(e @ (CloudError::Fatal(_) | CloudError::Conflict(_))) => e,
                Err(e) if e.is_retryable() => {
                    let warn = self.pass_failures().failed(
                        item,
                        problem_of(&e.clone().into()),
                        Instant::now(),
                    );
                    match unlooked {
                        None if warn => {
                            tracing::warn!(name = %watch.name, port = %port_id, error = %e, "cannot delete port {port_id}, which a SOFT_DELETED server kept bound and no server holds any more: Neutron's delete of it fails; the port stays until Neutron takes it (the next pass asks again; warned of again hourly while it fails)");
                        }
                        Some(look) if warn => {
                            tracing::warn!(name = %watch.name, port = %port_id, error = %e, look = %look, "cannot delete port {port_id}, left bound to a SOFT_DELETED server, nor tell whether it is still bound: Neutron's delete of it fails, and its read failed for good (mend what the read's error names); the next pass asks again (warned of again hourly while it fails)");
                        }
                        _ => {
                            tracing::debug!(name = %watch.name, port = %port_id, error = %e, look = ?unlooked, "the delete of a port left bound to a SOFT_DELETED server fails again; the next pass asks again");
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let warn = self.pass_failures().failed(
                item,
                problem_of(&refused.clone().into()),
                Instant::now(),
            );
            match unlooked {
                None if warn => {
                    tracing::warn!(name = %watch.name, port = %port_id, error = %refused, "Neutron refuses the delete of a port no server holds any more; the next pass asks again (warned of again hourly while it refuses; if it keeps refusing, look at the port's owner and the project's Neutron policy, or delete it by hand)");
                }
                Some(e) if warn => {
                    tracing::warn!(name = %watch.name, port = %port_id, reason = %refused, error = %e, "cannot delete a port left bound to a SOFT_DELETED server, nor tell whether it is still bound: mend what the error names; the next pass asks again (warned of again hourly while it fails)");
                }
                _ => {
                    tracing::debug!(name = %watch.name, port = %port_id, reason = %refused, look = ?unlooked, "the delete of a port left bound to a SOFT_DELETED server is refused again; the next pass asks again");
                }
            }
        }
        next.bound_ports.retain(|p| !freed.contains(p));
        let over = now >= watch.until;
        let ended = over
            && all_deleted.is_ok()
            && next.deleted_volumes.is_empty()
            && next.bound_ports.is_empty()
            && next.stuck_volume.is_none();
        let next = (!ended).then_some(&next);
        // Only the watch this pass listed: a release of the order may have
        // written over it meanwhile, naming the volume it deletes. What
        // this pass found is the next one's to find again, by the name
        // (which the watch written over it still lists) and by id.
        if next != Some(watch) && !self.store.cas_twin_watch(Some(watch), next).await? {
            tracing::debug!(name = %watch.name, "twin watch written over during the pass; the next pass looks at it");
            return Ok(());
        }
        // Once: announced after the mark that says it was is written.
        for volume_id in stuck {
            self.emit(
                watch.pool.as_ref(),
                EventKind::VolumeStuck {
                    request_id: watch.request_id.clone(),
                    volume_id,
                    status: "error_deleting".into(),
                },
            );
        }
        // A twin not deleted keeps the watch (`ended`), and was warned of
        // by `delete_twins`, paced by its listing or twin: not again as
        // this pass's item, paced by the watch's name and the kind only.
        Ok(())
    }

    /// An Allocate in this process is working on the request right now.
    fn is_in_flight(&self, request_id: &str) -> bool {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .contains_key(request_id)
    }
}
