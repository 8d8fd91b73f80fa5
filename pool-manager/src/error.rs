//! The errors `PoolManager` returns, one variant per thing a caller can act on.

use crate::cloud::{CloudChange, CloudError, CloudIdentity};
use crate::model::PoolKey;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    /// Quoted: a name that only looks like a pool's (a character unseen
    /// in it) shows as the one it is not. The listing is named for a
    /// warmpoolctl user, who never sees the RPC's name, and an API caller.
    #[error("no pool {:?} (flavor@availability_zone; `warmpoolctl pools` or ListPools lists the pools)", .0.to_string())]
    PoolNotFound(PoolKey),
    #[error("pool {0} already exists")]
    PoolExists(PoolKey),
    #[error("no allocation with request_id {0:?}")]
    AllocationNotFound(String),
    /// The request is valid but the world is not in a state to serve it
    /// (volume in use, pool being deleted) until someone changes it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No warm instance by the deadline, or the cloud's quota is spent.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The purchase's timeout passed while the pool had an instance to give
    /// (its volume was still being made, say): no miss of the pool's depth,
    /// so not `ResourceExhausted`; a longer timeout would do.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Another call on the same allocation is under way or changed it just
    /// now: the same call again, a little later, will do.
    #[error("{0}")]
    TryAgain(String),
    /// The request id was used before with other parameters.
    #[error("{0}")]
    Aborted(String),
    /// The cloud refused, failed or throttled past the deadline; its
    /// message says which.
    #[error("{0}")]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Start-up found a store that knows no instance and no order over a
    /// cloud listing `servers` pool servers (not being deleted), `sold` of
    /// them with volumes attached: its pass would take them all for leaks.
    /// Or, `adopted`, a store adopted from another cloud
    /// (`ManagerSettings::adopt_cloud`) over one listing `servers` it has
    /// no record of. Nothing was deleted, nor the adoption recorded.
    #[error("{}", unknown_servers(*servers, *sold, *adopted))]
    UnknownServers {
        servers: usize,
        sold: usize,
        adopted: bool,
    },
    /// Start-up found a store that recorded another cloud than the one
    /// the manager drives (`PoolManager::claim_store`), or the same
    /// project under another server tag, without `adopt_cloud`; or one
    /// the embedded simulated cloud, which adopts no store, was to adopt.
    /// Nothing was done.
    #[error("{}", cloud_changed(recorded, current))]
    CloudChanged {
        // Boxed: two identities would make every `ManagerResult` large.
        recorded: Box<CloudIdentity>,
        current: Box<CloudIdentity>,
    },
    /// A graceful stop refused `call`, or stopped it where nothing of it
    /// is left to finish; the message says how to call again.
    #[error("warmpool is shutting down; call again once it is back ({})", call.again())]
    ShuttingDown { call: ApiCall },
    /// A bug in warmpool (a task that panicked): the call failed, and
    /// what it made is undone.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The API call a shutdown refused: each is called again its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiCall {
    Allocate,
    Release,
    CreatePool,
    UpdatePool,
    DeletePool,
    /// One that only reads (GetAllocation, ListPools, GetPool,
    /// ListInstances, WatchPools).
    Read,
}

impl ApiCall {
    /// How to call again once warmpool is back, whether or not the refused
    /// call got anything done before the stop.
    fn again(self) -> &'static str {
        match self {
            ApiCall::Allocate => "an Allocate with the same request id",
            ApiCall::Release => {
                "a Release of the same request id: it finishes a release begun, or answers one done"
            }
            ApiCall::CreatePool => {
                "the same CreatePool: ALREADY_EXISTS says the pool was made before the stop"
            }
            ApiCall::UpdatePool => {
                "the same UpdatePool: it sets the same values whether or not the first one did"
            }
            ApiCall::DeletePool => {
                "the same DeletePool: one of a pool being deleted is answered without a change"
            }
            ApiCall::Read => "the same call: it only reads",
        }
    }
}

impl ManagerError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            message: message.into(),
        }
    }

    /// `what` was written to the store, but the flush that would confirm
    /// it on disk failed with `e`. It is in effect all the same, so the
    /// answer is to call again (which flushes before it answers), not a
    /// failure.
    pub(crate) fn unconfirmed(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::TryAgain(format!(
            "{what} is recorded, but the store could not confirm it on disk ({e}); call again with the same request"
        ))
    }

    /// `what` was taken back after the flush that would have confirmed it
    /// failed with `e`: nothing was done on its strength, and the same call
    /// again makes it.
    pub(crate) fn not_recorded(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::TryAgain(format!(
            "the store could not record {what} on disk ({e}); nothing was done: call again with the same request"
        ))
    }
}

