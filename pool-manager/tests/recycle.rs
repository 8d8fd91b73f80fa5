//! Retiring Ready instances on the paused clock: those above a lowered
//! `max_ready`, and those older than `max_age` once their replacements are
//! Ready, so a pool never dips below its target for it.

mod common;

use common::*;
use pool_manager::events::MarkProof;
use pool_manager::model::{EmptyPoolPolicy, InstanceState, Target};
use std::collections::BTreeSet;
use std::time::Duration;

async fn ready_ids(manager: &pool_manager::PoolManager) -> BTreeSet<String> {
    manager
        .list_instances(Some(&pool()))
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.state == InstanceState::Ready)
        .map(|i| i.id)
        .collect()
}

/// A started manager with one pool of `target` whose instances age out
/// after `max_age`, all Ready; `max_ready` when given, else `spec`'s.
async fn started_with_max_age(
    sim: &std::sync::Arc<cloudsim::SimCloud>,
    target: u32,
    max_age: Duration,
    max_ready: Option<u32>,
) -> pool_manager::PoolManager {
    let manager = manager_on(sim, temp_store());
    manager.start().await.unwrap();
    let mut spec = spec(target);
    spec.max_age = Some(max_age);
    spec.max_ready = max_ready.unwrap_or(spec.max_ready);
    manager.create_pool(pool(), spec).await.unwrap();
    wait_ready(&manager, target).await;
    manager
}

/// Also in a paused pool: it boots nothing, but it keeps to max_ready (its
/// instances stayed, idle, until it was resumed).
#[tokio::test(start_paused = true)]
async fn lowering_max_ready_retires_the_oldest_ready_instances() {
    for paused in [false, true] {
        lowering_max_ready_retires(paused).await;
    }
}

async fn lowering_max_ready_retires(paused: bool) {
    let sim = sim();
    let manager = started(&sim, temp_store(), 4).await;
    let mut oldest_first = manager.list_instances(Some(&pool())).await.unwrap();
    oldest_first.sort_by_key(|i| i.ready_at);
    assert_eq!(sim.servers().len(), 4);

    manager
        .update_pool(&pool(), move |s| {
            s.paused = paused;
            s.min_ready = 1;
            s.max_ready = 2;
            s.target = Target::Fixed(1);
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;

    let kept = ready_ids(&manager).await;
    assert_eq!(kept.len(), 2, "paused {paused}: {kept:?}");
    let (kept_at, gone_at): (Vec<_>, Vec<_>) =
        oldest_first.iter().partition(|i| kept.contains(&i.id));
    assert_eq!(kept_at.len(), 2, "only original instances are kept");
    assert!(
        gone_at.iter().map(|i| i.ready_at).max() <= kept_at.iter().map(|i| i.ready_at).min(),
        "the oldest go"
    );
    assert_eq!(sim.servers().len(), 2, "their servers are deleted");
    assert_consistent(&sim, &manager).await;

    // Raising it again does not bring them back by itself: the target is 1.
    manager
        .update_pool(&pool(), |s| s.max_ready = 8)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(ready_ids(&manager).await, kept);
}

/// Each retirement over max_ready is judged by the max_ready in force when
/// its turn comes: raised again while the step waited on an earlier
/// retirement's delete (a cloud call), the rest stay. The step used to
/// retire them by the max_ready it began with, leaving one of three.
#[tokio::test(start_paused = true)]
async fn raising_max_ready_again_mid_retirement_keeps_the_rest() {
    for paused in [false, true] {
        raising_max_ready_mid_retirement(paused).await;
    }
}

async fn raising_max_ready_mid_retirement(paused: bool) {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 4).await;
    let deleting = cloud.hold_next("delete_server", At::Before);
    manager
        .update_pool(&pool(), move |s| {
            s.paused = paused;
            s.min_ready = 1;
            s.max_ready = 1;
            s.target = Target::Fixed(1);
        })
        .await
        .unwrap();
    deleting.reached().await;
    manager
        .update_pool(&pool(), |s| s.max_ready = 4)
        .await
        .unwrap();
    deleting.release();
    // Well within a cooldown: the surplus above the target stays too.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let kept = ready_ids(&manager).await;
    assert_eq!(kept.len(), 3, "paused {paused}: {kept:?}");
    assert_eq!(sim.servers().len(), 3, "paused {paused}");
    assert_consistent(&sim, &manager).await;
}

/// Also when the target is `max_ready` itself: the replacements booting
/// next to the expired instances are not a reason to retire those early.
#[tokio::test(start_paused = true)]
async fn instances_older_than_max_age_are_replaced_before_they_are_retired() {
    for max_ready in [None, Some(2)] {
        replaced_before_retired(max_ready).await;
    }
}

async fn replaced_before_retired(max_ready: Option<u32>) {
    let sim = sim();
    let manager = started_with_max_age(&sim, 2, Duration::from_secs(10 * 60), max_ready).await;
    let first = ready_ids(&manager).await;
    assert_eq!(first.len(), 2);

    // The originals expire at 10 minutes, their replacements take about a
    // minute to boot.
    let (fewest_ready, most_servers) = watch_pool(&manager, &sim, 14 * 60).await;
    let now = ready_ids(&manager).await;
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.is_disjoint(&first), "the originals are gone: {now:?}");
    assert_eq!(
        fewest_ready, 2,
        "max_ready {max_ready:?}: the pool never dipped below its target"
    );
    assert_eq!(most_servers, 4, "replacements first, then the retirements");
    assert_eq!(sim.servers().len(), 2);
    assert_consistent(&sim, &manager).await;
}

