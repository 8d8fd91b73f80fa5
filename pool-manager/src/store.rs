//! The `Store` trait and its sled implementation.
//!
//! What we store, and why:
//! - pools: the operator's spec and counters, so a restart serves the same pools;
//! - instances: every VM warmpool owns and its state, so a restart neither
//!   leaks nor double-hands one;
//! - allocations, keyed by `request_id`: the intent of an Allocate before any
//!   cloud call, and its outcome, so retries get the same answer;
//! - learned sizing per pool (demand and lead-time estimators), so a restart
//!   does not size auto pools from nothing. Saved now and then, not before
//!   every side effect: losing the last minute of it loses no VM.
//!
//! Instances and allocations change only by compare-and-swap on the whole
//! stored value: the claim of a Ready instance is one CAS, so two allocations
//! can never get one VM, and a writer working on a stale copy loses.
//!
//! The sled store keeps in memory which ids the hot listings return (each
//! pool's untouched instances, the unfinished allocations) and each pool's
//! instance counts: built by one scan when the store opens and changed
//! under the same lock as each swap, so a claim or a replenisher step reads
//! a pool's few untouched instances, not every tenant's database, a pool's
//! status reads no instance at all, and a reconcile pass reads the
//! allocations in flight, not every order ever made.
//!
//! A sled store whose disk fails stays failed: sled 0.34 keeps the first
//! error of a log write (`Config::set_global_error`, config.rs) and fails
//! every later write and flush with it (checked before each log
//! reservation, logger.rs, and in `make_stable`, pagecache/iobuf.rs) until
//! the database is opened again, disk freed or not; reads go on.
//! [`SledStore::failed`] says so, for its opener to restart.

use crate::cloud::CloudIdentity;
use crate::events::StoredHealth;
use crate::model::{
    resource_names_of, Allocation, Instance, InstanceState, PoolKey, PoolRecord, TwinWatch,
};
use crate::sizing::LearnedSizing;
use async_trait::async_trait;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How long [`SledStore::open`] waits for a data dir's lock. sled releases
/// its file lock only when its flusher thread exits, a moment after the last
/// handle is dropped (spacejam/sled#1234), so a quick restart in the same
/// process, or right after the previous process, can find it still held.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The bytes of sled's page cache [`SledStore::open`] gives a store unless
/// told otherwise. sled's own default is 1 GiB, which it lowers only to a
/// cgroup v1 memory limit (not v2's, nor a container's under it), so a
/// daemon in a 512 MiB container would grow until killed. warmpool's
/// records are small JSON documents and the hot listings are answered from
/// the in-memory index, so a store of many thousand instances is served
/// from a cache of tens of MiB.
pub const DEFAULT_CACHE_CAPACITY: u64 = 64 << 20;

/// Each variant tells its cause in its own message, so none is also a
/// `source`: anyhow's `{:#}`, warmpoold's last line, would tell it twice.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O failed: {0}")]
    Io(sled::Error),
    /// sled found its files damaged (sled's `Corruption`): a disk that
    /// lost writes, a `db` file cut short, a copy of a running store.
    #[error(
        "the store's files are damaged: sled found corrupted data{}. Stop warmpoold and restore \
         the data dir from a backup (a copy taken while warmpoold was stopped). Do not start it \
         on an empty data dir instead: an empty store knows none of warmpool's orders and \
         instances, so the databases it sold could not be released through it any more (a \
         start on it over the cloud's pool servers is refused unless --delete-unknown-servers \
         says to delete the unsold ones as leaks)",
        at.map(|at| format!(" at byte {at} of its `db` file")).unwrap_or_default()
    )]
    Corrupt {
        /// Where in the `db` file, when sled says.
        at: Option<u64>,
    },
    #[error(
        "store record {tree}/{key} cannot be read ({error}); a newer warmpoold may have written \
         it: {}",
        unreadable_advice(tree, key)
    )]
    Unreadable {
        tree: String,
        key: String,
        error: serde_json::Error,
    },
    /// The cloud the store recorded ([`Store::cloud_identity`]) in a form
    /// this version does not know: a newer warmpoold's. Not a record
    /// `warmpoold store set-aside` moves: which cloud the store serves
    /// cannot be done without.
    #[error(
        "the store's record of the cloud it serves cannot be read ({error}); a newer warmpoold \
         may have written it: run that version"
    )]
    UnreadableCloud { error: serde_json::Error },
    #[error("CAS must name a record: both expected and new are None")]
    NothingToSwap,
    /// A data dir holding no store (sled's `conf` and `db` files), where
    /// only warmpoold's start makes one.
    #[error(
        "no store in {}: warmpoold makes its store there when it first starts; is that the data dir \
         it runs with (data_dir, --data-dir)?",
        dir.display()
    )]
    NoStore { dir: PathBuf },
    /// Looking for the store's files in `dir` failed for another reason
    /// than their absence (a permission, a path through a regular file):
    /// whether a store is there cannot be told, and "no store" would read
    /// as a store lost.
    #[error(
        "cannot tell whether {} holds a store: looking at {} failed: {error}; {}",
        dir.display(),
        path.display(),
        inaccessible_advice(error)
    )]
    Inaccessible {
        dir: PathBuf,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the store in {} is locked by another process (is another warmpoold using this data dir?); waited {waited:.1?}",
        dir.display()
    )]
    Locked { dir: PathBuf, waited: Duration },
}

/// What to do about a record [`StoreError::Unreadable`] names. A pool's
/// learned sizing does not stop warmpoold, which keeps it unsaved over:
/// set aside, it would never come back (this version saves fresh sizing
/// under its key, which supersedes the copy), so it is not advised. A
/// pool set aside is created again under its key (at the next start if
/// configured), which supersedes the copy too: said, so that the operator
/// knows the version that wrote it will not get it back.
fn unreadable_advice(tree: &str, key: &str) -> String {
    if tree == RecordKind::LearnedSizing.tree() {
        "run that version to size the pool from it; this one sizes the pool from scratch and \
         keeps the record, unsaved over, for that version"
            .to_owned()
    } else if tree == RecordKind::Pool.tree() {
        format!(
            "run that version, or stop warmpoold and run `warmpoold store check` to list such \
             records and `warmpoold store set-aside {tree} '{key}'` to move this one aside; a \
             pool set aside is created again from the config at the next start if it is \
             configured, or else by `warmpoolctl pools create`, and its copy set aside is then \
             superseded for good: kept for inspection only, never coming back, not even under \
             the version that wrote it"
        )
    } else {
        format!(
            "run that version, or stop warmpoold and run `warmpoold store check` to list such \
             records and `warmpoold store set-aside {tree} '{key}'` to move this one aside"
        )
    }
}

/// What to do about a data dir [`StoreError::Inaccessible`] names.
fn inaccessible_advice(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "run this as the user warmpoold runs as, the owner of the data dir (under the systemd unit's dynamic user, as README's `systemd-run ... -p DynamicUser=yes -p User=warmpool` does: root's files there would stop warmpoold)"
        }
        _ => "check that data_dir (--data-dir) names a directory on a mounted, readable disk",
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { at, .. } => StoreError::Corrupt {
                at: at.map(|at| at.lid()),
            },
            other => StoreError::Io(other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Durable state. Writes are visible at once; `flush` makes them survive a crash.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get_pool(&self, key: &PoolKey) -> StoreResult<Option<PoolRecord>>;
    async fn list_pools(&self) -> StoreResult<Vec<PoolRecord>>;
    async fn put_pool(&self, pool: &PoolRecord) -> StoreResult<()>;
    /// Deletes the pool and what was learned about it, its stored health
    /// first: a pool created again under its key must not find it.
    async fn delete_pool(&self, key: &PoolKey) -> StoreResult<()>;

    async fn get_learned_sizing(&self, key: &PoolKey) -> StoreResult<Option<LearnedSizing>>;
    async fn put_learned_sizing(&self, key: &PoolKey, learned: &LearnedSizing) -> StoreResult<()>;

    /// The pool's boot health a restart keeps; `None` when none is stored
    /// (a pool whose boots have not failed since its last Ready one, or a
    /// store written by a build that kept none).
    async fn get_pool_health(&self, key: &PoolKey) -> StoreResult<Option<StoredHealth>>;
    /// Stores the pool's boot health (`None`: removes it); durable at the
    /// next flush.
    async fn put_pool_health(
        &self,
        key: &PoolKey,
        health: Option<&StoredHealth>,
    ) -> StoreResult<()>;

    async fn get_instance(&self, id: &str) -> StoreResult<Option<Instance>>;
    async fn list_instances(&self) -> StoreResult<Vec<Instance>>;
    /// The instances of `pool` no tenant has touched (see
    /// [`crate::model::InstanceState::is_tenant_touched`]): what replenishing
    /// and claiming look at. Tenants' instances outnumber these many times
    /// over, so a store that can skip them without reading them should.
    async fn list_untouched_instances(&self, pool: &PoolKey) -> StoreResult<Vec<Instance>> {
        let mut instances = self.list_instances().await?;
        instances.retain(|i| i.is_untouched_in(pool));
        Ok(instances)
    }
    /// How many instances of `pool` are in each state, tenants' included:
    /// what a pool's status shows (states with none are left out). A store
    /// that can count without reading every instance should.
    async fn count_instances(&self, pool: &PoolKey) -> StoreResult<BTreeMap<InstanceState, u32>> {
        let mut counts = self.count_instances_by_pool().await?;
        Ok(counts.remove(pool).unwrap_or_default())
    }
    /// [`Store::count_instances`] of every pool some instance names, pool
    /// record or not: a deleted pool's record goes once it is drained, while
    /// its tenants' instances stay until released, and they still count
    /// (warmpoold's metrics). Pools with no instance are left out.
    async fn count_instances_by_pool(
        &self,
    ) -> StoreResult<BTreeMap<PoolKey, BTreeMap<InstanceState, u32>>> {
        let mut counts: BTreeMap<PoolKey, BTreeMap<InstanceState, u32>> = BTreeMap::new();
        for instance in self.list_instances().await? {
            *counts
                .entry(instance.pool)
                .or_default()
                .entry(instance.state)
                .or_default() += 1;
        }
        Ok(counts)
    }
    /// Replaces `expected` by `new` (`None` = absent) if the stored record
    /// still equals `expected`. Returns whether it did.
    async fn cas_instance(
        &self,
        expected: Option<&Instance>,
        new: Option<&Instance>,
    ) -> StoreResult<bool>;

    /// Adds or replaces the watch of its name: for a name no watch has yet
    /// (a commit's); others change by [`Store::cas_twin_watch`].
    async fn put_twin_watch(&self, watch: &TwinWatch) -> StoreResult<()>;
    async fn list_twin_watches(&self) -> StoreResult<Vec<TwinWatch>>;
    /// The watches of the order `request_id` (of any attempt of it): what
    /// a purchase of a new volume reads. Every release that deletes a
    /// volume leaves a watch until the next reconcile pass, so a store
    /// reads the order's alone, by the prefix of their names
    /// ([`resource_names_of`]), which orders whose ids start with
    /// `request_id` share.
    async fn list_twin_watches_of(&self, request_id: &str) -> StoreResult<Vec<TwinWatch>>;
    /// As `cas_instance`, keyed by the watch's name: a pass replaces or
    /// ends only the watch it listed, which a release of the order may
    /// have written over meanwhile (naming the volume it deletes).
    async fn cas_twin_watch(
        &self,
        expected: Option<&TwinWatch>,
        new: Option<&TwinWatch>,
    ) -> StoreResult<bool>;

    async fn get_allocation(&self, request_id: &str) -> StoreResult<Option<Allocation>>;
    async fn list_allocations(&self) -> StoreResult<Vec<Allocation>>;
    /// Allocations an Allocate or Release has not finished (`Allocating`,
    /// `Releasing`): what the reconciler repairs. Finished ones accumulate
    /// (idempotent answers), so a store that can skip them should.
    async fn list_unfinished_allocations(&self) -> StoreResult<Vec<Allocation>> {
        let mut allocations = self.list_allocations().await?;
        allocations.retain(|a| a.state.is_unfinished());
        Ok(allocations)
    }
    /// The request ids of the allocations [`Allocation::released_before`]
    /// `before`: what `keep_released` forgets. Every order ever made is
    /// one until then, so a store that can read them one at a time,
    /// keeping only these ids, should.
    async fn list_released_before(&self, before: SystemTime) -> StoreResult<Vec<String>> {
        let mut allocations = self.list_allocations().await?;
        allocations.retain(|a| a.released_before(before));
        Ok(allocations
            .into_iter()
            .map(|a| a.params.request_id)
            .collect())
    }
    /// As `cas_instance`, keyed by request id.
    async fn cas_allocation(
        &self,
        expected: Option<&Allocation>,
        new: Option<&Allocation>,
    ) -> StoreResult<bool>;

    /// Whether an operator set the record of `kind` under `key` (an
    /// instance id, a request id, a pool's [`pool_record_key`]) aside as
    /// unreadable ([`StoreRepair`]).
    /// Its id stays taken: a set-aside order is not bought again, a
    /// set-aside instance's server is not deleted as a leak.
    async fn is_set_aside(&self, kind: RecordKind, key: &str) -> StoreResult<bool>;

    /// Whether the store holds no instance, no allocation and no twin
    /// watch, nor any record set aside, and never let a start go on over
    /// pool servers it did not know ([`Store::note_unknown_servers_accepted`]):
    /// a store that never served (pools and what was learned of them do not
    /// count: warmpoold writes its declared pools at every start). What
    /// start-up refuses over a cloud listing pool servers
    /// (`ManagerError::UnknownServers`). A store that can tell without
    /// listing every order should.
    async fn knows_no_instance_or_order(&self) -> StoreResult<bool> {
        Ok(self.list_instances().await?.is_empty()
            && self.list_twin_watches().await?.is_empty()
            && self.list_allocations().await?.is_empty()
            && !self.unknown_servers_accepted().await?)
    }

    /// Notes that a start on this store went on over pool servers it did
    /// not know, as the operator asked (`ManagerSettings::delete_unknown_servers`),
    /// at `at`: the store is meant to be new, and from then on counts as
    /// one that knows something ([`Store::knows_no_instance_or_order`]),
    /// so later starts on it need no flag, whatever that start got to
    /// write (a sold server left alone writes nothing). Durable once
    /// flushed.
    async fn note_unknown_servers_accepted(&self, at: SystemTime) -> StoreResult<()>;

    /// Whether [`Store::note_unknown_servers_accepted`] was ever noted.
    async fn unknown_servers_accepted(&self) -> StoreResult<bool>;

    /// The cloud this store serves, as [`Store::record_cloud_identity`]
    /// recorded it: `None` in a store no start recorded one in (a new
    /// one, or one a version from before stores recorded it wrote).
    async fn cloud_identity(&self) -> StoreResult<Option<CloudIdentity>>;

    /// Records `identity` as the cloud this store serves, in place of any
    /// recorded before (`PoolManager::claim_store`). Durable once flushed.
    async fn record_cloud_identity(&self, identity: &CloudIdentity) -> StoreResult<()>;

    /// Makes every write so far durable. Concurrent callers share one fsync.
    async fn flush(&self) -> StoreResult<()>;

    /// The bytes the store takes on disk as it counts them, garbage not
    /// yet compacted included (the `warmpool_store_size_bytes` gauge);
    /// `None` for a store that keeps nothing on disk. Reads the disk's
    /// metadata, which a sick disk may hold up: not for a hot path.
    async fn size_on_disk(&self) -> StoreResult<Option<u64>> {
        Ok(None)
    }
}

