//! What the docs name exists: every `ssegate_*` metric the README and
//! `docs/` mention is one the binary exports (by its family name, as
//! `/metrics` declares it), and every metric the binary exports is in the
//! metrics table of `docs/operations.md`; every chart value they name is in
//! the chart's `values.yaml` or `values.schema.json` ([`value_paths`]),
//! every `ssegate.dev/` and `nginx.ingress.kubernetes.io/` annotation is
//! one the code knows ([`annotations_named`]), and every ssegate flag is in
//! `docs/flags.md` ([`flags_named`]); every relative link leads to a file
//! and heading that exist ([`broken_links`]). Each reader's doc comment states its
//! rule, and a test on a sample text with made-up names shows it can fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The README and every Markdown file under `docs/`.
fn docs() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("README.md")).unwrap();
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            text.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    text
}

/// `ssegate_…` names in `text`.
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("ssegate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let before = rest[..at].chars().last();
        if !before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '/' | '.' | ':')) {
            out.insert(tail[..end].trim_end_matches('_').to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// The metric families the binary registers (`Registry::register` in
/// `src/metrics.rs`, under the `ssegate` prefix): an empty family is not in
/// the exposition, so the registrations are read where they are made.
fn registered() -> BTreeSet<String> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    let mut out = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find(".register(") {
        rest = &rest[at + ".register(".len()..];
        let name = rest.trim_start().trim_start_matches('"');
        let end = name.find('"').unwrap();
        out.insert(format!("ssegate_{}", &name[..end]));
    }
    assert!(out.len() > 10, "the registrations were not found: {out:?}");
    out
}

/// Whether `name` is a registered family or one of its samples' names.
fn is_exported(name: &str, families: &BTreeSet<String>) -> bool {
    ["", "_total", "_created", "_bucket", "_count", "_sum"]
        .iter()
        .any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|family| families.contains(family))
        })
}

#[test]
fn every_metric_the_docs_name_is_exported() {
    let families = registered();
    let unknown: Vec<String> = named(&docs())
        .into_iter()
        .filter(|n| !is_exported(n, &families))
        .collect();
    assert!(
        unknown.is_empty(),
        "the docs name metrics the binary does not export: {unknown:?}"
    );
}

