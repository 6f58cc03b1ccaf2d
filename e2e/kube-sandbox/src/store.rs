//! The object store: one global resourceVersion, a bounded history of changes for watches,
//! and the write semantics of the Kubernetes API (preconditions, conflicts, status
//! subresources, generation, graceful pod deletion, finalizers, owner garbage collection).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::patch;
use crate::resources::{self, ResourceType};
use crate::selector::Selector;
use crate::strategy;

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource_label(rt)),
        )
    }

    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                resource_label(rt)
            ),
        )
    }

    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

fn resource_label(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    }
}

pub fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub resource_version: u64,
    pub type_key: String,
    pub namespace: String,
    pub kind: ChangeKind,
    pub object: Value,
}

type Key = (String, String, String);

/// Where a watch starts: the retained changes after its version, and the live feed.
pub type WatchStart = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// How a patch body is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

/// Delete options that matter here.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// Changes a live feed holds for a receiver that has not read them yet; a watch further
/// behind is closed, and resumes from the history.
pub(crate) const WATCH_FEED_CAPACITY: usize = 16_384;

pub struct Store {
    resource_version: u64,
    types: Vec<ResourceType>,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Watches from resource versions below this are gone (410).
    oldest_watchable: u64,
    changes: broadcast::Sender<Arc<Change>>,
    /// The live feed of each watched type. Watches take their own type's feed, as a real API
    /// server's watch cache is per resource: a burst of pod changes must not make a
    /// ConfigMap watch fall behind (and expire) when it has nothing to deliver.
    type_feeds: HashMap<String, broadcast::Sender<Arc<Change>>>,
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// Everything except metadata and status: what `generation` counts changes of.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (changes, _) = broadcast::channel(WATCH_FEED_CAPACITY);
        let mut store = Self {
            resource_version: 1,
            types: resources::builtin(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            oldest_watchable: 1,
            changes,
            type_feeds: HashMap::new(),
        };
        let namespaces = store.types[0].clone();
        for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let object = json!({"metadata": {"name": namespace}});
            let _created = store.create(&namespaces, None, object, Utc::now());
        }
        store
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// The types served under one group-version.
    pub fn types_in(&self, group: &str, version: &str) -> Vec<&ResourceType> {
        self.types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .collect()
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    fn key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> Key {
        let namespace = if rt.namespaced {
            namespace.unwrap_or_default()
        } else {
            ""
        };
        (rt.key(), namespace.to_string(), name.to_string())
    }

    /// Records a change and runs what its kind's strategy says follows from it.
    fn commit(&mut self, rt: &ResourceType, key: Key, kind: ChangeKind, object: Value) -> Value {
        let namespace = key.1.clone();
        let object = self.record(rt, key, kind, object);
        (strategy::of(rt).after_commit)(self, &namespace, kind, &object);
        object
    }

    /// Serves `declared`, replacing a type of the same group, version and plural.
    pub(crate) fn declare_types(&mut self, declared: Vec<ResourceType>) {
        for declared in declared {
            self.types.retain(|t| {
                !(t.group == declared.group
                    && t.version == declared.version
                    && t.plural == declared.plural)
            });
            self.types.push(declared);
        }
    }

    /// Stores a change under a new resourceVersion and tells the watches.
    fn record(
        &mut self,
        rt: &ResourceType,
        key: Key,
        kind: ChangeKind,
        mut object: Value,
    ) -> Value {
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        match kind {
            ChangeKind::Deleted => {
                self.objects.remove(&key);
            }
            _ => {
                self.objects.insert(key.clone(), object.clone());
            }
        }
        let change = Arc::new(Change {
            resource_version: self.resource_version,
            type_key: rt.key(),
            namespace: key.1,
            kind,
            object: object.clone(),
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_watchable = dropped.resource_version + 1;
            }
        }
        if let Some(feed) = self.type_feeds.get(&change.type_key) {
            let _no_watchers = feed.send(change.clone());
        }
        let _no_watchers = self.changes.send(change);
        object
    }

    /// `spec.replicas` of a workload controller (what the disruption controller reads).
    fn replicas_of(&self, namespace: &str, kind: &str, name: &str) -> Option<i64> {
        let plural = match kind {
            "ReplicaSet" => "replicasets",
            "StatefulSet" => "statefulsets",
            "Deployment" => "deployments",
            _ => return None,
        };
        let key = (
            format!("{plural}.apps"),
            namespace.to_string(),
            name.to_string(),
        );
        self.objects
            .get(&key)
            .map(|o| o["spec"]["replicas"].as_i64().unwrap_or(1))
    }

    /// The stored objects of one type (in one namespace, or all), in key order. Keys start
    /// with the type, so this is a range, not a scan of the whole store.
    fn of_type<'a>(
        &'a self,
        type_key: &str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + use<'a> {
        let start = (
            type_key.to_string(),
            namespace.unwrap_or_default().to_string(),
            String::new(),
        );
        let type_key = type_key.to_string();
        self.objects
            .range(start..)
            .take_while(move |((t, ns, _), _)| *t == type_key && namespace.is_none_or(|n| n == ns))
    }

