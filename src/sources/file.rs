//! Standalone mode's source: a folder of YAML files, watched for changes.
//!
//! Files hold Routes, Services and `discovery.k8s.io/v1` EndpointSlices in
//! the shape a cluster stores them, several documents per file allowed.
//! A document that fails to parse is reported (file, document number,
//! error) and the last good object from that position stays in force, so a
//! typo never takes a working Route down.

use super::convert;
use super::scan;
use super::ObjectSink;
use crate::api::Route;
use crate::model::{ObjectKey, Objects};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Namespace given to objects that name none, as kubectl would.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Bounds on what the folder source reads. A file or document past one is
/// refused with an error naming the file and the limit, and the last good
/// version of it stays in force; nothing past a limit reaches the YAML
/// parser, so a huge or hostile file costs milliseconds, not minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// YAML files read from the folder. Past it the whole change is refused
    /// and the configuration loaded before stays.
    pub max_files: usize,
    /// Bytes of one file.
    pub max_file_bytes: u64,
    /// Documents in one file.
    pub max_documents: usize,
    /// Bytes of one document: etcd's limit for one object, so a file never
    /// holds what a cluster could not store.
    pub max_document_bytes: usize,
    /// Nesting levels of one document (flow brackets and block indentation),
    /// checked by a linear scan before parsing.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_files: 10_000,
            max_file_bytes: 64 << 20,
            max_documents: 100_000,
            max_document_bytes: 1536 << 10,
            max_depth: 64,
        }
    }
}

/// Problems logged per file per change; the rest are counted in one line.
const LOGGED_PER_FILE: usize = 20;

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
    /// The document loaded anyway: this only warns (an unknown field).
    pub warning: bool,
    /// First seen at this load: its file changed, or the problem is new.
    /// Only these are logged, so one problem is one log line per change.
    pub new: bool,
}

impl LoadError {
    fn new(file: &Path, document: Option<usize>, message: String, kept_previous: bool) -> Self {
        LoadError {
            file: file.to_owned(),
            document,
            message,
            kept_previous,
            warning: false,
            new: true,
        }
    }
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

/// Identifies a document's text: its length and a hash of it. An unchanged
/// document is not parsed again, so a one-line change in a file of 100,000
/// Routes parses one document.
type DocKey = (usize, u64);

fn doc_key(text: &str) -> DocKey {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    (text.len(), h.finish())
}

/// What became of one document position of a file.
#[derive(Debug)]
enum Outcome {
    /// Parsed; `warnings` are unknown fields that were ignored.
    Good { doc: Option<Doc>, warnings: Vec<String> },
    /// Failed; `kept` is the last good object from this position.
    Bad { message: String, kept: Option<Doc> },
    /// A position past the end of a file that has failing documents: its
    /// last good object stays until the file is fixed.
    Leftover(Option<Doc>),
}

#[derive(Debug)]
struct Entry {
    key: DocKey,
    outcome: Outcome,
}

impl Entry {
    fn doc(&self) -> Option<&Doc> {
        match &self.outcome {
            Outcome::Good { doc, .. } | Outcome::Leftover(doc) | Outcome::Bad { kept: doc, .. } => doc.as_ref(),
        }
    }