#[test]
fn every_exported_metric_is_in_the_operations_metrics_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let missing: Vec<String> = registered()
        .into_iter()
        .filter(|family| {
            !readme.contains(&format!("| `{family}` |")) && !readme.contains(&format!("| `{family}_total` |"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "registered but not in docs/operations.md's metrics table: {missing:?}"
    );
}

#[test]
fn the_name_reader_finds_names_and_skips_paths() {
    let found = named("`ssegate_events_total{route}` and crate::ssegate_x and ssegate_open_streams.");
    assert_eq!(
        found,
        ["ssegate_events_total", "ssegate_open_streams"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

// ---------------------------------------------------------------------------
// Chart values, annotations and flags: what the docs name must exist.
// ---------------------------------------------------------------------------

/// The README and every Markdown file under `docs/`, each with its name, so
/// that a code fence or paragraph never runs from one file into the next.
fn doc_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![(
        "README.md".to_owned(),
        std::fs::read_to_string(root.join("README.md")).unwrap(),
    )];
    let mut paths: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    paths.sort();
    for path in paths {
        let name = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
        out.push((name, std::fs::read_to_string(path).unwrap()));
    }
    out
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap()
}

/// A Markdown file, split into what the rules below read.
#[derive(Default, Debug)]
struct Markdown {
    /// Fenced code blocks: info string and body.
    blocks: Vec<(String, String)>,
    /// Prose, one entry per sentence of a paragraph, list item or heading
    /// (its lines joined with spaces, so code spans may cross line breaks).
    sentences: Vec<String>,
    /// Tables: rows of cells, the header first (the `|---|` line dropped).
    tables: Vec<Vec<Vec<String>>>,
}

impl Markdown {
    fn parse(text: &str) -> Markdown {
        let mut md = Markdown::default();
        let mut paragraph = String::new();
        let mut table: Vec<Vec<String>> = Vec::new();
        let mut lines = text.lines();
        let flush = |md: &mut Markdown, paragraph: &mut String, table: &mut Vec<Vec<String>>| {
            if !paragraph.trim().is_empty() {
                md.sentences.extend(sentences(paragraph));
            }
            paragraph.clear();
            if !table.is_empty() {
                md.tables.push(std::mem::take(table));
            }
        };
        while let Some(line) = lines.next() {
            let t = line.trim_start();
            if let Some(info) = t.strip_prefix("```") {
                flush(&mut md, &mut paragraph, &mut table);
                let mut body = String::new();
                for line in lines.by_ref() {
                    if line.trim_start().starts_with("```") {
                        break;
                    }
                    body.push_str(line);
                    body.push('\n');
                }
                md.blocks.push((info.trim().to_owned(), body));
            } else if t.starts_with('|') {
                if !paragraph.is_empty() {
                    let mut none = Vec::new();
                    flush(&mut md, &mut paragraph, &mut none);
                }
                let row = cells(t);
                if !row
                    .iter()
                    .all(|c| !c.is_empty() && c.chars().all(|c| matches!(c, '-' | ':')))
                {
                    table.push(row);
                }
            } else {
                let item = t.starts_with("- ")
                    || t.starts_with("* ")
                    || t.split_once(". ")
                        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if t.is_empty() || t.starts_with('#') || item || !table.is_empty() {
                    flush(&mut md, &mut paragraph, &mut table);
                }
                paragraph.push_str(t);
                paragraph.push(' ');
                if t.starts_with('#') {
                    flush(&mut md, &mut paragraph, &mut table);
                }
            }
        }
        flush(&mut md, &mut paragraph, &mut table);
        md
    }

    /// Every code span of the prose and of the tables.
    fn spans(&self) -> Vec<&str> {
        let prose = self.sentences.iter().flat_map(|s| spans(s));
        let cells = self.tables.iter().flatten().flatten().flat_map(|c| spans(c));
        prose.chain(cells).collect()
    }

    /// The tables whose header has a column named `name` (case-insensitive),
    /// with that column's index.
    fn columns<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a Vec<Vec<String>>, usize)> + 'a {
        self.tables.iter().filter_map(move |t| {
            let column = t[0].iter().position(|h| h.eq_ignore_ascii_case(name))?;
            Some((t, column))
        })
    }
}

/// A table row's cells, split at `|` outside code spans (and not `\|`).
fn cells(row: &str) -> Vec<String> {
    let row = row.trim().trim_start_matches('|');
    let mut out = vec![String::new()];
    let mut in_code = false;
    let mut previous = ' ';
    for c in row.chars() {
        match c {
            '`' => in_code = !in_code,
            '|' if !in_code && previous != '\\' => {
                out.push(String::new());
                previous = c;
                continue;
            }
            _ => {}
        }
        out.last_mut().unwrap().push(c);
        previous = c;
    }
    if out.last().is_some_and(|c| c.trim().is_empty()) {
        out.pop();
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// A paragraph's sentences: it is cut after a `.` outside code spans that
/// is followed by a space and a capital, a code span or emphasis (not after
/// "e.g." or "i.e.").
fn sentences(paragraph: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_code = false;
    let chars: Vec<char> = paragraph.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        current.push(c);
        if c == '`' {
            in_code = !in_code;
        }
        let next = chars.get(i + 2).copied();
        if !in_code
            && c == '.'
            && chars.get(i + 1) == Some(&' ')
            && next.is_some_and(|n| n.is_uppercase() || matches!(n, '`' | '*' | '('))
            && !current.ends_with("e.g.")
            && !current.ends_with("i.e.")
        {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out.into_iter().map(|s| s.trim().to_owned()).collect()
}

/// The code spans in `text`: runs of backticks closed by a run as long.
fn spans(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('`') {
        let ticks = rest[at..].len() - rest[at..].trim_start_matches('`').len();
        let body = &rest[at + ticks..];
        let fence = "`".repeat(ticks);
        let Some(end) = body.find(&fence) else { break };
        out.push(body[..end].trim());
        rest = &body[end + ticks..];
    }
    out
}

// --- Chart values ----------------------------------------------------------

/// A dotted name read as a file name or a Secret's key (`service.rs`,
/// `tls.crt`), not as a value path, by its last segment.
const FILE_SUFFIXES: &[&str] = &[
    "rs", "md", "yaml", "yml", "json", "sh", "py", "txt", "toml", "crt", "key", "pem",
];

/// The leading `a.b.c` of `text` (segments of letters and digits, each
/// starting with a letter), and what follows it.
fn leading_path(text: &str) -> (&str, &str) {
    let mut end = 0;
    let mut segment_start = true;
    for (i, c) in text.char_indices() {
        let ok = if segment_start {
            c.is_ascii_alphabetic()
        } else {
            c.is_ascii_alphanumeric() || c == '.'
        };
        if !ok {
            break;
        }
        segment_start = c == '.';
        end = i + c.len_utf8();
    }
    let path = text[..end].trim_end_matches('.');
    (path, &text[path.len()..])
}

/// The keys `--set`, `--set-string` and `--set-json` set in `text` (a code
/// block's line or a code span), `a.b[0].c=x,d=y` giving `a.b.c` and `d`.
fn set_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("--set") {
        let tail = &rest[at + "--set".len()..];
        let tail = tail
            .strip_prefix("-string")
            .or_else(|| tail.strip_prefix("-json"))
            .unwrap_or(tail);
        rest = tail;
        let Some(arg) = tail.strip_prefix(' ').or_else(|| tail.strip_prefix('=')) else {
            continue;
        };
        let arg = arg.split_whitespace().next().unwrap_or("");
        for assignment in arg.trim_matches(|c| c == '"' || c == '\'').split(',') {
            let Some((key, _)) = assignment.split_once('=') else {
                continue;
            };
            let mut path = String::new();
            let mut depth = 0;
            for c in key.chars() {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    _ if depth == 0 => path.push(c),
                    _ => {}
                }
            }
            if !path.is_empty() {
                out.push(path);
            }
        }
    }
    out
}

/// Every chart value path `text` (one Markdown file) names. The rules:
///
/// - `--set KEY=VALUE` (also `--set-string`, `--set-json`, several
///   comma-separated keys) in a code block or a code span: each KEY, array
///   indexes dropped.
/// - A code span that is a dotted path of at least two segments whose first
///   segment is a top-level key of `values.yaml` (`controller.claimIngressClasses`,
///   `service.type`), alone or followed by `: ...` or `=...`
///   (`tls.secrets: true`); not when its last segment reads as a file name
///   or a Secret's key ([`FILE_SUFFIXES`]: `service.rs`, `tls.crt`). Spans
///   that continue with anything else (`service.beta.kubernetes.io/...`)
///   are not value paths.
/// - In a column headed `chart value`, or a first column headed `value`
///   (a table of chart values; a `value` column further right holds other
///   values, such as a header's): every code span of that column that is a
///   path, one segment allowed (`proxyPort`).
/// - A ```` ```yaml ```` block whose first top-level key is a top-level key of
///   `values.yaml` is a values file: every key path in it, through nested
///   mappings (not into lists).
fn value_paths(text: &str, top: &BTreeSet<String>) -> BTreeSet<String> {
    let md = Markdown::parse(text);
    let mut out = BTreeSet::new();
    for (info, body) in &md.blocks {
        for line in body.lines() {
            out.extend(set_paths(line));
        }
        let first_key = body
            .lines()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .filter(|l| !l.starts_with([' ', '-']))
            .and_then(|l| l.split_once(':'))
            .map(|(k, _)| k.trim().to_owned());
        if info.starts_with("yaml") && first_key.is_some_and(|k| top.contains(&k)) {
            let values: serde_yaml::Value =
                serde_yaml::from_str(body).unwrap_or_else(|e| panic!("a values block does not parse ({e}):\n{body}"));
            key_paths(&values, "", &mut out);
        }
    }
    for span in md.spans() {
        out.extend(set_paths(span));
        let (path, rest) = leading_path(span);
        let first = path.split('.').next().unwrap_or("");
        let last = path.rsplit('.').next().unwrap_or("");
        if path.contains('.')
            && top.contains(first)
            && (rest.is_empty() || rest.starts_with([':', '=']))
            && !FILE_SUFFIXES.contains(&last)
        {
            out.insert(path.to_owned());
        }
    }
    let chart_columns = md
        .columns("chart value")
        .chain(md.columns("value").filter(|(_, column)| *column == 0));
    for (table, column) in chart_columns {
        for row in &table[1..] {
            for span in row.get(column).map(|c| spans(c)).unwrap_or_default() {
                let (path, rest) = leading_path(span);
                if !path.is_empty() && rest.is_empty() {
                    out.insert(path.to_owned());
                }
            }
        }
    }
    out
}

/// Every key path of a YAML mapping, through nested mappings.
fn key_paths(value: &serde_yaml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let serde_yaml::Value::Mapping(map) = value {
        for (key, value) in map {
            let Some(key) = key.as_str() else { continue };
            let path = if prefix.is_empty() {
                key.to_owned()
            } else {
                format!("{prefix}.{key}")
            };
            key_paths(value, &path, out);
            out.insert(path);
        }
    }
}

/// The chart's `values.yaml` and `values.schema.json`.
struct Chart {
    values: serde_yaml::Value,
    schema: serde_json::Value,
}

impl Chart {
    fn load() -> Chart {
        Chart {
            values: serde_yaml::from_str(&read("charts/ssegate/values.yaml")).unwrap(),
            schema: serde_json::from_str(&read("charts/ssegate/values.schema.json")).unwrap(),
        }
    }

    fn top_level(&self) -> BTreeSet<String> {
        let keys: BTreeSet<String> = self
            .values
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
        assert!(keys.len() > 10 && keys.contains("controller"), "{keys:?}");
        keys
    }

    /// Whether `path` is nested keys of `values.yaml`, or of the schema's
    /// `properties`. Below an empty mapping or a list of `values.yaml`
    /// (`service.annotations: {}`), or a schema object that names no
    /// properties or allows others, any key is one the chart takes.
    fn has(&self, path: &str) -> bool {
        let mut node = &self.values;
        let mut walked = true;
        for segment in path.split('.') {
            match node {
                serde_yaml::Value::Mapping(map) if map.is_empty() => return true,
                serde_yaml::Value::Sequence(_) => return true,
                serde_yaml::Value::Mapping(map) => match map.get(segment) {
                    Some(next) => node = next,
                    None => {
                        walked = false;
                        break;
                    }
                },
                _ => {
                    walked = false;
                    break;
                }
            }
        }
        if walked {
            return true;
        }
        let mut node = &self.schema;
        for segment in path.split('.') {
            match node["properties"].get(segment) {
                Some(next) => node = next,
                None => {
                    let open = match &node["additionalProperties"] {
                        serde_json::Value::Bool(b) => *b,
                        serde_json::Value::Object(_) => true,
                        _ => node["type"] == "object" && node.get("properties").is_none(),
                    };
                    return open;
                }
            }
        }
        true
    }
}

#[test]
fn every_chart_value_the_docs_name_exists() {
    let chart = Chart::load();
    let top = chart.top_level();
    let mut unknown = Vec::new();
    let mut seen = 0;
    for (file, text) in doc_files() {
        for path in value_paths(&text, &top) {
            seen += 1;
            if !chart.has(&path) {
                unknown.push(format!("{file}: {path}"));
            }
        }
    }
    assert!(seen > 20, "the value paths were not found: {seen}");
    assert!(
        unknown.is_empty(),
        "the docs name chart values that neither values.yaml nor values.schema.json has: {unknown:#?}"
    );
}

#[test]
fn the_value_reader_finds_value_paths_and_a_made_up_one_fails() {
    let chart = Chart::load();
    let top = chart.top_level();
    let text = "\
With `controller.madeUpValue: [x]` and `service.type`, see `service.rs` and `tls.crt`;
`service.beta.kubernetes.io/aws-load-balancer-proxy-protocol: \"*\"` is an annotation, `spec.tls` a field.

```sh
helm install ssegate charts/ssegate --set image.tag=dev,image.nope[0]=1 \\
  --set-string metrics.serviceMonitor.labels.team=a
```

| value | default |
|---|---|
| `proxyPort` | `8080` |
| `madeUpPort` | `1` |

| header | value |
|---|---|
| `Host` | `example.com` |

```yaml
controller:
  logFormat: json
  madeUpNested: true
service:
  annotations:
    anything.example.com/goes: \"yes\"
```

```yaml
apiVersion: v1
kind: Service
```
";
    let found = value_paths(text, &top);
    let expected = [
        "controller",
        "controller.logFormat",
        "controller.madeUpNested",
        "controller.madeUpValue",
        "image.nope",
        "image.tag",
        "madeUpPort",
        "metrics.serviceMonitor.labels.team",
        "proxyPort",
        "service",
        "service.annotations",
        "service.annotations.anything.example.com/goes",
        "service.type",
    ];
    assert_eq!(found, expected.into_iter().map(String::from).collect());
    let missing: Vec<&String> = found.iter().filter(|p| !chart.has(p)).collect();
    assert_eq!(
        missing,
        [
            "controller.madeUpNested",
            "controller.madeUpValue",
            "image.nope",
            "madeUpPort"
        ]
    );
}

// --- Annotations -----------------------------------------------------------

const SSEGATE_PREFIX: &str = "ssegate.dev/";
const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Characters of an annotation's name after its prefix.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Every annotation (full name) `text` (one Markdown file) names with the
/// prefix `ssegate.dev/` or `nginx.ingress.kubernetes.io/`. Both prefixes
/// are also API groups and controller names (`ssegate.dev/v1alpha1`,
/// `controllerName: ssegate.dev/gateway-controller`, the IngressClass
/// controller `ssegate.dev/ingress`, CRDs `routes.ssegate.dev`), so only
/// names in annotation position count:
///
/// - Key position: `PREFIX/NAME:` followed by a space, a line end, a quote
///   or the end of a code span, in prose, code spans and code blocks alike
///   (`ssegate.dev/sse-resume: "true"`, an Ingress's `metadata.annotations`).
///   An API version or a controller name is a value, never a key; the
///   prefix must not continue a longer name (`x.ssegate.dev/`).
/// - The first column of a table headed `annotation` (docs/ingress-nginx.md's
///   table of what ssegate does with each): every code span of that cell, a
///   bare name taking the prefix of the name before it in the cell
///   (`ssegate.dev/heartbeat-interval`, `max-stream-duration`), else
///   `nginx.ingress.kubernetes.io/` (the table is about ingress-nginx's);
///   `use-regex: "false"` names `use-regex`; wildcards (`auth-*`) are skipped.
///
/// Labels in key position (`ssegate.dev/gateway-service: ...`) count too:
/// they must exist in the code as well.
fn annotations_named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in [SSEGATE_PREFIX, NGINX_PREFIX] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            let tail = &rest[at + prefix.len()..];
            let end = tail.find(|c| !name_char(c)).unwrap_or(tail.len());
            let name = &tail[..end];
            let after = tail[end..].strip_prefix(':');
            let key = after.is_some_and(|a| a.is_empty() || a.starts_with([' ', '\n', '"', '`']));
            if key && !name.is_empty() && !before.is_some_and(|c| name_char(c) || c == '/') {
                out.insert(format!("{prefix}{name}"));
            }
            rest = &tail[end..];
        }
    }
    let md = Markdown::parse(text);
    for (table, column) in md.columns("annotation") {
        for row in &table[1..] {
            let mut prefix = NGINX_PREFIX;
            for span in row.get(column).map(|c| spans(c)).unwrap_or_default() {
                let mut name = span;
                for p in [SSEGATE_PREFIX, NGINX_PREFIX] {
                    if let Some(n) = span.strip_prefix(p) {
                        prefix = p;
                        name = n;
                    }
                }
                let end = name.find(|c| !name_char(c)).unwrap_or(name.len());
                let (name, rest) = name.split_at(end);
                let name = name.trim_end_matches('.');
                if !name.is_empty() && (rest.is_empty() || rest.starts_with(':')) {
                    out.insert(format!("{prefix}{name}"));
                }
            }
        }
    }
    out
}

