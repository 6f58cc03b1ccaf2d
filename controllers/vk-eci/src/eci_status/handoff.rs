//! What the pod lifecycle controller tells the status sync: a group was just created or
//! stopped (sync soon, not at the next pause), and which groups are stopping for deleted
//! pods (the sync removes each pod once its group is gone). One channel: the sending end
//! belongs to the pod lifecycle controller, the receiving end to the status sync.

use std::collections::HashMap;

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;
use vk_eci_core::cache::CachedPod;

enum Note {
    Changed,
    Stopping {
        id: String,
        pod: ObjectRef<CachedPod>,
    },
}

/// A connected [`Handoff`] (for the pod lifecycle controller) and [`Inbox`] (for the
/// status sync).
pub fn channel() -> (Handoff, Inbox) {
    // Unbounded: at most one note per create or delete between two passes (a second apart).
    let (sender, notes) = mpsc::unbounded_channel();
    let inbox = Inbox {
        notes,
        terminating: HashMap::new(),
        woken: false,
    };
    (Handoff(sender), inbox)
}

/// The pod lifecycle controller's end.
#[derive(Clone)]
pub struct Handoff(mpsc::UnboundedSender<Note>);

impl Handoff {
    /// A group was created: its pod's status should follow it soon.
    pub fn group_created(&self) {
        self.send(Note::Changed);
    }

    /// Group `id` is stopping for the deleted `pod`: remove the pod once the group is gone.
    pub fn group_stopping(&self, id: &str, pod: &CachedPod) {
        self.send(Note::Stopping {
            id: id.to_string(),
            pod: ObjectRef::from_obj(pod),
        });
    }

    fn send(&self, note: Note) {
        // The status sync only drops its end when the operator stops: nothing is left to tell.
        let _ = self.0.send(note);
    }
}

/// The status sync's end: the groups stopping for deleted pods, and whether to sync early.
pub struct Inbox {
    notes: mpsc::UnboundedReceiver<Note>,
    terminating: HashMap<String, ObjectRef<CachedPod>>,
    /// A note arrived since the last [`Inbox::woken`].
    woken: bool,
}

impl Inbox {
    /// Resolves as soon as a note has arrived since it last resolved (at once if one came
    /// during the pass). Cancel-safe: nothing received is lost when the wait is dropped.
    pub async fn woken(&mut self) {
        self.drain();
        while !self.woken {
            match self.notes.recv().await {
                Some(note) => self.take(note),
                None => std::future::pending().await,
            }
        }
        self.woken = false;
    }

    /// The groups stopping for deleted pods, with their pods.
    pub fn terminating(&mut self) -> Vec<(String, ObjectRef<CachedPod>)> {
        self.drain();
        self.terminating
            .iter()
            .map(|(id, pod)| (id.clone(), pod.clone()))
            .collect()
    }

    /// The group is gone (or finished) and its pod removed.
    pub fn forget(&mut self, id: &str) {
        self.terminating.remove(id);
    }

    pub fn has_terminating(&mut self) -> bool {
        self.drain();
        !self.terminating.is_empty()
    }

    fn drain(&mut self) {
        while let Ok(note) = self.notes.try_recv() {
            self.take(note);
        }
    }

    fn take(&mut self, note: Note) {
        if let Note::Stopping { id, pod } = note {
            self.terminating.insert(id, pod);
        }
        self.woken = true;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn pod(name: &str) -> CachedPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": "u-1"},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_note_sent_during_a_pass_wakes_the_next_wait_at_once() {
        let (handoff, mut inbox) = channel();
        handoff.group_created();
        assert!(inbox.terminating().is_empty(), "a create stops nothing");
        tokio::time::timeout(Duration::from_secs(5), inbox.woken())
            .await
            .unwrap();
        let idle = tokio::time::timeout(Duration::from_millis(50), inbox.woken()).await;
        assert!(idle.is_err(), "one note wakes one wait");
    }

    #[tokio::test]
    async fn stopping_groups_are_kept_until_forgotten() {
        let (handoff, mut inbox) = channel();
        handoff.group_stopping("eci-1", &pod("web"));
        handoff.group_stopping("eci-1", &pod("web"));
        let terminating = inbox.terminating();
        assert_eq!(terminating.len(), 1);
        assert_eq!(terminating[0].0, "eci-1");
        assert_eq!(terminating[0].1.name, "web");
        assert!(inbox.has_terminating());
        inbox.forget("eci-1");
        assert!(!inbox.has_terminating());
    }
}
