//! PodDisruptionBudgets: their status from the pods they select, and whether an eviction may
//! go ahead (what the eviction subresource checks before deleting).

use std::borrow::Borrow;

use serde_json::{Value, json};

use crate::selector::Selector;

/// A pod counts as healthy when it is Ready and not being deleted.
pub fn healthy(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

fn selected<'a, P: Borrow<Value>>(pdb: &Value, pods: &'a [P]) -> Vec<&'a Value> {
    let selector = Selector::from_label_selector(&pdb["spec"]["selector"]);
    pods.iter()
        .map(Borrow::borrow)
        .filter(|p: &&Value| {
            p["metadata"]["namespace"] == pdb["metadata"]["namespace"] && selector.matches_labels(p)
        })
        .collect()
}

/// An int-or-percent against `total`, rounded up as the disruption controller does.
fn scaled(value: &Value, total: i64) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let percent: f64 = s.strip_suffix('%')?.parse().ok()?;
            Some((percent * total as f64 / 100.0).ceil() as i64)
        }
        _ => None,
    }
}

/// The controller owning a pod: `(kind, name)`.
pub fn controller_of(pod: &Value) -> Option<(String, String)> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or_default().to_string(),
                r["name"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// How many pods the budget expects: the replicas of the controllers owning the selected
/// pods (as the disruption controller reads their scale), or, for pods without a known
/// controller, the pods themselves.
fn expected_pods(selected: &[&Value], replicas: &dyn Fn(&str, &str) -> Option<i64>) -> i64 {
    let mut owners: Vec<(String, String)> = Vec::new();
    let mut bare = 0;
    for pod in selected {
        match controller_of(pod).filter(|(kind, name)| replicas(kind, name).is_some()) {
            Some(owner) if !owners.contains(&owner) => owners.push(owner),
            Some(_) => {}
            None => bare += 1,
        }
    }
    bare + owners
        .iter()
        .filter_map(|(kind, name)| replicas(kind, name))
        .sum::<i64>()
}

/// The status the disruption controller would write for `pdb`, given the namespace's pods
/// and the replicas of their controllers.
pub fn status<P: Borrow<Value>>(
    pdb: &Value,
    pods: &[P],
    replicas: &dyn Fn(&str, &str) -> Option<i64>,
) -> Value {
    let selected = selected(pdb, pods);
    let expected = expected_pods(&selected, replicas);
    let current_healthy = selected.iter().filter(|p| healthy(p)).count() as i64;
    let spec = &pdb["spec"];
    let desired_healthy = match (
        scaled(&spec["minAvailable"], expected),
        scaled(&spec["maxUnavailable"], expected),
    ) {
        (Some(min), _) => min,
        (None, Some(max)) => (expected - max).max(0),
        (None, None) => expected,
    };
    let allowed = (current_healthy - desired_healthy).max(0);
    json!({
        "observedGeneration": pdb["metadata"]["generation"],
        "currentHealthy": current_healthy,
        "desiredHealthy": desired_healthy,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "conditions": [{
            "type": "DisruptionAllowed",
            "status": if allowed > 0 { "True" } else { "False" },
            "reason": if allowed > 0 { "SufficientPods" } else { "InsufficientPods" },
            "message": "",
            "observedGeneration": pdb["metadata"]["generation"],
            "lastTransitionTime": pdb["metadata"]["creationTimestamp"],
        }],
    })
}

/// Why an eviction is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 429: the budget allows no disruption now.
    Budget(String),
    /// 500: the pod is covered by several budgets.
    MultipleBudgets,
}

