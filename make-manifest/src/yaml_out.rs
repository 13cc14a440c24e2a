//! YAML output that reads the same to the BOSH director as to us.
//!
//! The director and the bosh CLI parse YAML 1.1, where plain `yes`, `on`, `n`,
//! `0777` or `1_000` are booleans and numbers; serde_yaml writes YAML 1.2 and
//! leaves such strings unquoted. A password `on` would reach the job as `true`.
//! So strings stay plain only when they are unambiguous in both versions, and
//! are quoted otherwise. The layout is the one BOSH manifests use: two-space
//! indentation, list items at the indentation of their key.

use serde_yaml::Value;

/// Renders a document, with a blank line between top-level sections.
/// Tagged values (`!foo bar`) have no meaning in a BOSH
/// manifest; callers reject them before rendering (see [`find_tag`]).
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Mapping(map) if !map.is_empty() => {
            for (index, (key, value)) in map.iter().enumerate() {
                if index > 0 {
                    out.push('\n');
                }
                let mut section = serde_yaml::Mapping::new();
                section.insert(key.clone(), value.clone());
                write_map(&mut out, &section, 0, false);
            }
        }
        Value::Sequence(list) if !list.is_empty() => write_list(&mut out, list, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

/// The path of the first tagged value, if any.
pub fn find_tag(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Tagged(_) => Some(if path.is_empty() {
            "(top level)".into()
        } else {
            path.into()
        }),
        Value::Mapping(map) => map.iter().find_map(|(key, value)| {
            let key = crate::merge::scalar_text(key);
            let child = if path.is_empty() {
                key
            } else {
                format!("{path}.{key}")
            };
            find_tag(value, &child)
        }),
        Value::Sequence(list) => list
            .iter()
            .enumerate()
            .find_map(|(index, item)| find_tag(item, &format!("{path}[{index}]"))),
        _ => None,
    }
}

fn write_map(out: &mut String, map: &serde_yaml::Mapping, indent: usize, inline_first: bool) {
    for (index, (key, value)) in map.iter().enumerate() {
        if !(inline_first && index == 0) {
            push_indent(out, indent);
        }
        out.push_str(&scalar_text(key));
        out.push(':');
        match value {
            Value::Mapping(inner) if !inner.is_empty() => {
                out.push('\n');
                write_map(out, inner, indent + 2, false);
            }
            Value::Sequence(list) if !list.is_empty() => {
                out.push('\n');
                write_list(out, list, indent);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_list(out: &mut String, list: &[Value], indent: usize) {
    for item in list {
        push_indent(out, indent);
        out.push_str("- ");
        match item {
            Value::Mapping(inner) if !inner.is_empty() => write_map(out, inner, indent + 2, true),
            Value::Sequence(inner) if !inner.is_empty() => {
                out.truncate(out.len() - 1);
                out.push('\n');
                write_list(out, inner, indent + 2);
            }
            scalar => {
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => string_text(text),
        Value::Mapping(_) => "{}".to_string(),
        Value::Sequence(_) => "[]".to_string(),
        Value::Tagged(tagged) => format!("{} {}", tagged.tag, scalar_text(&tagged.value)),
    }
}

/// Words YAML 1.1 (and the director's Ruby parser) reads as booleans or null.
const KEYWORDS: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
];

fn string_text(text: &str) -> String {
    if is_plain_safe(text) {
        text.to_string()
    } else if text.chars().any(breaks_single_quotes) {
        double_quoted(text)
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

/// Characters a single-quoted scalar cannot carry as they are: YAML folds
/// line breaks (including NEL and the Unicode separators) inside quotes.
fn breaks_single_quotes(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            '\u{85}' => out.push_str("\\N"),
            c if breaks_single_quotes(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Plain only when no YAML 1.1 or 1.2 reader could take it for anything but
/// a string: a letter, `_`, `/` or `(` first (so no number, `.inf`, `-x`),
/// then letters, digits and `_ . / ( ) -` only, and not a keyword.
fn is_plain_safe(text: &str) -> bool {
    let mut chars = text.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let first_ok = first.is_ascii_alphabetic() || matches!(first, '_' | '/' | '(');
    let rest_ok =
        chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '(' | ')' | '-'));
    first_ok && rest_ok && !KEYWORDS.contains(&text.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) {
        let value: Value = serde_yaml::from_str(text).unwrap();
        let written = to_string(&value);
        let reread: Value = serde_yaml::from_str(&written)
            .unwrap_or_else(|err| panic!("output does not parse: {err}\n{written}"));
        assert_eq!(reread, value, "round trip changed the document:\n{written}");
    }

    #[test]
    fn documents_survive_a_round_trip() {
        roundtrip(
            r##"
name: postgres
empty_map: {}
empty_list: []
nested: {a: {b: [1, 2.5, true, null, "x"]}}
list_of_maps:
- name: a
  jobs: [{name: j, properties: {p: [a, b]}}]
- {}
- [x, [y, z]]
quoting: ["1.5", "yes", "On", "N", "0777", "1_000", "1:20", "-x", ".inf", "a b", "a: b", "#c",
  "it's", "tab\there", "line\nbreak", "", "((password))", "(( append ))", "10.244.0.1 - 10.244.0.9",
  "ünïcode", "~", "@at", "*star", "&amp", "!bang", "%pct", "`tick", "|pipe", ">gt", "'q'", "\"dq\"",
  "nel\u0085", "sep\u2028", "bom\ufeff"]
"##,
        );
    }

    #[test]
    fn yaml_1_1_booleans_and_numbers_are_quoted() {
        for word in [
            "yes", "No", "ON", "off", "y", "n", "0777", "1_000", "1:20", "10.0.0.1",
        ] {
            let written = to_string(&Value::String(word.into()));
            assert!(
                written.starts_with('\''),
                "{word:?} must be quoted for the director's YAML 1.1 parser, got {written:?}"
            );
        }
    }

    #[test]
    fn manifest_words_stay_plain() {
        for word in [
            "postgres",
            "ubuntu-jammy",
            "((replication_password))",
            "m5.large",
            "smoke-tests",
            "z1",
        ] {
            assert_eq!(to_string(&Value::String(word.into())), format!("{word}\n"));
        }
    }

    #[test]
    fn layout_matches_bosh_manifests() {
        let value: Value =
            serde_yaml::from_str("a:\n  b: 1\nl:\n- name: x\n  v: [1]\n- z\n").unwrap();
        assert_eq!(
            to_string(&value),
            "a:\n  b: 1\n\nl:\n- name: x\n  v:\n  - 1\n- z\n"
        );
    }

    #[test]
    fn tags_are_found_with_their_path() {
        let value: Value = serde_yaml::from_str("a: [1, !foo bar]").unwrap();
        assert_eq!(find_tag(&value, ""), Some("a[1]".to_string()));
    }
}
