//! What the kubelet's webhook authorizer asks about a request, and who a client certificate
//! names (eci kubelet-api.md §2).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The `SubjectAccessReview` resource attributes of a request: resource `nodes`, the node's
/// name, this verb and subresource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// The kubelet's mapping: the verb from the method, the subresource from the path
/// (`/stats/*` → `stats`, `/metrics/*` → `metrics`, `/logs/*` → `log`, the rest → `proxy`).
pub fn attributes(method: &str, path: &str) -> Attributes {
    let verb = match method {
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "get",
    };
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let subresource = if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else {
        "proxy"
    };
    Attributes { verb, subresource }
}

/// Who made a request, as the API server's authenticators would say.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    /// The user's UID, when TokenReview gave one.
    pub uid: Option<String>,
    /// Extra attributes from TokenReview, passed on to SubjectAccessReview.
    pub extra: Vec<(String, Vec<String>)>,
}

/// The identity of a verified client certificate: user from the subject's CN, groups from its
/// O values, like the API server's x509 authenticator. `None` without a CN.
pub fn certificate_identity(der: &[u8]) -> Option<Identity> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = certificate.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(Identity {
        user,
        groups,
        uid: None,
        extra: Vec::new(),
    })
}

/// A small cache whose entries expire, for review results (TokenReview 2 min, allowed 5 min,
/// denied 30 s, as virtual-kubelet does). At `capacity` the expired entries go first, then
/// everything: a full cache only costs extra reviews.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(_, expires)| now < *expires)
            .map(|(value, _)| value.clone())
    }

    pub fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, expires)| now < *expires);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        let expires = now.checked_add(ttl).unwrap_or(now);
        self.entries.insert(key, (value, expires));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_follow_the_kubelet() {
        let of = |method, path| {
            let a = attributes(method, path);
            (a.verb, a.subresource)
        };
        assert_eq!(of("GET", "/stats/summary"), ("get", "stats"));
        assert_eq!(of("GET", "/metrics/resource"), ("get", "metrics"));
        assert_eq!(of("GET", "/metrics"), ("get", "metrics"));
        assert_eq!(of("GET", "/logs/"), ("get", "log"));
        assert_eq!(of("GET", "/containerLogs/ns/pod/c"), ("get", "proxy"));
        assert_eq!(of("POST", "/exec/ns/pod/c"), ("create", "proxy"));
        assert_eq!(of("GET", "/pods"), ("get", "proxy"));
        assert_eq!(of("GET", "/metricsfoo"), ("get", "proxy"));
        assert_eq!(of("DELETE", "/x"), ("delete", "proxy"));
        assert_eq!(of("PUT", "/x").0, "update");
        assert_eq!(of("PATCH", "/x").0, "patch");
    }

    #[test]
    fn a_certificate_names_its_user_and_groups() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "kubeadm:cluster-admins");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let identity = certificate_identity(cert.der()).unwrap();
        assert_eq!(identity.user, "kube-apiserver-kubelet-client");
        assert_eq!(identity.groups, ["kubeadm:cluster-admins"]);

        let mut broken = cert.der().to_vec();
        broken.truncate(10);
        assert!(certificate_identity(&broken).is_none());
    }

    #[test]
    fn cached_entries_expire_and_a_full_cache_makes_room() {
        let now = Instant::now();
        let mut cache = TtlCache::new(2);
        cache.insert("a", true, Duration::from_secs(30), now);
        assert_eq!(cache.get(&"a", now), Some(true));
        assert_eq!(cache.get(&"a", now + Duration::from_secs(30)), None);
        cache.insert("b", false, Duration::from_secs(1), now);
        cache.insert(
            "c",
            true,
            Duration::from_secs(60),
            now + Duration::from_secs(2),
        );
        assert_eq!(cache.len(), 2, "the expired entry made room");
        assert_eq!(cache.get(&"c", now + Duration::from_secs(2)), Some(true));
    }
}
