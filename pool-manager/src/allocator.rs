//! Allocate and Release.
//!
//! An allocation is recorded (state `Allocating`) before any cloud call
//! that changes anything, keyed by its request id (before it, the tenant's
//! existing volume and the order's network, which must be the tenant's,
//! are only looked at, the request id marked in flight so that
//! GetAllocation and Release say "in progress"); then the tenant's new
//! volume and port are
//! created (so a request the cloud refuses costs no warm instance), a Ready
//! instance is claimed by compare-and-swap, its mysqld is probed once
//! more (it may have died since it went Ready), volume and port are attached
//! concurrently, the result is verified, the instance is marked `Allocated`
//! (failing the try if it is no longer claimed by this request), an
//! existing volume that came untagged is tagged for the order's tenant, and
//! then the allocation is marked `Allocated` and flushed: only then is it
//! acknowledged, and nothing is rolled back after it. If a step fails, what
//! was attached is undone, the instance is discarded (never returned to the
//! pool) and the next Ready one is tried while the deadline allows, up to
//! [`MAX_DISCARDED_PER_PURCHASE`] instances discarded; a purchase that gets
//! no other instance answers the last try's failure. One exception: a try
//! that failed for the request (not the instance) and sent no attach the
//! cloud may have acted on, each one refused 429/413 ([`AttachCalls`]), puts
//! its instance back, `Ready` and unclaimed, before it answers: a rate limit
//! outlasting the attach's grace would otherwise cost a warm instance per
//! retry with nothing ever attached. Nor is an instance whose mysqld is
//! silent at the claim discarded, unless Nova shows its server broken:
//! nothing of the request was tried on it, and a probe failing on
//! warmpoold's side would make every instance look so; it goes back
//! `Ready`, for the reconciler's two silent passes to judge, and the next
//! one is tried. A failed
//! Allocate leaves no record, so a retry with the same request id starts
//! afresh. Released allocations are kept (idempotent answers) until
//! `ManagerSettings::keep_released`, if set.

use crate::changes::ChangeCursor;
use crate::cloud::{
    exceeds_per_volume_limit, management_network_refusal, CloudError, CloudIdentity, CloudResult,
    Network, NetworkOwner, NetworkShare, NewPortSpec, NewVolumeSpec, Port, Server, ServerStatus,
    Volume, VolumeOwner, VolumeStatus, META_INSTANCE, META_TENANT,
};
use crate::error::{ApiCall, ManagerError, ManagerResult};
use crate::events::{AllocationOutcome, EventKind};
use crate::gate::{self, BootTicket, Gate, ThrottledCall};
use crate::manager::{
    noted_service, noting_service, validate_name, validate_optional_name, validate_path_id,
    validate_pool_key, PoolManager, Shared,
};
use crate::model::{
    Allocation, AllocationParams, AllocationState, EmptyPoolPolicy, Instance, InstanceState,
    PoolKey, PoolRecord, TwinWatch, VolumeSource, TWIN_WATCH,
};
use crate::reconciler::problem_of;
use crate::replenisher::{BootError, DrivingClaim, Timed};
use crate::store::RecordKind;
use crate::text;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

/// Default time an Allocate may take when it waits for a warm instance.
pub const DEFAULT_ALLOCATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time an Allocate may take when it cold-boots.
pub const DEFAULT_COLD_BOOT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long the attach of a claimed instance may take at least, also past
/// the purchase's timeout: a tenant-touched instance never goes back to the
/// pool, so a purchase giving up mid-attach would cost the pool one
/// instance per try, and a caller retrying with too short a timeout would
/// empty it.
pub const CLAIMED_ATTACH_GRACE: Duration = Duration::from_secs(5 * 60);

/// How many instances one purchase may discard after failed tries of the
/// request on them (an instance whose mysqld is silent at the claim is
/// put back, not discarded: no step of the request was tried). One
/// bad instance is plausible (a compute host failing attaches); the same
/// failure on a second says it is the request's or the cloud's (Nova's
/// interface attach failing 500 when the tenant network cannot be bound, a
/// Cinder backend down), which every instance would meet alike: tried on
/// each in turn, one bad request would empty the pool, or cold-boot and
/// discard a server after another until its deadline.
pub const MAX_DISCARDED_PER_PURCHASE: u32 = 2;

/// The least time a cleanup (a release's detach and delete until gone, a
/// rollback, a failed try's) retries its cloud calls, however short
/// `poll_interval` is: 30 polls at "500ms" are 15 s, less than a busy
/// compute host takes to delete a server, and the release or rollback
/// would fail UNAVAILABLE with its work under way.
pub const CLEANUP_FLOOR: Duration = Duration::from_secs(2 * 60);

/// How long a cleanup retries its cloud calls: 30 polls, and at least
/// [`CLEANUP_FLOOR`].
pub fn cleanup_budget(poll_interval: Duration) -> Duration {
    poll_interval.saturating_mul(30).max(CLEANUP_FLOOR)
}

/// How long after Nova accepted an attach a volume still `available`,
/// never seen `attaching`, with no attachment on the server either, is
/// taken for an attach the host failed at once. Not at the first look: a
/// cloud may answer before Cinder has reserved the volume, as Nova from
/// microversion 2.101 answers 202 before the attach is done (the testbed
/// saw the volume `in-use` 0.2 s after the answer; how long a busy compute
/// host takes is not measured). The OpenStack driver speaks none of those
/// (below 2.101 Nova answers once the volume is reserved): a reserve taking
/// longer than this grace would cost a warm instance per try.
const UNSEEN_ATTACH_GRACE: Duration = Duration::from_secs(5);

/// Longest request id accepted (billing order ids are far shorter).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// What the quota leaves a cold boot, by the gate's last look at it.
enum QuotaRoom {
    /// Room, or not known to be full.
    Room,
    /// Full now: a release or a deletion makes room. The quota that bound
    /// at the last poll, as the cloud counted it.
    Full(Option<String>),
    /// One server needs more than the quota allows in all (the quota named).
    Beyond(String),
}

impl QuotaRoom {
    fn of(status: &crate::gate::HeadroomStatus, left: Option<u64>) -> Self {
        if status.beyond_quota {
            QuotaRoom::Beyond(status.limited_by.clone().unwrap_or_default())
        } else if left == Some(0) {
            QuotaRoom::Full(None)
        } else {
            QuotaRoom::Room
        }
    }
}

/// The shortest pause of a cold boot in line for quota between its looks
/// at the limits, whatever the poll interval (which tests set short).
const MIN_QUOTA_PAUSE: Duration = Duration::from_millis(100);

/// How far ahead a deadline is put whose duration overflows `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `from + after`, or a far future where that overflows: a huge timeout (in
/// a request, a pool spec or the settings) means "no deadline", not a panic.
pub(crate) fn deadline_after(from: Instant, after: Duration) -> Instant {
    from.checked_add(after).unwrap_or_else(|| from + FAR_FUTURE)
}

/// A purchase a repeat call starts once the call of its order it waited
/// for failed: that wait spent part of its caller's timeout, so a deadline
/// it then misses is told as the wait's, not as the cloud's slowness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AfterWait {
    /// How long the call waited for the other one.
    waited: Duration,
    /// What was left of its timeout when its own purchase began.
    left: Duration,
}

/// An Allocate call: the allocation's parameters plus how to wait.
#[derive(Clone, Debug)]
pub struct AllocateRequest {
    pub params: AllocationParams,
    pub empty_pool: EmptyPoolPolicy,
    /// `None`: the default for the policy.
    pub timeout: Option<Duration>,
}

impl PoolManager {
    /// Hands out a warm instance with the tenant's volume and port attached.
    /// Idempotent on `request_id`.
    ///
    /// The purchase runs as a task of the manager, so a caller that stops
    /// waiting (a gRPC client's deadline drops the handler) does not leave
    /// it half done for the reconciler: it finishes, and a retry with the
    /// same request id gets its answer. A call that finds the order stored
    /// answers, or waits for the call working on it, in the caller's own
    /// future: it holds nothing, and as a task it would outlive its caller
    /// (up to its timeout, an hour maybe), and start a purchase nobody waits
    /// for if the one it waited on failed.
    pub async fn allocate(&self, mut request: AllocateRequest) -> ManagerResult<Allocation> {
        // As every call once a graceful stop has begun, a repeat answered
        // from the store too.
        if self.calls_closed() {
            return Err(ManagerError::ShuttingDown {
                call: ApiCall::Allocate,
            });
        }
        request.params = request.params.canonical();
        validate(&request.params)?;
        let started = Instant::now();
        let timeout = request.timeout.unwrap_or(match request.empty_pool {
            EmptyPoolPolicy::ColdBoot => DEFAULT_COLD_BOOT_TIMEOUT,
            _ => DEFAULT_ALLOCATE_TIMEOUT,
        });
        let deadline = deadline_after(started, timeout);
        // Before the first look, so that no change after it is missed.
        let mut changes = self.shared.changes.subscribe();
        let mut waited_for_another_call = false;
        loop {
            let request_id = &request.params.request_id;
            if let Some(existing) = self.shared.store.get_allocation(request_id).await? {
                if let Some(answer) = self
                    .shared
                    .stored_answer(existing, &request.params, started)
                    .await?
                {
                    return Ok(answer);
                }
                self.shared
                    .wait_for_order(request_id, deadline, &mut changes)
                    .await?;
                waited_for_another_call = true;
                continue;
            }
            let shared = self.shared.clone();
            let order = request.clone();
            let after_wait = waited_for_another_call.then(|| AfterWait {
                waited: started.elapsed(),
                left: deadline.saturating_duration_since(Instant::now()),
            });
            let bought = self
                .detached(ApiCall::Allocate, async move {
                    shared.purchase(order, started, deadline, after_wait).await
                })
                .await?;
            match bought {
                Some(allocation) => return Ok(allocation),
                // Another call recorded the order first: its answer is
                // waited for as a repeat's.
                None => continue,
            }
        }
    }

    /// Every allocation in the store, any state.
    pub async fn list_allocations(&self) -> ManagerResult<Vec<Allocation>> {
        Ok(self.shared.store.list_allocations().await?)
    }

    /// The allocation as stored, once what was read is on disk: a commit
    /// read while its flush is under way must not be reported before a
    /// crash could still undo it.
    ///
    /// An order whose Allocate is still checking it (the tenant's volume,
    /// retried through Cinder's 5xx) has no record yet, and is in progress,
    /// not unknown: billing told NOT_FOUND would close an order that Allocate
    /// may yet sell. Looked at before the read as well as after it, so an
    /// Allocate that writes its record and answers in between is not missed.
    pub async fn get_allocation(&self, request_id: &str) -> ManagerResult<Allocation> {
        validate_request_id(request_id)?;
        let allocating = InFlight::holds(&self.shared, request_id);
        let Some(allocation) = self.shared.store.get_allocation(request_id).await? else {
            self.shared.refuse_if_set_aside(request_id).await?;
            if allocating || InFlight::holds(&self.shared, request_id) {
                return Err(ManagerError::TryAgain(format!(
                    "allocation {request_id} is still in progress (its Allocate is checking the order and has not recorded it yet); call again once Allocate has answered"
                )));
            }
            return Err(ManagerError::AllocationNotFound(request_id.to_string()));
        };
        self.shared
            .store
            .flush()
            .await
            .map_err(|e| ManagerError::unconfirmed(format_args!("allocation {request_id}"), e))?;
        Ok(allocation)
    }

    /// Why the latest try to finish `request_id`'s release failed (by this
    /// process: a restart forgets it until its reconcile pass tries again),
    /// while no try has finished it since; `None` once one has, or if none
    /// failed. For an order GetAllocation shows RELEASING.
    pub fn release_error(&self, request_id: &str) -> Option<String> {
        self.shared
            .release_errors
            .lock()
            .expect("release errors lock")
            .get(request_id)
            .cloned()
    }

    /// Deletes the allocated server and port; deletes the volume if
    /// `delete_volume` (or, when `None`, the allocation's own setting) says so.
    /// Runs to its end even if the caller stops waiting.
    pub async fn release(
        &self,
        request_id: &str,
        delete_volume: Option<bool>,
    ) -> ManagerResult<Allocation> {
        let manager = self.clone();
        let request_id = request_id.to_owned();
        // In the caller's span (the server names the token that asked)
        // though it runs as a task of its own.
        let release = async move { manager.release_now(&request_id, delete_volume).await };
        self.detached(
            ApiCall::Release,
            release.instrument(tracing::Span::current()),
        )
        .await
    }

    async fn release_now(
        &self,
        request_id: &str,
        delete_volume: Option<bool>,
    ) -> ManagerResult<Allocation> {
        validate_request_id(request_id)?;
        // Another call carrying out this order's release (billing's retry
        // of a Release still under way, a reconcile pass finishing it) is
        // waited for, and its outcome read below: the order Released is
        // answered as it is; one still Releasing (that call failed) is
        // answered with that failure, not tried again: billing's retries,
        // each cut off by its deadline, all wait here, and each trying
        // again in turn would keep the cloud busy, its caller gone, for a
        // cleanup budget apiece. The wait is bounded by one budget too,
        // the longest a try holds the turn.
        let (_turn, waited) = match ReleaseTurn::try_take(&self.shared, request_id) {
            Some(turn) => (turn, false),
            None => {
                let budget = cleanup_budget(self.shared.settings.poll_interval);
                let Ok(turn) =
                    tokio::time::timeout(budget, ReleaseTurn::take(&self.shared, request_id)).await
                else {
                    return Err(ManagerError::TryAgain(format!(
                        "a release of allocation {request_id} is under way (another Release, or a reconcile pass) and has not ended within {}s; call again later to learn its outcome",
                        budget.as_secs()
                    )));
                };
                (turn, true)
            }
        };
        let mut allocation = self.get_allocation(request_id).await?;
        // The purchase that held it while it was read may have ended since:
        // its in-flight mark goes once it has committed (or rolled back),
        // so an order read Allocating that no call holds now is read again,
        // and the purchase's outcome is what is released. Not read again, a
        // Release racing the commit (billing cancelling after its Allocate's
        // deadline) was told of a rollback, with the order Allocated.
        if allocation.state == AllocationState::Allocating
            && !InFlight::holds(&self.shared, request_id)
        {
            allocation = self.get_allocation(request_id).await?;
        }
        // Decided when the release began; its volume may be gone, or kept
        // and billed by the tenant: a release asking for the other is
        // refused, not answered as if done.
        if let (Some(asked), Some(decided)) = (delete_volume, allocation.delete_volume_on_release) {
            if asked != decided {
                let being = match allocation.state {
                    AllocationState::Released => "was",
                    _ => "is already being",
                };
                return Err(ManagerError::Aborted(format!(
                    "allocation {request_id} {being} released with delete_volume={decided}; a release cannot change that"
                )));
            }
        }
        match allocation.state {
            AllocationState::Released => return Ok(allocation),
            AllocationState::Releasing if waited => {
                if let Some(error) = self.release_error(request_id) {
                    return Err(ManagerError::TryAgain(format!(
                        "the release of allocation {request_id}, carried out meanwhile by another call (a Release, or a reconcile pass), failed: {error}; the order stays RELEASING and each reconcile pass tries it again: call again later"
                    )));
                }
            }
            AllocationState::Allocating if InFlight::holds(&self.shared, request_id) => {
                return Err(ManagerError::TryAgain(format!(
                    "allocation {request_id} is still in progress; release it once Allocate has answered"
                )))
            }
            // No call works on it: its Allocate failed (or warmpoold
            // stopped under it) and the rollback the cloud kept from
            // finishing is left to the reconcile passes. Waiting for an
            // answer Allocate gave already would be waiting for nothing.
            AllocationState::Allocating => {
                return Err(ManagerError::TryAgain(format!(
                    "allocation {request_id} is being rolled back: its Allocate failed (or warmpoold stopped during it), and the cloud has not let the rollback finish yet; nothing of it is allocated now, and each reconcile pass goes on with the rollback. Call again: once the rollback is done the order reads NOT_FOUND and there is nothing to release, unless an Allocate of it called meanwhile (one waiting for the rollback) buys it afresh: then a Release called again releases what that Allocate bought"
                )))
            }
            AllocationState::Allocated | AllocationState::Releasing => {}
        }
        let mut releasing = allocation.clone();
        releasing.state = AllocationState::Releasing;
        releasing.delete_volume_on_release = Some(
            delete_volume
                .or(allocation.delete_volume_on_release)
                .unwrap_or(allocation.params.volume.delete_on_release),
        );
        if !self
            .shared
            .store
            .cas_allocation(Some(&allocation), Some(&releasing))
            .await?
        {
            return Err(ManagerError::TryAgain(format!(
                "allocation {request_id} changed during release; retry"
            )));
        }
        // Written, though perhaps not on disk: the release goes on (the
        // reconciler finishes it), so the answer is to call again, not a
        // failure.
        if let Err(e) = self.shared.store.flush().await {
            return Err(ManagerError::unconfirmed(
                format!("the release of allocation {request_id}"),
                e,
            ));
        }
        self.shared.finish_release(releasing).await
    }
}

pub(crate) fn validate_request_id(request_id: &str) -> ManagerResult<()> {
    if request_id.is_empty() {
        return Err(ManagerError::invalid("request_id", "is required"));
    }
    if request_id.len() > MAX_REQUEST_ID_LEN
        || !request_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(ManagerError::invalid(
            "request_id",
            format!("must be 1-{MAX_REQUEST_ID_LEN} characters of A-Z a-z 0-9 - _ . :"),
        ));
    }
    Ok(())
}

/// Most labels an allocation carries, and their longest keys and values:
/// they are stored with the allocation for as long as it is kept.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY_LEN: usize = 128;
pub const MAX_LABEL_VALUE_LEN: usize = 1024;

/// How much of an over-long label key a refusal quotes.
const QUOTED_KEY_CHARS: usize = 64;

fn validate_labels(labels: &std::collections::BTreeMap<String, String>) -> ManagerResult<()> {
    if labels.len() > MAX_LABELS {
        return Err(ManagerError::invalid(
            "labels",
            format!("at most {MAX_LABELS} labels, got {}", labels.len()),
        ));
    }
    for (key, value) in labels {
        // The key quoted: the caller learns which label to mend. An
        // over-long one only in part: the server cuts status messages at
        // 1024 bytes, and a huge key quoted whole would cut off the reason.
        let quoted = || {
            if key.len() > MAX_LABEL_KEY_LEN {
                let head: String = key.chars().take(QUOTED_KEY_CHARS).collect();
                format!("{head:?}... (its first {QUOTED_KEY_CHARS} characters)")
            } else {
                format!("{key:?}")
            }
        };
        let problem = if key.is_empty() {
            format!("key \"\" is empty; keys are 1-{MAX_LABEL_KEY_LEN} bytes")
        } else if key.len() > MAX_LABEL_KEY_LEN {
            format!(
                "key {} is {} bytes; keys are at most {MAX_LABEL_KEY_LEN}",
                quoted(),
                key.len()
            )
        } else if value.len() > MAX_LABEL_VALUE_LEN {
            format!(
                "the value of label {} is {} bytes; values are at most {MAX_LABEL_VALUE_LEN}",
                quoted(),
                value.len()
            )
        } else if key.chars().any(char::is_control) {
            format!(
                "key {} holds control characters; send it without them",
                quoted()
            )
        } else if value.chars().any(char::is_control) {
            format!(
                "the value of label {} holds control characters; send it without them",
                quoted()
            )
        } else {
            continue;
        };
        return Err(ManagerError::invalid("labels", problem));
    }
    Ok(())
}

/// An order's identity: its id, tenant and pool, checked in the API's field
/// order. A front end that checks the volume and network it must convert
/// checks these first, so the first wrong field is the one named.
pub fn validate_order(
    request_id: &str,
    tenant_project_id: &str,
    pool: &PoolKey,
) -> ManagerResult<()> {
    validate_request_id(request_id)?;
    validate_name("tenant_project_id", tenant_project_id)?;
    validate_pool_key(pool)
}

fn validate(params: &AllocationParams) -> ManagerResult<()> {
    validate_order(&params.request_id, &params.tenant_project_id, &params.pool)?;
    match &params.volume.source {
        // Cinder's ids are UUIDs. Anything else would be put in a URL path
        // as is: "..", "detail" or "summary" name other resources there.
        // A UUID is one path segment too (`path_segment_problem`, the rule
        // for the network id below).
        VolumeSource::Existing { volume_id } => {
            let is_uuid = volume_id.len() == 36 && uuid::Uuid::parse_str(volume_id).is_ok();
            if !is_uuid {
                return Err(ManagerError::invalid(
                    "volume.existing_volume_id",
                    "must be a Cinder volume id (a UUID, 8-4-4-4-12 hex digits)",
                ));
            }
        }
        VolumeSource::New {
            size_gib,
            volume_type,
        } => {
            if *size_gib == 0 {
                return Err(ManagerError::invalid(
                    "volume.new_volume.size_gib",
                    "must be > 0",
                ));
            }
            if let Some(volume_type) = volume_type {
                validate_optional_name("volume.new_volume.volume_type", volume_type)?;
            }
        }
    }
    // Put into the URL path of Neutron's network read: a name, and no
    // "." or "..", which the URL join drops (the read became the listing
    // of every network, retried as a transient failure to the deadline).
    // Not a UUID: the embedded cloud's networks are named.
    validate_path_id("network.network_id", &params.network.network_id)?;
    if let Some(subnet_id) = &params.network.subnet_id {
        validate_optional_name("network.subnet_id", subnet_id)?;
    }
    validate_labels(&params.labels)?;
    if params.network.fixed_ip.is_some() && params.network.subnet_id.is_none() {
        return Err(ManagerError::invalid(
            "network.fixed_ip",
            "needs network.subnet_id",
        ));
    }
    if let Some(ip) = &params.network.fixed_ip {
        ip.parse::<std::net::IpAddr>().map_err(|_| {
            ManagerError::invalid("network.fixed_ip", format!("{ip:?} is not an IP address"))
        })?;
    }
    Ok(())
}

/// The allocation record, updated by concurrent attach steps; every update
/// is written to the store before the step's next side effect.
struct Record<'a> {
    shared: &'a Shared,
    current: Mutex<Allocation>,
    /// The purchase waited for an instance to become Ready, so the one it
    /// is served from is no warm hit (`AllocationOutcome::Waited`). Not
    /// stored: only this call counts the purchase.
    waited: AtomicBool,
    /// The purchase went on past its fail-fast refusal to make its volume
    /// and port (and maybe claim or boot an instance): a failure has
    /// something to roll back. Not stored: only this call logs it.
    made: AtomicBool,
    /// The purchase began after this call waited for another call of the
    /// order, which failed.
    after_wait: Option<AfterWait>,
}

impl Record<'_> {
    async fn update(&self, change: impl FnOnce(&mut Allocation)) -> ManagerResult<Allocation> {
        let mut current = self.current.lock().await;
        let mut next = current.clone();
        change(&mut next);
        if !self
            .shared
            .store
            .cas_allocation(Some(&current), Some(&next))
            .await?
        {
            return Err(ManagerError::FailedPrecondition(format!(
                "allocation {} was changed by someone else",
                next.params.request_id
            )));
        }
        // The store holds `next` whether or not the flush succeeds: a copy
        // left behind would make this record's next swap fail as if
        // someone else had changed it, turning a disk fault into
        // FAILED_PRECONDITION and cutting the failed try's cleanup short.
        *current = next.clone();
        let flushed = self.shared.store.flush().await;
        // A duplicate call waits on the record (the commit, above all),
        // also one whose flush failed: it flushes before it answers.
        self.shared.changed();
        flushed?;
        Ok(next)
    }

    async fn get(&self) -> Allocation {
        self.current.lock().await.clone()
    }

    /// The order names no instance any more (its try failed, or its
    /// instance went back to the pool): nor a warm hit, which the next
    /// claim says again.
    async fn forget_instance(&self) -> ManagerResult<Allocation> {
        self.update(|a| {
            a.instance_id = None;
            a.server_id = None;
            a.warm_hit = false;
        })
        .await
    }
}

/// Marks a request id as being worked on for as long as it lives, also when
/// the Allocate future is dropped: from before the Allocate's first cloud
/// call (the check of the tenant's volume) until it has answered. Counted,
/// because two calls with one id both hold one while they race to create
/// the record.
struct InFlight<'a> {
    shared: &'a Shared,
    request_id: String,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared, request_id: &str) -> Self {
        shared
            .in_flight
            .lock()
            .expect("in-flight lock")
            .entry(request_id.to_string())
            .and_modify(|n| *n += 1)
            .or_insert(1);
        Self {
            shared,
            request_id: request_id.to_string(),
        }
    }
}

impl InFlight<'_> {
    /// Whether an Allocate of this process works on `request_id` now.
    fn holds(shared: &Shared, request_id: &str) -> bool {
        shared
            .in_flight
            .lock()
            .expect("in-flight lock")
            .contains_key(request_id)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.shared.in_flight.lock().expect("in-flight lock");
        if let Some(n) = in_flight.get_mut(&self.request_id) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.request_id);
            }
        }
    }
}

/// Holds the release of an order for one call of this process at a time,
/// for as long as it lives: a Release, billing's retry of it and a reconcile
/// pass, side by side, each sent the order's detaches and deletes (a real
/// Nova refuses the second detach of a server being deleted, 409, and the
/// second DELETE went out all the same). Not the order's [`InFlight`],
/// which says that an Allocate works on it (GetAllocation's "in progress"
/// for an order not recorded yet, the reconciler's rollback left alone).
pub(crate) struct ReleaseTurn<'a> {
    shared: &'a Shared,
    request_id: String,
}

impl<'a> ReleaseTurn<'a> {
    /// The turn, unless another call holds it now: a reconcile pass leaves
    /// an order whose release is under way to that call.
    pub(crate) fn try_take(shared: &'a Shared, request_id: &str) -> Option<Self> {
        let taken = shared
            .releasing
            .lock()
            .expect("releasing lock")
            .insert(request_id.to_string());
        taken.then(|| Self {
            shared,
            request_id: request_id.to_string(),
        })
    }

    /// The turn, once no other call holds it.
    async fn take(shared: &'a Shared, request_id: &str) -> Self {
        loop {
            let ended = shared.release_turn_ended.notified();
            tokio::pin!(ended);
            // Registered before the look, so a turn ending in between
            // wakes this call.
            ended.as_mut().enable();
            if let Some(turn) = Self::try_take(shared, request_id) {
                return turn;
            }
            ended.await;
        }
    }
}

impl Drop for ReleaseTurn<'_> {
    fn drop(&mut self) {
        self.shared
            .releasing
            .lock()
            .expect("releasing lock")
            .remove(&self.request_id);
        self.shared.release_turn_ended.notify_waiters();
    }
}

/// `waited`: [`Record::waited`]; an instance not claimed warm and not
/// waited for was booted for the purchase.
fn allocation_outcome(outcome: &ManagerResult<Allocation>, waited: bool) -> AllocationOutcome {
    match outcome {
        Ok(a) if a.warm_hit => AllocationOutcome::Warm,
        Ok(_) if waited => AllocationOutcome::Waited,
        Ok(_) => AllocationOutcome::Cold,
        Err(e) => failure_outcome(e),
    }
}

impl Shared {
    /// Counts an Allocate refused before its order was recorded, like any
    /// failed one, in `pool`: a pool the store has, so its label is one the
    /// metrics already have. Not in the pool's `allocations_failed` (failed
    /// once under way), but in its `allocations_exhausted` if it is that, so
    /// the record's hit rate is the metrics'.
    async fn count_refusal(
        &self,
        pool: &PoolKey,
        request_id: &str,
        refused: &ManagerError,
        started: Instant,
    ) {
        let outcome = failure_outcome(refused);
        self.emit(
            Some(pool),
            EventKind::Allocation {
                request_id: request_id.to_string(),
                outcome,
                latency: started.elapsed(),
            },
        );
        if outcome == AllocationOutcome::Exhausted {
            let _ = self
                .update_pool(pool, |p| p.allocations_exhausted += 1)
                .await;
        }
    }
}

/// How [`Shared::wait_on_pool`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Woke {
    /// A change had come since the cursor's last look: no wait.
    Unseen,
    /// A change came while it waited.
    Changed,
    /// The deadline came first.
    TimedOut,
}