    fn into_doc(self) -> Option<Doc> {
        match self.outcome {
            Outcome::Good { doc, .. } | Outcome::Leftover(doc) | Outcome::Bad { kept: doc, .. } => doc,
        }
    }
}

/// What is known of one file.
#[derive(Debug, Default)]
struct FileState {
    /// Length and hash of the text last read; `None` when it could not be read.
    fingerprint: Option<DocKey>,
    entries: Vec<Entry>,
    /// Problems of the last read, reported again on every load.
    problems: Vec<LoadError>,
}

/// Reads a folder into [`Objects`], remembering the last good documents.
pub struct FolderSource {
    dir: PathBuf,
    limits: Limits,
    /// Documents parsed by the last load (unchanged ones are not).
    parsed: usize,
    /// Every file read, by path (so in name order).
    files: BTreeMap<PathBuf, FileState>,
    /// Problems reported by the previous load, as displayed.
    reported: HashSet<String>,
    /// First time each Route was seen, standing in for creationTimestamp.
    first_seen: HashMap<ObjectKey, i64>,
    /// Per Route: last spec and a generation bumped when it changes.
    generations: HashMap<ObjectKey, (crate::api::RouteSpec, i64)>,
}

impl FolderSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FolderSource {
            dir: dir.into(),
            limits: Limits::default(),
            parsed: 0,
            files: BTreeMap::new(),
            reported: HashSet::new(),
            first_seen: HashMap::new(),
            generations: HashMap::new(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many documents the last [`FolderSource::load`] parsed.
    pub fn parsed(&self) -> usize {
        self.parsed
    }

    /// Reads every `*.yaml` and `*.yml` file in the folder (not its
    /// subfolders), in name order. Files and documents unchanged since the
    /// last load are not parsed again. Every current problem is returned;
    /// those first seen now are marked [`LoadError::new`].
    pub fn load(&mut self) -> (Objects, Vec<LoadError>) {
        let mut errors = Vec::new();
        let mut changed = HashSet::new();
        self.parsed = 0;
        match yaml_files(&self.dir) {
            Err(e) => errors.push(LoadError::new(
                &self.dir,
                None,
                format!("cannot list folder: {e}"),
                !self.files.is_empty(),
            )),
            Ok(files) if files.len() > self.limits.max_files => errors.push(LoadError::new(
                &self.dir,
                None,
                format!(
                    "holds {} YAML files; at most {} are read (limit max_files), so this change is not applied",
                    files.len(),
                    self.limits.max_files
                ),
                !self.files.is_empty(),
            )),
            Ok(files) => {
                let listed: HashSet<&PathBuf> = files.iter().collect();
                self.files.retain(|path, _| listed.contains(path));
                for file in &files {
                    let state = self.files.entry(file.clone()).or_default();
                    if let Some(parsed) = read_file(file, state, &self.limits) {
                        self.parsed += parsed;
                        changed.insert(file.clone());
                    }
                }
            }
        }
        for state in self.files.values() {
            errors.extend(state.problems.iter().cloned());
        }
        let objects = self.assemble(&mut errors);
        let mut reported = HashSet::with_capacity(errors.len());
        for e in &mut errors {
            let text = e.to_string();
            e.new = changed.contains(&e.file) || !self.reported.contains(&text);
            reported.insert(text);
        }
        self.reported = reported;
        (objects, errors)
    }

    fn assemble(&mut self, errors: &mut Vec<LoadError>) -> Objects {
        let mut objects = Objects::default();
        let mut origin: HashMap<(&'static str, ObjectKey), (&Path, usize)> = HashMap::new();
        let now = unix_millis();
        for (file, state) in &self.files {
            for (i, entry) in state.entries.iter().enumerate() {
                let Some(doc) = entry.doc() else { continue };
                let (kind, key) = match doc {
                    Doc::Route(r) => ("Route", route_key(r)),
                    Doc::Service(s) => ("Service", s.key.clone()),
                    Doc::Slice(s) => ("EndpointSlice", s.key.clone()),
                    Doc::Secret(s) => ("Secret", s.key.clone()),
                };
                match origin.entry((kind, key.clone())) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        let (first_file, first_doc) = first.get();
                        errors.push(LoadError::new(
                            file,
                            Some(i + 1),
                            format!(
                                "{kind} {key} is already defined in {} document {}; this copy is ignored",
                                first_file.display(),
                                first_doc + 1
                            ),
                            false,
                        ));
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert((file, i));
                    }
                }
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
                            errors.push(LoadError::new(file, Some(i + 1), format!("Secret {key} {why}"), false));
                        }
                        objects.secrets.insert(key, s.clone());
                    }
                }
            }
        }
        // Forget Routes that are gone: a lookup per entry (this was a list
        // scan per entry, quadratic in the number of Routes), and give the
        // memory back when most of them went away.
        self.first_seen.retain(|k, _| objects.routes.contains_key(k));
        self.generations.retain(|k, _| objects.routes.contains_key(k));
        shrink(&mut self.first_seen);
        shrink(&mut self.generations);
        objects
    }
}

