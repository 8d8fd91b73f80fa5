//! Opening a data dir another handle still holds: the store waits for the
//! lock, then either opens or says who holds it. sled lets go of its lock a
//! moment after the last handle is dropped, so without the wait a restart in
//! the same process fails at random.

mod common;

use common::{pool, spec};
use pool_manager::model::PoolRecord;
use pool_manager::store::{SledStore, Store, StoreError};
use std::time::Duration;

#[tokio::test]
async fn a_held_store_is_reported_as_locked_with_the_dir_in_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let _held = SledStore::open(dir.path()).unwrap();

    let Err(err) = SledStore::open_waiting(dir.path(), Duration::from_millis(100)) else {
        panic!("a second handle opened a locked store");
    };
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("another warmpoold"), "{message}");
}

#[tokio::test]
async fn open_waits_for_the_previous_handle_to_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let first = SledStore::open(dir.path()).unwrap();
    let record = PoolRecord::new(pool(), spec(1));
    first.put_pool(&record).await.unwrap();
    first.flush().await.unwrap();

    // The second open starts while the first handle still holds the lock.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(first);
    });
    let second = SledStore::open_waiting(dir.path(), Duration::from_secs(30)).unwrap();
    releaser.join().unwrap();
    assert_eq!(second.get_pool(&pool()).await.unwrap(), Some(record));
}