#[tokio::test(start_paused = true)]
async fn a_purchase_still_gets_an_expired_instance_that_was_not_yet_replaced() {
    let sim = sim();
    let manager = started_with_max_age(&sim, 1, Duration::from_secs(600), None).await;
    let original = ready_ids(&manager).await;
    // Expired, its replacement booting: still a warm instance for a buyer.
    tokio::time::sleep(Duration::from_secs(605)).await;
    let done = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(done.warm_hit);
    let taken = done.instance_id.clone().expect("an instance");
    assert!(original.contains(&taken), "{done:?}");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_consistent(&sim, &manager).await;
}

/// A started manager with no pool yet, booting one instance of a pool at
/// a time.
async fn started_one_boot_at_a_time(
    sim: &std::sync::Arc<cloudsim::SimCloud>,
) -> pool_manager::PoolManager {
    let manager = pool_manager::PoolManager::new(
        temp_store(),
        sim.clone(),
        std::sync::Arc::new(sim.probe()),
        pool_manager::ManagerSettings {
            max_concurrent_boots: 1,
            ..settings()
        },
    );
    manager.start().await.unwrap();
    manager
}

/// cloudsim with a second image, and two the tests boot every pool from.
fn sim_with_images() -> std::sync::Arc<cloudsim::SimCloud> {
    cloudsim::SimCloud::new(cloudsim::SimConfig {
        images: ["mysql-8.0", "mysql-8.4", "golden", "golden-2"]
            .map(String::from)
            .to_vec(),
        ..sim().config()
    })
}

/// The pool's fewest Ready instances and the cloud's most servers, looked
/// at every simulated second for `seconds`.
async fn watch_pool(
    manager: &pool_manager::PoolManager,
    sim: &cloudsim::SimCloud,
    seconds: u32,
) -> (u32, usize) {
    let (mut fewest_ready, mut most_servers) = (u32::MAX, 0);
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = manager.get_pool(&pool()).await.unwrap();
        fewest_ready = fewest_ready.min(status.count(InstanceState::Ready));
        most_servers = most_servers.max(sim.servers().len());
    }
    (fewest_ready, most_servers)
}

/// Every server of the cloud boots `image`, and every instance of the pool
/// records it.
async fn assert_all_of_image(
    manager: &pool_manager::PoolManager,
    sim: &cloudsim::SimCloud,
    image: &str,
) {
    let servers = sim.servers();
    assert!(servers.iter().all(|s| s.image == image), "{servers:?}");
    for instance in manager.list_instances(Some(&pool())).await.unwrap() {
        assert_eq!(instance.image.as_deref(), Some(image), "{instance:?}");
    }
}

/// A new image (a patched MySQL) reaches the pool without waiting for a
/// `max_age` (there is none here): the Ready instances of the old image are
/// replaced, and retired only once their replacements are Ready, so the
/// pool never dips below its target; the new servers boot the new image.
#[tokio::test(start_paused = true)]
async fn changing_the_image_replaces_the_ready_instances_before_retiring_them() {
    let sim = sim_with_images();
    let manager = started(&sim, temp_store(), 2).await;
    let first = ready_ids(&manager).await;
    assert!(sim.servers().iter().all(|s| s.image == "mysql-8.0"));

    manager
        .update_pool(&pool(), |s| s.image = "mysql-8.4".into())
        .await
        .unwrap();
    let (fewest_ready, most_servers) = watch_pool(&manager, &sim, 4 * 60).await;
    let now = ready_ids(&manager).await;
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.is_disjoint(&first), "the old image's are gone: {now:?}");
    assert_eq!(fewest_ready, 2, "the pool never dipped below its target");
    assert_eq!(most_servers, 4, "replacements first, then the retirements");
    assert_eq!(sim.servers().len(), 2);
    assert_all_of_image(&manager, &sim, "mysql-8.4").await;
    assert_consistent(&sim, &manager).await;
}

/// Renewal never empties a pool: an outdated instance is retired only
/// while the fresh supply meets the target. Each retirement waits for the
/// cloud's delete; purchases taking the fresh instances meanwhile used to
/// leave the step retiring the next outdated one all the same, on the
/// listing it started from, and the pool with nothing Ready. Also with
/// max_ready at the target, where the old-image instances are over the cap
/// as well once their replacements stand: a retirement for the cap is
/// judged again when its turn comes too.
#[tokio::test(start_paused = true)]
async fn renewal_keeps_an_outdated_instance_that_purchases_now_need() {
    for max_ready in [None, Some(2)] {
        purchases_during_renewal(max_ready).await;
    }
}

