//! A delay queue for per-node and per-pod work, in the manner of client-go's workqueue: adding
//! an item that is already waiting keeps the earlier deadline; due items are handed out in the
//! order they fell due to whichever handler slot is free; an item is never worked on twice at
//! once (one added while it runs is run again when it finishes). Lease renewals, node status
//! and pod work have separate slots (three lanes), so a storm of pod transitions or a round of
//! node status writes never holds a renewal back, and a backlog on one pod never holds up
//! another; while renewals fall behind, the other lanes give up most of their slots.
//!
//! Nothing an item asks for can stop the dispatcher: delays are capped at [`MAX_DELAY`] (the
//! item is simply looked at again then), and a handler that panics gives its slot back and is
//! reported through `on_panic`, so one bad pod never takes the other pods' work with it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    Lease(u32),
    NodeStatus(u32),
    Pod(Arc<str>),
}

const LANES: usize = 3;

impl Work {
    /// Lanes are looked at in this order when slots free up: renewals first.
    fn lane(&self) -> usize {
        match self {
            Work::Lease(_) => 0,
            Work::NodeStatus(_) => 1,
            Work::Pod(_) => 2,
        }
    }
}

/// The longest delay the queue keeps: tokio's timer wheel refuses deadlines beyond about two
/// years, and an item due later is harmlessly re-evaluated after a day.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<(Work, Duration)>,
}

impl Queue {
    pub fn add(&self, work: Work, after: Duration) {
        // Fails only after shutdown, when nothing needs doing any more.
        let _ = self.tx.send((work, after));
    }
}

/// Handler slots per lane (leases, node status, pods): `lease_workers` for renewals, and
/// `workers` split evenly between node status and pods.
fn slots(workers: usize, lease_workers: usize) -> [usize; LANES] {
    let node = (workers / 2).max(1);
    [
        lease_workers.max(1),
        node,
        workers.saturating_sub(node).max(1),
    ]
}

/// While renewals wait for a slot (every lease slot is in flight and more are due: the
/// apiserver answers them slower than they fall due), node status and pod work keep only
/// 1/`YIELD_DIVISOR` of their slots, so our own writes stop crowding the renewals out of a
/// saturated apiserver, as a kubelet puts its heartbeat before everything else. Opt-in
/// (`--yield-to-leases`): in the 5,000-node storm it made leases later by less (12.9 and 24.5 s
/// against 26.0 and 30.9 s) but pods 3-6 times slower to start and RSS 50-90 MB larger, and
/// met the 15 s target in only one of two runs (hollow-node README, numbers).
const YIELD_DIVISOR: usize = 8;

/// How the dispatcher shares its slots: renewals' own, and whether the other lanes give way
/// while renewals are behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseLane {
    pub workers: usize,
    pub yield_to_leases: bool,
}

/// The slots each lane may use now: all of them, or, when renewals are `behind`, the lease
/// lane's and a share of the others' (at least one each, so no lane ever stops).
fn limits(slots: [usize; LANES], behind: bool) -> [usize; LANES] {
    if !behind {
        return slots;
    }
    let [lease, node, pod] = slots;
    [
        lease,
        (node / YIELD_DIVISOR).max(1),
        (pod / YIELD_DIVISOR).max(1),
    ]
}

/// The bookkeeping of due and running work, apart from the timers and tasks.
#[derive(Default)]
struct Lanes {
    /// Due, not running, in the order they fell due (with the instant they did).
    ready: [VecDeque<(Work, Instant)>; LANES],
    queued: HashSet<Work>,
    running: HashSet<Work>,
    /// Added again while running: due once the run finishes.
    rerun: HashSet<Work>,
    busy: [usize; LANES],
}

impl Lanes {
    fn due(&mut self, work: Work, at: Instant) {
        if self.running.contains(&work) {
            self.rerun.insert(work);
        } else if self.queued.insert(work.clone()) {
            self.ready[work.lane()].push_back((work, at));
        }
    }

