//! Time to ready of one purchase: a warm hit (claim a Ready instance, attach
//! the tenant's volume and port) against a Trove-style cold create (boot,
//! wait for mysqld, then attach), on an unthrottled and an IOPS-throttled
//! cloud (`base_cloud`: lead time x5 when throttled).
//!
//! Purchases are made one at a time, each [`HOLD`] + [`REST`] after the one
//! before was answered (and, warm, once the pool has refilled), so none
//! waits for another: this measures the purchase path, not the pool's depth.
//!
//! The throttle (`SimConfig::iops_throttled`) stretches only the disk-bound
//! phases of a boot (Nova's build, mysqld's start); Cinder's create and
//! attach of the tenant's volume are control-plane calls it leaves alone, so
//! a throttled warm purchase takes what an unthrottled one does.

use crate::demand::{base_cloud, small, AZ};
use crate::memstore::MemStore;
use crate::replay::quantile;
use crate::report;
use cloudsim::{SimCloud, SimConfig};
use pool_manager::model::{
    AllocationParams, EmptyPoolPolicy, InstanceState, NetworkRequest, VolumeRequest, VolumeSource,
};
use pool_manager::{AllocateRequest, ManagerError, ManagerSettings, PoolManager};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The manager's status poll interval here: the product's default.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long each purchase holds its instance before releasing it.
pub const HOLD: Duration = Duration::from_secs(60);
/// The pause after each release before the next purchase (then, warm, the
/// wait for the pool to refill).
pub const REST: Duration = Duration::from_secs(9 * 60);
/// Ready instances a warm cell's pool keeps (0 for a cold cell).
pub const WARM_DEPTH: u32 = 2;
/// The longest a warm cell waits for its pool to refill before a purchase.
/// A throttled boot is ready after about 7.5 min; an hour is eight of them
/// back to back, so a pool still short then is not refilling at all (its
/// boots fail or are refused), and waiting longer would wait forever.
pub const REFILL_DEADLINE: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Warm,
    Cold,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Warm => "warm purchase",
            Path::Cold => "cold create (Trove-style)",
        }
    }
}

/// One row of the time-to-ready table: what is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub path: Path,
    pub throttled: bool,
    /// The tenant's volume exists already (attach only) or is created.
    pub existing_volume: bool,
}

impl Cell {
    /// The table's rows, in its order: warm with a new volume, warm with an
    /// existing one and cold, unthrottled then throttled.
    pub fn all() -> Vec<Cell> {
        [false, true]
            .into_iter()
            .flat_map(|throttled| {
                [(Path::Warm, false), (Path::Warm, true), (Path::Cold, false)].map(
                    |(path, existing_volume)| Cell {
                        path,
                        throttled,
                        existing_volume,
                    },
                )
            })
            .collect()
    }

    pub fn measure(self, purchases: usize, seed: u64) -> Result<Measured, TtrError> {
        measure(
            self.path,
            self.throttled,
            self.existing_volume,
            purchases,
            seed,
        )
    }

    /// The cell in words, for a line of its own.
    fn describe(self) -> String {
        format!(
            "{}, {}, {} tenant volume",
            self.path.name(),
            if self.throttled {
                "IOPS throttled"
            } else {
                "not throttled"
            },
            if self.existing_volume {
                "existing"
            } else {
                "new"
            }
        )
    }

    /// The row's first three columns.
    fn columns(self) -> String {
        format!(
            "| {} | {} | {} |",
            self.path.name(),
            if self.throttled { "yes" } else { "no" },
            if self.existing_volume {
                "existing (attach)"
            } else {
                "new (create + attach)"
            }
        )
    }
}

#[derive(Clone, Debug)]
pub struct Measured {
    pub path: Path,
    pub throttled: bool,
    /// The tenant's volume exists already (attach only) or is created.
    pub existing_volume: bool,
    pub times: Vec<Duration>,
}