/// The outcome the metrics and the pool's counters give an Allocate that
/// failed with `error`: `Exhausted`, the pool's miss in its hit rate
/// (warm / (warm + cold + waited + exhausted)), or a failure outside it.
/// Public so that a benchmark's hit rate is warmpoold's own.
pub fn failure_outcome(error: &ManagerError) -> AllocationOutcome {
    // By the answer the caller gets (the server's status mapping): a
    // refusal asking again does not change FAILED_PRECONDITION; cloud_error
    // stays for an unavailable cloud. Exhausted is the pool's miss, in the
    // hit rate the pools are sized for: only a want of an instance. A quota
    // refusing the order's own volume or port is RESOURCE_EXHAUSTED too (a
    // quota), but a deeper pool would not have served it (one on the port
    // quota would make it worse); a cold boot's quota comes as
    // ResourceExhausted (`wait_for_quota`).
    match error {
        ManagerError::ResourceExhausted(_) => AllocationOutcome::Exhausted,
        ManagerError::FailedPrecondition(_)
        | ManagerError::Cloud(
            CloudError::Conflict(_)
            | CloudError::Fatal(_)
            | CloudError::LeftToReclaim(_)
            | CloudError::PolicyRefused(_),
        ) => AllocationOutcome::PreconditionFailed,
        ManagerError::Cloud(CloudError::QuotaExceeded(_)) => AllocationOutcome::Failed,
        ManagerError::Cloud(_) => AllocationOutcome::CloudError,
        // DEADLINE_EXCEEDED among them: the pool had an instance to give.
        _ => AllocationOutcome::Failed,
    }
}

/// The cloud refused to create the tenant's volume or port for a reason
/// asking again will not change (an unknown volume type or network, an
/// address in use, a request it calls bad): the caller must change the
/// request, so it must not read as the cloud being unavailable.
///
/// A quota's refusal stays one (RESOURCE_EXHAUSTED), saying which quota
/// and that it is warmpool's project's: the operator raises it or frees
/// some, where the cloud's own words may not say whose it is.
fn creation_refused(what: &str, error: CloudError) -> AttemptError {
    AttemptError::Request(match error {
        CloudError::NotFound(m) | CloudError::Conflict(m) | CloudError::Fatal(m) => {
            ManagerError::FailedPrecondition(format!("cannot create the tenant {what}: {m}"))
        }
        CloudError::QuotaExceeded(m) => {
            let quota = match what {
                "volume" => "Cinder's volumes or gigabytes quota",
                _ => "Neutron's port quota",
            };
            ManagerError::Cloud(CloudError::QuotaExceeded(format!(
                "{m}; {quota} of warmpool's project (where the tenant's {what} is made) refused the tenant {what}: raise it, or release orders to free some, and ask again"
            )))
        }
        e => e.into(),
    })
}

/// The cloud refused to create the tenant's volume of `volume_type`: as
/// [`creation_refused`], and a refusal that may be of the type (Cinder's
/// 404 for a type it does not know, or a 400 naming it) names the order's
/// field that chose it, which Cinder's own words do not.
fn volume_creation_refused(volume_type: Option<&str>, error: CloudError) -> AttemptError {
    let of_the_type = match (&error, volume_type) {
        (CloudError::NotFound(_), Some(_)) => true,
        (CloudError::Fatal(m), Some(volume_type)) => {
            names_word(m, volume_type) || m.to_ascii_lowercase().contains("volume type")
        }
        _ => false,
    };
    match (error, volume_type) {
        (CloudError::NotFound(m) | CloudError::Fatal(m), Some(volume_type)) if of_the_type => {
            AttemptError::Request(ManagerError::FailedPrecondition(format!(
                "cannot create the tenant volume: {m}; the order's volume type {volume_type} (volume.new_volume.volume_type, warmpoolctl --volume-type) must name one of the cloud's volume types (openstack volume type list), or be left empty for its default"
            )))
        }
        (error, _) => creation_refused("volume", error),
    }
}

/// Whether `text` holds `word` as a word of its own: not inside a longer
/// name (a type named "1" or "ssd" is not named by "size 10" or
/// "ssd-gold").
fn names_word(text: &str, word: &str) -> bool {
    let is_name_char = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.');
    !word.is_empty()
        && text.match_indices(word).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + word.len()..].chars().next();
            !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
        })
}

/// A create sent again after a lost answer may be refused by the twin the
/// first one made: a fixed IP it took (Neutron's 409), the room it took
/// under a quota that had room for one.
fn refused_by_a_twin<T>(created: &Result<T, CloudError>) -> bool {
    matches!(
        created,
        Err(CloudError::Conflict(_) | CloudError::QuotaExceeded(_))
    )
}

/// `port`, found by the name of the create `spec`, is that create's doing
/// and free: on the network, with the address asked (Neutron put it on the
/// subnet asked), else one on the subnet asked where the cloud says,
/// bound to no server (a failed try's port its server keeps is no twin).
fn port_serves(port: &Port, spec: &NewPortSpec) -> bool {
    let asked: Option<std::net::IpAddr> = spec.fixed_ip.as_deref().and_then(|ip| ip.parse().ok());
    let has_ip = |ip: std::net::IpAddr| {
        port.fixed_ips
            .iter()
            .any(|f| f.ip_address.parse().ok() == Some(ip))
    };
    let on_subnet = |subnet: &str| {
        port.fixed_ips.iter().any(|f| {
            f.subnet_id
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case(subnet))
        })
    };
    let addressed = match (&spec.fixed_ip, &spec.subnet_id) {
        (Some(_), _) => asked.is_some_and(has_ip),
        (None, Some(subnet)) => on_subnet(subnet),
        (None, None) => true,
    };
    port.name == spec.name
        && port.device_id.is_none()
        && port.network_id.eq_ignore_ascii_case(&spec.network_id)
        && addressed
}

/// `volume`, found by the name of the create `spec`, is that create's
/// doing and free: of its size and tenant tag, being made or available,
/// attached nowhere. Not its zone nor type: Cinder may fall back to
/// another zone, and names a type asked by id by its name.
fn volume_serves(volume: &Volume, spec: &NewVolumeSpec) -> bool {
    matches!(
        volume.status,
        VolumeStatus::Creating | VolumeStatus::Available
    ) && volume.name == spec.name
        && volume.attached_to.is_empty()
        && volume.size_gib == spec.size_gib
        && spec
            .metadata
            .iter()
            .all(|(k, v)| volume.metadata.get(k) == Some(v))
}

/// The cloud refused to create the tenant's port `spec`: as
/// [`creation_refused`], and a refusal of Neutron's policy says what the
/// policy wants. Its default lets only a network's owner or an admin
/// choose a port's address there (`create_port:fixed_ips:ip_address`),
/// so a member-only pool user is refused any order with a fixed_ip on a
/// tenant's network shared with its project, whatever the address.
fn port_creation_refused(spec: &NewPortSpec, error: CloudError) -> AttemptError {
    let CloudError::PolicyRefused(refused) = error else {
        return creation_refused("port", error);
    };
    let network = &spec.network_id;
    let what_to_do = match &spec.fixed_ip {
        Some(ip) => format!(
            "Neutron's policy lets only a network's owner or an admin choose a port's address on it (create_port:fixed_ips:ip_address), and warmpool's cloud user, which makes the port, is neither on network {network}: send the order without fixed_ip {ip} (Neutron then gives the port a free address of the network), or give warmpool's cloud user the admin role on its project (as attaching tenants' volumes needs), or a Neutron policy letting it set fixed IPs"
        ),
        None => format!(
            "Neutron's policy refuses warmpool's cloud user, which makes the port, a port on network {network}: check its roles (a member may put ports only on its project's networks and those shared with it; the admin role on its project, which attaching tenants' volumes needs, lets it on any) and Neutron's create_port policy"
        ),
    };
    AttemptError::Request(ManagerError::FailedPrecondition(format!(
        "cannot create the tenant port: {refused}; {what_to_do}"
    )))
}

/// Cinder's per-volume size limit refused the order's new volume of
/// `size_gib` (`refused`): a limit on each volume, not a quota that
/// fills, so no release makes room for it and asking again is refused
/// alike (billing retried RESOURCE_EXHAUSTED for ever, each retry making
/// and deleting a port). The request must change, or the limit.
fn over_the_per_volume_limit(size_gib: u32, refused: &str) -> ManagerError {
    ManagerError::FailedPrecondition(format!(
        "cannot create the tenant volume: {refused}; the order's size_gib {size_gib} is over Cinder's per-volume size limit (the per_volume_gigabytes quota of warmpool's project, where the tenant's volume is made), which no release frees room under: ask for a smaller volume, or have per_volume_gigabytes raised (openstack quota set --per-volume-gigabytes <GiB> <project>)"
    ))
}

/// What became of a cold boot its purchase no longer waits for, its
/// deadline passed or the purchase stopped by a shutdown
/// ([`Shared::hand_over_to_pool`]): at the deadline the purchase's answer
/// says which, as
/// each asks something else of the client (a retry finds it warm, the pool
/// is going, the boot failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handover {
    /// The pool's now: it joins the pool when Ready.
    Handed,
    /// The pool is draining (being deleted).
    PoolDeleted,
    /// The pool's supply is at max_ready already.
    NoRoom,
    /// Its boot has failed already (its task discards it).
    BootFailed,
    /// Undone by something else meanwhile: its record gone, being
    /// deleted, or no longer this purchase's.
    Undone,
}

/// Why a purchase hands its cold boot to the pool, for the log.
#[derive(Clone, Copy, Debug)]
enum Handing {
    /// Its deadline passed.
    Deadline,
    /// The manager stopped its purchase ([`PoolManager::shutdown`]).
    Stop,
}

impl Handover {
    /// The end of the purchase's answer: what happens to the boot.
    fn fate(self) -> &'static str {
        match self {
            Handover::Handed => "it will join the pool when ready",
            Handover::PoolDeleted => "the pool is being deleted, so it is discarded",
            Handover::NoRoom => "the pool has no room for it under max_ready, so it is discarded",
            Handover::BootFailed => "its boot has failed meanwhile, so it is discarded",
            Handover::Undone => {
                "it was undone meanwhile (its record gone or being deleted), so it is discarded"
            }
        }
    }
}

/// What a failed cold boot answers. Only a shortage (no host for it, not
/// Ready within its timeout) is RESOURCE_EXHAUSTED: billing retries that,
/// and a boot the cloud refuses as asked (a flavor or image it no longer
/// knows) would be refused again on every retry, each creating and rolling
/// back a volume and a port.
fn cold_boot_failed(pool: &PoolKey, error: BootError) -> ManagerError {
    match error {
        BootError::Cloud(
            CloudError::NotFound(m) | CloudError::Conflict(m) | CloudError::Fatal(m),
        ) => ManagerError::FailedPrecondition(format!("pool {pool} cannot boot: {m}")),
        BootError::Cloud(e) => e.into(),
        BootError::Manager(e) => *e,
        e @ (BootError::ServerError(_) | BootError::Timeout(_) | BootError::Superseded) => {
            ManagerError::ResourceExhausted(format!("cold boot failed: {e}"))
        }
    }
}

/// What became of an instance a purchase put back ([`Shared::put_back`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PutBack {
    /// `Ready` and unclaimed again.
    Ready,
    /// Discarded: its pool is being deleted, or gone.
    Drained,
    /// No longer claimed for the order: taken out of service meanwhile,
    /// left to whoever took it.
    Taken,
}

/// How a try with one instance failed.
enum AttemptError {
    /// The instance is bad (attach or verify failed): discard it, try the next.
    Instance(ManagerError),
    /// The request cannot succeed (fencing, deadline): stop.
    Request(ManagerError),
}

impl AttemptError {
    fn into_error(self) -> ManagerError {
        match self {
            Self::Instance(e) | Self::Request(e) => e,
        }
    }
}

/// A failed attach: a 429 still there at the deadline says nothing about
/// the instance (the request ran out of time; if every attach of the try
/// was so refused, the instance goes back to the pool, see
/// [`AttachCalls`]), and a refusal as a bad
/// request (a volume of another zone under Nova's `cross_az_attach =
/// False`, a policy's 403) would be the same on every instance; anything
/// else is taken for the instance's, and the next one may do better. A 5xx
/// may be the request's all the same (Nova's `InterfaceAttachFailed` for a
/// tenant network that cannot be bound, a Cinder backend down), which is
/// why a purchase discards at most [`MAX_DISCARDED_PER_PURCHASE`].
fn attempt_error(e: CloudError) -> AttemptError {
    match e {
        e @ (CloudError::Throttled { .. } | CloudError::Fatal(_)) => {
            AttemptError::Request(e.into())
        }
        e => AttemptError::Instance(e.into()),
    }
}

/// A look a try took at its own attaches (its server, the server's ports,
/// its port's binding) that the cloud's `service` failed: down, throttled past the
/// deadline, refusing warmpool's user. That is the cloud's failure, not the
/// instance's; the next Ready instance would meet it as well, and blamed
/// on the instance it cost a purchase two warm instances, and every call
/// billing made again two more.
fn look_failed(error: CloudError, service: &str, look: impl std::fmt::Display) -> AttemptError {
    AttemptError::Request(with_more(
        error.into(),
        format_args!(
            "the {service} failed {look}: the cloud's failure, not the instance's, so no other instance was tried; warmpool discards the instance the attaches reached and rolls the order back: call again once the {service} answers (if it refused warmpool's user, mend that first)"
        ),
    ))
}

/// The order's port, gone (Neutron answers 404) once Nova `nova` its attach
/// (took, or refused as a conflict): deleted by someone else, it is no
/// failure of Neutron to show it, and nothing to call again for. Nor is
/// it the instance's, but its server had the port, so it is discarded as
/// any touched one, and the next try makes a new port: ending the
/// purchase would cost the same instance and serve nothing.
fn port_gone(error: CloudError, port_id: &str, server_id: &str, nova: &str) -> AttemptError {
    AttemptError::Instance(with_more(
        error.into(),
        format_args!(
            "the order's port {port_id} is gone (Neutron no longer knows it; was it deleted outside warmpool?) after Nova {nova} its attach to server {server_id}: that try ended there, and the next one makes a new port"
        ),
    ))
}

/// The attach calls of one try, counted by how they were answered: whether
/// the cloud can have acted on the instance's server. An attach refused
/// 429/413 (a rate limit's answer, not a 503's: [`CloudError::Throttled`]'s
/// `unavailable`) was turned away before anything acted on it. Any other
/// answer, or none (a call dropped unanswered), may come after the attach
/// began: its server is touched, and is discarded as such.
#[derive(Default)]
struct AttachCalls {
    sent: std::sync::atomic::AtomicU32,
    refused: std::sync::atomic::AtomicU32,
}

impl AttachCalls {
    /// Sends `call`, counting it sent before it goes and refused once a
    /// rate limit answers it.
    async fn send<T>(&self, call: impl Future<Output = CloudResult<T>>) -> CloudResult<T> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let answer = call.await;
        if matches!(
            answer,
            Err(CloudError::Throttled {
                unavailable: false,
                ..
            })
        ) {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        answer
    }

    /// No attach of the try can have reached the server: each one sent
    /// (maybe none) was refused by a rate limit.
    fn none_acted(&self) -> bool {
        self.sent.load(Ordering::SeqCst) == self.refused.load(Ordering::SeqCst)
    }
}

/// `error` with `more` said after its message, of the same kind, so that
/// the caller gets the status the failure itself would give. An error
/// without a message of its own (the store's, a shutdown) is kept as is.
fn with_more(error: ManagerError, more: impl std::fmt::Display) -> ManagerError {
    let add = |m: String| format!("{m}; {more}");
    match error {
        ManagerError::FailedPrecondition(m) => ManagerError::FailedPrecondition(add(m)),
        ManagerError::ResourceExhausted(m) => ManagerError::ResourceExhausted(add(m)),
        ManagerError::DeadlineExceeded(m) => ManagerError::DeadlineExceeded(add(m)),
        ManagerError::TryAgain(m) => ManagerError::TryAgain(add(m)),
        ManagerError::Aborted(m) => ManagerError::Aborted(add(m)),
        ManagerError::Internal(m) => ManagerError::Internal(add(m)),
        ManagerError::Cloud(e) => ManagerError::Cloud(match e {
            CloudError::Throttled {
                retry_after,
                message,
                unavailable,
            } => CloudError::Throttled {
                retry_after,
                message: add(message),
                unavailable,
            },
            CloudError::QuotaExceeded(m) => CloudError::QuotaExceeded(add(m)),
            CloudError::Conflict(m) => CloudError::Conflict(add(m)),
            CloudError::NotFound(m) => CloudError::NotFound(add(m)),
            CloudError::Transient(m) => CloudError::Transient(add(m)),
            CloudError::Fatal(m) => CloudError::Fatal(add(m)),
            CloudError::LeftToReclaim(m) => CloudError::LeftToReclaim(add(m)),
            CloudError::PolicyRefused(m) => CloudError::PolicyRefused(add(m)),
        }),
        other => other,
    }
}

/// The want of an instance of a purchase whose deadline passed after an
/// instance claimed was found silent.
fn deadline_passed() -> ManagerError {
    ManagerError::ResourceExhausted(
        "the purchase's deadline passed before another instance could be tried: call again, with a longer timeout if need be".to_owned(),
    )
}

/// What a purchase answers when it gets no instance (`error`) after a try
/// that `failed`: the try's failure, with its status. For want of an
/// instance the caller was told only that the pool had none
/// (RESOURCE_EXHAUSTED, counted as a miss), though the failed try, not
/// the pool, failed the purchase, and the failure was lost. An instance
/// found silent (`dead`) at its claim failed nothing of the request: the
/// want of an instance stays the answer (a retry is served once the pool
/// has one), saying what became of it. Answered as the probe's
/// FAILED_PRECONDITION, billing would drop the order as its own to mend.
fn no_other_instance(
    error: ManagerError,
    failed: Option<ManagerError>,
    dead: Option<ManagerError>,
) -> ManagerError {
    let none_had = matches!(
        error,
        ManagerError::ResourceExhausted(_) | ManagerError::Cloud(CloudError::QuotaExceeded(_))
    );
    match (failed, dead) {
        (Some(failed), _) if none_had => with_more(
            failed,
            format_args!("its instance was discarded, and no other could be had: {error}"),
        ),
        (None, Some(dead)) if none_had => with_more(
            error,
            format_args!(
                "the purchase hands out no instance it finds silent at its claim (the last: {dead})"
            ),
        ),
        _ => error,
    }
}

/// Which errors [`Shared::patiently`] repeats a call after.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Only throttling answers ([`CloudError::Throttled`]), after their
    /// pause: a 429/413 refused the call before anything acted, so asking
    /// again is safe; a 503 naming a Retry-After is asked again too, though
    /// the call may have been done behind it (its `unavailable` tells the
    /// caller so). For calls that must not be repeated after any other 5xx
    /// (an attach may have happened).
    ThrottledOnly,
    /// Every retryable error (429/413, 5xx).
    Retryable,
}

/// A cold boot's place with the gate: in line for quota, or admitted (it
/// found room, which is its own until its boot's ticket holds it). Given
/// up when its boot starts, also when the Allocate future is dropped.
struct QuotaPlace<'a> {
    gate: &'a std::sync::Mutex<Gate>,
    flavor: &'a str,
    admitted: bool,
}

impl<'a> QuotaPlace<'a> {
    /// Joins the line.
    fn join(gate: &'a std::sync::Mutex<Gate>, flavor: &'a str) -> Self {
        gate::lock(gate).purchase_waiting(flavor, true);
        Self {
            gate,
            flavor,
            admitted: false,
        }
    }

    /// Takes the room the purchase found, with the gate locked as
    /// `locked` (the lock it was found under): out of the line, if in it.
    fn admit_locked(
        place: &mut Option<Self>,
        gate: &'a std::sync::Mutex<Gate>,
        locked: &mut Gate,
        flavor: &'a str,
    ) {
        match place {
            Some(place) if place.admitted => return,
            Some(place) => {
                locked.purchase_waiting(place.flavor, false);
                place.admitted = true;
            }
            None => {
                *place = Some(Self {
                    gate,
                    flavor,
                    admitted: true,
                })
            }
        }
        locked.purchase_admitted(flavor, true);
    }

    fn give_up(&self, locked: &mut Gate) {
        if self.admitted {
            locked.purchase_admitted(self.flavor, false);
        } else {
            locked.purchase_waiting(self.flavor, false);
        }
    }

    /// Gives the place up with the gate already locked as `locked`.
    fn leave_locked(self, locked: &mut Gate) {
        self.give_up(locked);
        // Dropped, it would leave again, locking the gate it is given locked.
        std::mem::forget(self);
    }
}

impl Drop for QuotaPlace<'_> {
    fn drop(&mut self) {
        self.give_up(&mut gate::lock(self.gate));
    }
}

impl Shared {
    /// Until when a cleanup (detach, delete) retries its cloud calls
    /// ([`cleanup_budget`]).
    pub(crate) fn cleanup_deadline(&self) -> Instant {
        deadline_after(Instant::now(), cleanup_budget(self.settings.poll_interval))
    }

    /// Calls the cloud through [`Shared::retry`] (Retry-After honoured, never
    /// past `deadline`), stretching each Retry-After by the gate's seeded
    /// jitter so that allocations throttled together do not come back
    /// together. A purchase's call names its pool's zone (`az`, where the
    /// gate counts it): a 429/413 to it pauses the service that answered
    /// (Keystone's, for one to the token renewal inside it) for every AZ,
    /// so refills calling that service stop adding calls to a cloud
    /// turning purchases away, while the purchase waits out its own pause.
    /// It is no boot's call: no zone's window is halved (a cold boot's
    /// quota poll's Nova 429 is a boot's, [`Self::quota_room`]).
    async fn patiently<T, F, Fut>(
        &self,
        deadline: Instant,
        repeat: Repeat,
        az: Option<&str>,
        mut call: F,
    ) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CloudError>>,
    {
        self.retry(deadline, || {
            let attempt = call();
            async move {
                match attempt.await {
                    Err(CloudError::Throttled {
                        retry_after,
                        message,
                        unavailable,
                    }) => {
                        let mut gate = gate::lock(&self.gate);
                        if let Some(az) = az {
                            // Not a boot's call: it pauses its service,
                            // and leaves the zone's boot window alone.
                            let call = ThrottledCall::new(noted_service(), false);
                            gate.throttled(az, call, retry_after, Instant::now());
                        }
                        Err(CloudError::Throttled {
                            retry_after: Some(gate.retry_pause(retry_after)),
                            message,
                            unavailable,
                        })
                    }
                    // Hidden from `retry` inside Ok so that it is not repeated.
                    Err(e) if repeat == Repeat::ThrottledOnly => Ok(Err(e)),
                    Err(e) => Err(e),
                    Ok(v) => Ok(Ok(v)),
                }
            }
        })
        .await
        .and_then(|inner| inner)
    }

    /// Sends a create, and again after 429s, 5xx and timeouts (as
    /// [`Shared::patiently`]). The second value says whether an answer
    /// left the create possibly done ([`CloudError::may_have_been_done`]:
    /// a 5xx, a timeout, a 503 naming a Retry-After): then a twin may exist.
    async fn create_doubting<T, F, Fut>(
        &self,
        deadline: Instant,
        az: &str,
        mut create: F,
    ) -> (Result<T, CloudError>, bool)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CloudError>>,
    {
        let in_doubt = std::sync::atomic::AtomicBool::new(false);
        let created = self
            .patiently(deadline, Repeat::Retryable, Some(az), || {
                crate::cloud::noting_doubt(create(), &in_doubt)
            })
            .await;
        (created, in_doubt.into_inner())
    }

    /// Records that a create lost an answer, whether or not it then
    /// succeeded: one that failed in the end may still have been done.
    async fn note_create_in_doubt(
        &self,
        record: &Record<'_>,
        in_doubt: bool,
    ) -> Result<(), AttemptError> {
        if in_doubt && !record.get().await.creates_in_doubt {
            record
                .update(|a| a.creates_in_doubt = true)
                .await
                .map_err(AttemptError::Request)?;
        }
        Ok(())
    }

    /// What a stored watch of `allocation`'s name follows by id (a failed
    /// try's port left bound, volumes deleted or stuck): to be deleted,
    /// never taken for the twin of a create that lost its answer.
    async fn followed_by_a_watch(
        &self,
        allocation: &Allocation,
    ) -> Result<Vec<String>, AttemptError> {
        let name = allocation.resource_name();
        let watches = self
            .store
            .list_twin_watches_of(&allocation.params.request_id)
            .await
            .map_err(|e| AttemptError::Request(e.into()))?;
        Ok(watches
            .into_iter()
            .filter(|w| w.name == name)
            .flat_map(|w| {
                let deleted = w.deleted_volumes.into_iter().map(|d| d.id);
                w.bound_ports
                    .into_iter()
                    .chain(w.stuck_volume)
                    .chain(deleted)
            })
            .collect())
    }

    /// The watch of `allocation`'s name from now: keeping its own port and
    /// volume when `committed`, nothing after a rollback.
    pub(crate) fn twin_watch(&self, allocation: &Allocation, committed: bool) -> TwinWatch {
        let now = self.sizing_book().wall_now(&self.settings.sizing);
        let keep = match committed {
            true => [&allocation.port_id, &allocation.volume_id]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            false => Vec::new(),
        };
        TwinWatch {
            name: allocation.resource_name(),
            request_id: allocation.params.request_id.clone(),
            pool: Some(allocation.params.pool.clone()),
            volumes: matches!(allocation.params.volume.source, VolumeSource::New { .. }),
            keep,
            stuck_volume: None,
            deleted_volumes: Vec::new(),
            deleted_only: false,
            bound_ports: Vec::new(),
            until: now.checked_add(TWIN_WATCH).unwrap_or(now),
        }
    }

    /// Stores `watch` in place of the watch of its name as stored now,
    /// following up what that one does ([`TwinWatch::absorb`]): a pass
    /// may have named volumes it deleted in it, or marked one stuck. By
    /// compare-and-swap, again if a pass changed it in between.
    pub(crate) async fn write_twin_watch(&self, watch: TwinWatch) -> ManagerResult<()> {
        loop {
            let stored = self
                .store
                .list_twin_watches_of(&watch.request_id)
                .await?
                .into_iter()
                .find(|w| w.name == watch.name);
            let mut next = watch.clone();
            if let Some(stored) = &stored {
                next.absorb(stored);
                if *stored == next {
                    return Ok(());
                }
            }
            if self
                .store
                .cas_twin_watch(stored.as_ref(), Some(&next))
                .await?
            {
                return Ok(());
            }
        }
    }

