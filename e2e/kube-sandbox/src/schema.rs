//! Structural schemas of custom resources: defaulting, and validation of types, required
//! fields, enums, string patterns and lengths, and numeric bounds (CEL rules are not
//! evaluated here; see e2e/README.md).

use serde_json::Value;

/// Fills in schema defaults where fields are absent, as the API server does on write.
pub fn apply_defaults(schema: &Value, object: &mut Value) {
    let Some(properties) = schema["properties"].as_object() else {
        if let (Some(items), Some(list)) = (schema.get("items"), object.as_array_mut()) {
            for item in list {
                apply_defaults(items, item);
            }
        }
        return;
    };
    let Some(map) = object.as_object_mut() else {
        return;
    };
    for (name, property) in properties {
        if !map.contains_key(name)
            && let Some(default) = property.get("default")
        {
            map.insert(name.clone(), default.clone());
        }
        if let Some(child) = map.get_mut(name) {
            apply_defaults(property, child);
        }
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        "number" => value.is_number(),
        _ => true,
    }
}

/// The first violation of `schema` in `value`, as `path: problem`.
pub fn validate(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let int_or_string = schema["x-kubernetes-int-or-string"].as_bool() == Some(true);
    if int_or_string {
        if !(value.is_string() || value.as_i64().is_some()) {
            return Err(format!(
                "{path}: Invalid value: must be an integer or a string"
            ));
        }
    } else if let Some(expected) = schema["type"].as_str()
        && !type_matches(expected, value)
    {
        return Err(format!(
            "{path}: Invalid value: \"{}\": must be of type {expected}",
            value_text(value)
        ));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let options: Vec<String> = allowed.iter().map(value_text).collect();
        return Err(format!(
            "{path}: Unsupported value: \"{}\": supported values: \"{}\"",
            value_text(value),
            options.join("\", \"")
        ));
    }
    bounds(schema, value, path)?;
    if let Some(object) = value.as_object() {
        for required in schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if object.get(required).is_none_or(Value::is_null) {
                return Err(format!("{path}.{required}: Required value"));
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (name, property) in properties {
                if let Some(child) = object.get(name) {
                    validate(property, child, &format!("{path}.{name}"))?;
                }
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (index, item) in list.iter().enumerate() {
            validate(items, item, &format!("{path}[{index}]"))?;
        }
    }
    Ok(())
}

/// `pattern`, `minLength`/`maxLength` and `minimum`/`maximum`, with the API server's messages.
fn bounds(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let field = path.trim_start_matches('.');
    if let Some(text) = value.as_str() {
        let length = text.len() as u64;
        if let Some(max) = schema["maxLength"].as_u64()
            && length > max
        {
            return Err(format!(
                "{path}: Too long: may not be more than {max} bytes"
            ));
        }
        if let Some(min) = schema["minLength"].as_u64()
            && length < min
        {
            return Err(format!(
                "{path}: Invalid value: \"{text}\": {field} in body should be at least {min} chars long"
            ));
        }
        if let Some(pattern) = schema["pattern"].as_str()
            && let Ok(regex) = regex::Regex::new(pattern)
            && !regex.is_match(text)
        {
            return Err(format!(
                "{path}: Invalid value: \"{text}\": {field} in body should match '{pattern}'"
            ));
        }
    }
    if let Some(number) = value.as_f64().filter(|_| value.is_number()) {
        if let Some(max) = schema["maximum"].as_f64()
            && number > max
        {
            return Err(format!(
                "{path}: Invalid value: {value}: {field} in body should be less than or equal to {max}"
            ));
        }
        if let Some(min) = schema["minimum"].as_f64()
            && number < min
        {
            return Err(format!(
                "{path}: Invalid value: {value}: {field} in body should be greater than or equal to {min}"
            ));
        }
    }
    Ok(())
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"},
            "strategy": {"type": "string", "enum": ["Surge", "Evict"], "default": "Surge"},
            "count": {"type": "integer", "minimum": 1.0, "maximum": 1000.0},
            "wait": {"type": "string", "pattern": "^[0-9]{1,3}s$", "maxLength": 4, "minLength": 2},
            "surge": {"x-kubernetes-int-or-string": true},
            "items": {"type": "array", "items": {"type": "object", "properties": {"mode": {"type": "string", "default": "a"}}}},
        }}}})
    }

    #[test]
    fn defaults_fill_absent_fields_only() {
        let mut object = json!({"spec": {"name": "x", "items": [{}, {"mode": "b"}]}});
        apply_defaults(&schema(), &mut object);
        assert_eq!(object["spec"]["strategy"], "Surge");
        assert_eq!(
            object["spec"]["items"],
            json!([{"mode": "a"}, {"mode": "b"}])
        );
    }

    #[test]
    fn validation_names_the_field() {
        let ok = json!({"spec": {"name": "x", "strategy": "Evict", "count": 3, "surge": "25%", "wait": "30s"}});
        assert_eq!(validate(&schema(), &ok, ""), Ok(()));
        for (bad, expected) in [
            (json!({"spec": {}}), ".spec.name: Required value"),
            (
                json!({"spec": {"name": "x", "strategy": "Yolo"}}),
                ".spec.strategy: Unsupported value",
            ),
            (
                json!({"spec": {"name": "x", "count": "three"}}),
                ".spec.count: Invalid value",
            ),
            (
                json!({"spec": {"name": "x", "surge": true}}),
                ".spec.surge: Invalid value",
            ),
            (
                json!({"spec": {"name": "x", "count": 1001}}),
                ".spec.count: Invalid value: 1001: spec.count in body should be less than or equal to 1000",
            ),
            (
                json!({"spec": {"name": "x", "count": 0}}),
                ".spec.count: Invalid value: 0: spec.count in body should be greater than or equal to 1",
            ),
            (
                json!({"spec": {"name": "x", "wait": "9999999s"}}),
                ".spec.wait: Too long: may not be more than 4 bytes",
            ),
            (
                json!({"spec": {"name": "x", "wait": "1m"}}),
                ".spec.wait: Invalid value: \"1m\": spec.wait in body should match '^[0-9]{1,3}s$'",
            ),
            (
                json!({"spec": {"name": "x", "wait": "s"}}),
                ".spec.wait: Invalid value: \"s\": spec.wait in body should be at least 2 chars long",
            ),
        ] {
            let error = validate(&schema(), &bad, "").unwrap_err();
            assert!(error.starts_with(expected), "{error}");
        }
    }
}