impl Measured {
    /// `None` if nothing was measured.
    pub fn p(&self, q: f64) -> Option<Duration> {
        quantile(&self.times, q)
    }
}

/// Why a time-to-ready cell measured nothing.
#[derive(Debug, thiserror::Error)]
pub enum TtrError {
    #[error("the simulated cloud's paused-clock runtime could not be built: {0}; the machine is out of threads or file descriptors, so free some and run again")]
    Runtime(#[source] std::io::Error),
    #[error("the pool manager did not start on the simulated cloud: {0}; the benchmark's settings or cloud no longer suit the manager, so fix bench::ttr")]
    Start(#[source] ManagerError),
    #[error("the benchmark's pool could not be created or read: {0}; fix bench::ttr's pool spec for this build")]
    Pool(#[source] ManagerError),
    #[error(
        "before purchase {purchase} the pool did not refill to {depth} Ready instances within {} of simulated time ({counts}; last error: {last_error}): its boots fail or are refused, so look at the cloud's quotas and faults, or at a regression in the replenisher",
        humantime::format_duration(*waited)
    )]
    NotRefilled {
        purchase: usize,
        depth: u32,
        waited: Duration,
        /// The pool's instances by state, e.g. "ready 0, booting 1".
        counts: String,
        last_error: String,
    },
    #[error("purchase {purchase} failed: {source}; the pool manager refused a purchase the benchmark expects it to make, so this is a regression (or the benchmark's cloud changed)")]
    Purchase {
        purchase: usize,
        #[source]
        source: ManagerError,
    },
    #[error("purchase {purchase} was answered {got} where this cell measures {}; the pool's depth or policy changed under the benchmark, so fix bench::ttr", expected.name())]
    WrongPath {
        purchase: usize,
        expected: Path,
        got: &'static str,
    },
    #[error("releasing purchase {purchase} failed: {source}; a release the benchmark expects to work was refused, so this is a regression in the pool manager")]
    Release {
        purchase: usize,
        #[source]
        source: ManagerError,
    },
}

/// `base_cloud(seed)`, throttled or not, measured by [`measure_on`] on a
/// paused-clock runtime of its own.
pub fn measure(
    path: Path,
    throttled: bool,
    existing_volume: bool,
    purchases: usize,
    seed: u64,
) -> Result<Measured, TtrError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(TtrError::Runtime)?;
    let mut config = base_cloud(seed);
    config.iops_throttled = throttled;
    let times = runtime.block_on(measure_on(config, path, existing_volume, purchases, seed))?;
    Ok(Measured {
        path,
        throttled,
        existing_volume,
        times,
    })
}

/// The times to ready of `purchases` purchases on a cloud of `config`
/// (its pool `db.small` in [`AZ`]). Must run on a paused clock: it sleeps
/// [`REST`] between purchases.
pub async fn measure_on(
    config: SimConfig,
    path: Path,
    existing_volume: bool,
    purchases: usize,
    seed: u64,
) -> Result<Vec<Duration>, TtrError> {
    let sim = SimCloud::new(config);
    let manager = PoolManager::new(
        Arc::new(MemStore::default()),
        sim.clone(),
        Arc::new(sim.probe()),
        ManagerSettings {
            poll_interval: POLL_INTERVAL,
            reconcile_interval: Duration::from_secs(3600),
            instance_id_seed: Some(seed),
            ..ManagerSettings::default()
        },
    );
    manager.start().await.map_err(TtrError::Start)?;
    let times = purchase_all(&manager, &sim, path, existing_volume, purchases).await;
    // Its background tasks end with the runtime whatever this answers.
    let _ = manager.shutdown().await;
    times
}