/// Every Rust source file under `src/`, concatenated.
fn source() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let mut out = String::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

/// The annotations the code knows: ingress-nginx's from the catalogue's
/// list (`src/translate/ingress_nginx_annotations.txt`, which
/// `ingress_nginx_catalogue.rs` reads and classifies), and ssegate's own
/// where the source names them: the string literal `"ssegate.dev/NAME"`
/// anywhere under `src/`, or a `"NAME" =>` arm of `read_ssegate` (which
/// matches the name with the prefix stripped).
struct KnownAnnotations {
    nginx: BTreeSet<String>,
    source: String,
    read_ssegate: String,
}

impl KnownAnnotations {
    fn load() -> KnownAnnotations {
        let nginx: BTreeSet<String> = read("src/translate/ingress_nginx_annotations.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| format!("{NGINX_PREFIX}{l}"))
            .collect();
        assert!(nginx.len() > 100, "{nginx:?}");
        let annotations = read("src/translate/ingress_annotations.rs");
        let start = annotations.find("fn read_ssegate(").expect("read_ssegate");
        let body = &annotations[start..];
        let read_ssegate = body[..body.find("\n}\n").unwrap()].to_owned();
        KnownAnnotations {
            nginx,
            source: source(),
            read_ssegate,
        }
    }

    fn has(&self, annotation: &str) -> bool {
        if let Some(name) = annotation.strip_prefix(SSEGATE_PREFIX) {
            self.source.contains(&format!("\"{annotation}\"")) || self.read_ssegate.contains(&format!("\"{name}\" =>"))
        } else {
            self.nginx.contains(annotation)
        }
    }
}

#[test]
fn every_annotation_the_docs_name_exists() {
    let known = KnownAnnotations::load();
    let mut unknown = Vec::new();
    let mut seen = 0;
    for (file, text) in doc_files() {
        for annotation in annotations_named(&text) {
            seen += 1;
            if !known.has(&annotation) {
                unknown.push(format!("{file}: {annotation}"));
            }
        }
    }
    assert!(seen > 20, "the annotations were not found: {seen}");
    assert!(
        unknown.is_empty(),
        "the docs name annotations the code does not have: {unknown:#?}"
    );
}

#[test]
fn the_annotation_reader_reads_annotation_positions_only_and_a_made_up_one_fails() {
    let text = "\
A `Route` (`ssegate.dev/v1alpha1`), CRD `routes.ssegate.dev`, controller `ssegate.dev/ingress`;
annotate it `ssegate.dev/made-up: \"1\"` or `nginx.ingress.kubernetes.io/proxy-buffering: \"off\"`.

```yaml
apiVersion: ssegate.dev/v1alpha1
spec: {controllerName: ssegate.dev/gateway-controller}
metadata:
  annotations:
    ssegate.dev/sse-resume: \"true\"
    nginx.ingress.kubernetes.io/made-up-too: x
```

| annotation | in ssegate |
|---|---|
| `ssegate.dev/buffer-size`, `proxy-buffering`, `made-up-three` | ... |
| `use-regex: \"false\"`, `auth-*`, `made-up-four` | ... |
";
    let found = annotations_named(text);
    let expected = [
        "nginx.ingress.kubernetes.io/made-up-four",
        "nginx.ingress.kubernetes.io/made-up-too",
        "nginx.ingress.kubernetes.io/proxy-buffering",
        "nginx.ingress.kubernetes.io/use-regex",
        "ssegate.dev/buffer-size",
        "ssegate.dev/made-up",
        "ssegate.dev/made-up-three",
        "ssegate.dev/proxy-buffering",
        "ssegate.dev/sse-resume",
    ];
    assert_eq!(found, expected.into_iter().map(String::from).collect());
    let known = KnownAnnotations::load();
    let missing: Vec<&String> = found.iter().filter(|a| !known.has(a)).collect();
    assert_eq!(
        missing,
        [
            "nginx.ingress.kubernetes.io/made-up-four",
            "nginx.ingress.kubernetes.io/made-up-too",
            "ssegate.dev/made-up",
            "ssegate.dev/made-up-three",
        ]
    );
}

// --- Flags -----------------------------------------------------------------

/// docs/flags.md, generated from clap and checked against the binary by a
/// test in `src/main.rs`: each subcommand's long flags (`""` for the flags
/// of every command).
fn flag_reference() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read("docs/flags.md").lines() {
        if let Some(heading) = line.strip_prefix("## ssegate") {
            let heading = heading.trim();
            section = if heading.starts_with('(') {
                String::new()
            } else {
                heading.to_owned()
            };
            out.entry(section.clone()).or_default();
        } else if let Some(flag) = line.strip_prefix("| `--") {
            let end = flag.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap();
            out.entry(section.clone())
                .or_default()
                .insert(format!("--{}", &flag[..end]));
        }
    }
    assert!(out.len() > 5 && out.contains_key("standalone"), "{out:?}");
    out
}