/// Frees a map's spare room once it is mostly empty.
fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.capacity() > 4 * map.len() {
        map.shrink_to_fit();
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

/// Reads a file at most `max` bytes long.
fn read_limited(file: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let too_big = |len: u64| {
        format!(
            "is {len} bytes; files of at most {max} bytes are read (limit max_file_bytes): split it into several files"
        )
    };
    let handle = std::fs::File::open(file).map_err(|e| format!("cannot read: {e}"))?;
    let len = handle.metadata().map_err(|e| format!("cannot read: {e}"))?.len();
    if len > max {
        return Err(too_big(len));
    }
    let mut text = String::with_capacity(len as usize);
    handle
        .take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > max {
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}

/// Brings `state` up to date with `file`. Returns `None` when the file is
/// unchanged, else how many documents were parsed. A file that fails as a
/// whole keeps its last good documents.
fn read_file(file: &Path, state: &mut FileState, limits: &Limits) -> Option<usize> {
    let text = match read_limited(file, limits.max_file_bytes) {
        Ok(text) => text,
        Err(message) => {
            let kept = state.entries.iter().any(|e| e.doc().is_some());
            let problem = vec![LoadError::new(file, None, message, kept)];
            let changed = state.fingerprint.is_some() || state.problems != problem;
            state.fingerprint = None;
            state.problems = problem;
            return changed.then_some(0);
        }
    };
    let fingerprint = doc_key(&text);
    if state.fingerprint == Some(fingerprint) {
        return None;
    }
    state.fingerprint = Some(fingerprint);
    let spans = scan::split_documents(&text);
    if spans.len() > limits.max_documents {
        let kept = state.entries.iter().any(|e| e.doc().is_some());
        let message = format!(
            "holds {} documents; at most {} are read from one file (limit max_documents): split it into several files",
            spans.len(),
            limits.max_documents
        );
        state.problems = vec![LoadError::new(file, None, message, kept)];
        return Some(0);
    }

    let mut old: Vec<Option<Entry>> = std::mem::take(&mut state.entries).into_iter().map(Some).collect();
    let mut by_key: HashMap<DocKey, usize> = HashMap::new();
    for (j, entry) in old.iter().enumerate() {
        if let Some(Entry {
            key,
            outcome: Outcome::Good { .. },
        }) = entry
        {
            by_key.entry(*key).or_insert(j);
        }
    }
    let mut entries = Vec::with_capacity(spans.len());
    let mut failed = false;
    let mut parsed = 0;
    for (i, span) in spans.iter().enumerate() {
        let key = doc_key(span.text);
        let reused = by_key.remove(&key).and_then(|j| old[j].take());
        let outcome = match reused {
            Some(entry) => entry.outcome,
            None => {
                let previous = old.get(i).and_then(Option::as_ref).and_then(Entry::doc);
                parsed += 1;
                match parse_document(span, previous, limits) {
                    Ok((doc, warnings)) => Outcome::Good { doc, warnings },
                    Err(message) => {
                        failed = true;
                        Outcome::Bad {
                            message,
                            kept: previous.cloned(),
                        }
                    }
                }
            }
        };
        entries.push(Entry { key, outcome });
    }
    // A broken file keeps the objects of positions it no longer has, so a
    // half-saved file takes nothing down.
    if failed && old.len() > entries.len() {
        for entry in old.drain(entries.len()..) {
            entries.push(Entry {
                key: (0, 0),
                outcome: Outcome::Leftover(entry.and_then(Entry::into_doc)),
            });
        }
    }
    let mut problems = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match &entry.outcome {
            Outcome::Bad { message, kept } => {
                problems.push(LoadError::new(file, Some(i + 1), message.clone(), kept.is_some()))
            }
            Outcome::Good { warnings, .. } => {
                for w in warnings {
                    let mut warning = LoadError::new(file, Some(i + 1), w.clone(), false);
                    warning.warning = true;
                    problems.push(warning);
                }
            }
            Outcome::Leftover(_) => {}
        }
    }
    state.entries = entries;
    state.problems = problems;
    Some(parsed)
}

/// Parses one document, after checking its size and depth without a parser.
/// `previous` is the last good object at the same position.
fn parse_document(
    span: &scan::Span<'_>,
    previous: Option<&Doc>,
    limits: &Limits,
) -> Result<(Option<Doc>, Vec<String>), String> {
    if span.text.len() > limits.max_document_bytes {
        return Err(format!(
            "is {} bytes; documents of at most {} bytes are read (limit max_document_bytes, etcd's limit for one object)",
            span.text.len(),
            limits.max_document_bytes
        ));
    }
    if let Err(line) = scan::check_depth(span.text, limits.max_depth) {
        return Err(format!(
            "nests deeper than {} levels at line {} (limit max_depth); not parsed",
            limits.max_depth,
            span.first_line + line
        ));
    }
    let value: serde_yaml::Value = serde_yaml::from_str(span.text).map_err(|e| yaml_error(&e, span.first_line))?;
    let mut warnings = Vec::new();
    let doc = match parse_doc(value, &mut warnings)? {
        // A broken certificate keeps serving the previous good one.
        Some(Doc::Secret(secret)) => {
            let last_good = match previous {
                Some(Doc::Secret(prev)) => Some(prev),
                _ => None,
            };
            Some(Doc::Secret(secret.or_last_good(last_good)))
        }
        doc => doc,
    };
    Ok((doc, warnings))
}

/// serde_yaml's message with its lines counted from the start of the file,
/// not of the document.
fn yaml_error(e: &serde_yaml::Error, first_line: usize) -> String {
    let text = e.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("at line ") {
        let (head, tail) = rest.split_at(at + "at line ".len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        match tail[..digits].parse::<usize>() {
            Ok(line) => out.push_str(&(line + first_line - 1).to_string()),
            Err(_) => out.push_str(&tail[..digits]),
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// Deserializes `value`, naming the field of any error (`spec.bufferSize:
/// ...`) and adding to `warnings` every field the type does not know.
/// A cluster's apiserver prunes or refuses unknown fields; here they would
/// otherwise vanish silently, leaving a typo'd setting at its default.
fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml::Value, warnings: &mut Vec<String>) -> Result<T, String> {
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(field_path(&path));
    let result = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut note));
    // Every type checks apiVersion and kind before this; some do not keep them.
    for field in unknown.into_iter().filter(|f| f != "apiVersion" && f != "kind") {
        warnings.push(format!("unknown field {field} is ignored"));
    }
    result.map_err(|e| e.to_string())
}

/// `spec.rules[0].matches` for a path serde_ignored reports.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

fn parse_doc(value: serde_yaml::Value, warnings: &mut Vec<String>) -> Result<Option<Doc>, String> {
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
    let start = warnings.len();
    let doc = match (api_version.as_str(), kind.as_str()) {
        (crate::api::API_VERSION, "Route") => {
            let route: Route = typed(value, warnings).map_err(context)?;
            if route.metadata.name.as_deref().unwrap_or("").is_empty() {
                return Err(context("metadata.name is required".into()));
            }
            Doc::Route(Box::new(route))
        }
        ("v1", "Service") => {
            let svc: Service = typed(value, warnings).map_err(context)?;
            Doc::Service(convert::service(&svc, DEFAULT_NAMESPACE).map_err(|e| context(e.to_string()))?)
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let slice: EndpointSlice = typed(value, warnings).map_err(context)?;
            Doc::Slice(convert::endpoint_slice(&slice, DEFAULT_NAMESPACE).map_err(|e| context(e.to_string()))?)
        }
        ("v1", "Secret") => {
            let secret: k8s_openapi::api::core::v1::Secret = typed(value, warnings).map_err(context)?;
            Doc::Secret(convert::tls_secret(&secret, DEFAULT_NAMESPACE).map_err(|e| context(e.to_string()))?)
        }
        ("", _) | (_, "") => return Err("apiVersion and kind are required".into()),
        _ => {
            return Err(format!(
                "{api_version} {kind} is not supported here; use {} Route, v1 Service, discovery.k8s.io/v1 EndpointSlice or v1 Secret (kubernetes.io/tls)",
                crate::api::API_VERSION
            ))
        }
    };
    for w in &mut warnings[start..] {
        *w = context(std::mem::take(w));
    }
    Ok(Some(doc))
}

/// Loads the folder, delivers it, calls `ready` once that first table is
/// live, then watches the folder and delivers again on every change,
/// debounced. Runs until the watcher fails.
pub async fn watch(
    mut source: FolderSource,
    sink: Arc<dyn ObjectSink>,
    debounce: Duration,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Our own reads raise access events; reacting to them would loop.
        if !matches!(&event, Ok(e) if e.kind.is_access()) {
            let _ = tx.send(event);
        }
    })?;
    watcher.watch(source.dir(), RecursiveMode::NonRecursive)?;
    reload(&mut source, &*sink);
    ready();
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
        reload_since(&mut source, &*sink, Some(since));
    }
    Ok(())
}