pub type ManagerResult<T> = Result<T, ManagerError>;

/// [`ManagerError::CloudChanged`]'s message: a tag renamed leaves the
/// store's servers where they were, which another cloud does not.
fn cloud_changed(recorded: &CloudIdentity, current: &CloudIdentity) -> String {
    if *current == CloudIdentity::Embedded {
        return format!(
            "the store serves {recorded}, not {current}, which warmpool drives now, and the \
             embedded simulated cloud adopts no store (adopt_cloud or not): it is new at every \
             start and boots nothing real, so the store's servers would be forgotten as gone \
             and its pools booted in the simulation. Nothing was done and the start is \
             refused: start with the configuration of {recorded}, or run the simulation on a \
             store of its own"
        );
    }
    match current.change_from(recorded) {
        CloudChange::RegionNamed => format!(
            "the store serves {recorded}, recorded with no region (by an older warmpool, or \
             with none named), and warmpool drives {current} now; the service catalog does not \
             have the services warmpool calls in that region alone (or cannot be read: a \
             warning says why), so \
             with none named they may have gone to another region, and nothing was done and \
             the start is refused. If the store's servers are in that region (`{}` lists \
             them), start once with adopt_cloud: the region is then recorded as the store's; \
             if they are in another, name that one",
            current.server_list_command().unwrap_or_default()
        ),
        CloudChange::ServerTag => format!(
            "the store serves {recorded}, and warmpool drives that project under another tag \
             now: {current}. The store's servers are this cloud's, but pool servers are listed \
             by their tag: under the new one warmpool lists none of the store's own, and any it \
             lists (another warmpool's?) are ones it has no record of; so nothing was done and \
             the start is refused. If the tag is mistyped, mend it; if it is meant to change, \
             start once with adopt_cloud: the store keeps serving the servers it has records \
             of (by their ids), new servers carry the new tag, and the store records it"
        ),
        _ => format!(
            "the store serves {recorded}, not {current}, which warmpool drives now: its pools \
             would boot on this cloud and its instances and orders name servers, volumes and \
             ports this cloud never had, so nothing was done and the start is refused. Start on \
             this cloud's store, or on a new one; if this store is meant to move to this cloud, \
             start once with adopt_cloud: this cloud is then recorded as the store's"
        ),
    }
}

/// [`ManagerError::UnknownServers`]'s message.
fn unknown_servers(servers: usize, sold: usize, adopted: bool) -> String {
    if adopted {
        return format!(
            "the store is adopted from another cloud (adopt_cloud) and has no record of the \
             {servers} pool servers this cloud lists tagged as warmpool's ({sold} of them sold: \
             volumes attached); started on it, warmpool would delete the unsold ones as leaks \
             and know none of the sold ones' orders, so nothing was deleted, the store still \
             serves the cloud it recorded, and the start is refused. If another warmpool shares \
             the cloud project, give this one a server tag of its own; if the servers are meant \
             to go, start with adopt_cloud and delete_unknown_servers: the unsold ones are \
             deleted, the sold ones left alone and logged"
        );
    }
    format!(
        "the store knows no pool server and no order, but the cloud lists {servers} pool servers \
         tagged as warmpool's ({sold} of them sold: volumes attached); started on this store, \
         warmpool would delete the unsold ones as leaks and know none of the sold ones' orders, \
         so nothing was deleted and the start is refused. Start on the store that knows them; \
         if another warmpool shares the cloud project, give this one a server tag of its own; \
         if this store is meant to be new (the old one is lost), start once with \
         delete_unknown_servers: the unsold ones are deleted, the sold ones left alone and logged"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool not found names where the pools are listed, for a
    /// warmpoolctl user (who never sees the RPC's name) and an API
    /// caller alike.
    #[test]
    fn a_pool_not_found_names_the_listing_for_the_cli_and_the_api() {
        let text = ManagerError::PoolNotFound(PoolKey::new("db.large", "az1")).to_string();
        assert_eq!(
            text,
            "no pool \"db.large@az1\" (flavor@availability_zone; `warmpoolctl pools` or \
             ListPools lists the pools)"
        );
    }
}
