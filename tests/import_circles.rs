//! No import circle inside a folder: a file's imports (`crate::…` and
//! `super::…` paths outside its tests and comments) never lead back to it
//! through files of the same folder. Layers between folders are kept by
//! review; inside a folder a circle means two files that cannot be read
//! (or moved) one without the other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`["proxy", "h1", "pump"]`) of every source file.
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            modules(&path, &p, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut p = prefix.to_vec();
            if !matches!(stem, "mod" | "lib" | "main") {
                p.push(stem.to_owned());
            }
            out.insert(p, std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The modules `source` (of module `module`) refers to by path.
fn references(module: &[String], source: &str, known: &BTreeMap<Vec<String>, String>) -> BTreeSet<Vec<String>> {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        for (i, _) in line.match_indices("crate::").chain(line.match_indices("super::")) {
            let before = line[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let token = line[i..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or_default();
            let words: Vec<&str> = token.split("::").filter(|w| !w.is_empty()).collect();
            let mut path: Vec<String> = Vec::new();
            let mut rest = &words[..];
            if rest.first() == Some(&"crate") {
                rest = &rest[1..];
            } else {
                path = module[..module.len().saturating_sub(1)].to_vec();
                rest = &rest[1..];
                while rest.first() == Some(&"super") {
                    path.pop();
                    rest = &rest[1..];
                }
            }
            // `super::{a::X, b}`: each item of the group names a path too.
            let after = &line[i + token.len()..];
            let group: Vec<&str> = match after.strip_prefix('{') {
                Some(g) => g.split('}').next().unwrap_or_default().split(',').collect(),
                None => vec![""],
            };
            for item in group {
                let mut full = path.clone();
                full.extend(rest.iter().map(|w| (*w).to_owned()));
                full.extend(item.trim().split("::").filter(|w| !w.is_empty()).map(str::to_owned));
                while !full.is_empty() && !known.contains_key(&full) {
                    full.pop();
                }
                if !full.is_empty() {
                    out.insert(full);
                }
            }
        }
    }
    out
}

#[test]
fn no_file_imports_come_back_to_it_inside_its_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut known = BTreeMap::new();
    modules(&root, &[], &mut known);
    let graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = known
        .iter()
        .map(|(m, src)| {
            let siblings = references(m, src, &known)
                .into_iter()
                .filter(|r| r != m && r.len() == m.len() && r[..r.len() - 1] == m[..m.len() - 1])
                .collect();
            (m.clone(), siblings)
        })
        .collect();
    let mut circles = Vec::new();
    for start in graph.keys() {
        // Every file reachable from `start` through its folder.
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&Vec<String>> = graph[start].iter().collect();
        while let Some(m) = todo.pop() {
            if m == start {
                circles.push(start.join("/"));
                break;
            }
            if seen.insert(m.clone()) {
                todo.extend(graph.get(m).into_iter().flatten());
            }
        }
    }
    assert!(
        circles.is_empty(),
        "these files' imports come back to them through their folder: {circles:?}"
    );
}

#[test]
fn the_check_finds_a_circle() {
    let mut known = BTreeMap::new();
    for m in ["a", "b"] {
        known.insert(vec!["f".to_owned(), m.to_owned()], String::new());
    }
    let a = references(&["f".into(), "a".into()], "use super::b::Thing;\n", &known);
    let grouped = references(&["f".into(), "a".into()], "use super::{b::Thing, Other};\n", &known);
    assert!(grouped.contains(&vec!["f".to_owned(), "b".to_owned()]), "{grouped:?}");
    let b = references(&["f".into(), "b".into()], "fn x() { crate::f::a::go() }\n", &known);
    assert!(a.contains(&vec!["f".to_owned(), "b".to_owned()]));
    assert!(b.contains(&vec!["f".to_owned(), "a".to_owned()]));
    let ignored = references(
        &["f".into(), "b".into()],
        "// super::a::go()\n#[cfg(test)]\nuse super::a;\n",
        &known,
    );
    assert!(ignored.is_empty(), "comments and tests do not count");
}
