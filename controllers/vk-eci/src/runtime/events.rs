//! vk-eci's Event recorder: events.k8s.io/v1 Events, a repeat within six minutes counted on the
//! first one's `series` (as client-go's recorder and kube's do).
//!
//! kube's `Recorder` remembers each Event whole for those six minutes and sweeps that cache on
//! every publish: during a 10,000-pod create burst (one `ContainerGroupCreated` per pod) it held
//! about 3 KB per pod and walked every entry on each publish, under an async lock. A repeat
//! needs only the first Event's name and its count, keyed here by a hash of what makes two
//! Events the same, and the book is swept at most once a minute.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

use crate::runtime::context::patch_params;

/// How long a repeat still counts on the first Event (client-go's and kube's window).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// How often at most the book drops series older than the window.
const SWEEP_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// The Event a repeat is counted on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Series {
    name: String,
    count: i32,
    last_observed: Timestamp,
}

/// What a publish must write: a new Event, or the count of an existing one.
#[derive(Debug, PartialEq, Eq)]
enum Write {
    Create,
    Repeat { name: String, count: i32 },
}

/// The series of the last six minutes, keyed by a hash of the Event's identity (type, action,
/// reason, regarding and related objects). A hash collision counts an Event on another's
/// series: with 64 bits and at most a few thousand series, a chance under 1e-12 per Event.
#[derive(Debug)]
struct SeriesBook {
    hasher: RandomState,
    series: HashMap<u64, Series>,
    swept_at: Timestamp,
}

impl SeriesBook {
    fn new(now: Timestamp) -> Self {
        Self {
            hasher: RandomState::new(),
            series: HashMap::new(),
            swept_at: now,
        }
    }

    fn key(&self, event: &Event, regarding: &ObjectReference) -> u64 {
        self.hasher.hash_one(EventIdentity::of(event, regarding))
    }

    /// Decides the write for the Event keyed `key`, counting it on its series if it has one.
    fn plan(&mut self, key: u64, now: Timestamp) -> Write {
        self.sweep(now);
        match self.series.get_mut(&key) {
            Some(series) if after(series.last_observed, SERIES_WINDOW) > now => {
                series.count = series.count.saturating_add(1);
                series.last_observed = now;
                Write::Repeat {
                    name: series.name.clone(),
                    count: series.count,
                }
            }
            _ => Write::Create,
        }
    }

    /// Starts a series at the Event just created.
    fn started(&mut self, key: u64, name: String, now: Timestamp) {
        let series = Series {
            name,
            count: 1,
            last_observed: now,
        };
        self.series.insert(key, series);
    }

    /// Forgets a series whose Event could not be written, so the next repeat creates anew.
    fn forget(&mut self, key: u64) {
        self.series.remove(&key);
    }

    fn sweep(&mut self, now: Timestamp) {
        if after(self.swept_at, SWEEP_EVERY) > now {
            return;
        }
        self.swept_at = now;
        self.series
            .retain(|_, series| after(series.last_observed, SERIES_WINDOW) > now);
    }
}

/// `at` + `delta`, the end of time where that overflows.
fn after(at: Timestamp, delta: SignedDuration) -> Timestamp {
    at.saturating_add(delta).unwrap_or(Timestamp::MAX)
}

/// The fields that make two Events the same series (the reporter is the recorder's own).
#[derive(Hash)]
struct EventIdentity<'a> {
    type_: EventType,
    action: &'a str,
    reason: &'a str,
    regarding: ReferenceIdentity<'a>,
    related: Option<ReferenceIdentity<'a>>,
}

#[derive(Hash)]
struct ReferenceIdentity<'a> {
    api_version: Option<&'a str>,
    kind: Option<&'a str>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    uid: Option<&'a str>,
}

impl<'a> EventIdentity<'a> {
    fn of(event: &'a Event, regarding: &'a ObjectReference) -> Self {
        Self {
            type_: event.type_,
            action: &event.action,
            reason: &event.reason,
            regarding: ReferenceIdentity::of(regarding),
            related: event.secondary.as_ref().map(ReferenceIdentity::of),
        }
    }
}

impl<'a> ReferenceIdentity<'a> {
    fn of(reference: &'a ObjectReference) -> Self {
        Self {
            api_version: reference.api_version.as_deref(),
            kind: reference.kind.as_deref(),
            namespace: reference.namespace.as_deref(),
            name: reference.name.as_deref(),
            uid: reference.uid.as_deref(),
        }
    }
}

pub struct EventRecorder {
    client: kube::Client,
    reporter: Reporter,
    book: Mutex<SeriesBook>,
}

