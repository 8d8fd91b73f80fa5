//! store-listing: what the hot paths' listings cost in the sled store as
//! tenants' databases and finished allocations accumulate.
//!
//! Every claim and every replenisher step lists one pool's untouched
//! instances; every reconcile pass lists the unfinished allocations; every
//! pool status (GetPool, WatchPools, a metrics scrape) counts a pool's
//! instances. The store holds many more records than those: one instance
//! per live tenant database, one allocation per order ever made. This fills
//! a sled store in a temporary directory with `live` tenant instances (and
//! as many live allocations), four finished allocations per live one, a
//! pool of 20 ready instances and 5 unfinished allocations, then times those
//! three, listing every instance (what a pool status read before the store
//! kept counts), and reopening the store.
//!
//! ```text
//! cargo run --release -p bench --bin store-listing -- --live 1000,10000,50000
//! ```

use anyhow::{ensure, Context};
use clap::Parser;
use pool_manager::model::{
    Allocation, AllocationParams, AllocationState, Instance, InstanceState, NetworkRequest,
    PoolKey, VolumeRequest, VolumeSource,
};
use pool_manager::store::{SledStore, Store};
use std::time::{Duration, Instant, SystemTime};

#[derive(Parser, Debug)]
#[command(about = "Time the sled store's hot listings as tenants' records accumulate")]
struct Args {
    /// Live tenant databases to fill the store with, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    live: Vec<usize>,
    /// Timed calls per listing; the median is reported.
    #[arg(long, default_value_t = 21, value_parser = bench::at_least_one())]
    calls: usize,
}

const READY_IN_POOL: usize = 20;
const UNFINISHED: usize = 5;
const FINISHED_PER_LIVE: usize = 4;

fn pool(n: usize) -> PoolKey {
    PoolKey {
        flavor: format!("db.size{}", n % 4),
        availability_zone: "az1".into(),
    }
}

fn instance(id: String, pool: PoolKey, state: InstanceState) -> Instance {
    Instance {
        id,
        pool,
        server_id: Some(format!("server-{}", uuid_like())),
        state,
        created_at: SystemTime::now(),
        ready_at: Some(SystemTime::now()),
        attempts: 1,
        last_error: None,
        request_id: None,
        mysql_addr: Some("10.0.0.7:3306".parse().expect("literal address")),
        image: Some("mysql-8.0".into()),
    }
}

fn allocation(request_id: String, state: AllocationState) -> Allocation {
    let mut allocation = Allocation::new(
        AllocationParams {
            request_id,
            tenant_project_id: "tenant-0001".into(),
            pool: pool(0),
            volume: VolumeRequest {
                source: VolumeSource::New {
                    size_gib: 20,
                    volume_type: None,
                },
                delete_on_release: true,
            },
            network: NetworkRequest {
                network_id: "net-0001".into(),
                subnet_id: None,
                fixed_ip: None,
            },
            labels: [("order".to_string(), "bench".to_string())].into(),
        },
        0,
    );
    allocation.state = state;
    allocation.instance_id = Some(uuid_like());
    allocation.volume_id = Some(uuid_like());
    allocation
}

/// A 36-character id, the length of the cloud's UUIDs.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{:036}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn fill(store: &SledStore, live: usize) -> anyhow::Result<()> {
    let ready_pool = pool(0);
    for n in 0..READY_IN_POOL {
        let ready = instance(
            format!("ready-{n:06}"),
            ready_pool.clone(),
            InstanceState::Ready,
        );
        store.cas_instance(None, Some(&ready)).await?;
    }
    for n in 0..live {
        let tenant = instance(format!("tenant-{n:08}"), pool(n), InstanceState::Allocated);
        store.cas_instance(None, Some(&tenant)).await?;
        let held = allocation(format!("order-live-{n:08}"), AllocationState::Allocated);
        store.cas_allocation(None, Some(&held)).await?;
        for k in 0..FINISHED_PER_LIVE {
            let done = allocation(format!("order-done-{n:08}-{k}"), AllocationState::Released);
            store.cas_allocation(None, Some(&done)).await?;
        }
    }
    for n in 0..UNFINISHED {
        let working = allocation(format!("order-open-{n:06}"), AllocationState::Allocating);
        store.cas_allocation(None, Some(&working)).await?;
    }
    store.flush().await?;
    Ok(())
}

async fn run(live: usize, calls: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let store = SledStore::open(dir.path())?;
    fill(&store, live).await?;

    let mut untouched = Vec::with_capacity(calls);
    let mut unfinished = Vec::with_capacity(calls);
    let mut counted = Vec::with_capacity(calls);
    let mut full = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let listed = store.list_untouched_instances(&pool(0)).await?;
        untouched.push(started.elapsed());
        ensure!(
            listed.len() == READY_IN_POOL,
            "listed {} untouched",
            listed.len()
        );

        let started = Instant::now();
        let listed = store.list_unfinished_allocations().await?;
        unfinished.push(started.elapsed());
        ensure!(
            listed.len() == UNFINISHED,
            "listed {} unfinished",
            listed.len()
        );

        let started = Instant::now();
        let counts = store.count_instances(&pool(0)).await?;
        counted.push(started.elapsed());
        let ready = counts.get(&InstanceState::Ready).copied().unwrap_or(0);
        ensure!(ready as usize == READY_IN_POOL, "counted {ready} ready");
    }
    for _ in 0..calls {
        // What a pool's status read before the counts were kept.
        let started = Instant::now();
        let listed = store.list_instances().await?;
        full.push(started.elapsed());
        ensure!(
            listed.len() == live + READY_IN_POOL,
            "listed {} instances",
            listed.len()
        );
    }
    drop(store);

    let started = Instant::now();
    let reopened = SledStore::open(dir.path())?;
    let open = started.elapsed();
    let listed = reopened.list_untouched_instances(&pool(0)).await?;
    ensure!(
        listed.len() == READY_IN_POOL,
        "after reopening, listed {} untouched",
        listed.len()
    );

    println!(
        "| {live} | {} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {open:.2?} |",
        live * (1 + FINISHED_PER_LIVE) + UNFINISHED,
        median(untouched),
        median(unfinished),
        median(counted),
        median(full),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "| live tenant databases | allocations stored | a pool's untouched instances (p50) | unfinished allocations (p50) | a pool's counts (p50) | every instance (p50) | reopen |\n|--:|--:|--:|--:|--:|--:|--:|"
    );
    for live in args.live {
        run(live, args.calls).await?;
    }
    Ok(())
}
