//! The `((name))` BOSH variables the documents use: those the manifest's
//! `variables` section does not generate must be supplied at deploy time (the
//! director's config server, or `bosh deploy -v`), and the notes say so.

use std::collections::BTreeSet;

use serde_yaml::Value;

/// The `((name))` BOSH variables a document uses, sorted, each once. For
/// `((cert.ca))` the variable is `cert`; `((!name))` is `name`.
pub fn bosh_variables(doc: &Value) -> Vec<String> {
    let mut found = BTreeSet::new();
    collect_variables(doc, &mut found);
    found.into_iter().collect()
}

fn collect_variables(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::String(text) => {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("((") {
                let after = &rest[start + 2..];
                let Some(end) = after.find("))") else { break };
                let inner = &after[..end];
                let name = inner.strip_prefix('!').unwrap_or(inner);
                let name = name.split('.').next().unwrap_or_default();
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/'));
                if valid {
                    found.insert(name.to_string());
                }
                rest = &after[end + 2..];
            }
        }
        Value::Mapping(map) => map.iter().for_each(|(key, value)| {
            collect_variables(key, found);
            collect_variables(value, found);
        }),
        Value::Sequence(items) => items.iter().for_each(|item| collect_variables(item, found)),
        _ => {}
    }
}

/// Variables the manifest uses but its `variables` section does not generate.
pub fn undeclared_variables(manifest: &Value) -> Vec<String> {
    let declared: BTreeSet<&str> = manifest
        .get("variables")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    let mut used = BTreeSet::new();
    if let Some(root) = manifest.as_mapping() {
        for (key, value) in root {
            // A variable's own options may mention other variables (a CA by
            // name), never by ((...)); only the rest of the manifest counts.
            if key.as_str() != Some("variables") {
                collect_variables(value, &mut used);
            }
        }
    }
    used.into_iter()
        .filter(|name| !declared.contains(name.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn bosh_variables_are_found_wherever_they_appear() {
        let doc = yaml(
            "a: ((one))\nb: [x-((two))-y, ((!three))]\nc: {d: ((cert.ca))}\ne: (( grab x ))\nf: ((\ng: (())\n",
        );
        assert_eq!(bosh_variables(&doc), ["cert", "one", "three", "two"]);
    }

    #[test]
    fn undeclared_variables_exclude_the_generated_ones() {
        let manifest = yaml(
            "p: [((a)), ((b))]\nvariables:\n- {name: a, type: password}\n- {name: c, type: certificate, options: {ca: ((x))}}\n",
        );
        assert_eq!(undeclared_variables(&manifest), ["b"]);
    }
}