    /// The objects of a type (in one namespace, or all) that match the selectors, borrowed:
    /// the cluster's own controllers read every pod on every pass and must not copy them.
    pub fn scan<'a>(
        &'a self,
        rt: &ResourceType,
        namespace: Option<&'a str>,
        labels: &'a Selector,
        fields: &'a Selector,
    ) -> impl Iterator<Item = &'a Value> + use<'a> {
        self.of_type(&rt.key(), namespace.filter(|_| rt.namespaced))
            .map(|(_, object)| object)
            .filter(|object| labels.matches_labels(object) && fields.matches_fields(object))
    }

    fn objects_of<'a>(&'a self, type_key: &str, namespace: &'a str) -> Vec<&'a Value> {
        self.of_type(type_key, Some(namespace))
            .map(|(_, o)| o)
            .collect()
    }

    /// Recomputes the status of the namespace's PodDisruptionBudgets, as the disruption
    /// controller would, writing only those that changed.
    pub(crate) fn refresh_budgets(&mut self, namespace: &str) {
        let Some(budget_type) = self.find_type("policy", "v1", "poddisruptionbudgets") else {
            return;
        };
        let budget_key = budget_type.key();
        let budgets = self.objects_of(&budget_key, namespace);
        if budgets.is_empty() {
            return;
        }
        let pods = self.objects_of("pods.", namespace);
        let replicas = |kind: &str, name: &str| self.replicas_of(namespace, kind, name);
        let statuses: Vec<(Value, Value)> = budgets
            .into_iter()
            .map(|budget| {
                let status = crate::disruption::status(budget, &pods, &replicas);
                (budget.clone(), status)
            })
            .collect();
        for (mut budget, status) in statuses {
            if budget["status"] != status {
                budget["status"] = status;
                let key = Self::key(&budget_type, Some(namespace), &name_of(&budget));
                // A status write of the budget's own: recorded without refreshing budgets again.
                self.record(&budget_type, key, ChangeKind::Modified, budget);
            }
        }
    }

    /// The eviction subresource: budgets first, then a graceful delete.
    pub fn evict(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        eviction: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let pod = self.get(rt, Some(namespace), name)?;
        let options = &eviction["deleteOptions"];
        let delete = DeleteOptions {
            grace_period_seconds: options["gracePeriodSeconds"].as_i64(),
            uid: options["preconditions"]["uid"].as_str().map(str::to_string),
            resource_version: options["preconditions"]["resourceVersion"]
                .as_str()
                .map(str::to_string),
        };
        let budget_key = self
            .find_type("policy", "v1", "poddisruptionbudgets")
            .map(|t| t.key())
            .unwrap_or_default();
        let budgets = self.objects_of(&budget_key, namespace);
        let pods = self.objects_of("pods.", namespace);
        let replicas = |kind: &str, owner: &str| self.replicas_of(namespace, kind, owner);
        if delete
            .uid
            .as_ref()
            .is_none_or(|uid| pod["metadata"]["uid"].as_str() == Some(uid.as_str()))
        {
            match crate::disruption::check(&pod, &budgets, &pods, &replicas) {
                Ok(()) => {}
                Err(crate::disruption::Refusal::Budget(why)) => {
                    return Err(ApiError::new(
                        429,
                        "TooManyRequests",
                        format!(
                            "Cannot evict pod as it would violate the pod's disruption budget. {why}"
                        ),
                    ));
                }
                Err(crate::disruption::Refusal::MultipleBudgets) => {
                    return Err(ApiError::new(
                        500,
                        "InternalError",
                        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    ));
                }
            }
        }
        // The delete checks the preconditions (a wrong UID is a 409 there).
        self.delete(rt, Some(namespace), name, &delete, now)
            .map(|_| ())
    }

    pub fn get(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(rt, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Objects of a type (in one namespace, or all), filtered, in name order, paged.
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        labels: &Selector,
        fields: &Selector,
        limit: Option<usize>,
        continue_from: Option<&str>,
    ) -> (Vec<Value>, Option<String>) {
        let type_key = rt.key();
        let after = continue_from
            .and_then(|c| c.split_once('/'))
            .map(|(ns, name)| (ns.to_string(), name.to_string()));
        let mut items = Vec::new();
        let mut next = None;
        let namespace = namespace.filter(|_| rt.namespaced);
        for ((_, ns, name), object) in self.of_type(&type_key, namespace) {
            if after
                .as_ref()
                .is_some_and(|(a_ns, a_name)| (ns, name) <= (a_ns, a_name))
            {
                continue;
            }
            if !labels.matches_labels(object) || !fields.matches_fields(object) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                next = items.last().map(|last: &Value| {
                    format!(
                        "{}/{}",
                        last["metadata"]["namespace"].as_str().unwrap_or_default(),
                        name_of(last)
                    )
                });
                break;
            }
            items.push(object.clone());
        }
        (items, next)
    }

    fn check_namespace(&self, rt: &ResourceType, namespace: Option<&str>) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        let namespace = namespace
            .ok_or_else(|| ApiError::bad_request("a namespaced resource needs a namespace"))?;
        let namespaces = &self.types[0];
        if self
            .objects
            .contains_key(&Self::key(namespaces, None, namespace))
        {
            Ok(())
        } else {
            Err(ApiError::new(
                404,
                "NotFound",
                format!("namespaces \"{namespace}\" not found"),
            ))
        }
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        object: Value,
        now: DateTime<Utc>,
    ) -> Result<Value, ApiError> {
        let (key, object) = self.prepare_create(rt, namespace, object, now)?;
        Ok(self.commit(rt, key, ChangeKind::Added, object))
    }

    /// What [`Self::create`] would store (`dryRun=All`), storing nothing.
    pub fn create_dry_run(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        object: Value,
        now: DateTime<Utc>,
    ) -> Result<Value, ApiError> {
        self.prepare_create(rt, namespace, object, now)
            .map(|(_, object)| object)
    }

    fn prepare_create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut object: Value,
        now: DateTime<Utc>,
    ) -> Result<(Key, Value), ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body is not an object"));
        }
        self.check_namespace(rt, namespace)?;
        let strategy = strategy::of(rt);
        (strategy.normalize)(&mut object);
        let meta = &mut object["metadata"];
        if !meta.is_object() {
            *meta = json!({});
        }
        if rt.namespaced {
            let given = meta["namespace"].as_str().unwrap_or_default();
            let namespace = namespace.unwrap_or_default();
            if !given.is_empty() && given != namespace {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta["namespace"] = json!(namespace);
        }
        let mut name = meta["name"].as_str().unwrap_or_default().to_string();
        if name.is_empty() {
            let prefix = meta["generateName"].as_str().unwrap_or_default();
            if prefix.is_empty() {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!("{} is invalid: metadata.name: Required value", rt.kind),
                ));
            }
            name = format!("{prefix}{}", random_suffix());
        }
        let valid_name = name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !name.starts_with(['-', '.'])
            && !name.ends_with(['-', '.']);
        if !valid_name && rt.kind != "CustomResourceDefinition" {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain",
                    rt.kind
                ),
            ));
        }
        let key = Self::key(rt, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", resource_label(rt)),
            ));
        }
        meta["name"] = json!(name);
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        meta["creationTimestamp"] = json!(timestamp(now));
        meta["generation"] = json!(1);
        if let Some(map) = meta.as_object_mut() {
            map.remove("resourceVersion");
            map.remove("deletionTimestamp");
        }
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
        (strategy.defaults)(&mut object);
        if rt.has("status")
            && !strategy.keeps_status_on_create
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        (strategy.prepare_create)(self, rt, &mut object, now);
        check_schema(rt, &name, &mut object)?;
        Ok((key, object))
    }

    /// Replaces an object (or only its status, for the status subresource).
    pub fn update(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        mut object: Value,
        subresource: Option<&str>,
    ) -> Result<Value, ApiError> {
        let strategy = strategy::of(rt);
        (strategy.normalize)(&mut object);
        let key = Self::key(rt, namespace, name);
        let current = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let given_version = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !given_version.is_empty()
            && given_version
                != current["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
        {
            return Err(ApiError::conflict(rt, name));
        }
        if !object.is_object() {
            return Err(ApiError::bad_request("the body is not an object"));
        }
        if name_of(&object) != name && !name_of(&object).is_empty() {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let next = if subresource == Some("status") {
            let mut next = current.clone();
            next["status"] = object["status"].take();
            next
        } else {
            (strategy.defaults)(&mut object);
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
                "generation",
            ] {
                object["metadata"][field] = current["metadata"][field].clone();
            }
            if rt.has("status") {
                object["status"] = current["status"].clone();
            }
            if spec_part(&object) != spec_part(&current) {
                let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
                object["metadata"]["generation"] = json!(generation + 1);
            }
            object["apiVersion"] = json!(rt.api_version());
            object["kind"] = json!(rt.kind);
            object
        };
        let mut next = clean_nulls(next);
        check_schema(rt, name, &mut next)?;
        let finished = !next["metadata"]["deletionTimestamp"].is_null()
            && next["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
            && strategy.graceful_delete.is_none();
        if finished {
            return Ok(self.remove(rt, key, next));
        }
        Ok(self.commit(rt, key, ChangeKind::Modified, next))
    }

    /// Applies a patch. A server-side apply of an object that does not exist creates it.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
        subresource: Option<&str>,
        field_manager: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Value, ApiError> {
        let key = Self::key(rt, namespace, name);
        let Some(current) = self.objects.get(&key).cloned() else {
            if kind == PatchKind::Apply && subresource.is_none() {
                let mut object = body.clone();
                object["metadata"]["name"] = json!(name);
                record_manager(&mut object, field_manager, now);
                return self.create(rt, namespace, object, now);
            }
            return Err(ApiError::not_found(rt, name));
        };
        let mut next = current.clone();
        match kind {
            PatchKind::Merge => patch::merge(&mut next, body),
            PatchKind::Strategic | PatchKind::Apply => patch::strategic(&mut next, body),
            PatchKind::Json => {
                patch::json_patch(&mut next, body).map_err(|e| ApiError::new(422, "Invalid", e))?
            }
        }
        if kind == PatchKind::Apply {
            record_manager(&mut next, field_manager, now);
        }
        if let (Some(asked), Some(actual)) = (
            body["metadata"]["uid"].as_str(),
            current["metadata"]["uid"].as_str(),
        ) && asked != actual
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {asked}, UID in object meta: {actual}",
                    resource_label(rt)
                ),
            ));
        }
        let precondition = body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if kind != PatchKind::Json
            && !precondition.is_empty()
            && Some(precondition) != current["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(rt, name));
        }
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        self.update(rt, namespace, name, next, subresource)
    }

    fn remove(&mut self, rt: &ResourceType, key: Key, object: Value) -> Value {
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let removed = self.commit(rt, key, ChangeKind::Deleted, object);
        self.collect_dependents(&uid);
        removed
    }

    /// Deletes what `uid` owned, as the garbage collector would (in the background).
    fn collect_dependents(&mut self, uid: &str) {
        if uid.is_empty() {
            return;
        }
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (type_key, namespace, name) in dependents {
            if let Some(rt) = self.types.iter().find(|t| t.key() == type_key).cloned() {
                let _gone_already = self.delete(
                    &rt,
                    Some(&namespace),
                    &name,
                    &DeleteOptions::default(),
                    Utc::now(),
                );
            }
        }
    }

    /// Deletes with Kubernetes semantics: preconditions, finalizers, and graceful deletion of
    /// pods bound to a node (their agent removes them with grace 0, as a kubelet would).
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
        now: DateTime<Utc>,
    ) -> Result<Value, ApiError> {
        let key = Self::key(rt, namespace, name);
        let mut object = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let meta = &object["metadata"];
        if let Some(uid) = &options.uid
            && meta["uid"].as_str() != Some(uid.as_str())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta["uid"].as_str().unwrap_or_default()
                ),
            ));
        }
        if let Some(version) = &options.resource_version
            && meta["resourceVersion"].as_str() != Some(version.as_str())
        {
            return Err(ApiError::conflict(rt, name));
        }
        let has_finalizers = meta["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        let grace = strategy::of(rt).graceful_delete.map_or(0, |grace_period| {
            grace_period(&object, options.grace_period_seconds)
        });
        if grace > 0 || has_finalizers {
            let existing = object["metadata"]["deletionGracePeriodSeconds"].as_i64();
            if existing.is_some_and(|g| g <= grace) {
                return Ok(object);
            }
            object["metadata"]["deletionTimestamp"] =
                json!(timestamp(now + chrono::TimeDelta::seconds(grace)));
            object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            return Ok(self.commit(rt, key, ChangeKind::Modified, object));
        }
        Ok(self.remove(rt, key, object))
    }

    /// Changes after `from` (exclusive) of one type, and a receiver for what follows; 410 when
    /// `from` has been compacted away.
    pub fn watch(&mut self, rt: &ResourceType, from: u64) -> Result<WatchStart, ApiError> {
        if from + 1 < self.oldest_watchable {
            return Err(ApiError::new(
                410,
                "Expired",
                format!(
                    "too old resource version: {from} ({})",
                    self.oldest_watchable
                ),
            ));
        }
        let type_key = rt.key();
        let backlog = self
            .history
            .iter()
            .filter(|c| c.resource_version > from && c.type_key == type_key)
            .cloned()
            .collect();
        let feed = self
            .type_feeds
            .entry(type_key)
            .or_insert_with(|| broadcast::channel(WATCH_FEED_CAPACITY).0)
            .subscribe();
        Ok((backlog, feed))
    }
}

