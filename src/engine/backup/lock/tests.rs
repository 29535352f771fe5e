//! The lease protocol: conflicts, expiry and take-over, fair exclusive waits, renewal through
//! outages, cancellation.

use super::super::backend::LocalBackend;
use super::super::test_support::FlakyBackend;
use super::*;

fn fast(ttl_ms: u64) -> LockOptions {
    LockOptions {
        ttl: Duration::from_millis(ttl_ms),
        wait: Duration::ZERO,
        clock_skew: Duration::ZERO,
    }
}

fn repo() -> (tempfile::TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
    (dir, backend)
}

async fn take(b: &Arc<dyn Backend>, kind: LeaseKind, opts: LockOptions) -> Result<Lease> {
    Lease::acquire(b.clone(), REPOSITORY_LOCK, kind, "test", opts).await
}

#[tokio::test]
async fn two_holders_cannot_take_the_exclusive_lock() {
    let (_dir, b) = repo();
    let first = take(&b, LeaseKind::Exclusive, LockOptions::default())
        .await
        .unwrap();
    let err = take(&b, LeaseKind::Exclusive, LockOptions::default())
        .await
        .unwrap_err();
    let Error::Locked { holders } = &err else {
        panic!("{err}")
    };
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].holder, first.info().holder);
    assert!(err.to_string().contains("exclusive lease of test"), "{err}");
    assert!(take(&b, LeaseKind::Shared, LockOptions::default())
        .await
        .is_err());
    first.release().await.unwrap();
    take(&b, LeaseKind::Exclusive, LockOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn shared_leases_coexist_and_block_exclusive() {
    let (_dir, b) = repo();
    let s1 = take(&b, LeaseKind::Shared, LockOptions::default())
        .await
        .unwrap();
    let s2 = take(&b, LeaseKind::Shared, LockOptions::default())
        .await
        .unwrap();
    let err = take(&b, LeaseKind::Exclusive, LockOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Locked { holders } if holders.len() == 2),
        "{err}"
    );
    assert_eq!(
        list_leases(b.as_ref(), REPOSITORY_LOCK)
            .await
            .unwrap()
            .len(),
        2
    );
    s1.release().await.unwrap();
    s2.release().await.unwrap();
    assert!(list_leases(b.as_ref(), REPOSITORY_LOCK)
        .await
        .unwrap()
        .is_empty());
    take(&b, LeaseKind::Exclusive, LockOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_its_holder_finds_out() {
    let (_dir, b) = repo();
    let stale = take(&b, LeaseKind::Exclusive, fast(1000)).await.unwrap();
    assert!(take(&b, LeaseKind::Exclusive, fast(1000)).await.is_err());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next = take(&b, LeaseKind::Exclusive, fast(60_000)).await.unwrap();
    let leases = list_leases(b.as_ref(), REPOSITORY_LOCK).await.unwrap();
    assert_eq!(
        leases,
        vec![next.info()],
        "the expired lease object was removed"
    );
    let err = stale.renew().await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
}

#[tokio::test]
async fn renewal_extends_and_detects_removal() {
    let (_dir, b) = repo();
    let lease = Arc::new(take(&b, LeaseKind::Shared, fast(1500)).await.unwrap());
    let first = lease.info().expires;
    let keep = lease.keep_alive();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    keep.stop().await;
    // Renewed every 500 ms: at least once, each time to 1.5 s from then.
    assert!(lease.info().expires >= first + TimeDelta::milliseconds(500));
    lease.renew().await.unwrap();
    b.delete(lease.key()).await.unwrap();
    assert!(matches!(lease.renew().await, Err(Error::LeaseLost { .. })));
}

#[tokio::test]
async fn waiting_acquires_once_the_holder_releases() {
    let (_dir, b) = repo();
    let first = take(&b, LeaseKind::Exclusive, LockOptions::default())
        .await
        .unwrap();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            let opts = LockOptions {
                wait: Duration::from_secs(20),
                ..LockOptions::default()
            };
            take(&b, LeaseKind::Exclusive, opts).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.release().await.unwrap();
    waiter.await.unwrap().unwrap();
}

fn waiting(wait_ms: u64) -> LockOptions {
    LockOptions {
        ttl: Duration::from_secs(5),
        wait: Duration::from_millis(wait_ms),
        clock_skew: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_queued_exclusive_lease_holds_off_new_shared_ones() {
    let (_dir, b) = repo();
    let shared = take(&b, LeaseKind::Shared, LockOptions::default())
        .await
        .unwrap();
    let exclusive = {
        let b = b.clone();
        tokio::spawn(async move { take(&b, LeaseKind::Exclusive, waiting(10_000)).await })
    };
    // The waiter queues itself (a lease object marked waiting) soon; polled, not slept on.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let queued = list_leases(b.as_ref(), REPOSITORY_LOCK).await.unwrap();
        if queued
            .iter()
            .any(|l| l.kind == LeaseKind::Exclusive && l.waiting)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{queued:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = take(&b, LeaseKind::Shared, LockOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Locked { holders } if holders.iter().all(|h| h.waiting)),
        "{err}"
    );
    shared.release().await.unwrap();
    let held = exclusive.await.unwrap().unwrap();
    assert!(!held.info().waiting);
    let stored = list_leases(b.as_ref(), REPOSITORY_LOCK).await.unwrap();
    assert_eq!(stored, vec![held.info()], "held, no longer waiting");
}

#[tokio::test]
async fn an_exclusive_waiter_is_not_starved_by_a_stream_of_backups() {
    let (_dir, b) = repo();
    let stop = CancellationToken::new();
    // Two overlapping streams of shared leases: at any moment one is held.
    let streams: Vec<_> = (0..2u64)
        .map(|i| {
            let (b, stop) = (b.clone(), stop.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(60 * i)).await;
                let mut taken = 0u32;
                while !stop.is_cancelled() {
                    if let Ok(l) = take(&b, LeaseKind::Shared, waiting(20_000)).await {
                        taken += 1;
                        tokio::time::sleep(Duration::from_millis(120)).await;
                        l.release().await.unwrap();
                    }
                }
                taken
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = std::time::Instant::now();
    let gc = take(&b, LeaseKind::Exclusive, waiting(10_000))
        .await
        .expect("served despite the stream");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let live = list_leases(b.as_ref(), REPOSITORY_LOCK).await.unwrap();
    assert_eq!(live, vec![gc.info()], "alone while it holds the lease");
    gc.release().await.unwrap();
    stop.cancel();
    for s in streams {
        assert!(s.await.unwrap() > 0, "the backups ran before and after");
    }
}

#[tokio::test]
async fn exclusive_waiters_are_served_in_order_and_one_at_a_time() {
    let (_dir, b) = repo();
    let shared = take(&b, LeaseKind::Shared, LockOptions::default())
        .await
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let (b, order) = (b.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let lease = take(&b, LeaseKind::Exclusive, waiting(20_000))
                .await
                .unwrap();
            let held: Vec<_> = list_leases(b.as_ref(), REPOSITORY_LOCK)
                .await
                .unwrap()
                .into_iter()
                .filter(|l| !l.waiting)
                .collect();
            assert_eq!(held, vec![lease.info()], "waiter {i} holds alone");
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(100)).await;
            lease.release().await.unwrap();
        }));
        // Distinct start times: the queue order is the order of arrival.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    shared.release().await.unwrap();
    for w in waiters {
        w.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn renewal_rides_out_an_outage_shorter_than_the_lease_and_reports_a_longer_one() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = FlakyBackend::new(dir.path());
    let b: Arc<dyn Backend> = flaky.clone();
    let lease = Arc::new(take(&b, LeaseKind::Shared, fast(1500)).await.unwrap());
    let keep = lease.keep_alive();
    let lost = keep.lost();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Down for 800 ms: renewals (every 500 ms) fail and are retried until it comes back.
    flaky.set_down(true);
    tokio::time::sleep(Duration::from_millis(800)).await;
    flaky.set_down(false);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!lost.is_cancelled(), "the lease survived the short outage");
    lease.renew().await.unwrap();
    // Down for longer than the lease lives: it is reported lost once it would lapse.
    flaky.set_down(true);
    let down = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), lost.cancelled())
        .await
        .expect("reported lost");
    assert!(
        down.elapsed() >= Duration::from_millis(900),
        "{:?}",
        down.elapsed()
    );
    flaky.set_down(false);
    assert!(matches!(lease.renew().await, Err(Error::LeaseLost { .. })));
    keep.stop().await;
}

#[tokio::test]
async fn a_cancelled_wait_withdraws_its_lease_object() {
    let (_dir, b) = repo();
    let holder = take(&b, LeaseKind::Exclusive, LockOptions::default())
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let waiter = {
        let (b, cancel) = (b.clone(), cancel.clone());
        tokio::spawn(async move {
            Lease::acquire_cancellable(
                b,
                REPOSITORY_LOCK,
                LeaseKind::Exclusive,
                "waiter",
                waiting(20_000),
                &cancel,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        list_leases(b.as_ref(), REPOSITORY_LOCK)
            .await
            .unwrap()
            .len(),
        2
    );
    cancel.cancel();
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err}");
    assert_eq!(
        list_leases(b.as_ref(), REPOSITORY_LOCK).await.unwrap(),
        vec![holder.info()]
    );
}
