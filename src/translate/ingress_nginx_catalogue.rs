//! Every ingress-nginx annotation, sorted once into what ssegate does with
//! it (issue 22).
//!
//! An annotation that restricts who may reach a path and that ssegate does
//! not enforce must never be ignored: its Ingress is then not served (see
//! [`Class::FailClosed`]). So that a new entry cannot slip into "ignored"
//! by default, the list is explicit and complete: the test beside it walks
//! ingress-nginx's final annotation list (`ingress_nginx_annotations.txt`,
//! taken from its source at the commit named there) and requires a class
//! for each, and [`class_of`] puts names ingress-nginx never had but that
//! read as access control (`auth-*`, `global-auth-*`, any `*snippet`) in
//! [`Class::FailClosed`] too. Pure data.

/// What ssegate does with one annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Read in `ingress_annotations.rs`, where its value decides: applied
    /// (or refused as invalid, the default then applying), or, for
    /// `use-regex`, `backend-protocol` and `enable-global-auth`, which of
    /// the other classes a value falls in.
    Read(&'static str),
    /// ssegate already does what it is for, without it: the reason.
    Unnecessary(&'static str),
    /// Not honoured, and ignoring it never lets a request through that
    /// ingress-nginx would have refused: the reason.
    Harmless(&'static str),
    /// Restricts who may reach a path, and ssegate does not enforce it:
    /// every path of the Ingress answers 503 until the annotation is
    /// removed or named in `ssegate.dev/unenforced-annotations`. The reason.
    FailClosed(&'static str),
    /// Raw NGINX configuration: never executed. Judged by its lines: known
    /// lines about streaming are unnecessary, lines that only set headers
    /// are harmless, anything else may deny access, so it fails closed.
    Snippet,
}

const REDIRECT_WONT: &str =
    "ssegate answers with what the backend sends, not this redirect; ignoring it serves no path ingress-nginx refused";
const AFFINITY: &str = "no session affinity or hashing: ssegate balances by least connections (or ssegate.dev/load-balancing: RoundRobin), and event streams resume with Last-Event-ID";
const CANARY: &str = "canary Ingresses are served as ordinary ones: where one names the same host and path as its main Ingress, the older of the two serves all of it and the other is reported as conflicted";
const TLS_TO_BACKEND: &str =
    "ssegate speaks plain HTTP/1.1 to upstreams; a backend that requires TLS or a client certificate refuses it";
const OBSERVABILITY: &str =
    "logging and tracing are configured on ssegate itself (access log, metrics), not per Ingress";
const MODSECURITY: &str = "a web application firewall refuses requests it judges hostile, and ssegate has none: serving without it would let those requests through";
const CLIENT_CERTS: &str = "client certificates are not requested or verified by ssegate: serving without them would let clients in that ingress-nginx refused";
const SNIPPETS_PASSTHROUGH: &str =
    "raw NGINX for the TCP/UDP stream module, never executed; it configures other ports, not this Ingress's paths";

/// ingress-nginx's annotations (without the `nginx.ingress.kubernetes.io/`
/// prefix), sorted by name, each with its class. Aliases are listed too.
pub const CATALOGUE: &[(&str, Class)] = &[
    ("affinity", Class::Harmless(AFFINITY)),
    ("affinity-canary-behavior", Class::Harmless(AFFINITY)),
    ("affinity-mode", Class::Harmless(AFFINITY)),
    ("allowlist-source-range", Class::Read("Clients outside these networks get 403 (access.allowSourceRanges).")),
    ("app-root", Class::Harmless("ssegate proxies / to the backend instead of redirecting it to the application root; the backend answers / as ingress-nginx let it answer every other path")),
    ("auth-always-set-cookie", Class::Read("The auth answer's Set-Cookie goes on 401, 403 and 500 answers too.")),
    ("auth-cache-duration", Class::Read("How long answers are kept, by status.")),
    ("auth-cache-key", Class::Read("Answers are kept per key (nginx variables), one subrequest per key at a time.")),
    ("auth-keepalive", Class::Read("Idle connections kept to the auth service.")),
    ("auth-keepalive-requests", Class::Read("Requests per kept-alive connection.")),
    ("auth-keepalive-share-vars", Class::Read("Validated; unnecessary: ssegate has no nginx variables for requests to share.")),
    ("auth-keepalive-timeout", Class::Read("How long an idle connection is kept.")),
    ("auth-method", Class::Read("The subrequest's method.")),
    ("auth-proxy-set-headers", Class::FailClosed("headers from a ConfigMap sent to the external authentication service are not supported: the service could decide on less than it was meant to")),
    ("auth-realm", Class::Read("The realm of the basic-auth challenge.")),
    ("auth-request-redirect", Class::Read("Sent as X-Auth-Request-Redirect.")),
    ("auth-response-headers", Class::Read("Copied from the auth answer to the upstream request; the client's copies are removed first.")),
    ("auth-secret", Class::Read("The Secret (`name` or `namespace/name`, own namespace only) holding the users; watched by name, rotation is live; missing or unreadable fails closed.")),
    ("auth-secret-type", Class::Read("`auth-file` (key `auth`, an htpasswd file) or `auth-map` (a key per user).")),
    ("auth-signin", Class::Read("A 401 becomes a 302 to this URL, with the original URL in `rd`.")),
    ("auth-signin-redirect-param", Class::Read("The name of that parameter.")),
    ("auth-snippet", Class::FailClosed("raw NGINX run before the authentication subrequest is never executed, and it may be what the decision depends on")),
    ("auth-tls-error-page", Class::FailClosed(CLIENT_CERTS)),
    ("auth-tls-match-cn", Class::FailClosed(CLIENT_CERTS)),
    ("auth-tls-pass-certificate-to-upstream", Class::FailClosed(CLIENT_CERTS)),
    ("auth-tls-secret", Class::FailClosed(CLIENT_CERTS)),
    ("auth-tls-verify-client", Class::FailClosed(CLIENT_CERTS)),
    ("auth-tls-verify-depth", Class::FailClosed(CLIENT_CERTS)),
    ("auth-type", Class::Read("`basic` (401 with a challenge unless a user of auth-secret); `digest` fails closed.")),
    ("auth-url", Class::Read("Every request (an event stream once, when it starts) is sent to this service first; 2xx passes, 401/403 are passed on, anything else is a 500.")),
    ("backend-protocol", Class::Read("Read: `HTTP` is unnecessary; others are ignored (the backend refuses plain HTTP).")),
    ("canary", Class::Harmless(CANARY)),
    ("canary-by-cookie", Class::Harmless(CANARY)),
    ("canary-by-header", Class::Harmless(CANARY)),
    ("canary-by-header-pattern", Class::Harmless(CANARY)),
    ("canary-by-header-value", Class::Harmless(CANARY)),
    ("canary-weight", Class::Harmless(CANARY)),
    ("canary-weight-total", Class::Harmless(CANARY)),
    ("client-body-buffer-size", Class::Unnecessary("ssegate streams request bodies to the upstream as they arrive, buffering none")),
    ("configuration-snippet", Class::Snippet),
    ("connection-proxy-header", Class::Unnecessary("ssegate keeps upstream connections alive and sets Connection itself")),
    ("cors-allow-credentials", Class::Read("With enable-cors; not with origin `*`, which browsers refuse.")),
    ("cors-allow-headers", Class::Read("Part of the CORS policy, with enable-cors.")),
    ("cors-allow-methods", Class::Read("Part of the CORS policy, with enable-cors.")),
    ("cors-allow-origin", Class::Read("Part of the CORS policy, with enable-cors.")),
    ("cors-expose-headers", Class::Read("Part of the CORS policy, with enable-cors.")),
    ("cors-max-age", Class::Read("With enable-cors, capped at a day.")),
    ("custom-headers", Class::Harmless("response headers from a ConfigMap are not added")),
    ("custom-http-errors", Class::Harmless("error pages come from the backend (or ssegate's own plain-text replies), not a custom default backend")),
    ("default-backend", Class::Harmless("error pages come from the backend (or ssegate's own plain-text replies), not a custom default backend")),
    ("denylist-source-range", Class::Read("Clients in these networks get 403 (access.denySourceRanges).")),
    ("disable-proxy-intercept-errors", Class::Harmless("ssegate never replaces the backend's error responses")),
    ("enable-access-log", Class::Harmless(OBSERVABILITY)),
    ("enable-cors", Class::Read("The CORS policy, with ingress-nginx's defaults.")),
    ("enable-global-auth", Class::Read("Read: `false` is unnecessary; otherwise fails closed (ingress-nginx's ConfigMap global-auth-url is not read).")),
    ("enable-modsecurity", Class::FailClosed(MODSECURITY)),
    ("enable-opentelemetry", Class::Harmless(OBSERVABILITY)),
    ("enable-owasp-core-rules", Class::FailClosed(MODSECURITY)),
    ("enable-rewrite-log", Class::Harmless(OBSERVABILITY)),
    ("fastcgi-index", Class::Harmless("ssegate speaks HTTP to upstreams, not FastCGI; a FastCGI backend refuses it")),
    ("fastcgi-params-configmap", Class::Harmless("ssegate speaks HTTP to upstreams, not FastCGI; a FastCGI backend refuses it")),
    ("force-ssl-redirect", Class::Read("A 308 to HTTPS on every host.")),
    ("from-to-www-redirect", Class::Harmless("the other www./bare host is not served at all rather than redirected")),
    ("http2-push-preload", Class::Unnecessary("browsers no longer support HTTP/2 server push")),
    ("limit-allowlist", Class::Read("Client networks the limits spare.")),
    ("limit-burst-multiplier", Class::Read("The burst of limit-rps and limit-rpm (default 5).")),
    ("limit-connections", Class::Read("Requests (for SSE: open streams) per client address; 503 with Retry-After past it.")),
    ("limit-rate", Class::Harmless("bandwidth per connection is not limited; who may connect is unchanged")),
    ("limit-rate-after", Class::Harmless("bandwidth per connection is not limited; who may connect is unchanged")),
    ("limit-rpm", Class::Read("Requests per minute per client address, as limit-rps.")),
    ("limit-rps", Class::Read("Requests per second per client address, burst rps × limit-burst-multiplier, 503 with Retry-After.")),
    ("limit-whitelist", Class::Read("As limit-allowlist (its old name).")),
    ("load-balance", Class::Harmless(AFFINITY)),
    ("mirror-host", Class::Harmless("requests are not mirrored")),
    ("mirror-request-body", Class::Harmless("requests are not mirrored")),
    ("mirror-target", Class::Harmless("requests are not mirrored")),
    ("modsecurity-snippet", Class::FailClosed(MODSECURITY)),
    ("modsecurity-transaction-id", Class::FailClosed(MODSECURITY)),
    ("opentelemetry-operation-name", Class::Harmless(OBSERVABILITY)),
    ("opentelemetry-trust-incoming-span", Class::Harmless(OBSERVABILITY)),
    ("permanent-redirect", Class::FailClosed("the path answered a redirect and never reached the backend; ssegate does not redirect it, and would expose the backend instead")),
    ("permanent-redirect-code", Class::FailClosed("the path answered a redirect and never reached the backend; ssegate does not redirect it, and would expose the backend instead")),
    ("preserve-trailing-slash", Class::Harmless(REDIRECT_WONT)),
    ("proxy-body-size", Class::Harmless("ssegate streams request bodies within its own limits; a larger body is not refused for this Ingress")),
    ("proxy-buffer-size", Class::Unnecessary("ssegate buffers no more than it must; use ssegate.dev/buffer-size for proxyBuffering: Enabled")),
    ("proxy-buffering", Class::Read("`on` → Enabled, `off` → Disabled; absent → Auto.")),
    ("proxy-buffers-number", Class::Unnecessary("ssegate buffers no more than it must; use ssegate.dev/buffer-size for proxyBuffering: Enabled")),
    ("proxy-busy-buffers-size", Class::Unnecessary("ssegate buffers no more than it must; use ssegate.dev/buffer-size for proxyBuffering: Enabled")),
    ("proxy-connect-timeout", Class::Read("The time to connect to an endpoint (timeouts.connect).")),
    ("proxy-cookie-domain", Class::Harmless("cookies from the backend are passed on unchanged")),
    ("proxy-cookie-path", Class::Harmless("cookies from the backend are passed on unchanged")),
    ("proxy-http-version", Class::Unnecessary("ssegate always speaks HTTP/1.1 to upstreams, with keep-alive")),
    ("proxy-max-temp-file-size", Class::Unnecessary("ssegate never spools responses to disk")),
    ("proxy-next-upstream", Class::Harmless("ssegate's own policy decides when another endpoint is tried")),
    ("proxy-next-upstream-timeout", Class::Harmless("ssegate's own policy decides when another endpoint is tried")),
    ("proxy-next-upstream-tries", Class::Harmless("ssegate's own policy decides when another endpoint is tried")),
    ("proxy-read-timeout", Class::Read("The idle timeout between upstream bytes, never a cap on a stream.")),
    ("proxy-redirect-from", Class::Harmless("Location headers from the backend are passed on unchanged")),
    ("proxy-redirect-to", Class::Harmless("Location headers from the backend are passed on unchanged")),
    ("proxy-request-buffering", Class::Harmless("ssegate streams request bodies to the upstream as they arrive")),
    ("proxy-send-timeout", Class::Harmless("no separate equivalent: ssegate's timeouts.responseHeaders also covers an upstream that stops taking the request")),
    ("proxy-ssl-ciphers", Class::Harmless(TLS_TO_BACKEND)),
    ("proxy-ssl-name", Class::Harmless(TLS_TO_BACKEND)),
    ("proxy-ssl-protocols", Class::Harmless(TLS_TO_BACKEND)),
    ("proxy-ssl-secret", Class::Harmless(TLS_TO_BACKEND)),
    ("proxy-ssl-server-name", Class::Harmless(TLS_TO_BACKEND)),
    ("proxy-ssl-verify", Class::Harmless(TLS_TO_BACKEND)),
    ("proxy-ssl-verify-depth", Class::Harmless(TLS_TO_BACKEND)),
    ("relative-redirects", Class::Harmless(REDIRECT_WONT)),
    ("rewrite-target", Class::Harmless("ssegate forwards the request's own host and path unchanged")),
    ("satisfy", Class::Read("`any` lets one passing check of source ranges, basic and external auth suffice.")),
    ("server-alias", Class::Harmless("the alias hosts are not served at all")),
    ("server-snippet", Class::Snippet),
    ("service-upstream", Class::Unnecessary("ssegate balances over the Service's ready endpoints itself")),
    ("session-cookie-change-on-failure", Class::Harmless(AFFINITY)),
    ("session-cookie-conditional-samesite-none", Class::Harmless(AFFINITY)),
    ("session-cookie-domain", Class::Harmless(AFFINITY)),
    ("session-cookie-expires", Class::Harmless(AFFINITY)),
    ("session-cookie-max-age", Class::Harmless(AFFINITY)),
    ("session-cookie-name", Class::Harmless(AFFINITY)),
    ("session-cookie-path", Class::Harmless(AFFINITY)),
    ("session-cookie-samesite", Class::Harmless(AFFINITY)),
    ("session-cookie-secure", Class::Harmless(AFFINITY)),
    ("ssl-ciphers", Class::Harmless("ssegate's TLS listener offers rustls's modern cipher suites only")),
    ("ssl-passthrough", Class::FailClosed("ssegate terminates TLS itself and cannot pass the handshake through to the backend, which may check client certificates")),
    ("ssl-prefer-server-ciphers", Class::Harmless("ssegate's TLS listener offers rustls's modern cipher suites only")),
    ("ssl-redirect", Class::Read("A 308 to HTTPS for hosts with TLS (ACME challenges exempt).")),
    ("stream-snippet", Class::Harmless(SNIPPETS_PASSTHROUGH)),
    ("temporal-redirect", Class::FailClosed("the path answered a redirect and never reached the backend; ssegate does not redirect it, and would expose the backend instead")),
    ("temporal-redirect-code", Class::FailClosed("the path answered a redirect and never reached the backend; ssegate does not redirect it, and would expose the backend instead")),
    ("upstream-hash-by", Class::Harmless(AFFINITY)),
    ("upstream-hash-by-subset", Class::Harmless(AFFINITY)),
    ("upstream-hash-by-subset-size", Class::Harmless(AFFINITY)),
    ("upstream-vhost", Class::Harmless("ssegate forwards the request's own Host")),
    ("use-port-in-redirects", Class::Harmless(REDIRECT_WONT)),
    ("use-regex", Class::Read("Read: regular-expression paths are refused, never matched literally.")),
    ("whitelist-source-range", Class::Read("As allowlist-source-range (its old name; read when the new one is absent).")),
    ("x-forwarded-prefix", Class::Harmless("no X-Forwarded-Prefix is sent, since the path is forwarded unchanged")),
];

/// The class of an annotation (without its prefix). Names ingress-nginx
/// never had are `None` (ingress-nginx ignores them too), except those
/// that read as access control or raw configuration: they fail closed,
/// since their author meant something by them.
pub fn class_of(name: &str) -> Option<Class> {
    if let Ok(i) = CATALOGUE.binary_search_by(|(n, _)| (*n).cmp(name)) {
        return Some(CATALOGUE[i].1);
    }
    if name.starts_with("auth-") || name.starts_with("global-auth-") {
        return Some(Class::FailClosed(
            "not an annotation ingress-nginx reads, but it names access control: ssegate cannot tell what it was meant to restrict",
        ));
    }
    if name.ends_with("snippet") {
        return Some(Class::Snippet);
    }
    None
}

/// The catalogue as a Markdown table, for `docs/ingress-nginx-annotations.md`
/// (a test keeps that file in step with the catalogue).
pub fn markdown() -> String {
    let mut out = String::from(
        "# ingress-nginx annotations in ssegate\n\n\
         Every annotation of ingress-nginx (prefix `nginx.ingress.kubernetes.io/`), sorted into what ssegate does with it. \
         Generated from `src/translate/ingress_nginx_catalogue.rs` (`ssegate annotations`); a test fails when it is stale.\n\n\
         - **honoured**: ssegate does what it asks;\n\
         - **by value**: its value decides which of the others applies;\n\
         - **unnecessary**: ssegate does what it is for without it;\n\
         - **ignored**: not honoured, and ignoring it never lets a request through that ingress-nginx refused;\n\
         - **fails closed**: it restricts who may reach a path and ssegate does not enforce it: every path of the Ingress answers 503 \
         until it is removed, or named in `ssegate.dev/unenforced-annotations` (itself reported);\n\
         - **snippet**: never executed; judged by its statements: streaming ones are unnecessary, response-header ones ignored, \
         anything else fails closed.\n\n\
         Names ingress-nginx never had are ignored, as ingress-nginx ignores them, except `auth-*`, `global-auth-*` and \
         `*snippet`, which fail closed. A value that cannot be read fails closed for access annotations, and leaves the default \
         for the others.\n\n\
         | annotation | class | what ssegate does |\n|---|---|---|\n",
    );
    for (name, class) in CATALOGUE {
        let (class, why) = match class {
            Class::Read(why) => match why.strip_prefix("Read: ") {
                Some(rest) => ("by value", rest),
                None => ("honoured", *why),
            },
            Class::Unnecessary(why) => ("unnecessary", *why),
            Class::Harmless(why) => ("ignored", *why),
            Class::FailClosed(why) => ("fails closed", *why),
            Class::Snippet => (
                "snippet",
                "Never executed; fails closed unless every statement only configures streaming or response headers.",
            ),
        };
        out.push_str(&format!("| `{name}` | {class} | {} |\n", why.replace('|', "\\|")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ingress-nginx's annotations as its source defines them, one per
    /// line, after `#` comments.
    const UPSTREAM: &str = include_str!("ingress_nginx_annotations.txt");

    fn upstream() -> Vec<&'static str> {
        UPSTREAM
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn the_catalogue_is_sorted_and_has_no_duplicates() {
        for pair in CATALOGUE.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} must come before {}", pair[1].0, pair[0].0);
        }
    }

    #[test]
    fn every_ingress_nginx_annotation_has_a_class_and_nothing_else_is_listed() {
        let upstream = upstream();
        assert!(
            upstream.len() > 130,
            "the upstream list is complete: {}",
            upstream.len()
        );
        let missing: Vec<&&str> = upstream
            .iter()
            .filter(|n| CATALOGUE.binary_search_by(|(c, _)| c.cmp(n)).is_err())
            .collect();
        assert!(missing.is_empty(), "annotations without a class: {missing:?}");
        let extra: Vec<&str> = CATALOGUE
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !upstream.contains(n))
            .collect();
        assert!(extra.is_empty(), "listed but not ingress-nginx's: {extra:?}");
    }

    #[test]
    fn every_reason_is_stated() {
        for (name, class) in CATALOGUE {
            if let Class::Read(why) | Class::Unnecessary(why) | Class::Harmless(why) | Class::FailClosed(why) = class {
                assert!(why.len() > 20, "{name}: a reason, not a word: {why:?}");
            }
        }
    }

    #[test]
    fn the_annotation_document_is_in_step_with_the_catalogue() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ingress-nginx-annotations.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == markdown(),
            "docs/ingress-nginx-annotations.md is stale: cargo run -- annotations > docs/ingress-nginx-annotations.md"
        );
    }

    #[test]
    fn unknown_names_that_read_as_access_control_fail_closed() {
        for name in ["auth-foo", "global-auth-url", "global-auth-signin", "lua-snippet"] {
            assert!(
                matches!(class_of(name), Some(Class::FailClosed(_) | Class::Snippet)),
                "{name}"
            );
        }
        assert_eq!(class_of("no-such-thing"), None);
        assert!(matches!(class_of("proxy-buffering"), Some(Class::Read(_))));
    }
}
