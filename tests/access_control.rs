//! Access control against the real binary (issue 22): what an Ingress's
//! ingress-nginx annotations (or a Route's `spec.access`) close is never
//! served open. Clients are real HTTP clients (reqwest, and curl from
//! network namespaces for real source addresses), the auth service is a
//! real HTTP server, and the upstream records what reaches it, so every
//! refusal is also checked to have reached nothing.

mod common;

use common::auth_server::AuthServer;
use common::process::Ssegate;
use common::*;
use std::time::Duration;
use tokio::time::Instant;

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// A folder with a backend Service `svc` (one upstream), started as a
/// standalone ssegate.
struct Setup {
    up: Upstream,
    dir: tempfile::TempDir,
    logs: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let up = Upstream::start("u1").await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("backend.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
        Setup {
            up,
            dir,
            logs: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, yaml: &str) {
        // A rename, so the watcher never reads half a file.
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }

    async fn start(&self) -> Ssegate {
        self.start_on("127.0.0.1", &[]).await
    }

    async fn start_on(&self, ip: &str, extra: &[&str]) -> Ssegate {
        let mut args = vec!["standalone", "--dir", self.dir.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        Ssegate::start_on(ip, &args, self.logs.path(), |_| {}).await
    }
}

/// An Ingress `name` of class ssegate serving `/` of `host` from `svc`.
fn ingress(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let mut out =
        format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations:\n");
    out.push_str("    ssegate.test/owner: tests\n");
    for (k, v) in annotations {
        let k = if k.contains('/') {
            k.to_string()
        } else {
            format!("{NGINX}{k}")
        };
        out.push_str(&format!("    {k}: {v:?}\n"));
    }
    out.push_str(&format!(
        "spec:\n  ingressClassName: ssegate\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}\n"
    ));
    out
}

/// A request for `path` on `host` through `gw`.
fn get(gw: &Ssegate, host: &str, path: &str) -> reqwest::RequestBuilder {
    client().get(format!("{}{path}", gw.proxy)).header("host", host)
}

/// Waits until a request for `host` answers `status` (a change applied).
async fn wait_status(gw: &Ssegate, host: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(gw, host, "/").send().await.unwrap().status().as_u16();
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} still answers {got}, not {status}:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `ssegate_access_refused_total` for a route and reason.
async fn refused(gw: &Ssegate, route: &str, reason: &str) -> u64 {
    let prefix = format!("ssegate_access_refused_total{{route=\"{route}\",reason=\"{reason}\"}} ");
    gw.metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The `/debug/routes` report of one object.
async fn report(gw: &Ssegate, key: &str) -> serde_json::Value {
    let v = gw.admin_json("/debug/routes").await;
    v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("no report for {key}: {v}"))
}

#[tokio::test]
async fn unenforced_restrictions_fail_closed_with_503_and_the_opt_out_serves_and_reports_itself() {
    let s = Setup::new().await;
    s.write(
        "ingress.yaml",
        &ingress(
            "mtls",
            "mtls.test",
            &[("auth-tls-verify-client", "on"), ("auth-tls-secret", "default/ca")],
        ),
    );
    let gw = s.start().await;
    let resp = get(&gw, "mtls.test", "/anything?tag=closed").send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let text = resp.text().await.unwrap();
    assert_eq!(
        text, "ssegate: route default/mtls is not served: it restricts access in ways ssegate does not enforce\n",
        "the client learns no more"
    );
    assert!(s.up.headers("closed").is_empty(), "nothing reached the upstream");
    assert_eq!(refused(&gw, "default/mtls", "closed").await, 1);
    let r = report(&gw, "default/mtls").await;
    assert_eq!(r["accepted"]["reason"], "AccessNotEnforced", "{r}");
    let message = r["accepted"]["message"].as_str().unwrap();
    for name in ["auth-tls-verify-client", "auth-tls-secret"] {
        assert!(message.contains(&format!("{NGINX}{name}: ")), "{message}");
    }
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("not enforced by ssegate, so the Ingress is not served"),
        "{warnings}"
    );
    assert!(
        gw.logs().contains("auth-tls-verify-client"),
        "standalone logs the problem:\n{}",
        gw.logs()
    );

    // The owner accepts the risk by name: served, and reported as such.
    s.write(
        "ingress.yaml",
        &ingress(
            "mtls",
            "mtls.test",
            &[
                ("auth-tls-verify-client", "on"),
                ("auth-tls-secret", "default/ca"),
                (
                    "ssegate.dev/unenforced-annotations",
                    "auth-tls-verify-client, auth-tls-secret",
                ),
            ],
        ),
    );
    wait_status(&gw, "mtls.test", 200).await;
    let resp = get(&gw, "mtls.test", "/x?tag=opted").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!s.up.headers("opted").is_empty());
    let r = report(&gw, "default/mtls").await;
    assert_eq!(r["accepted"]["status"], "True", "{r}");
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("auth-tls-verify-client: NOT ENFORCED"), "{warnings}");
    assert!(
        warnings.contains("ssegate.dev/unenforced-annotations: NOT ENFORCED: served WITHOUT enforcing auth-tls-verify-client, auth-tls-secret"),
        "{warnings}"
    );
}

