//! An in-memory `Store` for benchmarks: the same compare-and-swap semantics
//! as the sled store, without disk I/O, so a week of demand replays in
//! seconds. (Durability is what the sled store's own tests are about.)

use async_trait::async_trait;
use pool_manager::cloud::CloudIdentity;
use pool_manager::events::StoredHealth;
use pool_manager::model::{
    resource_names_of, Allocation, Instance, InstanceState, PoolKey, PoolRecord, TwinWatch,
};
use pool_manager::sizing::LearnedSizing;
use pool_manager::store::{Store, StoreError, StoreResult};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Default)]
pub struct MemStore {
    pools: Mutex<BTreeMap<PoolKey, PoolRecord>>,
    instances: Mutex<BTreeMap<String, Instance>>,
    allocations: Mutex<BTreeMap<String, Allocation>>,
    learned_sizing: Mutex<BTreeMap<PoolKey, LearnedSizing>>,
    pool_health: Mutex<BTreeMap<PoolKey, StoredHealth>>,
    twin_watches: Mutex<BTreeMap<String, TwinWatch>>,
    unknown_servers_accepted: Mutex<Option<SystemTime>>,
    cloud_identity: Mutex<Option<CloudIdentity>>,
}

fn cas<T: Clone + PartialEq>(
    map: &Mutex<BTreeMap<String, T>>,
    key: Option<&str>,
    expected: Option<&T>,
    new: Option<&T>,
) -> StoreResult<bool> {
    let key = key.ok_or(StoreError::NothingToSwap)?;
    let mut map = map.lock().expect("store lock");
    if map.get(key) != expected {
        return Ok(false);
    }
    match new {
        Some(v) => map.insert(key.to_string(), v.clone()),
        None => map.remove(key),
    };
    Ok(true)
}

