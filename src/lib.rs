//! ssegate: an ingress controller and reverse proxy built for Server-Sent Events.
//!
//! The crate is laid out the way requests and objects flow:
//! - [`api`]: the `Route` custom resource and its validation;
//! - [`certs`]: PEM key pairs parsed and checked, for sources and the TLS listener;
//! - [`model`]: the pure routing table, built from objects with no I/O;
//! - [`translate`]: each input kind translated into the one internal route model;
//! - [`http1`]: HTTP/1.1 framing ssegate owns: head parsing and the chunked coding, pure;
//! - [`proxy`]: the data plane that serves the current table;
//! - [`apply`]: the hub that builds, publishes and swaps each table;
//! - [`sources`]: what feeds objects in (the YAML folder, the Kubernetes API);
//! - [`status`]: where Route status goes;
//! - [`listener`]: binding, accept back-off and the connection budget;
//! - [`process`]: the open-file limit and the host name;
//! - [`supervise`]: background tasks started again when they panic;
//! - [`admin`]: health, readiness, metrics and debug endpoints;
//! - [`run`]: standalone mode, Kubernetes mode and serving, as the binary runs them;
//! - [`metrics`]: the Prometheus registry the data plane and sources update;
//! - [`demo`]: a demo SSE backend for the quick start and the tests.

pub mod access;
pub mod admin;
pub mod api;
pub mod apply;
pub mod certs;
pub mod demo;
pub mod h2;
pub mod http1;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod process;
pub mod proxy;
pub mod run;
mod shared_map;
pub mod sources;
pub mod status;
pub mod supervise;
pub mod translate;