/// The kinds of record the store keeps, each in a tree of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordKind {
    Pool,
    Instance,
    Allocation,
    LearnedSizing,
    TwinWatch,
}

impl RecordKind {
    pub const ALL: [RecordKind; 5] = [
        RecordKind::Pool,
        RecordKind::Instance,
        RecordKind::Allocation,
        RecordKind::LearnedSizing,
        RecordKind::TwinWatch,
    ];

    /// The sled tree its records live in; also its name for operators.
    pub fn tree(self) -> &'static str {
        match self {
            RecordKind::Pool => "pools",
            RecordKind::Instance => "instances",
            RecordKind::Allocation => "allocations",
            RecordKind::LearnedSizing => "learned_sizing",
            RecordKind::TwinWatch => "twin_watches",
        }
    }

    pub fn from_tree(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.tree() == name)
    }

    /// A live record written under the key of a copy of this kind set
    /// aside supersedes the copy ([`SUPERSEDED_TREE`]). Only a pool's
    /// record and its learned sizing: warmpoold writes their keys again by
    /// design (a configured pool created at start-up, sizing saved anew),
    /// and the copy brought back after that record's deletion would undo
    /// it. An instance's or an order's copy under a live record stays
    /// aside, holding its key, for a person to judge; a twin watch's is
    /// merged into the live watch ([`SledStore::open`]).
    fn superseded_by_live_record(self) -> bool {
        matches!(self, RecordKind::Pool | RecordKind::LearnedSizing)
    }

    /// Why `bytes` do not decode as a record of this kind; `None` if they do.
    fn problem(self, tree: &sled::Tree, key: &[u8], bytes: &[u8]) -> Option<StoreError> {
        match self {
            RecordKind::Pool => decode::<PoolRecord>(tree, key, bytes).err(),
            RecordKind::Instance => decode::<Instance>(tree, key, bytes).err(),
            RecordKind::Allocation => decode::<Allocation>(tree, key, bytes).err(),
            RecordKind::LearnedSizing => decode::<LearnedSizing>(tree, key, bytes).err(),
            RecordKind::TwinWatch => decode::<TwinWatch>(tree, key, bytes).err(),
        }
    }
}

/// The tree of records set aside, keyed `tree/key` (the key as stored).
const SET_ASIDE_TREE: &str = "set_aside";

/// The tree of copies set aside whose key a live record took since (a
/// pool created again, sizing saved anew: only these kinds, see
/// [`RecordKind::superseded_by_live_record`]), keyed as in [`SET_ASIDE_TREE`]
/// and moved here from it: kept for a person to read, never moved back
/// (the live record is the newer, and once it is deleted the copy would
/// bring back what the operator deleted), and not holding their key
/// ([`Store::is_set_aside`]). A second copy superseded under one key
/// replaces the first. A tree of its own, so that builds that do not know
/// it (d9e8625 and older) leave these copies alone too.
const SUPERSEDED_TREE: &str = "set_aside_superseded";

/// The tree of what the store notes of itself, one key each.
const META_TREE: &str = "meta";

/// The tree of pools' boot health ([`Store::put_pool_health`]), keyed as
/// the pools are. No [`RecordKind`]: a record this version cannot read
/// (a newer one wrote it) stops nothing and is set aside by no one; the
/// pool starts healthy, with a warning, and its next change of health
/// writes over it. `store check` notes such a record
/// ([`StoreRepair::unreadable_pool_health`]). Builds that do not know the tree (3474b12 and older)
/// leave it alone.
const POOL_HEALTH_TREE: &str = "pool_health";

/// [`Store::note_unknown_servers_accepted`]'s key in [`META_TREE`]; its
/// value is the time, for a person reading the store.
const UNKNOWN_SERVERS_ACCEPTED: &str = "unknown_servers_accepted";

/// [`Store::record_cloud_identity`]'s key in [`META_TREE`].
const CLOUD_IDENTITY: &str = "cloud";

/// The cloud recorded in a store's `meta` tree, if any.
fn recorded_cloud(meta: &sled::Tree) -> StoreResult<Option<CloudIdentity>> {
    meta.get(CLOUD_IDENTITY)?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|error| StoreError::UnreadableCloud { error })
        })
        .transpose()
}

fn set_aside_key(kind: RecordKind, key: &[u8]) -> Vec<u8> {
    let mut out = format!("{}/", kind.tree()).into_bytes();
    out.extend_from_slice(key);
    out
}

/// The kind and key (as stored) of a record set aside under `aside_key`.
fn from_set_aside_key(aside_key: &[u8]) -> Option<(RecordKind, &[u8])> {
    let slash = aside_key.iter().position(|&b| b == b'/')?;
    let tree = std::str::from_utf8(&aside_key[..slash]).ok()?;
    Some((RecordKind::from_tree(tree)?, &aside_key[slash + 1..]))
}

/// The error of a transaction that never aborts: sled's.
fn storage_error(e: sled::transaction::TransactionError<std::convert::Infallible>) -> sled::Error {
    match e {
        sled::transaction::TransactionError::Storage(e) => e,
        sled::transaction::TransactionError::Abort(never) => match never {},
    }
}

/// A record the store holds that this version cannot read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableRecord {
    pub kind: RecordKind,
    /// As [`StoreRepair::set_aside`] takes it.
    pub key: String,
    pub error: String,
}

/// A pool's stored boot health this version cannot read, as
/// [`StoreRepair::unreadable_pool_health`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadablePoolHealth {
    /// The pool's key, as operators read it (`flavor@az`).
    pub key: String,
    pub error: String,
}

/// A record set aside, as [`StoreRepair::set_aside_records`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAsideRecord {
    pub kind: RecordKind,
    /// As [`StoreRepair::set_aside`] takes it.
    pub key: String,
    /// A live record has taken its key since: it stays for a person to
    /// read, and never comes back.
    pub superseded: bool,
}

/// What [`StoreRepair::set_aside`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetAside {
    Moved,
    NoSuchRecord,
    /// The record reads fine: hiding it would lose it, so it stays.
    Readable,
    /// Two records show as this key (pool names may hold `@`): neither is
    /// moved.
    Ambiguous,
    /// No record shows as this key in its tree, and one is set aside
    /// under it: an earlier run moved it.
    AlreadySetAside,
}

/// The operator's tools for a store warmpoold cannot open because of a
/// record it cannot read (one a newer version wrote, a damaged disk): list
/// such records, and move one aside. A record set aside keeps its bytes (in
/// the `set_aside` tree, for a person to read) and its id stays taken
/// ([`Store::is_set_aside`]) until a version that reads it opens the store,
/// which moves it back ([`SledStore::open`]), or a live pool record or
/// learned sizing takes its key, which supersedes it for good
/// ([`SUPERSEDED_TREE`]). For a stopped warmpoold's store.
pub struct StoreRepair {
    db: sled::Db,
}

impl StoreRepair {
    /// Opens the store in `dir`, waiting up to `lock_wait` for another
    /// handle to let go of it. Makes none where there is none
    /// ([`StoreError::NoStore`]): sled would make one in any directory.
    pub fn open(dir: &Path, lock_wait: Duration) -> StoreResult<Self> {
        if !holds_store(dir)? {
            return Err(StoreError::NoStore {
                dir: dir.to_owned(),
            });
        }
        Ok(Self {
            db: open_sled(dir, lock_wait, DEFAULT_CACHE_CAPACITY)?,
        })
    }

    /// Every record no type of this version decodes, tree by tree.
    pub fn unreadable(&self) -> StoreResult<Vec<UnreadableRecord>> {
        let mut found = Vec::new();
        for kind in RecordKind::ALL {
            let tree = self.db.open_tree(kind.tree())?;
            for entry in tree.iter() {
                let (key, bytes) = entry?;
                if let Some(problem) = kind.problem(&tree, &key, &bytes) {
                    let error = match problem {
                        StoreError::Unreadable { error, .. } => error.to_string(),
                        other => other.to_string(),
                    };
                    found.push(UnreadableRecord {
                        kind,
                        key: shown_key(&key),
                        error,
                    });
                }
            }
        }
        Ok(found)
    }

    /// Every pool's stored boot health ([`POOL_HEALTH_TREE`]) this
    /// version cannot read. A tree of no [`RecordKind`], so
    /// [`StoreRepair::unreadable`] never looked at it: none of these stops
    /// warmpoold (the pool starts healthy), and none is
    /// [`StoreRepair::set_aside`]'s to move.
    pub fn unreadable_pool_health(&self) -> StoreResult<Vec<UnreadablePoolHealth>> {
        let tree = self.db.open_tree(POOL_HEALTH_TREE)?;
        let mut found = Vec::new();
        for entry in tree.iter() {
            let (key, bytes) = entry?;
            if let Err(problem) = decode::<StoredHealth>(&tree, &key, &bytes) {
                let error = match problem {
                    StoreError::Unreadable { error, .. } => error.to_string(),
                    other => other.to_string(),
                };
                found.push(UnreadablePoolHealth {
                    key: shown_key(&key),
                    error,
                });
            }
        }
        Ok(found)
    }

    /// The pools stored, as [`SledStore::read_pools`] reads them.
    pub fn pools(&self) -> StoreResult<Vec<PoolRecord>> {
        list(&self.db.open_tree(RecordKind::Pool.tree())?)
    }

    /// The cloud the store serves, as the last start recorded it
    /// ([`Store::cloud_identity`]).
    pub fn cloud_identity(&self) -> StoreResult<Option<CloudIdentity>> {
        recorded_cloud(&self.db.open_tree(META_TREE)?)
    }

    /// The records set aside so far, superseded ones included.
    pub fn set_aside_records(&self) -> StoreResult<Vec<SetAsideRecord>> {
        let mut records = Vec::new();
        for tree in [SET_ASIDE_TREE, SUPERSEDED_TREE] {
            for entry in self.db.open_tree(tree)?.iter() {
                let (aside_key, _) = entry?;
                let Some((kind, key)) = from_set_aside_key(&aside_key) else {
                    continue;
                };
                // A pool's or its sizing's whose key a live record holds is
                // superseded at the next open, before anything could
                // delete that record.
                let superseded = tree == SUPERSEDED_TREE
                    || (kind.superseded_by_live_record()
                        && self.db.open_tree(kind.tree())?.contains_key(key)?);
                records.push(SetAsideRecord {
                    kind,
                    key: shown_key(key),
                    superseded,
                });
            }
        }
        Ok(records)
    }

