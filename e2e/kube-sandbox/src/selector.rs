//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!exists`) and field selectors.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label or field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn set(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl Selector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top(text) {
            let requirement = if let Some((key, values)) = part.split_once(" notin ") {
                Requirement::NotIn(
                    key.trim().into(),
                    set(values).ok_or(format!("bad set in `{part}`"))?,
                )
            } else if let Some((key, values)) = part.split_once(" in ") {
                Requirement::In(
                    key.trim().into(),
                    set(values).ok_or(format!("bad set in `{part}`"))?,
                )
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once("==") {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once('=') {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            let key = match &requirement {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k) => k,
            };
            if key.is_empty() || key.contains(' ') {
                return Err(format!("invalid selector requirement `{part}`"));
            }
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Matches against a lookup of keys (labels, or field paths).
    pub fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => lookup(k).as_deref() == Some(v.as_str()),
            Requirement::NotEquals(k, v) => lookup(k).as_deref() != Some(v.as_str()),
            Requirement::In(k, vs) => lookup(k).is_some_and(|x| vs.contains(&x)),
            Requirement::NotIn(k, vs) => lookup(k).is_none_or(|x| !vs.contains(&x)),
            Requirement::Exists(k) => lookup(k).is_some(),
            Requirement::NotExists(k) => lookup(k).is_none(),
        })
    }

    /// The value `key` must equal for anything to match (`key=value` or `key==value`), as
    /// Kubernetes' `RequiresExactMatch`.
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        self.0.iter().find_map(|r| match r {
            Requirement::Equals(k, v) if k == key => Some(v.as_str()),
            _ => None,
        })
    }

    pub fn matches_labels(&self, object: &Value) -> bool {
        self.matches(|key| {
            object["metadata"]["labels"][key]
                .as_str()
                .map(str::to_string)
        })
    }

    /// Field selectors address dotted paths (`spec.nodeName`, `status.phase`,
    /// `metadata.name`); an absent field reads as the empty string, as on a real server.
    pub fn matches_fields(&self, object: &Value) -> bool {
        self.matches(|path| {
            let mut value = object;
            for segment in path.split('.') {
                value = &value[segment];
            }
            Some(match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
        })
    }

    /// A LabelSelector object (`matchLabels`, `matchExpressions`) as a selector.
    pub fn from_label_selector(selector: &Value) -> Self {
        let mut requirements = Vec::new();
        for (key, value) in selector["matchLabels"].as_object().into_iter().flatten() {
            requirements.push(Requirement::Equals(
                key.clone(),
                value.as_str().unwrap_or_default().into(),
            ));
        }
        for expression in selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = expression["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            requirements.push(match expression["operator"].as_str().unwrap_or_default() {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                _ => Requirement::NotExists(key),
            });
        }
        Self(requirements)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selectors_cover_every_operator() {
        let object = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        for (selector, expected) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier in (back)", false),
        ] {
            assert_eq!(
                Selector::parse(selector).unwrap().matches_labels(&object),
                expected,
                "{selector}"
            );
        }
        assert!(Selector::parse("a b").is_err());
    }

    #[test]
    fn field_selectors_read_dotted_paths() {
        let pod = json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "vk"}, "status": {"phase": "Running"}});
        assert!(
            Selector::parse("spec.nodeName=vk,status.phase!=Failed")
                .unwrap()
                .matches_fields(&pod)
        );
        assert!(
            !Selector::parse("metadata.name=q")
                .unwrap()
                .matches_fields(&pod)
        );
        let unscheduled = json!({"spec": {}});
        assert!(
            Selector::parse("spec.nodeName=")
                .unwrap()
                .matches_fields(&unscheduled)
        );
    }

    #[test]
    fn an_exact_match_is_read_from_any_term() {
        let selector = Selector::parse("spec.nodeName=vk,metadata.name==eci-profile").unwrap();
        assert_eq!(
            selector.requires_exact_match("metadata.name"),
            Some("eci-profile")
        );
        assert_eq!(
            Selector::parse("metadata.name!=x")
                .unwrap()
                .requires_exact_match("metadata.name"),
            None
        );
    }

    #[test]
    fn label_selector_objects_convert() {
        let selector = Selector::from_label_selector(
            &json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}),
        );
        assert!(
            selector
                .matches_labels(&json!({"metadata": {"labels": {"app": "web", "tier": "front"}}}))
        );
        assert!(!selector.matches_labels(&json!({"metadata": {"labels": {"app": "web"}}})));
    }
}
