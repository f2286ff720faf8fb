//! The folder source's unit tests: limits, problems logged once, unknown
//! fields, readable errors, and documents parsed only when they change.

use super::*;

const SVC: &str = "apiVersion: v1
kind: Service
metadata: {name: demo}
spec: {ports: [{name: http, port: 80}]}
";
const ROUTE: &str = "apiVersion: ssegate.dev/v1alpha1
kind: Route
metadata: {name: demo}
spec:
  proxyBuffering: Disabled
  rules: [{backendRefs: [{name: demo, port: 80}]}]
";

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn reads_multi_document_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        &format!(
            "{SVC}---\n{ROUTE}---\napiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: demo-1, labels: {{kubernetes.io/service-name: demo}}}}
addressType: IPv4
ports: [{{name: http, port: 8081}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
"
        ),
    );
    let mut source = FolderSource::new(dir.path());
    let (objects, errors) = source.load();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(objects.routes.len(), 1);
    assert_eq!(objects.services.len(), 1);
    assert_eq!(objects.slices.len(), 1);
    let route = &objects.routes[&ObjectKey::new("default", "demo")];
    assert_eq!(route.generation, Some(1));
}

#[test]
fn broken_document_keeps_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &format!("{SVC}---\n{ROUTE}"));
    let mut source = FolderSource::new(dir.path());
    let (first, _) = source.load();

    write(
        dir.path(),
        "a.yaml",
        &format!("{SVC}---\n{}", ROUTE.replace("Disabled", "Sometimes")),
    );
    let (second, errors) = source.load();
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.document, Some(2));
    assert!(e.kept_previous);
    assert!(e.message.contains("Route demo"), "{e}");
    assert!(e.message.contains("Sometimes"), "{e}");
    assert_eq!(first.routes, second.routes);

    // A YAML syntax error keeps everything from the file.
    write(dir.path(), "a.yaml", "apiVersion: v1\nkind: [unclosed\n");
    let (third, errors) = source.load();
    assert!(!errors.is_empty());
    assert_eq!(third.routes.len(), 1);
    assert_eq!(third.services.len(), 1);
}

#[test]
fn unknown_kinds_and_duplicates_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        &format!("{ROUTE}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n"),
    );
    write(dir.path(), "b.yml", ROUTE);
    write(dir.path(), "notes.txt", "ignored");
    let mut source = FolderSource::new(dir.path());
    let (objects, errors) = source.load();
    assert_eq!(objects.routes.len(), 1);
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].contains("a.yaml: document 2: v1 ConfigMap is not supported"),
        "{}",
        text[0]
    );
    assert!(
        text[1].contains("b.yml: document 1: Route default/demo is already defined in"),
        "{}",
        text[1]
    );
}

fn messages(errors: &[LoadError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

fn small_limits() -> Limits {
    Limits {
        max_files: 3,
        max_file_bytes: 2000,
        max_documents: 4,
        max_document_bytes: 500,
        max_depth: 8,
    }
}

/// A source with `a.yaml` (Service and Route) loaded, and small limits.
fn loaded(dir: &Path) -> FolderSource {
    write(dir, "a.yaml", &format!("{SVC}---\n{ROUTE}"));
    let mut source = FolderSource::new(dir).with_limits(small_limits());
    let (objects, errors) = source.load();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(objects.routes.len(), 1);
    source
}

#[test]
fn a_file_over_the_byte_limit_is_refused_and_its_last_good_version_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = loaded(dir.path());
    let big = format!("{SVC}---\n{ROUTE}# {}\n", "x".repeat(2000));
    write(dir.path(), "a.yaml", &big);
    let (objects, errors) = source.load();
    assert_eq!(
        messages(&errors),
        [format!(
            "{}: is {} bytes; files of at most 2000 bytes are read (limit max_file_bytes): split it into several files (keeping the last good version)",
            dir.path().join("a.yaml").display(),
            big.len()
        )]
    );
    assert_eq!(objects.routes.len(), 1);
    assert_eq!(objects.services.len(), 1);
}

#[test]
fn a_document_over_the_byte_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = loaded(dir.path());
    let big = ROUTE.replace("spec:", &format!("  # {}\nspec:", "x".repeat(500)));
    write(dir.path(), "a.yaml", &format!("{SVC}---\n{big}"));
    let (objects, errors) = source.load();
    let text = messages(&errors);
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].ends_with(&format!(
            "a.yaml: document 2: is {} bytes; documents of at most 500 bytes are read (limit max_document_bytes, etcd's limit for one object) (keeping the last good version)",
            big.len() + 4
        )),
        "{}",
        text[0]
    );
    assert_eq!(objects.routes.len(), 1);
}

#[test]
fn too_many_documents_in_a_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = loaded(dir.path());
    write(dir.path(), "a.yaml", &format!("{SVC}---\n{ROUTE}---\n---\n---\n"));
    let (objects, errors) = source.load();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().ends_with(
            "a.yaml: holds 5 documents; at most 4 are read from one file (limit max_documents): split it into several files (keeping the last good version)"
        ),
        "{}",
        errors[0]
    );
    assert_eq!(objects.routes.len(), 1);
}