#[async_trait]
impl Store for MemStore {
    async fn put_twin_watch(&self, watch: &TwinWatch) -> StoreResult<()> {
        self.twin_watches
            .lock()
            .expect("store lock")
            .insert(watch.name.clone(), watch.clone());
        Ok(())
    }
    async fn list_twin_watches(&self) -> StoreResult<Vec<TwinWatch>> {
        Ok(self
            .twin_watches
            .lock()
            .expect("store lock")
            .values()
            .cloned()
            .collect())
    }
    async fn list_twin_watches_of(&self, request_id: &str) -> StoreResult<Vec<TwinWatch>> {
        let prefix = resource_names_of(request_id);
        Ok(self
            .twin_watches
            .lock()
            .expect("store lock")
            .range(prefix.clone()..)
            .take_while(|(name, _)| name.starts_with(&prefix))
            .map(|(_, watch)| watch)
            .filter(|watch| watch.request_id == request_id)
            .cloned()
            .collect())
    }
    async fn cas_twin_watch(
        &self,
        expected: Option<&TwinWatch>,
        new: Option<&TwinWatch>,
    ) -> StoreResult<bool> {
        let key = new.or(expected).map(|w| w.name.as_str());
        cas(&self.twin_watches, key, expected, new)
    }
    async fn get_pool(&self, key: &PoolKey) -> StoreResult<Option<PoolRecord>> {
        Ok(self.pools.lock().expect("store lock").get(key).cloned())
    }
    async fn list_pools(&self) -> StoreResult<Vec<PoolRecord>> {
        Ok(self
            .pools
            .lock()
            .expect("store lock")
            .values()
            .cloned()
            .collect())
    }
    async fn put_pool(&self, pool: &PoolRecord) -> StoreResult<()> {
        self.pools
            .lock()
            .expect("store lock")
            .insert(pool.key.clone(), pool.clone());
        Ok(())
    }
    async fn delete_pool(&self, key: &PoolKey) -> StoreResult<()> {
        self.pool_health.lock().expect("store lock").remove(key);
        self.learned_sizing.lock().expect("store lock").remove(key);
        self.pools.lock().expect("store lock").remove(key);
        Ok(())
    }
    async fn get_learned_sizing(&self, key: &PoolKey) -> StoreResult<Option<LearnedSizing>> {
        Ok(self
            .learned_sizing
            .lock()
            .expect("store lock")
            .get(key)
            .cloned())
    }
    async fn put_learned_sizing(&self, key: &PoolKey, learned: &LearnedSizing) -> StoreResult<()> {
        self.learned_sizing
            .lock()
            .expect("store lock")
            .insert(key.clone(), learned.clone());
        Ok(())
    }
    async fn get_pool_health(&self, key: &PoolKey) -> StoreResult<Option<StoredHealth>> {
        Ok(self
            .pool_health
            .lock()
            .expect("store lock")
            .get(key)
            .cloned())
    }
    async fn put_pool_health(
        &self,
        key: &PoolKey,
        health: Option<&StoredHealth>,
    ) -> StoreResult<()> {
        let mut stored = self.pool_health.lock().expect("store lock");
        match health {
            Some(health) => stored.insert(key.clone(), health.clone()),
            None => stored.remove(key),
        };
        Ok(())
    }
    async fn list_untouched_instances(&self, pool: &PoolKey) -> StoreResult<Vec<Instance>> {
        Ok(self
            .instances
            .lock()
            .expect("store lock")
            .values()
            .filter(|i| i.is_untouched_in(pool))
            .cloned()
            .collect())
    }
    async fn count_instances(&self, pool: &PoolKey) -> StoreResult<BTreeMap<InstanceState, u32>> {
        let mut counts = BTreeMap::new();
        for instance in self.instances.lock().expect("store lock").values() {
            if &instance.pool == pool {
                *counts.entry(instance.state).or_default() += 1;
            }
        }
        Ok(counts)
    }
    async fn get_instance(&self, id: &str) -> StoreResult<Option<Instance>> {
        Ok(self.instances.lock().expect("store lock").get(id).cloned())
    }
    async fn list_instances(&self) -> StoreResult<Vec<Instance>> {
        Ok(self
            .instances
            .lock()
            .expect("store lock")
            .values()
            .cloned()
            .collect())
    }
    async fn cas_instance(
        &self,
        expected: Option<&Instance>,
        new: Option<&Instance>,
    ) -> StoreResult<bool> {
        let key = new.or(expected).map(|i| i.id.as_str());
        cas(&self.instances, key, expected, new)
    }
    async fn list_unfinished_allocations(&self) -> StoreResult<Vec<Allocation>> {
        Ok(self
            .allocations
            .lock()
            .expect("store lock")
            .values()
            .filter(|a| a.state.is_unfinished())
            .cloned()
            .collect())
    }
    async fn get_allocation(&self, request_id: &str) -> StoreResult<Option<Allocation>> {
        Ok(self
            .allocations
            .lock()
            .expect("store lock")
            .get(request_id)
            .cloned())
    }
    async fn list_allocations(&self) -> StoreResult<Vec<Allocation>> {
        Ok(self
            .allocations
            .lock()
            .expect("store lock")
            .values()
            .cloned()
            .collect())
    }
    async fn cas_allocation(
        &self,
        expected: Option<&Allocation>,
        new: Option<&Allocation>,
    ) -> StoreResult<bool> {
        let key = new.or(expected).map(|a| a.params.request_id.as_str());
        cas(&self.allocations, key, expected, new)
    }
    /// Nothing is ever set aside: every record here was written by this
    /// process.
    async fn is_set_aside(
        &self,
        _kind: pool_manager::store::RecordKind,
        _key: &str,
    ) -> StoreResult<bool> {
        Ok(false)
    }
    async fn note_unknown_servers_accepted(&self, at: SystemTime) -> StoreResult<()> {
        *self.unknown_servers_accepted.lock().expect("store lock") = Some(at);
        Ok(())
    }
    async fn unknown_servers_accepted(&self) -> StoreResult<bool> {
        Ok(self
            .unknown_servers_accepted
            .lock()
            .expect("store lock")
            .is_some())
    }
    async fn cloud_identity(&self) -> StoreResult<Option<CloudIdentity>> {
        Ok(self.cloud_identity.lock().expect("store lock").clone())
    }
    async fn record_cloud_identity(&self, identity: &CloudIdentity) -> StoreResult<()> {
        *self.cloud_identity.lock().expect("store lock") = Some(identity.clone());
        Ok(())
    }
    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pool_manager::model::{AllocationState, InstanceState};
    use std::time::SystemTime;

