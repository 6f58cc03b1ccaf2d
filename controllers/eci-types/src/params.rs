//! The RPC gateway's flat parameter form.
//!
//! Structured request parameters travel as flat `name=value` pairs: lists are 1-indexed
//! (`Tag.1.Key`), nested objects are dotted without an index (`Container.1.ReadinessProbe.
//! HttpGet.Path`). Request types are plain serde structs; [`to_params`] flattens them through a
//! JSON tree and [`from_params`] rebuilds that tree from the pairs, so the client and the
//! simulator share a single definition of every request. Leaves arrive as strings on the
//! server side, so numeric and boolean fields use the lenient deserializers in this module.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A request parameter could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    /// A required parameter is absent.
    #[error("{0} is mandatory for this action.")]
    Missing(String),
    /// A parameter is present but malformed.
    #[error("Specified parameter {name} is not valid. {reason}")]
    Invalid { name: String, reason: String },
}

/// Flattens a serializable request into sorted-by-insertion `(name, value)` pairs.
///
/// `None` fields and empty lists disappear; numbers keep serde_json's rendering (`1.0`, `20`).
pub fn to_params<T: Serialize>(request: &T) -> Result<Vec<(String, String)>, serde_json::Error> {
    let value = serde_json::to_value(request)?;
    let mut out = Vec::new();
    flatten_into(&value, String::new(), &mut out);
    Ok(out)
}

fn flatten_into(value: &Value, prefix: String, out: &mut Vec<(String, String)>) {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (key, child) in map {
                flatten_into(child, join(key), out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                flatten_into(child, join(&(index + 1).to_string()), out);
            }
        }
        Value::String(text) => out.push((prefix, text.clone())),
        Value::Bool(flag) => out.push((prefix, flag.to_string())),
        Value::Number(number) => out.push((prefix, number.to_string())),
    }
}

enum Node {
    Leaf(String),
    Object(BTreeMap<String, Node>),
    List(BTreeMap<u32, Node>),
}

impl Node {
    fn into_value(self) -> Value {
        match self {
            Node::Leaf(text) => Value::String(text),
            Node::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(key, node)| (key, node.into_value()))
                    .collect::<Map<_, _>>(),
            ),
            Node::List(items) => Value::Array(items.into_values().map(Node::into_value).collect()),
        }
    }
}

/// Rebuilds the JSON tree of flat parameters: `A.1.B=x` becomes `{"A":[{"B":"x"}]}`.
///
/// Sparse indexes keep their order (`Tag.1`, `Tag.3` give a two-element list). A name that is
/// used both as a scalar and as a parent, or an index that is zero or not a number where a list
/// is expected, is an error naming the parameter.
pub fn params_to_value<'a, I>(params: I) -> Result<Value, ParamError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut root = Node::Object(BTreeMap::new());
    for (name, value) in params {
        insert(&mut root, name, name.split('.'), value)?;
    }
    Ok(root.into_value())
}

fn insert<'a>(
    node: &mut Node,
    full_name: &str,
    mut segments: impl Iterator<Item = &'a str>,
    value: &str,
) -> Result<(), ParamError> {
    let invalid = |reason: &str| ParamError::Invalid {
        name: full_name.to_string(),
        reason: reason.to_string(),
    };
    let Some(segment) = segments.next() else {
        return match node {
            Node::Object(map) if map.is_empty() => {
                *node = Node::Leaf(value.to_string());
                Ok(())
            }
            Node::Leaf(_) => Err(invalid("The parameter is given twice.")),
            _ => Err(invalid("A structured parameter cannot also be a value.")),
        };
    };
    if segment.is_empty() {
        return Err(invalid("Empty name segment."));
    }
    if let Node::Object(map) = node
        && map.is_empty()
        && segment.bytes().all(|b| b.is_ascii_digit())
    {
        *node = Node::List(BTreeMap::new());
    }
    match node {
        Node::Leaf(_) => Err(invalid("A value cannot also be a structured parameter.")),
        Node::Object(map) => {
            if segment.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("Unexpected list index."));
            }
            let child = map
                .entry(segment.to_string())
                .or_insert_with(|| Node::Object(BTreeMap::new()));
            insert(child, full_name, segments, value)
        }
        Node::List(items) => {
            let index: u32 = segment
                .parse()
                .ok()
                .filter(|index| *index >= 1)
                .ok_or_else(|| invalid("List indexes are whole numbers from 1."))?;
            let child = items
                .entry(index)
                .or_insert_with(|| Node::Object(BTreeMap::new()));
            insert(child, full_name, segments, value)
        }
    }
}

/// Reads a typed request from flat parameters.
pub fn from_params<'a, T, I>(params: I) -> Result<T, ParamError>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let value = params_to_value(params)?;
    serde_json::from_value(value).map_err(|error| {
        let message = error.to_string();
        match message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            Some(field) => ParamError::Missing(field.to_string()),
            None => ParamError::Invalid {
                name: "request".to_string(),
                reason: message,
            },
        }
    })
}

/// A list sent as one JSON-array string, like `ContainerGroupIds=["eci-a","eci-b"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonList(pub Vec<String>);

impl Serialize for JsonList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for JsonList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) => serde_json::from_str(&text)
                .map(JsonList)
                .map_err(|_| serde::de::Error::custom("expected a JSON array of strings")),
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    _ => Err(serde::de::Error::custom("expected strings")),
                })
                .collect::<Result<_, _>>()
                .map(JsonList),
            _ => Err(serde::de::Error::custom("expected a JSON array of strings")),
        }
    }
}

