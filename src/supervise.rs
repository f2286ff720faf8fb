//! Background tasks that must not vanish: a task that panics is logged,
//! counted and started again, instead of dying unnoticed with its
//! `JoinHandle` dropped.

use crate::metrics::Metrics;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long a panicked task waits before it starts again.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Runs the task `make` builds, and builds and runs it again after it
/// panics (logged at `error`, counted in `ssegate_task_restarts_total{task}`),
/// [`RESTART_DELAY`] later; a task that returns is done. Right for tasks
/// that keep no state worth losing (the status writers: level-triggered,
/// a new one picks up where the old one stood).
pub fn supervise<F, Fut>(task: &'static str, metrics: &Arc<Metrics>, make: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let metrics = metrics.clone();
    tokio::spawn(async move {
        loop {
            match tokio::spawn(make()).await {
                Err(e) if e.is_panic() => {
                    tracing::error!(task, "task panicked; starting it again in {RESTART_DELAY:?}");
                    metrics.task_restarted(task);
                    tokio::time::sleep(RESTART_DELAY).await;
                }
                _ => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_task_that_panics_is_counted_and_started_again_until_it_returns() {
        let metrics = Arc::new(Metrics::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let handle = supervise("test_task", &metrics, move || {
            let counted = counted.clone();
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("on purpose");
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3, "two panics, then a run that returns");
        assert!(
            metrics
                .encode()
                .contains("ssegate_task_restarts_total{task=\"test_task\"} 2"),
            "{}",
            metrics.encode()
        );
    }
}
