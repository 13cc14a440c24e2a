//! Overlay merging with the rules operators know from spruce.
//!
//! - maps merge recursively, key by key;
//! - a list whose items (in both the base and the overlay) are all maps with a
//!   `name` key merges item by item by name; names the base lacks are appended;
//! - any other list is replaced by the overlay's list;
//! - an explicit null (`key: ~` or `key:`) deletes the key;
//! - a list in an overlay may start with one of spruce's list operators to say
//!   what it wants instead: `(( replace ))`, `(( append ))`, `(( prepend ))`,
//!   `(( merge ))` or `(( merge on KEY ))` (for lists keyed by something other
//!   than `name`, such as `postgres.users` by `username`).
//!
//! Unlike spruce, lists that cannot be merged by name are replaced rather than
//! merged index by index: an index-wise merge of two unrelated lists silently
//! mixes them, a replacement is what the overlay says.

use std::fmt;

use serde_yaml::Value;

/// An overlay that asks for something the rules cannot do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeError {
    /// Where in the document, e.g. `instance_groups[postgres].jobs`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", display_path(&self.path), self.message)
    }
}

impl std::error::Error for MergeError {}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "(top level)"
    } else {
        path
    }
}

/// What the first item of an overlay list asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListOp {
    Replace,
    Append,
    Prepend,
    MergeOn(String),
}

/// Merges `overlay` into `base` in place.
pub fn merge(base: &mut Value, overlay: Value) -> Result<(), MergeError> {
    merge_at(base, overlay, "")
}

fn merge_at(base: &mut Value, overlay: Value, path: &str) -> Result<(), MergeError> {
    match (base, overlay) {
        (Value::Mapping(base_map), Value::Mapping(overlay_map)) => {
            for (key, value) in overlay_map {
                let child = child_path(path, &key);
                if value.is_null() {
                    base_map.remove(&key);
                } else if let Some(existing) = base_map.get_mut(&key) {
                    merge_at(existing, value, &child)?;
                } else {
                    base_map.insert(key, fresh(value, &child)?);
                }
            }
            Ok(())
        }
        (Value::Sequence(base_list), Value::Sequence(overlay_list)) => {
            merge_lists(base_list, overlay_list, path)
        }
        (base, overlay) => {
            *base = fresh(overlay, path)?;
            Ok(())
        }
    }
}

fn merge_lists(base: &mut Vec<Value>, overlay: Vec<Value>, path: &str) -> Result<(), MergeError> {
    let (op, items) = split_list_op(overlay, path)?;
    match op {
        Some(ListOp::Replace) => *base = fresh_items(items, path)?,
        Some(ListOp::Append) => base.extend(fresh_items(items, path)?),
        Some(ListOp::Prepend) => {
            let mut merged = fresh_items(items, path)?;
            merged.append(base);
            *base = merged;
        }
        Some(ListOp::MergeOn(key)) => {
            for (label, list) in [("the base", &*base), ("the overlay", &items)] {
                if let Some(index) = list.iter().position(|item| item_key(item, &key).is_none()) {
                    return Err(MergeError {
                        path: path.to_string(),
                        message: format!(
                            "(( merge on {key} )): item {index} of {label} list has no scalar `{key}`"
                        ),
                    });
                }
            }
            merge_by_key(base, items, &key, path)?;
        }
        None if !items.is_empty() && keyed_by_name(base) && keyed_by_name(&items) => {
            merge_by_key(base, items, "name", path)?
        }
        None => *base = fresh_items(items, path)?,
    }
    Ok(())
}

fn merge_by_key(
    base: &mut Vec<Value>,
    items: Vec<Value>,
    key: &str,
    path: &str,
) -> Result<(), MergeError> {
    for item in items {
        let id = item_key(&item, key).cloned().unwrap_or(Value::Null);
        let child = format!("{path}[{}]", scalar_text(&id));
        match base
            .iter_mut()
            .find(|existing| item_key(existing, key) == Some(&id))
        {
            Some(existing) => merge_at(existing, item, &child)?,
            None => base.push(fresh(item, &child)?),
        }
    }
    Ok(())
}

/// True when every item is a map with a scalar `name`: spruce's condition
/// for merging by name.
fn keyed_by_name(items: &[Value]) -> bool {
    items.iter().all(|item| item_key(item, "name").is_some())
}

fn item_key<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    match item.as_mapping()?.get(key)? {
        value @ (Value::String(_) | Value::Number(_) | Value::Bool(_)) => Some(value),
        _ => None,
    }
}

/// A value that lands where nothing was: its own nulls delete nothing and are
/// dropped, its list operators have nothing to act on and are dropped.
fn fresh(value: Value, path: &str) -> Result<Value, MergeError> {
    Ok(match value {
        Value::Mapping(map) => {
            let mut out = serde_yaml::Mapping::new();
            for (key, value) in map {
                if !value.is_null() {
                    let child = child_path(path, &key);
                    out.insert(key, fresh(value, &child)?);
                }
            }
            Value::Mapping(out)
        }
        Value::Sequence(list) => {
            let (_, items) = split_list_op(list, path)?;
            Value::Sequence(fresh_items(items, path)?)
        }
        other => other,
    })
}