    /// Moves the unreadable record `key` (as [`StoreRepair::unreadable`]
    /// shows it) of `kind` aside, in one transaction, made durable.
    pub fn set_aside(&self, kind: RecordKind, key: &str) -> StoreResult<SetAside> {
        let tree = self.db.open_tree(kind.tree())?;
        let mut matches = Vec::new();
        for entry in tree.iter() {
            let (k, bytes) = entry?;
            if shown_key(&k) == key {
                matches.push((k, bytes));
            }
        }
        if matches.len() > 1 {
            return Ok(SetAside::Ambiguous);
        }
        let Some((stored, bytes)) = matches.pop() else {
            // A loop over `store check`'s list, run again, finds the
            // records the run before moved: done, not missing.
            return Ok(if self.is_aside_as(kind, key)? {
                SetAside::AlreadySetAside
            } else {
                SetAside::NoSuchRecord
            });
        };
        if kind.problem(&tree, &stored, &bytes).is_none() {
            return Ok(SetAside::Readable);
        }
        let aside = self.db.open_tree(SET_ASIDE_TREE)?;
        let moved: sled::transaction::TransactionResult<(), std::convert::Infallible> =
            sled::Transactional::transaction(&(&tree, &aside), |(tree, aside)| {
                aside.insert(set_aside_key(kind, &stored), bytes.clone())?;
                tree.remove(&stored)?;
                Ok(())
            });
        moved.map_err(storage_error)?;
        self.db.flush()?;
        Ok(SetAside::Moved)
    }

    /// Whether a record of `kind` set aside shows as `key`.
    fn is_aside_as(&self, kind: RecordKind, key: &str) -> StoreResult<bool> {
        let prefix = set_aside_key(kind, b"");
        for entry in self.db.open_tree(SET_ASIDE_TREE)?.scan_prefix(&prefix) {
            let (aside_key, _) = entry?;
            if shown_key(&aside_key[prefix.len()..]) == key {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Whether `dir` holds a sled store: sled writes its settings to `conf`
/// and its log to `db` at its first open of a directory (config.rs,
/// `verify_config` and `open_file`), and never removes them. Only their
/// absence is no store: a look that fails otherwise (a permission, a path
/// through a regular file) tells nothing ([`StoreError::Inaccessible`]).
fn holds_store(dir: &Path) -> StoreResult<bool> {
    for name in ["conf", "db"] {
        let path = dir.join(name);
        match std::fs::metadata(&path) {
            Ok(found) if found.is_file() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(error) => {
                return Err(StoreError::Inaccessible {
                    dir: dir.to_owned(),
                    path,
                    error,
                })
            }
        }
    }
    Ok(true)
}

/// What a data dir held before a store was first opened there, to take
/// back what that open made: a start refused for a store that knows none
/// of the pool servers (a mistyped data dir) should not leave a store
/// there that `warmpoold store check` then calls healthy.
#[derive(Debug)]
pub struct NoStoreYet {
    dir: PathBuf,
    before: BTreeSet<std::ffi::OsString>,
}

impl NoStoreYet {
    /// What `dir` holds now, or `None` when it holds a store already
    /// ([`StoreRepair::open`] tells the same way).
    pub fn look(dir: &Path) -> StoreResult<Option<Self>> {
        if holds_store(dir)? {
            return Ok(None);
        }
        let inaccessible = |error| StoreError::Inaccessible {
            dir: dir.to_owned(),
            path: dir.to_owned(),
            error,
        };
        let before = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .map(|entry| Ok(entry?.file_name()))
                .collect::<std::io::Result<_>>()
                .map_err(inaccessible)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(inaccessible(e)),
        };
        Ok(Some(Self {
            dir: dir.to_owned(),
            before,
        }))
    }

    /// Removes what sled made in the directory since [`NoStoreYet::look`]:
    /// its `conf`, `db` and `snap.*` files and its `blobs` directory, none
    /// that was there before, and nothing else. Every handle on the store
    /// must be dropped first: sled lets go of its lock a moment after the
    /// last one, which this waits up to `lock_wait` for, and holds while it
    /// removes, so that no open of the store comes in between. Returns the
    /// names removed.
    pub fn take_back(&self, lock_wait: Duration) -> StoreResult<Vec<String>> {
        let io = |e: std::io::Error| StoreError::Io(sled::Error::Io(e));
        let db = match std::fs::File::open(self.dir.join("db")) {
            Ok(db) => Some(db),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        if let Some(db) = &db {
            // sled's lock is an flock of its `db` file (fs2), as this one.
            let started = std::time::Instant::now();
            loop {
                match db.try_lock() {
                    Ok(()) => break,
                    Err(std::fs::TryLockError::WouldBlock) => {}
                    Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
                }
                let waited = started.elapsed();
                if waited >= lock_wait {
                    return Err(StoreError::Locked {
                        dir: self.dir.clone(),
                        waited,
                    });
                }
                std::thread::sleep(LOCK_POLL.min(lock_wait - waited));
            }
        }
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            if self.before.contains(&name) {
                continue;
            }
            let Some(shown) = name.to_str() else {
                continue;
            };
            let file = entry.file_type().map_err(io)?.is_file();
            let made = match shown {
                "conf" | "db" => file,
                "blobs" => entry.file_type().map_err(io)?.is_dir(),
                _ => file && shown.starts_with("snap."),
            };
            if !made {
                continue;
            }
            if file {
                std::fs::remove_file(entry.path()).map_err(io)?;
            } else {
                std::fs::remove_dir_all(entry.path()).map_err(io)?;
            }
            removed.push(shown.to_owned());
        }
        removed.sort();
        Ok(removed)
    }
}

const LOCK_POLL: Duration = Duration::from_millis(20);

/// sled 0.34 reports a held lock as an `Other` I/O error whose text carries
/// the `WouldBlock` (config.rs, `open_file`); the text is all there is to
/// tell it from a real I/O failure.
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock on"))
}

/// sled-backed store: one tree per record kind, JSON values.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    pools: sled::Tree,
    instances: sled::Tree,
    allocations: sled::Tree,
    learned_sizing: sled::Tree,
    twin_watches: sled::Tree,
    set_aside: sled::Tree,
    superseded: sled::Tree,
    meta: sled::Tree,
    pool_health: sled::Tree,
    index: Arc<Mutex<HotIndex>>,
    failure: Failure,
}

/// The first error sled gave a write or a flush of a [`SledStore`], for
/// [`SledStore::failed`].
#[derive(Clone)]
struct Failure(watch::Sender<Option<Arc<sled::Error>>>);

impl Failure {
    /// `result`, its error kept if it is the store's first.
    fn kept<T>(&self, result: sled::Result<T>) -> sled::Result<T> {
        if let Err(e) = &result {
            self.0.send_if_modified(|first| {
                let is_first = first.is_none();
                if is_first {
                    *first = Some(Arc::new(copy(e)));
                }
                is_first
            });
        }
        result
    }
}

/// A copy of `e` that reads as `e` does: sled's `clone` of an I/O error
/// wraps the error's debug form in another, at each copy.
fn copy(e: &sled::Error) -> sled::Error {
    match e {
        sled::Error::Io(io) => sled::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => other.clone(),
    }
}

/// What the hot paths ask of the store: the ids the narrow listings return
/// and each pool's instance counts. Derived from the trees (so never
/// stored): every successful swap updates it while holding its lock, which
/// the swap itself also runs under, so it never disagrees with the trees.
#[derive(Debug, Default, PartialEq)]
struct HotIndex {
    untouched: BTreeMap<PoolKey, BTreeSet<String>>,
    unfinished: BTreeSet<String>,
    counts: BTreeMap<PoolKey, BTreeMap<InstanceState, u32>>,
}

impl HotIndex {
    fn swap_instance(&mut self, old: Option<&Instance>, new: Option<&Instance>) {
        if let Some(old) = old {
            if let Some(ids) = self.untouched.get_mut(&old.pool) {
                ids.remove(&old.id);
                if ids.is_empty() {
                    self.untouched.remove(&old.pool);
                }
            }
            if let Some(counts) = self.counts.get_mut(&old.pool) {
                if let Some(n) = counts.get_mut(&old.state) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(&old.state);
                    }
                }
                if counts.is_empty() {
                    self.counts.remove(&old.pool);
                }
            }
        }
        if let Some(new) = new {
            *self
                .counts
                .entry(new.pool.clone())
                .or_default()
                .entry(new.state)
                .or_default() += 1;
            if !new.state.is_tenant_touched() {
                self.untouched
                    .entry(new.pool.clone())
                    .or_default()
                    .insert(new.id.clone());
            }
        }
    }

    fn swap_allocation(&mut self, request_id: &str, new: Option<&Allocation>) {
        match new {
            Some(a) if a.state.is_unfinished() => {
                self.unfinished.insert(request_id.to_owned());
            }
            _ => {
                self.unfinished.remove(request_id);
            }
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, waiting up to
    /// [`DEFAULT_LOCK_WAIT`] for another handle to let go of it, with a
    /// page cache of [`DEFAULT_CACHE_CAPACITY`] bytes. Records set aside
    /// that this version reads go back to their trees first.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with(dir, DEFAULT_LOCK_WAIT, DEFAULT_CACHE_CAPACITY)
    }

    /// As [`SledStore::open`], waiting up to `lock_wait` for the lock.
    /// Blocks the calling thread while it waits.
    pub fn open_waiting(dir: &Path, lock_wait: Duration) -> StoreResult<Self> {
        Self::open_with(dir, lock_wait, DEFAULT_CACHE_CAPACITY)
    }

    /// As [`SledStore::open_waiting`], with sled's page cache held to
    /// `cache_capacity` bytes (sled counts it loosely: the process's
    /// resident memory runs somewhat above it).
    pub fn open_with(dir: &Path, lock_wait: Duration, cache_capacity: u64) -> StoreResult<Self> {
        Self::from_db(open_sled(dir, lock_wait, cache_capacity)?)
    }

    /// A store in a temporary directory that vanishes on drop; for tests.
    pub fn temporary() -> StoreResult<Self> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> StoreResult<Self> {
        let store = Self {
            pools: db.open_tree(RecordKind::Pool.tree())?,
            instances: db.open_tree(RecordKind::Instance.tree())?,
            allocations: db.open_tree(RecordKind::Allocation.tree())?,
            learned_sizing: db.open_tree(RecordKind::LearnedSizing.tree())?,
            twin_watches: db.open_tree(RecordKind::TwinWatch.tree())?,
            set_aside: db.open_tree(SET_ASIDE_TREE)?,
            superseded: db.open_tree(SUPERSEDED_TREE)?,
            meta: db.open_tree(META_TREE)?,
            pool_health: db.open_tree(POOL_HEALTH_TREE)?,
            index: Arc::default(),
            failure: Failure(watch::Sender::new(None)),
            db,
        };
        store.restore_set_aside()?;
        *store.index() = store.scan_hot_index()?;
        Ok(store)
    }

    /// The tree of `kind`'s records.
    fn tree(&self, kind: RecordKind) -> &sled::Tree {
        match kind {
            RecordKind::Pool => &self.pools,
            RecordKind::Instance => &self.instances,
            RecordKind::Allocation => &self.allocations,
            RecordKind::LearnedSizing => &self.learned_sizing,
            RecordKind::TwinWatch => &self.twin_watches,
        }
    }

    /// Moves each record set aside ([`StoreRepair::set_aside`]) that this
    /// version reads back to its tree, each in one transaction: the version
    /// that wrote it runs again, and serves it as before. A pool's or its
    /// sizing's whose key a live record holds (a pool created again, a
    /// pool's sizing saved anew, by a build that did not supersede it as
    /// it wrote) is superseded instead, readable or not
    /// ([`SUPERSEDED_TREE`]): left waiting, it would come back once that
    /// record is deleted, undoing a deletion. A twin watch's under a live
    /// watch of its name (an older build watched the order again) is
    /// merged into it, as a write of that watch would have
    /// ([`TwinWatch::absorb`]): the ports and volumes only the copy names
    /// are still deleted. An instance's or an order's under a live record
    /// stays aside, holding its key, warned of at each open: which of the
    /// two is right is a person's call.
    /// A sold instance's record comes back even if its order was released
    /// meanwhile (the release deleted its server): the reconciler, which
    /// reads the order and the cloud, forgets it.
    fn restore_set_aside(&self) -> StoreResult<()> {
        enum Outcome {
            Back,
            Superseded,
            Merged,
            Taken,
            Unreadable,
        }
        // Collected first: few, and the loop removes them from the tree.
        let aside: Vec<(sled::IVec, sled::IVec)> =
            self.set_aside.iter().collect::<sled::Result<_>>()?;
        let mut wrote = false;
        for (aside_key, bytes) in aside {
            let Some((kind, key)) = from_set_aside_key(&aside_key) else {
                continue;
            };
            let tree = self.tree(kind);
            let readable = kind.problem(tree, key, &bytes).is_none();
            let copy_watch = match kind {
                RecordKind::TwinWatch => serde_json::from_slice::<TwinWatch>(&bytes).ok(),
                _ => None,
            };
            let moved: sled::transaction::TransactionResult<Outcome, std::convert::Infallible> =
                sled::Transactional::transaction(
                    &(tree, &self.set_aside, &self.superseded),
                    |(live, aside, superseded)| {
                        if let Some(live_bytes) = live.get(key)? {
                            if kind.superseded_by_live_record() {
                                superseded.insert(&aside_key, bytes.clone())?;
                                aside.remove(&aside_key)?;
                                return Ok(Outcome::Superseded);
                            }
                            // A live watch this version cannot read is
                            // the reconciler's to report; the copy waits.
                            let live_watch = serde_json::from_slice::<TwinWatch>(&live_bytes);
                            if let (Some(copy), Ok(mut merged)) = (&copy_watch, live_watch) {
                                merged.absorb(copy);
                                live.insert(key, encode(&merged))?;
                                aside.remove(&aside_key)?;
                                return Ok(Outcome::Merged);
                            }
                            return Ok(if readable {
                                Outcome::Taken
                            } else {
                                Outcome::Unreadable
                            });
                        }
                        if !readable {
                            return Ok(Outcome::Unreadable);
                        }
                        live.insert(key, bytes.clone())?;
                        aside.remove(&aside_key)?;
                        Ok(Outcome::Back)
                    },
                );
            let shown = shown_key(key);
            match self.failure.kept(moved.map_err(storage_error))? {
                Outcome::Back => {
                    wrote = true;
                    tracing::info!(tree = kind.tree(), key = %shown, "a record set aside as unreadable reads now: moved back");
                }
                Outcome::Superseded => {
                    wrote = true;
                    superseded_warning(kind, &shown);
                }
                Outcome::Merged => {
                    wrote = true;
                    tracing::info!(tree = kind.tree(), key = %shown, "a twin watch set aside as unreadable reads now, and a watch of its name was written since: merged into it, so that what either names is still deleted");
                }
                Outcome::Taken => {
                    tracing::warn!(tree = kind.tree(), key = %shown, "a record set aside as unreadable reads now, but another record has taken its key: left set aside, holding its key, for a person to compare with the record warmpoold serves (`warmpoold store check` lists it)");
                }
                Outcome::Unreadable => {}
            }
        }
        if wrote {
            self.failure.kept(self.db.flush())?;
        }
        Ok(())
    }

    /// Supersedes the copy of `kind`'s record `key` set aside, if there is
    /// one: a live record has just been written under its key. Made durable
    /// with that record, by the next flush; a crash before it leaves the
    /// open to supersede it, if the record was flushed.
    fn supersede_set_aside(&self, kind: RecordKind, key: &[u8]) -> StoreResult<()> {
        let aside_key = set_aside_key(kind, key);
        // The common case, nothing set aside, is one read.
        if !self.set_aside.contains_key(&aside_key)? {
            return Ok(());
        }
        let moved: sled::transaction::TransactionResult<bool, std::convert::Infallible> =
            sled::Transactional::transaction(
                &(&self.set_aside, &self.superseded),
                |(aside, superseded)| {
                    let Some(bytes) = aside.remove(aside_key.as_slice())? else {
                        return Ok(false);
                    };
                    superseded.insert(aside_key.as_slice(), bytes)?;
                    Ok(true)
                },
            );
        if self.failure.kept(moved.map_err(storage_error))? {
            superseded_warning(kind, &shown_key(key));
        }
        Ok(())
    }

    /// The store's failure, once it has one: the first error sled gave one
    /// of its writes or flushes (a full disk, EIO). From then on every
    /// write and flush fails, the disk fixed or not, until the store is
    /// opened again (see the module doc): a process that has to write
    /// should stop, so that its restart opens the store again.
    pub fn failed(&self) -> watch::Receiver<Option<Arc<sled::Error>>> {
        self.failure.0.subscribe()
    }

    /// The hot index as the trees have it now: a scan of every record,
    /// each decoded (so that one this version cannot read stops the open)
    /// and dropped once the index has what it needs of it. Finished orders
    /// accumulate: the open never holds them all at once.
    fn scan_hot_index(&self) -> StoreResult<HotIndex> {
        let mut index = HotIndex::default();
        for instance in records::<Instance>(&self.instances) {
            index.swap_instance(None, Some(&instance?));
        }
        for allocation in records::<Allocation>(&self.allocations) {
            let allocation = allocation?;
            index.swap_allocation(&allocation.params.request_id, Some(&allocation));
        }
        Ok(index)
    }

    /// The pools stored in `dir`, read without opening the store for
    /// service: the instances and allocations, which only the hot index
    /// needs, are not read. Waits up to `lock_wait` for the lock; creates
    /// no store where there is none ([`StoreError::NoStore`]).
    pub fn read_pools(dir: &Path, lock_wait: Duration) -> StoreResult<Vec<PoolRecord>> {
        StoreRepair::open(dir, lock_wait)?.pools()
    }

    /// A panic while the lock was held cannot have left the index half
    /// changed (each update is a few map operations after the swap), so a
    /// poisoned lock is still good to use.
    fn index(&self) -> MutexGuard<'_, HotIndex> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the records `ids` name that still pass `keep`: a record may
    /// change between copying the ids and reading it.
    fn read_listed<T: DeserializeOwned>(
        tree: &sled::Tree,
        ids: Vec<String>,
        keep: impl Fn(&T) -> bool,
    ) -> StoreResult<Vec<T>> {
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = get::<T>(tree, id.as_bytes())? {
                if keep(&record) {
                    records.push(record);
                }
            }
        }
        Ok(records)
    }
}