    /// Deletes the twins a create whose answer was lost may have left (see
    /// [`Allocation::creates_in_doubt`]): the ports, and the volumes when
    /// warmpool created them, that carry the watched name but are not kept.
    /// Returns what is for a watch to follow up ([`TwinsLeft`]): the
    /// volumes among them whose delete Cinder accepted, now or earlier
    /// (`deleting`, `error_deleting`), as accepted is not done, and the
    /// ports a SOFT_DELETED server keeps bound. One that cannot be deleted
    /// (a volume Cinder keeps `error_attaching` until an admin resets it)
    /// holds up none of the others: the first failure is returned beside
    /// them, once all were tried. Every failure, the first too, is warned
    /// of here, as a reconcile pass's items are
    /// ([`crate::reconciler::PassFailures`]): once per listing or twin and
    /// problem, and hourly while it lasts, not at every pass, purchase,
    /// rollback or release that looks again. Callers do not warn of the
    /// returned one again: paced by whoever looked, a listing newly
    /// refused that came first (ports are listed before volumes) was left
    /// at debug behind another's warning of the same kind.
    pub(crate) async fn delete_twins(
        &self,
        watch: &TwinWatch,
        deadline: Instant,
    ) -> (TwinsLeft, ManagerResult<()>) {
        // A port left bound to a SOFT_DELETED server is followed by id
        // (`TwinWatch::bound_ports`), without waiting for the reclaim.
        let twin = |id: &String| !watch.keep.contains(id) && !watch.bound_ports.contains(id);
        let mut left = TwinsLeft::default();
        // Each with what it was: the key its warnings are paced by.
        let mut failed: Vec<(String, ManagerError)> = Vec::new();
        let listing_ports = format!("listing the ports named {}", watch.name);
        match self
            .retry(deadline, || self.cloud.find_ports_by_name(&watch.name))
            .await
        {
            Ok(ports) => {
                self.pass_failures().done(&listing_ports);
                for port in ports.iter().filter(|p| twin(&p.id)) {
                    tracing::info!(request_id = %watch.request_id, port = %port.id, "deleting the twin of a port create whose answer was lost");
                    let deleting = format!("deleting twin port {}", port.id);
                    // A failed try's port carries the name too, and one its
                    // SOFT_DELETED server keeps bound is freed only by Nova's
                    // reclaim, days away maybe: it must fail no rollback
                    // nor release until then. The try named it in a stored
                    // watch already; the caller names it in the one it
                    // writes, in case.
                    match self.delete_port_unless_held(&port.id, deadline).await {
                        Ok(PortDelete::Gone) => self.pass_failures().done(&deleting),
                        Ok(PortDelete::Held { server_id }) => {
                            self.pass_failures().done(&deleting);
                            tracing::info!(request_id = %watch.request_id, port = %port.id, server = %server_id, "the port stays bound to its SOFT_DELETED server until Nova reclaims it; the twin watch deletes it then");
                            left.bound_ports.push(port.id.clone());
                        }
                        Err(e) => failed.push((deleting, e)),
                    }
                }
            }
            Err(e) => failed.push((listing_ports, e.into())),
        }
        let going = &mut left.going_volumes;
        if watch.volumes {
            let listing_volumes = format!("listing the volumes named {}", watch.name);
            match self
                .retry(deadline, || self.cloud.find_volumes_by_name(&watch.name))
                .await
            {
                Ok(volumes) => {
                    self.pass_failures().done(&listing_volumes);
                    for volume in volumes.iter().filter(|v| twin(&v.id)) {
                        // One already being deleted (the rollback's own, just
                        // now; one a pass deleted, which Cinder's backend may
                        // have failed to) is on its way: Cinder refuses to
                        // delete it again.
                        if !volume.is_being_deleted() {
                            tracing::info!(request_id = %watch.request_id, volume = %volume.id, "deleting the twin of a volume create whose answer was lost");
                            let deleting = format!("deleting twin volume {}", volume.id);
                            if let Err(e) = self
                                .delete_volume_when_free(&volume.id, LetGoBy::AnyServer, deadline)
                                .await
                            {
                                failed.push((deleting, e));
                                continue;
                            }
                            self.pass_failures().done(&deleting);
                        }
                        going.push(volume.id.clone());
                    }
                }
                Err(e) => failed.push((listing_volumes, e.into())),
            }
        }
        let mut first = None;
        for (item, e) in failed {
            let warn = self
                .pass_failures()
                .failed(item.clone(), problem_of(&e), Instant::now());
            if warn {
                tracing::warn!(request_id = %watch.request_id, error = %e, "cannot delete a twin of a lost create yet ({item} failed): mend what the error names; the next reconcile pass tries again (warned of again hourly while it fails so; each try meanwhile is logged at debug)");
            } else {
                tracing::debug!(request_id = %watch.request_id, error = %e, "cannot delete a twin of a lost create yet ({item} failed again)");
            }
            first.get_or_insert(e);
        }
        (left, first.map_or(Ok(()), Err))
    }

    /// An order whose record an operator set aside as unreadable keeps its
    /// id: buying it again could hand the tenant a second database, and
    /// "not found" would tell billing the order never was.
    pub(crate) async fn refuse_if_set_aside(&self, request_id: &str) -> ManagerResult<()> {
        if self
            .store
            .is_set_aside(RecordKind::Allocation, request_id)
            .await?
        {
            return Err(ManagerError::FailedPrecondition(format!(
                "the record of allocation {request_id} was set aside as unreadable by this \
                 warmpoold version (`warmpoold store check` lists it); the order cannot be \
                 allocated, read or released until a warmpoold that reads it (the version that \
                 wrote it) starts: its start moves the record back"
            )));
        }
        Ok(())
    }

    /// What a stored order answers a call of it: the order once it is done
    /// (on disk), a refusal if the call's parameters are not the order's,
    /// `None` while a call works on it.
    async fn stored_answer(
        &self,
        existing: Allocation,
        params: &AllocationParams,
        started: Instant,
    ) -> ManagerResult<Option<Allocation>> {
        // Stored before ids were made canonical, in the case sent.
        let stored = existing.params.clone().canonical();
        if stored != *params {
            let differ = stored.differences(params);
            let refused = ManagerError::Aborted(format!(
                "request_id {} was already used with other parameters ({} {}): a new order needs a new request id",
                params.request_id,
                differ.join(", "),
                if differ.len() == 1 { "differs" } else { "differ" }
            ));
            // Counted in the order's own pool: the request's may be one the
            // metrics have no label for.
            self.count_refusal(&existing.params.pool, &params.request_id, &refused, started)
                .await;
            return Err(refused);
        }
        if existing.state == AllocationState::Allocating {
            return Ok(None);
        }
        // Its commit may still be on its way to disk.
        self.store.flush().await.map_err(|e| {
            let what = format_args!("allocation {}", params.request_id);
            ManagerError::unconfirmed(what, e)
        })?;
        Ok(Some(existing))
    }

