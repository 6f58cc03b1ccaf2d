//! One watch, several controllers: every object a reflector touches (applied or deleted) is
//! handed to each subscriber through a bounded channel of its own. A subscriber that falls
//! behind slows the reflector (backpressure) rather than losing changes.
//!
//! Not kube-runtime's shared reflector (`store_shared` and its `ReflectHandle`s): a handle
//! that takes the event of an object deleted before it read it answers `Pending` without
//! asking to be woken. Inside a Controller, whose triggers are polled only when woken, that
//! subscriber then never runs again, and the reflector soon blocks on its full buffer. On a
//! real API server a burst of pod deletions did exactly that: the pod controller and the
//! status sync fell silent for good while the election went on renewing.

use std::pin::pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::warn;

/// The sending end: owned by the reflector's loop.
pub struct Fanout<K> {
    subscribers: Vec<mpsc::Sender<Arc<K>>>,
}

/// The receiving end of one subscriber: a stream of the objects touched, in watch order.
pub type Subscription<K> = ReceiverStream<Arc<K>>;

impl<K: Send + Sync + 'static> Fanout<K> {
    /// A fan-out to `N` subscribers, each buffering up to `capacity` objects.
    pub fn new<const N: usize>(capacity: usize) -> (Self, [Subscription<K>; N]) {
        let mut subscribers = Vec::with_capacity(N);
        let subscriptions = std::array::from_fn(|_| {
            let (sender, receiver) = mpsc::channel(capacity.max(1));
            subscribers.push(sender);
            ReceiverStream::new(receiver)
        });
        (Self { subscribers }, subscriptions)
    }

    /// Hands `object` to every subscriber still listening, waiting for room in each.
    pub async fn send(&self, object: Arc<K>) {
        for subscriber in &self.subscribers {
            // A closed subscription is a controller that stopped; the operator notices that.
            let _ = subscriber.send(object.clone()).await;
        }
    }

    /// Forwards every object the reflector writing `store` touches, from its event stream
    /// (`events`, the output of `reflect`), until it ends. A change is handed on as the store's
    /// own copy, so a queued one costs a pointer, not a second object; a deleted object goes as
    /// the watch delivered it. The objects of a (re)list go once it is complete, all of the
    /// store's, then: the store takes them in only at its end, and a controller drops a trigger
    /// for an object its store does not hold yet, so a pod listed after its watch expired
    /// would otherwise wait for its next change. Watch errors are logged here; the watcher's
    /// backoff retries them.
    pub async fn forward<E: std::fmt::Display>(
        self,
        kind: &'static str,
        store: Store<K>,
        events: impl Stream<Item = Result<watcher::Event<K>, E>>,
    ) where
        K: Resource<DynamicType = ()> + Clone,
    {
        let mut events = pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(object)) => {
                    let shared = store
                        .get(&ObjectRef::from_obj(&object))
                        .unwrap_or_else(|| Arc::new(object));
                    self.send(shared).await;
                }
                Ok(watcher::Event::Delete(object)) => self.send(Arc::new(object)).await,
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(watcher::Event::InitDone) => {
                    for object in store.state() {
                        self.send(object).await;
                    }
                }
                Err(error) => warn!(kind, %error, "watch failed; retrying with backoff"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher::{self, Event};
    use kube::runtime::{WatchStreamExt, reflector};

    use super::*;

    fn pod(name: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some("ns".into());
        pod
    }

    /// The sequence that stalled kube-runtime's shared subscribers: an object is applied and
    /// deleted before the subscriber reads, then another one changes. The subscriber sits
    /// in a `select_all`, as a Controller's triggers do.
    #[tokio::test]
    async fn a_subscriber_keeps_receiving_after_an_object_went_before_it_read() {
        let (store, writer) = reflector::store::<Pod>();
        let (fanout, [subscription]) = Fanout::new(16);
        let (events, watch) =
            futures::channel::mpsc::unbounded::<Result<Event<Pod>, watcher::Error>>();
        tokio::spawn(fanout.forward("Pod", store.clone(), watch.reflect(writer)));
        for event in [
            Event::Init,
            Event::InitDone,
            Event::Apply(pod("a")),
            Event::Delete(pod("a")),
        ] {
            events.unbounded_send(Ok(event)).unwrap();
        }
        let mut triggers = futures::stream::select_all([subscription]);
        let name = |pod: Option<Arc<Pod>>| pod.and_then(|p| p.metadata.name.clone());
        assert_eq!(name(triggers.next().await).as_deref(), Some("a"));
        // The deletion reaches subscribers too: whoever maps a pod to its rotation learns
        // that the pod is gone.
        assert_eq!(name(triggers.next().await).as_deref(), Some("a"));
        assert!(
            store
                .get(&reflector::ObjectRef::new("a").within("ns"))
                .is_none()
        );

        events.unbounded_send(Ok(Event::Apply(pod("b")))).unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), triggers.next())
            .await
            .expect("the subscriber stalled")
            .unwrap();
        assert_eq!(next.metadata.name.as_deref(), Some("b"));
        let cached = store
            .get(&reflector::ObjectRef::new("b").within("ns"))
            .unwrap();
        assert!(
            Arc::ptr_eq(&next, &cached),
            "the store's copy, not a second one"
        );
    }

    /// A relist (the watch expired under a burst of pods) delivers its objects only once the
    /// store holds them: a controller looks each trigger up in the store and drops it when
    /// the object is not there yet.
    #[tokio::test]
    async fn the_objects_of_a_relist_go_once_the_store_holds_them() {
        let (store, writer) = reflector::store::<Pod>();
        let (fanout, [mut subscription]) = Fanout::new(16);
        let (events, watch) =
            futures::channel::mpsc::unbounded::<Result<Event<Pod>, watcher::Error>>();
        tokio::spawn(fanout.forward("Pod", store.clone(), watch.reflect(writer)));
        for event in [
            Event::Init,
            Event::InitApply(pod("a")),
            Event::InitApply(pod("b")),
            Event::InitDone,
        ] {
            events.unbounded_send(Ok(event)).unwrap();
        }
        let mut received = Vec::new();
        for _ in 0..2 {
            let next = tokio::time::timeout(Duration::from_secs(5), subscription.next())
                .await
                .expect("the listed objects never came")
                .unwrap();
            let cached = store.get(&ObjectRef::from_obj(next.as_ref()));
            assert!(
                cached.is_some_and(|c| Arc::ptr_eq(&c, &next)),
                "handed on as the store's copy, so the store holds it"
            );
            received.extend(next.metadata.name.clone());
        }
        received.sort();
        assert_eq!(received, ["a", "b"]);
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_object_in_order_through_a_small_buffer() {
        let (fanout, [fast, slow]) = Fanout::<Pod>::new(1);
        let sender = tokio::spawn(async move {
            for name in ["a", "b", "c"] {
                fanout.send(Arc::new(pod(name))).await;
            }
        });
        let names = |pods: Vec<Arc<Pod>>| {
            pods.iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect::<Vec<_>>()
        };
        let (fast, slow) = tokio::join!(
            fast.take(3).collect::<Vec<_>>(),
            slow.then(|pod| async move {
                tokio::task::yield_now().await;
                pod
            })
            .take(3)
            .collect::<Vec<_>>()
        );
        sender.await.unwrap();
        assert_eq!(names(fast), ["a", "b", "c"]);
        assert_eq!(names(slow), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_closed_subscription_does_not_stop_the_others() {
        let (fanout, [closed, mut open]) = Fanout::<Pod>::new(2);
        drop(closed);
        fanout.send(Arc::new(pod("a"))).await;
        fanout.send(Arc::new(pod("b"))).await;
        drop(fanout);
        let names: Vec<_> = open
            .by_ref()
            .filter_map(|p| futures::future::ready(p.metadata.name.clone()))
            .collect()
            .await;
        assert_eq!(names, ["a", "b"]);
    }
}