async fn purchases_during_renewal(max_ready: Option<u32>) {
    let sim = sim_with_images();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 2).await;
    if let Some(max_ready) = max_ready {
        manager
            .update_pool(&pool(), move |s| s.max_ready = max_ready)
            .await
            .unwrap();
    }
    let held = cloud.hold_next("delete_server", At::Before);
    manager
        .update_pool(&pool(), |s| s.image = "mysql-8.4".into())
        .await
        .unwrap();
    // Both replacements are Ready: the first old-image instance is being
    // deleted when two purchases take the fresh ones.
    held.reached().await;
    for id in ["p1", "p2"] {
        let taken = manager
            .allocate(request(id, new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
        assert!(taken.warm_hit);
    }
    held.release();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let ready = manager
        .get_pool(&pool())
        .await
        .unwrap()
        .count(InstanceState::Ready);
    assert_eq!(
        ready, 1,
        "max_ready {max_ready:?}: the other old-image instance still serves"
    );
    // Once replaced again, it goes.
    tokio::time::sleep(Duration::from_secs(4 * 60)).await;
    assert_all_of_image(&manager, &sim, "mysql-8.4").await;
    assert_consistent(&sim, &manager).await;
}

/// A boot of the new image that a purchase takes before the next step is
/// no replacement: the old image's instances still serve until one stands.
/// Each boot reaching Ready used to be counted as a replacement all the
/// same, and the step retired an outdated instance while the pool held its
/// target only by counting a boot still in flight (here the other
/// replacement): the pool had one Ready instance fewer to sell until the
/// boots landed (at a target of 1, with the purchase's refill in flight,
/// none).
#[tokio::test(start_paused = true)]
async fn a_replacement_a_purchase_took_retires_no_outdated_instance() {
    let sim = sim_with_images();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 2).await;
    let old = ready_ids(&manager).await;
    // One of the two replacements stays in flight.
    let held_boot = cloud.hold_next("create_server", At::Before);
    manager
        .update_pool(&pool(), |s| s.image = "mysql-8.4".into())
        .await
        .unwrap();
    held_boot.reached().await;
    // A purchase that claims as soon as the other replacement is Ready,
    // before the step that hears of it (a step waits a second after a
    // change).
    let held_port = cloud.hold_next("create_port", At::After);
    let mut order = request("p1", new_volume(), EmptyPoolPolicy::FailFast);
    order.timeout = Some(Duration::from_secs(15 * 60));
    let purchase = spawn_allocate(&manager, order);
    held_port.reached().await;
    let fresh_ready = || async {
        manager
            .list_instances(Some(&pool()))
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.state == InstanceState::Ready && i.image.as_deref() == Some("mysql-8.4"))
    };
    let mut fresh = None;
    for _ in 0..60_000 {
        fresh = fresh_ready().await;
        if fresh.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fresh = fresh.expect("the other replacement becomes Ready");
    held_port.release();
    let done = purchase.await.unwrap().unwrap();
    assert_eq!(done.instance_id.as_deref(), Some(fresh.id.as_str()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        ready_ids(&manager).await,
        old,
        "both old-image instances still serve: no replacement stands"
    );
    held_boot.release();
    tokio::time::sleep(Duration::from_secs(4 * 60)).await;
    let now = ready_ids(&manager).await;
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.is_disjoint(&old), "replaced once they stand: {now:?}");
    assert_consistent(&sim, &manager).await;
}

/// What is compared is the image the cloud boots: with one image for every
/// pool (the OpenStack driver's `image` override), a pool's own image
/// boots nothing, and changing it replaces nothing; a new override (a
/// restart with another one) replaces every pool's Ready instances.
#[tokio::test(start_paused = true)]
async fn the_image_compared_is_the_one_the_cloud_boots() {
    let sim = sim_with_images();
    let cloud = GatedCloud::new(&sim);
    cloud.boot_every_pool_from(Some("golden"));
    let manager = started_over(&cloud, temp_store(), 2).await;
    let first = ready_ids(&manager).await;
    assert!(sim.servers().iter().all(|s| s.image == "golden"));

    manager
        .update_pool(&pool(), |s| s.image = "mysql-8.4".into())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4 * 60)).await;
    assert_eq!(ready_ids(&manager).await, first, "nothing replaced");
    assert_eq!(sim.servers().len(), 2);

    cloud.boot_every_pool_from(Some("golden-2"));
    let (fewest_ready, _) = watch_pool(&manager, &sim, 4 * 60).await;
    let now = ready_ids(&manager).await;
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.is_disjoint(&first), "{now:?}");
    assert_eq!(fewest_ready, 2);
    assert_all_of_image(&manager, &sim, "golden-2").await;
}

