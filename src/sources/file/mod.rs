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
use crate::model::{ObjectKey, Objects, RouteDefinition, SourceKind};
use crate::translate::ingress_class::{ClassPolicy, OurClasses};
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

mod parse;
mod read;
#[cfg(test)]
mod tests;
mod watch;

use parse::parse_document;
pub use read::read_limited;
use read::{read_file, yaml_files};
pub use watch::{reload, watch};

pub use super::convert::DEFAULT_NAMESPACE;

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

/// One object read from a document, already converted: a Route is
/// translated into the internal route model as the document is parsed.
#[derive(Debug, Clone)]
enum Doc {
    Route(Box<ParsedRoute>),
    Ingress(Box<ParsedIngress>),
    IngressClass(crate::translate::ingress_class::IngressClassInfo),
    /// Gateway API objects (and Namespaces, for their labels), translated
    /// together once the whole folder is read.
    Gateway(Box<GatewayDoc>),
    Service(crate::model::ServiceObject),
    Slice(crate::model::EndpointSliceObject),
    Secret(crate::model::SecretObject),
    /// Any other Secret: data for basic authentication.
    SecretData(std::sync::Arc<crate::model::SecretData>),
}

/// What a Route translated to: compared to tell when to bump a generation.
type Translation = Result<crate::api::ValidRoute, Vec<crate::api::FieldError>>;

/// A Route's definition as parsed; its creation time and generation are
/// settled when the folder is assembled, from what was seen before.
#[derive(Debug, Clone)]
struct ParsedRoute {
    definition: crate::model::RouteDefinition,
    /// Whether the file set `metadata.creationTimestamp`.
    stamped: bool,
}

/// A Gateway API object (or a Namespace) as parsed. Always boxed in
/// [`Doc`], so its variants' sizes need not match.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
enum GatewayDoc {
    Class(crate::api::gateway::GatewayClass),
    Gateway(crate::api::gateway::Gateway),
    Route(crate::api::gateway::HttpRoute),
    Grant(crate::api::gateway::ReferenceGrant),
    Namespace(k8s_openapi::api::core::v1::Namespace),
    Policy(crate::api::StreamPolicy),
}

impl GatewayDoc {
    fn kind_and_key(&self) -> (&'static str, ObjectKey) {
        let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, namespaced: bool| {
            let ns = if namespaced {
                m.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
            } else {
                String::new()
            };
            ObjectKey::new(ns, m.name.clone().unwrap_or_default())
        };
        match self {
            GatewayDoc::Class(c) => ("GatewayClass", key(&c.metadata, false)),
            GatewayDoc::Gateway(g) => ("Gateway", key(&g.metadata, true)),
            GatewayDoc::Route(r) => ("HTTPRoute", key(&r.metadata, true)),
            GatewayDoc::Grant(g) => ("ReferenceGrant", key(&g.metadata, true)),
            GatewayDoc::Namespace(n) => ("Namespace", key(&n.metadata, false)),
            GatewayDoc::Policy(p) => ("StreamPolicy", key(&p.metadata, true)),
        }
    }
}