/// A list sent as one comma-separated string, like `VSwitchId=vsw-a,vsw-b`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommaList(pub Vec<String>);

impl Serialize for CommaList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.join(","))
    }
}

impl<'de> Deserialize<'de> for CommaList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(CommaList(
            text.split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(str::to_string)
                .collect(),
        ))
    }
}

/// Lenient scalar deserializers: the gateway receives every parameter as text, SDKs render
/// booleans as `true` or `True` and numbers as `2` or `2.0`; responses carry real JSON types.
pub mod lenient {
    use super::*;

    fn scalar<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
        let value = Option::<Value>::deserialize(deserializer)?;
        Ok(value.filter(|v| !matches!(v, Value::String(s) if s.is_empty())))
    }

    pub fn opt_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
        match scalar(deserializer)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a number"))),
            Some(other) => Err(serde::de::Error::custom(format!(
                "`{other}` is not a number"
            ))),
        }
    }

    pub fn opt_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        match scalar(deserializer)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("`{n}` is not an integer"))),
            Some(Value::String(s)) => {
                let trimmed = s.trim();
                trimmed
                    .parse::<i64>()
                    .ok()
                    .or_else(|| {
                        trimmed
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.fract() == 0.0 && f.is_finite())
                            .map(|f| f as i64)
                    })
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an integer")))
            }
            Some(other) => Err(serde::de::Error::custom(format!(
                "`{other}` is not an integer"
            ))),
        }
    }

    pub fn opt_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
        match scalar(deserializer)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(other) => Err(serde::de::Error::custom(format!(
                "`{other}` is not a boolean"
            ))),
        }
    }

    /// Lists of scalars that may come as strings (`Exec.Command.1`), numbers or booleans.
    pub fn string_list<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<String>, D::Error> {
        let items = Option::<Vec<Value>>::deserialize(deserializer)?.unwrap_or_default();
        items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(serde::de::Error::custom(format!(
                    "`{other}` is not a string"
                ))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "PascalCase")]
    struct Inner {
        name: String,
        #[serde(
            default,
            deserialize_with = "lenient::opt_f64",
            skip_serializing_if = "Option::is_none"
        )]
        cpu: Option<f64>,
        #[serde(
            default,
            deserialize_with = "lenient::string_list",
            skip_serializing_if = "Vec::is_empty"
        )]
        command: Vec<String>,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "PascalCase")]
    struct Outer {
        region_id: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        container: Vec<Inner>,
        #[serde(
            default,
            deserialize_with = "lenient::opt_bool",
            skip_serializing_if = "Option::is_none"
        )]
        dry_run: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ids: Option<JsonList>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v_switch_id: Option<CommaList>,
    }

    fn sample() -> Outer {
        Outer {
            region_id: "cn-hangzhou".into(),
            container: vec![Inner {
                name: "c1".into(),
                cpu: Some(1.0),
                command: vec!["/bin/sh".into(), "-c".into()],
            }],
            dry_run: Some(true),
            ids: Some(JsonList(vec!["eci-a".into(), "eci-b".into()])),
            v_switch_id: Some(CommaList(vec!["vsw-a".into(), "vsw-b".into()])),
        }
    }

    #[test]
    fn flattens_lists_one_based_and_objects_dotted() {
        let params = to_params(&sample()).unwrap();
        let map: BTreeMap<_, _> = params.into_iter().collect();
        assert_eq!(map["Container.1.Name"], "c1");
        assert_eq!(map["Container.1.Cpu"], "1.0");
        assert_eq!(map["Container.1.Command.2"], "-c");
        assert_eq!(map["DryRun"], "true");
        assert_eq!(map["Ids"], r#"["eci-a","eci-b"]"#);
        assert_eq!(map["VSwitchId"], "vsw-a,vsw-b");
        assert_eq!(map.len(), 8);
    }

    #[test]
    fn round_trips_through_flat_params() {
        let params = to_params(&sample()).unwrap();
        let back: Outer =
            from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn accepts_python_sdk_renderings() {
        let back: Outer = from_params([
            ("RegionId", "r"),
            ("DryRun", "True"),
            ("Container.3.Name", "third"),
            ("Container.1.Name", "first"),
            ("Container.1.Cpu", "2"),
        ])
        .unwrap();
        assert_eq!(back.dry_run, Some(true));
        assert_eq!(back.container[0].name, "first");
        assert_eq!(back.container[0].cpu, Some(2.0));
        assert_eq!(back.container[1].name, "third");
    }

    #[test]
    fn reports_missing_and_malformed_parameters() {
        assert_eq!(
            from_params::<Outer, _>([("DryRun", "true")]).unwrap_err(),
            ParamError::Missing("RegionId".into())
        );
        assert!(matches!(
            from_params::<Outer, _>([("RegionId", "r"), ("DryRun", "maybe")]),
            Err(ParamError::Invalid { .. })
        ));
        assert!(matches!(
            params_to_value([("Tag.0.Key", "k")]),
            Err(ParamError::Invalid { name, .. }) if name == "Tag.0.Key"
        ));
        assert!(matches!(
            params_to_value([("A", "1"), ("A.B", "2")]),
            Err(ParamError::Invalid { .. })
        ));
        assert!(matches!(
            params_to_value([("A.1", "1"), ("A.B", "2")]),
            Err(ParamError::Invalid { .. })
        ));
    }
}