/// While an image change is under way, a purchase gets an instance of the
/// new image when one is Ready, not the oldest of the old image's: the
/// change is there for the next tenant.
#[tokio::test(start_paused = true)]
async fn a_purchase_during_an_image_change_gets_the_new_image_first() {
    let sim = sim_with_images();
    let manager = started_one_boot_at_a_time(&sim).await;
    manager.create_pool(pool(), spec(3)).await.unwrap();
    wait_ready(&manager, 3).await;
    manager
        .update_pool(&pool(), |s| s.image = "mysql-8.4".into())
        .await
        .unwrap();

    // One replacement at a time: the first is Ready beside old ones.
    let images_ready = || async {
        let mut images: Vec<Option<String>> = manager
            .list_instances(Some(&pool()))
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.state == InstanceState::Ready)
            .map(|i| i.image)
            .collect();
        images.sort();
        images
    };
    let mut ready = Vec::new();
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ready = images_ready().await;
        if ready.contains(&Some("mysql-8.4".into())) {
            break;
        }
    }
    assert!(
        ready.contains(&Some("mysql-8.0".into())) && ready.contains(&Some("mysql-8.4".into())),
        "{ready:?}"
    );
    let done = manager
        .allocate(request("order-1", new_volume(), EmptyPoolPolicy::FailFast))
        .await
        .unwrap();
    assert!(done.warm_hit);
    let taken = done.instance_id.clone().expect("an instance");
    let instance = manager
        .list_instances(Some(&pool()))
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == taken)
        .expect("listed");
    assert_eq!(instance.image.as_deref(), Some("mysql-8.4"), "{ready:?}");
}

/// Instances recorded before warmpool kept their image (an upgrade) are
/// taken to be of the pool's image: the upgrade replaces nothing, and an
/// image change after it replaces them. Also in a pool paused over the
/// upgrade and the change: only a running pool's step used to name the
/// image, so the resumed pool's first step named the new one in records
/// of servers still on the old, and they were never replaced.
#[tokio::test(start_paused = true)]
async fn instances_recorded_without_their_image_are_renewed_by_a_later_change() {
    for paused in [false, true] {
        renewed_by_a_later_change(paused).await;
    }
}

async fn renewed_by_a_later_change(paused: bool) {
    let sim = sim_with_images();
    let store = temp_store();
    let manager = started(&sim, store.clone(), 2).await;
    let first = ready_ids(&manager).await;
    manager
        .update_pool(&pool(), move |s| s.paused = paused)
        .await
        .unwrap();
    for instance in manager.list_instances(Some(&pool())).await.unwrap() {
        let legacy = pool_manager::model::Instance {
            image: None,
            ..instance.clone()
        };
        assert!(store
            .cas_instance(Some(&instance), Some(&legacy))
            .await
            .unwrap());
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        ready_ids(&manager).await,
        first,
        "paused {paused}: the upgrade replaced nothing"
    );
    assert_all_of_image(&manager, &sim, "mysql-8.0").await;

    manager
        .update_pool(&pool(), |s| s.image = "mysql-8.4".into())
        .await
        .unwrap();
    manager
        .update_pool(&pool(), |s| s.paused = false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4 * 60)).await;
    let now = ready_ids(&manager).await;
    assert_eq!(now.len(), 2, "paused {paused}: {now:?}");
    assert!(now.is_disjoint(&first), "paused {paused}: {now:?}");
    assert_all_of_image(&manager, &sim, "mysql-8.4").await;
    assert_consistent(&sim, &manager).await;
}

/// A renewal is judged again by the pool as it is when each retirement's
/// turn comes: a max_age (or an image) change reverted while the step
/// waited on an earlier retirement's delete leaves the rest, no longer
/// outdated, Ready. The step used to retire them all the same (the fresh
/// supply met the target), deleting a server the pool wants.
#[tokio::test(start_paused = true)]
async fn a_renewal_reverted_mid_retirement_keeps_the_rest() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 2).await;
    let first = ready_ids(&manager).await;
    tokio::time::sleep(Duration::from_secs(11 * 60)).await;
    let deleting = cloud.hold_next("delete_server", At::Before);
    manager
        .update_pool(&pool(), |s| {
            s.max_age = Some(pool_manager::model::MIN_MAX_AGE)
        })
        .await
        .unwrap();
    // Both originals expired: replaced, then the first one's delete waits.
    deleting.reached().await;
    manager
        .update_pool(&pool(), |s| s.max_age = None)
        .await
        .unwrap();
    deleting.release();
    // Well within a cooldown: the surplus above the target stays.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let now = ready_ids(&manager).await;
    assert_eq!(now.len(), 3, "{now:?}");
    assert_eq!(
        now.intersection(&first).count(),
        1,
        "one original was retired before the revert, the other stays: {now:?}"
    );
    assert_eq!(sim.servers().len(), 3);
    assert_consistent(&sim, &manager).await;
}