#[test]
fn too_many_files_keep_the_configuration_loaded_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = loaded(dir.path());
    for name in ["b.yaml", "c.yaml", "d.yml"] {
        write(dir.path(), name, "# empty\n");
    }
    let (objects, errors) = source.load();
    assert_eq!(
        messages(&errors),
        [format!(
            "{}: holds 4 YAML files; at most 3 are read (limit max_files), so this change is not applied (keeping the last good version)",
            dir.path().display()
        )]
    );
    assert_eq!(objects.routes.len(), 1);
}

#[test]
fn nesting_past_the_depth_limit_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = loaded(dir.path());
    let deep = format!(
        "{SVC}---\n{}",
        ROUTE.replace(
            "{name: demo}",
            &format!("{{name: demo, labels: {{a: {}1{}}}}}", "[".repeat(8), "]".repeat(8))
        )
    );
    write(dir.path(), "a.yaml", &deep);
    let (objects, errors) = source.load();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].to_string().ends_with(
            "a.yaml: document 2: nests deeper than 8 levels at line 8 (limit max_depth); not parsed (keeping the last good version)"
        ),
        "{}",
        errors[0]
    );
    assert_eq!(objects.routes.len(), 1);
    assert_eq!(objects.services.len(), 1);
}

#[test]
fn a_hostile_bracket_file_fails_fast_and_the_rest_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &format!("{SVC}---\n{ROUTE}"));
    // 200 KB: 100,000 nested brackets took the parser 33 s.
    write(dir.path(), "evil.yaml", &"[".repeat(100_000).repeat(2));
    let mut source = FolderSource::new(dir.path());
    let started = std::time::Instant::now();
    let (objects, errors) = source.load();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(
        messages(&errors),
        [format!(
            "{}: document 1: nests deeper than 64 levels at line 1 (limit max_depth); not parsed",
            dir.path().join("evil.yaml").display()
        )]
    );
    assert_eq!(objects.routes.len(), 1);
    assert_eq!(objects.services.len(), 1);
}

#[test]
fn one_syntax_error_is_one_problem_reported_once_per_change_of_its_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &format!("{SVC}---\n{ROUTE}"));
    write(dir.path(), "broken.yaml", "apiVersion: v1\nkind: [unclosed\n");
    let mut source = FolderSource::new(dir.path());
    let (objects, errors) = source.load();
    assert_eq!(objects.routes.len(), 1);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].new);
    assert!(
        errors[0].to_string().contains("broken.yaml: document 1: "),
        "{}",
        errors[0]
    );

    // Another file changes: the problem is still there but not new.
    write(
        dir.path(),
        "a.yaml",
        &format!("{SVC}---\n{}", ROUTE.replace("Disabled", "Enabled")),
    );
    let (_, errors) = source.load();
    assert_eq!(errors.len(), 1);
    assert!(!errors[0].new, "reported again: {}", errors[0]);
    let (_, errors) = source.load();
    assert!(!errors[0].new);

    // The broken file changes (still broken): reported once more.
    write(dir.path(), "broken.yaml", "apiVersion: v1\nkind: [still unclosed\n");
    let (_, errors) = source.load();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].new);
}

#[test]
fn a_syntax_error_costs_one_document_and_lines_count_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let svc2 = SVC.replace("demo", "other");
    write(dir.path(), "a.yaml", &format!("{SVC}---\nkey: [unclosed\n---\n{svc2}"));
    let (objects, errors) = FolderSource::new(dir.path()).load();
    assert_eq!(objects.services.len(), 2);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].document, Some(2));
    assert_eq!(
        errors[0].message,
        "did not find expected ',' or ']' at line 7 column 1, while parsing a flow sequence at line 6 column 6"
    );
}

#[test]
fn unknown_fields_load_with_a_warning_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let route = "apiVersion: ssegate.dev/v1alpha1
kind: Route
metadata: {name: typo, lables: {a: b}}
spec:
  proxybuffering: Disabled
  timeouts: {idel: 5s}
  rules: [{backendRefs: [{name: demo, port: 80, wieght: 2}]}]
";
    write(dir.path(), "a.yaml", &format!("{SVC}---\n{route}"));
    let (objects, errors) = FolderSource::new(dir.path()).load();
    assert_eq!(objects.routes.len(), 1);
    let text = messages(&errors);
    let file = dir.path().join("a.yaml");
    let expected: Vec<String> = [
        "metadata.lables",
        "spec.proxybuffering",
        "spec.timeouts.idel",
        "spec.rules[0].backendRefs[0].wieght",
    ]
    .iter()
    .map(|f| {
        format!(
            "{}: document 2: Route typo: unknown field {f} is ignored",
            file.display()
        )
    })
    .collect();
    assert_eq!(text, expected);
    assert!(errors.iter().all(|e| e.warning && !e.kept_previous));
}

