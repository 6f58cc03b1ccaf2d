//! An HPA held for surges. The HPA would scale a surged workload back to its own computation,
//! so while any rotation of the workload holds a surge its `minReplicas` is raised to the
//! surged size. The HPA records the hold itself, in annotations, so every rotation sharing it
//! sees one hold: who holds it, the value vk-eci set, and the user's own value (recorded when
//! the first holder joins). The last holder to leave restores the user's value. A user who
//! changes `minReplicas` during the hold changes their own value: the hold keeps the floor a
//! surge needs, and the user's new value is what they get back. Every write carries the
//! resourceVersion it was computed from.

use std::collections::BTreeMap;

/// The rotations holding the HPA, comma-separated.
pub const HOLDERS: &str = "spot.vk-eci.io/hpa-holders";
/// The `minReplicas` vk-eci set for the hold.
pub const HELD_MIN: &str = "spot.vk-eci.io/hpa-held-min-replicas";
/// The user's own `minReplicas`, given back when the hold ends.
pub const OWN_MIN: &str = "spot.vk-eci.io/hpa-own-min-replicas";

/// Kubernetes' default `minReplicas`.
const DEFAULT_MIN: i32 = 1;

/// What the hold reads of an HPA.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HpaState {
    pub min_replicas: Option<i32>,
    pub annotations: BTreeMap<String, String>,
}

/// The change to make: `minReplicas`, and annotations to set (`Some`) or remove (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpaChange {
    pub min_replicas: i32,
    pub annotations: BTreeMap<String, Option<String>>,
}

/// The HPA's current holders.
pub fn holders(state: &HpaState) -> Vec<String> {
    state
        .annotations
        .get(HOLDERS)
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The user's own `minReplicas`: the recorded one while `minReplicas` is still what vk-eci
/// set; the current one when there is no hold or the user changed it since.
pub fn own_min(state: &HpaState) -> i32 {
    let current = state.min_replicas.unwrap_or(DEFAULT_MIN);
    let parse = |key: &str| {
        state
            .annotations
            .get(key)
            .and_then(|v| v.trim().parse().ok())
    };
    match (parse(HELD_MIN), parse(OWN_MIN)) {
        (Some(held), Some(own)) if held == current && !holders(state).is_empty() => own,
        _ => current,
    }
}

/// `holder` joins the hold, which keeps `minReplicas` at least `floor`.
pub fn hold(state: &HpaState, holder: &str, floor: i32) -> HpaChange {
    let own = own_min(state);
    let mut holders = holders(state);
    if !holders.iter().any(|h| h == holder) {
        holders.push(holder.to_string());
    }
    held(own, own.max(floor), &holders)
}

/// `holder` leaves the hold (`None` when it is not a holder). The last one gives the user's
/// value back and removes the record; the others keep `minReplicas` at least `floor`.
pub fn release(state: &HpaState, holder: &str, floor: i32) -> Option<HpaChange> {
    let mut holders = holders(state);
    let before = holders.len();
    holders.retain(|h| h != holder);
    if holders.len() == before {
        return None;
    }
    let own = own_min(state);
    if holders.is_empty() {
        return Some(HpaChange {
            min_replicas: own,
            annotations: [HOLDERS, HELD_MIN, OWN_MIN]
                .into_iter()
                .map(|key| (key.to_string(), None))
                .collect(),
        });
    }
    Some(held(own, own.max(floor), &holders))
}

fn held(own: i32, min: i32, holders: &[String]) -> HpaChange {
    HpaChange {
        min_replicas: min,
        annotations: [
            (HOLDERS, holders.join(",")),
            (HELD_MIN, min.to_string()),
            (OWN_MIN, own.to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), Some(value)))
        .collect(),
    }
}