impl EventRecorder {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            book: Mutex::new(SeriesBook::new(Timestamp::now())),
        }
    }

    /// Publishes `event` about `regarding`: a new Event, or a repeat counted on the series of
    /// the same Event published within six minutes. A repeat whose Event has gone (deleted,
    /// or expired by the API server's event TTL) is published as a new Event.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let (key, write) = self.with_book(|book| {
            let key = book.key(event, regarding);
            (key, book.plan(key, now))
        });
        if let Write::Repeat { name, count } = write {
            let series = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) },
            });
            match events
                .patch(&name, &patch_params(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    self.with_book(|book| book.forget(key));
                    return Err(error);
                }
            }
        }
        let created = events
            .create(
                &PostParams::default(),
                &self.new_event(event, regarding, now),
            )
            .await;
        match created {
            Ok(created) => {
                let name = created.metadata.name.unwrap_or_default();
                self.with_book(|book| book.started(key, name, now));
                Ok(())
            }
            Err(error) => {
                self.with_book(|book| book.forget(key));
                Err(error)
            }
        }
    }

    fn with_book<T>(&self, f: impl FnOnce(&mut SeriesBook) -> T) -> T {
        // The book is never left half-changed by a panic, so a poisoned lock is still sound.
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut book)
    }

    fn new_event(&self, event: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let subject = regarding
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        let instance = self.reporter.instance.as_ref();
        K8sEvent {
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!("{subject}.{:x}", now.as_nanosecond())),
                ..ObjectMeta::default()
            },
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(instance.unwrap_or(&self.reporter.controller).clone()),
            ..K8sEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn created(reason: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some("created".into()),
            action: "Create".into(),
            secondary: None,
        }
    }

    fn pod(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn a_repeat_within_six_minutes_counts_on_the_first_event() {
        let mut book = SeriesBook::new(at(0));
        let key = book.key(&created("ContainerGroupCreated"), &pod("a", "u1"));
        assert_eq!(book.plan(key, at(0)), Write::Create);
        book.started(key, "a.1".into(), at(0));
        let repeat = |count| Write::Repeat {
            name: "a.1".into(),
            count,
        };
        assert_eq!(book.plan(key, at(30)), repeat(2));
        // The window runs from the last repeat, not the first Event.
        assert_eq!(book.plan(key, at(30 + 359)), repeat(3));
        assert_eq!(book.plan(key, at(30 + 359 + 360)), Write::Create);
    }

    #[test]
    fn the_note_does_not_split_a_series_but_reason_and_object_do() {
        let book = SeriesBook::new(at(0));
        let first = book.key(&created("ContainerGroupCreated"), &pod("a", "u1"));
        let mut other_note = created("ContainerGroupCreated");
        other_note.note = Some("created again".into());
        assert_eq!(book.key(&other_note, &pod("a", "u1")), first);
        assert_ne!(book.key(&created("Other"), &pod("a", "u1")), first);
        assert_ne!(
            book.key(&created("ContainerGroupCreated"), &pod("a", "u2")),
            first
        );
        let mut warning = created("ContainerGroupCreated");
        warning.type_ = EventType::Warning;
        assert_ne!(book.key(&warning, &pod("a", "u1")), first);
    }

    #[test]
    fn the_book_sweeps_expired_series_at_most_once_a_minute() {
        let mut book = SeriesBook::new(at(0));
        let event = created("ContainerGroupCreated");
        for i in 0..1_000 {
            let key = book.key(&event, &pod("a", &i.to_string()));
            book.started(key, format!("a.{i}"), at(0));
        }
        let recent = book.key(&event, &pod("b", "u"));
        book.started(recent, "b.1".into(), at(50));
        let other = book.key(&event, &pod("c", "u"));
        book.plan(other, at(361));
        assert_eq!(book.series.len(), 1, "the 1,000 expired series are dropped");
        book.plan(other, at(420));
        assert_eq!(
            book.series.len(),
            1,
            "b (expired at 410) stays until a minute after the last sweep"
        );
        book.plan(other, at(421));
        assert!(book.series.is_empty());
    }

    #[test]
    fn a_forgotten_series_starts_anew() {
        let mut book = SeriesBook::new(at(0));
        let key = book.key(&created("ContainerGroupCreated"), &pod("a", "u1"));
        book.started(key, "a.1".into(), at(0));
        book.forget(key);
        assert_eq!(book.plan(key, at(1)), Write::Create);
    }

    #[tokio::test]
    async fn repeats_patch_the_series_and_a_vanished_event_is_created_again() {
        let sandbox = kube_sandbox::Sandbox::new()
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let client =
            kube::Client::try_from(kube::Config::new(sandbox.url().parse().unwrap())).unwrap();
        let reporter = Reporter {
            controller: "vk-eci".into(),
            instance: Some("vk-eci-0".into()),
        };
        let recorder = EventRecorder::new(client.clone(), reporter);
        let events: Api<K8sEvent> = Api::namespaced(client, "default");
        let (event, about) = (created("ContainerGroupCreated"), pod("a", "u1"));

        recorder.publish(&event, &about).await.unwrap();
        recorder.publish(&event, &about).await.unwrap();
        recorder.publish(&event, &about).await.unwrap();
        let listed = events.list(&Default::default()).await.unwrap().items;
        assert_eq!(listed.len(), 1, "repeats do not create Events");
        let first = &listed[0];
        assert_eq!(first.series.as_ref().map(|s| s.count), Some(3));
        assert_eq!(first.note.as_deref(), Some("created"));
        assert_eq!(first.reporting_instance.as_deref(), Some("vk-eci-0"));
        let first_name = first.metadata.name.clone().unwrap();

        events
            .delete(&first_name, &Default::default())
            .await
            .unwrap();
        recorder.publish(&event, &about).await.unwrap();
        let listed = events.list(&Default::default()).await.unwrap().items;
        assert_eq!(listed.len(), 1);
        assert_ne!(listed[0].metadata.name.as_ref(), Some(&first_name));
        assert_eq!(listed[0].series, None, "a new Event, not a repeat");
        recorder.publish(&event, &about).await.unwrap();
        let listed = events.list(&Default::default()).await.unwrap().items;
        assert_eq!(listed[0].series.as_ref().map(|s| s.count), Some(2));
    }
}