/// An Ingress as parsed; whether it is ssegate's is settled when the
/// folder is assembled, with every IngressClass known.
#[derive(Debug, Clone)]
struct ParsedIngress {
    candidate: convert::IngressCandidate,
    stamped: bool,
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

pub(super) fn doc_key(text: &str) -> DocKey {
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
    history: History,
    /// Which Ingresses are ssegate's.
    class_policy: ClassPolicy,
    /// The ports Gateways' own listeners are given (none: shared ports only).
    gateway_ports: Option<crate::model::PortRange>,
}

impl FolderSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FolderSource {
            dir: dir.into(),
            limits: Limits::default(),
            parsed: 0,
            files: BTreeMap::new(),
            reported: HashSet::new(),
            history: History::default(),
            class_policy: ClassPolicy::default(),
            gateway_ports: None,
        }
    }

    /// Gives each accepted Gateway its own data-plane ports from `range`
    /// (see [`crate::model::GatewayPorts`]).
    pub fn with_gateway_ports(mut self, range: Option<crate::model::PortRange>) -> Self {
        self.gateway_ports = range;
        self
    }

    /// Which Ingresses to serve (default: class `ssegate`, none without a
    /// class unless an IngressClass of ssegate's is the default).
    pub fn with_class_policy(mut self, policy: ClassPolicy) -> Self {
        self.class_policy = policy;
        self
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
        let classes: Vec<_> = self
            .files
            .values()
            .flat_map(|state| state.entries.iter().filter_map(Entry::doc))
            .filter_map(|doc| match doc {
                Doc::IngressClass(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        let ours = OurClasses::new(&classes, &self.class_policy);
        let mut gateway_docs: Vec<(PathBuf, usize, GatewayDoc)> = Vec::new();
        for (file, state) in &self.files {
            for (i, entry) in state.entries.iter().enumerate() {
                let Some(doc) = entry.doc() else { continue };
                let (kind, key) = match doc {
                    Doc::Route(r) => ("Route", r.definition.key.clone()),
                    Doc::Ingress(i) => ("Ingress", i.candidate.definition.key.clone()),
                    Doc::IngressClass(c) => ("IngressClass", ObjectKey::new("", c.name.as_str())),
                    Doc::Gateway(g) => g.kind_and_key(),
                    Doc::Service(s) => ("Service", s.key.clone()),
                    Doc::Slice(s) => ("EndpointSlice", s.key.clone()),
                    Doc::Secret(s) => ("Secret", s.key.clone()),
                    Doc::SecretData(s) => ("Secret", s.key.clone()),
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
                        let definition = self.history.settle(r.definition.clone(), r.stamped, now);
                        objects.routes.insert(key, definition);
                    }
                    Doc::Ingress(ing) => {
                        if let Some(why) = ing.candidate.not_ours(&ours) {
                            let mut note =
                                LoadError::new(file, Some(i + 1), format!("Ingress {key} is not served: {why}"), false);
                            note.warning = true;
                            errors.push(note);
                            continue;
                        }
                        let definition = self.history.settle(ing.candidate.definition.clone(), ing.stamped, now);
                        objects.ingresses.insert(key, definition);
                    }
                    Doc::IngressClass(_) => {}
                    Doc::Gateway(g) => gateway_docs.push((file.clone(), i, (**g).clone())),
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
                    Doc::SecretData(s) => {
                        objects.secret_data.insert(key, s.clone());
                    }
                }
            }
        }
        // Forget Routes that are gone: a lookup per entry (this was a list
        // scan per entry, quadratic in the number of Routes), and give the
        // memory back when most of them went away.
        self.gateway_api(gateway_docs, &mut objects, errors, now);
        let present = |(kind, k): &(SourceKind, ObjectKey)| match kind {
            SourceKind::Route => objects.routes.contains_key(k),
            SourceKind::Ingress => objects.ingresses.contains_key(k),
            kind => objects.gateway_api.contains_key(&(*kind, k.clone())),
        };
        self.history.first_seen.retain(|k, _| present(k));
        self.history.generations.retain(|k, _| present(k));
        shrink(&mut self.history.first_seen);
        shrink(&mut self.history.generations);
        objects
    }
}

impl FolderSource {
    /// Translates the folder's Gateway API objects as one set; a route
    /// parent that does not accept it is reported as a warning on its file.
    fn gateway_api(
        &mut self,
        docs: Vec<(PathBuf, usize, GatewayDoc)>,
        objects: &mut Objects,
        errors: &mut Vec<LoadError>,
        now: i64,
    ) {
        if docs.is_empty() {
            return;
        }
        let (mut classes, mut gateways, mut routes, mut grants) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut policies = Vec::new();
        let mut labels = BTreeMap::new();
        let mut route_files = HashMap::new();
        let mut policy_files = HashMap::new();
        for (file, i, doc) in docs {
            match doc {
                GatewayDoc::Class(c) => classes.push(c),
                GatewayDoc::Gateway(g) => gateways.push(g),
                GatewayDoc::Route(r) => {
                    let (_, key) = GatewayDoc::Route(r.clone()).kind_and_key();
                    route_files.insert(key, (file, i));
                    routes.push(r);
                }
                GatewayDoc::Grant(g) => grants.push(g),
                GatewayDoc::Policy(p) => {
                    let (_, key) = GatewayDoc::Policy(p.clone()).kind_and_key();
                    policy_files.insert(key, (file, i));
                    policies.push(p);
                }
                GatewayDoc::Namespace(n) => {
                    if let Some(name) = n.metadata.name.clone() {
                        labels.insert(name, n.metadata.labels.clone().unwrap_or_default());
                    }
                }
            }
        }
        let outcome = crate::translate::gateway::translate(&crate::translate::gateway::GatewayInputs {
            classes: &classes,
            gateways: &gateways,
            routes: &routes,
            grants: &grants,
            policies: &policies,
            namespace_labels: &labels,
            secrets: &objects.secrets,
            default_namespace: DEFAULT_NAMESPACE,
            gateway_ports: self.gateway_ports,
            // No Services are written in standalone mode: the order decides.
            held_ports: &std::collections::BTreeMap::new(),
        });
        for v in &outcome.policies {
            let Some((file, i)) = policy_files.get(&v.key) else {
                continue;
            };
            for a in v.ancestors.iter().filter(|a| !a.accepted.is_true()) {
                let mut note = LoadError::new(
                    file,
                    Some(i + 1),
                    format!(
                        "StreamPolicy {} is not applied to {}: {} ({})",
                        v.key, a.ancestor.name, a.accepted.message, a.accepted.reason
                    ),
                    false,
                );
                note.warning = true;
                errors.push(note);
            }
        }
        objects.gateway_ports = outcome.ports;
        for d in outcome.definitions {
            let stamped = d.created_millis != 0;
            let d = self.history.settle(d, stamped, now);
            objects.gateway_api.insert((d.kind, d.key.clone()), d);
        }
        for (key, _, plan) in &outcome.routes {
            let Some((file, i)) = route_files.get(key) else {
                continue;
            };
            for p in plan.parents.iter().filter(|p| !p.accepted.is_true()) {
                let mut note = LoadError::new(
                    file,
                    Some(i + 1),
                    format!(
                        "HTTPRoute {key} is not attached to Gateway {}: {} ({})",
                        p.parent.name, p.accepted.message, p.accepted.reason
                    ),
                    false,
                );
                note.warning = true;
                errors.push(note);
            }
            if let Some(refused) = &plan.refused_refs {
                let mut note = LoadError::new(
                    file,
                    Some(i + 1),
                    format!("HTTPRoute {key}: {} ({})", refused.message, refused.reason),
                    false,
                );
                note.warning = true;
                errors.push(note);
            }
        }
    }
}

/// What a file cannot say of a Route or Ingress, remembered across loads.
#[derive(Default)]
struct History {
    /// First time each was seen, standing in for creationTimestamp.
    first_seen: HashMap<(SourceKind, ObjectKey), i64>,
    /// The last translation and a generation bumped when it changes.
    generations: HashMap<(SourceKind, ObjectKey), (Translation, i64)>,
}

impl History {
    /// Settles the creation time (first seen here, unless stamped) and the
    /// generation.
    fn settle(&mut self, mut definition: RouteDefinition, stamped: bool, now: i64) -> RouteDefinition {
        let id = (definition.kind, definition.key.clone());
        let created = *self.first_seen.entry(id.clone()).or_insert(now);
        if !stamped {
            definition.created_millis = created;
        }
        let generation = match self.generations.get_mut(&id) {
            Some((seen, gen)) if *seen != definition.translated => {
                *seen = definition.translated.clone();
                *gen += 1;
                *gen
            }
            Some((_, gen)) => *gen,
            None => {
                self.generations.insert(id, (definition.translated.clone(), 1));
                1
            }
        };
        definition.generation = Some(definition.generation.unwrap_or(generation));
        definition
    }
}

/// Frees a map's spare room once it is mostly empty.
pub(super) fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.capacity() > 4 * map.len() {
        map.shrink_to_fit();
    }
}

pub(super) fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
