//! Standalone mode's source: a folder of YAML files, watched for changes.
//!
//! Files hold Routes, Services and `discovery.k8s.io/v1` EndpointSlices in
//! the shape a cluster stores them, several documents per file allowed.
//! A document that fails to parse is reported (file, document number,
//! error) and the last good object from that position stays in force, so a
//! typo never takes a working Route down.

use super::convert;
use super::Applier;
use crate::api::Route;
use crate::model::{ObjectKey, Objects};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use notify::{RecursiveMode, Watcher};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Namespace given to objects that name none, as kubectl would.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One object read from a document.
#[derive(Debug, Clone)]
enum Doc {
    Route(Box<Route>),
    Service(crate::model::ServiceObject),
    Slice(crate::model::EndpointSliceObject),
    Secret(crate::model::SecretObject),
}

/// A problem with one document (or a whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    /// 1-based document number; `None` when the whole file failed.
    pub document: Option<usize>,
    pub message: String,
    /// Whether an earlier good version of this document is still used.
    pub kept_previous: bool,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(n) = self.document {
            write!(f, ": document {n}")?;
        }
        write!(f, ": {}", self.message)?;
        if self.kept_previous {
            write!(f, " (keeping the last good version)")?;
        }
        Ok(())
    }
}

/// Reads a folder into [`Objects`], remembering the last good documents.
pub struct FolderSource {
    dir: PathBuf,
    /// Last good document at each position of each file.
    good: HashMap<PathBuf, Vec<Option<Doc>>>,
    /// First time each Route was seen, standing in for creationTimestamp.
    first_seen: HashMap<ObjectKey, i64>,
    /// Per Route: last spec and a generation bumped when it changes.
    generations: HashMap<ObjectKey, (crate::api::RouteSpec, i64)>,
}

impl FolderSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FolderSource {
            dir: dir.into(),
            good: HashMap::new(),
            first_seen: HashMap::new(),
            generations: HashMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every `*.yaml` and `*.yml` file in the folder (not its
    /// subfolders), in name order.
    pub fn load(&mut self) -> (Objects, Vec<LoadError>) {
        let mut errors = Vec::new();
        let files = match yaml_files(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                errors.push(LoadError {
                    file: self.dir.clone(),
                    document: None,
                    message: format!("cannot list folder: {e}"),
                    kept_previous: !self.good.is_empty(),
                });
                // Keep serving what was loaded before.
                let files: Vec<PathBuf> = self.good.keys().cloned().collect();
                return (self.assemble(&files, &mut errors), errors);
            }
        };
        self.good.retain(|path, _| files.contains(path));
        for file in &files {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    let previous = self.good.remove(file).unwrap_or_default();
                    let docs = parse_file(file, &text, &previous, &mut errors);
                    self.good.insert(file.clone(), docs);
                }
                Err(e) => errors.push(LoadError {
                    file: file.clone(),
                    document: None,
                    message: format!("cannot read: {e}"),
                    kept_previous: self.good.contains_key(file),
                }),
            }
        }
        let objects = self.assemble(&files, &mut errors);
        (objects, errors)
    }

    fn assemble(&mut self, files: &[PathBuf], errors: &mut Vec<LoadError>) -> Objects {
        let mut objects = Objects::default();
        let mut origin: BTreeMap<(&'static str, ObjectKey), (PathBuf, usize)> = BTreeMap::new();
        let now = unix_millis();
        for file in files {
            let Some(docs) = self.good.get(file) else { continue };
            for (i, doc) in docs.iter().enumerate() {
                let Some(doc) = doc else { continue };
                let (kind, key) = match doc {
                    Doc::Route(r) => ("Route", route_key(r)),
                    Doc::Service(s) => ("Service", s.key.clone()),
                    Doc::Slice(s) => ("EndpointSlice", s.key.clone()),
                    Doc::Secret(s) => ("Secret", s.key.clone()),
                };
                if let Some((first_file, first_doc)) = origin.get(&(kind, key.clone())) {
                    errors.push(LoadError {
                        file: file.clone(),
                        document: Some(i + 1),
                        message: format!(
                            "{kind} {key} is already defined in {} document {}; this copy is ignored",
                            first_file.display(),
                            first_doc + 1
                        ),
                        kept_previous: false,
                    });
                    continue;
                }
                origin.insert((kind, key.clone()), (file.clone(), i));
                match doc {
                    Doc::Route(r) => {
                        let created = *self.first_seen.entry(key.clone()).or_insert(now);
                        let generation = match self.generations.get_mut(&key) {
                            Some((spec, gen)) if *spec != r.spec => {
                                *spec = r.spec.clone();
                                *gen += 1;
                                *gen
                            }
                            Some((_, gen)) => *gen,
                            None => {
                                self.generations.insert(key.clone(), (r.spec.clone(), 1));
                                1
                            }
                        };
                        match convert::route(r, DEFAULT_NAMESPACE, created) {
                            Ok(mut obj) => {
                                obj.generation = Some(r.metadata.generation.unwrap_or(generation));
                                objects.routes.insert(key, obj);
                            }
                            Err(e) => unreachable!("parsed routes have names: {e}"),
                        }
                    }
                    Doc::Service(s) => {
                        objects.services.insert(key, s.clone());
                    }
                    Doc::Slice(s) => {
                        objects.slices.insert(key, s.clone());
                    }
                    Doc::Secret(s) => {
                        if let Some(why) = &s.problem {
                            errors.push(LoadError {
                                file: file.clone(),
                                document: Some(i + 1),
                                message: format!("Secret {key} {why}"),
                                kept_previous: false,
                            });
                        }
                        objects.secrets.insert(key, s.clone());
                    }
                }
            }
        }
        let live: Vec<ObjectKey> = objects.routes.keys().cloned().collect();
        self.first_seen.retain(|k, _| live.contains(k));
        self.generations.retain(|k, _| live.contains(k));
        objects
    }
}