/// Logs that a copy set aside was superseded: once, when it is.
fn superseded_warning(kind: RecordKind, shown: &str) {
    tracing::warn!(tree = kind.tree(), key = %shown, "a record set aside as unreadable is superseded by the record written under its key since: it stays in the store for a person to read (`warmpoold store check` lists it) and will not come back");
}

/// sled's configuration of a store in `dir` with a page cache of
/// `cache_capacity` bytes.
fn sled_config(dir: &Path, cache_capacity: u64) -> sled::Config {
    sled::Config::new().path(dir).cache_capacity(cache_capacity)
}

/// Opens sled's database in `dir`, waiting up to `lock_wait` for its lock.
/// Blocks the calling thread while it waits.
fn open_sled(dir: &Path, lock_wait: Duration, cache_capacity: u64) -> StoreResult<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match sled_config(dir, cache_capacity).open() {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_held(&e) => {
                let waited = started.elapsed();
                if waited >= lock_wait {
                    return Err(StoreError::Locked {
                        dir: dir.to_owned(),
                        waited,
                    });
                }
                std::thread::sleep(LOCK_POLL.min(lock_wait - waited));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("model types serialize infallibly")
}

fn decode<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Unreadable {
        tree: String::from_utf8_lossy(&tree.name()).into_owned(),
        key: shown_key(key),
        error,
    })
}

/// A key as an operator reads and types it: a pool's `flavor\0az` shows as
/// `flavor@az`, like everywhere else.
fn shown_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "@")
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> StoreResult<Option<T>> {
    tree.get(key)?.map(|v| decode(tree, key, &v)).transpose()
}

/// The records of `tree`, decoded one at a time as they are read.
fn records<T: DeserializeOwned>(tree: &sled::Tree) -> impl Iterator<Item = StoreResult<T>> + '_ {
    tree.iter().map(move |entry| {
        let (k, v) = entry?;
        decode(tree, &k, &v)
    })
}

fn list<T: DeserializeOwned>(tree: &sled::Tree) -> StoreResult<Vec<T>> {
    records(tree).collect()
}

/// Swaps `key` from `expected` to `new` if the stored record *is*
/// `expected`. The common case is one byte-wise swap. Only when the stored
/// bytes differ are they decoded and compared as a value, and the swap is
/// tried again against the bytes read (a change in between still fails it):
/// a record stored in other bytes for the same value (one from before a
/// field with a serde default was added, another field order) would
/// otherwise never match, and every update loop would spin on it. A
/// record holding a field this version does not know does not decode
/// (`Unreadable`), so it is never replaced by this version's shorter copy.
fn cas<T: Serialize + DeserializeOwned + PartialEq>(
    failure: &Failure,
    tree: &sled::Tree,
    key: &[u8],
    expected: Option<&T>,
    new: Option<&T>,
) -> StoreResult<bool> {
    let swap = tree.compare_and_swap(key, expected.map(encode), new.map(encode));
    let Err(mismatch) = failure.kept(swap)? else {
        return Ok(true);
    };
    let same_value = match (&mismatch.current, expected) {
        (Some(bytes), Some(expected)) => decode::<T>(tree, key, bytes)? == *expected,
        _ => false,
    };
    if !same_value {
        return Ok(false);
    }
    let swapped = failure.kept(tree.compare_and_swap(key, mismatch.current, mismatch.proposed))?;
    Ok(swapped.is_ok())
}

fn pool_key(key: &PoolKey) -> Vec<u8> {
    pool_record_key(key).into_bytes()
}

/// The key `key`'s pool record is stored, and set aside, under: what
/// [`Store::is_set_aside`] takes for [`RecordKind::Pool`].
pub fn pool_record_key(key: &PoolKey) -> String {
    // NUL cannot appear in flavor or AZ names, so the key is unambiguous.
    format!("{}\0{}", key.flavor, key.availability_zone)
}

#[async_trait]
impl Store for SledStore {
    async fn get_pool(&self, key: &PoolKey) -> StoreResult<Option<PoolRecord>> {
        get(&self.pools, &pool_key(key))
    }

    async fn list_pools(&self) -> StoreResult<Vec<PoolRecord>> {
        list(&self.pools)
    }

    async fn put_pool(&self, pool: &PoolRecord) -> StoreResult<()> {
        let key = pool_key(&pool.key);
        self.failure.kept(self.pools.insert(&key, encode(pool)))?;
        self.supersede_set_aside(RecordKind::Pool, &key)
    }

    async fn delete_pool(&self, key: &PoolKey) -> StoreResult<()> {
        self.failure.kept(self.pool_health.remove(pool_key(key)))?;
        self.failure
            .kept(self.learned_sizing.remove(pool_key(key)))?;
        self.failure.kept(self.pools.remove(pool_key(key)))?;
        Ok(())
    }

    async fn get_pool_health(&self, key: &PoolKey) -> StoreResult<Option<StoredHealth>> {
        get(&self.pool_health, &pool_key(key))
    }

    async fn put_pool_health(
        &self,
        key: &PoolKey,
        health: Option<&StoredHealth>,
    ) -> StoreResult<()> {
        let key = pool_key(key);
        match health {
            Some(health) => self
                .failure
                .kept(self.pool_health.insert(&key, encode(health)))?,
            None => self.failure.kept(self.pool_health.remove(&key))?,
        };
        Ok(())
    }

    async fn get_learned_sizing(&self, key: &PoolKey) -> StoreResult<Option<LearnedSizing>> {
        get(&self.learned_sizing, &pool_key(key))
    }

    async fn put_learned_sizing(&self, key: &PoolKey, learned: &LearnedSizing) -> StoreResult<()> {
        let key = pool_key(key);
        self.failure
            .kept(self.learned_sizing.insert(&key, encode(learned)))?;
        self.supersede_set_aside(RecordKind::LearnedSizing, &key)
    }

    async fn get_instance(&self, id: &str) -> StoreResult<Option<Instance>> {
        get(&self.instances, id.as_bytes())
    }

    async fn put_twin_watch(&self, watch: &TwinWatch) -> StoreResult<()> {
        self.failure.kept(
            self.twin_watches
                .insert(watch.name.as_bytes(), encode(watch)),
        )?;
        Ok(())
    }

    async fn list_twin_watches(&self) -> StoreResult<Vec<TwinWatch>> {
        list(&self.twin_watches)
    }

    async fn list_twin_watches_of(&self, request_id: &str) -> StoreResult<Vec<TwinWatch>> {
        let mut watches = Vec::new();
        let prefix = resource_names_of(request_id);
        for entry in self.twin_watches.scan_prefix(prefix.as_bytes()) {
            let (k, v) = entry?;
            let watch: TwinWatch = decode(&self.twin_watches, &k, &v)?;
            if watch.request_id == request_id {
                watches.push(watch);
            }
        }
        Ok(watches)
    }

    async fn cas_twin_watch(
        &self,
        expected: Option<&TwinWatch>,
        new: Option<&TwinWatch>,
    ) -> StoreResult<bool> {
        let name = &new.or(expected).ok_or(StoreError::NothingToSwap)?.name;
        cas(
            &self.failure,
            &self.twin_watches,
            name.as_bytes(),
            expected,
            new,
        )
    }

    async fn list_instances(&self) -> StoreResult<Vec<Instance>> {
        list(&self.instances)
    }

    async fn list_untouched_instances(&self, pool: &PoolKey) -> StoreResult<Vec<Instance>> {
        let ids = self
            .index()
            .untouched
            .get(pool)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        Self::read_listed(&self.instances, ids, |i: &Instance| i.is_untouched_in(pool))
    }

    async fn count_instances(&self, pool: &PoolKey) -> StoreResult<BTreeMap<InstanceState, u32>> {
        Ok(self.index().counts.get(pool).cloned().unwrap_or_default())
    }

    async fn count_instances_by_pool(
        &self,
    ) -> StoreResult<BTreeMap<PoolKey, BTreeMap<InstanceState, u32>>> {
        Ok(self.index().counts.clone())
    }

    async fn cas_instance(
        &self,
        expected: Option<&Instance>,
        new: Option<&Instance>,
    ) -> StoreResult<bool> {
        let id = new
            .or(expected)
            .ok_or(StoreError::NothingToSwap)?
            .id
            .clone();
        let mut index = self.index();
        let swapped = cas(&self.failure, &self.instances, id.as_bytes(), expected, new)?;
        if swapped {
            index.swap_instance(expected, new);
        }
        Ok(swapped)
    }