/// Schema defaulting and validation of custom resources, as the API server does on write.
fn check_schema(rt: &ResourceType, name: &str, object: &mut Value) -> Result<(), ApiError> {
    let Some(schema) = &rt.schema else {
        return Ok(());
    };
    crate::schema::apply_defaults(schema, object);
    crate::schema::validate(schema, object, "").map_err(|problem| {
        ApiError::new(
            422,
            "Invalid",
            format!(
                "{}.{} \"{name}\" is invalid: {}",
                rt.kind,
                rt.group,
                problem.trim_start_matches('.')
            ),
        )
    })
}

fn record_manager(object: &mut Value, manager: Option<&str>, now: DateTime<Utc>) {
    let Some(manager) = manager else {
        return;
    };
    let entry = json!({"manager": manager, "operation": "Apply", "apiVersion": object["apiVersion"], "time": timestamp(now), "fieldsType": "FieldsV1", "fieldsV1": {}});
    let managed = &mut object["metadata"]["managedFields"];
    let mut list = managed.as_array().cloned().unwrap_or_default();
    list.retain(|m| m["manager"] != manager || m["operation"] != "Apply");
    list.push(entry);
    *managed = Value::Array(list);
}

/// Merge patches can leave explicit nulls in nested maps; stored objects never hold them.
fn clean_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, clean_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(clean_nulls).collect()),
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_create_answers_the_object_and_stores_nothing() {
        let mut store = Store::new(100);
        let pods = store.find_type("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"generateName": "p-"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let now = Utc::now();
        let answered = store
            .create_dry_run(&pods, Some("default"), pod.clone(), now)
            .unwrap();
        assert!(
            answered["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("p-")
        );
        assert_eq!(answered["spec"]["restartPolicy"], "Always", "defaulted");
        let all = Selector::default();
        assert!(store.list(&pods, None, &all, &all, None, None).0.is_empty());
        store.create(&pods, Some("default"), pod, now).unwrap();
        assert_eq!(store.list(&pods, None, &all, &all, None, None).0.len(), 1);
    }

    /// A real API server's watch cache is per resource: pod churn never makes a ConfigMap
    /// watch fall behind. (With one feed for every type, the ConfigMap watch below was told
    /// to relist.)
    #[test]
    fn a_burst_of_one_type_does_not_expire_the_watches_of_another() {
        let mut store = Store::new(100);
        let pods = store.find_type("", "v1", "pods").unwrap();
        let config_maps = store.find_type("", "v1", "configmaps").unwrap();
        let now = Utc::now();
        let now_at = store.resource_version;
        let (_, mut config_map_feed) = store.watch(&config_maps, now_at).unwrap();
        let (_, mut pod_feed) = store.watch(&pods, now_at).unwrap();
        for i in 0..=WATCH_FEED_CAPACITY {
            let pod = json!({"metadata": {"name": format!("p-{i}")},
                "spec": {"containers": [{"name": "c", "image": "i"}]}});
            store.create(&pods, Some("default"), pod, now).unwrap();
        }
        store
            .create(
                &config_maps,
                Some("default"),
                json!({"metadata": {"name": "cm"}}),
                now,
            )
            .unwrap();
        let change = config_map_feed.try_recv().unwrap();
        assert_eq!(change.object["metadata"]["name"], "cm");
        assert!(
            matches!(
                pod_feed.try_recv(),
                Err(broadcast::error::TryRecvError::Lagged(_))
            ),
            "a pod watch that read nothing is behind"
        );
    }
}
