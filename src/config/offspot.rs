//! `offspot.yaml` rendering: keys sorted at every level, block style, and
//! every string that YAML 1.1 readers (PyYAML on the Pi) would take for
//! something else quoted.

use serde_norway::{Mapping, Value};

fn sorted(v: &Value) -> Value {
    match v {
        Value::Mapping(m) => {
            let mut entries: Vec<(Value, Value)> =
                m.iter().map(|(k, v)| (k.clone(), sorted(v))).collect();
            entries.sort_by_key(|(k, _)| key_text(k));
            Value::Mapping(entries.into_iter().collect())
        }
        Value::Sequence(s) => Value::Sequence(s.iter().map(sorted).collect()),
        Value::Tagged(t) => sorted(&t.value),
        other => other.clone(),
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other).unwrap_or_default(),
    }
}

/// Render the `offspot` mapping as `offspot.yaml`.
pub fn render_offspot_yaml(m: &Mapping) -> Result<String, serde_norway::Error> {
    serde_norway::to_string(&sorted(&Value::Mapping(m.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_block_style() {
        let m: Mapping = serde_norway::from_str("b: 1\na: {z: [1, 2], y: x}\n").expect("yaml");
        let out = render_offspot_yaml(&m).expect("render");
        assert_eq!(out, "a:\n  y: x\n  z:\n  - 1\n  - 2\nb: 1\n");
    }
}