/// Loads once and publishes; returns the load errors after logging them.
pub fn reload(source: &mut FolderSource, sink: &dyn ObjectSink) -> Vec<LoadError> {
    reload_since(source, sink, None)
}

/// As [`reload`]; `since` is when the first file event of the change came.
fn reload_since(source: &mut FolderSource, sink: &dyn ObjectSink, since: Option<std::time::Instant>) -> Vec<LoadError> {
    let started = std::time::Instant::now();
    let (objects, errors) = source.load();
    log_problems(&errors);
    let loaded = started.elapsed();
    let generation = sink.deliver(&objects, since);
    if generation == 1 {
        info!(dir = %source.dir().display(), routes = objects.routes.len(), "configuration loaded");
    }
    // The objects are rebuilt from the parsed documents on every load:
    // free them before the heap is trimmed.
    let size = super::object_count(&objects);
    drop(objects);
    sink.delivered(size);
    debug!(generation, parsed = source.parsed(), ?loaded, elapsed = ?started.elapsed(), "folder reloaded");
    errors
}

/// Logs the problems first seen at this load, one line each, at most
/// [`LOGGED_PER_FILE`] per file and a count of the rest.
fn log_problems(errors: &[LoadError]) {
    let mut per_file: HashMap<&Path, usize> = HashMap::new();
    for e in errors.iter().filter(|e| e.new) {
        let n = per_file.entry(&e.file).or_default();
        *n += 1;
        if *n > LOGGED_PER_FILE {
            continue;
        }
        if e.warning {
            warn!(warning = %e, "configuration warning");
        } else {
            warn!(error = %e, "configuration problem");
        }
    }
    for (file, n) in per_file {
        if n > LOGGED_PER_FILE {
            warn!(file = %file.display(), more = n - LOGGED_PER_FILE, "more configuration problems in this file are not logged");
        }
    }
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

    fn messages(errors: &[LoadError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    fn small_limits() -> Limits {
        Limits {
            max_files: 3,
            max_file_bytes: 2000,
            max_documents: 4,
            max_document_bytes: 500,
            max_depth: 8,
        }
    }

    /// A source with `a.yaml` (Service and Route) loaded, and small limits.
    fn loaded(dir: &Path) -> FolderSource {
        write(dir, "a.yaml", &format!("{SVC}---\n{ROUTE}"));
        let mut source = FolderSource::new(dir).with_limits(small_limits());
        let (objects, errors) = source.load();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(objects.routes.len(), 1);
        source
    }

    #[test]
    fn a_file_over_the_byte_limit_is_refused_and_its_last_good_version_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = loaded(dir.path());
        let big = format!("{SVC}---\n{ROUTE}# {}\n", "x".repeat(2000));
        write(dir.path(), "a.yaml", &big);
        let (objects, errors) = source.load();
        assert_eq!(
            messages(&errors),
            [format!(
                "{}: is {} bytes; files of at most 2000 bytes are read (limit max_file_bytes): split it into several files (keeping the last good version)",
                dir.path().join("a.yaml").display(),
                big.len()
            )]
        );
        assert_eq!(objects.routes.len(), 1);
        assert_eq!(objects.services.len(), 1);
    }

    #[test]
    fn a_document_over_the_byte_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = loaded(dir.path());
        let big = ROUTE.replace("spec:", &format!("  # {}\nspec:", "x".repeat(500)));
        write(dir.path(), "a.yaml", &format!("{SVC}---\n{big}"));
        let (objects, errors) = source.load();
        let text = messages(&errors);
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(
            text[0].ends_with(&format!(
                "a.yaml: document 2: is {} bytes; documents of at most 500 bytes are read (limit max_document_bytes, etcd's limit for one object) (keeping the last good version)",
                big.len() + 4
            )),
            "{}",
            text[0]
        );
        assert_eq!(objects.routes.len(), 1);
    }

    #[test]
    fn too_many_documents_in_a_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = loaded(dir.path());
        write(dir.path(), "a.yaml", &format!("{SVC}---\n{ROUTE}---\n---\n---\n"));
        let (objects, errors) = source.load();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().ends_with(
                "a.yaml: holds 5 documents; at most 4 are read from one file (limit max_documents): split it into several files (keeping the last good version)"
            ),
            "{}",
            errors[0]
        );
        assert_eq!(objects.routes.len(), 1);
    }

    #[test]
    fn too_many_files_keep_the_configuration_loaded_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = loaded(dir.path());
        for name in ["b.yaml", "c.yaml", "d.yml"] {
            write(dir.path(), name, "# empty\n");
        }
        let (objects, errors) = source.load();
        assert_eq!(
            messages(&errors),
            [format!(
                "{}: holds 4 YAML files; at most 3 are read (limit max_files), so this change is not applied (keeping the last good version)",
                dir.path().display()
            )]
        );
        assert_eq!(objects.routes.len(), 1);
    }

    #[test]
    fn nesting_past_the_depth_limit_is_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = loaded(dir.path());
        let deep = format!(
            "{SVC}---\n{}",
            ROUTE.replace(
                "{name: demo}",
                &format!("{{name: demo, labels: {{a: {}1{}}}}}", "[".repeat(8), "]".repeat(8))
            )
        );
        write(dir.path(), "a.yaml", &deep);
        let (objects, errors) = source.load();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].to_string().ends_with(
                "a.yaml: document 2: nests deeper than 8 levels at line 8 (limit max_depth); not parsed (keeping the last good version)"
            ),
            "{}",
            errors[0]
        );
        assert_eq!(objects.routes.len(), 1);
        assert_eq!(objects.services.len(), 1);
    }

    #[test]
    fn a_hostile_bracket_file_fails_fast_and_the_rest_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", &format!("{SVC}---\n{ROUTE}"));
        // 200 KB: 100,000 nested brackets took the parser 33 s.
        write(dir.path(), "evil.yaml", &"[".repeat(100_000).repeat(2));
        let mut source = FolderSource::new(dir.path());
        let started = std::time::Instant::now();
        let (objects, errors) = source.load();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "{took:?}");
        assert_eq!(
            messages(&errors),
            [format!(
                "{}: document 1: nests deeper than 64 levels at line 1 (limit max_depth); not parsed",
                dir.path().join("evil.yaml").display()
            )]
        );
        assert_eq!(objects.routes.len(), 1);
        assert_eq!(objects.services.len(), 1);
    }

    #[test]
    fn one_syntax_error_is_one_problem_reported_once_per_change_of_its_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", &format!("{SVC}---\n{ROUTE}"));
        write(dir.path(), "broken.yaml", "apiVersion: v1\nkind: [unclosed\n");
        let mut source = FolderSource::new(dir.path());
        let (objects, errors) = source.load();
        assert_eq!(objects.routes.len(), 1);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].new);
        assert!(
            errors[0].to_string().contains("broken.yaml: document 1: "),
            "{}",
            errors[0]
        );

        // Another file changes: the problem is still there but not new.
        write(
            dir.path(),
            "a.yaml",
            &format!("{SVC}---\n{}", ROUTE.replace("Disabled", "Enabled")),
        );
        let (_, errors) = source.load();
        assert_eq!(errors.len(), 1);
        assert!(!errors[0].new, "reported again: {}", errors[0]);
        let (_, errors) = source.load();
        assert!(!errors[0].new);

        // The broken file changes (still broken): reported once more.
        write(dir.path(), "broken.yaml", "apiVersion: v1\nkind: [still unclosed\n");
        let (_, errors) = source.load();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].new);
    }

    #[test]
    fn a_syntax_error_costs_one_document_and_lines_count_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let svc2 = SVC.replace("demo", "other");
        write(dir.path(), "a.yaml", &format!("{SVC}---\nkey: [unclosed\n---\n{svc2}"));
        let (objects, errors) = FolderSource::new(dir.path()).load();
        assert_eq!(objects.services.len(), 2);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].document, Some(2));
        assert_eq!(
            errors[0].message,
            "did not find expected ',' or ']' at line 7 column 1, while parsing a flow sequence at line 6 column 6"
        );
    }

    #[test]
    fn unknown_fields_load_with_a_warning_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let route = "apiVersion: ssegate.dev/v1alpha1