/// A retirement the cloud refuses (the server's delete fails) fails that
/// step, not the pool's replenisher: the next steps retire the rest of what
/// is above the lowered max_ready, the reconciler deletes the refused
/// servers once the cloud lets it, and the pool still refills.
#[tokio::test(start_paused = true)]
async fn a_refused_retirement_does_not_stop_the_replenisher() {
    use std::sync::atomic::Ordering;
    let sim = sim();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "delete_server",
        pool_manager::cloud::CloudError::Fatal("server is locked".into()),
        false,
    );
    let manager = started_over(&cloud, temp_store(), 4).await;

    refusing.store(true, Ordering::SeqCst);
    manager
        .update_pool(&pool(), |s| {
            s.min_ready = 1;
            s.max_ready = 2;
            s.target = Target::Fixed(1);
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(ready_ids(&manager).await.len(), 2);
    assert_eq!(sim.servers().len(), 4, "the deletes were refused");

    refusing.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    assert_eq!(sim.servers().len(), 2);
    assert_consistent(&sim, &manager).await;

    for order in ["order-1", "order-2"] {
        manager
            .allocate(request(order, new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
    }
    wait_ready(&manager, 1).await;
}

/// A retirement's or a drain's delete the cloud refuses was only logged:
/// the pool showed `deleting` instances and nothing saying why. The
/// refusal is the instance's last error, after why it was being deleted,
/// and the pool's.
#[tokio::test(start_paused = true)]
async fn a_refused_retirement_or_drain_shows_why_on_the_instance_and_the_pool() {
    use std::sync::atomic::Ordering;
    for drain in [false, true] {
        let sim = sim();
        let (cloud, refusing) = GatedCloud::refusing(
            &sim,
            "delete_server",
            pool_manager::cloud::CloudError::Fatal("server is locked".into()),
            false,
        );
        let manager = started_over(&cloud, temp_store(), 2).await;
        refusing.store(true, Ordering::SeqCst);
        let why = if drain {
            manager.delete_pool(&pool()).await.unwrap();
            "pool drained"
        } else {
            manager
                .update_pool(&pool(), |s| {
                    s.min_ready = 1;
                    s.max_ready = 1;
                })
                .await
                .unwrap();
            "retired: above the pool's max_ready of 1"
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        let instances = manager.list_instances(Some(&pool())).await.unwrap();
        let deleting: Vec<_> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Deleting)
            .collect();
        assert_eq!(deleting.len(), 1 + usize::from(drain), "{instances:?}");
        for instance in deleting {
            let shown = instance.last_error.as_deref().unwrap_or_default();
            assert!(
                shown.starts_with(why)
                    && shown.contains("server is locked")
                    && shown.contains("unlock or fix the server"),
                "drain {drain}: {shown}"
            );
        }
        let status = manager.get_pool(&pool()).await.unwrap();
        let shown = status.record.last_error.clone().unwrap_or_default();
        assert!(shown.contains("server is locked"), "drain {drain}: {shown}");
        assert!(status.record.last_error_at.is_some());

        // Shown once: a pass refused the same way writes nothing.
        tokio::time::sleep(Duration::from_secs(5)).await;
        manager.reconcile().await.unwrap();
        let again = manager.get_pool(&pool()).await.unwrap().record;
        assert_eq!(again.last_error_at, status.record.last_error_at);
        refusing.store(false, Ordering::SeqCst);
        manager.reconcile().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(sim.servers().len(), usize::from(!drain));
        assert_consistent(&sim, &manager).await;
    }
}

/// The WARN lines of `logs` saying the reconciler's delete of an instance
/// failed.
fn delete_warnings(logs: &Logs) -> usize {
    logs.text()
        .lines()
        .filter(|l| {
            l.contains(" WARN ")
                && l.contains("deleting instance")
                && l.contains("failed; the next reconcile pass retries")
        })
        .count()
}

/// A delete the cloud keeps refusing (a locked server) was warned of by
/// every reconcile pass, each minute: 1,440 lines a day for one stuck
/// server. It is warned of once per item and problem (then at debug), with
/// a reminder hourly while it lasts, and again once a fixed item fails anew.
#[tokio::test(start_paused = true)]
async fn a_delete_refused_at_every_pass_is_warned_of_once_an_hour() {
    use std::sync::atomic::Ordering;
    let logs = Logs::capture();
    let sim = sim();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "delete_server",
        pool_manager::cloud::CloudError::Conflict("Instance is locked".into()),
        false,
    );
    let manager = started_over(&cloud, temp_store(), 2).await;
    refusing.store(true, Ordering::SeqCst);
    manager
        .update_pool(&pool(), |s| {
            s.min_ready = 1;
            s.max_ready = 1;
            s.target = Target::Fixed(1);
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(sim.servers().len(), 2, "the delete was refused");

    for _ in 0..10 {
        manager.reconcile().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    assert_eq!(sim.servers().len(), 2, "still refused");
    assert_eq!(delete_warnings(&logs), 1, "{}", logs.text());

    // Still refused an hour on: reminded.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    manager.reconcile().await.unwrap();
    manager.reconcile().await.unwrap();
    assert_eq!(delete_warnings(&logs), 2, "{}", logs.text());
    refusing.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    assert_eq!(sim.servers().len(), 1);
    assert_consistent(&sim, &manager).await;
}

/// A retirement's delete that fails for now (a 429 whose Retry-After
/// outlasts the cleanup deadline) is no refusal: the instance says the
/// delete is tried again, not to unlock the server. And a degraded pool's
/// last error, which says why it is degraded, stays: the delete's is the
/// instance's. Both were written as "the cloud refused to delete ...
/// unlock or fix the server", the pool's over its cause.
#[tokio::test(start_paused = true)]
async fn a_throttled_retirement_delete_says_it_is_retried_and_keeps_a_degraded_pools_cause() {
    use std::sync::atomic::Ordering;
    let sim = sim();
    let (cloud, throttling) = GatedCloud::refusing(
        &sim,
        "delete_server",
        pool_manager::cloud::CloudError::Throttled {
            retry_after: Some(Duration::from_secs(3600)),
            message: "rate limit of DELETE servers reached".into(),
            unavailable: false,
        },
        false,
    );
    let manager = started_over(&cloud, temp_store(), 2).await;
    let cause = "flavor db.small is disabled in the cloud";
    manager
        .mark_unusable(&pool(), cause, MarkProof::RecheckAndBoot)
        .await
        .unwrap();
    throttling.store(true, Ordering::SeqCst);
    manager
        .update_pool(&pool(), |s| {
            s.min_ready = 1;
            s.max_ready = 1;
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let instances = manager.list_instances(Some(&pool())).await.unwrap();
    let deleting: Vec<_> = instances
        .iter()
        .filter(|i| i.state == InstanceState::Deleting)
        .collect();
    assert_eq!(deleting.len(), 1, "{instances:?}");
    let retired = deleting[0].server_id.clone().expect("the retired server");
    let shown = deleting[0].last_error.as_deref().unwrap_or_default();
    assert!(
        shown.starts_with("retired: above the pool's max_ready of 1"),
        "{shown}"
    );
    assert!(
        shown.contains("failed for now")
            && shown.contains("rate limit of DELETE servers reached")
            && shown.contains("each reconcile pass tries again"),
        "{shown}"
    );
    assert!(
        !shown.contains("refused") && !shown.contains("unlock"),
        "{shown}"
    );
    let status = manager.get_pool(&pool()).await.unwrap();
    assert!(status.health.degraded);
    assert_eq!(status.record.last_error.as_deref(), Some(cause));

    throttling.store(false, Ordering::SeqCst);
    manager.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // The retired server is gone; the pool's other one stays, and so does
    // the one it boots, degraded at its target, to find the cloud fixed.
    let servers: Vec<String> = sim.servers().into_iter().map(|s| s.server.id).collect();
    assert!(!servers.contains(&retired), "{retired} in {servers:?}");
    assert_consistent(&sim, &manager).await;
}

/// Reads of pools fail while `failing` is set, as a store with an I/O error.
struct FailingPoolReads {
    failing: std::sync::atomic::AtomicBool,
}

impl StoreHooks for FailingPoolReads {
    fn before_get_pool(&self) -> pool_manager::store::StoreResult<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(pool_manager::store::StoreError::Io(sled::Error::Io(
                std::io::Error::other("input/output error"),
            )));
        }
        Ok(())
    }
}

/// A replenisher whose read of its pool fails waits and reads again: the
/// pool refills once the store answers (it used to stop for good).
#[tokio::test(start_paused = true)]
async fn a_failed_pool_read_does_not_stop_the_replenisher() {
    use std::sync::atomic::Ordering;
    let sim = sim();
    let store = HookedStore::new(FailingPoolReads {
        failing: false.into(),
    });
    let manager = started(&sim, store.clone(), 2).await;

    store.hooks.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    store.hooks.failing.store(false, Ordering::SeqCst);

    for order in ["order-1", "order-2"] {
        manager
            .allocate(request(order, new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
    }
    wait_ready(&manager, 2).await;
}

/// Lowering max_ready while boots are in flight keeps the Ready instances
/// until the boots are Ready too: retiring Ready ones for boots that will
/// not be Ready for a lead time left the pool short meanwhile.
#[tokio::test(start_paused = true)]
async fn lowering_max_ready_during_boots_keeps_the_ready_instances_until_they_finish() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 6).await;
    manager
        .update_pool(&pool(), |s| s.target = Target::Fixed(10))
        .await
        .unwrap();
    for _ in 0..100 {
        if sim.servers().len() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sim.servers().len(), 10, "four boots under way");

    manager
        .update_pool(&pool(), |s| {
            s.max_ready = 6;
            s.target = Target::Fixed(6);
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        ready_ids(&manager).await.len(),
        6,
        "Ready ones were retired"
    );

    tokio::time::sleep(Duration::from_secs(180)).await;
    assert_eq!(ready_ids(&manager).await.len(), 6);
    assert_eq!(sim.servers().len(), 6, "the surplus was retired once Ready");
    assert_consistent(&sim, &manager).await;
}

/// A `max_age` shorter than the pool takes to fill (one boot at a time
/// here): the replacements never all stand fresh at once, so waiting for
/// that before retiring expired instances kept them all, and the pool grew
/// by a server every boot. Ready instances beyond `max_ready` go, expired
/// ones first: the pool stays within it.
#[tokio::test(start_paused = true)]
async fn a_max_age_shorter_than_a_refill_keeps_the_pool_within_max_ready() {
    // Boots of 10 minutes, one at a time: a refill of 2 takes 20.
    let sim = cloudsim::SimCloud::new(cloudsim::SimConfig {
        time_scale: 10.0,
        ..sim().config()
    });
    let manager = started_one_boot_at_a_time(&sim).await;
    let mut spec = spec(2);
    spec.max_ready = 3;
    spec.max_age = Some(pool_manager::model::MIN_MAX_AGE);
    spec.boot_timeout = Duration::from_secs(3600);
    manager.create_pool(pool(), spec).await.unwrap();

    let (mut most_ready, mut most_servers) = (0, 0);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(600)).await;
        let status = manager.get_pool(&pool()).await.unwrap();
        most_ready = most_ready.max(status.count(InstanceState::Ready));
        most_servers = most_servers.max(sim.servers().len());
    }
    assert!(most_ready <= 3, "{most_ready} Ready, max_ready 3");
    // max_ready, and the one boot in flight.
    assert!(most_servers <= 4, "{most_servers} servers");
    assert!(
        sim.call_counts().get("create_server") > Some(&10),
        "expired instances are still replaced"
    );
    assert_consistent(&sim, &manager).await;
}

/// A pool stored before a rule existed (a `max_age` under the floor) is
/// still served, and a change of something else goes through; a change of
/// the offending value must mend it.
#[tokio::test(start_paused = true)]
async fn a_pool_stored_before_a_rule_can_still_be_changed() {
    let sim = sim();
    let store = temp_store();
    let mut old = spec(1);
    old.max_age = Some(Duration::from_secs(1));
    assert!(old.validate().is_err(), "the rule is newer than the record");
    store
        .put_pool(&pool_manager::model::PoolRecord::new(pool(), old))
        .await
        .unwrap();
    let manager = manager_on(&sim, store);
    manager.start().await.unwrap();
    let paused = manager
        .update_pool(&pool(), |s| s.paused = true)
        .await
        .unwrap();
    assert!(paused.record.spec.paused);
    // The rule the stored settings break hides no other.
    let err = manager
        .update_pool(&pool(), |s| {
            s.target = pool_manager::model::Target::Fixed(s.max_ready + 100)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            pool_manager::ManagerError::InvalidArgument {
                field: "target",
                ..
            }
        ),
        "{err:?}"
    );
    let err = manager
        .update_pool(&pool(), |s| s.max_age = Some(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            pool_manager::ManagerError::InvalidArgument {
                field: "max_age",
                ..
            }
        ),
        "{err:?}"
    );
    let mended = manager
        .update_pool(&pool(), |s| s.max_age = Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(mended.record.spec.max_age, Some(Duration::from_secs(3600)));
}

/// A pool whose Ready instances stay above its target for a whole
/// cooldown retires the surplus, oldest first: a lowered target or a
/// closed operator window does not keep idle servers until `max_age`.
/// Within the cooldown nothing goes (the target may come back up), and a
/// step at or below the target starts the wait again. (Instances that
/// purchases are expected to take within a cooldown stay: see
/// `sizing::surplus_kept`; here there are no purchases.)
#[tokio::test(start_paused = true)]
async fn ready_instances_above_the_target_for_a_cooldown_are_retired() {
    let sim = sim();
    let manager = started(&sim, temp_store(), 4).await;
    let cooldown = settings().sizing.cooldown;
    let mut oldest_first = manager.list_instances(Some(&pool())).await.unwrap();
    oldest_first.sort_by_key(|i| i.ready_at);
    set_target(&manager, 2).await;
    tokio::time::sleep(cooldown - Duration::from_secs(30)).await;
    assert_eq!(
        ready_ids(&manager).await.len(),
        4,
        "kept within the cooldown"
    );
    // Back at 4 for a step, then 1: the wait starts over.
    set_target(&manager, 4).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    set_target(&manager, 1).await;
    tokio::time::sleep(cooldown - Duration::from_secs(30)).await;
    assert_eq!(ready_ids(&manager).await.len(), 4, "kept: a new wait");

    tokio::time::sleep(Duration::from_secs(60)).await;
    let kept = ready_ids(&manager).await;
    assert_eq!(kept.len(), 1, "the surplus above 1 went: {kept:?}");
    let newest = oldest_first.iter().filter_map(|i| i.ready_at).max();
    let stayed: Vec<_> = oldest_first
        .iter()
        .filter(|i| kept.contains(&i.id))
        .collect();
    assert_eq!(stayed.len(), 1, "an original stays: none was booted for it");
    assert_eq!(stayed[0].ready_at, newest, "the oldest go");
    assert_eq!(sim.servers().len(), 1, "their servers are deleted");
    assert_consistent(&sim, &manager).await;
}

/// A lasting surplus is retired down to what the pool keeps as it is when
/// each retirement's turn comes: min_ready raised while the step waited
/// on an earlier delete (a cloud call; an operator window opening is the
/// same) keeps the rest. The step used to delete down to the keep it
/// began with (2 here), and the next step booted 13 back.
#[tokio::test(start_paused = true)]
async fn raising_min_ready_mid_surplus_retirement_keeps_the_rest() {
    let sim = sim();
    let cloud = GatedCloud::new(&sim);
    let manager = started_over(&cloud, temp_store(), 20).await;
    let first = ready_ids(&manager).await;
    assert_eq!(first.len(), 20);
    let deleting = cloud.hold_next("delete_server", At::Before);
    set_target(&manager, 2).await;
    // After a cooldown the surplus above 2 goes; its first delete waits.
    deleting.reached().await;
    sim.reset_call_counts();
    manager
        .update_pool(&pool(), |s| s.min_ready = 15)
        .await
        .unwrap();
    deleting.release();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let kept = ready_ids(&manager).await;
    assert_eq!(kept.len(), 15, "{kept:?}");
    assert!(kept.is_subset(&first), "none was booted back");
    let calls = sim.call_counts();
    assert_eq!(calls.get("create_server"), None, "{calls:?}");
    assert_eq!(sim.servers().len(), 15);
    assert_consistent(&sim, &manager).await;
}

async fn set_target(manager: &pool_manager::PoolManager, target: u32) {
    manager
        .update_pool(&pool(), move |s| {
            s.min_ready = 1;
            s.target = Target::Fixed(target);
        })
        .await
        .unwrap();
}

/// Under steady demand a refill is nearly always in flight, and the old
/// image's instances are handed out last: waiting for a quiet pool (nothing
/// in flight, the fresh supply at the target) before retiring them kept
/// them Ready for as long as the demand lasted, when the new image should
/// reach tenants. Each is retired once a replacement is Ready, load or not.
#[tokio::test(start_paused = true)]
async fn an_image_change_under_steady_demand_still_retires_the_old_images_instances() {
    let sim = sim_with_images();
    let manager = manager_on(&sim, temp_store());
    manager.start().await.unwrap();
    let mut spec = spec(4);
    spec.target = Target::Fixed(4);
    spec.max_ready = 8;
    manager.create_pool(pool(), spec).await.unwrap();
    wait_ready(&manager, 4).await;

    let old_ready = || async {
        manager
            .list_instances(Some(&pool()))
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.state == InstanceState::Ready && i.image.as_deref() == Some("mysql-8.0"))
            .count()
    };
    // A purchase (about 7 s here) every 45 s, a boot about 90 s: a refill
    // is always in flight, and the fresh Ready instances never run out.
    let start = tokio::time::Instant::now();
    let change_at = Duration::from_secs(5 * 60);
    // Three lead times after the change.
    let settled = change_at + Duration::from_secs(5 * 60);
    let mut changed = false;
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(35 * 60) {
        if !changed && start.elapsed() >= change_at {
            manager
                .update_pool(&pool(), |s| s.image = "mysql-8.4".into())
                .await
                .unwrap();
            changed = true;
        }
        let id = format!("steady-{n}");
        n += 1;
        let done = manager
            .allocate(request(&id, new_volume(), EmptyPoolPolicy::FailFast))
            .await
            .unwrap();
        assert!(done.warm_hit, "{done:?}");
        manager.release(&id, Some(true)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(45)).await;
        if start.elapsed() > settled {
            let old = old_ready().await;
            assert_eq!(
                old,
                0,
                "{old} Ready instances of the old image {:?} after the change",
                start.elapsed() - change_at
            );
        }
    }
    assert_consistent(&sim, &manager).await;
}

/// A reconcile pass the cloud keeps failing (its server listing refused)
/// was warned of at every pass, each minute, and nothing said when passes
/// succeeded again. It is warned of once per problem (reminded hourly),
/// each pass's failure at debug, and its end said at info.
#[tokio::test(start_paused = true)]
async fn a_reconcile_pass_failing_at_every_pass_is_warned_of_once_and_its_end_said() {
    use pool_manager::{ManagerSettings, PoolManager};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let logs = Logs::capture();
    let sim = sim();
    let (cloud, refusing) = GatedCloud::refusing(
        &sim,
        "list_pool_servers",
        pool_manager::cloud::CloudError::Fatal(
            "policy does not allow compute:servers:index".into(),
        ),
        false,
    );
    let manager = PoolManager::new(
        temp_store(),
        cloud.clone(),
        Arc::new(sim.probe()),
        ManagerSettings {
            reconcile_interval: Duration::from_secs(60),
            ..settings()
        },
    );
    manager.start().await.unwrap();
    refusing.store(true, Ordering::SeqCst);
    let failed = "reconcile pass failed";
    tokio::time::sleep(Duration::from_secs(10 * 60 + 30)).await;
    assert_eq!(logs.count("WARN", failed), 1, "{}", logs.text());

    // Still failing an hour on: reminded.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(logs.count("WARN", failed), 2, "{}", logs.text());

    refusing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3 * 60)).await;
    assert_eq!(
        logs.count("INFO", "reconcile passes succeed again"),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(logs.count("WARN", failed), 2, "{}", logs.text());
}
