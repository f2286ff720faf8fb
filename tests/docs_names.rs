//! What the docs name exists: every `ssegate_*` metric the README and
//! `docs/` mention is one the binary exports (by its family name, as
//! `/metrics` declares it), and every metric the binary exports is in the
//! metrics table of `docs/operations.md`.

use std::collections::BTreeSet;
use std::path::Path;

/// The README and every Markdown file under `docs/`.
fn docs() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("README.md")).unwrap();
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            text.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    text
}

/// `ssegate_…` names in `text`.
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("ssegate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let before = rest[..at].chars().last();
        if !before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '/' | '.' | ':')) {
            out.insert(tail[..end].trim_end_matches('_').to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// The metric families the binary registers (`Registry::register` in
/// `src/metrics.rs`, under the `ssegate` prefix): an empty family is not in
/// the exposition, so the registrations are read where they are made.
fn registered() -> BTreeSet<String> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    let mut out = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find(".register(") {
        rest = &rest[at + ".register(".len()..];
        let name = rest.trim_start().trim_start_matches('"');
        let end = name.find('"').unwrap();
        out.insert(format!("ssegate_{}", &name[..end]));
    }
    assert!(out.len() > 10, "the registrations were not found: {out:?}");
    out
}

/// Whether `name` is a registered family or one of its samples' names.
fn is_exported(name: &str, families: &BTreeSet<String>) -> bool {
    ["", "_total", "_created", "_bucket", "_count", "_sum"]
        .iter()
        .any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|family| families.contains(family))
        })
}

#[test]
fn every_metric_the_docs_name_is_exported() {
    let families = registered();
    let unknown: Vec<String> = named(&docs())
        .into_iter()
        // The node agent's crate, not a metric.
        .filter(|n| n != "ssegate_node_agent" && !is_exported(n, &families))
        .collect();
    assert!(
        unknown.is_empty(),
        "the docs name metrics the binary does not export: {unknown:?}"
    );
}

#[test]
fn every_exported_metric_is_in_the_operations_metrics_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let missing: Vec<String> = registered()
        .into_iter()
        .filter(|family| {
            !readme.contains(&format!("| `{family}` |")) && !readme.contains(&format!("| `{family}_total` |"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "registered but not in docs/operations.md's metrics table: {missing:?}"
    );
}

#[test]
fn the_name_reader_finds_names_and_skips_paths() {
    let found = named("`ssegate_events_total{route}` and crate::ssegate_x and ssegate_open_streams.");
    assert_eq!(
        found,
        ["ssegate_events_total", "ssegate_open_streams"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
