//! One document: size and depth checked without a parser, then parsed,
//! typed, and converted to the object it describes, with unknown fields
//! named and errors that say what is allowed.

use super::*;

/// Parses one document, after checking its size and depth without a parser.
/// `previous` is the last good object at the same position.
pub(super) fn parse_document(
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
        // Unchanged data keeps its parsed credentials (and their cache).
        Some(Doc::SecretData(data)) => match previous {
            Some(Doc::SecretData(prev)) if **prev == *data => Some(Doc::SecretData(prev.clone())),
            _ => Some(Doc::SecretData(data)),
        },
        doc => doc,
    };
    Ok((doc, warnings))
}

/// serde_yaml's message with its lines counted from the start of the file,
/// not of the document.
pub(super) fn yaml_error(e: &serde_yaml::Error, first_line: usize) -> String {
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
pub(super) fn typed<T: serde::de::DeserializeOwned>(
    value: serde_yaml::Value,
    warnings: &mut Vec<String>,
) -> Result<T, String> {
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
pub(super) fn field_path(path: &serde_ignored::Path<'_>) -> String {
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

pub(super) fn parse_doc(value: serde_yaml::Value, warnings: &mut Vec<String>) -> Result<Option<Doc>, String> {
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
            let definition = convert::route(&route, DEFAULT_NAMESPACE, 0).map_err(|e| context(e.to_string()))?;
            Doc::Route(Box::new(ParsedRoute {
                definition,
                stamped: route.metadata.creation_timestamp.is_some(),
            }))
        }
        ("networking.k8s.io/v1", "Ingress") => {
            let ingress: k8s_openapi::api::networking::v1::Ingress = typed(value, warnings).map_err(context)?;
            let candidate = convert::ingress(&ingress, DEFAULT_NAMESPACE, 0).map_err(|e| context(e.to_string()))?;
            Doc::Ingress(Box::new(ParsedIngress {
                candidate,
                stamped: ingress.metadata.creation_timestamp.is_some(),
            }))
        }
        ("networking.k8s.io/v1", "IngressClass") => {
            let class: k8s_openapi::api::networking::v1::IngressClass = typed(value, warnings).map_err(context)?;
            Doc::IngressClass(convert::ingress_class(&class).map_err(|e| context(e.to_string()))?)
        }
        (crate::api::gateway::GATEWAY_V1, "GatewayClass") => Doc::Gateway(Box::new(GatewayDoc::Class(typed(value, warnings).map_err(context)?))),
        (crate::api::gateway::GATEWAY_V1, "Gateway") => Doc::Gateway(Box::new(GatewayDoc::Gateway(typed(value, warnings).map_err(context)?))),
        (crate::api::gateway::GATEWAY_V1, "HTTPRoute") => Doc::Gateway(Box::new(GatewayDoc::Route(typed(value, warnings).map_err(context)?))),
        (crate::api::gateway::GATEWAY_V1 | crate::api::gateway::GATEWAY_V1BETA1, "ReferenceGrant") => {
            Doc::Gateway(Box::new(GatewayDoc::Grant(typed(value, warnings).map_err(context)?)))
        }
        (crate::api::API_VERSION, "StreamPolicy") => Doc::Gateway(Box::new(GatewayDoc::Policy(typed(value, warnings).map_err(context)?))),
        ("v1", "Namespace") => Doc::Gateway(Box::new(GatewayDoc::Namespace(typed(value, warnings).map_err(context)?))),
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
            if secret.type_.as_deref() == Some(convert::TLS_SECRET_TYPE) {
                Doc::Secret(convert::tls_secret(&secret, DEFAULT_NAMESPACE).map_err(|e| context(e.to_string()))?)
            } else {
                Doc::SecretData(std::sync::Arc::new(
                    convert::secret_data(&secret, DEFAULT_NAMESPACE).map_err(|e| context(e.to_string()))?,
                ))
            }
        }
        ("", _) | (_, "") => return Err("apiVersion and kind are required".into()),
        _ => {
            return Err(format!(
                "{api_version} {kind} is not supported here; use {} Route, networking.k8s.io/v1 Ingress or IngressClass, gateway.networking.k8s.io/v1 GatewayClass, Gateway, HTTPRoute or ReferenceGrant, v1 Service, Namespace or Secret (kubernetes.io/tls, or any other type for basic authentication), or discovery.k8s.io/v1 EndpointSlice",
                crate::api::API_VERSION
            ))
        }
    };
    for w in &mut warnings[start..] {
        *w = context(std::mem::take(w));
    }
    Ok(Some(doc))
}
