//! What tests need from the node of real components (scripts/node.sh, with
//! [`control_plane_with_node`](super::cluster::control_plane_with_node)):
//! the ssegate image of the current source in the node's containerd, the
//! pods' and the kubelet's logs for failure messages, each pod's container
//! exits as the kubelet reports them, and a container's whole log kept
//! past its pod's end.

use super::cluster::ControlPlane;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `command` with its output in `log`, failing the test if it fails
/// or takes longer than `limit` (then it is killed).
fn run_logged(command: &mut Command, limit: Duration, what: &str, log: &Path) {
    let out = std::fs::File::create(log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if status.is_some_and(|s| s.success()) {
        return;
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    match status {
        None => panic!("{what}: not done within {limit:?}:\n{}", tail.join("\n")),
        Some(s) => panic!("{what}: {s}:\n{}", tail.join("\n")),
    }
}

static IMPORTED: OnceLock<()> = OnceLock::new();

/// Builds the image of the current source (`scripts/image.sh export`:
/// seconds when nothing changed, minutes after a source change) and loads
/// it into the node's containerd as `ssegate:<appVersion>`, the chart's
/// default image; once per test binary.
pub fn import_ssegate_image(cp: &ControlPlane) {
    assert!(cp.node, "the control plane runs no node");
    IMPORTED.get_or_init(|| {
        let logs = Path::new(ROOT).join("target/image");
        std::fs::create_dir_all(&logs).unwrap();
        let pid = std::process::id();
        let started = Instant::now();
        // Our own copy of the archive, taken as soon as it is written:
        // another export (scripts/conformance.sh) may rewrite the shared
        // one at any time. Exported again if the copy is not whole.
        let archive = cp.dir.join("ssegate.tar");
        for attempt in 1.. {
            run_logged(
                Command::new(format!("{ROOT}/scripts/image.sh"))
                    .arg("export")
                    .current_dir(ROOT),
                Duration::from_secs(20 * 60),
                "scripts/image.sh export",
                &logs.join(format!("export-{pid}.log")),
            );
            std::fs::copy(logs.join("ssegate.tar"), &archive).unwrap();
            if archive_is_whole(&archive) {
                break;
            }
            assert!(attempt < 3, "target/image/ssegate.tar was not a whole archive 3 times");
        }
        let built = started.elapsed();
        run_logged(
            Command::new(format!("{ROOT}/scripts/node.sh"))
                .arg("import")
                .arg(&archive)
                .current_dir(ROOT)
                .env("SSEGATE_CP_DIR", &cp.dir),
            Duration::from_secs(5 * 60),
            "scripts/node.sh import",
            &logs.join(format!("import-{pid}.log")),
        );
        println!(
            "ssegate image built in {built:?}, imported into the node in {:?}",
            started.elapsed() - built
        );
    });
}

/// Whether `archive` is a whole docker-archive: tar reads it to its end,
/// and it has its manifest.
fn archive_is_whole(archive: &Path) -> bool {
    let out = Command::new("tar").arg("-tf").arg(archive).output().unwrap();
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == "manifest.json")
}

/// For failure messages: every pod outside kube-system, the last lines of
/// each of their containers (`kubectl logs`), and the kubelet's log tail.
pub fn logs(cp: &ControlPlane) -> String {
    let listing = cp.kubectl(&["get", "pods", "-A", "-o", "wide"], None);
    let mut out = format!("--- pods\n{}", String::from_utf8_lossy(&listing.stdout));
    let pods = cp.kubectl(
        &[
            "get",
            "pods",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name}{\"\\n\"}{end}",
        ],
        None,
    );
    for line in String::from_utf8_lossy(&pods.stdout).lines() {
        let Some((ns, name)) = line.split_once(' ') else {
            continue;
        };
        if ns == "kube-system" {
            continue;
        }
        let got = cp.kubectl(
            &["logs", "-n", ns, name, "--all-containers", "--prefix", "--tail=30"],
            None,
        );
        out.push_str(&format!("--- kubectl logs -n {ns} {name}\n"));
        out.push_str(&String::from_utf8_lossy(&got.stdout));
        out.push_str(&String::from_utf8_lossy(&got.stderr));
    }
    let kubelet = std::fs::read_to_string(cp.dir.join("node/kubelet.log")).unwrap_or_default();
    let tail: Vec<&str> = kubelet.lines().rev().take(40).collect();
    out.push_str("--- kubelet.log (tail)\n");
    for line in tail.into_iter().rev() {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Polls `f` every 100 ms until it returns `Some`, failing after `limit`
/// with the node's [`logs`]. `f` may block (it runs kubectl): called from a
/// multi-threaded runtime, the worker's queued tasks (the test's streaming
/// clients, the pod watch) move to another worker first, so no event waits
/// behind the poll.
pub fn wait_for<T>(limit: Duration, what: &str, cp: &ControlPlane, mut f: impl FnMut() -> Option<T>) -> T {
    let mut poll = || {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}\n{}", logs(cp));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(poll),
        _ => poll(),
    }
}

/// One end of a container, as the kubelet reported it in the pod's status
/// (`state.terminated`, or `lastState.terminated` after a restart).
#[derive(Clone, Debug, PartialEq)]
pub struct Termination {
    pub container: String,
    pub exit_code: i32,
    pub reason: Option<String>,
    pub finished_at: Option<String>,
    container_id: Option<String>,
}

#[derive(Debug, Default)]
struct PodRecord {
    /// The containers the pod's spec names.
    containers: BTreeSet<String>,
    terminations: Vec<Termination>,
}

/// A watch of every pod that records each container end the kubelet
/// reports, by pod name; stopped on drop.
pub struct PodExits {
    seen: Arc<Mutex<BTreeMap<String, PodRecord>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodExits {
    /// Starts watching (and waits until the first listing is in).
    pub async fn start(client: kube::Client) -> PodExits {
        use futures_util::StreamExt;
        use kube::runtime::watcher::{self, Event};
        use kube::runtime::WatchStreamExt;
        let seen: Arc<Mutex<BTreeMap<String, PodRecord>>> = Arc::default();
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let pods: kube::Api<Pod> = kube::Api::all(client);
                let mut events = watcher::watcher(pods, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                let mut listed = Some(listed_tx);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(Event::Apply(pod) | Event::InitApply(pod) | Event::Delete(pod)) => {
                            record(&mut seen.lock().unwrap(), &pod)
                        }
                        Ok(Event::InitDone) => {
                            if let Some(tx) = listed.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Init) | Err(_) => {}
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), listed_rx)
            .await
            .expect("the pod watch listed nothing within 30 s")
            .expect("the pod watch ended");
        PodExits { seen, task }
    }

    /// Waits (up to `limit`) until every container of pod `name` has ended,
    /// and returns their ends; fails the test if they have not.
    pub async fn wait_ended(&self, name: &str, limit: Duration) -> Vec<Termination> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                if let Some(record) = seen.get(name) {
                    let ended: BTreeSet<&String> = record.terminations.iter().map(|t| &t.container).collect();
                    if !record.containers.is_empty() && record.containers.iter().all(|c| ended.contains(c)) {
                        return record.terminations.clone();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "pod {name}: not every container ended within {limit:?}: {:?}",
                self.seen.lock().unwrap().get(name)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to `limit`) for pod `name`'s containers to end, and fails
    /// the test unless each ended once, with exit code 0.
    pub async fn assert_exited_0(&self, name: &str, limit: Duration) -> Vec<Termination> {
        let ends = self.wait_ended(name, limit).await;
        assert!(
            ends.iter().all(|t| t.exit_code == 0),
            "pod {name} did not exit 0: {ends:?}"
        );
        let containers: BTreeSet<&String> = ends.iter().map(|t| &t.container).collect();
        assert_eq!(
            containers.len(),
            ends.len(),
            "pod {name}: a container restarted: {ends:?}"
        );
        ends
    }
}

impl Drop for PodExits {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(seen: &mut BTreeMap<String, PodRecord>, pod: &Pod) {
    let Some(name) = pod.metadata.name.clone() else { return };
    let entry = seen.entry(name).or_default();
    if let Some(spec) = &pod.spec {
        entry.containers = spec.containers.iter().map(|c| c.name.clone()).collect();
    }
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    for status in statuses.into_iter().flatten() {
        let ContainerStatus {
            name,
            state,
            last_state,
            ..
        } = status;
        for state in [last_state, state].into_iter().flatten() {
            let Some(t) = &state.terminated else { continue };
            let end = Termination {
                container: name.clone(),
                exit_code: t.exit_code,
                reason: t.reason.clone(),
                finished_at: t.finished_at.as_ref().map(|at| at.0.to_string()),
                container_id: t.container_id.clone(),
            };
            let known = entry
                .terminations
                .iter()
                .any(|k| k.container == end.container && k.container_id == end.container_id);
            if !known {
                entry.terminations.push(end);
            }
        }
    }
}

/// `kubectl logs -f` of one container, kept past its pod's end: the
/// container's whole output once it has ended.
pub struct LogFollower {
    child: Option<Child>,
    text: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    what: String,
}

impl LogFollower {
    /// Follows `container` of pod `name` in `namespace` from its start.
    pub fn start(cp: &ControlPlane, namespace: &str, name: &str, container: &str) -> LogFollower {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&cp.kubeconfig)
            .args(["logs", "-f", "-n", namespace, name, "-c", container])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let text = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn({
            let text = text.clone();
            move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    text.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        LogFollower {
            child: Some(child),
            text,
            reader: Some(reader),
            what: format!("{namespace}/{name}/{container}"),
        }
    }

    /// What it has read so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits (up to `limit`) for the log to end with the container, and
    /// returns all of it; fails the test if it has not ended.
    pub async fn wait_end(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut().expect("followed");
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "kubectl logs -f {}: {status}", self.what);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the log of {} did not end within {limit:?}",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = None;
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.text()
    }
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
