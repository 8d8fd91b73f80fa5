//! cloudsim: a simulated OpenStack for warmpool's tests, demo and benchmarks.
//!
//! One model of a cloud, calibrated on the field reports in
//! `calibration.md`: availability zones of compute hosts where concurrent
//! boots contend (`T_alone + k * n`), IOPS throttling that stretches boots,
//! quotas, seeded jitter, and injected faults. Faces over that model:
//!
//! - in-process: [`SimCloud`] implements [`pool_manager::cloud::Cloud`];
//! - HTTP: [`http::HttpFace`] serves the Keystone/Nova/Cinder/Neutron/Glance
//!   subset warmpool's OpenStack driver uses, over the same model.
//!
//! Every simulated VM answers the MySQL greeting once its mysqld is ready,
//! either on a real localhost socket (`listeners: true`) or through
//! [`SimProbe`] (`listeners: false`, for paused-clock tests).
//!
//! All time is tokio time, so the whole cloud runs on a paused clock:
//!
//! ```no_run
//! # async fn demo() {
//! use cloudsim::{SimCloud, SimConfig};
//! use pool_manager::cloud::Cloud;
//! let cloud = SimCloud::new(SimConfig::deterministic());
//! cloud.faults().error_next_boots(1, "NoValidHost");
//! let probe = cloud.probe();
//! let as_trait: std::sync::Arc<dyn Cloud> = cloud.clone();
//! # let _ = (probe, as_trait);
//! # }
//! ```

mod config;
pub mod http;
mod inprocess;
mod model;
mod mysql;
mod probe;
mod sim;

pub use config::{
    check_time_scale, AzConfig, BootModel, FlavorSize, FlavorSpec, Latencies, Quotas, RateLimit,
    SecurityGroupConfig, SimConfig, SimConfigError, SimNetwork, DEFAULT_FLAVOR_SIZE,
    MAX_TIME_SCALE,
};
pub use model::{HostLoad, SimServer};
pub use mysql::greeting_packet;
pub use probe::SimProbe;
pub use sim::{Faults, SimCloud};
