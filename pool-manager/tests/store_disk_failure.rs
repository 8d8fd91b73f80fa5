//! A sled store whose disk fails: the first write sled cannot make to its
//! log (a full disk, EIO; here a file size limit, which fails the write as
//! a full disk does) fails every later write and flush of the process, and
//! the store says it has failed. In a test binary of its own: the file size
//! limit is the whole process's.

mod common;

use common::{pool, spec};
use pool_manager::model::PoolRecord;
use pool_manager::store::{SledStore, Store, StoreError};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit, Signal};
use tokio::signal::unix::{signal, SignalKind};

/// A file size limit on this process, lifted when dropped (a failed
/// assertion too), so the temporary store can still be removed.
struct FileSizeLimit(Rlimit);

impl FileSizeLimit {
    fn set(bytes: u64) -> Self {
        let before = getrlimit(Resource::Fsize);
        setrlimit(
            Resource::Fsize,
            Rlimit {
                current: Some(bytes),
                maximum: before.maximum,
            },
        )
        .expect("lowering the file size limit");
        Self(before)
    }
}

impl Drop for FileSizeLimit {
    fn drop(&mut self) {
        setrlimit(Resource::Fsize, self.0).expect("restoring the file size limit");
    }
}

#[tokio::test]
async fn a_failed_log_write_marks_the_store_failed_and_only_a_reopen_writes_again() {
    // A write past the limit gets SIGXFSZ, whose default action ends the
    // process; caught (tokio's handler only records it), the write fails
    // EFBIG, as one to a full disk fails ENOSPC.
    let _xfsz = signal(SignalKind::from_raw(Signal::XFSZ.as_raw())).expect("catching SIGXFSZ");
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let mut record = PoolRecord::new(pool(), spec(1));
    store.put_pool(&record).await.unwrap();
    store.flush().await.unwrap();
    let failed = store.failed();
    assert!(failed.borrow().is_none(), "a sound store has not failed");

    // sled's log, written as it grows.
    let size = std::fs::metadata(dir.path().join("db")).unwrap().len();
    let limit = FileSizeLimit::set(size + 16 * 1024);
    let mut writes = 0;
    let first = loop {
        writes += 1;
        assert!(
            writes <= 10_000,
            "{writes} writes past the limit all flushed"
        );
        record.allocations_warm += 1;
        record.last_error = Some(format!("write {writes}: {}", "x".repeat(200)));
        if let Err(e) = store.put_pool(&record).await {
            break e;
        }
        if let Err(e) = store.flush().await {
            break e;
        }
    };
    drop(limit);

    let failure = failed
        .borrow()
        .clone()
        .expect("the store says it has failed");
    let StoreError::Io(first) = first else {
        panic!("not an I/O error: {first}");
    };
    assert_eq!(failure.to_string(), first.to_string(), "the first error");
    assert!(failure.to_string().contains("File too large"), "{failure}");
    // sled 0.34 keeps the first I/O error (`Config::set_global_error`) and
    // checks it before every log reservation and flush, until the store is
    // opened again: the disk is sound again, and still nothing is written.
    let flushed = store.flush().await;
    assert!(flushed.is_err(), "a flush after the failure: {flushed:?}");
    record.allocations_cold += 1;
    let written = store.put_pool(&record).await;
    assert!(written.is_err(), "a write after the failure: {written:?}");
    // Reads go on.
    assert!(store.get_pool(&pool()).await.unwrap().is_some());

    // Opened again (a restart), the store writes.
    drop(store);
    let store = SledStore::open(dir.path()).unwrap();
    store.put_pool(&record).await.unwrap();
    store.flush().await.unwrap();
    assert!(store.failed().borrow().is_none());
}
