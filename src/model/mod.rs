//! The pure routing model: objects in, an immutable [`RoutingTable`] out.
//!
//! Nothing here does I/O or knows about kube or hyper, so it is tested in
//! microseconds and shared by every source (Kubernetes, files).

pub mod access;
mod build;
mod gateway_ports;
mod host;
mod objects;
pub mod report;
mod table;
#[cfg(test)]
mod tests;

pub use access::AccessPolicy;
pub use build::build_table;
pub use gateway_ports::{
    AssignedPorts, GatewayPorts, ListenerChanges, ListenerHost, PortClaim, PortRange, PortRangeError,
};
pub use host::normalize_host;
pub use objects::*;
pub use report::{RouteReport, Verdict};
pub use table::{
    ReadyEndpoints, RequestFacts, RequestSketch, ResolvedBackend, ResolvedRule, RoutingTable, TableView, Unpicked,
};

/// The table every request reads, swapped whole on each change.
pub type SharedTable = std::sync::Arc<arc_swap::ArcSwap<RoutingTable>>;

/// A table that serves nothing, for start-up before any source has loaded.
pub fn empty_table() -> SharedTable {
    std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(RoutingTable::default()))
}
