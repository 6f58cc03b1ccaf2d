//! JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic merge patch for the
//! list merge keys vk-eci and kubectl rely on.

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    merge_with(target, patch, false);
}

/// Strategic merge: like a merge patch, but lists of objects that share a merge key (`name`,
/// `type`, `containerPort`, `uid`, `ip`, `key`) merge element by element, and
/// `$patch: delete` removes an element.
pub fn strategic(target: &mut Value, patch: &Value) {
    merge_with(target, patch, true);
}

const MERGE_KEYS: &[&str] = &[
    "name",
    "type",
    "containerPort",
    "uid",
    "ip",
    "key",
    "devicePath",
    "mountPath",
];

fn merge_key(items: &[Value]) -> Option<&'static str> {
    MERGE_KEYS.iter().copied().find(|key| {
        !items.is_empty()
            && items
                .iter()
                .all(|i| i.get(key).is_some_and(|v| !v.is_null()))
    })
}

fn merge_with(target: &mut Value, patch: &Value, strategic: bool) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    for (key, value) in patch_map {
        if key.starts_with("$") {
            continue;
        }
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => merge_with(
                target_map.entry(key.clone()).or_insert(Value::Null),
                value,
                strategic,
            ),
            Value::Array(items) if strategic => {
                let existing = target_map
                    .get(key)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let key_field =
                    merge_key(items).filter(|k| existing.iter().all(|e| e.get(k).is_some()));
                match key_field {
                    Some(field) => {
                        let mut merged = existing;
                        for item in items {
                            let position =
                                merged.iter().position(|e| e.get(field) == item.get(field));
                            let delete =
                                item.get("$patch").and_then(Value::as_str) == Some("delete");
                            match (position, delete) {
                                (Some(i), true) => {
                                    merged.remove(i);
                                }
                                (Some(i), false) => merge_with(&mut merged[i], item, true),
                                (None, false) => {
                                    let mut fresh = Value::Null;
                                    merge_with(&mut fresh, item, true);
                                    merged.push(fresh);
                                }
                                (None, true) => {}
                            }
                        }
                        target_map.insert(key.clone(), Value::Array(merged));
                    }
                    None => {
                        target_map.insert(key.clone(), value.clone());
                    }
                }
            }
            _ => {
                target_map.insert(key.clone(), value.clone());
            }
        }
    }
}

fn pointer_parts(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or(format!("invalid JSON pointer `{path}`"))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, String> {
    let mut current = doc;
    for part in parts {
        current = match current {
            Value::Object(map) => map
                .get_mut(part)
                .ok_or(format!("path segment `{part}` not found"))?,
            Value::Array(items) => {
                let index: usize = part
                    .parse()
                    .map_err(|_| format!("`{part}` is not an index"))?;
                items
                    .get_mut(index)
                    .ok_or(format!("index {index} out of range"))?
            }
            _ => return Err(format!("cannot descend into `{part}`")),
        };
    }
    Ok(current)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let parts = pointer_parts(path)?;
    let Some((last, init)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, init)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse()
                    .map_err(|_| format!("`{last}` is not an index"))?
            };
            if index > items.len() {
                return Err(format!("index {index} out of range"));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("cannot add at `{path}`")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let parts = pointer_parts(path)?;
    let (last, init) = parts
        .split_last()
        .ok_or("cannot remove the whole document")?;
    match parent(doc, init)? {
        Value::Object(map) => map.remove(last).ok_or(format!("`{path}` not found")),
        Value::Array(items) => {
            let index: usize = last
                .parse()
                .map_err(|_| format!("`{last}` is not an index"))?;
            if index >= items.len() {
                return Err(format!("index {index} out of range"));
            }
            Ok(items.remove(index))
        }
        _ => Err(format!("cannot remove at `{path}`")),
    }
}

/// RFC 6902. An operation that fails (a failed `test`, a missing path) fails the patch.
pub fn json_patch(doc: &mut Value, operations: &Value) -> Result<(), String> {
    let operations = operations
        .as_array()
        .ok_or("a JSON patch is a list of operations")?;
    let mut working = doc.clone();
    for operation in operations {
        let op = operation["op"].as_str().ok_or("operation without op")?;
        let path = operation["path"].as_str().ok_or("operation without path")?;
        match op {
            "add" => add(&mut working, path, operation["value"].clone())?,
            "remove" => {
                remove(&mut working, path)?;
            }
            "replace" => {
                remove(&mut working, path)?;
                add(&mut working, path, operation["value"].clone())?;
            }
            "test" => {
                if working.pointer(path) != Some(&operation["value"]) {
                    return Err(format!("test failed at `{path}`"));
                }
            }
            "move" | "copy" => {
                let from = operation["from"].as_str().ok_or("move/copy without from")?;
                let value = if op == "move" {
                    remove(&mut working, from)?
                } else {
                    working
                        .pointer(from)
                        .cloned()
                        .ok_or(format!("`{from}` not found"))?
                };
                add(&mut working, path, value)?;
            }
            other => return Err(format!("unknown operation `{other}`")),
        }
    }
    *doc = working;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "list": [1, 2]});
        merge(&mut doc, &json!({"a": {"b": null, "d": 3}, "list": [3]}));
        assert_eq!(doc, json!({"a": {"c": 2, "d": 3}, "list": [3]}));
    }

    #[test]
    fn strategic_merge_merges_lists_by_key() {
        let mut doc = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "Other", "status": "True"}
        ]}});
        strategic(
            &mut doc,
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "New", "status": "True"}]}}),
        );
        assert_eq!(
            doc["status"]["conditions"],
            json!([
                {"type": "Ready", "status": "True"}, {"type": "Other", "status": "True"}, {"type": "New", "status": "True"}
            ])
        );
        strategic(
            &mut doc,
            &json!({"status": {"conditions": [{"type": "Other", "$patch": "delete"}]}}),
        );
        assert_eq!(doc["status"]["conditions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn json_patch_applies_all_or_nothing() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "items": [1, 2]});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "replace", "path": "/items/0", "value": 9},
                {"op": "add", "path": "/items/-", "value": 3},
                {"op": "test", "path": "/metadata/labels/a", "value": "1"},
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "items": [9, 2, 3]})
        );
        let before = doc.clone();
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/items/0"}, {"op": "test", "path": "/items/0", "value": 0}])).is_err());
        assert_eq!(doc, before);
    }
}