/// clap's own flags, which docs/flags.md leaves out.
const BUILT_IN_FLAGS: &[&str] = &["--help", "--version"];

/// Words that name another program: in a sentence, the flags after one of
/// them, or after a script (`bench/run.sh`, `*.py`), are that program's.
const OTHER_TOOLS: &[&str] = &["helm", "kubectl", "cargo", "curl", "buildah", "docker", "podman", "git"];

/// Docs about another program's flags: docs/performance.md describes the
/// benchmark harness (`bench/run.sh --scenarios resume`), often in
/// sentences that do not name it again; only its ssegate command lines count.
const HARNESS_DOCS: &[&str] = &["docs/performance.md"];

/// `--NAME` at the start of `text` (not a wildcard like `--client-*`).
fn leading_flag(text: &str) -> Option<&str> {
    let name = text.strip_prefix("--")?;
    let end = name
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(name.len());
    let after = &name[end..];
    (end > 0 && name.starts_with(|c: char| c.is_ascii_alphabetic()) && !after.starts_with('*'))
        .then(|| &text[..end + 2])
}

/// The flags of an ssegate command line: `ssegate [SUBCOMMAND] ...`,
/// `cargo run [...] -- [SUBCOMMAND] ...`, or (`bare`, for code spans)
/// `SUBCOMMAND --...`. `None` when `text` invokes no ssegate.
fn invocation(text: &str, subcommands: &BTreeSet<String>, bare: bool) -> Option<(Option<String>, Vec<String>)> {
    let text = text.trim().trim_start_matches("$ ");
    let text = text.split(" #").next().unwrap();
    let args = if let Some(rest) = text.strip_prefix("ssegate ") {
        rest
    } else if text.starts_with("cargo run") {
        text.split_once(" -- ")?.1
    } else if bare && subcommands.contains(text.split_whitespace().next()?) {
        text
    } else {
        return None;
    };
    let mut words = args.split_whitespace().peekable();
    let subcommand = words.next_if(|w| subcommands.contains(*w)).map(str::to_owned);
    let flags = words
        .filter_map(|w| leading_flag(w.trim_start_matches('[')))
        .map(str::to_owned)
        .collect();
    Some((subcommand, flags))
}