    /// Renewals are due that no lease slot can take.
    fn leases_behind(&self, slots: [usize; LANES]) -> bool {
        self.busy[0] >= slots[0] && !self.ready[0].is_empty()
    }

    /// The next item to start in a lane with a free slot, marked running (renewals first; the
    /// other lanes yield while renewals are behind).
    fn next(&mut self, slots: [usize; LANES], yield_to_leases: bool) -> Option<(Work, Instant)> {
        let limits = limits(slots, yield_to_leases && self.leases_behind(slots));
        for (lane, limit) in limits.into_iter().enumerate() {
            if self.busy[lane] < limit
                && let Some((work, at)) = self.ready[lane].pop_front()
            {
                self.queued.remove(&work);
                self.running.insert(work.clone());
                self.busy[lane] += 1;
                return Some((work, at));
            }
        }
        None
    }

    /// A run finished: true when the item was added meanwhile and is due again.
    fn finished(&mut self, work: &Work) -> bool {
        self.running.remove(work);
        self.busy[work.lane()] -= 1;
        self.rerun.remove(work)
    }
}

/// Starts the dispatcher, which calls `handle(work, waited)` for each due item (`waited`: how
/// long it was due before a slot was free), at most `lease_workers` renewals and `workers` other
/// runs at once, until `shutdown` (which drops the runs in flight); a run
/// that panics is passed to `on_panic` and its slot freed. The dispatcher holds `alive` for its
/// life, so `/healthz` fails if it ever stops outside a shutdown.
/// Returns the queue and a handle that completes when all runs have stopped.
pub fn start<F, Fut, P>(
    workers: usize,
    leases: LeaseLane,
    shutdown: CancellationToken,
    alive: telemetry::health::TaskGuard,
    on_panic: P,
    handle: F,
) -> (Queue, tokio::task::JoinHandle<()>)
where
    F: Fn(Work, Duration) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    P: Fn(&Work) + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Work, Duration)>();
    let slots = slots(workers, leases.workers);
    let yield_to_leases = leases.yield_to_leases;
    let dispatcher = tokio::spawn(async move {
        let _alive = alive;
        let mut delays: DelayQueue<Work> = DelayQueue::new();
        let mut waiting: HashMap<Work, (Key, Instant)> = HashMap::new();
        let mut lanes = Lanes::default();
        let mut runs: JoinSet<(Work, bool)> = JoinSet::new();
        loop {
            while let Some((work, due)) = lanes.next(slots, yield_to_leases) {
                // Building the future may panic too: caught the same way.
                let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handle(work.clone(), due.elapsed())
                }));
                let token = shutdown.clone();
                runs.spawn(async move {
                    let Ok(fut) = started else {
                        return (work, true);
                    };
                    let run = std::panic::AssertUnwindSafe(fut).catch_unwind();
                    let panicked = tokio::select! {
                        _ = token.cancelled() => false,
                        r = run => r.is_err(),
                    };
                    (work, panicked)
                });
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                item = rx.recv() => {
                    let Some((work, after)) = item else { break };
                    let now = Instant::now();
                    if after.is_zero() {
                        if let Some((key, _)) = waiting.remove(&work) {
                            delays.remove(&key);
                        }
                        lanes.due(work, now);
                        continue;
                    }
                    let deadline = now + after.min(MAX_DELAY);
                    match waiting.get_mut(&work) {
                        Some((key, at)) => {
                            if deadline < *at {
                                delays.reset_at(key, deadline);
                                *at = deadline;
                            }
                        }
                        None => {
                            let key = delays.insert_at(work.clone(), deadline);
                            waiting.insert(work, (key, deadline));
                        }
                    }
                }
                Some(expired) = delays.next(), if !delays.is_empty() => {
                    let at = expired.deadline();
                    let work = expired.into_inner();
                    waiting.remove(&work);
                    lanes.due(work, at);
                }
                Some(done) = runs.join_next(), if !runs.is_empty() => {
                    // Runs catch their own panics, so every run comes back with its key; a
                    // JoinError could only be a cancelled runtime.
                    let Ok((work, panicked)) = done else { continue };
                    if panicked {
                        on_panic(&work);
                    }
                    if lanes.finished(&work) {
                        lanes.due(work, Instant::now());
                    }
                }
            }
        }
        while runs.join_next().await.is_some() {}
    });
    (Queue { tx }, dispatcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const ONE_LEASE_SLOT: LeaseLane = LeaseLane {
        workers: 1,
        yield_to_leases: true,
    };

    fn alive(token: &CancellationToken) -> telemetry::health::TaskGuard {
        telemetry::Health::default().guard("queue dispatcher", token.clone())
    }

    #[test]
    fn lanes_share_slots_fairly() {
        let cases = [
            (1, 0, [1, 1, 1]),
            (2, 1, [1, 1, 1]),
            (3, 4, [4, 1, 2]),
            (64, 500, [500, 32, 32]),
        ];
        for (workers, leases, want) in cases {
            assert_eq!(
                slots(workers, leases),
                want,
                "{workers} workers, {leases} lease"
            );
        }
    }

    #[test]
    fn other_lanes_yield_while_renewals_are_behind() {
        let cases = [
            ([500, 512, 512], false, [500, 512, 512]),
            ([500, 512, 512], true, [500, 64, 64]),
            ([8, 32, 32], true, [8, 4, 4]),
            ([1, 1, 1], true, [1, 1, 1]),
            ([4, 7, 0], true, [4, 1, 1]),
        ];
        for (slots, behind, want) in cases {
            assert_eq!(limits(slots, behind), want, "{slots:?} behind={behind}");
        }
        // In the bookkeeping: a full lease lane with a renewal waiting holds pods to their
        // share (unless yielding is off); once it catches up, they have every slot again.
        let t = Instant::now();
        let mut l = Lanes::default();
        let slots = [1, 4, 4];
        l.due(Work::Lease(1), t);
        l.due(Work::Lease(2), t);
        for i in 0..4 {
            l.due(Work::Pod(format!("p{i}").into()), t);
        }
        assert_eq!(l.next(slots, true).map(|w| w.0), Some(Work::Lease(1)));
        assert!(l.leases_behind(slots));
        assert_eq!(
            l.next(slots, true).map(|w| w.0),
            Some(Work::Pod("p0".into()))
        );
        assert_eq!(
            l.next(slots, true),
            None,
            "one pod slot while a renewal waits"
        );
        assert_eq!(
            l.next(slots, false).map(|w| w.0),
            Some(Work::Pod("p1".into())),
            "not yielding: every slot"
        );
        assert!(!l.finished(&Work::Lease(1)));
        assert_eq!(l.next(slots, true).map(|w| w.0), Some(Work::Lease(2)));
        assert!(!l.leases_behind(slots));
        for i in 2..4 {
            assert_eq!(
                l.next(slots, true).map(|w| w.0),
                Some(Work::Pod(format!("p{i}").into()))
            );
        }
    }

    #[test]
    fn lane_bookkeeping() {
        let t = Instant::now();
        let mut l = Lanes::default();
        let pod = |n: &str| Work::Pod(n.into());
        l.due(pod("a"), t);
        l.due(pod("b"), t);
        l.due(pod("a"), t); // already waiting: once
        l.due(Work::NodeStatus(1), t);
        l.due(Work::NodeStatus(2), t);
        l.due(Work::Lease(1), t);
        let slots = [1, 1, 1];
        // Leases first (though due last), then node status, then the oldest pod; the second
        // pod and the second node status wait for their lanes' slots.
        assert_eq!(l.next(slots, true).map(|w| w.0), Some(Work::Lease(1)));
        assert_eq!(l.next(slots, true).map(|w| w.0), Some(Work::NodeStatus(1)));
        assert_eq!(l.next(slots, true).map(|w| w.0), Some(pod("a")));
        assert_eq!(l.next(slots, true), None);
        // A full node-status lane holds up no lease.
        l.due(Work::Lease(2), t);
        assert!(!l.finished(&Work::Lease(1)));
        assert_eq!(l.next(slots, true).map(|w| w.0), Some(Work::Lease(2)));
        assert!(!l.finished(&Work::Lease(2)));
        assert!(!l.finished(&Work::NodeStatus(1)));
        assert_eq!(l.next(slots, true).map(|w| w.0), Some(Work::NodeStatus(2)));
        assert!(!l.finished(&Work::NodeStatus(2)));
        // Added while running: not handed out again until the run ends.
        l.due(pod("a"), t);
        assert_eq!(l.next(slots, true), None);
        assert!(l.finished(&pod("a")), "a was added while it ran");
        assert_eq!(l.next(slots, true).map(|w| w.0), Some(pod("b")));
        assert!(!l.finished(&pod("b")));
        assert_eq!(l.next(slots, true), None);
    }

    #[tokio::test(start_paused = true)]
    async fn dedupes_and_keeps_earliest_deadline() {
        let seen: Arc<Mutex<Vec<(Work, u128)>>> = Arc::default();
        let t0 = Instant::now();
        let s = seen.clone();
        let token = CancellationToken::new();
        let (q, join) = start(
            2,
            LeaseLane {
                workers: 1,
                yield_to_leases: true,
            },
            token.clone(),
            alive(&token),
            |_| {},
            move |w, _| {
                let s = s.clone();
                async move {
                    if let Ok(mut v) = s.lock() {
                        v.push((w, t0.elapsed().as_millis() / 100 * 100));
                    }
                }
            },
        );
        q.add(Work::Lease(1), Duration::from_secs(5));
        q.add(Work::Lease(1), Duration::from_secs(2)); // earlier wins
        q.add(Work::Lease(1), Duration::from_secs(9)); // later is dropped
        q.add(Work::Pod("a/b".into()), Duration::from_secs(1));
        q.add(Work::Pod("a/b".into()), Duration::from_secs(1));
        q.add(Work::NodeStatus(3), Duration::from_secs(4));
        q.add(Work::NodeStatus(3), Duration::ZERO); // now beats a timer
        tokio::time::sleep(Duration::from_secs(20)).await;
        token.cancel();
        let _ = join.await;
        let mut got = seen.lock().map(|v| v.clone()).unwrap_or_default();
        got.sort_by_key(|(_, t)| *t);
        assert_eq!(
            got,
            vec![
                (Work::NodeStatus(3), 0),
                (Work::Pod("a/b".into()), 1000),
                (Work::Lease(1), 2000)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_item_holds_up_no_other() {
        // One pod slot per lane would serialize; with 4 pod slots a 10 s run of one pod leaves
        // the others to finish at once, and the slow pod added again meanwhile runs once more
        // after it, never twice at the same time.
        let log: Arc<Mutex<Vec<(String, u64, bool)>>> = Arc::default();
        let active: Arc<Mutex<HashSet<String>>> = Arc::default();
        let t0 = Instant::now();
        let (l, a) = (log.clone(), active.clone());
        let token = CancellationToken::new();
        let (q, join) = start(
            8,
            LeaseLane {
                workers: 1,
                yield_to_leases: true,
            },
            token.clone(),
            alive(&token),
            |_| {},
            move |w, _| {
                let (l, a) = (l.clone(), a.clone());
                async move {
                    let Work::Pod(name) = w else { return };
                    let overlap = !a
                        .lock()
                        .map(|mut s| s.insert(name.to_string()))
                        .unwrap_or(false);
                    let slow = &*name == "slow";
                    if slow {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                    if let Ok(mut v) = l.lock() {
                        v.push((name.to_string(), t0.elapsed().as_secs(), overlap));
                    }
                    if let Ok(mut s) = a.lock() {
                        s.remove(&*name);
                    }
                }
            },
        );
        q.add(Work::Pod("slow".into()), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(10)).await;
        for i in 0..20 {
            q.add(Work::Pod(format!("p{i}").into()), Duration::ZERO);
        }
        q.add(Work::Pod("slow".into()), Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(30)).await;
        token.cancel();
        let _ = join.await;
        let got = log.lock().map(|v| v.clone()).unwrap_or_default();
        assert!(got.iter().all(|(_, _, overlap)| !overlap), "{got:?}");
        let fast: Vec<u64> = got
            .iter()
            .filter(|(n, _, _)| n != "slow")
            .map(|(_, t, _)| *t)
            .collect();
        assert_eq!(fast.len(), 20, "{got:?}");
        assert!(fast.iter().all(|t| *t == 0), "{got:?}");
        let slow: Vec<u64> = got
            .iter()
            .filter(|(n, _, _)| n == "slow")
            .map(|(_, t, _)| *t)
            .collect();
        assert_eq!(slow, vec![10, 20], "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_handler_frees_its_slot_and_absurd_delays_are_capped() {
        // One pod slot: if the panicking run kept it, nothing after it would ever run.
        let done: Arc<Mutex<Vec<String>>> = Arc::default();
        let panics: Arc<Mutex<Vec<Work>>> = Arc::default();
        let (d, p) = (done.clone(), panics.clone());
        let token = CancellationToken::new();
        let on_panic = move |w: &Work| {
            if let Ok(mut v) = p.lock() {
                v.push(w.clone());
            }
        };
        let (q, join) = start(
            2,
            ONE_LEASE_SLOT,
            token.clone(),
            alive(&token),
            on_panic,
            move |w, _| {
                let d = d.clone();
                async move {
                    let Work::Pod(name) = w else { return };
                    if name.starts_with("bad") {
                        panic!("handler bug on {name}");
                    }
                    if let Ok(mut v) = d.lock() {
                        v.push(name.to_string());
                    }
                }
            },
        );
        // Far beyond what tokio's timer accepts (it panicked the dispatcher before the cap).
        q.add(Work::Pod("late".into()), Duration::from_secs(20_000 * 3600));
        q.add(Work::Pod("forever".into()), Duration::MAX);
        for i in 0..40 {
            q.add(Work::Pod(format!("bad{i}").into()), Duration::ZERO);
        }
        for i in 0..100 {
            q.add(Work::Pod(format!("p{i}").into()), Duration::ZERO);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        let ran = done.lock().map(|v| v.len()).unwrap_or_default();
        assert_eq!(ran, 100, "every normal pod ran after 40 panics");
        assert_eq!(panics.lock().map(|v| v.len()).unwrap_or_default(), 40);
        // The capped items come due after MAX_DELAY and run normally.
        tokio::time::sleep(MAX_DELAY).await;
        let got = done.lock().map(|v| v.clone()).unwrap_or_default();
        assert!(got.contains(&"late".to_string()), "{got:?}");
        assert!(got.contains(&"forever".to_string()), "{got:?}");
        assert!(!join.is_finished(), "the dispatcher still runs");
        token.cancel();
        let _ = join.await;
    }

    #[tokio::test]
    async fn a_killed_dispatcher_fails_health() {
        let health = telemetry::Health::default();
        let token = CancellationToken::new();
        let guard = health.guard("queue dispatcher", token.clone());
        let (_q, join) = start(
            2,
            ONE_LEASE_SLOT,
            token.clone(),
            guard,
            |_| {},
            |_, _| async {},
        );
        tokio::task::yield_now().await;
        assert_eq!(health.check(), Ok(()));
        join.abort();
        let _ = join.await;
        assert_eq!(health.check(), Err(vec!["queue dispatcher"]));
    }
}