    async fn get_allocation(&self, request_id: &str) -> StoreResult<Option<Allocation>> {
        get(&self.allocations, request_id.as_bytes())
    }

    async fn list_allocations(&self) -> StoreResult<Vec<Allocation>> {
        list(&self.allocations)
    }

    async fn list_released_before(&self, before: SystemTime) -> StoreResult<Vec<String>> {
        let mut ids = Vec::new();
        for allocation in records::<Allocation>(&self.allocations) {
            let allocation = allocation?;
            if allocation.released_before(before) {
                ids.push(allocation.params.request_id);
            }
        }
        Ok(ids)
    }

    async fn list_unfinished_allocations(&self) -> StoreResult<Vec<Allocation>> {
        let ids = self.index().unfinished.iter().cloned().collect();
        Self::read_listed(&self.allocations, ids, |a: &Allocation| {
            a.state.is_unfinished()
        })
    }

    async fn cas_allocation(
        &self,
        expected: Option<&Allocation>,
        new: Option<&Allocation>,
    ) -> StoreResult<bool> {
        let id = new
            .or(expected)
            .ok_or(StoreError::NothingToSwap)?
            .params
            .request_id
            .clone();
        let mut index = self.index();
        let swapped = cas(
            &self.failure,
            &self.allocations,
            id.as_bytes(),
            expected,
            new,
        )?;
        if swapped {
            index.swap_allocation(&id, new);
        }
        Ok(swapped)
    }

    async fn is_set_aside(&self, kind: RecordKind, key: &str) -> StoreResult<bool> {
        Ok(self
            .set_aside
            .contains_key(set_aside_key(kind, key.as_bytes()))?)
    }

    async fn knows_no_instance_or_order(&self) -> StoreResult<bool> {
        for tree in [
            &self.instances,
            &self.allocations,
            &self.twin_watches,
            &self.set_aside,
            &self.superseded,
        ] {
            // Not `Tree::is_empty`, which takes a failed read for a record.
            if tree.iter().keys().next().transpose()?.is_some() {
                return Ok(false);
            }
        }
        Ok(!self.unknown_servers_accepted().await?)
    }

    async fn note_unknown_servers_accepted(&self, at: SystemTime) -> StoreResult<()> {
        let written = self.meta.insert(UNKNOWN_SERVERS_ACCEPTED, encode(&at));
        self.failure.kept(written)?;
        Ok(())
    }

    async fn unknown_servers_accepted(&self) -> StoreResult<bool> {
        Ok(self.meta.contains_key(UNKNOWN_SERVERS_ACCEPTED)?)
    }

    async fn cloud_identity(&self) -> StoreResult<Option<CloudIdentity>> {
        recorded_cloud(&self.meta)
    }

    async fn record_cloud_identity(&self, identity: &CloudIdentity) -> StoreResult<()> {
        let written = self.meta.insert(CLOUD_IDENTITY, encode(identity));
        self.failure.kept(written)?;
        Ok(())
    }