/// Whether a sentence or table row names a program other than ssegate.
fn names_other_tool(unit: &str) -> bool {
    unit.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_')))
        .map(|w| w.trim_end_matches('.'))
        .any(|w| OTHER_TOOLS.contains(&w.to_ascii_lowercase().as_str()) || w.ends_with(".sh") || w.ends_with(".py"))
}

/// Every ssegate flag `text` (one Markdown file) names, with the subcommand
/// it was given to when that is known. Flags of other programs (helm's
/// `--set`, kubectl's `--server-side`, cargo's `--release`, buildah's,
/// `bench/run.sh`'s) must not count, so a flag counts only in these places:
///
/// - An ssegate command line: a code block's line or a code span that
///   starts with `ssegate ` or `cargo run ... -- ` (then only what follows
///   `--`), or a code span that starts with a subcommand (`controller
///   --lease-name NAME`). Its flags are checked against that subcommand's
///   (and every command's) flags; `# comments` are cut off.
/// - A table with a column headed `flag` (tables of ssegate's flags): the
///   flags at the start of that column's code spans.
/// - A code span that is only a flag, with or without a value (`--listen`,
///   `--publish-service NS/NAME`, `--tls-secrets=false`), in a sentence or
///   table row that names no other program before it ([`OTHER_TOOLS`], or
///   a script ending in `.sh` or `.py`, in prose or code spans: "with
///   buildah (`--storage-driver vfs`)", "Options (after `bench/run.sh`):
///   `--only ...`"; a program named after the flag, as in "(`--pod-uid`),
///   so that `helm uninstall` ...", does not make it that program's);
///   never `--set`, which is helm's (its value
///   is read as a chart value). Wildcards (`--client-*`) are skipped. Not
///   in [`HARNESS_DOCS`] (`prose` false), whose prose is about the
///   benchmark harness's flags (`--scenarios`, `--smoke`).
fn flags_named(text: &str, subcommands: &BTreeSet<String>, prose: bool) -> BTreeSet<(Option<String>, String)> {
    let md = Markdown::parse(text);
    let mut out = BTreeSet::new();
    let command = |text: &str, bare: bool, out: &mut BTreeSet<(Option<String>, String)>| {
        if let Some((subcommand, flags)) = invocation(text, subcommands, bare) {
            out.extend(flags.into_iter().map(|f| (subcommand.clone(), f)));
        }
    };
    for (_, body) in &md.blocks {
        for line in body.lines() {
            command(line, false, &mut out);
        }
    }
    for span in md.spans() {
        command(span, true, &mut out);
    }
    let rows = md.tables.iter().flat_map(|t| t.iter().map(|r| r.join(" | ")));
    for unit in md.sentences.iter().cloned().chain(rows) {
        if !prose {
            continue;
        }
        for span in spans(&unit) {
            let at = span.as_ptr() as usize - unit.as_ptr() as usize;
            if names_other_tool(&unit[..at]) {
                break;
            }
            if let Some(flag) = leading_flag(span) {
                let rest = &span[flag.len()..];
                if flag != "--set" && (rest.is_empty() || rest.starts_with([' ', '='])) {
                    out.insert((None, flag.to_owned()));
                }
            }
        }
    }
    for (table, column) in md.columns("flag") {
        for row in &table[1..] {
            for span in row.get(column).map(|c| spans(c)).unwrap_or_default() {
                if let Some(flag) = leading_flag(span) {
                    out.insert((None, flag.to_owned()));
                }
            }
        }
    }
    out
}

