//! Golden-file comparison for the dialect tests: walks a seed's JSON example and what a dialect
//! rendered side by side, and lists every difference by JSON pointer, so a test can state the
//! exact, explained set of differences it accepts.

use serde_json::Value;

/// One difference between the seed (expected) and the rendered document (actual).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diff {
    /// The seed has the key, the rendering does not.
    Missing,
    /// The rendering has a key the seed lacks.
    Extra,
    /// Same key, different JSON type (string vs number, …).
    Type,
    /// Same key and type, different scalar value.
    Value,
}

/// Every difference, as `(pointer, kind)`, in document order. Object key order is not compared
/// here; see [`keys`].
pub fn diff(expected: &Value, actual: &Value) -> Vec<(String, Diff)> {
    let mut out = Vec::new();
    walk("", expected, actual, &mut out);
    out
}

/// Only the differences of shape (missing, extra, type), for seeds whose values are
/// placeholders or differ in format.
pub fn shape_diff(expected: &Value, actual: &Value) -> Vec<(String, Diff)> {
    diff(expected, actual).into_iter().filter(|(_, d)| *d != Diff::Value).collect()
}

/// The keys of a JSON object, in order.
pub fn keys(value: &Value) -> Vec<&str> {
    value.as_object().map_or_else(Vec::new, |m| m.keys().map(String::as_str).collect())
}

fn walk(path: &str, expected: &Value, actual: &Value, out: &mut Vec<(String, Diff)>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}/{k}");
                match a.get(k) {
                    Some(av) => walk(&p, ev, av, out),
                    None => out.push((p, Diff::Missing)),
                }
            }
            let extra = a.keys().filter(|k| !e.contains_key(*k));
            out.extend(extra.map(|k| (format!("{path}/{k}"), Diff::Extra)));
        }
        (Value::Array(e), Value::Array(a)) => walk_array(path, e, a, out),
        _ if kind(expected) != kind(actual) => out.push((path.to_owned(), Diff::Type)),
        _ if expected != actual => out.push((path.to_owned(), Diff::Value)),
        _ => {}
    }
}

fn walk_array(path: &str, e: &[Value], a: &[Value], out: &mut Vec<(String, Diff)>) {
    for i in 0..e.len().max(a.len()) {
        let p = format!("{path}/{i}");
        match (e.get(i), a.get(i)) {
            (Some(ev), Some(av)) => walk(&p, ev, av, out),
            (Some(_), None) => out.push((p, Diff::Missing)),
            _ => out.push((p, Diff::Extra)),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_each_kind_of_difference() {
        let seed = json!({"a": 1, "b": "x", "c": {"d": [1, 2]}, "e": true});
        let ours = json!({"a": "1", "b": "y", "c": {"d": [1]}, "f": null});
        assert_eq!(
            diff(&seed, &ours),
            [
                ("/a".to_owned(), Diff::Type),
                ("/b".to_owned(), Diff::Value),
                ("/c/d/1".to_owned(), Diff::Missing),
                ("/e".to_owned(), Diff::Missing),
                ("/f".to_owned(), Diff::Extra),
            ]
        );
        assert_eq!(shape_diff(&seed, &ours).len(), 4);
        assert_eq!(keys(&seed), ["a", "b", "c", "e"]);
    }
}