    /// Waits for the next change of the store while another call works on
    /// order `request_id`. A stop ends the wait as it ends a purchase's wait
    /// on its pool (`wait_on_pool`): the call waited on may give up and roll
    /// back, and this one would then find no order and start a new purchase
    /// during the stop.
    async fn wait_for_order(
        &self,
        request_id: &str,
        deadline: Instant,
        changes: &mut ChangeCursor,
    ) -> ManagerResult<()> {
        let shutting_down = || ManagerError::ShuttingDown {
            call: ApiCall::Allocate,
        };
        let mut stopping = self.stop_waiting.subscribe();
        let mut shutdown = self.shutdown.subscribe();
        tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => Err(shutting_down()),
            _ = shutdown.wait_for(|stop| *stop) => Err(shutting_down()),
            woke = tokio::time::timeout_at(deadline, changes.changed()) => woke.map(drop).map_err(|_| {
                ManagerError::TryAgain(format!(
                    "allocation {request_id} is still in progress; retry later"
                ))
            }),
        }
    }

    /// Buys order `request.params` if no call has recorded it yet; `None`
    /// if one has (found at the compare-and-swap that writes the record, or
    /// after a refusal of its checks, [`Self::refuse_unrecorded`]).
    /// Run as a task of the manager ([`PoolManager::detached`]): it is
    /// finished whether or not its caller still waits.
    async fn purchase(
        self: &Arc<Self>,
        request: AllocateRequest,
        started: Instant,
        deadline: Instant,
        after_wait: Option<AfterWait>,
    ) -> ManagerResult<Option<Allocation>> {
        let params = &request.params;
        self.refuse_if_set_aside(&params.request_id).await?;
        let pool = match self.pool(&params.pool).await {
            Ok(pool) => pool,
            Err(e @ ManagerError::PoolNotFound(_)) if self.recorded_since(params).await => {
                tracing::debug!(request_id = %params.request_id, refusal = %e, "order recorded by another call meanwhile; answering as it");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if pool.draining {
            let refused = deleted_pool(&params.pool, true);
            return self.refuse_unrecorded(params, refused, started).await;
        }
        // In flight before the record exists: a reconcile pass must never
        // see this Allocating record unclaimed and roll it back. And before
        // the volume's and the network's checks, which may retry Cinder and
        // Neutron up to the deadline: a GetAllocation or Release meanwhile
        // answers "in progress", not NOT_FOUND. The checks change nothing
        // in the cloud (the volume's tag check writes no key), so nothing
        // needs the record before them.
        let _in_flight = InFlight::enter(self, &params.request_id);
        if let Err(e) = self.fence_volume(params, deadline).await {
            return self.refuse_unrecorded(params, e, started).await;
        }
        if let Err(e) = self.fence_network(params, deadline).await {
            return self.refuse_unrecorded(params, e, started).await;
        }
        let salt = rand::Rng::gen(&mut *self.attempt_salts.lock().expect("attempt salt lock"));
        let allocation = Allocation::new(params.clone(), salt);
        if !self.store.cas_allocation(None, Some(&allocation)).await? {
            return Ok(None);
        }
        if let Err(e) = self.store.flush().await {
            // Nothing was done on its strength: take it back, so a retry
            // starts afresh now rather than finding an order in progress
            // until the reconciler rolls it back.
            match self.store.cas_allocation(Some(&allocation), None).await {
                // A call with the same id waiting on it goes ahead.
                Ok(_) => self.changed(),
                Err(undo) => {
                    tracing::warn!(request_id = %params.request_id, error = %undo, "cannot take back an order whose record was not flushed; the reconciler will")
                }
            }
            let what = format_args!("order {}", params.request_id);
            return Err(ManagerError::not_recorded(what, e));
        }
        self.complete_purchase(&request, allocation, started, deadline, after_wait)
            .await
            .map(Some)
    }

    /// Whether a call of order `params` has recorded it since `allocate`
    /// found it unrecorded. Two calls of one order (billing's retry after
    /// its deadline, a hedged request) may both find no record and check
    /// the order side by side: the one that records it first attaches the
    /// tenant's volume, and the other's look then finds it in use (by the
    /// order's own server), or deleted by a release of the order. That
    /// refusal is no answer to the order, whose record's is: `allocate`
    /// gives it, waits for it, or refuses other parameters ABORTED, as for
    /// a call that came later. The record is never this call's own: it
    /// writes its record only once its checks have passed. One that cannot
    /// be read leaves the refusal as the answer.
    async fn recorded_since(&self, params: &AllocationParams) -> bool {
        matches!(
            self.store.get_allocation(&params.request_id).await,
            Ok(Some(_))
        )
    }

    /// Refuses order `params`, found unrecorded, with `refused`, counted;
    /// or, if another call has recorded it meanwhile ([`recorded_since`]),
    /// leaves the answer to its record (`None`), counting nothing: the
    /// call is a duplicate, not a refused order.
    ///
    /// [`recorded_since`]: Self::recorded_since
    async fn refuse_unrecorded(
        &self,
        params: &AllocationParams,
        refused: ManagerError,
        started: Instant,
    ) -> ManagerResult<Option<Allocation>> {
        if self.recorded_since(params).await {
            tracing::debug!(request_id = %params.request_id, refusal = %refused, "order recorded by another call meanwhile; answering as it");
            return Ok(None);
        }
        self.count_refusal(&params.pool, &params.request_id, &refused, started)
            .await;
        Err(refused)
    }

    /// Fulfils the order recorded `Allocating`, or rolls it back. The
    /// caller holds the order's [`InFlight`] throughout.
    async fn complete_purchase(
        self: &Arc<Self>,
        request: &AllocateRequest,
        allocation: Allocation,
        started: Instant,
        deadline: Instant,
        after_wait: Option<AfterWait>,
    ) -> ManagerResult<Allocation> {
        let params = &request.params;
        let record = Record {
            shared: self,
            current: Mutex::new(allocation),
            waited: AtomicBool::new(false),
            made: AtomicBool::new(false),
            after_wait,
        };
        let span =
            tracing::info_span!("allocate", request_id = %params.request_id, pool = %params.pool);
        let outcome = tracing::Instrument::instrument(
            self.fulfil(&record, request.empty_pool, deadline, started),
            span,
        )
        .await;
        // A commit whose flush failed was written all the same: the record
        // says Allocated and the tenant's volume and port are attached. It
        // is no failure to roll back, and no failure to answer either: the
        // answer waits for the disk, as the same call again does (it
        // flushes before it answers).
        let (outcome, unconfirmed) = match outcome {
            Err(e @ ManagerError::Store(_)) => {
                match self.store.get_allocation(&params.request_id).await {
                    Ok(Some(stored)) if stored.state == AllocationState::Allocated => {
                        (Ok(stored), Some(e))
                    }
                    _ => (Err(e), None),
                }
            }
            outcome => (outcome, None),
        };
        let allocation = record.get().await;
        let latency = started.elapsed();
        let counted = allocation_outcome(&outcome, record.waited.load(Ordering::SeqCst));
        self.emit(
            Some(&params.pool),
            EventKind::Allocation {
                request_id: params.request_id.clone(),
                outcome: counted,
                latency,
            },
        );
        match outcome {
            Ok(done) => {
                let key = &done.params.pool;
                let warm = done.warm_hit;
                let _ = self
                    .update_pool(key, |p| match counted {
                        AllocationOutcome::Warm => p.allocations_warm += 1,
                        AllocationOutcome::Waited => p.allocations_waited += 1,
                        _ => p.allocations_cold += 1,
                    })
                    .await;
                let waited = counted == AllocationOutcome::Waited;
                tracing::info!(
                    request_id = %done.params.request_id,
                    pool = %key,
                    server = %done.server_id.as_deref().unwrap_or("none"),
                    instance = %done.instance_id.as_deref().unwrap_or("none"),
                    warm,
                    waited,
                    total = ?done.timings.total,
                    "allocated"
                );
                if done.creates_in_doubt {
                    // A first look at once, not on the purchase's time; the
                    // reconciler looks again while the watch lasts, and the
                    // release once more.
                    let shared = self.clone();
                    let mut watch = self.twin_watch(&done, true);
                    self.spawn(async move {
                        let deadline = shared.cleanup_deadline();
                        // A volume deleted is followed up by the watch of
                        // the name, whose passes find it by the name too;
                        // a failed try's port left bound, by id.
                        let (left, looked) = shared.delete_twins(&watch, deadline).await;
                        // Warned of (paced) by the look, each by its twin.
                        if let Err(e) = looked {
                            tracing::debug!(request_id = %watch.request_id, error = %e, "cannot delete the twins of a lost create yet; the reconciler tries again");
                        }
                        if !left.bound_ports.is_empty() {
                            left.follow_in(&mut watch);
                            if let Err(e) = shared.write_twin_watch(watch).await {
                                tracing::warn!(error = %e, "cannot name a port left bound in the twin watch; the watch stored names it already");
                            }
                        }
                    });
                }
                if let Some(e) = unconfirmed {
                    return Err(ManagerError::unconfirmed(
                        format!("allocation {}", done.params.request_id),
                        e,
                    ));
                }
                Ok(done)
            }
            Err(e) => {
                let exhausted = counted == AllocationOutcome::Exhausted;
                // A fail-fast Allocate on an empty pool made nothing (it is
                // refused before its volume and port): the pool's exhausted
                // event is the warning. One that made its volume or port,
                // or claimed or booted an instance (a cold boot refused for
                // quota or past its deadline, a WAIT that timed out) has
                // them rolled back, and is warned of as such.
                if exhausted && !record.made.load(Ordering::SeqCst) {
                    tracing::info!(request_id = %params.request_id, pool = %params.pool, error = %e, "allocation failed: no instance for it");
                } else {
                    tracing::warn!(request_id = %params.request_id, pool = %params.pool, error = %e, "allocation failed; rolling back");
                }
                let _ = self
                    .update_pool(&params.pool, |p| {
                        p.allocations_failed += 1;
                        p.allocations_exhausted += u64::from(exhausted);
                    })
                    .await;
                if let Err(rollback) = self.roll_back(&allocation, false).await {
                    tracing::error!(request_id = %params.request_id, error = %rollback, "rollback incomplete; reconciler will finish it");
                }
                Err(e)
            }
        }
    }

    /// A volume that is not `available` in the Cinder zone the pool's
    /// volumes use (`volume_availability_zone`, else the pool's AZ) is
    /// never attached, nor a multiattach one: Cinder's reservation keeps a
    /// second attach of a single-attach volume out (two orders naming it
    /// both found it `available`), not of a multiattach one. Nor one
    /// warmpool can tell is another tenant's ([`refuse_if_another_tenants`]).
    /// It writes nothing: an untagged volume is tagged for the order's
    /// tenant once the order is served ([`Self::tag_for_the_tenant`]),
    /// which is first checked to be possible
    /// ([`Self::refuse_unless_taggable`], an empty write).
    async fn fence_volume(
        &self,
        params: &AllocationParams,
        deadline: Instant,
    ) -> ManagerResult<()> {
        let volume_id = match &params.volume.source {
            VolumeSource::Existing { volume_id } => volume_id,
            VolumeSource::New { .. } => {
                return self
                    .refuse_if_volume_stuck(&params.request_id, deadline)
                    .await
            }
        };
        let volume = match self
            .retry(deadline, || self.cloud.get_volume(volume_id))
            .await
        {
            Ok(volume) => volume,
            Err(CloudError::NotFound(_)) => return Err(volume_not_seen(volume_id)),
            Err(e) => return Err(e.into()),
        };
        refuse_if_another_tenants(&volume, &params.tenant_project_id)?;
        // Before its state: no detach or wait makes it attachable.
        if volume.multiattach {
            let kind = volume.volume_type.as_deref().unwrap_or("unknown");
            return Err(ManagerError::FailedPrecondition(format!(
                "volume {volume_id} is multiattach (type {kind}); warmpool attaches a database's volume to one server only: two servers writing one MySQL data directory corrupt it, and Cinder keeps a second server off only a single-attach volume; retype it to a single-attach volume type (openstack volume set --type <type> --retype-policy on-demand {volume_id})"
            )));
        }
        if volume.status != VolumeStatus::Available {
            if let Some(passing) = self.passing_unavailability(&volume).await {
                return Err(passing);
            }
            return Err(not_attachable(volume_id, &volume.status));
        }
        let zone = self.cloud.volume_zone_for(&params.pool.availability_zone);
        if volume.availability_zone != zone {
            return Err(ManagerError::FailedPrecondition(format!(
                "volume {volume_id} is in volume availability zone {}, but pool {} attaches volumes from zone {zone}",
                volume.availability_zone, params.pool
            )));
        }
        if needs_tag(&volume) {
            self.refuse_unless_taggable(volume_id, &params.tenant_project_id, deadline)
                .await?;
        }
        Ok(())
    }

    /// The tenant's port is made on the order's network before any claim,
    /// and only on a network the order's tenant may use
    /// ([`refuse_unless_the_tenants_network`]): looked at here, before the
    /// order is recorded, so a refusal leaves nothing (no record, no port).
    /// A management network, which every pool server is on, is refused
    /// whatever its shares ([`Network::management`]): no share is to be
    /// made for it. Neutron is asked whom the network is shared with only
    /// when the tenant does not own it.
    async fn fence_network(
        &self,
        params: &AllocationParams,
        deadline: Instant,
    ) -> ManagerResult<()> {
        let network_id = &params.network.network_id;
        let tenant = &params.tenant_project_id;
        let network = match self
            .retry(deadline, || self.cloud.get_network(network_id))
            .await
        {
            Ok(network) => network,
            Err(CloudError::NotFound(m)) => {
                return Err(ManagerError::FailedPrecondition(format!(
                    "network {network_id}: {m} (there is none of that id, or warmpool's cloud user cannot see it: a member sees only its own project's networks and those shared with it); a tenant's port goes on the tenant's network, given by its Neutron id: check the network_id sent"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(what) = &network.management {
            return Err(ManagerError::FailedPrecondition(
                management_network_refusal(network_id, what),
            ));
        }
        if owned_by(&network, tenant) {
            return Ok(());
        }
        let shares = self
            .retry(deadline, || self.cloud.network_shares(&network.id))
            .await?;
        let of_warmpool =
            network.owner == NetworkOwner::Warmpool || shares.contains(&NetworkShare::Warmpool);
        // Warmpool's project id is asked only when it could matter (the
        // driver keeps it from its token: no call to Keystone each time).
        let tenant_is_warmpools = of_warmpool
            && match self.retry(deadline, || self.cloud.cloud_identity()).await? {
                CloudIdentity::OpenStack { project_id, .. } => {
                    project_id.eq_ignore_ascii_case(tenant)
                }
                CloudIdentity::Embedded => false,
            };
        refuse_unless_the_tenants_network(&network, &shares, tenant, tenant_is_warmpools)
    }

    /// No new volume is made for an order while one a rolled-back try of it
    /// made is stuck `error_attaching`: a Cinder backend that leaves every
    /// attach so would otherwise cost warmpool's volume quota one stuck
    /// volume per retry. Cinder is asked, not only the watch, so the order
    /// goes through as soon as an admin has reset or deleted the volume,
    /// before a reconcile pass has deleted it or ended the watch.
    async fn refuse_if_volume_stuck(
        &self,
        request_id: &str,
        deadline: Instant,
    ) -> ManagerResult<()> {
        let watches = self.store.list_twin_watches_of(request_id).await?;
        let stuck = watches.iter().filter_map(|w| w.stuck_volume.as_deref());
        for volume_id in stuck {
            match self
                .retry(deadline, || self.cloud.get_volume(volume_id))
                .await
            {
                Ok(v) if v.status.is_error_attaching() => {
                    return Err(ManagerError::Cloud(CloudError::Transient(format!(
                        "volume {volume_id}, made for an earlier try of order {request_id}, is still error_attaching: an attach of it failed in Cinder, which refuses its delete until a cloud admin resets its state (openstack volume set --state available {volume_id}; warmpool then deletes it) or force-deletes it; until then the order is refused, so that retries do not pile up stuck volumes"
                    ))))
                }
                Ok(_) | Err(CloudError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A volume that cannot be attached only for now: Cinder still creating
    /// or detaching it, or every server it is attached to being deleted (a
    /// failed try of this very order's, say). The caller is to ask again,
    /// not to change the request: billing may drop an order refused as
    /// its own to mend. A server warmpool cannot see (another project's)
    /// says nothing, and the volume stays the caller's to detach.
    async fn passing_unavailability(&self, volume: &Volume) -> Option<ManagerError> {
        let id = &volume.id;
        if let Some(passing) = passing_state_refusal(id, &volume.status) {
            return Some(passing);
        }
        match volume.status {
            VolumeStatus::InUse | VolumeStatus::Attaching if !volume.attached_to.is_empty() => {}
            _ => return None,
        }
        for server in &volume.attached_to {
            match self.cloud.read_server(server).await {
                Ok(s) if s.is_going() => {}
                _ => return None,
            }
        }
        Some(ManagerError::TryAgain(format!(
            "volume {id} is still attached to server {}, which is being deleted; ask again once it is gone",
            volume.attached_to.join(", ")
        )))
    }

    async fn fulfil(
        self: &Arc<Self>,
        record: &Record<'_>,
        policy: EmptyPoolPolicy,
        deadline: Instant,
        started: Instant,
    ) -> ManagerResult<Allocation> {
        let params = record.get().await.params;
        // Fail fast before creating anything the answer would not use; so
        // does a cold boot of a paused pool, which boots nothing.
        let refused = match policy {
            EmptyPoolPolicy::FailFast => true,
            EmptyPoolPolicy::ColdBoot => self.pool(&params.pool).await?.spec.paused,
            EmptyPoolPolicy::Wait => false,
        };
        if refused && self.unclaimed_ready(&params.pool).await?.is_empty() {
            self.emit(Some(&params.pool), EventKind::Exhausted);
            return Err(self.no_ready_instance(&params.pool).await);
        }
        record.made.store(true, Ordering::SeqCst);
        if let Err(e) = self.create_tenant_resources(record, deadline).await {
            return Err(self.refused_before_the_claim(&params.pool, e).await);
        }
        // The port counts in the port quota from now on: a cold boot's
        // server needs only its own. A failed try deletes it, and the next
        // makes another after its claim.
        let mut own_port = Some(gate::lock(&self.gate).tenant_port_made());
        // The timeout bounds the purchase up to the claim: a volume seen
        // available only after it is too late, however soon after.
        if Instant::now() >= deadline {
            let late = ManagerError::DeadlineExceeded(format!(
                "the purchase's timeout ({}) passed while its volume and port were made; no instance was claimed (a new volume takes seconds: ask again with a longer timeout)",
                humantime::format_duration(deadline.saturating_duration_since(started))
            ));
            return Err(self.refused_before_the_claim(&params.pool, late).await);
        }
        // A new volume was just seen available; after a failed try it may
        // still be detaching from the discarded instance.
        let mut volume_available = matches!(params.volume.source, VolumeSource::New { .. });
        // Servers of failed tries: each lets go of the volume when its
        // deletion completes, if a detach did not.
        let mut discarded_servers = Vec::new();
        // One count per call that found the pool empty, also over tries.
        let mut counted_empty = false;
        // Over tries too: a purchase that waited for an instance to become
        // Ready did not find one on arrival, whichever try it is served by.
        let mut waited_for_ready = false;
        // The failure of the last try of the request, once one failed: what
        // the purchase answers if it gets no other instance.
        let mut last_failure: Option<ManagerError> = None;
        // The last instance found silent at its claim: no try of the
        // request, so never the purchase's answer, only said beside it.
        let mut last_dead: Option<ManagerError> = None;
        // Instances found silent at their claim and put back: not claimed
        // again while the reconciler still counts them silent.
        let mut found_silent: Vec<String> = Vec::new();
        let mut discarded = 0u32;
        loop {
            let wait_started = Instant::now();
            let (instance, from_ready) = self
                .obtain_instance(
                    &params,
                    policy,
                    deadline,
                    started,
                    &mut counted_empty,
                    &mut waited_for_ready,
                    own_port,
                    &found_silent,
                )
                .await
                .map_err(|e| no_other_instance(e, last_failure.take(), last_dead.take()))?;
            let waited = wait_started.elapsed();
            let warm = from_ready && !waited_for_ready;
            record
                .waited
                .store(from_ready && waited_for_ready, Ordering::SeqCst);
            let claimed_at = Instant::now();
            let attach_deadline = deadline.max(deadline_after(claimed_at, CLAIMED_ATTACH_GRACE));
            record
                .update(|a| {
                    a.instance_id = Some(instance.id.clone());
                    a.server_id = instance.server_id.clone();
                    a.warm_hit = warm;
                    a.timings.wait += waited;
                })
                .await?;
            // A cold-booted instance was probed a moment ago by its boot.
            let answers = match from_ready {
                true => self.mysqld_answers(&instance).await,
                false => Ok(()),
            };
            let claim = claimed_at.elapsed();
            // Nothing of the request was tried on an instance silent at
            // its claim: nothing to detach, the order's port stays for the
            // next, and it does not count toward MAX_DISCARDED_PER_PURCHASE.
            // Nor is it deleted on one look unless Nova confirms it broken:
            // a probe failing on warmpoold's side (its management network,
            // its file descriptors, a CPU starved past the probe's
            // timeout) makes every mysqld look dead, and each purchase
            // would empty the pool. It goes back, for the reconciler's two
            // silent passes to judge.
            if let Err(silence) = answers {
                let silence = silence.into_error();
                let error = if let Some(broken) = self.server_broken(&instance).await {
                    tracing::warn!(instance = %instance.id, error = %silence, "discarding the claimed instance: {broken}");
                    let reason = format!("{silence}; {broken}");
                    match self
                        .discard_untouched(&instance, &params.request_id, &reason)
                        .await
                    {
                        Ok(()) => {}
                        Err(e @ ManagerError::Store(_)) => return Err(e),
                        // Its record says Deleting: the reconciler finishes it.
                        Err(e) => {
                            tracing::warn!(instance = %instance.id, error = %e, "cannot delete the silent instance's server now; the reconciler will")
                        }
                    }
                    record.forget_instance().await?;
                    with_more(silence, format_args!("{broken}, so it was discarded"))
                } else {
                    // Noted before it is back: the put-back wakes waiting
                    // purchases, which would otherwise claim it first (the
                    // oldest) and spend a probe on it. Noted for nothing if it
                    // does not go back, which sorts no other instance after it.
                    self.silent_at_claim
                        .lock()
                        .expect("silent-at-claim lock")
                        .insert(instance.id.clone());
                    match self.put_back(record, &instance, &silence).await? {
                        PutBack::Ready => {
                            found_silent.push(instance.id.clone());
                            with_more(
                                silence,
                                "it is back in the pool, and replaced if it is silent on two reconcile passes",
                            )
                        }
                        PutBack::Drained => {
                            with_more(silence, "it was discarded, its pool being deleted")
                        }
                        PutBack::Taken => silence,
                    }
                };
                if Instant::now() >= deadline {
                    return Err(no_other_instance(
                        deadline_passed(),
                        last_failure,
                        Some(error),
                    ));
                }
                last_dead = Some(error);
                continue;
            }
            let attach_calls = AttachCalls::default();
            let volume = VolumeBefore {
                known_available: volume_available,
                discarded_servers: &discarded_servers,
            };
            let attempt = self
                .attach_and_verify(record, &instance, attach_deadline, volume, &attach_calls)
                .await;
            volume_available = false;
            // The tag last, once nothing but the commit is left: an order
            // that fails leaves an untagged volume untagged.
            let attempt = match attempt {
                Ok(untagged) => match self.take_for_good(&instance, &params.request_id).await {
                    Ok(()) => match untagged {
                        Some(volume_id) => {
                            let tenant = &params.tenant_project_id;
                            self.tag_for_the_tenant(&volume_id, tenant, attach_deadline)
                                .await
                        }
                        None => Ok(()),
                    },
                    Err(failure) => Err(failure),
                },
                Err(failure) => Err(failure),
            };
            match attempt {
                Ok(()) => {
                    let current = record.get().await;
                    if current.creates_in_doubt {
                        // Stored before the commit, so that no crash can
                        // leave a committed allocation's twins unwatched.
                        // Over a failed try's watch of a port it left
                        // bound, which it goes on following.
                        let watch = self.twin_watch(&current, true);
                        self.write_twin_watch(watch).await?;
                    }
                    // The commit: nothing may fail after it, since a retry
                    // or GetAllocation may read it back at once.
                    let done = record
                        .update(|a| {
                            a.state = AllocationState::Allocated;
                            a.timings.claim = claim;
                            a.timings.total = started.elapsed();
                        })
                        .await?;
                    return Ok(done);
                }
                Err(failure) => {
                    let (error, retry) = match failure {
                        AttemptError::Instance(e) => (e, true),
                        AttemptError::Request(e) => (e, false),
                    };
                    // The request's failure, and nothing of it reached the
                    // instance: nothing to detach, nor a reason to discard
                    // it. The order's port and volume are the rollback's,
                    // as after any failure that ends the purchase.
                    if !retry && attach_calls.none_acted() {
                        let id = &instance.id;
                        return Err(match self.put_back(record, &instance, &error).await? {
                            PutBack::Ready => with_more(
                                error,
                                format_args!("no attach reached instance {id}, which is back in the pool"),
                            ),
                            PutBack::Drained => with_more(
                                error,
                                format_args!("no attach reached instance {id}, which was discarded, its pool being deleted"),
                            ),
                            PutBack::Taken => error,
                        });
                    }
                    // A cleanup that fails is the rollback's to finish (and
                    // then the reconciler's): the record still names the
                    // instance (Claimed here, or Allocated once taken for
                    // good, when the tag's write failed; Deleting after the
                    // discard below) and the port, as it did when this
                    // answered the cleanup's error. The try's failure is
                    // what the caller can act on.
                    match self.detach_attachments(record, &instance).await {
                        Ok(()) => {}
                        Err(e @ ManagerError::Store(_)) => return Err(e),
                        Err(e) => {
                            tracing::warn!(instance = %instance.id, error = %e, "cannot detach the failed try's volume and port now; the rollback (or the reconciler) will");
                            return Err(with_more(
                                error,
                                format_args!("the purchase stopped there, as the try's cleanup failed too ({e}); warmpool finishes that cleanup itself"),
                            ));
                        }
                    }
                    tracing::warn!(instance = %instance.id, error = %error, "discarding instance after a failed try");
                    match self
                        .discard_instance(&instance.id, &error.to_string())
                        .await
                    {
                        Ok(()) => {}
                        Err(e @ ManagerError::Store(_)) => return Err(e),
                        // Its record says Deleting (flushed before the
                        // delete was asked for): the reconciler finishes it.
                        Err(e) => {
                            tracing::warn!(instance = %instance.id, error = %e, "cannot delete the failed try's server now; the reconciler will")
                        }
                    }
                    // After the discard: a port Nova would not detach is
                    // bound until its server is deleted, and a member-only
                    // user may not delete it before. One left undeleted
                    // stays recorded, for the rollback to delete: the next
                    // try would take it for its own, bound to the server
                    // just discarded.
                    match self.delete_port_of_try(record).await {
                        Ok(()) => {}
                        Err(e @ ManagerError::Store(_)) => return Err(e),
                        Err(e) => {
                            tracing::warn!(instance = %instance.id, error = %e, "cannot delete the failed try's port now; the rollback (or the reconciler) will");
                            return Err(with_more(
                                error,
                                format_args!("the purchase stopped there, as the try's cleanup failed too ({e}); warmpool finishes that cleanup itself"),
                            ));
                        }
                    }
                    own_port = None;
                    discarded_servers.extend(instance.server_id.clone());
                    discarded += 1;
                    record.forget_instance().await?;
                    if !retry {
                        return Err(error);
                    }
                    if discarded >= MAX_DISCARDED_PER_PURCHASE {
                        return Err(with_more(
                            error,
                            format_args!(
                                "the purchase tried {discarded} instances of pool {} and discarded each after a failed try; a failure met on two is taken for the request's or the cloud's, so no other is tried (the pool keeps the rest): mend what the failure names, or call again later",
                                params.pool
                            ),
                        ));
                    }
                    if Instant::now() >= deadline {
                        return Err(with_more(
                            error,
                            "its instance was discarded, and the purchase's deadline passed before another instance could be tried: call again, with a longer timeout if need be",
                        ));
                    }
                    last_failure = Some(error);
                    // Looked at before the next claim: a volume the failed
                    // attach left error_attaching for good would fail the
                    // next try only once it had claimed another warm
                    // instance, which is then discarded too (touched by
                    // the purchase). A look that fails says nothing: the
                    // next try looks again.
                    let current = record.get().await;
                    if let Some(volume_id) = &current.volume_id {
                        let stuck = match self.cloud.get_volume(volume_id).await {
                            Ok(v) if v.status.is_error_attaching() => self
                                .error_attaching_for_good(volume_id, &discarded_servers)
                                .await
                                .then_some(v.status),
                            _ => None,
                        };
                        if let Some(status) = stuck {
                            return Err(not_attachable_after_a_try(
                                volume_id,
                                &status,
                                current.volume_created,
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Why Nova shows the instance's server broken for good, if it does
    /// ([`broken_for_good`]), gone or being deleted. Then its silent
    /// mysqld is no probe's fault. A server Nova cannot tell about now is
    /// not.
    async fn server_broken(&self, instance: &Instance) -> Option<String> {
        let Some(server_id) = &instance.server_id else {
            return Some("it has no server".into());
        };
        match self.cloud.read_server(server_id).await {
            Ok(s) if s.is_going() => Some(format!("its server {server_id} is being deleted")),
            Ok(s) => broken_for_good(&s).map(|why| format!("its server {server_id} is {why}")),
            Err(CloudError::NotFound(_)) => Some(format!("its server {server_id} is gone")),
            Err(_) => None,
        }
    }

    /// Whether the claimed instance's mysqld still answers: one probe
    /// before anything is attached keeps a silent database from being
    /// handed out.
    async fn mysqld_answers(&self, instance: &Instance) -> Result<(), AttemptError> {
        match self.silence_of(instance).await {
            None => Ok(()),
            Some(reason) => Err(AttemptError::Instance(ManagerError::FailedPrecondition(
                format!(
                    "mysqld of instance {} does not answer: {reason}",
                    instance.id
                ),
            ))),
        }
    }

    /// Moves the instance this Allocate claimed on to `Allocated`, before
    /// the allocation record says `Allocated`: once that record is written
    /// the answer is given, so the instance must already be beyond anyone
    /// else's reach (an instance still `Claimed` is discarded by a rollback,
    /// which would leave an `Allocated` record naming a deleted server). If
    /// the claim is no longer this Allocate's, the instance is lost to it.
    async fn take_for_good(
        &self,
        instance: &Instance,
        request_id: &str,
    ) -> Result<(), AttemptError> {
        let taken = self
            .update_instance(&instance.id, |current| {
                (current.state == InstanceState::Claimed
                    && current.request_id.as_deref() == Some(request_id))
                .then(|| {
                    let mut next = current.clone();
                    next.state = InstanceState::Allocated;
                    Some(next)
                })
            })
            .await
            .map_err(AttemptError::Request)?;
        match taken {
            Some(_) => Ok(()),
            None => Err(AttemptError::Instance(ManagerError::FailedPrecondition(
                format!(
                    "instance {} was taken out of service while being attached",
                    instance.id
                ),
            ))),
        }
    }

    /// A claimed instance, and whether it was claimed Ready: from the pool,
    /// or per the empty-pool policy. `waited_for_ready` is set once a WAIT
    /// purchase has to wait for a change (a look again at once, after a
    /// change it had not seen, such as another purchase's claim of an
    /// instance it saw Ready, is no wait). `own_port`: the purchase's
    /// tenant port is made (its number at the gate,
    /// [`Gate::tenant_port_made`]). `found_silent`: instances the purchase
    /// found silent at their claim ([`Shared::claim_ready`]). `started`:
    /// when the Allocate started, which its demand is dated to.
    #[allow(clippy::too_many_arguments)]
    async fn obtain_instance(
        self: &Arc<Self>,
        params: &AllocationParams,
        policy: EmptyPoolPolicy,
        deadline: Instant,
        started: Instant,
        counted_empty: &mut bool,
        waited_for_ready: &mut bool,
        own_port: Option<u64>,
        found_silent: &[String],
    ) -> ManagerResult<(Instance, bool)> {
        let mut changes = self.changes.subscribe();
        loop {
            if let Some(instance) = self.claim_ready(params, found_silent).await? {
                return Ok((instance, true));
            }
            // One count per call that found the pool empty: a waiting call
            // wakes on every write of any pool.
            if !std::mem::replace(counted_empty, true) {
                // Its demand counts now, not when it ends (a cold boot's a
                // lead time later), whatever its outcome: the pool had no
                // instance for it. Only past its volume and port, so an
                // order a quota refused those (no want of an instance)
                // still feeds no demand.
                self.count_order(&params.pool, &params.request_id, started);
                self.emit(Some(&params.pool), EventKind::Exhausted);
            }
            match policy {
                EmptyPoolPolicy::FailFast => {
                    let silent = self.ready_found_silent(&params.pool, found_silent).await?;
                    if silent > 0 {
                        let pool = self.store.get_pool(&params.pool).await?;
                        return Err(none_but_silent(&params.pool, silent, pool.as_ref(), false));
                    }
                    return Err(self.no_ready_instance(&params.pool).await);
                }
                EmptyPoolPolicy::ColdBoot => {
                    return self
                        .cold_boot(
                            params,
                            deadline,
                            own_port,
                            &mut changes,
                            found_silent,
                            waited_for_ready,
                        )
                        .await
                }
                EmptyPoolPolicy::Wait => {
                    let (pool, woke) = self
                        .wait_on_pool(&mut changes, &params.pool, deadline)
                        .await?;
                    match woke {
                        Woke::Unseen => {}
                        Woke::Changed => *waited_for_ready = true,
                        Woke::TimedOut => {
                            let silent =
                                self.ready_found_silent(&params.pool, found_silent).await?;
                            if silent > 0 {
                                return Err(none_but_silent(
                                    &params.pool,
                                    silent,
                                    Some(&pool),
                                    true,
                                ));
                            }
                            return Err(no_ready_instance_in(&pool, true));
                        }
                    }
                }
            }
        }
    }

    /// Waits, for a purchase that holds nothing yet, until the next change
    /// of the store or `until` (how it ended), then reads its pool again.
    /// A stop ([`PoolManager::stop_waiting`]) ends the wait at once with
    /// `ShuttingDown`, a pool being deleted with its refusal.
    async fn wait_on_pool(
        &self,
        changes: &mut ChangeCursor,
        pool: &PoolKey,
        until: Instant,
    ) -> ManagerResult<(PoolRecord, Woke)> {
        let mut stopping = self.stop_waiting.subscribe();
        // A timeout polls its future before its clock: past the deadline, a
        // change already there would wake the purchase to look again, and
        // under writes that keep coming (other pools' boots, operators'
        // updates) it would look again and again past its deadline.
        if Instant::now() >= until {
            return Ok((self.pool_open_to_purchases(pool).await?, Woke::TimedOut));
        }
        let woke = tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => return Err(ManagerError::ShuttingDown {
                call: ApiCall::Allocate,
            }),
            woke = tokio::time::timeout_at(until, changes.changed()) => match woke {
                Ok(true) => Woke::Changed,
                Ok(false) => Woke::Unseen,
                Err(_) => Woke::TimedOut,
            },
        };
        Ok((self.pool_open_to_purchases(pool).await?, woke))
    }

    /// The pool, or FAILED_PRECONDITION if it is being deleted or gone.
    async fn pool_open_to_purchases(&self, key: &PoolKey) -> ManagerResult<PoolRecord> {
        match self.store.get_pool(key).await? {
            Some(pool) if !pool.draining => Ok(pool),
            gone => Err(deleted_pool(key, gone.is_some())),
        }
    }

    /// A deadline that passed before the claim is DEADLINE_EXCEEDED only
    /// if the pool had a Ready instance to give then: of an empty pool a
    /// longer timeout would not have served it, so it is the pool's miss
    /// (RESOURCE_EXHAUSTED, counted exhausted, and announced as the pool's
    /// exhaustion as any purchase finding it empty is) as it was before the
    /// volume was late. A quota refusing the order's volume or port says
    /// what the pool held, so that nobody takes it for the pool's shortage.
    /// Any other failure is passed on as it is.
    async fn refused_before_the_claim(&self, pool: &PoolKey, error: ManagerError) -> ManagerError {
        match error {
            ManagerError::DeadlineExceeded(late) => match self.unclaimed_ready(pool).await {
                Ok(ready) if ready.is_empty() => {
                    self.emit(Some(pool), EventKind::Exhausted);
                    let hint = match self.store.get_pool(pool).await {
                        Ok(Some(record)) => paused_hint(&record),
                        _ => "",
                    };
                    ManagerError::ResourceExhausted(format!(
                        "pool {pool} had no ready instance at the deadline{hint}; {late}"
                    ))
                }
                _ => ManagerError::DeadlineExceeded(late),
            },
            ManagerError::Cloud(CloudError::QuotaExceeded(quota)) => {
                let held = match self.unclaimed_ready(pool).await {
                    Ok(ready) if ready.is_empty() => format!(
                        "the purchase was refused before it asked pool {pool} for an instance (it has none Ready now)"
                    ),
                    Ok(ready) => format!(
                        "pool {pool} has {} Ready instance{} and none was claimed: the pool is not what was short",
                        ready.len(),
                        if ready.len() == 1 { "" } else { "s" }
                    ),
                    Err(_) => "no instance of the pool was claimed for it".to_owned(),
                };
                ManagerError::Cloud(CloudError::QuotaExceeded(format!("{quota}; {held}")))
            }
            error => error,
        }
    }

    /// RESOURCE_EXHAUSTED for a fail-fast purchase of an empty pool, and a
    /// cold boot of a paused one.
    async fn no_ready_instance(&self, pool: &PoolKey) -> ManagerError {
        match self.store.get_pool(pool).await {
            Ok(Some(record)) => no_ready_instance_in(&record, false),
            _ => empty_pool(pool, false, false),
        }
    }

    /// How many of the pool's unclaimed Ready instances the purchase found
    /// silent at their claim and put back (`found_silent`): while it finds
    /// no other, the pool is not empty, only empty of instances for it.
    async fn ready_found_silent(
        &self,
        pool: &PoolKey,
        found_silent: &[String],
    ) -> ManagerResult<usize> {
        if found_silent.is_empty() {
            return Ok(0);
        }
        let ready = self.unclaimed_ready(pool).await?;
        Ok(ready
            .iter()
            .filter(|i| found_silent.contains(&i.id))
            .count())
    }

    /// The pool's Ready instances nobody has claimed, oldest first (so
    /// instances do not age out unused). A purchase may take one before
    /// this one claims it.
    async fn unclaimed_ready(&self, pool: &PoolKey) -> ManagerResult<Vec<Instance>> {
        let mut ready: Vec<Instance> = self
            .store
            .list_untouched_instances(pool)
            .await?
            .into_iter()
            .filter(|i| i.state == InstanceState::Ready && i.request_id.is_none())
            .collect();
        ready.sort_by_key(|i| i.ready_at);
        Ok(ready)
    }

    /// Creates the tenant's new volume (until it is available) and its
    /// port before any instance is claimed. A request the cloud refuses (an
    /// unknown volume type or network, an address in use, a volume that
    /// fails to build) then fails without taking a warm instance out of the
    /// pool, so a caller retrying a bad request cannot drain it, and a cold
    /// boot is not started for a purchase that cannot be fulfilled.
    async fn create_tenant_resources(
        &self,
        record: &Record<'_>,
        deadline: Instant,
    ) -> ManagerResult<()> {
        let started = Instant::now();
        let (volume, port) = tokio::join!(
            async {
                let r = self.ready_new_volume(record, deadline).await;
                (r, started.elapsed())
            },
            async {
                let r = self.port_for(record, deadline).await;
                (r, started.elapsed())
            },
        );
        let (volume_took, port_took) = (volume.1, port.1);
        volume.0.map_err(AttemptError::into_error)?;
        port.0.map_err(AttemptError::into_error)?;
        record
            .update(|a| {
                a.timings.volume = volume_took;
                a.timings.port = port_took;
            })
            .await?;
        Ok(())
    }

    /// Creates the volume of a `VolumeSource::New` request if it has none
    /// yet, and waits until it is available.
    async fn ready_new_volume(
        &self,
        record: &Record<'_>,
        deadline: Instant,
    ) -> Result<(), AttemptError> {
        let params = record.get().await.params;
        if !matches!(params.volume.source, VolumeSource::New { .. }) {
            return Ok(());
        }
        let volume_id = self.volume_for(record, deadline).await?;
        let phase = Phase::Created {
            after_wait: record.after_wait,
        };
        self.wait_volume(&volume_id, deadline, phase, |status, _| {
            *status == VolumeStatus::Available
        })
        .await
        .map(drop)
    }

    /// Claims one Ready instance of the pool by compare-and-swap: one not
    /// found silent lately (by the last reconcile pass, or by a purchase
    /// at its claim since) first, then of the image the pool boots now (an
    /// image change is a new MySQL for the next tenant, not once the old
    /// image's are used up), then oldest first. None that `found_silent`
    /// names while it is still counted silent: the purchase would only
    /// find it so again; once a pass hears it, it may be claimed again.
    async fn claim_ready(
        &self,
        params: &AllocationParams,
        found_silent: &[String],
    ) -> ManagerResult<Option<Instance>> {
        let mut ready = self.unclaimed_ready(&params.pool).await?;
        let mut silent = self.silent_ready.lock().expect("silent-ready lock").clone();
        silent.extend(
            self.silent_at_claim
                .lock()
                .expect("silent-at-claim lock")
                .iter()
                .cloned(),
        );
        ready.retain(|i| !(silent.contains(&i.id) && found_silent.contains(&i.id)));
        let image = match self.store.get_pool(&params.pool).await? {
            Some(pool) => Some(self.cloud.boot_image(&pool.spec.image)),
            None => None,
        };
        // Stable: oldest first within each kind.
        ready.sort_by_key(|i| {
            let other_image = image.as_deref().is_some_and(|im| i.is_of_other_image(im));
            (silent.contains(&i.id), other_image)
        });
        for instance in ready {
            let mut claimed = instance.clone();
            claimed.state = InstanceState::Claimed;
            claimed.request_id = Some(params.request_id.clone());
            if self
                .store
                .cas_instance(Some(&instance), Some(&claimed))
                .await?
            {
                self.store.flush().await?;
                self.changed();
                return Ok(Some(claimed));
            }
        }
        Ok(None)
    }

    /// A purchase's own boot, or, while it waits for quota room, an
    /// instance of its pool that becomes Ready meanwhile (a refill, one put
    /// back, a late cold boot handed over): claimed, with `true`, and
    /// `waited_for_ready` set, as a WAIT purchase served so is. `changes`:
    /// the cursor `obtain_instance` took before its claim, so that no
    /// change since is missed.
    async fn cold_boot(
        self: &Arc<Self>,
        params: &AllocationParams,
        deadline: Instant,
        own_port: Option<u64>,
        changes: &mut ChangeCursor,
        found_silent: &[String],
        waited_for_ready: &mut bool,
    ) -> ManagerResult<(Instance, bool)> {
        let flavor = &params.pool.flavor;
        let az = &params.pool.availability_zone;
        // In line for quota, or admitted once room is found.
        let mut queue: Option<QuotaPlace> = None;
        let mut refusals = 0u32;
        // After a refusal for quota: no boot before then.
        let mut retry_at: Option<Instant> = None;
        // Why the last look found no room, for the answer at the deadline.
        let mut why_full = String::new();
        let ready = loop {
            if queue.is_some() {
                // Each look while in line: a Ready instance serves the
                // purchase sooner than a boot, and the room it leaves is
                // the refills'. Out of line once claimed (`queue` dropped).
                if let Some(instance) = self.claim_ready(params, found_silent).await? {
                    *waited_for_ready = true;
                    return Ok((instance, true));
                }
                // The last look was at the deadline: a boot started now
                // would only miss it.
                if Instant::now() >= deadline {
                    return Err(quota_used_up(flavor, &why_full));
                }
            }
            let now = Instant::now();
            let mut next_look = retry_at.filter(|at| *at > now);
            // At quota a boot would only be refused: wait in line (ahead of
            // speculative refills) until the cloud's limits show room.
            if next_look.is_none() && self.settings.gate.enabled {
                match self.quota_room(&params.pool, own_port, &mut queue).await {
                    // Admitted: the room is this purchase's.
                    QuotaRoom::Room => {}
                    QuotaRoom::Full(limited_by) => {
                        why_full = limited_by
                            .map(|by| format!(" ({by} at the last poll)"))
                            .unwrap_or_default();
                        // The limits are read again when due (the gate's
                        // interval, or sooner once a refusal, or a server
                        // seen gone since the last poll was sent, makes
                        // the reading stale, which a change of the store
                        // wakes the wait to see; not while the zone waits
                        // out a throttle), never more often than a poll
                        // interval.
                        let now = Instant::now();
                        let due = gate::lock(&self.gate).purchase_poll_at(az, flavor, now);
                        next_look = Some(due.max(deadline_after(
                            now,
                            self.settings.poll_interval.max(MIN_QUOTA_PAUSE),
                        )));
                    }
                    // No release makes room: waiting would only use up the timeout.
                    QuotaRoom::Beyond(why) => {
                        return Err(ManagerError::FailedPrecondition(format!(
                            "no {flavor} server fits the project's quota ({why}); raise the quota or buy a smaller flavor"
                        )))
                    }
                }
            }
            if let Some(until) = next_look {
                queue.get_or_insert_with(|| QuotaPlace::join(&self.gate, &params.pool.flavor));
                self.wait_for_quota(params, changes, deadline, until)
                    .await?;
                continue;
            }
            // The pool read now that the room is granted: it may have been
            // deleted, or deleted and created anew with another spec, while
            // the purchase waited. Under the pool lock a deletion takes,
            // as a refill records its boots, so none comes in between.
            let (instance, claim) = {
                let _guard = self.pool_lock.lock().await;
                let pool = self.pool_open_to_purchases(&params.pool).await?;
                // Paused since the purchase found no Ready instance: it
                // boots nothing (a boot recorded before the pause goes on).
                if pool.spec.paused {
                    return Err(no_ready_instance_in(&pool, false));
                }
                // A boot takes minutes, longer than any grace period: begun
                // now, it would hold the stop for the whole grace and be
                // rolled back by the next start. It holds nothing yet, as
                // a purchase waiting on its pool does (`wait_on_pool`).
                if *self.stop_waiting.borrow() {
                    return Err(ManagerError::ShuttingDown {
                        call: ApiCall::Allocate,
                    });
                }
                self.record_new_instance(&pool, Some(params.request_id.clone()))
                    .await?
            };
            // The boot's ticket holds the purchase's room from now on: its
            // place (admitted, or in line when the gate is off or the room
            // is unknown) goes under the same lock, or purchases and refills
            // would find that room taken twice until the instance is Ready.
            let ticket = {
                let mut locked = gate::lock(&self.gate);
                if let Some(place) = queue.take() {
                    place.leave_locked(&mut locked);
                }
                BootTicket::start_locked(&self.gate, &mut locked, az, flavor, false)
            };
            // The boot runs as a task of its own, which the purchase only
            // waits on: dropped at the deadline, it could be dropped in the
            // middle of its create, leaving a server no record names (the
            // next reconcile pass would delete it as a leak), and a boot
            // most of the way done would be wasted.
            let boot = self.boot_in_background(instance.clone(), claim, ticket);
            let ready = tokio::time::timeout_at(deadline, boot).await;
            match ready {
                Ok(Ok(Ok(ready))) => break ready,
                // The task ended without an answer, its driving claim let
                // go of (`DrivingClaim`): the purchase's rollback discards
                // the instance, or a reconcile pass does. Aborted or never
                // started, the manager stops; otherwise the boot panicked,
                // and a client told "shutting down" would wait for a
                // restart that is not coming.
                Ok(Err(_)) => {
                    if *self.shutdown.borrow() {
                        return Err(ManagerError::ShuttingDown {
                            call: ApiCall::Allocate,
                        });
                    }
                    return Err(ManagerError::Internal(format!(
                        "the task of the cold boot in pool {} ended without an answer; the boot is undone",
                        params.pool
                    )));
                }
                Ok(Ok(Err(BootError::Cloud(CloudError::QuotaExceeded(m))))) => {
                    // Someone took the room (or the limits are unknown):
                    // wait in line, backing off so refusals do not pile up.
                    // The refusal made the reading stale: the next look
                    // reads the limits before it boots again.
                    refusals += 1;
                    tracing::info!(request_id = %params.request_id, %flavor, "cold boot refused for quota; waiting: {m}");
                    why_full = format!(" (the cloud refused its boot: {m})");
                    queue.get_or_insert_with(|| QuotaPlace::join(&self.gate, &params.pool.flavor));
                    let pause = self
                        .settings
                        .poll_interval
                        .saturating_mul(2u32.saturating_pow(refusals.min(5)));
                    retry_at = Some(deadline_after(Instant::now(), pause.max(MIN_QUOTA_PAUSE)));
                }
                Ok(Ok(Err(e))) => return Err(cold_boot_failed(&params.pool, e)),
                Err(_) => {
                    // Not handed over, it stays the order's, and the
                    // purchase's rollback discards it as a drain does a
                    // boot in flight: its record, kept `Deleting` for its
                    // task, gets the server its create makes, which the
                    // task deletes, and ends.
                    let handover = self
                        .hand_over_to_pool(&instance.id, &params.request_id, Handing::Deadline)
                        .await?;
                    return Err(ManagerError::ResourceExhausted(format!(
                        "cold boot in pool {} did not finish before the deadline; {}",
                        params.pool,
                        handover.fate()
                    )));
                }
            }
        };
        // Still reserved for this order: the reservation is given up only
        // by the handover above, after which this purchase has answered.
        let claimed = self
            .update_instance(&ready.id, |current| {
                (current.state == InstanceState::Ready
                    && current.request_id.as_deref() == Some(params.request_id.as_str()))
                .then(|| {
                    let mut next = current.clone();
                    next.state = InstanceState::Claimed;
                    Some(next)
                })
            })
            .await?
            .ok_or_else(|| {
                ManagerError::ResourceExhausted("cold-booted instance vanished".into())
            })?;
        self.store.flush().await?;
        Ok((claimed, false))
    }

    /// Drives a purchase's cold boot on a task of the manager (tracked, so
    /// stopped at shutdown, as the replenisher's boots are: the next
    /// start's reconcile resumes it) and answers how it ended. The boot
    /// owns the driving `claim` and the gate's `ticket`, not the purchase.
    /// The answer is an error (its sender dropped) only when the task ended
    /// without one: aborted, or, the manager stopping, never started (the
    /// ticket then ends, dropped), or panicked; the claim is let go of all
    /// the same, dropped with the task.
    fn boot_in_background(
        self: &Arc<Self>,
        instance: Instance,
        claim: DrivingClaim,
        ticket: BootTicket,
    ) -> tokio::sync::oneshot::Receiver<Result<Instance, BootError>> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let shared = self.clone();
        self.spawn(async move {
            let ready = shared
                .drive_boot_with(instance, claim, ticket, Timed::FromNow)
                .await;
            // A purchase past its deadline no longer listens.
            let _ = answer.send(ready);
        });
        answered
    }

    /// Gives a cold boot its purchase no longer waits for to the pool, if
    /// the pool has room for it: its reservation for `request_id` is
    /// cleared (and flushed) while it is still booting or Ready, so it
    /// counts as the pool's supply, the next purchase claims it once
    /// Ready, and the purchase's rollback, which discards what is reserved
    /// for its order, leaves it to its boot. A boot that fails from here on
    /// is discarded by its task as any failed boot is; one already failed
    /// is left to that. Whether it was handed over, or why not.
    ///
    /// Only while the pool's supply, boots in flight included, is below
    /// max_ready (and the pool is not being deleted): a client retrying a
    /// timed-out order starts a boot on every retry while the one handed
    /// over is still booting, and each handed over would take the pool
    /// above max_ready (with max_ready 0, every one would be retired as
    /// soon as it is Ready). Counted and handed over under the pool lock,
    /// which a change of max_ready takes too, and a refill step for its
    /// last count and its boots: two handovers counting at once would both
    /// find room for one, and so would a handover and a refill.
    async fn hand_over_to_pool(
        &self,
        id: &str,
        request_id: &str,
        why: Handing,
    ) -> ManagerResult<Handover> {
        let _guard = self.pool_lock.lock().await;
        let Some(instance) = self.store.get_instance(id).await? else {
            return Ok(Handover::Undone);
        };
        // Looked at first: a failed boot is discarded whatever the pool.
        if instance.state == InstanceState::Failed {
            return Ok(Handover::BootFailed);
        }
        let pool = self.pool(&instance.pool).await?;
        if pool.draining {
            return Ok(Handover::PoolDeleted);
        }
        if self.supply_of(&pool).await? >= pool.spec.max_ready {
            return Ok(Handover::NoRoom);
        }
        // The state the record was last seen in, to tell why it was not
        // handed over.
        let mut seen = None;
        let handed = self
            .update_instance(id, |current| {
                seen = Some(current.state);
                (current.request_id.as_deref() == Some(request_id) && current.state.is_supply())
                    .then(|| {
                        let mut next = current.clone();
                        next.request_id = None;
                        Some(next)
                    })
            })
            .await?;
        if handed.is_none() {
            return Ok(match seen {
                Some(InstanceState::Failed) => Handover::BootFailed,
                _ => Handover::Undone,
            });
        }
        self.store.flush().await?;
        match why {
            Handing::Deadline => {
                tracing::info!(%request_id, instance = %id, "cold boot missed its purchase's deadline; it joins the pool when ready")
            }
            Handing::Stop => {
                tracing::info!(%request_id, instance = %id, "cold boot cut off by the shutdown with its purchase; it joins the pool when ready (the next start goes on with its boot, and rolls the order back)")
            }
        }
        Ok(Handover::Handed)
    }

    /// At shutdown, once the purchases' tasks are stopped: the cold boots
    /// still reserved for their orders (purchases cut off at the end of
    /// the grace period, or by a second signal) are handed to their pools
    /// as at a purchase's deadline, room permitting, so that the next
    /// start's reconcile, which rolls the orders back, goes on with the
    /// boots instead of deleting them: a boot takes minutes, and the order
    /// called again after the restart finds it warm. One not handed over is
    /// rolled back with its order, as before.
    pub(crate) async fn hand_over_cold_boots(&self) {
        let instances = match self.store.list_instances().await {
            Ok(instances) => instances,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list instances to hand the cold boots cut off to their pools; the next start rolls them back with their orders");
                return;
            }
        };
        for instance in instances {
            let Some(request_id) = instance.request_id.as_deref() else {
                continue;
            };
            // Reserved for an order and not yet claimed by it: only a
            // cold boot is.
            if !instance.state.is_supply() {
                continue;
            }
            match self
                .hand_over_to_pool(&instance.id, request_id, Handing::Stop)
                .await
            {
                Ok(Handover::Handed) => {}
                Ok(other) => {
                    tracing::info!(%request_id, instance = %instance.id, "cold boot cut off by the shutdown with its purchase, not kept: {}", other.fate())
                }
                Err(e) => {
                    tracing::warn!(%request_id, instance = %instance.id, error = %e, "cannot hand a cold boot cut off by the shutdown to its pool; the next start rolls it back with its order")
                }
            }
        }
    }

    /// Whether the flavor's quota has room for a cold boot, whose tenant
    /// port is made when `own_port` ([`Gate::purchase_headroom`]); with
    /// room, the purchase is admitted (`place`, out of line if in it) under
    /// the lock it was found under, so that the next purchase to look finds
    /// it taken. The headroom is polled when never polled yet, and
    /// re-polled when a poll is due ([`Gate::purchase_poll_at`]: the
    /// refills' `headroom_interval`, or at once once a refusal, or a server
    /// seen gone since the last poll was sent, made it stale; not while
    /// Nova's or Keystone's throttle pause, every AZ's, holds the pool)
    /// and it says "full", or a quota
    /// refusal since made it stale: the room it shows is not trusted then
    /// (trusted, a purchase whose boot the cloud refused booted again and
    /// again on it, each refused, until the next poll). The cache is the
    /// one the replenisher's polls share; a failing poll says "not known
    /// to be full", and its 429 is the gate's, as a refill's poll's is:
    /// Nova's pauses every AZ's refills and halves the zone's window (a
    /// boot's own call), Keystone's (its token renewal) halves nothing.
    async fn quota_room<'a>(
        &'a self,
        pool: &'a crate::model::PoolKey,
        own_port: Option<u64>,
        place: &mut Option<QuotaPlace<'a>>,
    ) -> QuotaRoom {
        let flavor = &pool.flavor;
        let az = &pool.availability_zone;
        let boots_at_send = {
            let mut gate = gate::lock(&self.gate);
            let room = self.quota_room_of(&gate, flavor, own_port);
            let never = gate.headroom_status(flavor).polled_at.is_none();
            // A refusal since the poll (this purchase's own boot's, say):
            // the room the reading shows may be gone, and a boot on it
            // would only be refused again.
            let stale = gate.headroom_stale(flavor);
            let now = Instant::now();
            let due = gate.purchase_poll_at(az, flavor, now) <= now;
            let poll = never || ((stale || matches!(room, QuotaRoom::Full(_))) && due);
            if !poll {
                if matches!(room, QuotaRoom::Room) {
                    QuotaPlace::admit_locked(place, &self.gate, &mut gate, flavor);
                }
                return room;
            }
            gate.boots_started()
        };
        let (polled, service) = noting_service(self.poll_headroom(flavor)).await;
        let now = Instant::now();
        let mut gate = gate::lock(&self.gate);
        let room = match polled {
            Ok((h, sales_ports)) => {
                if gate.headroom_failing(flavor) {
                    tracing::info!(%flavor, "quota headroom can be read again: boots are capped by it again");
                }
                gate.headroom_polled(flavor, boots_at_send, h, sales_ports, now);
                self.quota_room_of(&gate, flavor, own_port)
            }
            Err(e) => {
                if let ManagerError::Cloud(CloudError::Throttled { retry_after, .. }) = &e {
                    // Nova's limits (Neutron's port quota failing is no
                    // failed poll): the cold boot's own call, which
                    // halves the zone's window as a refill's poll does. Or
                    // the token renewal inside it: Keystone's, which
                    // halves nothing.
                    let call = ThrottledCall::new(service, true);
                    gate.throttled(az, call, *retry_after, now);
                }
                // Once per outage, as the refills' polls are.
                if gate.headroom_failing(flavor) {
                    tracing::debug!(%flavor, error = %e, "cannot read quota headroom yet");
                } else {
                    tracing::warn!(%flavor, error = %e, "cannot read quota headroom; purchases are paced by quota refusals only until it can be read again (logged at info)");
                }
                gate.headroom_failed(flavor, e.to_string(), now);
                QuotaRoom::Room
            }
        };
        if matches!(room, QuotaRoom::Room) {
            QuotaPlace::admit_locked(place, &self.gate, &mut gate, flavor);
        }
        room
    }

    /// The room a purchase has by the gate's cached headroom.
    fn quota_room_of(&self, gate: &Gate, flavor: &str, own_port: Option<u64>) -> QuotaRoom {
        match QuotaRoom::of(
            &gate.headroom_status(flavor),
            gate.purchase_headroom(flavor, own_port),
        ) {
            QuotaRoom::Full(_) => QuotaRoom::Full(gate.purchase_limited_by(flavor)),
            room => room,
        }
    }

    /// Waits, in line for quota, until `until` (cut to the deadline: the
    /// last look is at it, never a pause past it) or the next change of the
    /// store, whichever comes first, for the purchase to look again: a
    /// change may be an instance becoming Ready, a server freed, a refusal
    /// making the cached headroom stale. Fails at once as a purchase
    /// waiting for a Ready instance does (`wait_on_pool`): the manager
    /// stopping, the pool being deleted (whose drain frees quota this
    /// purchase would otherwise take for a server in it); and the pool
    /// paused, which boots nothing.
    async fn wait_for_quota(
        &self,
        params: &AllocationParams,
        changes: &mut ChangeCursor,
        deadline: Instant,
        until: Instant,
    ) -> ManagerResult<()> {
        // Looked at before the wait as well: the cursor may have seen the
        // change that paused or deleted the pool already.
        let pool = self.pool_open_to_purchases(&params.pool).await?;
        if pool.spec.paused {
            return Err(no_ready_instance_in(&pool, false));
        }
        let (pool, _) = self
            .wait_on_pool(changes, &params.pool, until.min(deadline))
            .await?;
        if pool.spec.paused {
            return Err(no_ready_instance_in(&pool, false));
        }
        Ok(())
    }

    async fn attach_and_verify(
        &self,
        record: &Record<'_>,
        instance: &Instance,
        deadline: Instant,
        volume: VolumeBefore<'_>,
        calls: &AttachCalls,
    ) -> Result<Option<String>, AttemptError> {
        let server_id = instance.server_id.as_deref().ok_or_else(|| {
            AttemptError::Instance(ManagerError::FailedPrecondition(
                "instance has no server".into(),
            ))
        })?;
        let volume_started = Instant::now();
        let port_started = Instant::now();
        let (volume, port) = tokio::join!(
            async {
                let r = self
                    .attach_volume(record, server_id, deadline, volume, calls)
                    .await;
                (r, volume_started.elapsed())
            },
            async {
                let r = self.attach_port(record, server_id, deadline, calls).await;
                (r, port_started.elapsed())
            },
        );
        let ((volume_id, untagged), volume_took) = (volume.0?, volume.1);
        let (port_id, port_took) = (port.0?, port.1);

        let verify_started = Instant::now();
        let server = self
            .server_to_verify(server_id, deadline, "for the purchase's verify")
            .await?;
        // In any case: an order stored before ids were made canonical
        // holds its volume id as sent, and Nova lists Cinder's.
        let lists = |ids: &[String], id: &str| ids.iter().any(|i| i.eq_ignore_ascii_case(id));
        if !server.is_usable()
            || !lists(&server.attached_volumes, &volume_id)
            || !lists(&server.attached_ports, &port_id)
        {
            return Err(AttemptError::Instance(ManagerError::FailedPrecondition(
                format!(
                    "server {server_id} failed verification: status {:?}{}, volumes {:?}, ports {:?}",
                    server.status,
                    if server.deleting { " (being deleted)" } else { "" },
                    server.attached_volumes,
                    server.attached_ports
                ),
            )));
        }
        let verify = verify_started.elapsed();
        record
            .update(|a| {
                // After the creates (`create_tenant_resources`).
                a.timings.volume += volume_took;
                a.timings.port += port_took;
                a.timings.verify = verify;
            })
            .await
            .map_err(AttemptError::Request)?;
        Ok(untagged.then_some(volume_id))
    }

    /// The try's server as [`crate::cloud::Cloud::get_server`] reads it
    /// (Nova's view, with the ports Neutron lists bound to it once
    /// ACTIVE), read a service at a time so that a failure names the
    /// service that failed. A server Nova no longer knows is the
    /// instance's failure; any other failed read is the cloud's
    /// ([`look_failed`]), and a port Neutron could not list fails the
    /// look, as `get_server`'s does. For the verify, and for the look at a
    /// port attach Nova refused as a conflict; `look` says which in a
    /// failure's message.
    async fn server_to_verify(
        &self,
        server_id: &str,
        deadline: Instant,
        look: &str,
    ) -> Result<Server, AttemptError> {
        let mut server = self.server_for_a_look(server_id, deadline, look).await?;
        if server.status == ServerStatus::Active {
            server.attached_ports = self
                .retry(deadline, || self.cloud.ports_bound_to(server_id))
                .await
                .map_err(|e| {
                    look_failed(
                        e,
                        "network service (Neutron)",
                        format_args!("to list the ports of server {server_id} {look}"),
                    )
                })?;
        }
        Ok(server)
    }

    /// Attaches the allocation's volume and waits until it is in use by the
    /// server. Unless the volume is known to be available (warmpool's own,
    /// just seen so), it is looked at first: an existing one is fenced again
    /// (it may have been attached elsewhere since the request was checked),
    /// and either may still be held by an instance a failed try discarded.
    /// Returns the volume's id, and whether it came untagged, to be tagged
    /// for the order's tenant once the order is served
    /// ([`check_held_volume`]).
    async fn attach_volume(
        &self,
        record: &Record<'_>,
        server_id: &str,
        deadline: Instant,
        before: VolumeBefore<'_>,
        calls: &AttachCalls,
    ) -> Result<(String, bool), AttemptError> {
        let volume_id = self.volume_for(record, deadline).await?;
        let created = record.get().await.volume_created;
        if !before.known_available {
            let phase = Phase::BeforeAttach {
                discarded_servers: before.discarded_servers,
                created,
            };
            self.wait_volume(&volume_id, deadline, phase, |status, _| {
                *status == VolumeStatus::Available
            })
            .await?;
        }
        let az = record.get().await.params.pool.availability_zone;
        let attached = self
            .send_attach(
                deadline,
                &az,
                calls,
                || self.cloud.attach_volume(server_id, &volume_id),
                |maybe_done| {
                    self.volume_attach_is_this_ones(
                        &volume_id, server_id, deadline, maybe_done, created,
                    )
                },
            )
            .await?;
        match attached {
            Ok(()) => {}
            // A 409 is the volume's (in use, another zone) unless the
            // server cannot take an attach now: Nova refuses one to a
            // server in ERROR, to one busy with a task (a snapshot, a
            // migration: any task_state), and to a locked one. Then the
            // next instance may.
            Err(CloudError::Conflict(m)) => {
                // A read the cloud fails here is the cloud's, not a reason
                // to send the client to mend its volume.
                let server_usable = self
                    .server_for_a_look(
                        server_id,
                        deadline,
                        &format!(
                            "to see whether it takes an attach now, after Nova refused the attach of volume {volume_id} as a conflict"
                        ),
                    )
                    .await?
                    .takes_an_attach_now();
                let refused = ManagerError::FailedPrecondition(format!(
                    "volume {volume_id} cannot be attached: {m}"
                ));
                return Err(if server_usable {
                    AttemptError::Request(refused)
                } else {
                    AttemptError::Instance(refused)
                });
            }
            Err(e) => return Err(attempt_error(e)),
        }
        let held = self
            .wait_volume(
                &volume_id,
                deadline,
                Phase::AfterAttach { server_id },
                |status, attached| *status == VolumeStatus::InUse && attached == [server_id],
            )
            .await?;
        let tenant = record.get().await.params.tenant_project_id;
        let untagged = check_held_volume(&held, &tenant)?;
        Ok((volume_id, untagged))
    }

    /// Tags `volume_id` with the order's `tenant` ([`META_TENANT`]): a
    /// volume of warmpool's project that came untagged ([`needs_tag`]:
    /// made there outside warmpool, kept by a warmpool from before the
    /// tag, or one whose owner Cinder's policy hides) is the tenant's from
    /// the order that is served it: once a release keeps it, with the
    /// tenant's data on it, [`refuse_if_another_tenants`] refuses it to
    /// another tenant's order.
    ///
    /// Written by the holder, once Cinder's reservation has made the try's
    /// server the volume's only attach, not at the fence: Cinder's metadata
    /// has no compare-and-swap, and two orders of different tenants naming
    /// one untagged volume both pass the fence, so a tag the loser of the
    /// attach wrote there could land after the winner's. Holders follow one
    /// another (a second attach waits for the volume to be `available`,
    /// which only the holder's release makes it, after its answer, after
    /// its tag), so the last tag is the last holder's. And written last,
    /// once the try is verified and its instance taken for good, right
    /// before the commit: an order that fails before it (a port attach
    /// refused, a verify) leaves the volume untagged, as it came, so an
    /// order naming another tenant's volume by mistake does not make it
    /// its own tenant's. Before the answer: no tenant is ever handed an
    /// untagged volume. A crash between the tag and the commit leaves
    /// the tag of an order served all but its record, rolled back, no
    /// tenant answered: other tenants' orders are refused the volume, and
    /// told how to remove the tag ([`refuse_if_another_tenants`]). A
    /// write that fails fails the try as the cloud's
    /// ([`look_failed`]): its server held the volume, and is discarded;
    /// a Cinder whose policy refuses the write refused the order before
    /// anything was done for it ([`Self::refuse_unless_taggable`]).
    async fn tag_for_the_tenant(
        &self,
        volume_id: &str,
        tenant: &str,
        deadline: Instant,
    ) -> Result<(), AttemptError> {
        let tag = BTreeMap::from([(META_TENANT.to_owned(), tenant.to_owned())]);
        self.retry(deadline, || self.cloud.set_volume_metadata(volume_id, &tag))
            .await
            .map_err(|e| {
                look_failed(
                    e,
                    "block-storage service (Cinder)",
                    format_args!(
                        "to tag volume {volume_id} with its tenant {tenant} (metadata {META_TENANT}) once attached"
                    ),
                )
            })?;
        tracing::info!(volume = %volume_id, %tenant, "tagged a volume that came untagged with the tenant whose order attached it");
        Ok(())
    }

    /// An untagged volume of warmpool's project is tagged for the order's
    /// tenant once the order is served ([`Self::tag_for_the_tenant`]); a
    /// Cinder whose policy refuses warmpool's user that write would fail
    /// the order only then, its warm server, which held the volume,
    /// discarded, and each call billing made again would cost one more.
    /// So the write is tried first, with no keys: Cinder checks its policy
    /// (`volume:create_volume_metadata`) before it looks at them, and an
    /// empty merge changes nothing, so this is a look, made before the
    /// order is recorded: a refusal leaves nothing behind.
    ///
    /// Only Cinder's 403 ([`CloudError::PolicyRefused`]) is the policy.
    /// Cinder refuses any metadata write to a volume being uploaded to an
    /// image or migrated too (a 400, InvalidVolume), which the volume may
    /// have begun since the fence's look: read again, it is then
    /// UNAVAILABLE, to ask again, as it would have been one call earlier.
    /// Any other refusal (a 401, a 400 on a volume still available) is the
    /// cloud's error as it came, with no policy to mend.
    async fn refuse_unless_taggable(
        &self,
        volume_id: &str,
        tenant: &str,
        deadline: Instant,
    ) -> ManagerResult<()> {
        let nothing = BTreeMap::new();
        let refused = match self
            .retry(deadline, || self.cloud.set_volume_metadata(volume_id, &nothing))
            .await
        {
            Ok(()) => return Ok(()),
            Err(CloudError::NotFound(_)) => return Err(volume_not_seen(volume_id)),
            Err(CloudError::PolicyRefused(m)) => return Err(ManagerError::FailedPrecondition(format!(
                "volume {volume_id} has no tenant tag ({META_TENANT} metadata), and Cinder's policy refuses warmpool's cloud user the metadata write that would tag it for tenant {tenant} ({m}); warmpool attaches an untagged volume of its project only if it can tag it, so that, released with the tenant's data on it, it is refused to other tenants: let warmpool's user write volume metadata (Cinder's policy volume:create_volume_metadata, a project member's by default), or, once sure whose the volume is, tag it yourself (openstack volume set --property {META_TENANT}=<tenant project id> {volume_id})"
            ))),
            Err(e @ (CloudError::Fatal(_) | CloudError::Conflict(_))) => e,
            Err(e) => return Err(e.into()),
        };
        if let Ok(volume) = self
            .retry(deadline, || self.cloud.get_volume(volume_id))
            .await
        {
            if let Some(passing) = passing_state_refusal(volume_id, &volume.status) {
                return Err(passing);
            }
        }
        Err(with_more(
            refused.into(),
            format_args!(
                "Cinder refused the check that warmpool may tag volume {volume_id} for its tenant (an empty metadata write, before the order is recorded: nothing was done for it)"
            ),
        ))
    }

    /// The allocation's volume: the one recorded, the tenant's existing one,
    /// or a new one created (and recorded) now.
    async fn volume_for(
        &self,
        record: &Record<'_>,
        deadline: Instant,
    ) -> Result<String, AttemptError> {
        let allocation = record.get().await;
        let params = &allocation.params;
        let volume_id = match (&allocation.volume_id, &params.volume.source) {
            (Some(id), _) => id.clone(),
            (None, VolumeSource::Existing { volume_id }) => volume_id.clone(),
            (
                None,
                VolumeSource::New {
                    size_gib,
                    volume_type,
                },
            ) => {
                let spec = NewVolumeSpec {
                    name: allocation.resource_name(),
                    size_gib: *size_gib,
                    volume_type: volume_type.clone(),
                    availability_zone: params.pool.availability_zone.clone(),
                    metadata: BTreeMap::from([(
                        META_TENANT.to_owned(),
                        params.tenant_project_id.clone(),
                    )]),
                };
                let (mut volume, in_doubt) = self
                    .create_doubting(deadline, &params.pool.availability_zone, || {
                        self.cloud.create_volume(&spec)
                    })
                    .await;
                self.note_create_in_doubt(record, in_doubt).await?;
                if in_doubt && refused_by_a_twin(&volume) {
                    // As for the port (`port_for`): the last room of the
                    // volumes or gigabytes quota went to its own twin.
                    let name = &spec.name;
                    let volumes = self
                        .retry(deadline, || self.cloud.find_volumes_by_name(name))
                        .await
                        .map_err(|e| AttemptError::Request(e.into()))?;
                    let followed = self.followed_by_a_watch(&allocation).await?;
                    if let Some(twin) = volumes
                        .into_iter()
                        .find(|v| !followed.contains(&v.id) && volume_serves(v, &spec))
                    {
                        tracing::info!(request_id = %params.request_id, volume = %twin.id, "a volume create whose answer was lost took effect: its volume is the order's");
                        volume = Ok(twin);
                    }
                }
                let volume = volume.map_err(|e| match e {
                    CloudError::QuotaExceeded(m) if exceeds_per_volume_limit(&m) => {
                        AttemptError::Request(over_the_per_volume_limit(*size_gib, &m))
                    }
                    e => volume_creation_refused(volume_type.as_deref(), e),
                })?;
                record
                    .update(|a| {
                        a.volume_id = Some(volume.id.clone());
                        a.volume_created = true;
                    })
                    .await
                    .map_err(AttemptError::Request)?;
                volume.id
            }
        };
        if allocation.volume_id.is_none() {
            record
                .update(|a| a.volume_id = Some(volume_id.clone()))
                .await
                .map_err(AttemptError::Request)?;
        }
        Ok(volume_id)
    }

    /// Polls the volume until `done`, waiting through transitional states
    /// (creating, attaching, detaching); any other state fails the request.
    /// After an accepted attach, `available` is transitional too: a cloud
    /// may answer before Cinder has even reserved the volume (Nova from
    /// microversion 2.101, which the OpenStack driver does not speak). But
    /// `available` after `attaching` is the attach undone: it failed on the
    /// compute host, and the instance is to blame; so is `error_attaching`
    /// (the volume was `available` before: the failed attach is this one).
    /// An attach the host fails before the first look leaves `attaching`
    /// unseen: `available` still after [`UNSEEN_ATTACH_GRACE`], with no
    /// attachment on the server either, is that failure. Before an attach,
    /// a volume in use only by servers of failed tries is let go when their
    /// deletion completes, and so is one a failed try left `error_attaching`.
    async fn wait_volume(
        &self,
        volume_id: &str,
        deadline: Instant,
        phase: Phase<'_>,
        done: impl Fn(&VolumeStatus, &[String]) -> bool,
    ) -> Result<Volume, AttemptError> {
        let mut seen_attaching = false;
        let started = Instant::now();
        let mut looks = 0u32;
        loop {
            looks += 1;
            let volume = self
                .retry(deadline, || self.cloud.get_volume(volume_id))
                .await
                .map_err(|e| AttemptError::Request(e.into()))?;
            if done(&volume.status, &volume.attached_to) {
                return Ok(volume);
            }
            if let Phase::AfterAttach { server_id } = phase {
                match volume.status {
                    // Attached to the instance and to another server too
                    // (`done` wants it on the instance alone): a volume
                    // retyped multiattach since the fence. The request's,
                    // not the instance's: the next one would meet it too.
                    VolumeStatus::InUse if volume.attached_to.iter().any(|s| s == server_id) => {
                        let others: Vec<&str> = volume
                            .attached_to
                            .iter()
                            .filter(|s| *s != server_id)
                            .map(String::as_str)
                            .collect();
                        return Err(AttemptError::Request(ManagerError::FailedPrecondition(
                            format!(
                                "volume {volume_id} is attached to server {} as well as to the purchase's: it is multiattach now (type {}), and warmpool attaches a database's volume to one server only; the purchase is rolled back (the volume detached from its server only); detach it from the other server and retype it to a single-attach volume type",
                                others.join(", "),
                                volume.volume_type.as_deref().unwrap_or("unknown")
                            ),
                        )));
                    }
                    VolumeStatus::Attaching => seen_attaching = true,
                    VolumeStatus::Available if seen_attaching => {
                        return Err(AttemptError::Instance(ManagerError::Cloud(
                            CloudError::Transient(format!(
                                "the attach of volume {volume_id} failed on the instance's host: the volume is available again"
                            )),
                        )));
                    }
                    VolumeStatus::Available
                        if looks > 1
                            && started.elapsed() >= UNSEEN_ATTACH_GRACE
                            && volume.attached_to.is_empty()
                            && !self.server_lists_volume(server_id, volume_id).await =>
                    {
                        return Err(AttemptError::Instance(ManagerError::Cloud(
                            CloudError::Transient(format!(
                                "the attach of volume {volume_id} failed on the instance's host before it was seen attaching: {} after Nova accepted it, the volume is available and server {server_id} lists no attachment of it",
                                humantime::format_duration(UNSEEN_ATTACH_GRACE)
                            )),
                        )));
                    }
                    ref status if status.is_error_attaching() => {
                        return Err(AttemptError::Instance(ManagerError::Cloud(
                            CloudError::Transient(format!(
                                "the attach of volume {volume_id} to the instance failed in Cinder: the volume is error_attaching"
                            )),
                        )));
                    }
                    _ => {}
                }
            }
            let pending = match (&volume.status, phase) {
                (VolumeStatus::Creating | VolumeStatus::Attaching | VolumeStatus::Detaching, _) => {
                    true
                }
                (VolumeStatus::Available, Phase::AfterAttach { .. }) => true,
                (
                    VolumeStatus::InUse,
                    Phase::BeforeAttach {
                        discarded_servers: discarded,
                        ..
                    },
                ) => {
                    !volume.attached_to.is_empty()
                        && volume.attached_to.iter().all(|s| discarded.contains(s))
                }
                // The volume was available when this purchase began (fenced,
                // or created by it), so a failed try's attach left it so.
                // Cinder lists no attachment of it, but the deletion of the
                // try's server deletes the attachment and makes it available:
                // waited for while such a server is there. Once all are gone
                // it stays so until an admin resets it (not_attachable says).
                (
                    status,
                    Phase::BeforeAttach {
                        discarded_servers: discarded,
                        ..
                    },
                ) if status.is_error_attaching() && !discarded.is_empty() => {
                    !self.error_attaching_for_good(volume_id, discarded).await
                }
                _ => false,
            };
            if !pending {
                // A volume warmpool just created that Cinder could not build
                // (no backend with room, say) is the cloud's failure, not
                // the caller's: asking again may succeed.
                if matches!(phase, Phase::Created { .. }) && volume.status == VolumeStatus::Error {
                    return Err(AttemptError::Request(ManagerError::Cloud(
                        CloudError::Transient(format!(
                            "Cinder could not build the new volume {volume_id} (status error)"
                        )),
                    )));
                }
                // Cinder began something that ends by itself (a backup, a
                // migration) since the fence let the volume through: to be
                // asked again, as the same state at the fence is, not
                // refused as the caller's to mend.
                if let Some(passing) = passing_state_refusal(volume_id, &volume.status) {
                    return Err(AttemptError::Request(passing));
                }
                if let Phase::BeforeAttach { created, .. } = phase {
                    return Err(AttemptError::Request(not_attachable_after_a_try(
                        volume_id,
                        &volume.status,
                        created,
                    )));
                }
                return Err(AttemptError::Request(not_attachable(
                    volume_id,
                    &volume.status,
                )));
            }
            if Instant::now() >= deadline {
                return Err(AttemptError::Request(volume_late(
                    volume_id,
                    &volume.status,
                    phase,
                )));
            }
            tokio::time::sleep(self.settings.poll_interval.min(Duration::from_millis(500))).await;
        }
    }

    /// Whether Nova lists an attachment of the volume on the server (an
    /// attach under way, or done); a server it cannot tell about counts as
    /// listing it.
    async fn server_lists_volume(&self, server_id: &str, volume_id: &str) -> bool {
        self.cloud.read_server(server_id).await.map_or(true, |s| {
            s.attached_volumes
                .iter()
                .any(|v| v.eq_ignore_ascii_case(volume_id))
        })
    }

    /// Whether a volume a failed try of the purchase left `error_attaching`
    /// stays so: none of the tries' `discarded` servers is left, whose
    /// deletion would let go of it, and it is so still when looked at
    /// after them (Cinder may have let go of it since an earlier look).
    /// Then only an admin's reset of its state ends it.
    async fn error_attaching_for_good(&self, volume_id: &str, discarded: &[String]) -> bool {
        !discarded.is_empty()
            && !self.any_server_left(discarded).await
            && self
                .cloud
                .get_volume(volume_id)
                .await
                .is_ok_and(|v| v.status.is_error_attaching())
    }

    /// Whether any of `servers` is still there (being deleted or not); a
    /// server the cloud cannot tell about counts as there.
    async fn any_server_left(&self, servers: &[String]) -> bool {
        for server in servers {
            if !matches!(
                self.cloud.read_server(server).await,
                Err(CloudError::NotFound(_))
            ) {
                return true;
            }
        }
        false
    }

    /// Sends a try's attach (`attach`) until the cloud answers it other
    /// than with a throttle (a 429 is no failure: the cloud did nothing;
    /// it is waited out and asked again). It is not sent again after any
    /// other failure: a failure there is the instance's, and the next
    /// Ready one is the faster way forward. A 409 that `is_ours` (told
    /// whether an earlier answer, a 503 with a Retry-After, may have come
    /// from in front of a cloud that did the attach) is the purchase's own
    /// attach, done behind that answer: Nova refuses the same attach sent
    /// again (the volume already attached, the port still in use) to the
    /// very server. Blamed on the order (FAILED_PRECONDITION, which billing
    /// drops) or on the instance, it would cost the order or a warm
    /// instance.
    async fn send_attach<A, AFut, O, OFut>(
        &self,
        deadline: Instant,
        az: &str,
        calls: &AttachCalls,
        attach: A,
        is_ours: O,
    ) -> Result<CloudResult<()>, AttemptError>
    where
        A: Fn() -> AFut,
        AFut: Future<Output = CloudResult<()>>,
        O: FnOnce(bool) -> OFut,
        OFut: Future<Output = Result<bool, AttemptError>>,
    {
        let maybe_done = AtomicBool::new(false);
        let attached = self
            .patiently(deadline, Repeat::ThrottledOnly, Some(az), || {
                calls.send(crate::cloud::noting_doubt(attach(), &maybe_done))
            })
            .await;
        Ok(match attached {
            Err(CloudError::Conflict(m)) => {
                match is_ours(maybe_done.load(Ordering::SeqCst)).await? {
                    true => Ok(()),
                    false => Err(CloudError::Conflict(m)),
                }
            }
            other => other,
        })
    }

    /// Whether a volume attach Nova refused as a conflict is this try's
    /// own: the volume attached to the try's server, by Cinder's or Nova's
    /// listing. After an answer that may have come from behind a done
    /// attach (`maybe_done`), a volume the order `created` still
    /// `attaching` to a server neither lists yet counts too, unless the
    /// server takes no attach now: nothing else attaches that volume, and
    /// the wait that follows tells. A tenant's existing volume so is
    /// another's as likely (a second order naming it, which the fence let
    /// through too, or the tenant): taken for the purchase's, a failure of
    /// that other attach would be blamed on the instance.
    ///
    /// A read the cloud fails ends the try as the verify's does
    /// ([`look_failed`]): taken for "not ours", it answered
    /// FAILED_PRECONDITION "volume ... cannot be attached: 409", sending
    /// the client to mend a volume when the cloud had failed a read. A
    /// volume Cinder no longer knows is no failed read: not ours, as
    /// before, and the 409 stands.
    async fn volume_attach_is_this_ones(
        &self,
        volume_id: &str,
        server_id: &str,
        deadline: Instant,
        maybe_done: bool,
        created: bool,
    ) -> Result<bool, AttemptError> {
        let lists = |ids: &[String], id: &str| ids.iter().any(|i| i.eq_ignore_ascii_case(id));
        let volume = match self
            .retry(deadline, || self.cloud.get_volume(volume_id))
            .await
        {
            Ok(volume) => volume,
            Err(CloudError::NotFound(_)) => return Ok(false),
            Err(e) => {
                return Err(look_failed(
                    e,
                    "block-storage service (Cinder)",
                    format_args!(
                        "to show volume {volume_id}, whose attach to server {server_id} Nova refused as a conflict"
                    ),
                ))
            }
        };
        if lists(&volume.attached_to, server_id) {
            return Ok(true);
        }
        let server = self
            .server_for_a_look(
                server_id,
                deadline,
                &format!(
                    "to see whether the attach of volume {volume_id} Nova refused as a conflict was the try's own"
                ),
            )
            .await?;
        // A server that takes no attach now (in ERROR, busy with a task)
        // is what Nova refused: the instance's, as before.
        Ok(lists(&server.attached_volumes, volume_id)
            || (maybe_done
                && created
                && server.takes_an_attach_now()
                && volume.status == VolumeStatus::Attaching
                && volume.attached_to.is_empty()))
    }

    /// The try's server as Nova shows it, for a look at an attach Nova
    /// refused as a conflict (`look` says which in a failure's message).
    /// A server Nova no longer knows is the instance's failure; any other
    /// failed read is the cloud's ([`look_failed`]).
    async fn server_for_a_look(
        &self,
        server_id: &str,
        deadline: Instant,
        look: &str,
    ) -> Result<Server, AttemptError> {
        match self
            .retry(deadline, || self.cloud.read_server(server_id))
            .await
        {
            Ok(server) => Ok(server),
            Err(e @ CloudError::NotFound(_)) => Err(AttemptError::Instance(e.into())),
            Err(e) => Err(look_failed(
                e,
                "compute service (Nova)",
                format_args!("to show server {server_id} {look}"),
            )),
        }
    }

    /// The order's port as Neutron shows it, for a look after Nova `nova`
    /// its attach to the try's server (took, or refused as a conflict): a
    /// port Neutron no longer knows is gone ([`port_gone`]); any other
    /// failed read is the cloud's ([`look_failed`]).
    async fn port_for_a_look(
        &self,
        port_id: &str,
        server_id: &str,
        deadline: Instant,
        nova: &str,
    ) -> Result<Port, AttemptError> {
        match self.retry(deadline, || self.cloud.get_port(port_id)).await {
            Ok(port) => Ok(port),
            Err(e @ CloudError::NotFound(_)) => Err(port_gone(e, port_id, server_id, nova)),
            Err(e) => Err(look_failed(
                e,
                "network service (Neutron)",
                format_args!(
                    "to show port {port_id}, whose attach to server {server_id} Nova {nova}"
                ),
            )),
        }
    }

    /// Whether a port attach Nova refused as a conflict is this try's own:
    /// the port bound to the try's server, or listed by it. After an
    /// answer that may have come from behind a done attach (`maybe_done`),
    /// a port bound to no server yet counts too (the order's own port,
    /// which nothing else attaches), unless the server takes no attach
    /// now (in ERROR, busy with a task, locked: Nova's 409 "Instance ...
    /// is locked" is then the instance's): the wait that follows tells.
    /// A read the cloud fails ends the try as the verify's does
    /// ([`look_failed`]): taken for "not ours", it blamed the 409 on the
    /// instance, and the next Ready one met the same failure.
    async fn port_attach_is_this_ones(
        &self,
        port_id: &str,
        server_id: &str,
        deadline: Instant,
        maybe_done: bool,
    ) -> Result<bool, AttemptError> {
        let port = self
            .port_for_a_look(port_id, server_id, deadline, "refused as a conflict")
            .await?;
        Ok(match port.device_id.as_deref() {
            Some(device) => device == server_id,
            None => {
                let look =
                    "to see whether the port attach Nova refused as a conflict was the try's own";
                let server = self.server_to_verify(server_id, deadline, look).await?;
                server.attached_ports.iter().any(|p| p == port_id)
                    || (maybe_done && server.takes_an_attach_now())
            }
        })
    }

    async fn attach_port(
        &self,
        record: &Record<'_>,
        server_id: &str,
        deadline: Instant,
        calls: &AttachCalls,
    ) -> Result<String, AttemptError> {
        let port_id = self.port_for(record, deadline).await?;
        let params = record.get().await.params;
        let az = params.pool.availability_zone;
        let network = params.network;
        self.send_attach(
            deadline,
            &az,
            calls,
            || self.cloud.attach_port(server_id, &port_id),
            |maybe_done| self.port_attach_is_this_ones(&port_id, server_id, deadline, maybe_done),
        )
        .await?
        .map_err(attempt_error)?;
        loop {
            let port = self
                .port_for_a_look(&port_id, server_id, deadline, "took")
                .await?;
            if port.device_id.as_deref() == Some(server_id) && port.ip_address.is_some() {
                record
                    .update(|a| {
                        a.ip_address = port
                            .address_for(network.subnet_id.as_deref(), network.fixed_ip.as_deref())
                    })
                    .await
                    .map_err(AttemptError::Request)?;
                return Ok(port_id);
            }
            // Late, as a volume still attaching is (`volume_late`): the
            // pool had an instance to give, so it is no want of one
            // (RESOURCE_EXHAUSTED would count a miss of the pool's depth).
            // The instance is still discarded: the server's host may be
            // what cannot bind the port. The purchase's answer adds that
            // the deadline has passed, and to call again.
            if Instant::now() >= deadline {
                return Err(AttemptError::Instance(ManagerError::DeadlineExceeded(
                    format!("port {port_id} was still not bound to server {server_id} when the attach's deadline passed (Neutron is slow to bind it, or the server's host cannot)"),
                )));
            }
            tokio::time::sleep(self.settings.poll_interval.min(Duration::from_millis(500))).await;
        }
    }

    /// The allocation's port: the one recorded, or a new one created (and
    /// recorded) now; a failed try deletes its port, so the next creates one.
    async fn port_for(
        &self,
        record: &Record<'_>,
        deadline: Instant,
    ) -> Result<String, AttemptError> {
        let allocation = record.get().await;
        let port_id = match &allocation.port_id {
            Some(id) => id.clone(),
            None => {
                let spec = NewPortSpec {
                    name: allocation.resource_name(),
                    network_id: allocation.params.network.network_id.clone(),
                    subnet_id: allocation.params.network.subnet_id.clone(),
                    fixed_ip: allocation.params.network.fixed_ip.clone(),
                };
                let (mut port, in_doubt) = self
                    .create_doubting(deadline, &allocation.params.pool.availability_zone, || {
                        self.cloud.create_port(&spec)
                    })
                    .await;
                self.note_create_in_doubt(record, in_doubt).await?;
                if in_doubt && refused_by_a_twin(&port) {
                    // The create sent again met its own twin (its address
                    // taken, or the last room of the port quota): a
                    // transient fault, no refusal of the order. Recorded
                    // below as if its answer had come; the others the
                    // commit's twin watch deletes, as it would have.
                    let name = &spec.name;
                    let ports = self
                        .retry(deadline, || self.cloud.find_ports_by_name(name))
                        .await
                        .map_err(|e| AttemptError::Request(e.into()))?;
                    let followed = self.followed_by_a_watch(&allocation).await?;
                    if let Some(twin) = ports
                        .into_iter()
                        .find(|p| !followed.contains(&p.id) && port_serves(p, &spec))
                    {
                        tracing::info!(request_id = %allocation.params.request_id, port = %twin.id, "a port create whose answer was lost took effect: its port is the order's");
                        port = Ok(twin);
                    }
                }
                let port = port.map_err(|e| port_creation_refused(&spec, e))?;
                record
                    .update(|a| a.port_id = Some(port.id.clone()))
                    .await
                    .map_err(AttemptError::Request)?;
                // Binding would not give it one either: refused now, or
                // every try would claim an instance and wait out its
                // attach for an address that never comes.
                if port.ip_address.is_none() && !port.address_deferred {
                    return Err(AttemptError::Request(ManagerError::FailedPrecondition(
                        format!(
                            "the port created on network {} got no IP address: the network has no subnet, or none with a free address",
                            spec.network_id
                        ),
                    )));
                }
                port.id
            }
        };
        Ok(port_id)
    }

    /// Discards the instance this purchase claimed and found broken before
    /// anything of its order was attached: `Deleting` with no request id,
    /// its server's delete sent once ([`Shared::delete_once`]), neither
    /// sent again after a 429 or a 5xx nor waited for until gone. That
    /// wait keeps a record while a server may hold a tenant's volume;
    /// nothing of a tenant's reached this one, and a purchase waiting on a
    /// delete Nova takes minutes to finish, or on one the cloud answered
    /// 503 with a Retry-After, sent again until the cleanup budget (2 min)
    /// was spent, held its buyer on a server written off, with a Ready
    /// instance left in the pool. A delete the cloud refuses, fails for
    /// now, or leaves half done, is the reconciler's: it deletes a
    /// `Deleting` instance's server again, and sweeps a pool server no
    /// record names once Nova no longer shows it being deleted.
    /// An instance no longer claimed for `request_id` (taken out of service
    /// meanwhile) is left to whoever took it. A crash after the write
    /// leaves the order naming an instance whose claim it no longer holds:
    /// its rollback passes the instance by, which the reconciler deletes.
    async fn discard_untouched(
        &self,
        instance: &Instance,
        request_id: &str,
        reason: &str,
    ) -> ManagerResult<()> {
        let deleting = self
            .update_instance(&instance.id, |current| {
                (current.state == InstanceState::Claimed
                    && current.request_id.as_deref() == Some(request_id))
                .then(|| {
                    let mut next = current.clone();
                    next.state = InstanceState::Deleting;
                    next.request_id = None;
                    next.last_error = Some(reason.to_string());
                    Some(next)
                })
            })
            .await?;
        let Some(deleting) = deleting else {
            return Ok(());
        };
        self.store.flush().await?;
        self.delete_once(&deleting).await
    }

    /// Puts back in the pool, `Ready` and unclaimed, the instance a try
    /// claimed and failed on without any attach reaching it
    /// ([`AttachCalls::none_acted`]), or whose mysqld was silent at the
    /// claim; `error` is why, for the log. A pool being deleted, or gone,
    /// does not get it back: it is discarded as its drain would have
    /// (`Deleting`, then its server's delete sent once, as
    /// [`Self::discard_untouched`] does: a delete the cloud refuses or
    /// fails for now is the reconciler's). Put back with no room check, unlike a late cold
    /// boot's handover: the refill the claim woke may be booting already,
    /// and the Ready instance serves now; above max_ready, the oldest Ready
    /// one is retired once that refill is Ready (ARCHITECTURE invariant 7).
    /// Once the record no longer names the instance,
    /// flushed, the instance is let go of, and flushed before the answer. A
    /// crash before that second flush leaves the instance claimed for an
    /// order that does not name it, which its rollback (the reconciler's
    /// after a crash) discards by the claim, as a crash between a claim and
    /// its record's update does; one after it leaves a Ready instance and
    /// an order that names none, as a crash before the claim does. Written
    /// the other way round, a crash in between would leave the order's
    /// record naming a server that another purchase may have claimed
    /// since, for the order's rollback to tell apart from its own.
    async fn put_back(
        &self,
        record: &Record<'_>,
        instance: &Instance,
        error: &ManagerError,
    ) -> ManagerResult<PutBack> {
        let request_id = record.get().await.params.request_id;
        record.forget_instance().await?;
        let back = {
            // Judged under the lock a deletion takes to mark the pool
            // draining: a drain leaves claimed instances to their
            // purchases and may be over already, and no replenisher would
            // ever take one put back into a pool that is gone.
            let _guard = self.pool_lock.lock().await;
            let open = self
                .store
                .get_pool(&instance.pool)
                .await?
                .is_some_and(|pool| !pool.draining);
            let back = self
                .update_instance(&instance.id, |current| {
                    (current.state == InstanceState::Claimed
                        && current.request_id.as_deref() == Some(request_id.as_str()))
                    .then(|| {
                        let mut next = current.clone();
                        next.request_id = None;
                        if open {
                            next.state = InstanceState::Ready;
                        } else {
                            next.state = InstanceState::Deleting;
                            next.last_error = Some("pool drained".into());
                        }
                        Some(next)
                    })
                })
                .await?;
            self.store.flush().await?;
            back
        };
        let Some(back) = back else {
            // Taken out of service meanwhile: whoever did so deletes it.
            tracing::warn!(instance = %instance.id, error = %error, "the failed try's instance, which the purchase left untouched, is no longer claimed for the order; left to whoever took it");
            return Ok(PutBack::Taken);
        };
        if back.state == InstanceState::Deleting {
            tracing::info!(instance = %instance.id, error = %error, "the failed try left the instance untouched, but its pool is being deleted; discarding it");
            if let Err(e) = self.delete_once(&back).await {
                tracing::warn!(instance = %instance.id, error = %e, "cannot delete the server of a drained pool's instance; the reconciler retries");
            }
            return Ok(PutBack::Drained);
        }
        tracing::info!(instance = %instance.id, error = %error, "the failed try left the instance untouched; it is back in the pool");
        Ok(PutBack::Ready)
    }

    /// Detaches the volume and the port from a server being discarded; a
    /// created volume stays recorded for the next try. A detach Nova
    /// refuses is left to the server's deletion.
    async fn detach_attachments(
        &self,
        record: &Record<'_>,
        instance: &Instance,
    ) -> ManagerResult<()> {
        let Some(server_id) = &instance.server_id else {
            return Ok(());
        };
        let allocation = record.get().await;
        self.detach_order_from(self.cleanup_deadline(), server_id, &allocation)
            .await
    }

    /// Deletes the port of a failed try, once its server let go of it; the
    /// next try makes another. One its server keeps bound until Nova's
    /// reclaim (SOFT_DELETED, the forceDelete refused) is handed to a twin
    /// watch, written and flushed before the record stops naming it.
    async fn delete_port_of_try(&self, record: &Record<'_>) -> ManagerResult<()> {
        let allocation = record.get().await;
        if let Some(port_id) = &allocation.port_id {
            let deadline = self.cleanup_deadline();
            if let PortDelete::Held { server_id } =
                self.delete_port_unless_held(port_id, deadline).await?
            {
                // Looked at by id alone, never by the name: the next try's
                // port carries the same one.
                let mut watch = self.twin_watch(&allocation, false);
                self.watch_bound_port(&mut watch, port_id, false);
                self.write_twin_watch(watch).await?;
                self.store.flush().await?;
                tracing::warn!(request_id = %allocation.params.request_id, port = %port_id, server = %server_id, "the failed try's port stays bound to its SOFT_DELETED server until Nova reclaims it; the reconciler deletes it then");
            }
            record.update(|a| a.port_id = None).await?;
        }
        Ok(())
    }

    /// Undoes a failed or interrupted allocation: discards its instances,
    /// deletes the port and a volume warmpool created (one Cinder keeps
    /// `error_attaching` is left to a twin watch), then the record.
    /// Idempotent, so the reconciler can run it again after a crash.
    /// `after_crash`: no Allocate of this process was working on it, so a
    /// create may have been on its way when the process that sent it died.
    pub(crate) async fn roll_back(
        &self,
        allocation: &Allocation,
        after_crash: bool,
    ) -> ManagerResult<()> {
        let request_id = allocation.params.request_id.as_str();
        // Only an allocation that never answered is undone: once its record
        // says Allocated, a retry may have been told so, and its server,
        // port and volume are the tenant's.
        let Some(allocation) = self
            .store
            .get_allocation(request_id)
            .await?
            .filter(|a| a.state == AllocationState::Allocating)
        else {
            return Ok(());
        };
        let deadline = self.cleanup_deadline();
        let mut instance_found = false;
        for instance in self.store.list_instances().await? {
            // Also an instance already Allocated: taken for good right
            // before a commit that failed or a crash interrupted.
            if instance.request_id.as_deref() == Some(request_id) {
                instance_found = true;
                let instance = match (after_crash, &instance.server_id, instance.state) {
                    // A cold boot's: its create may have been answered
                    // after the last flush, or after an earlier rollback
                    // took the record, `Deleting`, from its boot. Deleting
                    // its server here keeps the pass from taking it for a
                    // leak.
                    (true, None, InstanceState::Booting | InstanceState::Deleting) => {
                        self.adopt_unrecorded_server(instance, deadline).await?
                    }
                    _ => instance,
                };
                if after_crash && instance.server_id.is_none() && self.late_create_may_land() {
                    self.keep_for_late_create(&instance.id, |current| {
                        current.request_id.as_deref() == Some(request_id)
                    })
                    .await?;
                    continue;
                }
                if let Some(server_id) = &instance.server_id {
                    self.detach_order_from(deadline, server_id, &allocation)
                        .await?;
                }
                self.discard_instance_if(&instance.id, "allocation rolled back", |current| {
                    current.request_id.as_deref() == Some(request_id)
                })
                .await?;
            }
        }
        if let (false, Some(instance_id)) = (instance_found, &allocation.instance_id) {
            self.delete_server_if_set_aside(&allocation, instance_id, deadline)
                .await?;
        }
        // A port its server keeps bound until Nova's reclaim must not hold
        // the order (Allocating, its retries UNAVAILABLE) until then: it is
        // left to the twin watch written below, before the record goes.
        let mut bound_port = None;
        if let Some(port_id) = &allocation.port_id {
            if let PortDelete::Held { server_id } =
                self.delete_port_unless_held(port_id, deadline).await?
            {
                tracing::warn!(request_id, port = %port_id, server = %server_id, "the rolled-back purchase's port stays bound to its SOFT_DELETED server until Nova reclaims it; the reconciler deletes it then");
                bound_port = Some(port_id.clone());
            }
        }
        // A volume warmpool created that a failed attach left
        // error_attaching cannot be deleted until an admin resets it: it
        // must not hold the order (Allocating, its retries UNAVAILABLE)
        // until then. It is left to the twin watch written below, which
        // deletes everything named as the attempt and lasts until it has.
        let mut stuck_volume = None;
        let mut deleted_volume = None;
        if let (true, Some(volume_id)) = (allocation.volume_created, &allocation.volume_id) {
            // Watched, and flushed, before its delete is sent: a rollback
            // that stops after the delete (a crash, an error further on) is
            // done again, and the volume, going or gone by then, would be
            // named by nothing else.
            let mut watch = self.twin_watch(&allocation, false);
            let twins = twins_possible(&allocation, after_crash);
            self.watch_deleted_volume(&mut watch, volume_id, twins);
            self.write_twin_watch(watch).await?;
            self.store.flush().await?;
            if let Err(e) = self
                .delete_volume_when_free(volume_id, LetGoBy::AnyServer, deadline)
                .await
            {
                let stuck = matches!(
                    self.cloud.get_volume(volume_id).await,
                    Ok(v) if v.status.is_error_attaching()
                );
                if !stuck {
                    return Err(e);
                }
                tracing::debug!(request_id, volume = %volume_id, error = %e, "Cinder refuses the delete of the rolled-back purchase's new volume");
                stuck_volume = Some(volume_id.clone());
            } else {
                deleted_volume = Some(volume_id);
            }
        }
        // And what a create whose id never reached the record left: nothing
        // named as the attempt is kept (but a stuck volume, for now).
        let mut look = self.twin_watch(&allocation, false);
        look.keep.extend(stuck_volume.clone());
        look.bound_ports.extend(bound_port.clone());
        let (left, deleted) = self.delete_twins(&look, deadline).await;
        deleted?;
        if let Some(stored) = self.store.get_allocation(request_id).await? {
            if stored.state == AllocationState::Allocating {
                let twins = twins_possible(&stored, after_crash) || stuck_volume.is_some();
                let followed = deleted_volume.is_some() || bound_port.is_some();
                if twins || followed || !left.is_empty() {
                    // Written before the record goes: a crash in between
                    // rolls back again and writes it again. Over the one
                    // written before the delete, which named as deleted a
                    // volume whose delete Cinder then refused (stuck).
                    let mut watch = self.twin_watch(&stored, false);
                    watch.stuck_volume = stuck_volume.clone();
                    if let Some(volume_id) = deleted_volume {
                        self.watch_deleted_volume(&mut watch, volume_id, twins);
                    }
                    for port_id in bound_port.iter().chain(&left.bound_ports) {
                        self.watch_bound_port(&mut watch, port_id, twins);
                    }
                    left.follow_in(&mut watch);
                    self.write_twin_watch(watch).await?;
                }
                self.store.cas_allocation(Some(&stored), None).await?;
            }
        }
        self.store.flush().await?;
        self.changed();
        if let Some(volume_id) = stuck_volume {
            self.emit(
                Some(&allocation.params.pool),
                EventKind::VolumeStuck {
                    request_id: request_id.to_owned(),
                    volume_id,
                    status: "error_attaching".into(),
                },
            );
        }
        Ok(())
    }

    /// The instance with its server recorded, if the cloud holds a server
    /// carrying its id (see [`Shared::adopt_server`]).
    async fn adopt_unrecorded_server(
        &self,
        instance: Instance,
        deadline: Instant,
    ) -> ManagerResult<Instance> {
        let servers = self
            .retry(deadline, || self.cloud.list_pool_servers())
            .await?;
        let carrying_its_id = servers
            .iter()
            .find(|s| s.metadata.get(META_INSTANCE) == Some(&instance.id));
        let Some(server) = carrying_its_id else {
            return Ok(instance);
        };
        tracing::info!(instance = %instance.id, server = %server.id, "the server of a rolled-back boot was created before the crash; deleting it");
        Ok(self
            .adopt_server(&instance.id, &server.id)
            .await?
            .unwrap_or(instance))
    }

    /// Detaches the order's volume and port from `server_id`, deleted
    /// next (a release, a rollback). The port too: a cloud that
    /// soft-deletes keeps it bound to the SOFT_DELETED server until the
    /// reclaim, Nova detaches no port from such a server (a volume, it
    /// does), and Neutron lets a project member delete no bound port, so
    /// where the forceDelete is refused the release or rollback would wait
    /// for the reclaim (the order UNAVAILABLE until then).
    async fn detach_order_from(
        &self,
        deadline: Instant,
        server_id: &str,
        allocation: &Allocation,
    ) -> ManagerResult<()> {
        if let Some(volume_id) = &allocation.volume_id {
            self.detach_before_delete(deadline, server_id, volume_id, || {
                self.cloud.detach_volume(server_id, volume_id)
            })
            .await?;
        }
        if let Some(port_id) = &allocation.port_id {
            self.detach_before_delete(deadline, server_id, port_id, || {
                self.cloud.detach_port(server_id, port_id)
            })
            .await?;
        }
        Ok(())
    }

    /// Detaches a volume or port (`what`, its id) from a server that is
    /// deleted next. A detach Nova refuses (409: a server in ERROR, its
    /// host failed, or one busy with another task, being deleted already,
    /// or SOFT_DELETED) is left to that deletion, which lets go of
    /// everything attached; insisting would keep the release or the
    /// rollback from ever finishing. A deletion that only soft-deletes
    /// lets go of nothing: a volume still attached is detached from the
    /// SOFT_DELETED server then (see `Shared::delete_server_until_gone`),
    /// and a port, which Nova detaches from no SOFT_DELETED server, stays
    /// bound until Nova's reclaim and is handed to a twin watch (see
    /// [`PortDelete::Held`]).
    async fn detach_before_delete<F, Fut>(
        &self,
        deadline: Instant,
        server_id: &str,
        what: &str,
        detach: F,
    ) -> ManagerResult<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = CloudResult<()>>,
    {
        match self.retry(deadline, detach).await {
            Err(CloudError::Conflict(refused)) => {
                // Looked at only on a refusal, for a log that says what
                // becomes of it: a server deleted by hand may be
                // SOFT_DELETED already, or still being deleted (Nova
                // refuses its detaches for its task state, 409), which is
                // no trouble: that delete lets go of it, as this caller's
                // would.
                match self.cloud.read_server(server_id).await {
                    Ok(server) if server.status == ServerStatus::Deleted && !server.deleting => {
                        tracing::warn!(server = %server_id, detached = %what, reason = %refused, "detach refused: the server is SOFT_DELETED, and keeps what Nova will not detach from it until Nova reclaims it (or an admin force-deletes it); a volume is detached from it after the delete, a port left bound is deleted by the reconciler once the reclaim frees it");
                    }
                    Ok(server) if server.deleting => {
                        tracing::debug!(server = %server_id, detached = %what, reason = %refused, "detach refused: the server is being deleted already, and its delete lets go of it (a soft delete keeps a port bound until Nova's reclaim: the reconciler deletes it then)");
                    }
                    Err(CloudError::NotFound(_)) => {
                        tracing::debug!(server = %server_id, detached = %what, reason = %refused, "detach refused: the server is gone since, and holds nothing");
                    }
                    _ => {
                        tracing::warn!(server = %server_id, detached = %what, reason = %refused, "detach refused; the server's delete lets go of it (a cloud that only soft-deletes keeps it until Nova's reclaim: a volume is then detached after the delete, a port left to the reconciler)");
                    }
                }
                Ok(())
            }
            other => Ok(other?),
        }
    }

    /// Whether `server_id` is SOFT_DELETED with nothing under way (no
    /// forceDelete going on): it keeps its ports bound until Nova's
    /// reclaim. A look that fails says no.
    async fn is_soft_deleted(&self, server_id: &str) -> bool {
        matches!(
            self.cloud.read_server(server_id).await,
            Ok(server) if server.status == ServerStatus::Deleted && !server.deleting
        )
    }

    /// Deletes a port once Nova has let go of it. Deleting its server (or
    /// detaching it) unbinds it asynchronously, and until then Neutron's
    /// default policy lets only an admin or a service delete a port a
    /// server owns: a project member is refused ("rule:delete_port ... is
    /// disallowed by policy", 403), which failed every first release of a
    /// member-only pool user. A refusal while the port is bound is waited
    /// out (looking at the port, not asking again); one for an unbound
    /// port stands, and so does a look the cloud can never answer (a 404
    /// for a path Neutron routes nowhere: its error names the endpoint to
    /// check), at once. Not one bound to a SOFT_DELETED server: Nova unbinds
    /// that one only at its reclaim (hours, days away) or an admin's
    /// forceDelete, so it is answered at once, [`PortDelete::Held`], for
    /// the caller to hand to a twin watch.
    pub(crate) async fn delete_port_unless_held(
        &self,
        port_id: &str,
        deadline: Instant,
    ) -> ManagerResult<PortDelete> {
        let pause = self.settings.poll_interval.min(Duration::from_millis(500));
        let mut seen_unbound = false;
        loop {
            let refused = match self
                .retry(deadline, || self.cloud.delete_port(port_id))
                .await
            {
                Ok(()) => return Ok(PortDelete::Gone),
                Err(e @ (CloudError::Fatal(_) | CloudError::Conflict(_))) => e,
                Err(e) => return Err(e.into()),
            };
            if seen_unbound {
                return Err(refused.into());
            }
            // Its server is looked at once: one SOFT_DELETED by the time
            // the port's delete is refused was deleted before (this
            // caller's delete, or an operator's), and stays so.
            let mut server_looked_at = false;
            loop {
                match self.cloud.get_port(port_id).await {
                    Err(CloudError::NotFound(_)) => return Ok(PortDelete::Gone),
                    Ok(port) if port.device_id.is_none() => {
                        seen_unbound = true;
                        break;
                    }
                    Ok(port) if !server_looked_at => {
                        server_looked_at = true;
                        let server_id = port.device_id.unwrap_or_default();
                        if self.is_soft_deleted(&server_id).await {
                            return Ok(PortDelete::Held { server_id });
                        }
                    }
                    // A look that can never succeed (a 404 Neutron gives a
                    // path it routes nowhere, an auth refusal) says nothing
                    // of the binding, and looking again until the cleanup
                    // budget is spent changes nothing: its error says what
                    // to mend. A transient one is looked past.
                    Err(e) if !e.is_retryable() => return Err(e.into()),
                    _ => {}
                }
                if Instant::now() >= deadline {
                    // Only slow: Nova unbinds it in the end, and the same
                    // call again (or the reconciler) deletes it then.
                    return Err(CloudError::Transient(format!(
                        "port {port_id} is still bound to a server, and Neutron refuses its delete until it is not: {refused}"
                    ))
                    .into());
                }
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Has `watch` look at `volume_id`, whose delete is sent next, until
    /// it is gone: accepted is not done, as Cinder's
    /// backend may fail the delete (`error_deleting`) when nothing names
    /// the volume any more. Watched rather than waited for, which can take
    /// minutes (a backend zeroing a large volume). Without `twins` to watch
    /// for, the watch ends as soon as the volume is gone.
    fn watch_deleted_volume(&self, watch: &mut TwinWatch, volume_id: &str, twins: bool) {
        watch.note_deleted(volume_id);
        if !twins {
            watch.deleted_only = true;
            watch.until = self.sizing_book().wall_now(&self.settings.sizing);
        }
    }

    /// Has `watch` delete `port_id`, held bound by a SOFT_DELETED server,
    /// once Nova's reclaim frees it ([`TwinWatch::bound_ports`]). Without
    /// `twins` to watch for, nothing is listed by the name, and the watch
    /// ends once the port is gone.
    fn watch_bound_port(&self, watch: &mut TwinWatch, port_id: &str, twins: bool) {
        watch.note_bound_port(port_id);
        if !twins {
            watch.deleted_only = true;
            watch.until = self.sizing_book().wall_now(&self.settings.sizing);
        }
    }

    /// Deletes a volume once Cinder has let go of it: a detach (or the
    /// deletion of the server it was on) finishes asynchronously. Cinder
    /// gives one message for every state it refuses a delete in, so the
    /// volume is looked at (not asked again) to tell them apart. Waited
    /// for: a volume still detaching (from any server, gone or not) or
    /// attached to a server `let_go_by` names, and one in a state Cinder
    /// ends by itself (a backup). Refused, FAILED_PRECONDITION, as waiting
    /// does not mend them: a detached volume Cinder still refuses
    /// (snapshots, a group), one awaiting a transfer, one attached to a
    /// server `let_go_by` does not name, and one Cinder keeps
    /// `error_attaching`, at once; one still listed in use by the order's
    /// server [`STALE_ATTACHMENT_GRACE`] after the server is gone (a
    /// stale attachment), then.
    /// One being deleted already (`deleting`, `error_deleting`) is done. A
    /// rate limit is waited out as its Retry-After says, jittered
    /// (`patiently`).
    pub(crate) async fn delete_volume_when_free(
        &self,
        volume_id: &str,
        let_go_by: LetGoBy<'_>,
        deadline: Instant,
    ) -> ManagerResult<()> {
        let pause = self.settings.poll_interval.min(Duration::from_millis(500));
        let mut seen_detached = false;
        loop {
            let refused = match self
                // A cleanup, no purchase: its zone's boots do not wait.
                .patiently(deadline, Repeat::Retryable, None, || {
                    self.cloud.delete_volume(volume_id)
                })
                .await
            {
                Ok(()) => return Ok(()),
                Err(CloudError::Conflict(refused)) => refused,
                Err(e) => return Err(e.into()),
            };
            if seen_detached {
                // Unless a delete sent meanwhile was accepted (a reconcile
                // pass following the watch of the volume).
                match self.cloud.get_volume(volume_id).await {
                    Ok(v) if v.is_being_deleted() => return Ok(()),
                    Err(CloudError::NotFound(_)) => return Ok(()),
                    _ => {}
                }
                return Err(ManagerError::FailedPrecondition(format!(
                    "volume {volume_id} is detached, and Cinder still refuses its delete: {refused} It has snapshots, most likely (openstack volume snapshot list --volume {volume_id}), or belongs to a group: delete them (or take it out of the group) and release again"
                )));
            }
            // What the last look saw it waiting for, for the answer at the
            // deadline.
            let mut waiting = "not detached yet".to_owned();
            // When the order's server was first seen gone while Cinder
            // still listed the volume attached to it.
            let mut gone_server_seen: Option<Instant> = None;
            loop {
                if Instant::now() >= deadline {
                    // Only slow: Cinder finishes it in the end.
                    return Err(CloudError::Transient(format!(
                        "volume {volume_id} is {waiting}, and Cinder refuses its delete until it is available: {refused}"
                    ))
                    .into());
                }
                tokio::time::sleep(pause).await;
                let v = match self.cloud.get_volume(volume_id).await {
                    // A delete of it was accepted already: by an earlier
                    // try of the caller that stopped after sending it (a
                    // crash, an error further on), or by a reconcile pass
                    // following the watch of it. Cinder refuses another,
                    // now and, should its backend fail the delete
                    // (`error_deleting`), until an admin resets it: done,
                    // as far as the caller goes. Every caller has a watch
                    // naming the volume written first, which follows it up.
                    Ok(v) if v.is_being_deleted() => return Ok(()),
                    Err(CloudError::NotFound(_)) => return Ok(()),
                    Ok(v) => v,
                    // A look that failed says nothing: looked at again.
                    Err(_) => continue,
                };
                if let Some(stands) = refusal_that_stands(&v, let_go_by, &refused) {
                    return Err(stands);
                }
                if v.attached_to.is_empty()
                    && matches!(v.status, VolumeStatus::Available | VolumeStatus::Error)
                {
                    seen_detached = true;
                    break;
                }
                waiting = match passing_volume_state(&v.status) {
                    Some(doing) if v.attached_to.is_empty() => doing.to_owned(),
                    _ if v.attached_to.is_empty() => match &v.status {
                        VolumeStatus::Other(status) => format!("still {status}"),
                        status => format!("still {status:?}"),
                    },
                    _ => format!("not detached yet from {}", v.attached_to.join(", ")),
                };
                // Nova deletes a server's attachments before the server
                // goes: one Cinder still lists in-use a while after is
                // left from a detach that failed, which no wait ends. One
                // still `detaching` is a detach the host goes on with
                // (slowly), as far as warmpool can tell.
                let LetGoBy::Order(Some(own)) = let_go_by else {
                    continue;
                };
                if v.status == VolumeStatus::Detaching || !v.attached_to.iter().any(|s| s == own) {
                    continue;
                }
                let gone = matches!(
                    self.cloud.read_server(own).await,
                    Err(CloudError::NotFound(_))
                );
                if !gone {
                    gone_server_seen = None;
                    continue;
                }
                let since = *gone_server_seen.get_or_insert_with(Instant::now);
                if Instant::now().duration_since(since) >= STALE_ATTACHMENT_GRACE {
                    return Err(ManagerError::FailedPrecondition(format!(
                        "volume {volume_id} still lists an attachment to server {own}, which is gone: a stale attachment Nova failed to delete with the server, and Cinder refuses the volume's delete while it is there. An admin deletes it (openstack volume attachment list --volume-id {volume_id}, then openstack volume attachment delete ID, or openstack volume set --detached --state available {volume_id}); then release again: {refused}"
                    )));
                }
            }
        }
    }

    /// For an allocation whose instance `instance_id` has no record: if an
    /// operator set that record aside as unreadable, deletes the server the
    /// allocation recorded, its volume detached first (the reconciler
    /// leaves such a server alone, so this is the one place it goes, and
    /// it is gone before the allocation is). Otherwise another release or
    /// rollback deleted it before its record.
    async fn delete_server_if_set_aside(
        &self,
        allocation: &Allocation,
        instance_id: &str,
        deadline: Instant,
    ) -> ManagerResult<()> {
        let Some(server_id) = &allocation.server_id else {
            return Ok(());
        };
        if !self
            .store
            .is_set_aside(RecordKind::Instance, instance_id)
            .await?
        {
            return Ok(());
        }
        if let Some(volume_id) = &allocation.volume_id {
            self.detach_before_delete(deadline, server_id, volume_id, || {
                self.cloud.detach_volume(server_id, volume_id)
            })
            .await?;
        }
        self.delete_server_until_gone(server_id, deadline).await
    }

    /// The instance step of `allocation`'s release: its record marked
    /// `Releasing` (flushed), the order's volume and port detached, then its server
    /// deleted until gone and the record dropped (or, the record set aside,
    /// the server the order recorded deleted). Idempotent.
    pub(crate) async fn release_instance(
        &self,
        allocation: &Allocation,
        instance_id: &str,
        deadline: Instant,
    ) -> ManagerResult<()> {
        let request_id = &allocation.params.request_id;
        // Only while the record is still this purchase's: once it is
        // dropped, a seeded manager restarted on its store may draw
        // the id again for another instance, maybe another tenant's.
        let its_own = |i: &Instance| i.request_id.as_ref() == Some(request_id);
        let releasing = self
            .update_instance(instance_id, |current| {
                (its_own(current) && current.state != InstanceState::Releasing).then(|| {
                    let mut next = current.clone();
                    next.state = InstanceState::Releasing;
                    Some(next)
                })
            })
            .await?;
        if let Err(e) = self.store.flush().await {
            let what = format_args!("the release of allocation {request_id}");
            return Err(ManagerError::unconfirmed(what, e));
        }
        if let Some(server_id) = &allocation.server_id {
            self.detach_order_from(deadline, server_id, allocation)
                .await?;
        }
        let current = self.store.get_instance(instance_id).await?;
        match releasing.or(current.filter(its_own)) {
            Some(instance) => self.finish_delete(&instance).await,
            None => {
                self.delete_server_if_set_aside(allocation, instance_id, deadline)
                    .await
            }
        }
    }

    /// Deletes the server, port and (if decided) volume of a `Releasing`
    /// allocation, then marks it `Released`. Idempotent. Why it failed is
    /// kept for GetAllocation ([`PoolManager::release_error`]) until a try
    /// finishes it.
    pub(crate) async fn finish_release(&self, allocation: Allocation) -> ManagerResult<Allocation> {
        let request_id = allocation.params.request_id.clone();
        let finished = self.finish_release_steps(allocation).await;
        // Kept only while the order is still Releasing: a try failing once
        // it was written Released (its flush) leaves nothing to finish, and
        // the error would stay for as long as the process runs, the order
        // forgotten or not.
        let still_releasing = match &finished {
            Ok(_) => false,
            Err(_) => matches!(
                self.store.get_allocation(&request_id).await,
                Ok(Some(stored)) if stored.state == AllocationState::Releasing
            ),
        };
        let mut errors = self.release_errors.lock().expect("release errors lock");
        match &finished {
            Err(e) if still_releasing => errors.insert(request_id, text::capped(e.to_string())),
            _ => errors.remove(&request_id),
        };
        finished
    }

    async fn finish_release_steps(&self, allocation: Allocation) -> ManagerResult<Allocation> {
        let deadline = self.cleanup_deadline();
        let request_id = &allocation.params.request_id;
        // The release is on disk (Releasing) before it gets here and goes
        // on (the reconciler finishes it): a flush failing on the way is no
        // failure of it, and the same call again finishes it.
        let unconfirmed = |e| {
            let what = format_args!("the release of allocation {request_id}");
            ManagerError::unconfirmed(what, e)
        };
        if let Some(instance_id) = &allocation.instance_id {
            self.release_instance(&allocation, instance_id, deadline)
                .await?;
        }
        if let Some(port_id) = &allocation.port_id {
            if let PortDelete::Held { server_id } =
                self.delete_port_unless_held(port_id, deadline).await?
            {
                // Its server, deleted, stays SOFT_DELETED until Nova's
                // reclaim, which alone unbinds the port: waiting for that
                // would keep the order Releasing, every Release
                // UNAVAILABLE, for hours or days. The tenant is done with
                // it (the volume is let go of, detached from the server),
                // so the release is, and the port is left to a twin watch,
                // written and flushed before the record stops naming it
                // (Released): a crash anywhere leaves it named. Keeping
                // the tenant's volume when the tenant does: a look by the
                // name (a create in doubt) must not take it for a twin.
                let kept = allocation.delete_volume_on_release != Some(true);
                let mut watch = self.twin_watch(&allocation, kept);
                self.watch_bound_port(&mut watch, port_id, allocation.creates_in_doubt);
                self.write_twin_watch(watch).await?;
                self.store.flush().await.map_err(unconfirmed)?;
                tracing::warn!(request_id = %request_id, port = %port_id, server = %server_id, "the released order's port stays bound to its SOFT_DELETED server until Nova reclaims it (or an admin force-deletes the server); the reconciler deletes it then");
            }
        }
        if allocation.delete_volume_on_release == Some(true) {
            if let Some(volume_id) = &allocation.volume_id {
                // Written, and flushed, before the delete is sent, and so
                // before the record stops naming the volume (Released): a
                // release that stops after the delete (a crash, an error
                // further on) is done again, and the volume, going or gone
                // by then, is named by this watch alone. It replaces the
                // commit's watch of the name, whose port and volume are
                // going.
                let mut watch = self.twin_watch(&allocation, false);
                let twins = allocation.creates_in_doubt;
                self.watch_deleted_volume(&mut watch, volume_id, twins);
                self.write_twin_watch(watch).await?;
                self.store.flush().await.map_err(unconfirmed)?;
                let own = LetGoBy::Order(allocation.server_id.as_deref());
                self.delete_volume_when_free(volume_id, own, deadline)
                    .await?;
            }
        }
        if allocation.creates_in_doubt {
            let look = self.twin_watch(&allocation, true);
            let (left, deleted) = self.delete_twins(&look, deadline).await;
            deleted?;
            if !left.is_empty() {
                // Followed up by the watch of the name, which keeps the
                // volume when the tenant does; written before the record
                // stops naming the order (Released).
                let kept = allocation.delete_volume_on_release != Some(true);
                let mut watch = self.twin_watch(&allocation, kept);
                left.follow_in(&mut watch);
                self.write_twin_watch(watch).await?;
            }
        }
        let mut released = allocation.clone();
        released.state = AllocationState::Released;
        released.released_at = Some(self.sizing_book().wall_now(&self.settings.sizing));
        if !self
            .store
            .cas_allocation(Some(&allocation), Some(&released))
            .await?
        {
            // Another release of it (billing's retry, a reconcile pass) did
            // the same deletes and recorded it first: one release.
            self.store.flush().await.map_err(unconfirmed)?;
            return match self.store.get_allocation(request_id).await? {
                Some(stored) if stored.state == AllocationState::Released => Ok(stored),
                _ => Err(ManagerError::TryAgain(format!(
                    "allocation {request_id} changed during release; retry"
                ))),
            };
        }
        // Released unconfirmed is released all the same: counted now, as
        // the call again only reads it back.
        let flushed = self.store.flush().await;
        self.changed();
        tracing::info!(
            request_id = %released.params.request_id,
            pool = %released.params.pool,
            server = %released.server_id.as_deref().unwrap_or("none"),
            delete_volume = released.delete_volume_on_release == Some(true),
            "released"
        );
        self.emit(Some(&released.params.pool), EventKind::Released);
        flushed.map_err(unconfirmed)?;
        Ok(released)
    }
}

/// What a look for twins ([`Shared::delete_twins`]) leaves a watch to
/// follow up by id.
#[derive(Debug, Default)]
pub(crate) struct TwinsLeft {
    /// Volumes whose delete Cinder accepted ([`TwinWatch::deleted_volumes`]).
    pub(crate) going_volumes: Vec<String>,
    /// Ports carrying the name, a failed try's, that a SOFT_DELETED server
    /// keeps bound until Nova's reclaim ([`TwinWatch::bound_ports`]).
    pub(crate) bound_ports: Vec<String>,
}

impl TwinsLeft {
    pub(crate) fn is_empty(&self) -> bool {
        self.going_volumes.is_empty() && self.bound_ports.is_empty()
    }

    /// Names them in `watch`.
    pub(crate) fn follow_in(&self, watch: &mut TwinWatch) {
        for volume_id in &self.going_volumes {
            watch.note_deleted(volume_id);
        }
        for port_id in &self.bound_ports {
            watch.note_bound_port(port_id);
        }
    }
}

/// What became of a port [`Shared::delete_port_unless_held`] deleted.
pub(crate) enum PortDelete {
    /// Deleted, or gone already.
    Gone,
    /// Still bound to `server_id`, which the cloud keeps SOFT_DELETED until
    /// Nova's reclaim (its forceDelete refused, or not sent yet), and
    /// Neutron refuses the delete of a bound port: only that reclaim, or an
    /// admin's forceDelete, lets go of it.
    Held { server_id: String },
}

/// Whether a create of `allocation`'s attempt may have been done without
/// its id reaching the record, so that a twin may land after any one look:
/// a create lost its answer, or (`after_crash`: no Allocate of this process
/// was working on it) one may have been on its way when the process that
/// sent it died.
fn twins_possible(allocation: &Allocation, after_crash: bool) -> bool {
    let unrecorded_create = after_crash
        && (allocation.port_id.is_none()
            || (allocation.volume_id.is_none()
                && matches!(allocation.params.volume.source, VolumeSource::New { .. })));
    allocation.creates_in_doubt || unrecorded_create
}

/// Where a volume wait stands relative to our attach call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase<'a> {
    /// A volume warmpool has just created, before any claim.
    Created {
        /// The purchase began after a wait for another call of its order.
        after_wait: Option<AfterWait>,
    },
    BeforeAttach {
        /// Servers earlier tries of this purchase discarded.
        discarded_servers: &'a [String],
        /// warmpool created the volume for this purchase.
        created: bool,
    },
    AfterAttach {
        /// The server the attach was asked for.
        server_id: &'a str,
    },
}

/// What a try knows of the purchase's volume before it attaches it.
#[derive(Clone, Copy)]
struct VolumeBefore<'a> {
    /// Warmpool's own new volume, just seen `available`: no look needed.
    known_available: bool,
    /// Servers earlier tries discarded; their deletion lets go of the
    /// volume (a detach Nova refused, or an attach carried out after its
    /// answer was lost, leaves it in use by them until then).
    discarded_servers: &'a [String],
}

/// The servers a volume whose delete Cinder refuses may still be
/// detaching from, as [`Shared::delete_volume_when_free`] is told: one
/// attached to another stays so until someone detaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LetGoBy<'a> {
    /// The order's own server (`None`: it has none), which a release
    /// detached the volume from and deleted.
    Order(Option<&'a str>),
    /// Any: the caller deleted every server that could hold it, some
    /// named by no record (a rollback's failed tries, a lost create's
    /// twin).
    AnyServer,
}

/// How long Cinder may list an attachment to the order's server once the
/// server is gone before it is taken for a stale one: Nova deletes it
/// before the server goes, so this covers only an answer from a Cinder
/// that lags behind Nova's.
const STALE_ATTACHMENT_GRACE: Duration = Duration::from_secs(30);

/// FAILED_PRECONDITION for a volume whose delete Cinder refused (`refused`)
/// in a state that no wait ends, as it looks now; `None` while it may
/// still be letting go.
fn refusal_that_stands(
    volume: &Volume,
    let_go_by: LetGoBy<'_>,
    refused: &str,
) -> Option<ManagerError> {
    let volume_id = &volume.id;
    if volume.status.is_awaiting_transfer() {
        return Some(ManagerError::FailedPrecondition(format!(
            "volume {volume_id} is awaiting-transfer (someone created a transfer of it to another project), and Cinder refuses its delete until the transfer is accepted or deleted (openstack volume transfer request list, then openstack volume transfer request delete ID); then release again: {refused}"
        )));
    }
    // Every caller has deleted the servers that could hold it first (a
    // deletion lets go of one Nova kept), so Cinder keeps it so until an
    // admin resets it: waiting out the deadline would only hold up the
    // caller (a release, a rollback, a reconcile pass) each time. It asks
    // again.
    if volume.status.is_error_attaching() {
        return Some(ManagerError::FailedPrecondition(format!(
            "volume {volume_id} is error_attaching (an attach of it failed in Cinder), and Cinder refuses its delete until an admin resets its state (openstack volume set --state available {volume_id}): {refused}"
        )));
    }
    let LetGoBy::Order(own) = let_go_by else {
        return None;
    };
    // A detach from another server under way ends by itself.
    if volume.status == VolumeStatus::Detaching {
        return None;
    }
    let others: Vec<&str> = volume
        .attached_to
        .iter()
        .map(String::as_str)
        .filter(|s| Some(*s) != own)
        .collect();
    let first = others.first()?;
    let others = others.join(", ");
    Some(ManagerError::FailedPrecondition(format!(
        "volume {volume_id} is in use by server {others}, not the order's, and Cinder refuses its delete while it is attached: detach it there (openstack server remove volume {first} {volume_id}) and release again: {refused}"
    )))
}

/// What Cinder is doing to a volume in a state that ends by itself (in the
/// state the volume had before: available, or in-use), as a message says
/// it; `None` for a state that lasts (in-use, error, awaiting a transfer
/// its owner must accept or cancel) or that is no obstacle (available).
fn passing_volume_state(status: &VolumeStatus) -> Option<&'static str> {
    Some(match status {
        VolumeStatus::Creating => "still being created",
        VolumeStatus::Detaching => "being detached",
        VolumeStatus::Other(s) => match s.as_str() {
            "maintenance" => "in maintenance (being migrated)",
            "backing-up" => "being backed up",
            "restoring-backup" => "being restored from a backup",
            "uploading" => "being uploaded to an image",
            "retyping" => "being retyped",
            "extending" => "being extended",
            _ => return None,
        },
        _ => return None,
    })
}

/// What a purchase answers when its volume is still on its way (being
/// created, detached from a failed try's instance, attached) at the
/// deadline: the volume, not the pool, was late, so it is no want of an
/// instance (RESOURCE_EXHAUSTED would count a miss of the pool's depth).
fn volume_late(volume_id: &str, status: &VolumeStatus, phase: Phase<'_>) -> ManagerError {
    let state = match status {
        VolumeStatus::Creating => "being created".to_owned(),
        VolumeStatus::Attaching => "being attached".to_owned(),
        VolumeStatus::Available => "available, not yet attached".to_owned(),
        VolumeStatus::InUse => "attached to a server a failed try discarded".to_owned(),
        s => passing_volume_state(s)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{s:?}")),
    };
    ManagerError::DeadlineExceeded(match phase {
        Phase::Created {
            after_wait: Some(AfterWait { waited, left }),
        } => format!(
            "the purchase's timeout passed while its new volume {volume_id} was still {state}: this call waited {:.1} s for another call of the order, which failed, and had only {:.1} s left for a purchase of its own; no instance was claimed: ask again (with a longer timeout if need be)",
            waited.as_secs_f64(),
            left.as_secs_f64()
        ),
        Phase::Created { after_wait: None } => format!(
            "the purchase's timeout passed while its new volume {volume_id} was still {state} (Cinder is slow to make it); no instance was claimed: ask again with a longer timeout"
        ),
        Phase::BeforeAttach { .. } => format!(
            "the purchase's timeout passed while volume {volume_id} was still {state}; ask again, with a longer timeout if need be"
        ),
        Phase::AfterAttach { server_id } => format!(
            "volume {volume_id} was still {state} on server {server_id} when the attach's deadline passed (Cinder is slow to attach it); the purchase is rolled back: ask again later, with a longer timeout if need be"
        ),
    })
}

/// UNAVAILABLE for a volume in a state that ends by itself
/// ([`passing_volume_state`]), at the fence or at the attach alike.
fn passing_state_refusal(volume_id: &str, status: &VolumeStatus) -> Option<ManagerError> {
    passing_volume_state(status).map(|doing| {
        ManagerError::TryAgain(format!(
            "volume {volume_id} is {doing}; ask again once it is available"
        ))
    })
}

/// The look at the volume the try's server now holds alone: a tag that
/// names another tenant now (written by a holder since this order's
/// fence) fails the try, whose server held that tenant's data and is
/// discarded. Otherwise whether the volume came untagged ([`needs_tag`]),
/// to be tagged for the order's tenant once the order is served
/// ([`Shared::tag_for_the_tenant`]). A crash before that tag leaves the
/// volume untagged, as it came, and the order `Allocating`, which the
/// reconciler rolls back, no tenant answered.
fn check_held_volume(volume: &Volume, tenant: &str) -> Result<bool, AttemptError> {
    if let Err(e) = refuse_if_another_tenants(volume, tenant) {
        return Err(AttemptError::Request(with_more(
            e,
            "found once attached: the volume was tagged since this order's check; the purchase is rolled back, and the server it was attached to discarded",
        )));
    }
    Ok(needs_tag(volume))
}

/// Whether an order served `volume` tags it for its tenant: a volume with
/// no tag that Cinder does not show in another project (the tenant's own:
/// its owner tells whose it is).
fn needs_tag(volume: &Volume) -> bool {
    volume.tagged_tenant().is_none() && !matches!(volume.owner, VolumeOwner::Project(_))
}

/// FAILED_PRECONDITION for an existing volume Cinder does not show.
fn volume_not_seen(volume_id: &str) -> ManagerError {
    ManagerError::FailedPrecondition(format!(
        "volume {volume_id} does not exist, or warmpool's cloud user cannot see it (another project's volume needs an admin role)"
    ))
}

/// Everything warmpool creates lives in its own project, whichever
/// tenant the order is for, so one wrong volume id from billing would hand
/// one tenant's database to another (and a release deleting the volume
/// would delete it). A volume tagged for another tenant ([`META_TENANT`]:
/// warmpool made it for, or first served it to, that tenant's order,
/// [`Shared::tag_for_the_tenant`]; or tagged it for one a crash then rolled
/// back, which warmpool cannot tell apart, so the refusal does not say
/// the order was served and tells how to remove a tag no order
/// answered), or one the cloud shows in a project
/// that is neither the order's tenant's nor warmpool's own, is refused.
/// One with neither (made in warmpool's project outside warmpool, or kept
/// by a warmpool from before the tag, and never served since; or where
/// Cinder's policy hides the owner) cannot be told apart: it is attached,
/// and tagged for the order's tenant once the order is served.
fn refuse_if_another_tenants(volume: &Volume, tenant: &str) -> ManagerResult<()> {
    let id = &volume.id;
    // Case-blind, as the cloud finds ids: older warmpools wrote the tag
    // with the id as billing sent it, upper case maybe ([`canonical_id`]).
    if let Some(tagged) = volume
        .tagged_tenant()
        .filter(|t| !t.eq_ignore_ascii_case(tenant))
    {
        return Err(ManagerError::FailedPrecondition(format!(
            "volume {id} is tagged for tenant {tagged} ({META_TENANT} metadata, which warmpool writes on a volume it creates for an order of that tenant, and on an untagged one right before answering such an order), but this order is for tenant {tenant}; warmpool attaches a volume only to its own tenant's orders: check the volume id and tenant_project_id sent; if no order of tenant {tagged} was ever answered with this volume (a warmpoold crash right after the tag leaves it on an order then rolled back), remove the tag: openstack volume unset --property {META_TENANT} {id}"
        )));
    }
    if let VolumeOwner::Project(project) = &volume.owner {
        if project != tenant {
            return Err(ManagerError::FailedPrecondition(format!(
                "volume {id} belongs to project {project}, which is neither this order's tenant {tenant} nor warmpool's own project; warmpool attaches a volume only to its own tenant's orders: check the volume id and tenant_project_id sent"
            )));
        }
    }
    Ok(())
}

/// Whether `network` is project `tenant`'s own.
fn owned_by(network: &Network, tenant: &str) -> bool {
    matches!(&network.owner, NetworkOwner::Project(p) if p.eq_ignore_ascii_case(tenant))
}

/// The tenant's port is made in warmpool's project, as everything warmpool
/// creates is, so Neutron takes it on any network warmpool's user may use:
/// with an admin, every project's. Warmpool's security groups then let
/// clients on that network reach mysqld, so one wrong network id from
/// billing would put one tenant's database on another's network. A network
/// is the tenant's if the tenant owns it, or Neutron's RBAC shares it
/// (`access_as_shared`) with the tenant or with every project (a provider
/// network shared with all, Neutron's `shared: true`); any other is
/// refused. Neutron's own `shared` flag cannot tell: Neutron works it out
/// for the project asking, so it is true too for a network shared with
/// warmpool's project alone (as a deployment may share each tenant's
/// network so that a member user can make ports on it). Where warmpool's
/// user is shown no policy that explains that flag (Neutron shows a
/// network's policies to an admin, or to the network's project), whom the
/// network is shared with cannot be told, and it is refused too, saying so.
///
/// `tenant_is_warmpools`: the order's tenant is warmpool's own project (a
/// deployment selling into the project it works in), whose networks, and
/// those shared with it, are then the tenant's.
fn refuse_unless_the_tenants_network(
    network: &Network,
    shares: &[NetworkShare],
    tenant: &str,
    tenant_is_warmpools: bool,
) -> ManagerResult<()> {
    let id = &network.id;
    let shared_with_tenant = |s: &NetworkShare| match s {
        NetworkShare::EveryProject => true,
        NetworkShare::Project(p) => p.eq_ignore_ascii_case(tenant),
        NetworkShare::Warmpool => tenant_is_warmpools,
    };
    let owned = owned_by(network, tenant)
        || (network.owner == NetworkOwner::Warmpool && tenant_is_warmpools);
    if owned || shares.iter().any(shared_with_tenant) {
        return Ok(());
    }
    let whose = match &network.owner {
        NetworkOwner::Warmpool => "warmpool's own project".to_owned(),
        NetworkOwner::Project(p) => format!("project {p}"),
    };
    let with_warmpool = shares.contains(&NetworkShare::Warmpool);
    if network.shared && !with_warmpool {
        return Err(ManagerError::FailedPrecondition(format!(
            "network {id} belongs to {whose}, not to this order's tenant {tenant}, and warmpool cannot tell whether it is shared with that tenant: Neutron shows it shared, with every project or with warmpool's project alone, but shows warmpool's cloud user none of its RBAC policies (Neutron shows them to an admin, or to the network's own project); warmpool puts a tenant's port only on the tenant's own network or one shared with it: give warmpool's cloud user the admin role on its project (as attaching tenants' volumes needs), or check the network_id and tenant_project_id sent"
        )));
    }
    let only_warmpool = if with_warmpool {
        " (only with warmpool's project)"
    } else {
        ""
    };
    Err(ManagerError::FailedPrecondition(format!(
        "network {id} belongs to {whose}, not to this order's tenant {tenant}, and Neutron shares it neither with that tenant nor with every project{only_warmpool}; warmpool puts a tenant's port only on the tenant's own network or one shared with it, or its database would be reachable from another tenant's network: check the network_id and tenant_project_id sent, or share the network with the tenant (openstack network rbac create --type network --action access_as_shared --target-project {tenant} {id})"
    )))
}

/// FAILED_PRECONDITION for a tenant's volume that is not `available`,
/// saying what its status means for the caller (a state that ends by
/// itself is [`passing_state_refusal`]'s first).
fn not_attachable(volume_id: &str, status: &VolumeStatus) -> ManagerError {
    let why = match status {
        VolumeStatus::InUse | VolumeStatus::Attaching => {
            "attached to a server; a volume is never attached while in use (detach it first)"
                .to_owned()
        }
        VolumeStatus::Error => {
            "in error: Cinder failed it, and it cannot be attached (restore it or use another)"
                .to_owned()
        }
        VolumeStatus::Creating => "still being created; ask again once it is available".to_owned(),
        VolumeStatus::Detaching => "being detached; ask again once it is available".to_owned(),
        VolumeStatus::Available => "available".to_owned(),
        status if status.is_error_attaching() => {
            "error_attaching: an attach of it failed in Cinder, and Cinder keeps it so until an admin resets its state (openstack volume set --state available)".to_owned()
        }
        VolumeStatus::Other(other) => format!("{other}, not available"),
    };
    ManagerError::FailedPrecondition(format!("volume {volume_id} is {why}"))
}

/// As [`not_attachable`], for the volume a failed try of the purchase
/// attached. A new volume warmpool made (`created`) that the try left
/// error_attaching is no admin's reset for the caller to ask for: it is
/// UNAVAILABLE, as a new volume Cinder could not build is. The rollback
/// leaves it to the reconciler (Cinder refuses its delete until the
/// reset), and the same request is refused until then rather than making
/// a new volume Cinder may leave so too.
fn not_attachable_after_a_try(
    volume_id: &str,
    status: &VolumeStatus,
    created: bool,
) -> ManagerError {
    if created && status.is_error_attaching() {
        return ManagerError::Cloud(CloudError::Transient(format!(
            "the purchase's new volume {volume_id} is error_attaching: an attach of it failed in Cinder, which refuses its delete until a cloud admin resets its state (openstack volume set --state available {volume_id}; warmpool then deletes it) or force-deletes it; the purchase is rolled back, and the same order is refused until then, so that retries do not pile up stuck volumes"
        )));
    }
    not_attachable(volume_id, status)
}

/// What Nova shows of a server that is broken for good, if it does: in
/// ERROR, or stopped (SHUTOFF), shelved, paused, suspended or in rescue
/// with no task under way (a start, an unshelve, an unpause, a resume, an
/// unrescue) to bring it back: each stays so until someone acts. Busy is
/// not broken, as the reconciler has it: a reboot, a migration or a resize
/// (Nova's REBOOT, HARD_REBOOT, MIGRATING, RESIZE: a task under way)
/// silences mysqld until it ends by itself; nor is a status Nova may leave
/// by itself (VERIFY_RESIZE, which a resize's confirmation ends, UNKNOWN
/// while its host does not report).
fn broken_for_good(server: &Server) -> Option<String> {
    match server.status {
        ServerStatus::Error => Some(match &server.fault {
            Some(fault) => format!("in ERROR ({fault})"),
            None => "in ERROR".to_owned(),
        }),
        ServerStatus::Stopped if server.busy.is_none() => {
            Some("stopped (Nova shows it SHUTOFF)".to_owned())
        }
        ServerStatus::Shelved if server.busy.is_none() => {
            Some("shelved (Nova shows it SHELVED or SHELVED_OFFLOADED)".to_owned())
        }
        ServerStatus::Paused if server.busy.is_none() => {
            Some("paused (Nova shows it PAUSED)".to_owned())
        }
        ServerStatus::Suspended if server.busy.is_none() => {
            Some("suspended (Nova shows it SUSPENDED)".to_owned())
        }
        ServerStatus::Rescued if server.busy.is_none() => {
            Some("in rescue (Nova shows it RESCUE)".to_owned())
        }
        _ => None,
    }
}

/// A cold boot's answer at its deadline, in line for quota all the while:
/// `why`, the quota the last look found used up (" (instances: 10 of 10
/// used at the last poll)"), or the cloud's refusal of its boot.
fn quota_used_up(flavor: &str, why: &str) -> ManagerError {
    ManagerError::ResourceExhausted(format!(
        "cloud quota for flavor {flavor} is used up{why}; no room for a cold boot before the deadline: free servers of warmpool's project (release orders, lower pools' targets) or raise its quota, or ask again with a longer timeout"
    ))
}

/// [`Shared::no_ready_instance`] of a pool read; `waited`, a WAIT
/// purchase whose deadline passed.
fn no_ready_instance_in(pool: &PoolRecord, waited: bool) -> ManagerError {
    empty_pool(&pool.key, pool.spec.paused, waited)
}

/// RESOURCE_EXHAUSTED for a purchase that found pool `key` empty, with
/// what its caller can do, as fits how it asked: a fail-fast purchase
/// (or a cold boot of a paused pool) or, `waited`, a WAIT one whose
/// deadline passed. A paused pool boots nothing for any of them.
fn empty_pool(key: &PoolKey, paused: bool, waited: bool) -> ManagerError {
    let (had, when) = if waited {
        ("had", " before the deadline")
    } else {
        ("has", "")
    };
    let next = match (paused, waited) {
        (true, _) => "ask again once it is unpaused",
        (false, true) => "ask again with a longer timeout or with empty_pool_policy COLD_BOOT (warmpoolctl --on-empty cold-boot), or have the pool's min_ready or target raised",
        (false, false) => "ask again later, or with empty_pool_policy WAIT or COLD_BOOT (warmpoolctl --on-empty wait or cold-boot), or have the pool's min_ready or target raised",
    };
    let paused = if paused { PAUSED } else { "" };
    ManagerError::ResourceExhausted(format!(
        "pool {key} {had} no ready instance{when}{paused}; {next}"
    ))
}

/// FAILED_PRECONDITION for a purchase from pool `key`, being deleted
/// (`draining`) or gone.
fn deleted_pool(key: &PoolKey, draining: bool) -> ManagerError {
    ManagerError::FailedPrecondition(format!(
        "pool {key} {} deleted; it hands out nothing more: buy from another pool, or from this one once it is created again",
        if draining { "is being" } else { "was" }
    ))
}

/// RESOURCE_EXHAUSTED for a purchase that got no instance while the pool
/// has `silent` Ready ones, each found silent at its claim by the purchase
/// and put back: "no ready instance" would contradict GetPool's count.
/// (`waited`: a WAIT purchase, whose deadline passed.)
fn none_but_silent(
    key: &PoolKey,
    silent: usize,
    pool: Option<&PoolRecord>,
    waited: bool,
) -> ManagerError {
    let (instances, were, their, are) = match silent {
        1 => ("instance", "was", "its", "is"),
        _ => ("instances", "were", "their", "are"),
    };
    ManagerError::ResourceExhausted(format!(
        "pool {key} {} no Ready instance this purchase could use{}: {silent} Ready {instances} {were} silent at {their} claim and {are} back in the pool, for the reconciler to judge (it replaces one silent on two passes); call again later{}",
        if waited { "had" } else { "has" },
        if waited { " before the deadline" } else { "" },
        pool.map_or("", paused_hint)
    ))
}

/// Why an empty pool stays empty, when it is the operator's doing.
fn paused_hint(pool: &PoolRecord) -> &'static str {
    if pool.spec.paused {
        PAUSED
    } else {
        ""
    }
}

/// [`paused_hint`] of a paused pool.
const PAUSED: &str = " (the pool is paused: it boots nothing until it is unpaused)";

#[cfg(test)]
mod tests {
    use super::*;

    /// Cinder's 400 points at the order's volume type only when it names
    /// the type as a word (or speaks of a volume type): a type named "1"
    /// or "ssd" is not named by a size of 10 or by another type's name.
    #[test]
    fn a_refusal_is_of_the_volume_type_only_when_it_names_it() {
        let of_the_type = |volume_type: &str, message: &str| {
            let refused =
                volume_creation_refused(Some(volume_type), CloudError::Fatal(message.to_owned()));
            matches!(refused, AttemptError::Request(ManagerError::FailedPrecondition(m)) if m.contains("volume.new_volume.volume_type"))
        };
        assert!(of_the_type("ssd", "Invalid type ssd: no backend"));
        assert!(of_the_type("ssd", "'ssd' is not allowed"));
        assert!(of_the_type("x", "Invalid volume type: x"));
        assert!(!of_the_type("1", "Invalid input: size 10 is too large"));
        assert!(!of_the_type("ssd", "backend ssd-gold is full"));
        assert!(!of_the_type("ssd", "Invalid input received: bad metadata"));
    }

    /// A twin found by the name after a create's lost answer is the
    /// order's only if it is as asked and free: a failed try's port its
    /// SOFT_DELETED server keeps, or a volume attached or going, is not.
    #[test]
    fn a_twin_is_taken_only_as_asked_and_free() {
        let spec = NewPortSpec {
            name: "warmpool-o-1".into(),
            network_id: "net-1".into(),
            subnet_id: Some("sub-1".into()),
            fixed_ip: Some("10.0.0.5".into()),
        };
        let port = |ip: &str, device: Option<&str>| Port {
            id: "p-1".into(),
            name: "warmpool-o-1".into(),
            network_id: "net-1".into(),
            device_id: device.map(str::to_owned),
            ip_address: Some(ip.into()),
            fixed_ips: vec![crate::cloud::FixedIp {
                subnet_id: Some("sub-1".into()),
                ip_address: ip.into(),
            }],
            address_deferred: false,
        };
        assert!(port_serves(&port("10.0.0.5", None), &spec));
        assert!(!port_serves(&port("10.0.0.6", None), &spec));
        assert!(!port_serves(&port("10.0.0.5", Some("server-1")), &spec));

        let spec = NewVolumeSpec {
            name: "warmpool-o-1".into(),
            size_gib: 20,
            volume_type: None,
            availability_zone: "az1".into(),
            metadata: BTreeMap::from([(META_TENANT.to_owned(), "tenant-a".to_owned())]),
        };
        let volume = |status: VolumeStatus, attached: &[&str]| Volume {
            id: "v-1".into(),
            name: "warmpool-o-1".into(),
            status,
            availability_zone: "az1".into(),
            size_gib: 20,
            attached_to: attached.iter().map(|s| s.to_string()).collect(),
            volume_type: None,
            multiattach: false,
            metadata: spec.metadata.clone(),
            owner: VolumeOwner::Warmpool,
        };
        assert!(volume_serves(&volume(VolumeStatus::Creating, &[]), &spec));
        assert!(volume_serves(&volume(VolumeStatus::Available, &[]), &spec));
        assert!(!volume_serves(
            &volume(VolumeStatus::InUse, &["s-1"]),
            &spec
        ));
        let going = volume(VolumeStatus::Other("deleting".into()), &[]);
        assert!(!volume_serves(&going, &spec));
    }

    /// A network is the tenant's if it owns it or Neutron's RBAC shares it
    /// with the tenant or every project. Neutron's `shared` alone is no
    /// share with the tenant: it is true for one shared with warmpool's
    /// project alone too, and where warmpool is shown no policy that
    /// explains it (a member user), the refusal says it cannot tell.
    #[test]
    fn a_network_is_the_tenants_only_if_it_owns_it_or_it_is_shared_with_it() {
        let network = |owner: NetworkOwner, shared: bool| Network {
            id: "net-1".into(),
            owner,
            shared,
            management: None,
        };
        let theirs = |p: &str| NetworkOwner::Project(p.into());
        let judged = |n: &Network, shares: &[NetworkShare]| {
            refuse_unless_the_tenants_network(n, shares, "tenant-a", false)
                .map_err(|e| e.to_string())
        };
        let to = |p: &str| NetworkShare::Project(p.into());

        assert!(judged(&network(theirs("tenant-a"), false), &[]).is_ok());
        assert!(judged(&network(theirs("TENANT-A"), false), &[]).is_ok());
        let every = [NetworkShare::EveryProject];
        assert!(judged(&network(theirs("admin"), true), &every).is_ok());
        assert!(judged(&network(theirs("tenant-c"), false), &[to("tenant-a")]).is_ok());
        let of_warmpool = network(NetworkOwner::Warmpool, false);
        assert!(judged(&of_warmpool, &[to("tenant-a")]).is_ok());

        let refused = judged(&network(theirs("tenant-b"), false), &[to("tenant-c")]).unwrap_err();
        assert!(
            refused.contains("belongs to project tenant-b, not to this order's tenant tenant-a")
                && refused.contains("--target-project tenant-a net-1")
                && !refused.contains("only with warmpool's"),
            "{refused}"
        );
        let refused = judged(&of_warmpool, &[]).unwrap_err();
        assert!(refused.contains("warmpool's own project"), "{refused}");
        let warmpool = [NetworkShare::Warmpool];
        let refused = judged(&network(theirs("tenant-b"), true), &warmpool).unwrap_err();
        assert!(
            refused.contains("(only with warmpool's project)"),
            "{refused}"
        );
        let refused = judged(&network(theirs("tenant-b"), true), &[]).unwrap_err();
        assert!(
            refused.contains("cannot tell whether it is shared with that tenant")
                && refused.contains("admin role"),
            "{refused}"
        );
    }

    /// A deployment may sell into the project warmpool works in: that
    /// tenant's networks are warmpool's own and those shared with it.
    #[test]
    fn an_order_of_warmpools_own_project_may_use_its_networks() {
        let network = |owner: NetworkOwner, shared: bool| Network {
            id: "net-1".into(),
            owner,
            shared,
            management: None,
        };
        let judged = |n: &Network, shares: &[NetworkShare], tenant_is_warmpools| {
            refuse_unless_the_tenants_network(n, shares, "wp-project", tenant_is_warmpools)
                .map_err(|e| e.to_string())
        };
        let own = network(NetworkOwner::Warmpool, false);
        let shared_with_warmpool = network(NetworkOwner::Project("admin".into()), true);
        let warmpool = [NetworkShare::Warmpool];
        assert_eq!(judged(&own, &[], true), Ok(()));
        assert_eq!(judged(&shared_with_warmpool, &warmpool, true), Ok(()));
        // Another tenant's order is still refused both.
        assert!(judged(&own, &[], false).is_err());
        assert!(judged(&shared_with_warmpool, &warmpool, false).is_err());
    }

    /// Broken for good: ERROR, and SHUTOFF, shelved, PAUSED, SUSPENDED or
    /// RESCUE with no task under way. Busy with a task (REBOOT, MIGRATING, RESIZE: `Other`, a
    /// task_state), or a status Nova leaves by itself, is not.
    #[test]
    fn a_server_busy_with_a_task_is_not_broken_for_good() {
        let server = |status: ServerStatus, busy: Option<&str>| Server {
            id: "s1".into(),
            name: "warmpool-i1".into(),
            status,
            availability_zone: "az1".into(),
            metadata: BTreeMap::new(),
            mysql_addr: None,
            fault: None,
            attached_volumes: Vec::new(),
            attached_ports: Vec::new(),
            deleting: false,
            busy: busy.map(Into::into),
            locked: false,
        };
        let broken = |status, busy| broken_for_good(&server(status, busy));
        assert_eq!(
            broken(ServerStatus::Error, None).as_deref(),
            Some("in ERROR")
        );
        assert!(broken(ServerStatus::Error, Some("rebuilding")).is_some());
        assert!(broken(ServerStatus::Stopped, None)
            .unwrap()
            .contains("SHUTOFF"));
        assert!(broken(ServerStatus::Shelved, None)
            .unwrap()
            .contains("SHELVED"));
        for (status, shown) in [
            (ServerStatus::Paused, "PAUSED"),
            (ServerStatus::Suspended, "SUSPENDED"),
            (ServerStatus::Rescued, "RESCUE"),
        ] {
            assert!(broken(status, None).unwrap().contains(shown), "{status:?}");
        }
        assert_eq!(broken(ServerStatus::Stopped, Some("powering-on")), None);
        assert_eq!(broken(ServerStatus::Shelved, Some("unshelving")), None);
        assert_eq!(broken(ServerStatus::Paused, Some("unpausing")), None);
        assert_eq!(broken(ServerStatus::Suspended, Some("resuming")), None);
        assert_eq!(broken(ServerStatus::Rescued, Some("unrescuing")), None);
        assert_eq!(broken(ServerStatus::Other, Some("rebooting")), None);
        assert_eq!(broken(ServerStatus::Other, Some("migrating")), None);
        assert_eq!(broken(ServerStatus::Other, None), None);
        assert_eq!(broken(ServerStatus::Active, Some("image_snapshot")), None);
        assert_eq!(broken(ServerStatus::Build, Some("rebuild_spawning")), None);
    }

    /// A refused key is quoted in the status message, which the server
    /// cuts at 1024 bytes: a huge key quoted whole pushed the reason out.
    #[test]
    fn an_over_long_label_key_is_quoted_in_part_and_the_reason_kept() {
        let key = "k".repeat(2000);
        let labels = std::collections::BTreeMap::from([(key.clone(), "x".to_owned())]);
        match validate_labels(&labels).unwrap_err() {
            ManagerError::InvalidArgument { field, message } => {
                assert_eq!(field, "labels");
                assert!(
                    message.contains("is 2000 bytes; keys are at most 128"),
                    "{message}"
                );
                assert!(message.contains(&"k".repeat(64)), "{message}");
                assert!(message.len() < 256, "{} bytes: {message}", message.len());
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    /// 30 polls at a short `poll_interval` were 15 s, less than a slow
    /// server delete takes; a long one keeps its 30 polls.
    #[test]
    fn cleanups_have_a_floor() {
        assert_eq!(cleanup_budget(Duration::from_millis(500)), CLEANUP_FLOOR);
        assert_eq!(cleanup_budget(Duration::ZERO), CLEANUP_FLOOR);
        assert_eq!(
            cleanup_budget(Duration::from_secs(10)),
            Duration::from_secs(300)
        );
        assert_eq!(cleanup_budget(Duration::MAX), Duration::MAX);
    }

    /// A release waits only while the volume may still let go by itself:
    /// detaching, or attached to the order's own server; attached to
    /// another, or awaiting a transfer, it is refused at once. A rollback
    /// (any server may be one of its failed tries') waits for every
    /// attachment.
    #[test]
    fn refused_volume_deletes_that_no_wait_ends() {
        let volume = |status: VolumeStatus, attached_to: &[&str]| Volume {
            id: "vol-1".into(),
            name: "order".into(),
            status,
            availability_zone: "az1".into(),
            size_gib: 10,
            attached_to: attached_to.iter().map(|s| s.to_string()).collect(),
            volume_type: None,
            multiattach: attached_to.len() > 1,
            metadata: BTreeMap::new(),
            owner: VolumeOwner::Warmpool,
        };
        let order = LetGoBy::Order(Some("srv-own"));
        let stands = |v: &Volume, by| refusal_that_stands(v, by, "refused").is_some();
        let transfer = volume(VolumeStatus::Other("awaiting-transfer".into()), &[]);
        assert!(stands(&transfer, order));
        assert!(stands(&transfer, LetGoBy::AnyServer));
        let elsewhere = volume(VolumeStatus::InUse, &["srv-own", "srv-other"]);
        let Some(ManagerError::FailedPrecondition(m)) =
            refusal_that_stands(&elsewhere, order, "refused")
        else {
            panic!("in use elsewhere, waited for");
        };
        assert!(m.contains("srv-other") && !m.contains("srv-own"), "{m}");
        assert!(stands(&elsewhere, LetGoBy::Order(None)));
        assert!(!stands(&elsewhere, LetGoBy::AnyServer));
        for letting_go in [
            volume(VolumeStatus::InUse, &["srv-own"]),
            volume(VolumeStatus::Detaching, &["srv-own"]),
            volume(VolumeStatus::Detaching, &["srv-other"]),
            volume(VolumeStatus::Other("backing-up".into()), &[]),
            volume(VolumeStatus::Available, &[]),
        ] {
            assert!(!stands(&letting_go, order), "{letting_go:?}");
        }
    }

    /// A volume Cinder is backing up, extending, migrating... is back in
    /// its state when done: a purchase asks again (UNAVAILABLE) rather than
    /// being refused as the caller's to mend. A transfer waits for its
    /// owner, and in-use or error stay.
    #[test]
    fn volume_states_that_end_by_themselves() {
        let other = |s: &str| VolumeStatus::Other(s.to_owned());
        for passing in [
            VolumeStatus::Creating,
            VolumeStatus::Detaching,
            other("backing-up"),
            other("maintenance"),
            other("restoring-backup"),
            other("uploading"),
            other("retyping"),
            other("extending"),
        ] {
            assert!(passing_volume_state(&passing).is_some(), "{passing:?}");
        }
        for lasting in [
            VolumeStatus::Available,
            VolumeStatus::InUse,
            VolumeStatus::Attaching,
            VolumeStatus::Error,
            other("awaiting-transfer"),
            other("error_extending"),
            other("some-new-state"),
        ] {
            assert!(passing_volume_state(&lasting).is_none(), "{lasting:?}");
        }
    }
}