/// Whether docs/flags.md has `flag`: for `subcommand`, among its own flags
/// or every command's; else under any command.
fn is_flag(reference: &BTreeMap<String, BTreeSet<String>>, subcommand: Option<&str>, flag: &str) -> bool {
    BUILT_IN_FLAGS.contains(&flag)
        || match subcommand {
            Some(sub) => [sub, ""]
                .iter()
                .any(|s| reference.get(*s).is_some_and(|f| f.contains(flag))),
            None => reference.values().any(|f| f.contains(flag)),
        }
}

#[test]
fn every_ssegate_flag_the_docs_name_exists() {
    let reference = flag_reference();
    let subcommands: BTreeSet<String> = reference.keys().filter(|k| !k.is_empty()).cloned().collect();
    let mut unknown = Vec::new();
    let mut seen = 0;
    for (file, text) in doc_files() {
        if file == "docs/flags.md" {
            continue;
        }
        for (subcommand, flag) in flags_named(&text, &subcommands, !HARNESS_DOCS.contains(&file.as_str())) {
            seen += 1;
            if !is_flag(&reference, subcommand.as_deref(), &flag) {
                let of = subcommand.map(|s| format!(" (of `ssegate {s}`)")).unwrap_or_default();
                unknown.push(format!("{file}: {flag}{of}"));
            }
        }
    }
    assert!(seen > 40, "the flags were not found: {seen}");
    assert!(
        unknown.is_empty(),
        "the docs name ssegate flags that docs/flags.md does not have: {unknown:#?}"
    );
}