/// The issue's own Ingress: source range, basic and external auth. With
/// the basic-auth Secret missing it is closed (503); with it, a client from
/// outside the range gets 403, as behind ingress-nginx.
#[tokio::test]
async fn a_missing_secret_or_a_malformed_network_closes_and_never_opens() {
    let s = Setup::new().await;
    let auth = AuthServer::start().await;
    s.write("auth.yaml", &auth.service_yaml());
    let annotations = [
        ("whitelist-source-range", "10.0.0.0/8"),
        ("auth-type", "basic"),
        ("auth-secret", "basic-auth"),
        ("auth-url", "http://auth.default.svc/ok"),
    ];
    s.write("ingress.yaml", &ingress("issue", "issue.test", &annotations));
    s.write(
        "bad-cidr.yaml",
        &ingress(
            "badcidr",
            "badcidr.test",
            &[("whitelist-source-range", "10.0.0.0/8, 10.300.0.0/16")],
        ),
    );
    let gw = s.start().await;
    for (host, key, why) in [
        ("issue.test", "default/issue", "Secret default/basic-auth not found"),
        ("badcidr.test", "default/badcidr", "whitelist-source-range"),
    ] {
        let resp = get(&gw, host, "/?tag=never").send().await.unwrap();
        assert_eq!(resp.status(), 503, "{host}");
        let r = report(&gw, key).await;
        assert_eq!(r["accepted"]["reason"], "AccessNotEnforced", "{r}");
        assert!(r["accepted"]["message"].as_str().unwrap().contains(why), "{r}");
    }
    assert!(s.up.headers("never").is_empty());
    assert_eq!(auth.count(), 0, "a closed route never asks the auth service");

    s.write(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: basic-auth}\nstringData:\n  auth: \"alice:{PLAIN}wonderland\\n\"\n",
    );
    wait_status(&gw, "issue.test", 403).await;
    let resp = get(&gw, "issue.test", "/?tag=outside")
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "127.0.0.1 is outside 10.0.0.0/8");
    assert!(s.up.headers("outside").is_empty());
    assert_eq!(auth.count(), 0, "refused before the auth service is asked");
    assert!(refused(&gw, "default/issue", "source_range").await >= 1);
}

#[tokio::test]
async fn source_ranges_judge_real_client_addresses_and_a_spoofed_forwarded_for_changes_nothing() {
    let s = Setup::new().await;
    let ns = common::netns::NetnsClient::new();
    s.write(
        "ingress.yaml",
        &ingress(
            "ranges",
            "ranges.test",
            &[
                ("whitelist-source-range", "10.214.0.0/16"),
                ("denylist-source-range", &format!("{}/32", ns.host_ip)),
            ],
        ),
    );
    s.write(
        "route.yaml",
        "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {name: deny-outside}\nspec:\n  hostnames: [route.test]\n  access: {denySourceRanges: [172.31.0.0/16]}\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n",
    );
    let gw = s.start_on("0.0.0.0", &[]).await;
    let port = gw.proxy_addr().rsplit_once(':').unwrap().1.to_owned();
    let url = |path: &str| format!("http://{}:{port}{path}", ns.host_ip);

    let got = ns
        .curl(ns.inside, &url("/?tag=inside"), &["-H", "Host: ranges.test"])
        .await;
    assert_eq!(got.status, 200, "{got:?}\n{}", gw.logs());
    assert_eq!(s.up.headers("inside")["x-real-ip"], ns.inside.to_string());

    let got = ns
        .curl(ns.outside, &url("/?tag=outside"), &["-H", "Host: ranges.test"])
        .await;
    assert_eq!(got.status, 403, "{got:?}");
    // A forwarded-for header from a peer that is not a trusted proxy is
    // not believed.
    let spoof = format!("X-Forwarded-For: {}", ns.inside);
    let got = ns
        .curl(
            ns.outside,
            &url("/?tag=spoofed"),
            &["-H", "Host: ranges.test", "-H", &spoof],
        )
        .await;
    assert_eq!(got.status, 403, "{got:?}");
    assert!(s.up.headers("outside").is_empty() && s.up.headers("spoofed").is_empty());
    let loopback = get(&gw, "ranges.test", "/?tag=loopback").send().await.unwrap();
    assert_eq!(loopback.status(), 403);

    // The Route's own access: the same checks.
    let got = ns
        .curl(ns.outside, &url("/?tag=r-out"), &["-H", "Host: route.test"])
        .await;
    assert_eq!(got.status, 403, "{got:?}");
    let got = ns
        .curl(ns.inside, &url("/?tag=r-in"), &["-H", "Host: route.test"])
        .await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(refused(&gw, "default/ranges", "source_range").await, 3);
    assert_eq!(refused(&gw, "default/deny-outside", "source_range").await, 1);
}