/// Checks the budgets covering `pod`. A pod that is already terminating may always go; an
/// unhealthy pod may go while the budget is met (`IfHealthyBudget`) or always
/// (`AlwaysAllow`).
pub fn check<P: Borrow<Value>>(
    pod: &Value,
    pdbs: &[P],
    pods: &[P],
    replicas: &dyn Fn(&str, &str) -> Option<i64>,
) -> Result<(), Refusal> {
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let covering: Vec<&Value> = pdbs
        .iter()
        .map(Borrow::borrow)
        .filter(|pdb| selected(pdb, std::slice::from_ref(pod)).len() == 1)
        .collect();
    match covering.as_slice() {
        [] => Ok(()),
        [pdb] => {
            let status = status(pdb, pods, replicas);
            let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
            let current = status["currentHealthy"].as_i64().unwrap_or(0);
            let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
            let policy = pdb["spec"]["unhealthyPodEvictionPolicy"]
                .as_str()
                .unwrap_or("IfHealthyBudget");
            let unhealthy_may_go = !healthy(pod) && (policy == "AlwaysAllow" || current >= desired);
            if allowed > 0 || unhealthy_may_go {
                Ok(())
            } else {
                Err(Refusal::Budget(format!(
                    "The disruption budget {} needs {desired} healthy pods and has {current} currently",
                    pdb["metadata"]["name"].as_str().unwrap_or_default()
                )))
            }
        }
        _ => Err(Refusal::MultipleBudgets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": "web"},
                            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-1", "controller": true}]},
               "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn three(kind: &str, name: &str) -> Option<i64> {
        (kind == "ReplicaSet" && name == "web-1").then_some(3)
    }

    fn unknown(_: &str, _: &str) -> Option<i64> {
        None
    }

    fn pdb(spec: Value) -> Value {
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": {"app": "web"}});
        json!({"metadata": {"name": "web", "namespace": "d", "generation": 1}, "spec": spec})
    }

    #[test]
    fn status_counts_healthy_and_allowed_disruptions() {
        let pods = vec![pod("a", true), pod("b", true), pod("c", false)];
        let status = status(&pdb(json!({"maxUnavailable": 1})), &pods, &three);
        assert_eq!(
            (
                status["currentHealthy"].as_i64(),
                status["desiredHealthy"].as_i64(),
                status["disruptionsAllowed"].as_i64()
            ),
            (Some(2), Some(2), Some(0))
        );
        let status = super::status(&pdb(json!({"minAvailable": "50%"})), &pods, &three);
        assert_eq!(
            (
                status["desiredHealthy"].as_i64(),
                status["disruptionsAllowed"].as_i64()
            ),
            (Some(2), Some(0))
        );
        let status = super::status(&pdb(json!({"minAvailable": 1})), &pods, &three);
        assert_eq!(status["disruptionsAllowed"].as_i64(), Some(1));
        let status = super::status(&pdb(json!({"maxUnavailable": 1})), &pods, &unknown);
        assert_eq!(
            status["expectedPods"].as_i64(),
            Some(3),
            "bare pods count themselves"
        );
    }

    #[test]
    fn evictions_respect_budgets() {
        let pods = vec![pod("a", true), pod("b", true), pod("c", true)];
        let budget = vec![pdb(json!({"maxUnavailable": 1}))];
        assert_eq!(check(&pods[0], &budget, &pods, &three), Ok(()));
        let mut terminating = pods.clone();
        terminating[0]["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(matches!(
            check(&terminating[1], &budget, &terminating, &three),
            Err(Refusal::Budget(_))
        ));
        assert_eq!(
            check(&terminating[0], &budget, &terminating, &three),
            Ok(()),
            "a terminating pod may go"
        );
        terminating.push(pod("replacement", true));
        assert_eq!(
            check(&terminating[1], &budget, &terminating, &three),
            Ok(()),
            "the replacement restores the budget"
        );
        let two = vec![
            pdb(json!({"maxUnavailable": 1})),
            pdb(json!({"minAvailable": 1})),
        ];
        assert_eq!(
            check(&pods[0], &two, &pods, &three),
            Err(Refusal::MultipleBudgets)
        );
        assert_eq!(check(&pods[0], &[], &pods, &three), Ok(()));
    }
}