#[test]
fn wrong_values_say_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let route = |spec: &str| {
        format!("apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:\n  {spec}\n  rules: [{{backendRefs: [{{name: demo, port: 80}}]}}]\n")
    };
    write(
        dir.path(),
        "a.yaml",
        &format!("{}---\n{}", route("bufferSize: -5"), route("proxyBuffering: true")),
    );
    let (_, errors) = FolderSource::new(dir.path()).load();
    let text: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        text,
        [
            "Route r: spec.bufferSize: must be a positive quantity such as 64Ki or 1Mi, got -5",
            "Route r: spec.proxyBuffering: must be one of Enabled, Disabled, Auto (got a boolean true; YAML reads unquoted on/off/yes/no/true/false as booleans)",
        ]
    );
}

#[test]
fn unchanged_documents_are_not_parsed_again() {
    let dir = tempfile::tempdir().unwrap();
    let routes: Vec<String> = (0..3)
        .map(|i| ROUTE.replace("name: demo}", &format!("name: r{i}}}")))
        .collect();
    write(dir.path(), "a.yaml", &routes.join("---\n"));
    write(dir.path(), "b.yaml", SVC);
    let mut source = FolderSource::new(dir.path());
    source.load();
    assert_eq!(source.parsed(), 4);
    write(dir.path(), "b.yaml", &SVC.replace("port: 80", "port: 81"));
    source.load();
    assert_eq!(source.parsed(), 1);
    let edited = routes[1].replace("Disabled", "Enabled");
    write(
        dir.path(),
        "a.yaml",
        &format!("{}---\n{edited}---\n{}", routes[0], routes[2]),
    );
    let (objects, errors) = source.load();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(source.parsed(), 1);
    assert_eq!(objects.routes.len(), 3);
    let r1 = &objects.routes[&ObjectKey::new("default", "r1")];
    assert_eq!(
        r1.translated.as_ref().unwrap().rules[0].settings.buffering,
        crate::api::ProxyBuffering::Enabled
    );
    assert_eq!(r1.generation, Some(2));
    // Removing a file forgets its objects.
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let (objects, _) = source.load();
    assert!(objects.routes.is_empty());
    assert!(source.history.first_seen.is_empty() && source.history.generations.is_empty());
}

#[test]
fn generation_bumps_only_when_the_spec_changes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", ROUTE);
    let mut source = FolderSource::new(dir.path());
    let gen = |s: &mut FolderSource| s.load().0.routes.values().next().unwrap().generation;
    assert_eq!(gen(&mut source), Some(1));
    assert_eq!(gen(&mut source), Some(1));
    write(dir.path(), "a.yaml", &ROUTE.replace("Disabled", "Enabled"));
    assert_eq!(gen(&mut source), Some(2));
}

const INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: demo
  annotations: {nginx.ingress.kubernetes.io/proxy-buffering: \"off\"}
spec:
  ingressClassName: CLASS
  rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: demo, port: {name: http}}}}]}}]
";

#[test]
fn ingresses_of_our_class_are_served_beside_a_route_of_the_same_name_and_others_are_named_as_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        &format!(
            "{SVC}---\n{ROUTE}---\n{}---\n{}",
            INGRESS.replace("CLASS", "ssegate"),
            INGRESS
                .replace("name: demo\n", "name: theirs\n")
                .replace("CLASS", "nginx")
        ),
    );
    let mut source = FolderSource::new(dir.path());
    let (objects, errors) = source.load();
    assert_eq!(objects.routes.len(), 1);
    assert_eq!(objects.ingresses.len(), 1, "{errors:?}");
    let ingress = &objects.ingresses[&ObjectKey::new("default", "demo")];
    assert_eq!(ingress.kind, SourceKind::Ingress);
    assert_eq!(ingress.generation, Some(1));
    let rule = &ingress.translated.as_ref().unwrap().rules[0];
    assert_eq!(rule.settings.buffering, crate::api::ProxyBuffering::Disabled);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].warning);
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}: document 4: Ingress default/theirs is not served: its ingressClassName \"nginx\" is not one of ssegate's classes",
            dir.path().join("a.yaml").display()
        )
    );

    // An IngressClass of ours named nginx takes the other one in; changing
    // the annotation bumps the Ingress's own generation.
    write(
        dir.path(),
        "b.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\nspec: {controller: ssegate.dev/ingress}\n",
    );
    write(
        dir.path(),
        "a.yaml",
        &format!(
            "{SVC}---\n{ROUTE}---\n{}---\n{}",
            INGRESS.replace("CLASS", "ssegate").replace("\"off\"", "\"on\""),
            INGRESS
                .replace("name: demo\n", "name: theirs\n")
                .replace("CLASS", "nginx")
        ),
    );
    let (objects, errors) = source.load();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(objects.ingresses.len(), 2);
    assert_eq!(
        objects.ingresses[&ObjectKey::new("default", "demo")].generation,
        Some(2)
    );
}