/// Users of each hash kind ingress-nginx users have in their Secrets,
/// made by the real tools (see src/access/testdata/).
const KINDS: &str = include_str!("../src/access/testdata/kinds.htpasswd");
const PASSWORDS: &[(&str, &str)] = &[
    ("bcrypt-y", "bcrypt y secret"),
    ("apr1-htpasswd", "apr1 secret"),
    ("md5-openssl", "md5 crypt secret"),
    ("sha1-htpasswd", "sha1 secret"),
    ("ssha-passlib", "ssha secret"),
    ("sha256-rounds", "sha256 rounds secret"),
    ("sha512-openssl", "sha512 secret"),
    ("des-htpasswd", "despass"),
    ("plain", "plain secret"),
];

fn secret_yaml(name: &str, key: &str, value: &str) -> String {
    let mut out = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n  {key}: |\n");
    for line in value.lines() {
        out.push_str(&format!("    {line}\n"));
    }
    out
}

#[tokio::test]
async fn basic_auth_accepts_each_hash_kind_refuses_the_rest_and_a_rotation_is_live() {
    let s = Setup::new().await;
    s.write("users.yaml", &secret_yaml("users", "auth", KINDS));
    s.write(
        "ingress.yaml",
        &ingress(
            "basic",
            "basic.test",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("auth-realm", "Staff only"),
            ],
        ),
    );
    let gw = s.start().await;
    for (user, password) in PASSWORDS {
        let resp = get(&gw, "basic.test", &format!("/?tag={user}"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{user}");
        assert!(!s.up.headers(user).is_empty(), "{user}");
        let wrong = get(&gw, "basic.test", &format!("/?tag={user}-wrong"))
            .basic_auth(user, Some(format!("{password}!")))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{user}");
        assert_eq!(wrong.headers()["www-authenticate"], "Basic realm=\"Staff only\"");
        assert!(s.up.headers(&format!("{user}-wrong")).is_empty(), "{user}");
    }
    let none = get(&gw, "basic.test", "/?tag=anonymous").send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert!(s.up.headers("anonymous").is_empty());
    let nobody = get(&gw, "basic.test", "/?tag=nobody")
        .basic_auth("nobody", Some("plain secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(nobody.status(), 401);

    // auth-map: one key per user; and rotating the Secret applies at once.
    s.write(
        "users.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: users}\nstringData:\n  carol: \"{PLAIN}new one\"\n",
    );
    s.write(
        "ingress.yaml",
        &ingress(
            "basic",
            "basic.test",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("auth-secret-type", "auth-map"),
            ],
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = get(&gw, "basic.test", "/")
            .basic_auth("carol", Some("new one"))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the rotated Secret never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old = get(&gw, "basic.test", "/?tag=old-user")
        .basic_auth("plain", Some("plain secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401, "the rotated-out user is refused");
    let wrong = get(&gw, "basic.test", "/")
        .basic_auth("carol", Some("new two"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(refused(&gw, "default/basic", "basic_auth").await >= PASSWORDS.len() as u64 + 4);
}

#[tokio::test]
async fn external_auth_answers_as_ingress_nginx_does_for_each_kind_of_answer() {
    let s = Setup::new().await;
    let auth = AuthServer::start().await;
    s.write("auth.yaml", &auth.service_yaml());
    for (name, path) in [
        ("ok", "ok"),
        ("forbid", "forbid"),
        ("fail", "fail"),
        ("cookie", "cookie"),
    ] {
        let mut annotations = vec![
            ("auth-url".to_owned(), format!("http://auth.default.svc/{path}")),
            (
                "auth-response-headers".to_owned(),
                "X-Auth-Request-User, X-Auth-Request-Email".to_owned(),
            ),
        ];
        if name == "cookie" {
            annotations.push(("auth-signin".to_owned(), "https://login.example.com/start".to_owned()));
        }
        let annotations: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        s.write(
            &format!("{name}.yaml"),
            &ingress(name, &format!("{name}.test"), &annotations),
        );
    }
    // A service that is not listening: the port of a listener just closed.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    s.write(
        "down.yaml",
        &ingress(
            "down",
            "down.test",
            &[("auth-url", &format!("http://127.0.0.1:{closed_port}/ok"))],
        ),
    );
    s.write(
        "slow.yaml",
        &format!(
            "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: slow}}\nspec:\n  hostnames: [slow.test]\n  timeouts: {{responseHeaders: 1s}}\n  access:\n    externalAuth: {{url: \"http://localhost:{}/slow\"}}\n  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]\n",
            auth.addr.port()
        ),
    );
    let gw = s.start().await;

    // 2xx: through, with the service's headers, and the client's own
    // copies of them removed.
    let resp = get(&gw, "ok.test", "/events?tag=ok&x=1")
        .header("x-auth-request-user", "mallory")
        .header("X-Auth-Request-Email", "mallory@example.com")
        .header("cookie", "session=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let upstream = s.up.headers("ok");
    assert_eq!(
        upstream.get_all("x-auth-request-user").iter().collect::<Vec<_>>(),
        ["alice"],
        "the client's copy is gone"
    );
    assert_eq!(upstream["x-auth-request-email"], "alice@example.com");
    let sub = auth.seen().pop().unwrap();
    assert_eq!(sub.method, "GET");
    assert_eq!(sub.target, "/ok");
    assert_eq!(sub.headers["host"], "auth.default.svc");
    assert_eq!(sub.headers["x-original-url"], "http://ok.test/events?tag=ok&x=1");
    assert_eq!(sub.headers["x-original-method"], "GET");
    assert_eq!(sub.headers["x-auth-request-redirect"], "/events?tag=ok&x=1");
    assert_eq!(sub.headers["x-real-ip"], "127.0.0.1");
    assert_eq!(sub.headers["x-sent-from"], "nginx-ingress-controller");
    assert_eq!(sub.headers["cookie"], "session=abc", "the client's headers go along");
    assert!(sub.headers.get("content-length").is_none());

    // 403 and 500 are passed on; nothing reaches the upstream.
    let resp = get(&gw, "forbid.test", "/?tag=forbid").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let resp = get(&gw, "fail.test", "/?tag=fail").send().await.unwrap();
    assert_eq!(resp.status(), 500);

    // 401 with a sign-in page: a redirect there, with the original URL.
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/feed?tag=signin&a=b", gw.proxy))
        .header("host", "cookie.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "https://login.example.com/start?rd=http://cookie.test%2Ffeed%3Ftag%3Dsignin%26a%3Db"
    );
    // With a session: through, and the service's cookie reaches the client.
    let resp = get(&gw, "cookie.test", "/?tag=session")
        .header("cookie", "session=bob")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["set-cookie"], "refreshed=bob; Path=/");
    assert_eq!(s.up.headers("session")["x-auth-request-user"], "bob");

    // No answer in time, or no service at all: 500, never open.
    let started = Instant::now();
    let resp = get(&gw, "slow.test", "/?tag=slow").send().await.unwrap();
    assert_eq!(resp.status(), 500);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let resp = get(&gw, "down.test", "/?tag=down").send().await.unwrap();
    assert_eq!(resp.status(), 500);
    for tag in ["forbid", "fail", "signin", "slow", "down"] {
        assert!(s.up.headers(tag).is_empty(), "{tag} reached the upstream");
    }
    assert_eq!(refused(&gw, "default/forbid", "external_auth").await, 1);
    assert_eq!(refused(&gw, "default/fail", "external_auth_error").await, 1);
    assert_eq!(refused(&gw, "default/slow", "external_auth_error").await, 1);
    assert_eq!(refused(&gw, "default/down", "external_auth_error").await, 1);
}

#[tokio::test]
async fn a_reconnect_storm_is_answered_from_the_auth_cache_with_one_subrequest() {
    let s = Setup::new().await;
    let auth = AuthServer::start().await;
    s.write("auth.yaml", &auth.service_yaml());
    s.write(
        "ingress.yaml",
        &ingress(
            "cached",
            "cached.test",
            &[
                ("auth-url", "http://auth.default.svc/ok"),
                ("auth-cache-key", "$cookie_session"),
                ("auth-cache-duration", "200 1m"),
                ("auth-response-headers", "X-Auth-Request-User"),
            ],
        ),
    );
    let gw = s.start().await;
    // 50 EventSources of one user reconnecting at once.
    let requests = (0..50).map(|i| {
        get(&gw, "cached.test", &format!("/sse?tag=storm{i}&n=1"))
            .header("cookie", "session=one")
            .send()
    });
    let answers = futures_util::future::join_all(requests).await;
    for (i, resp) in answers.into_iter().enumerate() {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 200, "{i}");
        let got = read_stream(resp, usize::MAX).await;
        assert_eq!(got.events.len(), 1, "{i}");
        assert_eq!(s.up.headers(&format!("storm{i}"))["x-auth-request-user"], "alice");
    }
    assert_eq!(auth.count(), 1, "one subrequest for the whole storm");
    // Another user is another key.
    let resp = get(&gw, "cached.test", "/?tag=two")
        .header("cookie", "session=two")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(auth.count(), 2);
}

#[tokio::test]
async fn an_auth_outage_does_not_touch_open_streams_and_new_requests_get_500() {
    let s = Setup::new().await;
    let auth = AuthServer::start().await;
    s.write("auth.yaml", &auth.service_yaml());
    s.write(
        "ingress.yaml",
        &ingress("live", "live.test", &[("auth-url", "http://auth.default.svc/ok")]),
    );
    let gw = s.start().await;
    let stream = get(&gw, "live.test", "/sse?tag=open&n=12&every=100")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let reading = tokio::spawn(read_stream(stream, usize::MAX));
    // The service goes away while the stream runs.
    tokio::time::sleep(Duration::from_millis(150)).await;
    auth.stop();
    let resp = get(&gw, "live.test", "/?tag=after").send().await.unwrap();
    assert_eq!(resp.status(), 500, "no service: never open");
    let got = reading.await.unwrap();
    assert_eq!(got.events.len(), 12, "the open stream ran to its end: {:?}", got.error);
    assert!(got.error.is_none());
    assert_eq!(auth.count(), 1, "authorised once, when it started");
}

#[tokio::test]
async fn per_client_limits_count_open_streams_and_rates_and_spare_the_exempt() {
    let s = Setup::new().await;
    s.write(
        "streams.yaml",
        &ingress(
            "streams",
            "streams.test",
            &[("limit-connections", "2"), ("limit-whitelist", "127.0.0.9")],
        ),
    );
    s.write(
        "rate.yaml",
        &ingress(
            "rate",
            "rate.test",
            &[("limit-rps", "1"), ("limit-burst-multiplier", "3")],
        ),
    );
    let gw = s.start().await;
    let from = |ip: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(Some(ip.parse().unwrap()))
            .build()
            .unwrap()
    };
    let open = |c: &reqwest::Client, tag: &str| {
        c.get(format!("{}/sse?tag={tag}&n=0&every=200", gw.proxy))
            .header("host", "streams.test")
            .send()
    };
    let a = from("127.0.0.2");
    let first = open(&a, "s1").await.unwrap();
    let second = open(&a, "s2").await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = open(&a, "s3").await.unwrap();
    assert_eq!(third.status(), 503, "a third open stream from one address");
    assert_eq!(third.headers()["retry-after"], "1");
    assert!(s.up.headers("s3").is_empty());
    // Another address has its own count; an exempt one has none.
    let b = open(&from("127.0.0.3"), "b1").await.unwrap();
    assert_eq!(b.status(), 200);
    let exempt = from("127.0.0.9");
    let mut kept = Vec::new();
    for i in 0..4 {
        let resp = open(&exempt, &format!("x{i}")).await.unwrap();
        assert_eq!(resp.status(), 200, "exempt stream {i}");
        kept.push(resp);
    }
    // Closing a stream frees its slot.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = open(&a, "s4").await.unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the closed stream's slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 1 per second with a burst of 3: four at once pass, the fifth waits.
    let c = from("127.0.0.4");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = c
            .get(format!("{}/", gw.proxy))
            .header("host", "rate.test")
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 503 {
            assert_eq!(resp.headers()["retry-after"], "1");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 503]);
    assert!(refused(&gw, "default/rate", "limit_rate").await >= 1);
    assert!(refused(&gw, "default/streams", "limit_connections").await >= 1);
    drop((second, b, kept));
}

#[tokio::test]
async fn a_route_with_basic_auth_and_satisfy_any_lets_either_in() {
    let s = Setup::new().await;
    s.write(
        "users.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: users}\nstringData:\n  auth: \"ops:{PLAIN}pager\\n\"\n",
    );
    s.write(
        "route.yaml",
        "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {name: ops}\nspec:\n  hostnames: [ops.test]\n  access:\n    allowSourceRanges: [127.0.0.5]\n    basicAuth: {secretName: users, realm: Ops}\n    satisfy: Any\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n",
    );
    let gw = s.start().await;
    let from = |ip: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(Some(ip.parse().unwrap()))
            .build()
            .unwrap()
    };
    let url = format!("{}/", gw.proxy);
    // From the allowed address: no password needed.
    let resp = from("127.0.0.5")
        .get(&url)
        .header("host", "ops.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // From elsewhere: the password lets in; without it, 401 (not 403), so
    // a browser can still ask for it.
    let other = from("127.0.0.6");
    let resp = other.get(&url).header("host", "ops.test").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"Ops\"");
    let resp = other
        .get(&url)
        .header("host", "ops.test")
        .basic_auth("ops", Some("pager"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// The same guard on HTTP/2 (cleartext, prior knowledge): a refusal and a
/// pass, and an open stream's limit slot held while it lives, with both
/// streams on one connection.
#[tokio::test]
async fn over_http2_the_same_checks_apply_and_a_stream_holds_its_slot() {
    let s = Setup::new().await;
    s.write(
        "users.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: users}\nstringData:\n  auth: \"h2:{PLAIN}two\\n\"\n",
    );
    s.write(
        "ingress.yaml",
        &ingress(
            "h2",
            "h2.test",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("limit-connections", "1"),
            ],
        ),
    );
    let gw = s.start().await;
    // HTTP/2 names the host in :authority, so the URL does.
    let addr: std::net::SocketAddr = gw.proxy_addr().parse().unwrap();
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve("h2.test", addr)
        .build()
        .unwrap();
    let get = |path: &str| h2.get(format!("http://h2.test:{}{path}", addr.port()));
    let resp = get("/?tag=h2-anon").send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 401);
    assert!(s.up.headers("h2-anon").is_empty());
    let stream = get("/sse?tag=h2-open&n=0&every=200")
        .basic_auth("h2", Some("two"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let second = get("/sse?tag=h2-second&n=0")
        .basic_auth("h2", Some("two"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503, "one open stream per address");
    assert!(s.up.headers("h2-second").is_empty());
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = get("/?tag=h2-after")
            .basic_auth("h2", Some("two"))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the ended stream's slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Gateway API: access from StreamPolicies adds up. A Gateway's policy
/// (source ranges and a per-client limit) and a route's policy (basic
/// auth) both apply; a newer policy on the same route, though it loses the
/// stream settings to the older one, still adds its restriction; and an
/// invalid policy with `access` closes its targets.
#[tokio::test]
async fn stream_policies_access_adds_up_across_gateway_route_and_conflicting_policies() {
    let s = Setup::new().await;
    s.write(
        "users.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: users}\nstringData:\n  auth: \"gw:{PLAIN}pw\\n\"\n",
    );
    s.write(
        "gateway.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ssegate}
spec: {controllerName: ssegate.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: ssegate
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [app.test]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other}
spec:
  parentRefs: [{name: gw}]
  hostnames: [other.test]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: ssegate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: gateway-wide, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  access:
    denySourceRanges: [127.0.0.66]
    clientLimits: {requestsPerMinute: 100}
---
apiVersion: ssegate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: app-settings, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: app}]
  proxyBuffering: Disabled
---
apiVersion: ssegate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: app-auth, creationTimestamp: "2026-01-03T00:00:00Z"}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: app}]
  proxyBuffering: Enabled
  access:
    basicAuth: {secretName: users}
"#,
    );
    let gw = s.start().await;
    let from = |ip: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(Some(ip.parse().unwrap()))
            .build()
            .unwrap()
    };
    let at = |c: &reqwest::Client, host: &str| c.get(format!("{}/", gw.proxy)).header("host", host.to_owned());
    let ok = from("127.0.0.65");
    // The newer policy is conflicted for its settings but its access holds.
    assert_eq!(at(&ok, "app.test").send().await.unwrap().status(), 401);
    let resp = at(&ok, "app.test").basic_auth("gw", Some("pw")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The Gateway's policy applies to both routes.
    assert_eq!(at(&ok, "other.test").send().await.unwrap().status(), 200);
    let denied = from("127.0.0.66");
    assert_eq!(at(&denied, "other.test").send().await.unwrap().status(), 403);
    let resp = at(&denied, "app.test")
        .basic_auth("gw", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        403,
        "the Gateway's restriction is not lifted by the route's"
    );
    let listed = gw.admin_json("/debug/routes").await.to_string();
    assert!(listed.contains("StreamPolicy default/gateway-wide"), "{listed}");

    // A policy that fails validation and has access: its targets close.
    s.write(
        "broken.yaml",
        "apiVersion: ssegate.dev/v1alpha1\nkind: StreamPolicy\nmetadata: {name: broken}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: other}]\n  bufferSize: 1\n  access: {allowSourceRanges: [127.0.0.65]}\n",
    );
    wait_status(&gw, "other.test", 503).await;
}

/// Gateway API's HTTPRoute `ExternalAuth` filter (experimental channel,
/// `protocol: HTTP`) against a real auth service: the subrequest carries
/// exactly what the API lists, a 200 lets the request through with the
/// allowed answer headers (the client's copies gone), a refusal is passed
/// on with the service's status and headers, a broken or unreachable
/// service is a 500, and GRPC is refused and holds its paths closed (503)
/// though a broader route of another object serves the same host.
#[tokio::test]
async fn gateway_api_external_auth_filter_allows_refuses_fails_closed_and_refuses_grpc() {
    let s = Setup::new().await;
    let auth = AuthServer::start().await;
    s.write("auth.yaml", &auth.service_yaml());
    // A Service whose one ready endpoint refuses connections.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    s.write(
        "dead.yaml",
        &backend_yaml("dead", &[(format!("127.0.0.1:{closed_port}").parse().unwrap(), true)]),
    );
    let filter = |path: &str, extra: &str| {
        format!(
            "[{{type: ExternalAuth, externalAuth: {{protocol: HTTP, backendRef: {{name: auth, port: 80}}, http: {{path: {path}{extra}}}}}}}]"
        )
    };
    let rule = |prefix: &str, filters: &str| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters: {filters}\n    backendRefs: [{{name: svc, port: 80}}]\n")
    };
    let mut guarded = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: guarded}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [guarded.test]\n  rules:\n",
    );
    guarded.push_str(&rule(
        "/events",
        &filter(
            "/ok",
            ", allowedHeaders: [Cookie], allowedResponseHeaders: [X-Auth-Request-User]",
        ),
    ));
    guarded.push_str(&rule("/all", &filter("/ok/", "")));
    guarded.push_str(&rule("/login", &filter("/signin", "")));
    guarded.push_str(&rule("/forbidden", &filter("/forbid", "")));
    guarded.push_str(&rule("/broken", &filter("/fail", "")));
    guarded.push_str(&rule("/api", &filter("/bearer", "")));
    guarded.push_str(&rule(
        "/rewritten",
        "[{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /inner}}}, {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Authorization, value: Bearer added}]}}, {type: ExternalAuth, externalAuth: {protocol: HTTP, backendRef: {name: auth, port: 80}, http: {path: /ok}}}]",
    ));
    s.write(
        "gateway.yaml",
        &format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: ssegate}}
