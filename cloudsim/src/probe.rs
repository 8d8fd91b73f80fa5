//! `SimProbe`: a `pool_manager::probe::Probe` that asks the model instead of
//! opening a socket, so paused-clock tests and big benchmarks (listeners off)
//! can still wait for mysqld. It answers exactly as the real listener would:
//! the greeting's version once that server's mysqld is ready, otherwise
//! "connection refused".

use crate::sim::{Inner, SimCloud};
use async_trait::async_trait;
use pool_manager::probe::{Probe, ProbeError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

#[derive(Clone)]
pub struct SimProbe {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimProbe").finish_non_exhaustive()
    }
}

impl SimProbe {
    pub fn new(cloud: &SimCloud) -> Self {
        Self {
            inner: cloud.inner.clone(),
        }
    }
}

impl SimCloud {
    /// A probe that answers from this cloud's model (no sockets).
    pub fn probe(&self) -> SimProbe {
        SimProbe::new(self)
    }
}

#[async_trait]
impl Probe for SimProbe {
    async fn probe(&self, addr: SocketAddr) -> Result<String, ProbeError> {
        let now = Instant::now();
        if self.inner.lock_at(now).mysqld_ready_at_addr(addr, now) {
            Ok(self.inner.mysql_version.clone())
        } else {
            Err(ProbeError::Connect {
                addr,
                reason: "Connection refused (os error 111)".into(),
            })
        }
    }
}
