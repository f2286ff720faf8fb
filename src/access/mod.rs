//! Access control, as sans-I/O pieces (issue 22): networks and the client
//! address behind trusted proxies (`cidr`, `client_addr`,
//! `proxy_protocol`), basic authentication (`htpasswd`), per-client limits
//! (`client_limits`) and the decisions around external authentication.
//! Bytes and time in, decisions out; the proxy does the I/O.

pub mod auth_cache;
pub mod cidr;
pub mod client_addr;
pub mod client_limits;
pub mod external_auth;
pub mod htpasswd;
pub mod nginx_vars;
pub mod proxy_protocol;