spec: {{controllerName: ssegate.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: ssegate
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
{guarded}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: down}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [down.test]
  rules:
  - filters: [{{type: ExternalAuth, externalAuth: {{protocol: HTTP, backendRef: {{name: dead, port: 80}}}}}}]
    backendRefs: [{{name: svc, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: grpc}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [grpc.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /secret}}}}]
    filters: [{{type: ExternalAuth, externalAuth: {{protocol: GRPC, backendRef: {{name: auth, port: 80}}, grpc: {{}}}}}}]
    backendRefs: [{{name: svc, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: everything}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [grpc.test]
  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]
"#
        ),
    );
    let gw = s.start().await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let at = |host: &str, path: &str| http.get(format!("{}{path}", gw.proxy)).header("host", host.to_owned());

    // 200: through, with the allowed answer header only, the client's copy
    // of it removed.
    let resp = at("guarded.test", "/events/a?tag=allowed")
        .header("cookie", "session=abc")
        .header("authorization", "Bearer t0ken")
        .header("x-auth-request-user", "mallory")
        .header("x-other", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let upstream = s.up.headers("allowed");
    assert_eq!(
        upstream.get_all("x-auth-request-user").iter().collect::<Vec<_>>(),
        ["alice"]
    );
    assert!(upstream.get("x-auth-request-email").is_none(), "not allowed");
    assert_eq!(upstream["authorization"], "Bearer t0ken");
    // The subrequest: the client's method and Host, the filter's path before
    // the client's path and query, Content-Length 0, Authorization and the
    // allowed headers; nothing else.
    let sub = auth.seen().pop().unwrap();
    assert_eq!(sub.method, "GET");
    assert_eq!(sub.target, "/ok/events/a?tag=allowed");
    let mut names: Vec<&str> = sub.headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["authorization", "content-length", "cookie", "host"]);
    assert_eq!(sub.headers["host"], "guarded.test");
    assert_eq!(sub.headers["content-length"], "0");
    assert_eq!(sub.headers["authorization"], "Bearer t0ken");
    assert_eq!(sub.headers["cookie"], "session=abc");

    // No allowedResponseHeaders: every header of the answer is copied; a
    // trailing `/` of http.path adds no empty segment.
    let resp = at("guarded.test", "/all?tag=all").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(s.up.headers("all")["x-auth-request-email"], "alice@example.com");
    assert_eq!(auth.seen().pop().unwrap().target, "/ok/all?tag=all");

    // A refusal is the service's: its status and headers, nothing upstream.
    let resp = at("guarded.test", "/login?tag=login").send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "https://login.example.com/start");
    assert_eq!(resp.headers()["set-cookie"], "csrf=1; Path=/");
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; charset=utf-8",
        "the service's body is not passed on, so neither is its Content-Type"
    );
    let resp = at("guarded.test", "/forbidden?tag=forbidden").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let resp = at("guarded.test", "/api?tag=nobearer").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"test\"");
    let resp = at("guarded.test", "/api?tag=bearer")
        .header("authorization", "Bearer good")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(s.up.headers("bearer")["x-auth-request-user"], "bob");

    // The service told about the request as the client sent it, before the
    // rule's URL rewrite and header edits.
    let resp = at("guarded.test", "/rewritten/x?tag=rewritten").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let sub = auth.seen().pop().unwrap();
    assert_eq!(sub.target, "/ok/rewritten/x?tag=rewritten");
    assert!(sub.headers.get("authorization").is_none(), "{:?}", sub.headers);
    assert_eq!(s.up.headers("rewritten")["authorization"], "Bearer added");

    // A service that fails, or cannot be reached: 500, never open.
    let resp = at("guarded.test", "/broken?tag=broken").send().await.unwrap();
    assert_eq!(resp.status(), 500);
    let resp = at("down.test", "/?tag=down").send().await.unwrap();
    assert_eq!(resp.status(), 500);

    // GRPC is refused, and its paths held closed though another route
    // serves the rest of the host.
    let resp = at("grpc.test", "/secret/x?tag=grpc").send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let resp = at("grpc.test", "/other?tag=other").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let listed = report(&gw, "default/grpc").await.to_string();
    assert!(
        listed.contains("externalAuth.protocol: GRPC (Envoy's ext_authz over gRPC) is not supported, only HTTP"),
        "{listed}"
    );

    for tag in ["login", "forbidden", "nobearer", "broken", "down", "grpc"] {
        assert!(s.up.headers(tag).is_empty(), "{tag} reached the upstream");
    }
    assert_eq!(refused(&gw, "default/guarded", "external_auth").await, 3);
    assert_eq!(refused(&gw, "default/guarded", "external_auth_error").await, 1);
    assert_eq!(refused(&gw, "default/down", "external_auth_error").await, 1);
    assert_eq!(refused(&gw, "default/grpc", "closed").await, 1);
}