async fn purchase_all(
    manager: &PoolManager,
    sim: &SimCloud,
    path: Path,
    existing_volume: bool,
    purchases: usize,
) -> Result<Vec<Duration>, TtrError> {
    let depth = match path {
        Path::Warm => WARM_DEPTH,
        Path::Cold => 0,
    };
    manager
        .create_pool(small(), crate::fixed_pool(depth, Duration::from_secs(3600)))
        .await
        .map_err(TtrError::Pool)?;
    let mut times = Vec::new();
    for i in 0..purchases {
        refilled(manager, i, depth).await?;
        let source = if existing_volume {
            VolumeSource::Existing {
                volume_id: sim.create_volume_for_test("tenant", AZ, 20),
            }
        } else {
            VolumeSource::New {
                size_gib: 20,
                volume_type: None,
            }
        };
        let id = format!("t{i}");
        let request = AllocateRequest {
            params: AllocationParams {
                request_id: id.clone(),
                tenant_project_id: "tenant".into(),
                pool: small(),
                volume: VolumeRequest {
                    source,
                    delete_on_release: true,
                },
                network: NetworkRequest {
                    network_id: "tenant-net".into(),
                    subnet_id: None,
                    fixed_ip: None,
                },
                labels: BTreeMap::new(),
            },
            empty_pool: EmptyPoolPolicy::ColdBoot,
            timeout: Some(Duration::from_secs(3600)),
        };
        let started = Instant::now();
        let allocation = manager
            .allocate(request)
            .await
            .map_err(|source| TtrError::Purchase {
                purchase: i,
                source,
            })?;
        times.push(started.elapsed());
        if allocation.warm_hit != (path == Path::Warm) {
            return Err(TtrError::WrongPath {
                purchase: i,
                expected: path,
                got: if allocation.warm_hit { "warm" } else { "cold" },
            });
        }
        tokio::time::sleep(HOLD).await;
        manager
            .release(&id, None)
            .await
            .map_err(|source| TtrError::Release {
                purchase: i,
                source,
            })?;
        tokio::time::sleep(REST).await;
    }
    Ok(times)
}

