//! XML rendering for v1 requests without `Format=JSON` (the gateway's default format).

use serde_json::Value;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn write(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Array(items) => {
            for item in items {
                write(out, name, item);
            }
        }
        Value::Object(map) => {
            out.push_str(&format!("<{name}>"));
            for (key, child) in map {
                write(out, key, child);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::Null => out.push_str(&format!("<{name}/>")),
        Value::String(text) if text.is_empty() => out.push_str(&format!("<{name}/>")),
        Value::String(text) => out.push_str(&format!("<{name}>{}</{name}>", escape(text))),
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

/// `<?xml ...?><root>...</root>`; arrays repeat their element name.
pub fn render(root: &str, value: &Value) -> String {
    let mut out = String::from("<?xml version='1.0' encoding='UTF-8'?>");
    write(&mut out, root, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nested_values() {
        let value =
            serde_json::json!({"RequestId": "r", "Ids": ["a", "b"], "Empty": "", "Note": "<&>"});
        assert_eq!(
            render("X", &value),
            "<?xml version='1.0' encoding='UTF-8'?><X><Empty/><Ids>a</Ids><Ids>b</Ids><Note>&lt;&amp;&gt;</Note><RequestId>r</RequestId></X>"
        );
    }
}