    async fn flush(&self) -> StoreResult<()> {
        // On a blocking thread rather than `flush_async`: tokio's paused test
        // clock does not jump ahead while a blocking task runs, but does while
        // a task awaits sled's own flusher thread.
        let db = self.db.clone();
        let flushed = tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Io(sled::Error::Io(std::io::Error::other(e))))?;
        self.failure.kept(flushed)?;
        Ok(())
    }

    async fn size_on_disk(&self) -> StoreResult<Option<u64>> {
        // Not `kept`: a size that cannot be read is no failed write, and
        // stops nothing.
        let db = self.db.clone();
        let size = tokio::task::spawn_blocking(move || db.size_on_disk())
            .await
            .map_err(|e| StoreError::Io(sled::Error::Io(std::io::Error::other(e))))??;
        Ok(Some(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        AllocationParams, AllocationState, InstanceState, NetworkRequest, VolumeRequest,
        VolumeSource,
    };
    use serde_json::{json, Value};
    use std::time::SystemTime;

    fn instance(state: InstanceState) -> Instance {
        Instance {
            id: "i1".into(),
            pool: PoolKey {
                flavor: "db.small".into(),
                availability_zone: "az1".into(),
            },
            server_id: None,
            state,
            created_at: SystemTime::UNIX_EPOCH,
            ready_at: None,
            attempts: 0,
            last_error: None,
            request_id: None,
            mysql_addr: None,
            image: None,
        }
    }

    fn allocation(state: AllocationState) -> Allocation {
        let mut allocation = Allocation::new(
            AllocationParams {
                request_id: "r1".into(),
                tenant_project_id: "tenant-a".into(),
                pool: instance(InstanceState::Ready).pool,
                volume: VolumeRequest {
                    source: VolumeSource::Existing {
                        volume_id: "v1".into(),
                    },
                    delete_on_release: false,
                },
                network: NetworkRequest {
                    network_id: "net".into(),
                    subnet_id: None,
                    fixed_ip: None,
                },
                labels: Default::default(),
            },
            0,
        );
        allocation.state = state;
        allocation
    }

    /// sled's own default cache is 1 GiB; the store asks for what it is told.
    #[test]
    fn the_page_cache_is_what_the_store_is_opened_with() {
        let dir = std::path::Path::new("unused");
        assert_eq!(sled::Config::new().cache_capacity, 1 << 30);
        assert_eq!(DEFAULT_CACHE_CAPACITY, 64 << 20);
        for capacity in [DEFAULT_CACHE_CAPACITY, 1 << 20, 3 << 30] {
            assert_eq!(sled_config(dir, capacity).cache_capacity, capacity);
        }
    }

    /// The listings re-check each record they read, so an id left behind
    /// would not show in them; it would only make them slow again. Through
    /// a whole life cycle the kept ids stay what a fresh scan finds.
    #[tokio::test]
    async fn kept_ids_match_a_fresh_scan_through_a_life_cycle() {
        let store = SledStore::temporary().unwrap();
        let mut current: Option<Instance> = None;
        for state in InstanceState::ALL {
            let next = instance(state);
            assert!(store
                .cas_instance(current.as_ref(), Some(&next))
                .await
                .unwrap());
            assert_eq!(
                *store.index(),
                store.scan_hot_index().unwrap(),
                "at {state:?}"
            );
            current = Some(next);
        }
        assert!(store.cas_instance(current.as_ref(), None).await.unwrap());

        let mut current: Option<Allocation> = None;
        for state in [
            AllocationState::Allocating,
            AllocationState::Allocated,
            AllocationState::Releasing,
            AllocationState::Released,
        ] {
            let next = allocation(state);
            assert!(store
                .cas_allocation(current.as_ref(), Some(&next))
                .await
                .unwrap());
            assert_eq!(
                *store.index(),
                store.scan_hot_index().unwrap(),
                "at {state:?}"
            );
            current = Some(next);
        }
        assert!(store.cas_allocation(current.as_ref(), None).await.unwrap());
        assert_eq!(*store.index(), HotIndex::default());
    }

    /// A store knows nothing until it holds an instance, an order, a twin
    /// watch or a record set aside; pools and what was learned of them
    /// (written from warmpoold's config at every start) do not count.
    #[tokio::test]
    async fn a_store_knows_nothing_until_an_instance_or_an_order_is_written() {
        let store = SledStore::temporary().unwrap();
        let knows_nothing = || async { store.knows_no_instance_or_order().await.unwrap() };
        assert!(knows_nothing().await);
        let pool = PoolRecord::new(PoolKey::new("db.small", "az1"), crate::model::tests::spec());
        store.put_pool(&pool).await.unwrap();
        let learned = LearnedSizing {
            saved_at: SystemTime::UNIX_EPOCH,
            demand_short: 0.1,
            demand_long: 0.1,
            demand_held: 0.0,
            held_for: None,
            allocations: 3,
            leads: Vec::new(),
            orders: Vec::new(),
        };
        store.put_learned_sizing(&pool.key, &learned).await.unwrap();
        assert!(knows_nothing().await);

        let ready = instance(InstanceState::Ready);
        store.cas_instance(None, Some(&ready)).await.unwrap();
        assert!(!knows_nothing().await);
        store.cas_instance(Some(&ready), None).await.unwrap();
        let order = allocation(AllocationState::Released);
        store.cas_allocation(None, Some(&order)).await.unwrap();
        assert!(!knows_nothing().await);
        store.cas_allocation(Some(&order), None).await.unwrap();
        let watch = TwinWatch {
            name: "warmpool-r1-a".into(),
            request_id: "r1".into(),
            pool: None,
            volumes: true,
            keep: Vec::new(),
            stuck_volume: None,
            deleted_volumes: Vec::new(),
            deleted_only: false,
            bound_ports: Vec::new(),
            until: SystemTime::UNIX_EPOCH,
        };
        store.put_twin_watch(&watch).await.unwrap();
        assert!(!knows_nothing().await);
        store.cas_twin_watch(Some(&watch), None).await.unwrap();
        assert!(knows_nothing().await);
        store
            .set_aside
            .insert(set_aside_key(RecordKind::Allocation, b"r2"), b"{}".to_vec())
            .unwrap();
        assert!(!knows_nothing().await);
    }

    /// A start that went on over pool servers the store did not know
    /// (`delete_unknown_servers`) is noted, and the store knows something
    /// from then on, across a reopen: the flag is for that one start.
    #[tokio::test]
    async fn a_store_noted_as_meant_to_be_new_knows_something_from_then_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store.knows_no_instance_or_order().await.unwrap());
        assert!(!store.unknown_servers_accepted().await.unwrap());
        store
            .note_unknown_servers_accepted(SystemTime::UNIX_EPOCH)
            .await
            .unwrap();
        store.flush().await.unwrap();
        assert!(!store.knows_no_instance_or_order().await.unwrap());
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store.unknown_servers_accepted().await.unwrap());
        assert!(!store.knows_no_instance_or_order().await.unwrap());
    }

    /// The cloud a store serves is recorded across a reopen, replaced by
    /// the next record, and read by the repair tools too; a store no start
    /// recorded one in (a new one, an older version's) has none, and one
    /// this version cannot read is named as such.
    #[tokio::test]
    async fn the_cloud_a_store_serves_is_recorded_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .put_pool(&PoolRecord::new(
                PoolKey::new("db.small", "az1"),
                crate::model::tests::spec(),
            ))
            .await
            .unwrap();
        assert_eq!(store.cloud_identity().await.unwrap(), None);
        store
            .record_cloud_identity(&CloudIdentity::Embedded)
            .await
            .unwrap();
        let project = CloudIdentity::OpenStack {
            project_id: "p1".into(),
            region: Some("r1".into()),
            server_tag: "warmpool".into(),
        };
        store.record_cloud_identity(&project).await.unwrap();
        store.flush().await.unwrap();
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.cloud_identity().await.unwrap(), Some(project.clone()));
        // Only records of instances and orders count as knowing something.
        assert!(store.knows_no_instance_or_order().await.unwrap());
        store
            .meta
            .insert(
                CLOUD_IDENTITY,
                &br#"{"kind":"openstack","project_id":"p1","server_tag":"warmpool","cell":"c2"}"#
                    [..],
            )
            .unwrap();
        let unreadable = store.cloud_identity().await.unwrap_err();
        assert!(
            matches!(unreadable, StoreError::UnreadableCloud { .. }),
            "{unreadable:?}"
        );
        assert!(
            unreadable.to_string().contains("run that version"),
            "{unreadable}"
        );
        store.record_cloud_identity(&project).await.unwrap();
        store.flush().await.unwrap();
        drop(store);
        let repair = StoreRepair::open(dir.path(), DEFAULT_LOCK_WAIT).unwrap();
        assert_eq!(repair.cloud_identity().unwrap(), Some(project));
    }

    /// Watches survive a reopen (a restart keeps watching) and go one by one.
    #[tokio::test]
    async fn twin_watches_are_kept_across_a_reopen_until_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let watch = |name: &str| TwinWatch {
            name: name.into(),
            request_id: "r1".into(),
            pool: Some(PoolKey::new("db.small", "az1")),
            volumes: true,
            keep: vec!["port-1".into()],
            stuck_volume: Some("volume-1".into()),
            deleted_volumes: vec![crate::model::DeletedVolume {
                id: "volume-2".into(),
                stuck: true,
            }],
            deleted_only: false,
            bound_ports: Vec::new(),
            until: SystemTime::UNIX_EPOCH + Duration::from_secs(900),
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put_twin_watch(&watch("warmpool-r1-a")).await.unwrap();
            store.put_twin_watch(&watch("warmpool-r2-b")).await.unwrap();
            // The same name again replaces its watch.
            store.put_twin_watch(&watch("warmpool-r1-a")).await.unwrap();
            store.flush().await.unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.list_twin_watches().await.unwrap(),
            vec![watch("warmpool-r1-a"), watch("warmpool-r2-b")]
        );
        // Only the watch as stored is replaced or deleted.
        let mut stale = watch("warmpool-r1-a");
        stale.stuck_volume = None;
        assert!(!store.cas_twin_watch(Some(&stale), None).await.unwrap());
        assert!(!store
            .cas_twin_watch(None, Some(&watch("warmpool-r1-a")))
            .await
            .unwrap());
        let mut next = watch("warmpool-r1-a");
        next.deleted_volumes.clear();
        let current = watch("warmpool-r1-a");
        assert!(store
            .cas_twin_watch(Some(&current), Some(&next))
            .await
            .unwrap());
        assert!(!store.cas_twin_watch(Some(&current), None).await.unwrap());
        assert!(store.cas_twin_watch(Some(&next), None).await.unwrap());
        assert_eq!(
            store.list_twin_watches().await.unwrap(),
            vec![watch("warmpool-r2-b")]
        );
    }

    /// An order's watches are read by their names' prefix, which other
    /// orders' names share when one id starts with another (`r1`, `r10`,
    /// `r1-x`): those are not the order's.
    #[tokio::test]
    async fn an_orders_twin_watches_are_read_apart_from_others() {
        let dir = tempfile::tempdir().unwrap();
        let watch = |request_id: &str, attempt: Option<&str>| TwinWatch {
            name: match attempt {
                Some(attempt) => format!("warmpool-{request_id}-{attempt}"),
                None => format!("warmpool-{request_id}"),
            },
            request_id: request_id.into(),
            pool: None,
            volumes: true,
            keep: vec![],
            stuck_volume: None,
            deleted_volumes: vec![],
            deleted_only: false,
            bound_ports: Vec::new(),
            until: SystemTime::UNIX_EPOCH,
        };
        let r1 = [
            watch("r1", None),
            watch("r1", Some("a")),
            watch("r1", Some("b")),
        ];
        let others = [
            watch("r10", Some("a")),
            watch("r1-x", Some("c")),
            watch("r1-x", None),
            watch("r", Some("1")),
            watch("r2", Some("a")),
        ];
        {
            let store = SledStore::open(dir.path()).unwrap();
            for w in r1.iter().chain(&others) {
                store.put_twin_watch(w).await.unwrap();
            }
            store.flush().await.unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let of = |request_id: &'static str| {
            let store = &store;
            async move {
                let mut names: Vec<String> = store
                    .list_twin_watches_of(request_id)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|w| w.name)
                    .collect();
                names.sort();
                names
            }
        };
        assert_eq!(
            of("r1").await,
            ["warmpool-r1", "warmpool-r1-a", "warmpool-r1-b"]
        );
        assert_eq!(of("r1-x").await, ["warmpool-r1-x", "warmpool-r1-x-c"]);
        assert_eq!(of("r10").await, ["warmpool-r10-a"]);
        assert_eq!(of("r").await, ["warmpool-r-1"]);
        assert_eq!(of("r3").await, Vec::<String>::new());
        assert!(store.cas_twin_watch(Some(&r1[1]), None).await.unwrap());
        assert_eq!(of("r1").await, ["warmpool-r1", "warmpool-r1-b"]);
    }

    /// A record stored in other bytes than this version writes for the
    /// same value (here: pretty-printed; in practice a
    /// record from before a field with a serde default was added) is still
    /// swapped by value, and a stale expectation still fails.
    #[tokio::test]
    async fn swaps_compare_records_not_their_bytes() {
        let store = SledStore::temporary().unwrap();
        let stored = instance(InstanceState::Ready);
        let other_bytes = serde_json::to_vec_pretty(&stored).unwrap();
        assert_ne!(other_bytes, encode(&stored));
        store.instances.insert("i1", other_bytes.clone()).unwrap();
        assert_eq!(
            store.get_instance("i1").await.unwrap().as_ref(),
            Some(&stored)
        );

        let stale = instance(InstanceState::Booting);
        let claimed = instance(InstanceState::Claimed);
        assert!(!store
            .cas_instance(Some(&stale), Some(&claimed))
            .await
            .unwrap());
        assert!(!store.cas_instance(None, Some(&claimed)).await.unwrap());
        assert_eq!(
            store.instances.get("i1").unwrap().as_deref(),
            Some(&other_bytes[..])
        );
        assert!(store
            .cas_instance(Some(&stored), Some(&claimed))
            .await
            .unwrap());
        assert_eq!(
            store.get_instance("i1").await.unwrap().as_ref(),
            Some(&claimed)
        );
    }

    fn ready_instance() -> Instance {
        Instance {
            id: "i1".into(),
            pool: PoolKey::new("db.small", "az1"),
            server_id: Some("s1".into()),
            state: InstanceState::Ready,
            created_at: SystemTime::UNIX_EPOCH,
            ready_at: None,
            attempts: 0,
            last_error: None,
            request_id: None,
            mysql_addr: None,
            image: Some("mysql-8.4".into()),
        }
    }

    fn allocation_in_doubt() -> Allocation {
        let mut allocation = Allocation::new(
            AllocationParams {
                request_id: "r1".into(),
                tenant_project_id: "tenant-a".into(),
                pool: PoolKey::new("db.small", "az1"),
                volume: VolumeRequest {
                    source: VolumeSource::New {
                        size_gib: 10,
                        volume_type: None,
                    },
                    delete_on_release: false,
                },
                network: NetworkRequest {
                    network_id: "net".into(),
                    subnet_id: None,
                    fixed_ip: None,
                },
                labels: Default::default(),
            },
            7,
        );
        allocation.state = crate::model::AllocationState::Allocated;
        allocation.creates_in_doubt = true;
        allocation
    }

    /// `record` encoded with `key: true` added to the object at `path`
    /// (field names, or indices of arrays).
    fn with_extra(record: &impl Serialize, path: &[&str], key: &str) -> Vec<u8> {
        let mut value = serde_json::to_value(record).unwrap();
        let mut at = &mut value;
        for step in path {
            at = match step.parse::<usize>() {
                Ok(index) => &mut at[index],
                Err(_) => &mut at[*step],
            };
        }
        at.as_object_mut()
            .expect("an object")
            .insert(key.into(), Value::Bool(true));
        serde_json::to_vec(&value).unwrap()
    }

    fn assert_unreadable<T: std::fmt::Debug>(result: StoreResult<T>, tree: &str, key: &str) {
        match result {
            Err(e @ StoreError::Unreadable { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains(&format!("store record {tree}/{key} cannot be read")),
                    "{message}"
                );
                assert!(message.contains("from_the_future"), "{message}");
                assert!(message.contains("a newer warmpoold"), "{message}");
            }
            other => panic!("{tree}/{key}: expected Unreadable, got {other:?}"),
        }
    }

    /// The store the open makes of `store`'s database now: the scan a
    /// restart runs.
    fn reopened(store: &SledStore) -> StoreResult<SledStore> {
        SledStore::from_db(store.db.clone())
    }

    /// A newer warmpoold's record, with a field this version does not
    /// know, at the top or nested, stops the open (instances and
    /// allocations are read there) and every other read, naming it:
    /// read, it would be written back without that field by the next swap.
    #[tokio::test]
    async fn a_record_with_a_field_this_version_does_not_know_is_unreadable() {
        for path in [&[][..], &["pool"][..]] {
            let store = SledStore::temporary().unwrap();
            store
                .instances
                .insert("i1", with_extra(&ready_instance(), path, "from_the_future"))
                .unwrap();
            assert_unreadable(reopened(&store).map(drop), "instances", "i1");
            assert_unreadable(store.get_instance("i1").await, "instances", "i1");
            assert_unreadable(store.list_instances().await, "instances", "i1");
        }
        for path in [
            &[][..],
            &["params"][..],
            &["params", "pool"][..],
            &["params", "volume"][..],
            &["params", "volume", "source", "New"][..],
            &["params", "network"][..],
            &["timings"][..],
        ] {
            let store = SledStore::temporary().unwrap();
            store
                .allocations
                .insert(
                    "r1",
                    with_extra(&allocation_in_doubt(), path, "from_the_future"),
                )
                .unwrap();
            assert_unreadable(reopened(&store).map(drop), "allocations", "r1");
            assert_unreadable(store.get_allocation("r1").await, "allocations", "r1");
        }

        let store = SledStore::temporary().unwrap();
        let pool = PoolRecord::new(
            PoolKey::new("db.small", "az1"),
            crate::model::PoolSpec {
                min_ready: 1,
                max_ready: 2,
                target: Default::default(),
                image: "mysql-8.4".into(),
                boot_timeout: Duration::from_secs(600),
                max_age: None,
                paused: false,
                windows: vec!["Mon-Fri 09:00-18:00 min 2".parse().unwrap()],
                iops_limit: None,
                volume_iops_limit: None,
            },
        );
        for path in [&[][..], &["key"][..], &["spec"][..]] {
            store
                .pools
                .insert(
                    pool_key(&pool.key),
                    with_extra(&pool, path, "from_the_future"),
                )
                .unwrap();
            assert_unreadable(store.list_pools().await, "pools", "db.small@az1");
            assert_unreadable(store.get_pool(&pool.key).await, "pools", "db.small@az1");
        }

        let watch = TwinWatch {
            name: "warmpool-r1-7".into(),
            request_id: "r1".into(),
            pool: Some(PoolKey::new("db.small", "az1")),
            volumes: true,
            keep: vec![],
            stuck_volume: None,
            deleted_volumes: vec![crate::model::DeletedVolume {
                id: "v1".into(),
                stuck: false,
            }],
            deleted_only: false,
            bound_ports: Vec::new(),
            until: SystemTime::UNIX_EPOCH,
        };
        for path in [&[][..], &["deleted_volumes", "0"][..]] {
            store
                .twin_watches
                .insert("warmpool-r1-7", with_extra(&watch, path, "from_the_future"))
                .unwrap();
            assert_unreadable(
                store.list_twin_watches().await,
                "twin_watches",
                "warmpool-r1-7",
            );
        }

        let learned = LearnedSizing {
            saved_at: SystemTime::UNIX_EPOCH,
            demand_short: 0.1,
            demand_long: 0.1,
            demand_held: 0.0,
            held_for: None,
            allocations: 3,
            leads: vec![crate::sizing::LearnedLead {
                finished_before: Duration::from_secs(1),
                lead: Duration::from_secs(90),
            }],
            orders: vec![crate::sizing::LearnedOrder {
                request_id: "o-1".into(),
                asked_before: Duration::from_secs(1),
            }],
        };
        for path in [&[][..], &["leads", "0"][..], &["orders", "0"][..]] {
            store
                .learned_sizing
                .insert(
                    pool_key(&pool.key),
                    with_extra(&learned, path, "from_the_future"),
                )
                .unwrap();
            assert_unreadable(
                store.get_learned_sizing(&pool.key).await,
                "learned_sizing",
                "db.small@az1",
            );
        }
    }

    /// A record set aside that this version reads (the version that wrote
    /// it, run again) goes back to its tree when the store opens, and
    /// counts as any other; an order's whose key another record has taken
    /// since stays aside, holding its key (which of the two is right is a
    /// person's call), and one it cannot read stays aside.
    #[tokio::test]
    async fn set_aside_records_this_version_reads_go_back_at_open() {
        let store = SledStore::temporary().unwrap();
        let aside = |kind, key: &str, bytes: Vec<u8>| {
            store
                .set_aside
                .insert(set_aside_key(kind, key.as_bytes()), bytes)
                .unwrap();
        };
        aside(RecordKind::Instance, "i1", encode(&ready_instance()));
        let live = allocation_in_doubt();
        assert!(store.cas_allocation(None, Some(&live)).await.unwrap());
        let mut other = live.clone();
        other.state = AllocationState::Released;
        aside(RecordKind::Allocation, "r1", encode(&other));
        let unreadable = with_extra(&allocation_in_doubt(), &[], "from_the_future");
        aside(RecordKind::Allocation, "r2", unreadable.clone());

        let store = reopened(&store).unwrap();
        assert_eq!(
            store.get_instance("i1").await.unwrap(),
            Some(ready_instance())
        );
        assert!(!store
            .is_set_aside(RecordKind::Instance, "i1")
            .await
            .unwrap());
        let pool = ready_instance().pool;
        assert_eq!(
            store.count_instances(&pool).await.unwrap(),
            BTreeMap::from([(InstanceState::Ready, 1)])
        );
        assert_eq!(
            store.list_untouched_instances(&pool).await.unwrap().len(),
            1
        );

        assert_eq!(store.get_allocation("r1").await.unwrap(), Some(live));
        assert!(store
            .is_set_aside(RecordKind::Allocation, "r1")
            .await
            .unwrap());
        assert_eq!(
            store
                .set_aside
                .get(set_aside_key(RecordKind::Allocation, b"r1"))
                .unwrap()
                .as_deref(),
            Some(&encode(&other)[..])
        );
        assert_eq!(store.superseded.len(), 0);
        assert_eq!(store.allocations.get("r2").unwrap(), None);
        assert_eq!(
            store
                .set_aside
                .get(set_aside_key(RecordKind::Allocation, b"r2"))
                .unwrap()
                .as_deref(),
            Some(&unreadable[..])
        );
    }

    /// A copy set aside whose key a live record has taken since (a pool
    /// created again, sizing saved anew) is superseded: it never comes
    /// back on its own, neither after that record is deleted in a later
    /// run nor in the same run that wrote it, and no longer holds its key
    /// ([`Store::is_set_aside`]), so a deleted pool's orphans are not kept
    /// for it. Brought back, a pool the operator deleted would boot its
    /// old `min_ready` again, and old history would size a new pool.
    #[tokio::test]
    async fn a_set_aside_copy_whose_key_a_live_record_took_never_comes_back() {
        let key = PoolKey::new("db.small", "az1");
        let old = PoolRecord::new(key.clone(), crate::model::tests::spec());
        let mut again = old.clone();
        again.spec.min_ready += 1;
        again.spec.max_ready += 1;
        let learned = |allocations| LearnedSizing {
            saved_at: SystemTime::UNIX_EPOCH,
            demand_short: 0.1,
            demand_long: 0.1,
            demand_held: 0.0,
            held_for: None,
            allocations,
            leads: Vec::new(),
            orders: Vec::new(),
        };
        let aside = |store: &SledStore| {
            for (kind, bytes) in [
                (RecordKind::Pool, encode(&old)),
                (RecordKind::LearnedSizing, encode(&learned(3))),
            ] {
                store
                    .set_aside
                    .insert(set_aside_key(kind, &pool_key(&key)), bytes)
                    .unwrap();
            }
        };

        // Taken in one run, deleted in a later one: written by this build,
        // or by one that did not supersede as it wrote (the open does).
        for by_this_build in [true, false] {
            let store = SledStore::temporary().unwrap();
            aside(&store);
            if by_this_build {
                store.put_pool(&again).await.unwrap();
                store.put_learned_sizing(&key, &learned(5)).await.unwrap();
            } else {
                store.pools.insert(pool_key(&key), encode(&again)).unwrap();
                store
                    .learned_sizing
                    .insert(pool_key(&key), encode(&learned(5)))
                    .unwrap();
            }
            let store = reopened(&store).unwrap();
            assert_eq!(store.get_pool(&key).await.unwrap(), Some(again.clone()));
            assert_eq!(
                store.get_learned_sizing(&key).await.unwrap(),
                Some(learned(5))
            );
            store.delete_pool(&key).await.unwrap();
            let store = reopened(&store).unwrap();
            assert_eq!(store.get_pool(&key).await.unwrap(), None);
            assert_eq!(store.get_learned_sizing(&key).await.unwrap(), None);
            for kind in [RecordKind::Pool, RecordKind::LearnedSizing] {
                assert!(!store
                    .is_set_aside(kind, &pool_record_key(&key))
                    .await
                    .unwrap());
            }
        }

        // Taken and deleted in the run that found the copy aside.
        let store = SledStore::temporary().unwrap();
        aside(&store);
        assert!(store
            .is_set_aside(RecordKind::Pool, &pool_record_key(&key))
            .await
            .unwrap());
        store.put_pool(&again).await.unwrap();
        store.put_learned_sizing(&key, &learned(5)).await.unwrap();
        assert!(!store
            .is_set_aside(RecordKind::Pool, &pool_record_key(&key))
            .await
            .unwrap());
        store.delete_pool(&key).await.unwrap();
        let store = reopened(&store).unwrap();
        assert_eq!(store.get_pool(&key).await.unwrap(), None);
        assert_eq!(store.get_learned_sizing(&key).await.unwrap(), None);
        // Kept for a person to read.
        assert_eq!(
            store
                .superseded
                .get(set_aside_key(RecordKind::Pool, &pool_key(&key)))
                .unwrap()
                .as_deref(),
            Some(&encode(&old)[..])
        );
    }

    /// Only a pool's record and its learned sizing, whose keys warmpoold
    /// writes again by design (a pool created again, sizing saved anew),
    /// supersede a copy set aside under their key. Under an instance's or
    /// an order's the copy stays aside, holding its key, as before; under
    /// a twin watch's (an older build wrote a new watch of the order) the
    /// open merges it into the live watch as a write of that watch would
    /// ([`TwinWatch::absorb`]): superseded, the ports and volumes only it
    /// names would never be deleted.
    #[tokio::test]
    async fn only_pools_and_learned_sizing_supersede_a_copy_set_aside_under_their_key() {
        let store = SledStore::temporary().unwrap();
        let aside = |kind, key: &[u8], bytes: Vec<u8>| {
            store
                .set_aside
                .insert(set_aside_key(kind, key), bytes)
                .unwrap();
        };
        let key = PoolKey::new("db.small", "az1");
        let pool = PoolRecord::new(key.clone(), crate::model::tests::spec());
        let mut old_pool = pool.clone();
        old_pool.spec.min_ready += 1;
        old_pool.spec.max_ready += 1;
        let learned = |allocations| LearnedSizing {
            saved_at: SystemTime::UNIX_EPOCH,
            demand_short: 0.1,
            demand_long: 0.1,
            demand_held: 0.0,
            held_for: None,
            allocations,
            leads: Vec::new(),
            orders: Vec::new(),
        };
        // Written by a build that does not supersede as it writes.
        store.pools.insert(pool_key(&key), encode(&pool)).unwrap();
        store
            .learned_sizing
            .insert(pool_key(&key), encode(&learned(5)))
            .unwrap();
        aside(RecordKind::Pool, &pool_key(&key), encode(&old_pool));
        aside(
            RecordKind::LearnedSizing,
            &pool_key(&key),
            encode(&learned(3)),
        );

        let instance = ready_instance();
        assert!(store.cas_instance(None, Some(&instance)).await.unwrap());
        let mut old_instance = instance.clone();
        old_instance.state = InstanceState::Allocated;
        aside(RecordKind::Instance, b"i1", encode(&old_instance));

        let order = allocation_in_doubt();
        assert!(store.cas_allocation(None, Some(&order)).await.unwrap());
        let mut old_order = order.clone();
        old_order.state = AllocationState::Released;
        aside(RecordKind::Allocation, b"r1", encode(&old_order));

        let name = "warmpool-r1-a";
        let watch = |until: u64| TwinWatch {
            name: name.into(),
            request_id: "r1".into(),
            pool: Some(key.clone()),
            volumes: true,
            keep: Vec::new(),
            stuck_volume: None,
            deleted_volumes: Vec::new(),
            deleted_only: true,
            bound_ports: Vec::new(),
            until: SystemTime::UNIX_EPOCH + Duration::from_secs(until),
        };
        let mut live_watch = watch(900);
        live_watch.note_deleted("volume-1");
        store.put_twin_watch(&live_watch).await.unwrap();
        let mut old_watch = watch(1200);
        old_watch.note_bound_port("port-1");
        aside(RecordKind::TwinWatch, name.as_bytes(), encode(&old_watch));

        let store = reopened(&store).unwrap();
        let superseded = |kind, key: &[u8]| {
            store
                .superseded
                .get(set_aside_key(kind, key))
                .unwrap()
                .map(|bytes| bytes.to_vec())
        };
        let held = |kind, key: &[u8]| {
            store
                .set_aside
                .get(set_aside_key(kind, key))
                .unwrap()
                .map(|bytes| bytes.to_vec())
        };

        assert_eq!(store.get_pool(&key).await.unwrap(), Some(pool.clone()));
        assert_eq!(
            superseded(RecordKind::Pool, &pool_key(&key)),
            Some(encode(&old_pool))
        );
        assert_eq!(held(RecordKind::Pool, &pool_key(&key)), None);
        assert_eq!(
            store.get_learned_sizing(&key).await.unwrap(),
            Some(learned(5))
        );
        assert_eq!(
            superseded(RecordKind::LearnedSizing, &pool_key(&key)),
            Some(encode(&learned(3)))
        );

        assert_eq!(store.get_instance("i1").await.unwrap(), Some(instance));
        assert_eq!(
            held(RecordKind::Instance, b"i1"),
            Some(encode(&old_instance))
        );
        assert!(store
            .is_set_aside(RecordKind::Instance, "i1")
            .await
            .unwrap());
        assert_eq!(superseded(RecordKind::Instance, b"i1"), None);

        assert_eq!(store.get_allocation("r1").await.unwrap(), Some(order));
        assert_eq!(
            held(RecordKind::Allocation, b"r1"),
            Some(encode(&old_order))
        );
        assert!(store
            .is_set_aside(RecordKind::Allocation, "r1")
            .await
            .unwrap());
        assert_eq!(superseded(RecordKind::Allocation, b"r1"), None);

        let mut merged = live_watch.clone();
        merged.absorb(&old_watch);
        assert_eq!(merged.bound_ports, ["port-1"]);
        assert_eq!(store.list_twin_watches().await.unwrap(), [merged]);
        assert_eq!(held(RecordKind::TwinWatch, name.as_bytes()), None);
        assert_eq!(superseded(RecordKind::TwinWatch, name.as_bytes()), None);
        assert!(!store
            .is_set_aside(RecordKind::TwinWatch, name)
            .await
            .unwrap());

        // A later open finds nothing more to do.
        let again = reopened(&store).unwrap();
        assert_eq!(
            again.list_twin_watches().await.unwrap(),
            store.list_twin_watches().await.unwrap()
        );
        assert!(again
            .is_set_aside(RecordKind::Allocation, "r1")
            .await
            .unwrap());
    }

    /// `store check`'s list of records set aside says which are
    /// superseded: those moved so, and a pool's or its sizing's whose key
    /// a live record holds (the next open supersedes them); an order's
    /// under a live record stays aside, not superseded.
    #[tokio::test]
    async fn set_aside_records_say_which_are_superseded() {
        let dir = tempfile::tempdir().unwrap();
        let key = PoolKey::new("db.small", "az1");
        let pool = PoolRecord::new(key.clone(), crate::model::tests::spec());
        {
            let store = SledStore::open(dir.path()).unwrap();
            for (kind, key) in [
                (RecordKind::Pool, pool_key(&key)),
                (RecordKind::Allocation, b"r1".to_vec()),
                (RecordKind::Allocation, b"r2".to_vec()),
            ] {
                let unreadable = with_extra(&allocation_in_doubt(), &[], "from_the_future");
                store
                    .set_aside
                    .insert(set_aside_key(kind, &key), unreadable)
                    .unwrap();
            }
            store.put_pool(&pool).await.unwrap();
            store
                .allocations
                .insert("r2", encode(&allocation_in_doubt()))
                .unwrap();
            store.flush().await.unwrap();
        }
        let repair = StoreRepair::open(dir.path(), Duration::from_secs(30)).unwrap();
        let record = |kind, key: &str, superseded| SetAsideRecord {
            kind,
            key: key.to_owned(),
            superseded,
        };
        assert_eq!(
            repair.set_aside_records().unwrap(),
            [
                record(RecordKind::Allocation, "r1", false),
                record(RecordKind::Allocation, "r2", false),
                record(RecordKind::Pool, "db.small@az1", true),
            ]
        );
    }

    /// An unreadable learned sizing record does not stop warmpoold, which
    /// keeps it for the version that wrote it: its message names it and
    /// gives no set-aside advice (set aside, this version would save fresh
    /// sizing under its key and the copy would never come back).
    #[tokio::test]
    async fn unreadable_learned_sizing_gives_no_set_aside_advice() {
        let store = SledStore::temporary().unwrap();
        let key = PoolKey::new("db.small", "az1");
        store
            .learned_sizing
            .insert(pool_key(&key), br#"{"from_the_future":1}"#.to_vec())
            .unwrap();
        let message = match store.get_learned_sizing(&key).await {
            Err(e @ StoreError::Unreadable { .. }) => e.to_string(),
            other => panic!("expected Unreadable, got {other:?}"),
        };
        assert!(
            message.contains("store record learned_sizing/db.small@az1 cannot be read"),
            "{message}"
        );
        assert!(message.contains("a newer warmpoold"), "{message}");
        assert!(!message.contains("set-aside"), "{message}");
        assert!(!message.contains("set it aside"), "{message}");
    }

    /// An unreadable pool record's message says what setting it aside
    /// leads to: start-up creates a configured pool again at once (and
    /// `warmpoolctl pools create` any), which supersedes the copy for
    /// good, so the version that wrote it would not get it back.
    #[tokio::test]
    async fn unreadable_pool_advice_says_a_pool_set_aside_is_created_again() {
        let store = SledStore::temporary().unwrap();
        let key = PoolKey::new("db.small", "az1");
        store
            .pools
            .insert(pool_key(&key), br#"{"from_the_future":1}"#.to_vec())
            .unwrap();
        let message = match store.get_pool(&key).await {
            Err(e @ StoreError::Unreadable { .. }) => e.to_string(),
            other => panic!("expected Unreadable, got {other:?}"),
        };
        assert!(
            message.contains("warmpoold store set-aside pools 'db.small@az1'"),
            "{message}"
        );
        assert!(message.contains("created again"), "{message}");
        assert!(message.contains("warmpoolctl pools create"), "{message}");
        assert!(message.contains("superseded"), "{message}");
    }

    /// Setting aside a record already set aside says so, and changes
    /// nothing: a loop over `store check`'s list run again is not a
    /// failure, nor told the record is not there.
    #[tokio::test]
    async fn setting_aside_a_record_set_aside_already_says_so() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .allocations
                .insert(
                    "r1",
                    with_extra(&allocation_in_doubt(), &[], "from_the_future"),
                )
                .unwrap();
            store.flush().await.unwrap();
        }
        let repair = StoreRepair::open(dir.path(), Duration::from_secs(30)).unwrap();
        assert_eq!(
            repair.set_aside(RecordKind::Allocation, "r1").unwrap(),
            SetAside::Moved
        );
        assert_eq!(
            repair.set_aside(RecordKind::Allocation, "r1").unwrap(),
            SetAside::AlreadySetAside
        );
        assert_eq!(
            repair.set_aside_records().unwrap(),
            [SetAsideRecord {
                kind: RecordKind::Allocation,
                key: "r1".to_owned(),
                superseded: false,
            }]
        );
        assert_eq!(
            repair.set_aside(RecordKind::Instance, "r1").unwrap(),
            SetAside::NoSuchRecord
        );
        assert_eq!(
            repair.set_aside(RecordKind::Allocation, "r").unwrap(),
            SetAside::NoSuchRecord
        );
    }

    /// `warmpoold check-cloud` reads the stored pools alone: a record of
    /// the others this version cannot read is the open's to report.
    #[tokio::test]
    async fn read_pools_reads_the_pools_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pool = PoolRecord::new(PoolKey::new("db.small", "az1"), crate::model::tests::spec());
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put_pool(&pool).await.unwrap();
            store
                .allocations
                .insert(
                    "r1",
                    with_extra(&allocation_in_doubt(), &[], "from_the_future"),
                )
                .unwrap();
            store.flush().await.unwrap();
        }
        let wait = Duration::from_secs(30);
        assert_eq!(SledStore::read_pools(dir.path(), wait).unwrap(), [pool]);
        assert_unreadable(
            SledStore::open_waiting(dir.path(), wait).map(drop),
            "allocations",
            "r1",
        );
        let nowhere = dir.path().join("none");
        assert!(SledStore::read_pools(&nowhere, wait).is_err());
        assert!(!nowhere.exists());
    }

    /// The store commands open a store that is there and make none: a
    /// mistyped data dir, or an empty one, is named, not passed as a store
    /// whose every record reads, and stays as it was (files root made
    /// there could be unreadable to the daemon's user).
    #[test]
    fn store_repair_finds_no_store_where_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let nowhere = dir.path().join("none");
        for (path, exists) in [(dir.path(), true), (nowhere.as_path(), false)] {
            match StoreRepair::open(path, DEFAULT_LOCK_WAIT) {
                Err(e) => {
                    let message = e.to_string();
                    assert!(
                        message.starts_with(&format!("no store in {}", path.display())),
                        "{message}"
                    );
                }
                Ok(_) => panic!("{}: opened as a store", path.display()),
            }
            assert_eq!(path.exists(), exists);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        drop(SledStore::open(&nowhere).unwrap());
        let repair = StoreRepair::open(&nowhere, DEFAULT_LOCK_WAIT).unwrap();
        assert!(repair.unreadable().unwrap().is_empty());
    }

    /// A data dir the caller cannot look into is not one with no store:
    /// "no store" reads as a store lost, and check-cloud passed it. The
    /// error names the path and the OS error, and for a permission, whom
    /// to run as. A path under a regular file (ENOTDIR) shows it for
    /// anyone; a parent the caller may not enter (EACCES) only where
    /// permissions hold (not for root).
    #[test]
    fn a_store_the_caller_cannot_look_into_is_an_error_not_no_store() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let mut cases = vec![(file.join("store"), "Not a directory")];

        let shut = dir.path().join("shut");
        let behind = shut.join("store");
        drop(SledStore::open(&behind).unwrap());
        // Past sled's lock, which its flusher thread holds a moment longer.
        drop(open_sled(&behind, DEFAULT_LOCK_WAIT, DEFAULT_CACHE_CAPACITY).unwrap());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o000)).unwrap();
        let denied = std::fs::metadata(behind.join("db"))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
        if denied {
            cases.push((behind.clone(), "Permission denied"));
        } else {
            eprintln!("permissions do not hold here (root?): the EACCES case is not checked");
        }
        let opened: Vec<_> = cases
            .iter()
            .map(|(path, _)| {
                (
                    StoreRepair::open(path, DEFAULT_LOCK_WAIT).map(drop),
                    NoStoreYet::look(path).map(|found| found.is_some()),
                )
            })
            .collect();
        std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o755)).unwrap();

        for ((path, os_error), (repair, look)) in cases.iter().zip(opened) {
            match repair {
                Err(e @ StoreError::Inaccessible { .. }) => {
                    let message = e.to_string();
                    assert!(message.contains(&path.display().to_string()), "{message}");
                    assert!(message.contains(os_error), "{message}");
                    if *os_error == "Permission denied" {
                        assert!(message.contains("the user warmpoold runs as"), "{message}");
                    }
                }
                other => panic!("{}: expected Inaccessible, got {other:?}", path.display()),
            }
            assert!(look.is_err(), "{}: {look:?}", path.display());
        }
    }

    /// What a first open made in a data dir is taken back once the store
    /// is let go of, and only that: not what was there before, nor a
    /// store that was there.
    #[test]
    fn what_a_first_open_made_is_taken_back_and_only_that() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes"), "kept").unwrap();
        let made = NoStoreYet::look(dir.path()).unwrap().expect("no store yet");
        let store = SledStore::open(dir.path()).unwrap();
        match made.take_back(Duration::from_millis(100)) {
            Err(StoreError::Locked { .. }) => {}
            other => panic!("taken back from under an open store: {other:?}"),
        }
        drop(store);
        assert_eq!(
            made.take_back(DEFAULT_LOCK_WAIT).unwrap(),
            ["blobs", "conf", "db"]
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["notes"]);
        assert!(matches!(
            StoreRepair::open(dir.path(), DEFAULT_LOCK_WAIT),
            Err(StoreError::NoStore { .. })
        ));

        drop(SledStore::open(dir.path()).unwrap());
        assert!(NoStoreYet::look(dir.path()).unwrap().is_none());
        let nowhere = dir.path().join("none");
        let made = NoStoreYet::look(&nowhere).unwrap().unwrap();
        assert!(made.take_back(DEFAULT_LOCK_WAIT).unwrap().is_empty());
    }

    /// `e` and its causes, as anyhow's `{:#}` (warmpoold's last line) shows
    /// them.
    fn with_causes(e: &dyn std::error::Error) -> String {
        let mut shown = e.to_string();
        let mut cause = e.source();
        while let Some(e) = cause {
            shown.push_str(&format!(": {e}"));
            cause = e.source();
        }
        shown
    }

    /// The store in `dir`, written, opened again (sled's recovery then
    /// notes how far its log goes, in a `snap.*` file), and its log cut
    /// off, as a failing disk or a copy taken mid-write may leave it.
    async fn damaged_store(dir: &Path) {
        {
            let store = SledStore::open(dir).unwrap();
            let pool =
                PoolRecord::new(PoolKey::new("db.small", "az1"), crate::model::tests::spec());
            store.put_pool(&pool).await.unwrap();
            store.flush().await.unwrap();
        }
        drop(SledStore::open(dir).unwrap());
        // Past sled's lock, which its flusher thread holds a moment longer.
        drop(open_sled(dir, DEFAULT_LOCK_WAIT, DEFAULT_CACHE_CAPACITY).unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("db"))
            .unwrap()
            .set_len(0)
            .unwrap();
    }

    /// A store sled finds damaged is said to be, once (sled's text came
    /// twice, and told no next step), with what to do.
    #[tokio::test]
    async fn a_damaged_store_says_so_once_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        damaged_store(dir.path()).await;
        let opened = SledStore::open(dir.path()).map(drop);
        let repaired = StoreRepair::open(dir.path(), DEFAULT_LOCK_WAIT).map(drop);
        for result in [opened, repaired] {
            let e = result.expect_err("a damaged store opened");
            let shown = with_causes(&e);
            assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
            assert_eq!(shown.matches("corrupted data").count(), 1, "{shown}");
            assert!(
                shown.contains("restore the data dir from a backup"),
                "{shown}"
            );
            assert!(shown.contains("empty"), "{shown}");
        }
    }

    /// What `keep_released` forgets: released orders, by their release
    /// time, or their creation for records from before it was kept.
    #[tokio::test]
    async fn released_before_lists_the_ids_of_old_released_orders() {
        let store = SledStore::temporary().unwrap();
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let order = |id: &str, state, created, released: Option<u64>| {
            let mut a = allocation(state);
            a.params.request_id = id.into();
            a.created_at = at(created);
            a.released_at = released.map(at);
            a
        };
        for a in [
            order("old", AllocationState::Released, 10, Some(100)),
            order("recent", AllocationState::Released, 10, Some(300)),
            order("old-unkept", AllocationState::Released, 100, None),
            order("recent-unkept", AllocationState::Released, 300, None),
            order("held", AllocationState::Allocated, 10, None),
            order("releasing", AllocationState::Releasing, 10, None),
        ] {
            assert!(store.cas_allocation(None, Some(&a)).await.unwrap());
        }
        let mut ids = store.list_released_before(at(200)).await.unwrap();
        ids.sort();
        assert_eq!(ids, ["old", "old-unkept"]);
    }

    /// The swap that would strip a newer version's field (its record read
    /// as this version's, found equal, and replaced by this version's
    /// encoding) fails instead, and leaves the record as it was.
    #[tokio::test]
    async fn a_swap_never_writes_back_a_record_without_the_fields_it_did_not_know() {
        let store = SledStore::temporary().unwrap();
        let stored = allocation_in_doubt();
        let newer = with_extra(&stored, &[], "from_the_future");
        store.allocations.insert("r1", newer.clone()).unwrap();
        let mut released = stored.clone();
        released.state = crate::model::AllocationState::Releasing;
        assert_unreadable(
            store.cas_allocation(Some(&stored), Some(&released)).await,
            "allocations",
            "r1",
        );
        assert_eq!(
            store.allocations.get("r1").unwrap().as_deref(),
            Some(&newer[..])
        );
    }

    /// Records written before the defaulted fields existed still open and
    /// read as before; so does an allocation from the versions that kept
    /// `twins_swept` (since removed), which a swap then writes without it.
    #[tokio::test]
    async fn records_of_older_versions_still_open() {
        let store = SledStore::temporary().unwrap();
        let mut old_instance = serde_json::to_value(ready_instance()).unwrap();
        old_instance.as_object_mut().unwrap().remove("image");
        store
            .instances
            .insert("i1", serde_json::to_vec(&old_instance).unwrap())
            .unwrap();

        let mut old_allocation = serde_json::to_value(allocation_in_doubt()).unwrap();
        let object = old_allocation.as_object_mut().unwrap();
        for newer in ["attempt", "creates_in_doubt", "released_at"] {
            object.remove(newer);
        }
        object.insert("twins_swept".into(), json!(true));
        store
            .allocations
            .insert("r1", serde_json::to_vec(&old_allocation).unwrap())
            .unwrap();

        let old_pool = json!({
            "key": {"flavor": "db.small", "availability_zone": "az1"},
            "spec": {
                "min_ready": 1, "max_ready": 2, "target": null, "image": "mysql-8.4",
                "boot_timeout": {"secs": 600, "nanos": 0}, "max_age": null, "paused": false
            },
            "draining": false, "allocations_warm": 0, "allocations_cold": 0,
            "allocations_failed": 0, "last_error": null
        });
        store
            .pools
            .insert(
                pool_key(&PoolKey::new("db.small", "az1")),
                serde_json::to_vec(&old_pool).unwrap(),
            )
            .unwrap();
        let old_watch = json!({
            "name": "warmpool-r1", "request_id": "r1", "volumes": true,
            "until": {"secs_since_epoch": 900, "nanos_since_epoch": 0}
        });
        store
            .twin_watches
            .insert("warmpool-r1", serde_json::to_vec(&old_watch).unwrap())
            .unwrap();

        let store = reopened(&store).unwrap();
        let mut expected_instance = ready_instance();
        expected_instance.image = None;
        assert_eq!(
            store.list_instances().await.unwrap(),
            vec![expected_instance]
        );
        let read = store.get_allocation("r1").await.unwrap().unwrap();
        assert_eq!(read.attempt, None);
        assert!(!read.creates_in_doubt);
        assert_eq!(read.resource_name(), "warmpool-r1");
        let pools = store.list_pools().await.unwrap();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].spec.target, Default::default());
        assert_eq!(
            (pools[0].allocations_waited, pools[0].allocations_exhausted),
            (0, 0)
        );
        assert!(pools[0].spec.windows.is_empty());
        let watches = store.list_twin_watches().await.unwrap();
        assert_eq!(watches.len(), 1);
        assert!(watches[0].keep.is_empty() && watches[0].stuck_volume.is_none());
        assert!(watches[0].deleted_volumes.is_empty() && watches[0].lists_by_name());

        let mut released = read.clone();
        released.state = crate::model::AllocationState::Releasing;
        assert!(store
            .cas_allocation(Some(&read), Some(&released))
            .await
            .unwrap());
        let written: Value =
            serde_json::from_slice(&store.allocations.get("r1").unwrap().unwrap()).unwrap();
        assert_eq!(written.get("twins_swept"), None, "{written}");
        assert_eq!(
            store.get_allocation("r1").await.unwrap().as_ref(),
            Some(&released)
        );
    }
}
