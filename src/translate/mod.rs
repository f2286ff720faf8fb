//! Translations of each input kind into the one internal route model
//! ([`RouteDefinition`](crate::model::RouteDefinition)): hosts, matches,
//! backends and settings, plus where they came from. The table builder
//! neither knows nor cares which kind a definition came from, so a new
//! input kind (Ingress, Gateway API's HTTPRoute) is a new translation here,
//! not a change to routing. Pure: no I/O, no kube client.

pub mod annotation_outcome;
pub mod convert_yaml;
pub mod gateway;
pub mod ingress;
pub mod ingress_access;
pub mod ingress_annotations;
pub mod ingress_class;
pub mod ingress_nginx_catalogue;
pub mod ingress_to_route;
pub mod route;