fn route_key(r: &Route) -> ObjectKey {
    ObjectKey::new(
        r.metadata
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE),
        r.metadata.name.clone().unwrap_or_default(),
    )
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if is_yaml && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses every document of a file. A failed document falls back to the
/// previous good one at the same position.
fn parse_file(file: &Path, text: &str, previous: &[Option<Doc>], errors: &mut Vec<LoadError>) -> Vec<Option<Doc>> {
    let mut docs = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let parsed = serde_yaml::Value::deserialize(document)
            .map_err(|e| e.to_string())
            .and_then(parse_doc);
        match parsed {
            // A broken certificate keeps serving the previous good one.
            Ok(Some(Doc::Secret(secret))) => {
                let last_good = match previous.get(i) {
                    Some(Some(Doc::Secret(prev))) => Some(prev),
                    _ => None,
                };
                docs.push(Some(Doc::Secret(secret.or_last_good(last_good))));
            }
            Ok(doc) => docs.push(doc),
            Err(message) => {
                let kept = previous.get(i).cloned().flatten();
                errors.push(LoadError {
                    file: file.to_owned(),
                    document: Some(i + 1),
                    message,
                    kept_previous: kept.is_some(),
                });
                docs.push(kept);
                if docs.len() > 10_000 {
                    break;
                }
            }
        }
    }
    // A syntax error can end the stream early: keep later good documents too.
    if docs.len() < previous.len() && errors.iter().any(|e| e.file == file) {
        docs.extend(previous[docs.len()..].iter().cloned());
    }
    docs
}

fn parse_doc(value: serde_yaml::Value) -> Result<Option<Doc>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let kind = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>")
        .to_owned();
    let context = |e: String| format!("{kind} {name}: {e}");
    match (api_version.as_str(), kind.as_str()) {
        (crate::api::API_VERSION, "Route") => {
            let route: Route = serde_yaml::from_value(value).map_err(|e| context(e.to_string()))?;
            if route.metadata.name.as_deref().unwrap_or("").is_empty() {
                return Err(context("metadata.name is required".into()));
            }
            Ok(Some(Doc::Route(Box::new(route))))
        }
        ("v1", "Service") => {
            let svc: Service = serde_yaml::from_value(value).map_err(|e| context(e.to_string()))?;
            let svc = convert::service(&svc, DEFAULT_NAMESPACE).map_err(|e| context(e.to_string()))?;
            Ok(Some(Doc::Service(svc)))
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let slice: EndpointSlice = serde_yaml::from_value(value).map_err(|e| context(e.to_string()))?;
            let slice = convert::endpoint_slice(&slice, DEFAULT_NAMESPACE).map_err(|e| context(e.to_string()))?;
            Ok(Some(Doc::Slice(slice)))
        }
        ("v1", "Secret") => {
            let secret: k8s_openapi::api::core::v1::Secret =
                serde_yaml::from_value(value).map_err(|e| context(e.to_string()))?;
            let secret = convert::tls_secret(&secret, DEFAULT_NAMESPACE).map_err(|e| context(e.to_string()))?;
            Ok(Some(Doc::Secret(secret)))
        }
        ("", _) | (_, "") => Err("apiVersion and kind are required".into()),
        _ => Err(format!(
            "{api_version} {kind} is not supported here; use {} Route, v1 Service, discovery.k8s.io/v1 EndpointSlice or v1 Secret (kubernetes.io/tls)",
            crate::api::API_VERSION
        )),
    }
}