kind: Route
metadata: {name: typo, lables: {a: b}}
spec:
  proxybuffering: Disabled
  timeouts: {idel: 5s}
  rules: [{backendRefs: [{name: demo, port: 80, wieght: 2}]}]
";
        write(dir.path(), "a.yaml", &format!("{SVC}---\n{route}"));
        let (objects, errors) = FolderSource::new(dir.path()).load();
        assert_eq!(objects.routes.len(), 1);
        let text = messages(&errors);
        let file = dir.path().join("a.yaml");
        let expected: Vec<String> = [
            "metadata.lables",
            "spec.proxybuffering",
            "spec.timeouts.idel",
            "spec.rules[0].backendRefs[0].wieght",
        ]
        .iter()
        .map(|f| {
            format!(
                "{}: document 2: Route typo: unknown field {f} is ignored",
                file.display()
            )
        })
        .collect();
        assert_eq!(text, expected);
        assert!(errors.iter().all(|e| e.warning && !e.kept_previous));
    }

    #[test]
    fn wrong_values_say_what_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let route = |spec: &str| {
            format!("apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:\n  {spec}\n  rules: [{{backendRefs: [{{name: demo, port: 80}}]}}]\n")
        };
        write(
            dir.path(),
            "a.yaml",
            &format!("{}---\n{}", route("bufferSize: -5"), route("proxyBuffering: true")),
        );
        let (_, errors) = FolderSource::new(dir.path()).load();
        let text: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            text,
            [
                "Route r: spec.bufferSize: must be a positive quantity such as 64Ki or 1Mi, got -5",
                "Route r: spec.proxyBuffering: must be one of Enabled, Disabled, Auto (got a boolean true; YAML reads unquoted on/off/yes/no/true/false as booleans)",
            ]
        );
    }

    #[test]
    fn unchanged_documents_are_not_parsed_again() {
        let dir = tempfile::tempdir().unwrap();
        let routes: Vec<String> = (0..3)
            .map(|i| ROUTE.replace("name: demo}", &format!("name: r{i}}}")))
            .collect();
        write(dir.path(), "a.yaml", &routes.join("---\n"));
        write(dir.path(), "b.yaml", SVC);
        let mut source = FolderSource::new(dir.path());
        source.load();
        assert_eq!(source.parsed(), 4);
        write(dir.path(), "b.yaml", &SVC.replace("port: 80", "port: 81"));
        source.load();
        assert_eq!(source.parsed(), 1);
        let edited = routes[1].replace("Disabled", "Enabled");
        write(
            dir.path(),
            "a.yaml",
            &format!("{}---\n{edited}---\n{}", routes[0], routes[2]),
        );
        let (objects, errors) = source.load();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(source.parsed(), 1);
        assert_eq!(objects.routes.len(), 3);
        let r1 = &objects.routes[&ObjectKey::new("default", "r1")];
        assert_eq!(r1.spec.proxy_buffering, crate::api::ProxyBuffering::Enabled);
        assert_eq!(r1.generation, Some(2));
        // Removing a file forgets its objects.
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        let (objects, _) = source.load();
        assert!(objects.routes.is_empty());
        assert!(source.first_seen.is_empty() && source.generations.is_empty());
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
