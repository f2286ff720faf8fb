//! Gateway API (`gateway.networking.k8s.io`) types: GatewayClass, Gateway,
//! HTTPRoute (the Rust type is [`HttpRoute`]) and ReferenceGrant, in the
//! versions ssegate serves.
//!
//! Generated with kopium from the pinned CRDs in `crds/gateway-api/` (see
//! `scripts/gateway-api-crds.sh` and `scripts/gateway-api-types.sh`),
//! because the `gateway-api` crate is built on another kube/k8s-openapi than
//! ours. Only this file is hand-written. The field documentation is the
//! CRDs' descriptions in `crds/gateway-api/`.
//!
//! GatewayClass, Gateway and ReferenceGrant come from the standard channel.
//! HTTPRoute comes from the experimental channel of the same release, a
//! superset of the standard schema, so that an HTTPRoute of a cluster that
//! runs the experimental channel (an `ExternalAuth` filter, GEP-1494) is read
//! rather than failing the whole watch; and every HTTPRoute enum keeps a
//! value it does not list as `Unknown(String)`, for the same reason with a
//! newer CRD. The translation refuses what it does not implement.
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

/// apiVersion of GatewayClass, Gateway and HTTPRoute (and ReferenceGrant,
/// also served as v1beta1).
pub const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";
pub const GATEWAY_V1BETA1: &str = "gateway.networking.k8s.io/v1beta1";

/// API group of every Gateway API kind here.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The Gateway API release the CRDs and types come from.
pub const BUNDLE_VERSION: &str = "v1.6.3";

#[cfg(test)]
mod tests {
    use super::http_route::HttpRouteRulesFiltersRequestRedirect;
    use super::*;
    use kube::Resource;

    #[test]
    fn kinds_are_the_served_versions_of_the_gateway_api_group() {
        assert_eq!(GatewayClass::api_version(&()), "gateway.networking.k8s.io/v1");
        assert_eq!(Gateway::api_version(&()), "gateway.networking.k8s.io/v1");
        assert_eq!(HttpRoute::api_version(&()), "gateway.networking.k8s.io/v1");
        assert_eq!(HttpRoute::kind(&()), "HTTPRoute");
        assert_eq!(HttpRoute::plural(&()), "httproutes");
        assert_eq!(ReferenceGrant::api_version(&()), "gateway.networking.k8s.io/v1beta1");
        assert_eq!(Gateway::group(&()), GROUP);
    }

    /// A filter type of a newer CRD is read and written back as it is.
    #[test]
    fn unknown_filter_types_are_kept() {
        use super::http_route::{HttpRouteRulesFilters, HttpRouteRulesFiltersType};
        let filter: HttpRouteRulesFilters = serde_json::from_value(serde_json::json!({"type": "RateLimit"})).unwrap();
        assert_eq!(filter.r#type, HttpRouteRulesFiltersType::Unknown("RateLimit".into()));
        assert_eq!(serde_json::to_string(&filter).unwrap(), r#"{"type":"RateLimit"}"#);
        let known: HttpRouteRulesFilters = serde_json::from_value(serde_json::json!({"type": "CORS"})).unwrap();
        assert_eq!(known.r#type, HttpRouteRulesFiltersType::Cors);
    }

    /// The first fix-up to kopium's output: statusCode is a JSON number.
    #[test]
    fn redirect_status_code_is_a_number() {
        let redirect: HttpRouteRulesFiltersRequestRedirect =
            serde_json::from_value(serde_json::json!({"statusCode": 301})).unwrap();
        assert_eq!(redirect.status_code, Some(301));
        assert_eq!(serde_json::to_string(&redirect).unwrap(), r#"{"statusCode":301}"#);
    }
}