fn fresh_items(items: Vec<Value>, path: &str) -> Result<Vec<Value>, MergeError> {
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| fresh(item, &format!("{path}[{index}]")))
        .collect()
}

fn split_list_op(
    mut list: Vec<Value>,
    path: &str,
) -> Result<(Option<ListOp>, Vec<Value>), MergeError> {
    let op = match list.first() {
        Some(Value::String(text)) => parse_list_op(text).map_err(|message| MergeError {
            path: path.to_string(),
            message,
        })?,
        _ => None,
    };
    if op.is_some() {
        list.remove(0);
    }
    Ok((op, list))
}

/// Reads a spruce list operator. `Ok(None)` for ordinary strings, including
/// BOSH variables like `((password))`, which have no spaces inside the parens.
pub fn parse_list_op(text: &str) -> Result<Option<ListOp>, String> {
    let Some(inner) = spruce_operator(text) else {
        return Ok(None);
    };
    let words: Vec<&str> = inner.split_whitespace().collect();
    match words.as_slice() {
        ["replace"] => Ok(Some(ListOp::Replace)),
        ["append"] => Ok(Some(ListOp::Append)),
        ["prepend"] => Ok(Some(ListOp::Prepend)),
        ["merge"] => Ok(Some(ListOp::MergeOn("name".to_string()))),
        ["merge", "on", key] => Ok(Some(ListOp::MergeOn(key.to_string()))),
        _ => Err(format!(
            "unsupported list operator `{}` (supported: (( replace )), (( append )), (( prepend )), (( merge )), (( merge on KEY )))",
            text.trim()
        )),
    }
}

/// The inside of a spruce operator `(( ... ))`, which spruce writes with
/// spaces inside the parens; `None` for anything else.
pub fn spruce_operator(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("((")?.strip_suffix("))")?;
    let spaced = inner.starts_with(char::is_whitespace) && inner.ends_with(char::is_whitespace);
    (spaced && !inner.trim().is_empty()).then(|| inner.trim())
}

