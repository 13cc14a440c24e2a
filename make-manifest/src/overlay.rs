//! Reading overlay files: one YAML map each, errors as `file:line:column`.

use std::path::Path;

use serde_yaml::Value;

use crate::{input, input_error, InputError};

/// Reads and parses one overlay. An empty file is an empty overlay.
pub fn load(path: &Path) -> Result<Value, InputError> {
    let text = input::read_text(path)
        .map_err(|problem| input_error!("overlay {}: {problem}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Parses overlay text; `name` is how messages call it.
pub fn parse(text: &str, name: &str) -> Result<Value, InputError> {
    let value = input::parse_yaml(text).map_err(|problem| match problem {
        (Some((line, column)), message) => input_error!("{name}:{line}:{column}: {message}"),
        (None, message) => input_error!("{name}: {message}"),
    })?;
    match value {
        Value::Null => Ok(Value::Mapping(Default::default())),
        Value::Mapping(ref map) => {
            if let Some(path) = crate::yaml_out::find_tag(&value, "") {
                return Err(input_error!(
                    "{name}: {path}: YAML tags (`!name value`) mean nothing to BOSH; write the plain value"
                ));
            }
            if let Some(key) = map.keys().find(|key| !key.is_string()) {
                return Err(input_error!(
                    "{name}: top-level key {} is not a string; an overlay's top-level keys are manifest or cloud-config keys",
                    crate::merge::scalar_text(key)
                ));
            }
            Ok(value)
        }
        other => Err(input_error!(
            "{name}: an overlay must be a YAML map of top-level keys (like `networks:`), this one is {}",
            kind(&other)
        )),
    }
}

/// A parse error's (line, column), both from 1, and its message without
/// serde_yaml's own " at line L column C" phrases.
pub fn yaml_error_parts(err: &serde_yaml::Error) -> (Option<(usize, usize)>, String) {
    let at = err.location().map(|at| (at.line(), at.column()));
    (at, strip_locations(&err.to_string()))
}

/// A problem from [`input::parse_yaml`] as `LINE:COLUMN: message`, or the message alone.
pub fn describe_yaml_problem(problem: (Option<(usize, usize)>, String)) -> String {
    match problem {
        (Some((line, column)), message) => format!("{line}:{column}: {message}"),
        (None, message) => message,
    }
}

fn strip_locations(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(start) = rest.find(" at line ") {
        out.push_str(&rest[..start]);
        let after = &rest[start + " at line ".len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        let after = &after[digits..];
        match after.strip_prefix(" column ") {
            Some(column) if digits > 0 => {
                let digits = column.chars().take_while(char::is_ascii_digit).count();
                rest = &column[digits..];
            }
            _ => {
                out.push_str(" at line ");
                rest = &rest[start + " at line ".len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Sequence(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Tagged(_) => "a tagged value",
        Value::Null | Value::Mapping(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let err = parse("networks:\n  - name: [postgres1\n", "my.yml").unwrap_err();
        assert!(err.0.starts_with("my.yml:3:1: "), "{err}");
        assert!(
            !err.0.contains(" at line "),
            "location is not repeated: {err}"
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("a: 1\na: 2\n", "dup.yml").unwrap_err();
        assert!(
            err.0.starts_with("dup.yml:") && err.0.contains("duplicate"),
            "{err}"
        );
    }

    #[test]
    fn non_maps_are_refused() {
        for (text, what) in [
            ("- a\n", "a list"),
            ("just text\n", "a string"),
            ("42\n", "a number"),
        ] {
            let err = parse(text, "x.yml").unwrap_err();
            assert!(err.0.contains(what), "{text:?}: {err}");
        }
    }

    #[test]
    fn several_documents_are_refused() {
        let err = parse("a: 1\n---\nb: 2\n", "multi.yml").unwrap_err();
        assert!(
            err.0.starts_with("multi.yml: ") && err.0.contains("more than one document"),
            "{err}"
        );
    }

    #[test]
    fn tags_are_refused_with_their_path() {
        let err = parse("a: [1, !secret x]\n", "t.yml").unwrap_err();
        assert!(err.0.starts_with("t.yml: a[1]: YAML tags"), "{err}");
    }

    #[test]
    fn empty_file_is_an_empty_overlay() {
        assert_eq!(
            parse("", "e.yml").unwrap(),
            Value::Mapping(Default::default())
        );
        assert_eq!(
            parse("---\n", "e.yml").unwrap(),
            Value::Mapping(Default::default())
        );
    }

    #[test]
    fn merge_keys_are_applied_not_kept_as_keys() {
        let value = parse(
            "networks:\n- name: a\n  cloud_properties: &props {zone: z1, tier: db}\n- name: b\n  cloud_properties:\n    <<: *props\n    zone: z2\n",
            "m.yml",
        )
        .unwrap();
        let props = &value["networks"][1]["cloud_properties"];
        assert_eq!(props["zone"], Value::from("z2"), "the map's own key wins");
        assert_eq!(props["tier"], Value::from("db"), "merged from the anchor");
        assert!(props.get("<<").is_none(), "{props:?}");
    }

    #[test]
    fn too_deep_an_overlay_is_refused_naming_file_and_position() {
        let deep = format!("a: {}1{}\n", "[".repeat(70), "]".repeat(70));
        let err = parse(&deep, "deep.yml").unwrap_err();
        assert!(
            err.0.starts_with("deep.yml:1:") && err.0.contains("nested more than 64 levels"),
            "{err}"
        );
    }

    #[test]
    fn locations_are_stripped_from_messages() {
        assert_eq!(
            strip_locations(
                "did not find x at line 3 column 1, while parsing y at line 1 column 4"
            ),
            "did not find x, while parsing y"
        );
        assert_eq!(strip_locations("key at line one"), "key at line one");
    }
}
