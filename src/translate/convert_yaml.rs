//! `ssegate convert` over multi-document YAML text: every Ingress in it
//! becomes Routes (by [`ingress_to_routes`]), every other document passes
//! through unchanged, so the output can replace the input. The folder
//! source's limits apply to the text, and Services anywhere in it resolve
//! named ports. Pure: no I/O, no kube client.

use super::ingress_to_route::{ingress_to_routes, render};
use crate::model::{ObjectKey, ServiceObject};
use crate::sources::file::Limits;
use crate::sources::scan;
use k8s_openapi::api::networking::v1::Ingress;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// What [`convert_documents`] made of its input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Converted {
    /// The output: Routes in place of each Ingress, other documents as given.
    pub yaml: String,
    pub ingresses: usize,
    pub routes: usize,
    /// Documents passed through unchanged.
    pub passed: usize,
}

/// One problem with the input, located by its source and document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// `file.yaml` (or `-` for stdin) and the 1-based document, when known.
    pub source: String,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

enum Item {
    /// Verbatim text, with no document marker.
    Text(String),
    Ingress(Box<Ingress>, String),
}

/// Converts every `networking.k8s.io/v1` Ingress in `inputs` (pairs of a
/// name for messages and YAML text, several documents each, and `v1 List`s
/// such as `kubectl get ingress -o yaml` prints) into Routes, and passes
/// every other document through unchanged. Services anywhere in the input
/// resolve named ports. All or nothing: on any problem, every problem is
/// returned and no output. The folder source's `limits` apply.
pub fn convert_documents(
    inputs: &[(String, String)],
    limits: &Limits,
    default_namespace: &str,
) -> Result<Converted, Vec<InputError>> {
    let mut errors = Vec::new();
    let mut items = Vec::new();
    let mut services = BTreeMap::new();
    for (source, text) in inputs {
        let spans = scan::split_documents(text);
        if spans.len() > limits.max_documents {
            errors.push(InputError {
                source: source.clone(),
                message: format!(
                    "holds {} documents; at most {} are read from one input",
                    spans.len(),
                    limits.max_documents
                ),
            });
            continue;
        }
        for (d, span) in spans.iter().enumerate() {
            let at = format!("{source}: document {}", d + 1);
            let mut error = |message: String| {
                errors.push(InputError {
                    source: at.clone(),
                    message,
                })
            };
            if span.text.len() > limits.max_document_bytes {
                error(format!(
                    "is {} bytes; documents of at most {} bytes are read (etcd's limit for one object)",
                    span.text.len(),
                    limits.max_document_bytes
                ));
                continue;
            }
            if let Err(line) = scan::check_depth(span.text, limits.max_depth) {
                error(format!(
                    "nests deeper than {} levels at line {}; not parsed",
                    limits.max_depth,
                    span.first_line + line
                ));
                continue;
            }
            let value: serde_yaml::Value = match serde_yaml::from_str(span.text) {
                Ok(v) => v,
                Err(e) => {
                    error(format!("not YAML: {e}"));
                    continue;
                }
            };
            if value.is_null() {
                continue;
            }
            let is_list = value.get("apiVersion").and_then(|v| v.as_str()) == Some("v1")
                && value.get("kind").and_then(|v| v.as_str()) == Some("List");
            if is_list {
                let items_of = value
                    .get("items")
                    .and_then(|v| v.as_sequence())
                    .cloned()
                    .unwrap_or_default();
                for (n, item) in items_of.into_iter().enumerate() {
                    let at = format!("{at}, items[{n}]");
                    match classify(item, None, &at, &mut services, default_namespace) {
                        Ok(item) => items.push(item),
                        Err(message) => errors.push(InputError { source: at, message }),
                    }
                }
            } else {
                match classify(value, Some(span.text), &at, &mut services, default_namespace) {
                    Ok(item) => items.push(item),
                    Err(message) => error(message),
                }
            }
        }
    }

    let mut out = Converted::default();
    let mut names: HashMap<(String, String), String> = HashMap::new();
    for item in items {
        match item {
            Item::Text(text) => {
                out.yaml.push_str("---\n");
                out.yaml.push_str(&text);
                out.passed += 1;
            }
            Item::Ingress(ingress, at) => match ingress_to_routes(&ingress, &services, default_namespace) {
                Ok(routes) => {
                    out.ingresses += 1;
                    for r in &routes {
                        let meta = &r.route.metadata;
                        let key = (
                            meta.namespace.clone().unwrap_or_else(|| default_namespace.to_owned()),
                            meta.name.clone().unwrap_or_default(),
                        );
                        if let Some(other) = names.insert(key.clone(), at.clone()) {
                            errors.push(InputError {
                                source: at.clone(),
                                message: format!(
                                    "Route {}/{} is also made from {other}: rename one of the Ingresses",
                                    key.0, key.1
                                ),
                            });
                        }
                    }
                    out.routes += routes.len();
                    match render(&routes) {
                        Ok(text) => out.yaml.push_str(&text),
                        Err(e) => errors.push(InputError {
                            source: at,
                            message: format!("cannot print the Routes: {e}"),
                        }),
                    }
                }
                Err(problems) => errors.extend(problems.into_iter().map(|p| InputError {
                    source: at.clone(),
                    message: p.to_string(),
                })),
            },
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// What one document is: an Ingress to convert, or text to pass on (a
/// Service is also kept for named ports). `text` is the document as
/// written, when it is one (not a List item).
fn classify(
    value: serde_yaml::Value,
    text: Option<&str>,
    at: &str,
    services: &mut BTreeMap<ObjectKey, ServiceObject>,
    default_namespace: &str,
) -> Result<Item, String> {
    let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
    match (api_version, kind) {
        ("networking.k8s.io/v1", "Ingress") => {
            let ingress: Ingress = serde_yaml::from_value(value).map_err(|e| format!("Ingress: {e}"))?;
            Ok(Item::Ingress(Box::new(ingress), at.to_owned()))
        }
        (other, "Ingress") => Err(format!(
            "{other} Ingress is not converted: only networking.k8s.io/v1 (Kubernetes 1.19+) is; kubectl get returns that version"
        )),
        ("v1", "Service") => {
            // A Service that does not read is passed on all the same; it
            // just resolves no port.
            if let Ok(svc) = serde_yaml::from_value::<k8s_openapi::api::core::v1::Service>(value.clone()) {
                if let Ok(object) = crate::sources::convert::service(&svc, default_namespace) {
                    services.insert(object.key.clone(), object);
                }
            }
            passed(value, text)
        }
        _ => passed(value, text),
    }
}

fn passed(value: serde_yaml::Value, text: Option<&str>) -> Result<Item, String> {
    match text {
        Some(text) => Ok(Item::Text(without_markers(text))),
        None => serde_yaml::to_string(&value)
            .map(Item::Text)
            .map_err(|e| format!("cannot print: {e}")),
    }
}

/// A document's text without its `---` line and a closing `...`, ending
/// with a newline.
fn without_markers(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    // `---` may carry a comment or the document's start after it.
    if let Some(rest) = lines.first().and_then(|l| l.strip_prefix("---")) {
        if rest.is_empty() || rest.starts_with([' ', '\t']) {
            match rest.trim() {
                "" => {
                    lines.remove(0);
                }
                rest => lines[0] = rest,
            }
        }
    }
    if lines.last().is_some_and(|l| l.trim_end() == "...") {
        lines.pop();
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}
