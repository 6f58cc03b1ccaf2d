//! What `/healthz` answers: every loop that must keep turning (the leader election, the
//! status sync) beats; one that has not beaten within its bound makes the probe fail, so the
//! kubelet restarts a replica that is stuck rather than one that is merely slow.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

struct Entry {
    name: &'static str,
    stale_after: Duration,
    last: Mutex<Instant>,
}

/// The probe's side: every registered loop.
#[derive(Clone, Default)]
pub struct Liveness(Arc<Mutex<Vec<Arc<Entry>>>>);

/// A loop's side: it calls [`Beat::beat`] each time it goes round.
pub struct Beat(Arc<Entry>);

impl Liveness {
    /// Registers a loop that counts as stuck once it has not beaten for `stale_after`.
    pub fn register(&self, name: &'static str, stale_after: Duration) -> Beat {
        let entry = Arc::new(Entry {
            name,
            stale_after,
            last: Mutex::new(Instant::now()),
        });
        if let Ok(mut entries) = self.0.lock() {
            entries.push(entry.clone());
        }
        Beat(entry)
    }

    /// The loops that are overdue.
    pub fn stuck(&self) -> Vec<&'static str> {
        let Ok(entries) = self.0.lock() else {
            return vec!["liveness registry"];
        };
        entries
            .iter()
            .filter(|e| {
                e.last
                    .lock()
                    .map_or(true, |at| at.elapsed() > e.stale_after)
            })
            .map(|e| e.name)
            .collect()
    }
}

impl Beat {
    pub fn beat(&self) {
        if let Ok(mut last) = self.0.last.lock() {
            *last = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_stops_beating_is_reported_until_it_beats_again() {
        let liveness = Liveness::default();
        let election = liveness.register("leader election", Duration::from_secs(10));
        let _sync = liveness.register("status sync", Duration::from_secs(60));
        assert!(liveness.stuck().is_empty());

        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(liveness.stuck(), vec!["leader election"]);

        election.beat();
        assert!(liveness.stuck().is_empty());
    }
}
