//! The one loop every status writer runs: leader-gated, level-triggered.
//!
//! While this replica holds the Lease, each round reads the kind's inputs
//! and writes what differs from the live objects ([`StatusKind::sync`]);
//! then it waits for the next reason to look again: an input changed, the
//! leadership changed, a watched object changed (a hand edit to put
//! right), or the retry or resync time came ([`super::next_sync_in`]). The
//! object-change wait is armed before the round, so a change that lands
//! while a round runs is seen at once: the watches wake waiters with
//! `notify_waiters`, which keeps no permit for one that comes later.
//!
//! A kind supplies only what differs: its inputs, what "ready to write"
//! means for it, and its sync.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::info;

/// One kind of status writer, as the loop drives it.
pub(crate) trait StatusKind {
    /// The kind's name, for logs.
    const NAME: &'static str;
    /// How long the loop rests when nothing happens: the resync that puts
    /// right a hand edit no watch reported.
    const RESYNC: Duration = Duration::from_secs(300);

    /// Reads the inputs (marking them seen) and writes every status that
    /// differs; `None` when there is nothing to write from yet (no table
    /// built), else whether every write went through.
    async fn sync(&mut self, leader: &watch::Receiver<bool>) -> Option<bool>;

    /// Resolves when an input changed; false when an input the kind cannot
    /// do without has closed (the loop ends).
    async fn input_changed(&mut self) -> bool;
}

/// Runs `kind` until an input or the leadership channel closes.
/// `objects_changed` is the watch's signal that a live object changed.
pub(crate) async fn run<K: StatusKind>(
    mut kind: K,
    objects_changed: Option<Arc<Notify>>,
    mut leader: watch::Receiver<bool>,
) {
    let never = Arc::new(Notify::new());
    let changed = objects_changed.unwrap_or(never);
    let mut retry_soon = false;
    loop {
        // Armed before the round, so a change during it is not missed.
        let object_changed = changed.notified();
        tokio::pin!(object_changed);
        object_changed.as_mut().enable();
        if *leader.borrow_and_update() {
            if let Some(ok) = kind.sync(&leader).await {
                retry_soon = !ok;
            }
        }
        let wait = if retry_soon {
            super::next_sync_in(true)
        } else {
            K::RESYNC
        };
        tokio::select! {
            open = kind.input_changed() => if !open { return },
            l = leader.changed() => {
                if l.is_err() { return }
                info!(kind = K::NAME, leader = *leader.borrow(), "status leadership changed");
            }
            _ = &mut object_changed => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// A kind whose rounds take 200 ms and are recorded.
    struct Slow {
        rounds: Arc<std::sync::Mutex<Vec<Instant>>>,
        input: watch::Receiver<u32>,
    }

    impl StatusKind for Slow {
        const NAME: &'static str = "test";

        async fn sync(&mut self, _: &watch::Receiver<bool>) -> Option<bool> {
            self.input.borrow_and_update();
            self.rounds.lock().unwrap().push(Instant::now());
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some(true)
        }

        async fn input_changed(&mut self) -> bool {
            self.input.changed().await.is_ok()
        }
    }

    #[tokio::test]
    async fn a_change_during_a_round_starts_the_next_round_at_once() {
        let rounds = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (_input_tx, input) = watch::channel(0);
        let (_leader_tx, leader) = watch::channel(true);
        let objects = Arc::new(Notify::new());
        let task = tokio::spawn(run(
            Slow {
                rounds: rounds.clone(),
                input,
            },
            Some(objects.clone()),
            leader,
        ));
        // Mid-round: the first round sleeps 200 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
        objects.notify_waiters();
        let deadline = Instant::now() + Duration::from_secs(5);
        while rounds.lock().unwrap().len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the change during a round was not written at once"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = rounds.lock().unwrap().clone();
        assert!(
            r[1] - r[0] < Duration::from_millis(400),
            "the second round came {:?} after the first, not right after it ended",
            r[1] - r[0]
        );
        // And then it rests: no third round over a 500 ms window.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(rounds.lock().unwrap().len(), 2, "a round with no reason");
        task.abort();
    }

    #[tokio::test]
    async fn nothing_is_written_without_the_lease_and_the_loop_ends_with_its_inputs() {
        let rounds = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (input_tx, input) = watch::channel(0);
        let (leader_tx, leader) = watch::channel(false);
        let task = tokio::spawn(run(
            Slow {
                rounds: rounds.clone(),
                input,
            },
            None,
            leader,
        ));
        input_tx.send(1).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rounds.lock().unwrap().is_empty(), "wrote without the Lease");
        leader_tx.send(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while rounds.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no round after the Lease came");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(input_tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop ends when its input closes")
            .unwrap();
    }
}
