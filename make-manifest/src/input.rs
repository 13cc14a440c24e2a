//! Reading what the operator hands make-manifest (overlays, templates, job
//! specs) within bounds: regular files of at most [`MAX_FILE_BYTES`], and
//! YAML nested at most [`MAX_NESTING`] levels deep. A device such as
//! `/dev/zero` would otherwise be read until memory runs out, and libyaml's
//! time grows with the square of the nesting (a 500 KB file of nested `{a: `
//! takes more than half a minute).

use serde_yaml::Value;

pub use pgcore::input::{read_text, MAX_FILE_BYTES, MAX_YAML_NESTING as MAX_NESTING};

/// Parses YAML, refusing nesting deeper than [`MAX_NESTING`] before the
/// parser sees it, and applies merge keys (`<<: *anchor`) as the director's
/// YAML 1.1 reader does. The error is an optional (line, column) and a message.
pub fn parse_yaml(text: &str) -> Result<Value, (Option<(usize, usize)>, String)> {
    if let Some(at) = pgcore::input::yaml_too_deep(text, MAX_NESTING) {
        return Err((
            Some(at),
            format!("nested more than {MAX_NESTING} levels deep, the most make-manifest reads"),
        ));
    }
    let mut value: Value =
        serde_yaml::from_str(text).map_err(|err| crate::overlay::yaml_error_parts(&err))?;
    apply_merge_keys(&mut value).map_err(|message| (None, message))?;
    Ok(value)
}

/// Applies YAML merge keys until none is left: a merged-in map may carry a
/// merge key of its own (anchors built on anchors). Bounded, as the nesting is.
fn apply_merge_keys(value: &mut Value) -> Result<(), String> {
    for _ in 0..MAX_NESTING {
        if !has_merge_key(value) {
            return Ok(());
        }
        value
            .apply_merge()
            .map_err(|err| format!("merge key `<<`: {err}"))?;
    }
    Err(format!(
        "merge keys `<<` chained more than {MAX_NESTING} deep"
    ))
}

fn has_merge_key(value: &Value) -> bool {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::Mapping(map) if map.contains_key("<<") => return true,
            Value::Mapping(map) => pending.extend(map.values()),
            Value::Sequence(items) => pending.extend(items),
            Value::Tagged(tagged) => pending.push(&tagged.value),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_flow(depth: usize) -> String {
        format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth))
    }

    #[test]
    fn nesting_up_to_the_limit_is_read_and_deeper_is_refused_where_it_starts() {
        assert!(parse_yaml(&format!("x: {}\n", nested_flow(MAX_NESTING - 1))).is_ok());
        let (at, message) = parse_yaml(&format!("x: {}\n", nested_flow(MAX_NESTING))).unwrap_err();
        assert_eq!(at, Some((1, 4 + 4 * (MAX_NESTING - 1))), "{message}");
        assert!(message.contains("nested more than 64 levels"), "{message}");
    }

    #[test]
    fn a_deep_file_is_refused_before_the_parser_sees_it() {
        // serde_yaml would spend more than half a minute on it before giving up.
        let (_, message) = parse_yaml(&nested_flow(125_000)).unwrap_err();
        assert!(message.contains("nested more than 64 levels"), "{message}");
    }

    #[test]
    fn merge_keys_are_applied_also_when_chained() {
        let value = parse_yaml(
            "base: &base {a: 1, b: 1}\nmid: &mid {<<: *base, b: 2}\ntop: {<<: *mid, c: 3}\n",
        )
        .unwrap();
        let expected: Value = serde_yaml::from_str("{a: 1, b: 2, c: 3}").unwrap();
        assert_eq!(value["top"], expected);
        assert!(!has_merge_key(&value), "{value:?}");
        let (_, message) = parse_yaml("a: {<<: 5}\n").unwrap_err();
        assert!(message.starts_with("merge key `<<`: "), "{message}");
    }
}