/// Waits until the pool has `depth` Ready instances, at most
/// [`REFILL_DEADLINE`].
async fn refilled(manager: &PoolManager, purchase: usize, depth: u32) -> Result<(), TtrError> {
    let deadline = Instant::now() + REFILL_DEADLINE;
    loop {
        let status = manager.get_pool(&small()).await.map_err(TtrError::Pool)?;
        let ready = status.count(InstanceState::Ready);
        if ready >= depth {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let others: Vec<String> = status
                .counts
                .iter()
                .filter(|(state, n)| **state != "ready" && **n > 0)
                .map(|(state, n)| format!("{state} {n}"))
                .collect();
            return Err(TtrError::NotRefilled {
                purchase,
                depth,
                waited: REFILL_DEADLINE,
                counts: std::iter::once(format!("ready {ready}"))
                    .chain(others)
                    .collect::<Vec<_>>()
                    .join(", "),
                last_error: status
                    .record
                    .last_error
                    .unwrap_or_else(|| "none recorded".into()),
            });
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// The "Time to ready of one purchase" section, as trace-replay's report
/// and the time-to-ready command print it: a row per cell, in `cells`'
/// order, then one line per cell that failed (its row shows "failed").
pub fn section(purchases: usize, cells: &[(Cell, Result<Measured, TtrError>)]) -> String {
    let mut md = String::new();
    let minutes = |d: Duration| d.as_secs() / 60;
    let _ = writeln!(
        md,
        "## Time to ready of one purchase\n\n{purchases} purchases per row, one at a time: each \
         begins {} min after the one before it was answered (that one is held {} min, then \
         released) and, in a warm row, once the pool has {WARM_DEPTH} Ready instances again.\n",
        minutes(HOLD + REST),
        minutes(HOLD),
    );
    let _ = writeln!(
        md,
        "| path | IOPS throttled | tenant volume | p50 | p99 |\n|---|---|---|--:|--:|"
    );
    for (cell, outcome) in cells {
        let (p50, p99) = match outcome {
            Ok(m) => (
                report::duration_or_na(m.p(0.5)),
                report::duration_or_na(m.p(0.99)),
            ),
            Err(_) => ("failed".to_string(), "failed".to_string()),
        };
        let _ = writeln!(md, "{} {p50} | {p99} |", cell.columns());
    }
    let _ = writeln!(md);
    for (cell, outcome) in cells {
        if let Err(e) = outcome {
            let _ = writeln!(md, "Failed: {}: {e}\n", cell.describe());
        }
    }
    md
}

/// The cells of `cells` that measured, for the acceptance check.
pub fn measured(cells: &[(Cell, Result<Measured, TtrError>)]) -> Vec<Measured> {
    cells
        .iter()
        .filter_map(|(_, m)| m.as_ref().ok())
        .cloned()
        .collect()
}

/// Length of the union of `intervals`: time during which at least one
/// was open (calls in flight in parallel count once).
pub fn busy_time<T>(mut intervals: Vec<(T, T)>) -> Duration
where
    T: Ord + Copy + std::ops::Sub<Output = Duration>,
{
    intervals.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(T, T)> = None;
    for (s, e) in intervals {
        current = match current {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((cs, ce)) = current {
        total += ce - cs;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cloud whose every boot is refused: the pool never refills.
    fn boots_refused() -> SimConfig {
        let mut config = base_cloud(1);
        config.quotas.max_instances = 0;
        config
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_that_never_refills_is_an_error_naming_its_counts() {
        let out = tokio::time::timeout(
            Duration::from_secs(6 * 3600),
            measure_on(boots_refused(), Path::Warm, false, 2, 1),
        )
        .await
        .expect("measure_on returns within 6 simulated hours");
        let err = out.expect_err("no purchase can be warm");
        let text = err.to_string();
        assert!(matches!(err, TtrError::NotRefilled { .. }), "{text}");
        assert!(text.contains("ready 0"), "{text}");
    }

    /// The purchase path polls the cloud at most this far apart
    /// (`poll_interval`, capped at 500 ms by the allocator), so a step is
    /// seen done at most this late.
    fn purchase_poll() -> Duration {
        POLL_INTERVAL.min(Duration::from_millis(500))
    }

    /// `sum` of simulated latencies, each stretched or shrunk by the
    /// cloud's jitter (`factor` = -1 or +1).
    fn jittered(sum: Duration, factor: f64) -> Duration {
        sum.mul_f64(1.0 + factor * base_cloud(1).jitter)
    }

    /// A warm purchase with a new volume waits at least for Cinder to create
    /// and attach it one after the other, and at most for every step of the
    /// purchase in sequence, each seen one poll late.
    #[test]
    fn a_warm_purchase_takes_its_volume_and_port_latencies() {
        let l = base_cloud(1).latencies;
        let fastest = jittered(l.volume_create + l.volume_attach, -1.0);
        let slowest = jittered(
            l.volume_create + l.volume_attach + l.port_create + l.port_attach,
            1.0,
        ) + purchase_poll() * 3;
        let m = measure(Path::Warm, false, false, 3, 1).expect("measured");
        let p50 = m.p(0.5).expect("3 purchases");
        assert!(
            (fastest..=slowest).contains(&p50),
            "p50 {p50:?} outside {fastest:?}..={slowest:?}"
        );

        // With the tenant's volume there already, only its attach remains.
        let fastest = jittered(l.volume_attach, -1.0);
        let slowest =
            jittered(l.volume_attach + l.port_create + l.port_attach, 1.0) + purchase_poll() * 2;
        let m = measure(Path::Warm, false, true, 3, 1).expect("measured");
        let p50 = m.p(0.5).expect("3 purchases");
        assert!(
            (fastest..=slowest).contains(&p50),
            "existing volume: p50 {p50:?} outside {fastest:?}..={slowest:?}"
        );
    }

    /// The throttle stretches the boot's disk-bound phases, not Cinder's
    /// control plane: docs/benchmarks.md says the throttled warm rows equal
    /// the unthrottled ones by construction, which this keeps true.
    #[test]
    fn the_throttle_leaves_a_warm_purchase_as_it_is() {
        let throttled = measure(Path::Warm, true, false, 3, 1).expect("measured");
        let calm = measure(Path::Warm, false, false, 3, 1).expect("measured");
        assert_eq!(throttled.times, calm.times);
    }

    /// A cold create under the throttle takes at least a throttled boot:
    /// Nova's build and mysqld's start, each stretched by its factor.
    #[test]
    fn a_throttled_cold_create_takes_at_least_a_throttled_boot() {
        let boot = base_cloud(1).boot;
        let throttled_boot = jittered(
            boot.t_alone.mul_f64(boot.throttled_nova_factor)
                + boot.mysqld_start.mul_f64(boot.throttled_mysqld_factor),
            -1.0,
        );
        let m = measure(Path::Cold, true, false, 2, 1).expect("measured");
        let p50 = m.p(0.5).expect("2 purchases");
        assert!(p50 > throttled_boot, "p50 {p50:?}, boot {throttled_boot:?}");
    }

    #[test]
    fn busy_time_counts_overlapping_and_touching_intervals_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let span = |a: u64, b: u64| (at(a), at(b));
        assert_eq!(busy_time::<Instant>(vec![]), Duration::ZERO);
        assert_eq!(
            busy_time(vec![span(0, 10)]),
            Duration::from_millis(10),
            "one call"
        );
        // Unsorted: 30..40 alone; 0..10 and 5..15 overlap, 15..20 touches
        // them, 2..3 lies inside: 0..20.
        assert_eq!(
            busy_time(vec![
                span(30, 40),
                span(5, 15),
                span(0, 10),
                span(15, 20),
                span(2, 3)
            ]),
            Duration::from_millis(30)
        );
        // A gap between two calls is not counted.
        assert_eq!(
            busy_time(vec![span(0, 1), span(2, 3)]),
            Duration::from_millis(2)
        );
    }

    /// Both time-to-ready tables (this one and testbed-ttr's) use the
    /// nearest rank: p50 of 20 is the 10th value, p90 the 18th.
    #[test]
    fn percentiles_are_nearest_rank() {
        let twenty: Vec<Duration> = (1..=20).map(Duration::from_secs).collect();
        assert_eq!(quantile(&twenty, 0.5), Some(Duration::from_secs(10)));
        assert_eq!(quantile(&twenty, 0.9), Some(Duration::from_secs(18)));
        assert_eq!(quantile(&twenty, 1.0), Some(Duration::from_secs(20)));
        let calls: Vec<usize> = vec![17, 14, 15, 14];
        assert_eq!(quantile(&calls, 0.5), Some(14));
        assert_eq!(quantile::<usize>(&[], 0.5), None);
    }

    #[test]
    fn a_failed_cell_shows_in_its_row_and_says_why() {
        let warm = Cell {
            path: Path::Warm,
            throttled: false,
            existing_volume: false,
        };
        let cold = Cell {
            path: Path::Cold,
            throttled: true,
            existing_volume: false,
        };
        let cells = [
            (
                warm,
                Ok(Measured {
                    path: Path::Warm,
                    throttled: false,
                    existing_volume: false,
                    times: vec![Duration::from_secs(5), Duration::from_secs(6)],
                }),
            ),
            (
                cold,
                Err(TtrError::WrongPath {
                    purchase: 3,
                    expected: Path::Cold,
                    got: "warm",
                }),
            ),
        ];
        let md = section(2, &cells);
        assert!(
            md.contains("| warm purchase | no | new (create + attach) | 5.0 s | 6.0 s |\n"),
            "{md}"
        );
        assert!(
            md.contains(
                "| cold create (Trove-style) | yes | new (create + attach) | failed | failed |\n"
            ),
            "{md}"
        );
        assert!(
            md.contains("Failed: cold create (Trove-style), IOPS throttled, new tenant volume: purchase 3 was answered warm"),
            "{md}"
        );
    }
}
