//! Pure rules of the agent, kept free of kube and tokio so they have fast
//! unit tests: the image table, `$(VAR)` expansion, the argv a container
//! runs, restart back-off, and probe thresholds.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Image reference → local executable, given explicitly by a file: there is
/// no registry, so an image the table does not name cannot run.
#[derive(Debug, Default, Clone)]
pub struct ImageTable {
    images: HashMap<String, PathBuf>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Path(PathBuf),
    Object { path: PathBuf },
}

impl ImageTable {
    /// Parses YAML (or JSON): `image: /path` or `image: {path: /path}`.
    pub fn parse(text: &str) -> Result<ImageTable, String> {
        let raw: HashMap<String, Entry> = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let images = raw
            .into_iter()
            .map(|(k, v)| match v {
                Entry::Path(p) | Entry::Object { path: p } => (k, p),
            })
            .collect();
        Ok(ImageTable { images })
    }

    /// The executable of `image`, matched exactly (tag included).
    pub fn get(&self, image: &str) -> Option<&Path> {
        self.images.get(image).map(PathBuf::as_path)
    }
}

/// Kubernetes' `$(VAR)` expansion (as in command, args and env values):
/// `$(NAME)` becomes the value when `NAME` is defined and stays as written
/// otherwise; `$$` is a literal `$`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The argv a container runs. Without `command` the image's entrypoint
/// (the table's executable) runs with `args`. With `command`, its first word
/// names the entrypoint when its file name is the executable's (`/ssegate`
/// for a table entry `…/ssegate`), and is run as written otherwise.
pub fn argv(exe: &Path, command: &[String], args: &[String]) -> Vec<String> {
    let exe_s = exe.display().to_string();
    let mut out = Vec::new();
    match command.split_first() {
        None => out.push(exe_s),
        Some((first, rest)) => {
            let same = Path::new(first).file_name().is_some() && Path::new(first).file_name() == exe.file_name();
            out.push(if same { exe_s } else { first.clone() });
            out.extend(rest.iter().cloned());
        }
    }
    out.extend(args.iter().cloned());
    out
}

/// The kubelet's crash-loop back-off: `base` doubled per restart, capped at
/// five minutes.
pub fn backoff(base: Duration, restarts: u32) -> Duration {
    let cap = Duration::from_secs(300);
    base.checked_mul(1u32 << restarts.min(16)).unwrap_or(cap).min(cap)
}

/// Whether an exited container starts again under the pod's `restartPolicy`.
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Why `runAsNonRoot` forbids starting: processes run as the agent (root)
/// unless `runAsUser` says otherwise, as an image without `USER` would.
pub fn non_root_violation(run_as_non_root: Option<bool>, uid: Option<i64>) -> Option<String> {
    match (run_as_non_root, uid) {
        (Some(true), None) => Some("container has runAsNonRoot and image will run as root".into()),
        (Some(true), Some(0)) => {
            Some("container's runAsUser breaks non-root policy (runAsNonRoot with runAsUser 0)".into())
        }
        _ => None,
    }
}

/// Consecutive results of one probe and the verdict they give once a
/// threshold is reached (`None` until the first verdict).
#[derive(Debug, Default, Clone)]
pub struct ProbeTally {
    successes: u32,
    failures: u32,
    pub verdict: Option<bool>,
}

impl ProbeTally {
    /// Records one result; returns the verdict when this result changed it.
    pub fn record(&mut self, ok: bool, success_threshold: u32, failure_threshold: u32) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let verdict = if ok && self.successes >= success_threshold.max(1) {
            Some(true)
        } else if !ok && self.failures >= failure_threshold.max(1) {
            Some(false)
        } else {
            None
        };
        match verdict {
            Some(v) if self.verdict != Some(v) => {
                self.verdict = Some(v);
                Some(v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_takes_paths_and_objects() {
        let t = ImageTable::parse("ssegate:test: /bin/ssegate\n\"echo:1\": {path: /bin/echo}\n").unwrap();
        assert_eq!(t.get("ssegate:test"), Some(Path::new("/bin/ssegate")));
        assert_eq!(t.get("echo:1"), Some(Path::new("/bin/echo")));
        assert_eq!(t.get("ssegate"), None, "tags match exactly");
        assert!(ImageTable::parse("{\"a\": \"/x\"}").is_ok(), "JSON is YAML");
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let env = |k: &str| (k == "POD_NAME").then(|| "p-1".to_owned());
        assert_eq!(expand("--server-id=$(POD_NAME)", env), "--server-id=p-1");
        assert_eq!(expand("$(MISSING)/x", env), "$(MISSING)/x");
        assert_eq!(expand("$$(POD_NAME)", env), "$(POD_NAME)");
        assert_eq!(expand("a$b$", env), "a$b$");
        assert_eq!(expand("$(POD_NAME", env), "$(POD_NAME");
        assert_eq!(expand("$(POD_NAME)$(POD_NAME)", env), "p-1p-1");
    }

    #[test]
    fn argv_uses_the_entrypoint() {
        let exe = Path::new("/build/ssegate");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            argv(exe, &[], &s(&["demo-backend"])),
            s(&["/build/ssegate", "demo-backend"])
        );
        assert_eq!(
            argv(exe, &s(&["/ssegate", "a"]), &s(&["b"])),
            s(&["/build/ssegate", "a", "b"])
        );
        assert_eq!(
            argv(exe, &s(&["/bin/sh", "-c"]), &s(&["x"])),
            s(&["/bin/sh", "-c", "x"])
        );
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        let b = Duration::from_secs(10);
        assert_eq!(backoff(b, 0), Duration::from_secs(10));
        assert_eq!(backoff(b, 2), Duration::from_secs(40));
        assert_eq!(backoff(b, 40), Duration::from_secs(300));
        assert!(should_restart("Always", 0));
        assert!(!should_restart("OnFailure", 0));
        assert!(should_restart("OnFailure", 1));
        assert!(!should_restart("Never", 1));
    }

    #[test]
    fn run_as_non_root() {
        assert!(non_root_violation(Some(true), None).is_some());
        assert!(non_root_violation(Some(true), Some(0)).is_some());
        assert!(non_root_violation(Some(true), Some(65532)).is_none());
        assert!(non_root_violation(None, None).is_none());
    }

    #[test]
    fn probe_thresholds() {
        let mut t = ProbeTally::default();
        assert_eq!(t.record(false, 1, 3), None);
        assert_eq!(t.record(false, 1, 3), None);
        assert_eq!(t.record(false, 1, 3), Some(false));
        assert_eq!(t.record(false, 1, 3), None, "no change");
        assert_eq!(t.record(true, 2, 3), None);
        assert_eq!(t.record(true, 2, 3), Some(true));
    }
}
