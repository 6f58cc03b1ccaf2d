//! `TokenReview` and `SubjectAccessReview`, for servers that delegate authentication and
//! authorization to the API server (vk-eci's kubelet API does, like a kubelet in webhook
//! mode).
//!
//! Tokens: those the sandbox issued through `serviceaccounts/token` (`kubectl create token`)
//! name their ServiceAccount; anything else is not authenticated. Access: `system:masters` may
//! do anything; everyone else gets what the stored (Cluster)Roles bound to them grant (verbs,
//! API groups, resources with `resource/subresource` and `*`, resource names). The sandbox's
//! own API stays open to every client; only these reviews are evaluated.

use serde_json::{Value, json};

use crate::Sandbox;

/// The prefix of tokens the sandbox's TokenRequest issues: `sandbox-token.<ns>.<name>.<id>`.
pub const TOKEN_PREFIX: &str = "sandbox-token.";

/// Fills `status` of a TokenReview.
pub fn token_review(sandbox: &Sandbox, mut review: Value) -> Value {
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let account = token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|rest| {
            let mut parts = rest.splitn(3, '.');
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty());
    let existing = account.as_ref().and_then(|(ns, name)| {
        sandbox
            .objects("", "v1", "serviceaccounts")
            .into_iter()
            .find(|sa| sa["metadata"]["namespace"] == *ns && sa["metadata"]["name"] == *name)
    });
    review["status"] = match (account, existing) {
        (Some((ns, name)), Some(sa)) => json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{ns}:{name}"),
                "uid": sa["metadata"]["uid"],
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
            },
        }),
        _ => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    review
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// What a SubjectAccessReview asks.
struct Question {
    user: String,
    groups: Vec<String>,
    verb: String,
    group: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
}

fn subject_matches(subject: &Value, question: &Question, binding_namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => name == question.user,
        "Group" => question.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let namespace = subject["namespace"].as_str().unwrap_or(binding_namespace);
            question.user == format!("system:serviceaccount:{namespace}:{name}")
        }
        _ => false,
    }
}

fn rule_allows(rule: &Value, question: &Question) -> bool {
    let any = |list: &[String], wanted: &str| list.iter().any(|v| v == "*" || v == wanted);
    let resources = strings(&rule["resources"]);
    let resource_ok = if question.subresource.is_empty() {
        any(&resources, &question.resource)
    } else {
        let full = format!("{}/{}", question.resource, question.subresource);
        let any_sub = format!("*/{}", question.subresource);
        resources
            .iter()
            .any(|r| r == "*" || *r == full || *r == any_sub)
    };
    let names = strings(&rule["resourceNames"]);
    any(&strings(&rule["verbs"]), &question.verb)
        && any(&strings(&rule["apiGroups"]), &question.group)
        && resource_ok
        && (names.is_empty() || names.contains(&question.name))
}

fn role_rules(sandbox: &Sandbox, role_ref: &Value, binding_namespace: Option<&str>) -> Vec<Value> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let (plural, namespace) = match role_ref["kind"].as_str() {
        Some("ClusterRole") => ("clusterroles", None),
        Some("Role") => ("roles", binding_namespace),
        _ => return Vec::new(),
    };
    sandbox
        .objects("rbac.authorization.k8s.io", "v1", plural)
        .into_iter()
        .filter(|role| {
            role["metadata"]["name"] == name
                && namespace.is_none_or(|ns| role["metadata"]["namespace"] == ns)
        })
        .flat_map(|role| role["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn allowed(sandbox: &Sandbox, question: &Question) -> bool {
    if question.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    let bindings = sandbox
        .objects("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
        .into_iter()
        .map(|b| (b, None))
        .chain(
            sandbox
                .objects("rbac.authorization.k8s.io", "v1", "rolebindings")
                .into_iter()
                .filter(|b| b["metadata"]["namespace"] == question.namespace.as_str())
                .map(|b| (b, Some(question.namespace.clone()))),
        );
    for (binding, namespace) in bindings {
        let binding_namespace = binding["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let bound = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| subject_matches(s, question, &binding_namespace));
        if bound
            && role_rules(sandbox, &binding["roleRef"], namespace.as_deref())
                .iter()
                .any(|rule| rule_allows(rule, question))
        {
            return true;
        }
    }
    false
}

/// Fills `status` of a SubjectAccessReview (resource attributes; non-resource requests are
/// allowed only to `system:masters`).
pub fn subject_access_review(sandbox: &Sandbox, mut review: Value) -> Value {
    let spec = &review["spec"];
    let attributes = &spec["resourceAttributes"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let question = Question {
        user: text(&spec["user"]),
        groups: strings(&spec["groups"]),
        verb: text(&attributes["verb"]),
        group: text(&attributes["group"]),
        resource: text(&attributes["resource"]),
        subresource: text(&attributes["subresource"]),
        namespace: text(&attributes["namespace"]),
        name: text(&attributes["name"]),
    };
    let is_resource = attributes.is_object();
    let allow = if is_resource {
        allowed(sandbox, &question)
    } else {
        question.groups.iter().any(|g| g == "system:masters")
    };
    review["status"] = if allow {
        json!({"allowed": true, "reason": "allowed by the sandbox's RBAC"})
    } else {
        json!({"allowed": false, "reason": format!(
            "no RBAC rule lets {} {} {}/{}", question.user, question.verb, question.resource, question.subresource
        )})
    };
    review
}