    fn instance(id: usize, pool: &PoolKey, state: InstanceState) -> Instance {
        Instance {
            id: format!("i{id}"),
            pool: pool.clone(),
            server_id: None,
            state,
            created_at: SystemTime::UNIX_EPOCH,
            ready_at: None,
            attempts: 0,
            last_error: None,
            request_id: state.is_tenant_touched().then(|| format!("r{id}")),
            mysql_addr: None,
            image: None,
        }
    }

    /// The shortcuts answer what the trait's definitions say, from the same records.
    #[tokio::test]
    async fn shortcuts_agree_with_the_full_listings() {
        let store = MemStore::default();
        let pools = [
            PoolKey::new("db.small", "az1"),
            PoolKey::new("db.large", "az1"),
        ];
        let mut n = 0;
        for pool in &pools {
            for state in InstanceState::ALL {
                n += 1;
                store
                    .cas_instance(None, Some(&instance(n, pool, state)))
                    .await
                    .unwrap();
            }
        }
        let all = store.list_instances().await.unwrap();
        for pool in &pools {
            let mut expected: Vec<Instance> = all
                .iter()
                .filter(|i| &i.pool == pool && !i.state.is_tenant_touched())
                .cloned()
                .collect();
            let mut got = store.list_untouched_instances(pool).await.unwrap();
            expected.sort_by(|a, b| a.id.cmp(&b.id));
            got.sort_by(|a, b| a.id.cmp(&b.id));
            assert_eq!(got.len(), 5);
            assert_eq!(got, expected);
        }

        let states = [
            AllocationState::Allocating,
            AllocationState::Allocated,
            AllocationState::Releasing,
            AllocationState::Released,
        ];
        for (i, state) in states.into_iter().enumerate() {
            let mut allocation = Allocation::new(
                crate::replay::request(format!("r{i}"), pools[0].clone()).params,
                0,
            );
            allocation.state = state;
            store.cas_allocation(None, Some(&allocation)).await.unwrap();
        }
        let mut unfinished: Vec<String> = store
            .list_unfinished_allocations()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.params.request_id)
            .collect();
        unfinished.sort();
        assert_eq!(unfinished, ["r0", "r2"]);

        // An order's watches, apart from those of orders whose ids start
        // with its id (their names start alike).
        let watched = [
            ("r1", "warmpool-r1"),
            ("r1", "warmpool-r1-a"),
            ("r10", "warmpool-r10-a"),
            ("r1-x", "warmpool-r1-x"),
            ("r1-x", "warmpool-r1-x-b"),
            ("r", "warmpool-r-1"),
        ];
        for (request_id, name) in watched {
            let watch = TwinWatch {
                name: name.into(),
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
            store.put_twin_watch(&watch).await.unwrap();
        }
        let all = store.list_twin_watches().await.unwrap();
        for request_id in ["r1", "r10", "r1-x", "r", "r2"] {
            let expected: Vec<TwinWatch> = all
                .iter()
                .filter(|w| w.request_id == request_id)
                .cloned()
                .collect();
            assert_eq!(
                store.list_twin_watches_of(request_id).await.unwrap(),
                expected,
                "{request_id}"
            );
        }
    }
}