/// Loads the folder, publishes, then watches it and republishes on every
/// change, debounced. Runs until the watcher fails.
pub async fn watch(mut source: FolderSource, applier: Arc<Applier>, debounce: Duration) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Our own reads raise access events; reacting to them would loop.
        if !matches!(&event, Ok(e) if e.kind.is_access()) {
            let _ = tx.send(event);
        }
    })?;
    watcher.watch(source.dir(), RecursiveMode::NonRecursive)?;
    reload(&mut source, &applier);
    while let Some(event) = rx.recv().await {
        let since = std::time::Instant::now();
        if let Err(e) = event {
            warn!(error = %e, "file watch error");
        }
        // Let a burst of writes (editor save, git checkout) settle.
        let quiet = tokio::time::sleep(debounce);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                _ = &mut quiet => break,
                more = rx.recv() => match more {
                    Some(_) => quiet.as_mut().reset(tokio::time::Instant::now() + debounce),
                    None => break,
                },
            }
        }
        reload_since(&mut source, &applier, Some(since));
    }
    Ok(())
}

/// Loads once and publishes; returns the load errors after logging them.
pub fn reload(source: &mut FolderSource, applier: &Applier) -> Vec<LoadError> {
    reload_since(source, applier, None)
}

/// As [`reload`]; `since` is when the first file event of the change came.
fn reload_since(source: &mut FolderSource, applier: &Applier, since: Option<std::time::Instant>) -> Vec<LoadError> {
    let started = std::time::Instant::now();
    let (objects, errors) = source.load();
    for e in &errors {
        warn!(error = %e, "configuration problem");
    }
    let generation = applier.apply_since(&objects, since);
    debug!(generation, elapsed = ?started.elapsed(), "folder reloaded");
    if generation == 1 {
        info!(dir = %source.dir().display(), routes = objects.routes.len(), "configuration loaded");
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "apiVersion: v1
kind: Service
metadata: {name: demo}
spec: {ports: [{name: http, port: 80}]}
";
    const ROUTE: &str = "apiVersion: ssegate.dev/v1alpha1
kind: Route
metadata: {name: demo}
spec:
  proxyBuffering: Disabled
  rules: [{backendRefs: [{name: demo, port: 80}]}]
";

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn reads_multi_document_files() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            &format!(
                "{SVC}---\n{ROUTE}---\napiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: demo-1, labels: {{kubernetes.io/service-name: demo}}}}
addressType: IPv4
ports: [{{name: http, port: 8081}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
"
            ),
        );
        let mut source = FolderSource::new(dir.path());
        let (objects, errors) = source.load();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(objects.routes.len(), 1);
        assert_eq!(objects.services.len(), 1);
        assert_eq!(objects.slices.len(), 1);
        let route = &objects.routes[&ObjectKey::new("default", "demo")];
        assert_eq!(route.generation, Some(1));
    }

    #[test]
    fn broken_document_keeps_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", &format!("{SVC}---\n{ROUTE}"));
        let mut source = FolderSource::new(dir.path());
        let (first, _) = source.load();

        write(
            dir.path(),
            "a.yaml",
            &format!("{SVC}---\n{}", ROUTE.replace("Disabled", "Sometimes")),
        );
        let (second, errors) = source.load();
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!(e.document, Some(2));
        assert!(e.kept_previous);
        assert!(e.message.contains("Route demo"), "{e}");
        assert!(e.message.contains("Sometimes"), "{e}");
        assert_eq!(first.routes, second.routes);

        // A YAML syntax error keeps everything from the file.
        write(dir.path(), "a.yaml", "apiVersion: v1\nkind: [unclosed\n");
        let (third, errors) = source.load();
        assert!(!errors.is_empty());
        assert_eq!(third.routes.len(), 1);
        assert_eq!(third.services.len(), 1);
    }

    #[test]
    fn unknown_kinds_and_duplicates_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            &format!("{ROUTE}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n"),
        );
        write(dir.path(), "b.yml", ROUTE);
        write(dir.path(), "notes.txt", "ignored");
        let mut source = FolderSource::new(dir.path());
        let (objects, errors) = source.load();
        assert_eq!(objects.routes.len(), 1);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("a.yaml: document 2: v1 ConfigMap is not supported"),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains("b.yml: document 1: Route default/demo is already defined in"),
            "{}",
            text[1]
        );
    }

    #[test]
    fn generation_bumps_only_when_the_spec_changes() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", ROUTE);
        let mut source = FolderSource::new(dir.path());
        let gen = |s: &mut FolderSource| s.load().0.routes.values().next().unwrap().generation;
        assert_eq!(gen(&mut source), Some(1));
        assert_eq!(gen(&mut source), Some(1));
        write(dir.path(), "a.yaml", &ROUTE.replace("Disabled", "Enabled"));
        assert_eq!(gen(&mut source), Some(2));
    }
}
