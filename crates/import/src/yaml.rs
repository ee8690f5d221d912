//! Writing YAML a person will maintain: plain scalars where they stay strings, JSON-quoted
//! otherwise, conditions in single quotes.

use serde_json::Value;

/// A string as a YAML scalar: plain when YAML would read it back as the same string.
pub(crate) fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '@'))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "inf" | "infinity" | "nan"
        );
    if plain {
        s.to_owned()
    } else {
        quoted(s)
    }
}

/// A string in double quotes (JSON escapes are YAML escapes).
pub(crate) fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// A condition in single quotes (CEL strings use double quotes inside).
pub(crate) fn condition(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A JSON value as a YAML flow value, keeping strings strings and floats floats.
pub(crate) fn value(v: &Value) -> String {
    match v {
        Value::String(s) => scalar(s),
        // JSON is YAML's flow syntax; serde_json writes floats with a fraction (`1.0`).
        other => other.to_string(),
    }
}