#[test]
fn the_flag_reader_counts_ssegate_flags_only_and_a_made_up_one_fails() {
    let reference = flag_reference();
    let subcommands: BTreeSet<String> = reference.keys().filter(|k| !k.is_empty()).cloned().collect();
    let text = "\
```sh
helm install ssegate charts/ssegate --create-namespace --set service.type=NodePort
cargo run --release -- standalone --dir x --made-up-one   # --not-this
ssegate crd --listen 0.0.0.0:1
```

Run `ssegate controller --lease-name x` or `controller --made-up-two N`, with `--made-up-three=1`
and `--set tls.secrets=false`; `--client-*` limits. Options (after `bench/run.sh`): `--quick`.
`helm install --wait` waits. It builds with buildah (`--storage-driver vfs`). See `--listen`.
Set `--made-up-five` so that `helm uninstall` works.

| what | default | flag |
|---|---|---|
| a limit | 1 s | `--made-up-four` (0: off) |
";
    assert_eq!(
        flags_named(text, &subcommands, false)
            .into_iter()
            .filter(|(s, _)| s.is_none())
            .collect::<Vec<_>>(),
        [(None, "--made-up-four".to_owned())],
        "without prose, only command lines and flag tables count"
    );
    let found = flags_named(text, &subcommands, true);
    let sub = |s: &str| Some(s.to_owned());
    let expected: BTreeSet<(Option<String>, String)> = [
        (None, "--listen"),
        (None, "--made-up-five"),
        (None, "--made-up-four"),
        (None, "--made-up-three"),
        (sub("controller"), "--lease-name"),
        (sub("controller"), "--made-up-two"),
        (sub("crd"), "--listen"),
        (sub("standalone"), "--dir"),
        (sub("standalone"), "--made-up-one"),
    ]
    .into_iter()
    .map(|(s, f)| (s, f.to_owned()))
    .collect();
    assert_eq!(found, expected);
    let missing: Vec<String> = found
        .iter()
        .filter(|(s, f)| !is_flag(&reference, s.as_deref(), f))
        .map(|(s, f)| format!("{}{f}", s.as_deref().map(|s| format!("{s} ")).unwrap_or_default()))
        .collect();
    assert_eq!(
        missing,
        [
            "--made-up-five",
            "--made-up-four",
            "--made-up-three",
            "controller --made-up-two",
            "crd --listen",
            "standalone --made-up-one"
        ]
    );
}

/// The relative link targets in a Markdown text (`[text](target)`), without
/// web addresses: each as (path, anchor), either part possibly empty.
fn relative_links(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        if target.contains("://") || target.starts_with("mailto:") || target.contains(char::is_whitespace) {
            continue;
        }
        let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
        out.push((path.to_owned(), anchor.to_owned()));
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_`
/// dropped, each space a `-`.
fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown text's headings (`#` lines outside code fences).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(heading_anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// Each relative link of the file `name` (under the repository root) whose
/// target file, or the anchor in it, does not exist.
fn broken_links(name: &str, text: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(name).parent().unwrap_or(Path::new(""));
    let mut broken = Vec::new();
    for (path, anchor) in relative_links(text) {
        let file = root.join(dir).join(&path);
        if !path.is_empty() && !file.exists() {
            broken.push(format!("{name}: {path}"));
        } else if !anchor.is_empty() {
            let target = if path.is_empty() {
                text.to_owned()
            } else {
                std::fs::read_to_string(&file).unwrap_or_default()
            };
            if !anchors(&target).contains(&anchor) {
                broken.push(format!("{name}: {path}#{anchor}"));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let broken: Vec<String> = doc_files()
        .iter()
        .flat_map(|(name, text)| broken_links(name, text))
        .collect();
    assert!(broken.is_empty(), "links to nothing: {broken:#?}");
}

#[test]
fn the_link_checker_finds_a_missing_file_and_a_missing_anchor() {
    let sample = "See [install](install.md#a-real-control-plane-on-your-machine), \
                  [made up](made-up.md), [no such part](install.md#no-such-part), \
                  [here](#limits-and-timeouts) and [the web](https://example.com/x.md).\n\
                  ## Limits and timeouts\n";
    assert_eq!(
        broken_links("docs/sample.md", sample),
        vec!["docs/sample.md: made-up.md", "docs/sample.md: install.md#no-such-part"]
    );
    assert_eq!(
        heading_anchor(" Binary and chart defaults, side by side"),
        "binary-and-chart-defaults-side-by-side"
    );
}
