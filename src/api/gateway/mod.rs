//! Gateway API (`gateway.networking.k8s.io`) types: GatewayClass, Gateway,
//! HTTPRoute (the Rust type is [`HttpRoute`]) and ReferenceGrant, in the
//! versions ssegate serves.
//!
//! Generated with kopium from the pinned standard-channel CRDs in
//! `crds/gateway-api/` (see `scripts/gateway-api-crds.sh` and
//! `scripts/gateway-api-types.sh`), because the `gateway-api` crate is built
//! on another kube/k8s-openapi than ours. Only this file is hand-written.
//! The field documentation is the CRDs' descriptions in `crds/gateway-api/`.
//!
//! ReferenceGrant is `v1beta1`: its storage version in v1.6, and the one
//! every Gateway API release since v0.6 serves (v1 is served from v1.5 on).

// One file per kind, so the Gateway kind's module is api::gateway::gateway.
#[allow(clippy::module_inception)]
pub mod gateway;
pub mod gateway_class;
pub mod http_route;
pub mod reference_grant;

pub use gateway::{Gateway, GatewaySpec, GatewayStatus};
pub use gateway_class::{GatewayClass, GatewayClassSpec, GatewayClassStatus};
pub use http_route::{HttpRoute, HttpRouteSpec, HttpRouteStatus};
pub use reference_grant::{ReferenceGrant, ReferenceGrantSpec};

/// API group of every Gateway API kind here.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The Gateway API release the CRDs and types come from.
pub const BUNDLE_VERSION: &str = "v1.6.3";