fn child_path(path: &str, key: &Value) -> String {
    let key = scalar_text(key);
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// A scalar as an operator would write it in a path.
pub fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Null => "~".to_string(),
        _ => "?".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("test YAML parses")
    }

    fn merged(base: &str, overlays: &[&str]) -> Value {
        let mut doc = yaml(base);
        for overlay in overlays {
            merge(&mut doc, yaml(overlay)).expect("merge succeeds");
        }
        doc
    }

    fn assert_merge(base: &str, overlay: &str, expected: &str) {
        let got = merged(base, &[overlay]);
        assert_eq!(
            got,
            yaml(expected),
            "merging\n{overlay}\ninto\n{base}\ngave\n{}",
            serde_yaml::to_string(&got).unwrap()
        );
    }

    /// The seed README's "Override security groups" example, verbatim, on the
    /// network the aws-ec2 and openstack-nova templates write.
    #[test]
    fn seed_security_group_overlay_replaces_default_group_and_keeps_the_rest() {
        let base = r#"
networks:
- name: postgres1
  type: dynamic
  cloud_properties:
    subnet: ((subnet_id))
    security_groups:
      - default
"#;
        let seed_overlay = r#"---
networks:
  - name: postgres1
    type: dynamic
    cloud_properties:
      security_groups:
        - postgres
"#;
        assert_merge(
            base,
            seed_overlay,
            r#"
networks:
- name: postgres1
  type: dynamic
  cloud_properties:
    subnet: ((subnet_id))
    security_groups: [postgres]
"#,
        );
    }

    #[test]
    fn table_of_merge_rules() {
        // (what the row proves, base, overlay, expected)
        let rows: &[(&str, &str, &str, &str)] = &[
            (
                "maps merge recursively",
                "a: {b: 1, c: {d: 2}}",
                "a: {c: {e: 3}}",
                "a: {b: 1, c: {d: 2, e: 3}}",
            ),
            ("scalars are replaced", "a: 1", "a: two", "a: two"),
            ("new keys are added", "a: 1", "b: 2", "a: 1\nb: 2"),
            ("explicit null deletes a key", "a: 1\nb: 2", "a: ~", "b: 2"),
            ("empty value deletes a key", "a: 1\nb: 2", "a:", "b: 2"),
            (
                "nested null deletes a nested key",
                "a: {b: 1, c: 2}",
                "a: {b: null}",
                "a: {c: 2}",
            ),
            ("null for an absent key is a no-op", "a: 1", "b: ~", "a: 1"),
            (
                "nulls inside a new subtree are dropped",
                "a: 1",
                "b: {c: ~, d: 1}",
                "a: 1\nb: {d: 1}",
            ),
            (
                "named lists merge item by item",
                "l: [{name: x, v: 1, w: 1}, {name: y, v: 1}]",
                "l: [{name: y, v: 2}]",
                "l: [{name: x, v: 1, w: 1}, {name: y, v: 2}]",
            ),
            (
                "new names are appended in overlay order",
                "l: [{name: x}]",
                "l: [{name: z}, {name: y}]",
                "l: [{name: x}, {name: z}, {name: y}]",
            ),
            (
                "null inside a named item deletes that key of the item",
                "l: [{name: x, v: 1, w: 2}]",
                "l: [{name: x, w: ~}]",
                "l: [{name: x, v: 1}]",
            ),
            (
                "named lists merge recursively inside items",
                "l: [{name: x, jobs: [{name: a, p: {q: 1}}]}]",
                "l: [{name: x, jobs: [{name: a, p: {r: 2}}]}]",
                "l: [{name: x, jobs: [{name: a, p: {q: 1, r: 2}}]}]",
            ),
            ("scalar lists are replaced", "l: [a, b]", "l: [c]", "l: [c]"),
            (
                "lists of maps without name are replaced",
                "l: [{username: a}]",
                "l: [{username: b}]",
                "l: [{username: b}]",
            ),
            (
                "a partly named overlay list replaces",
                "l: [{name: x}]",
                "l: [{name: y}, {other: 1}]",
                "l: [{name: y}, {other: 1}]",
            ),
            (
                "an empty overlay list empties the list",
                "l: [{name: x}]",
                "l: []",
                "l: []",
            ),
            ("a map replaces a list", "l: [1]", "l: {a: 1}", "l: {a: 1}"),
            (
                "(( replace )) replaces a named list",
                "l: [{name: x, v: 1}]",
                "l: ['(( replace ))', {name: y}]",
                "l: [{name: y}]",
            ),
            (
                "(( append )) appends to any list",
                "l: [{username: a}]",
                "l: ['(( append ))', {username: b}]",
                "l: [{username: a}, {username: b}]",
            ),
            (
                "(( prepend )) prepends",
                "l: [b]",
                "l: ['(( prepend ))', a]",
                "l: [a, b]",
            ),
            (
                "(( merge on KEY )) merges by another key",
                "l: [{username: a, password: x}, {username: b}]",
                "l: ['(( merge on username ))', {username: a, password: y}, {username: c}]",
                "l: [{username: a, password: y}, {username: b}, {username: c}]",
            ),
            (
                "a list operator with no base list is dropped",
                "a: 1",
                "l: ['(( append ))', x]",
                "a: 1\nl: [x]",
            ),
            (
                "a BOSH variable as first item is an ordinary string",
                "l: [a]",
                "l: ['((secret))']",
                "l: ['((secret))']",
            ),
        ];
        for (what, base, overlay, expected) in rows {
            let got = merged(base, &[overlay]);
            assert_eq!(
                got,
                yaml(expected),
                "{what}: merging `{overlay}` into `{base}` gave `{}`",
                serde_yaml::to_string(&got).unwrap().trim()
            );
        }
    }

    #[test]
    fn overlays_apply_in_the_order_given() {
        let got = merged("a: 1", &["a: 2", "a: 3"]);
        assert_eq!(got, yaml("a: 3"));
        let got = merged("a: 1", &["a: ~", "a: 4"]);
        assert_eq!(
            got,
            yaml("a: 4"),
            "a key deleted by one overlay can be set again by the next"
        );
    }

    #[test]
    fn unknown_list_operator_is_an_error_naming_the_path() {
        let mut doc = yaml("a: {l: [1]}");
        let err = merge(&mut doc, yaml("a: {l: ['(( inline ))', 2]}")).unwrap_err();
        assert_eq!(err.path, "a.l");
        assert!(err.message.contains("(( inline ))"), "{err}");
    }

    #[test]
    fn merge_on_a_key_some_item_lacks_is_an_error() {
        let mut doc = yaml("l: [{username: a}, {name: b}]");
        let err = merge(
            &mut doc,
            yaml("l: ['(( merge on username ))', {username: a}]"),
        )
        .unwrap_err();
        assert!(err.message.contains("item 1 of the base list"), "{err}");
    }

    #[test]
    fn error_paths_name_list_items_by_key() {
        let mut doc = yaml("l: [{name: x, m: [1]}]");
        let err = merge(&mut doc, yaml("l: [{name: x, m: ['(( bogus ))']}]")).unwrap_err();
        assert_eq!(err.path, "l[x].m");
    }

    #[test]
    fn spruce_operators_are_told_from_bosh_variables() {
        assert_eq!(spruce_operator("(( grab meta.x ))"), Some("grab meta.x"));
        assert_eq!(spruce_operator("((password))"), None);
        assert_eq!(spruce_operator("(( ))"), None);
        assert_eq!(spruce_operator("plain"), None);
        assert_eq!(
            parse_list_op("(( merge on username ))"),
            Ok(Some(ListOp::MergeOn("username".into())))
        );
        assert_eq!(parse_list_op("((x))"), Ok(None));
    }
}
