//! Opening the sled store holds what its in-memory index needs, not every
//! record it scans: finished orders accumulate (`keep_released` keeps them
//! forever by default), and a restart that decoded them all into memory at
//! once would outgrow its container's limit as the history grew.
//!
//! What sled itself holds while the trees are read is sled's: its cache
//! takes in every page a scan reads until each of its 256 shards has
//! queued 64 accesses, whatever the capacity it was given. So the open is
//! measured against a scan of the same trees by sled alone.
//!
//! A test binary of its own, of one test: its global allocator counts
//! every thread's heap, so nothing else may run beside the measurement.

mod common;

use common::*;
use pool_manager::model::{Allocation, AllocationState, EmptyPoolPolicy, StepTimings};
use pool_manager::store::{SledStore, Store};
use std::time::{Duration, SystemTime};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Runs `f`; returns its result and the most heap it held at once (every
/// thread's: sled's own threads too), not counting what was held before.
fn peak_heap_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _profiler = dhat::Profiler::builder().testing().build();
    let out = f();
    (out, dhat::HeapStats::get().max_bytes)
}

/// The page cache of both handles on the store: small, though a single
/// scan of a store this size fills sled's far past it (see above).
const CACHE: u64 = 1 << 20;

fn open(dir: &std::path::Path) -> SledStore {
    SledStore::open_with(dir, Duration::from_secs(30), CACHE).expect("the store opens")
}

/// Order `n` as a finished sale leaves it: released, its server, volume
/// and port recorded.
fn released(n: usize) -> Allocation {
    let id = format!("order-{n:06}");
    let mut allocation = Allocation::new(
        request(&id, new_volume(), EmptyPoolPolicy::FailFast).params,
        0,
    );
    allocation.state = AllocationState::Released;
    allocation.warm_hit = true;
    allocation.instance_id = Some(format!("inst-{n:06}-5f0c1d2e"));
    allocation.server_id = Some(format!("4b9e1c3a-7d2f-4e8b-9a61-{n:012}"));
    allocation.volume_id = Some(format!("c2d7f0e4-1b3a-4c5d-8e9f-{n:012}"));
    allocation.volume_created = true;
    allocation.port_id = Some(format!("9a8b7c6d-5e4f-4a3b-2c1d-{n:012}"));
    allocation.ip_address = Some("10.20.30.40".into());
    allocation.timings = StepTimings {
        claim: Duration::from_millis(12),
        volume: Duration::from_millis(4200),
        port: Duration::from_millis(900),
        verify: Duration::from_millis(300),
        total: Duration::from_millis(5400),
        ..Default::default()
    };
    allocation.delete_volume_on_release = Some(false);
    allocation.released_at = Some(SystemTime::now());
    allocation
}

const ORDERS: usize = 50_000;

/// What the open may hold at its peak beyond sled's own scan, whatever
/// the store's history: the index, one record being decoded. The
/// `ORDERS` records, decoded together, take about 70 MiB.
const BEYOND_SLED: usize = 8 << 20;

/// The peak heap of reading every record of the trees the open scans,
/// by sled alone (nothing decoded), from a fresh handle as the open's.
fn sled_scan_peak(dir: &std::path::Path) -> usize {
    let (db, peak) = peak_heap_of(|| {
        // sled lets go of its lock a moment after the last handle is dropped.
        let db = (0..500)
            .find_map(|_| {
                let opened = sled::Config::new().path(dir).cache_capacity(CACHE).open();
                if opened.is_err() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                opened.ok()
            })
            .expect("the store is free");
        for tree in ["instances", "allocations"] {
            for entry in db.open_tree(tree).unwrap().iter() {
                entry.unwrap();
            }
        }
        db
    });
    drop(db);
    peak
}

#[tokio::test]
async fn opening_a_store_of_many_finished_orders_holds_none_of_them_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let record_size = serde_json::to_vec(&released(0)).unwrap().len();
    for n in 0..ORDERS {
        assert!(store
            .cas_allocation(None, Some(&released(n)))
            .await
            .unwrap());
    }
    let mut in_flight = released(ORDERS);
    in_flight.state = AllocationState::Allocating;
    in_flight.released_at = None;
    assert!(store.cas_allocation(None, Some(&in_flight)).await.unwrap());
    store.flush().await.unwrap();
    drop(store);

    let sled_peak = sled_scan_peak(dir.path());
    // Waits for the lock the scan's handle lets go of a moment after its drop.
    let (store, peak) = peak_heap_of(|| open(dir.path()));
    println!(
        "{} orders of {record_size} bytes stored: the open's peak heap was {peak} bytes, \
         sled's scan's alone {sled_peak}",
        ORDERS + 1
    );
    // The scan read every record still.
    assert_eq!(
        store.list_unfinished_allocations().await.unwrap(),
        [in_flight]
    );
    assert!(
        peak < sled_peak + BEYOND_SLED,
        "opening a store of {} orders ({record_size} bytes each, stored) held {peak} bytes at \
         its peak, {} beyond sled's own scan of them ({sled_peak}): more than {BEYOND_SLED}",
        ORDERS + 1,
        peak.saturating_sub(sled_peak)
    );
}
