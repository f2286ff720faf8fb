//! One worker per Pod bound to the node: network namespace, service-account
//! files, volumes ([`crate::volume`]), container processes, probes,
//! restarts, status, and deletion.

use crate::net::PodNet;
use crate::probe::Check;
use crate::spec::{self, ProbeTally};
use crate::volume::{self, Mount};
use crate::Agent;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Probe, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

/// Where a pod's service-account files appear inside its mount namespace.
pub const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The token's lifetime; it is renewed at 80 % of it, as the kubelet does.
const TOKEN_SECONDS: i64 = 3600;
/// Where pods find the apiserver: their own loopback, as
/// `KUBERNETES_SERVICE_HOST`/`_PORT` say.
pub const APISERVER_PORT: u16 = 443;
const TICK: Duration = Duration::from_millis(100);

pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(Default)]
struct ProbeRun {
    tally: ProbeTally,
    next: Option<Instant>,
    running: Option<JoinHandle<bool>>,
}

#[derive(Default)]
struct Ctr {
    child: Option<Child>,
    pid: Option<u32>,
    started_at: String,
    restarts: u32,
    /// (state JSON) of the last exit, for `lastState` / `state`.
    last_exit: Option<(i32, Value)>,
    /// When the container may start (again): back-off after an exit.
    not_before: Option<Instant>,
    /// Why it is not running, for `state.waiting`.
    waiting: Option<(String, String)>,
    /// Set once the container will not run again (restartPolicy).
    done: bool,
    started: bool,
    ready: bool,
    startup: ProbeRun,
    readiness: ProbeRun,
    liveness: ProbeRun,
    /// SIGKILL after this, once SIGTERM was sent (liveness or deletion).
    kill_at: Option<Instant>,
    warned_image: bool,
}

struct Worker {
    agent: Arc<Agent>,
    net: PodNet,
    slot: u8,
    dir: PathBuf,
    ctrs: Vec<Ctr>,
    token_renew: Option<Instant>,
    /// The service-account files are written (or not wanted): containers
    /// start only then, as the kubelet waits for the pod's volumes.
    sa_ready: bool,
    /// The pod is being deleted: containers are stopping, none restarts.
    terminating: bool,
    mount_error: Option<String>,
    /// Host mount points the agent created that this pod uses
    /// ([`crate::volume::ensure_mount_point`]).
    mount_points: Vec<PathBuf>,
    /// The apiserver at the pod's 127.0.0.1:443 (see [`crate::net::forward_into`]).
    forwarder: Option<JoinHandle<()>>,
    conditions: HashMap<&'static str, (bool, String)>,
    last_status: Value,
    start_time: String,
}

/// Runs the pod until it is deleted (then removes the object) or gone from
/// the API or the agent stops.
pub async fn run(agent: Arc<Agent>, mut rx: watch::Receiver<Option<Pod>>, mut stop: watch::Receiver<bool>) {
    let Some(pod) = rx.borrow().clone() else { return };
    if pod.metadata.deletion_timestamp.is_some() {
        // Terminating before this agent ran it (an agent restart): nothing
        // runs, so the object goes at once.
        final_delete(&agent, &pod).await;
        return;
    }
    let Some(slot) = agent.take_slot() else {
        warn!(pod = ?pod.metadata.name, "no free pod address");
        return;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let net = PodNet::new(&agent.args.netns_prefix, agent.base, slot);
    let dir = agent.args.root_dir.join("pods").join(&uid);
    let n = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let mut w = Worker {
        agent: agent.clone(),
        net,
        slot,
        dir,
        ctrs: (0..n).map(|_| Ctr::default()).collect(),
        token_renew: None,
        sa_ready: pod.spec.as_ref().and_then(|s| s.automount_service_account_token) == Some(false),
        mount_error: None,
        mount_points: Vec::new(),
        terminating: false,
        forwarder: None,
        conditions: HashMap::new(),
        last_status: Value::Null,
        start_time: now_rfc3339(),
    };
    w.main(&mut rx, &mut stop).await;
    if let Some(h) = w.forwarder.take() {
        h.abort();
    }
    w.net.delete();
    // The logs stay (for a failed test to show); the token goes.
    let _ = std::fs::remove_dir_all(w.dir.join("serviceaccount"));
    let _ = std::fs::remove_dir_all(w.dir.join("volumes"));
    volume::release_mount_points(&mut w.mount_points);
    agent.free_slot(w.slot);
}

impl Worker {
    async fn main(&mut self, rx: &mut watch::Receiver<Option<Pod>>, stop: &mut watch::Receiver<bool>) {
        let pod = rx.borrow().clone().expect("pod");
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Err(e) = std::fs::create_dir_all(self.dir.join("serviceaccount")) {
            warn!(%name, "cannot make the pod folder: {e}");
        }
        if let Err(e) = self.net.create() {
            self.event(&pod, "Warning", "FailedCreatePodSandBox", &e).await;
        } else {
            info!(%name, ip = %self.net.pod_ip, netns = %self.net.netns, "pod sandbox ready");
            if let Some(target) = self.agent.apiserver.clone() {
                match crate::net::forward_into(&self.net.path(), APISERVER_PORT, target).await {
                    Ok(h) => self.forwarder = Some(h),
                    Err(e) => {
                        let msg = format!("apiserver forward in the pod: {e}");
                        self.event(&pod, "Warning", "FailedCreatePodSandBox", &msg).await;
                    }
                }
            }
        }
        loop {
            if *stop.borrow() {
                self.stop_all(Duration::from_secs(2)).await;
                return;
            }
            let Some(pod) = rx.borrow().clone() else {
                // Gone from the API without our final delete: stop at once.
                self.stop_all(Duration::from_secs(2)).await;
                return;
            };
            if pod.metadata.deletion_timestamp.is_some() && !self.terminating {
                self.begin_termination(&pod).await;
            }
            self.tick(&pod).await;
            if self.terminating && self.ctrs.iter().all(|c| c.child.is_none()) {
                final_delete(&self.agent, &pod).await;
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                r = rx.changed() => if r.is_err() { self.stop_all(Duration::from_secs(2)).await; return; },
                _ = stop.changed() => {}
            }
        }
    }

    async fn tick(&mut self, pod: &Pod) {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let now = Instant::now();
        if spec.automount_service_account_token != Some(false) && self.token_renew.is_none_or(|t| now >= t) {
            match self.write_sa_files(pod).await {
                Ok(()) => {
                    self.sa_ready = true;
                    self.token_renew = Some(now + Duration::from_secs(TOKEN_SECONDS as u64 * 8 / 10));
                }
                Err(e) => {
                    let msg = format!("service-account token: {e}");
                    // One Event per distinct failure, not one per retry.
                    if self.mount_error.as_ref() != Some(&msg) {
                        self.event(pod, "Warning", "FailedMount", &msg).await;
                        self.mount_error = Some(msg);
                    }
                    self.token_renew = Some(now + Duration::from_secs(2));
                }
            }
        }
        let grace = Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
        for (i, c) in spec.containers.iter().enumerate() {
            // Exits.
            let exited = match self.ctrs[i].child.as_mut().map(|ch| ch.try_wait()) {
                Some(Ok(Some(status))) => Some(status),
                _ => None,
            };
            if let Some(status) = exited {
                use std::os::unix::process::ExitStatusExt;
                let ctr = &mut self.ctrs[i];
                let code = status.code().unwrap_or(128 + status.signal().unwrap_or(0));
                let mut term = json!({
                    "exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "startedAt": ctr.started_at,
                    "finishedAt": now_rfc3339(),
                    "containerID": format!("ssegate-node-agent://{}", ctr.pid.unwrap_or(0)),
                });
                if let Some(sig) = status.signal() {
                    term["signal"] = json!(sig);
                }
                info!(pod = ?pod.metadata.name, container = %c.name, code, "container exited");
                ctr.child = None;
                ctr.pid = None;
                ctr.kill_at = None;
                ctr.started = false;
                ctr.ready = false;
                ctr.startup = ProbeRun::default();
                ctr.readiness = ProbeRun::default();
                ctr.liveness = ProbeRun::default();
                ctr.last_exit = Some((code, term));
                if !self.terminating && spec::should_restart(&policy, code) {
                    let wait = spec::backoff(self.agent.args.backoff(), ctr.restarts);
                    ctr.not_before = Some(now + wait);
                    ctr.waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!("back-off {}s restarting failed container {}", wait.as_secs(), c.name),
                    ));
                } else {
                    ctr.done = true;
                }
            }
            if self.ctrs[i].kill_at.is_some_and(|t| now >= t) {
                self.signal(i, libc::SIGKILL);
                self.ctrs[i].kill_at = None;
            }
            // Starts.
            let ctr = &self.ctrs[i];
            if self.sa_ready && ctr.child.is_none() && !ctr.done && ctr.not_before.is_none_or(|t| now >= t) {
                self.start(pod, i, c).await;
            }
            self.probes(pod, i, c, grace).await;
        }
        self.report(pod, &spec.containers, &policy).await;
    }

    /// Starts container `i`, or records why it cannot.
    async fn start(&mut self, pod: &Pod, i: usize, c: &Container) {
        let image = c.image.clone().unwrap_or_default();
        let Some(exe) = self.agent.table.get(&image).map(PathBuf::from) else {
            let msg = format!("image {image:?} is not in the node agent's image table");
            self.ctrs[i].waiting = Some(("ErrImagePull".into(), msg.clone()));
            if !self.ctrs[i].warned_image {
                self.ctrs[i].warned_image = true;
                self.event(
                    pod,
                    "Warning",
                    "Failed",
                    &format!("Failed to pull image {image:?}: {msg}"),
                )
                .await;
            }
            self.ctrs[i].not_before = Some(Instant::now() + Duration::from_secs(10));
            return;
        };
        let pod_sc = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root);
        if let Some(e) = spec::non_root_violation(non_root, sc.run_as_user.or(pod_sc.run_as_user)) {
            if self.ctrs[i].waiting.as_ref().map(|w| &w.1) != Some(&e) {
                self.event(pod, "Warning", "Failed", &format!("Error: {e}")).await;
            }
            self.ctrs[i].waiting = Some(("CreateContainerConfigError".into(), e));
            self.ctrs[i].not_before = Some(Instant::now() + Duration::from_secs(2));
            return;
        }
        let mounts = match self.volumes(pod, c).await {
            Ok(m) => {
                // A later failure of the same kind is told again.
                if self.mount_error.as_ref().is_some_and(|e| e.starts_with("MountVolume")) {
                    self.mount_error = None;
                }
                m
            }
            Err(e) => {
                // As the kubelet: the container waits in ContainerCreating,
                // one Event per distinct failure, retried.
                if self.mount_error.as_ref() != Some(&e) {
                    self.event(pod, "Warning", "FailedMount", &e).await;
                    self.mount_error = Some(e.clone());
                }
                self.ctrs[i].waiting = Some(("ContainerCreating".into(), e));
                self.ctrs[i].not_before = Some(Instant::now() + Duration::from_secs(2));
                return;
            }
        };
        let env = match self.env(pod, c).await {
            Ok(env) => env,
            Err(e) => {
                self.ctrs[i].waiting = Some(("CreateContainerConfigError".into(), e.clone()));
                self.event(pod, "Warning", "Failed", &format!("Error: {e}")).await;
                self.ctrs[i].not_before = Some(Instant::now() + Duration::from_secs(2));
                return;
            }
        };
        let lookup = |k: &str| env.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let argv: Vec<String> = spec::argv(
            &exe,
            c.command.as_deref().unwrap_or(&[]),
            c.args.as_deref().unwrap_or(&[]),
        )
        .iter()
        .map(|a| spec::expand(a, lookup))
        .collect();
        match self.spawn(pod, c, &argv, &env, mounts) {
            Ok(child) => {
                let ctr = &mut self.ctrs[i];
                if ctr.last_exit.is_some() {
                    ctr.restarts += 1;
                }
                ctr.pid = child.id();
                ctr.child = Some(child);
                ctr.started_at = now_rfc3339();
                ctr.waiting = None;
                ctr.not_before = None;
                info!(pod = ?pod.metadata.name, container = %c.name, pid = ?ctr.pid, ?argv, "container started");
                let reason = if ctr.restarts > 0 { "Restarted" } else { "Started" };
                self.event(pod, "Normal", reason, &format!("Started container {}", c.name))
                    .await;
            }
            Err(e) => {
                let msg = format!("cannot run {argv:?}: {e}");
                self.ctrs[i].waiting = Some(("RunContainerError".into(), msg.clone()));
                self.ctrs[i].not_before =
                    Some(Instant::now() + spec::backoff(self.agent.args.backoff(), self.ctrs[i].restarts));
                self.event(pod, "Warning", "Failed", &msg).await;
            }
        }
    }

    /// The process: joins the pod's network namespace, gets a private mount
    /// namespace with the service-account folder bound at [`SA_DIR`] and
    /// the container's volumes at their mount paths, and drops to
    /// `runAsUser`/`runAsGroup`, with `fsGroup` and `supplementalGroups` as
    /// its supplementary groups.
    fn spawn(
        &self,
        pod: &Pod,
        c: &Container,
        argv: &[String],
        env: &[(String, String)],
        mut mounts: Vec<Mount>,
    ) -> std::io::Result<Child> {
        let netns = std::fs::File::open(self.net.path())?;
        let fd = netns.as_raw_fd();
        let spec = pod.spec.clone().unwrap_or_default();
        let pod_sc = spec.security_context.clone().unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        let uid = sc.run_as_user.or(pod_sc.run_as_user);
        let gid = sc.run_as_group.or(pod_sc.run_as_group);
        let mount = spec.automount_service_account_token != Some(false);
        let no_new_privs = sc.allow_privilege_escalation == Some(false);
        let root = CString::new("/").expect("path");
        if mount {
            std::fs::create_dir_all(SA_DIR)?;
            mounts.push(Mount {
                src: self.dir.join("serviceaccount"),
                dst: SA_DIR.into(),
                read_only: false,
            });
        }
        volume::order(&mut mounts);
        let cstr = |p: &std::path::Path| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        };
        let binds: Vec<(CString, CString, bool)> = mounts
            .iter()
            .map(|m| Ok((cstr(&m.src)?, cstr(&m.dst)?, m.read_only)))
            .collect::<std::io::Result<_>>()?;
        let private_mounts = !binds.is_empty();
        let groups: Vec<libc::gid_t> = pod_sc
            .fs_group
            .into_iter()
            .chain(pod_sc.supplemental_groups.iter().flatten().copied())
            .map(|g| g as libc::gid_t)
            .collect();
        let log_path = self.dir.join(format!("{}.log", c.name));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOSTNAME", pod.metadata.name.clone().unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(c.working_dir.as_deref().unwrap_or("/"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe system calls on values prepared above.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if private_mounts {
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let private = libc::MS_REC | libc::MS_PRIVATE;
                    if libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        private,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    for (src, dst, read_only) in &binds {
                        if libc::mount(
                            src.as_ptr(),
                            dst.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND,
                            std::ptr::null(),
                        ) != 0
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                        // A bind's flags change only by a remount of it.
                        let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                        if *read_only
                            && libc::mount(std::ptr::null(), dst.as_ptr(), std::ptr::null(), ro, std::ptr::null()) != 0
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                libc::setpgid(0, 0);
                if no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(g) = gid {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(g as libc::gid_t) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(u) = uid {
                    if gid.is_none() && (libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(0) != 0) {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::setuid(u as libc::uid_t) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn();
        drop(netns);
        child
    }

    /// The container's mounts (see [`crate::volume`]): its ConfigMap and
    /// Secret files written, emptyDir folders and host mount points made.
    /// An error is the kubelet's `FailedMount` message.
    async fn volumes(&mut self, pod: &Pod, c: &Container) -> Result<Vec<Mount>, String> {
        use std::os::unix::fs::PermissionsExt;
        const GET_TIMEOUT: Duration = Duration::from_secs(10);
        let spec = pod.spec.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let pod_sc = spec.security_context.clone().unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        let uid = sc.run_as_user.or(pod_sc.run_as_user).unwrap_or(0) as u32;
        let fs_group = pod_sc.fs_group.map(|g| g as u32);
        let gid = fs_group
            .or(sc.run_as_group.or(pod_sc.run_as_group).map(|g| g as u32))
            .unwrap_or(0);
        let mut out = Vec::new();
        for vm in c.volume_mounts.iter().flatten() {
            let fail = |e: String| format!("MountVolume.SetUp failed for volume {:?} : {e}", vm.name);
            let Some(v) = spec.volumes.iter().flatten().find(|v| v.name == vm.name) else {
                return Err(fail("no such volume in the pod".into()));
            };
            if v.projected.is_some() && vm.mount_path.trim_end_matches('/') == SA_DIR {
                // The ServiceAccount admission plugin's kube-api-access
                // volume: the agent's service-account folder is bound there.
                continue;
            }
            let dir = self.dir.join("volumes").join(&v.name);
            let files = if let Some(cm) = &v.config_map {
                let api: Api<ConfigMap> = Api::namespaced(self.agent.client.clone(), &ns);
                let found = tokio::time::timeout(GET_TIMEOUT, api.get_opt(&cm.name))
                    .await
                    .map_err(|_| fail(format!("configmap {:?}: timed out", cm.name)))?
                    .map_err(|e| fail(format!("configmap {:?}: {e}", cm.name)))?;
                let data = found.map(|o| {
                    let binary = o.binary_data.map(|b| b.into_iter().map(|(k, v)| (k, v.0)).collect());
                    volume::config_map_files(o.data.as_ref(), binary.as_ref())
                });
                let what = format!("configmap {:?}", cm.name);
                let optional = cm.optional == Some(true);
                Some(
                    volume::project(&what, data.as_ref(), cm.items.as_deref(), cm.default_mode, optional)
                        .map_err(&fail)?,
                )
            } else if let Some(sec) = &v.secret {
                let name = sec.secret_name.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(self.agent.client.clone(), &ns);
                let found = tokio::time::timeout(GET_TIMEOUT, api.get_opt(&name))
                    .await
                    .map_err(|_| fail(format!("secret {name:?}: timed out")))?
                    .map_err(|e| fail(format!("secret {name:?}: {e}")))?;
                let data = found.map(|o| {
                    o.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect::<std::collections::BTreeMap<_, _>>()
                });
                let what = format!("secret {name:?}");
                let optional = sec.optional == Some(true);
                Some(
                    volume::project(&what, data.as_ref(), sec.items.as_deref(), sec.default_mode, optional)
                        .map_err(&fail)?,
                )
            } else if v.empty_dir.is_some() {
                // World-writable as the kubelet makes it; with fsGroup, the
                // group's and set-gid so new files are the group's too.
                let mode = if fs_group.is_some() { 0o2777 } else { 0o777 };
                std::fs::create_dir_all(&dir)
                    .and_then(|()| std::os::unix::fs::chown(&dir, Some(0), Some(fs_group.unwrap_or(0))))
                    .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)))
                    .map_err(|e| fail(format!("emptyDir {}: {e}", dir.display())))?;
                None
            } else {
                return Err(fail(
                    "volume type not supported by the node agent (configMap, secret, emptyDir are)".into(),
                ));
            };
            if let Some(files) = files {
                volume::write_files(&dir, &files, (uid, gid)).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
            }
            let mut src = dir.clone();
            if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                volume::check_relative(sub).map_err(&fail)?;
                src = dir.join(sub);
                if std::fs::symlink_metadata(&src).is_err() {
                    if v.empty_dir.is_none() {
                        return Err(fail(format!("subPath {sub:?} is not in the volume")));
                    }
                    std::fs::create_dir_all(&src)
                        .and_then(|()| std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o777)))
                        .map_err(|e| fail(format!("subPath {sub:?}: {e}")))?;
                }
            }
            let dst = PathBuf::from(&vm.mount_path);
            if !dst.is_absolute() {
                return Err(fail(format!("mountPath {:?} is not absolute", vm.mount_path)));
            }
            volume::ensure_mount_point(&dst, src.is_file(), &mut self.mount_points)
                .map_err(|e| fail(format!("mount point {}: {e}", dst.display())))?;
            out.push(Mount {
                src,
                dst,
                read_only: vm.read_only == Some(true) || v.config_map.is_some() || v.secret.is_some(),
            });
        }
        Ok(out)
    }

    /// The container's environment, in order: literal values and `valueFrom`
    /// (downward API fields, ConfigMap and Secret keys), each value with
    /// `$(VAR)` expanded against the ones before it.
    async fn env(&self, pod: &Pod, c: &Container) -> Result<Vec<(String, String)>, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut out: Vec<(String, String)> = Vec::new();
        if self.agent.apiserver.is_some() {
            // As the kubelet sets them for the `kubernetes` Service, here
            // pointing at the pod's own loopback forward.
            let port = APISERVER_PORT.to_string();
            let url = format!("tcp://127.0.0.1:{port}");
            for (k, v) in [
                ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
                ("KUBERNETES_SERVICE_PORT", port.as_str()),
                ("KUBERNETES_SERVICE_PORT_HTTPS", port.as_str()),
                ("KUBERNETES_PORT", url.as_str()),
                (&format!("KUBERNETES_PORT_{port}_TCP"), url.as_str()),
                (&format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp"),
                (&format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.as_str()),
                (&format!("KUBERNETES_PORT_{port}_TCP_ADDR"), "127.0.0.1"),
            ] {
                out.push((k.to_owned(), v.to_owned()));
            }
        }
        for e in c.env.iter().flatten() {
            let value = if let Some(v) = &e.value {
                let lookup = |k: &str| out.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                spec::expand(v, lookup)
            } else if let Some(from) = &e.value_from {
                if let Some(f) = &from.field_ref {
                    self.field(pod, &f.field_path)
                        .ok_or_else(|| format!("env {}: unsupported fieldRef {}", e.name, f.field_path))?
                } else if let Some(k) = &from.config_map_key_ref {
                    let api: Api<ConfigMap> = Api::namespaced(self.agent.client.clone(), &ns);
                    let found = api.get_opt(&k.name).await.map_err(|x| x.to_string())?;
                    match found.and_then(|cm| cm.data.and_then(|d| d.get(&k.key).cloned())) {
                        Some(v) => v,
                        None if k.optional == Some(true) => continue,
                        None => return Err(format!("configmap {:?} key {:?} not found", k.name, k.key)),
                    }
                } else if let Some(k) = &from.secret_key_ref {
                    let api: Api<Secret> = Api::namespaced(self.agent.client.clone(), &ns);
                    let found = api.get_opt(&k.name).await.map_err(|x| x.to_string())?;
                    match found.and_then(|s| s.data.and_then(|d| d.get(&k.key).cloned())) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if k.optional == Some(true) => continue,
                        None => return Err(format!("secret {:?} key {:?} not found", k.name, k.key)),
                    }
                } else {
                    return Err(format!("env {}: unsupported valueFrom (resourceFieldRef)", e.name));
                }
            } else {
                String::new()
            };
            out.push((e.name.clone(), value));
        }
        Ok(out)
    }

    /// A downward-API field.
    fn field(&self, pod: &Pod, path: &str) -> Option<String> {
        let m = &pod.metadata;
        let spec = pod.spec.clone().unwrap_or_default();
        let keyed = |prefix: &str, map: &Option<std::collections::BTreeMap<String, String>>| {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            Some(map.as_ref().and_then(|m| m.get(key).cloned()).unwrap_or_default())
        };
        Some(match path {
            "metadata.name" => m.name.clone().unwrap_or_default(),
            "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
            "metadata.uid" => m.uid.clone().unwrap_or_default(),
            "spec.nodeName" => self.agent.args.node.clone(),
            "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
            "status.podIP" | "status.podIPs" => self.net.pod_ip.to_string(),
            "status.hostIP" | "status.hostIPs" => self.agent.args.node_ip.to_string(),
            _ => {
                return keyed("metadata.labels['", &m.labels)
                    .or_else(|| keyed("metadata.annotations['", &m.annotations))
            }
        })
    }

    /// Writes `token` (TokenRequest, bound to the pod), `ca.crt` and
    /// `namespace` into the folder bound at [`SA_DIR`].
    async fn write_sa_files(&self, pod: &Pod) -> Result<(), String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let sa = spec
            .service_account_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(self.agent.client.clone(), &ns);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                // Empty: the apiserver's own audiences, as the kubelet asks
                // for the token it mounts.
                audiences: None,
                expiration_seconds: Some(TOKEN_SECONDS),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let token = api
            .create_token_request(&sa, &PostParams::default(), &req)
            .await
            .map_err(|e| format!("TokenRequest for serviceaccount {ns}/{sa}: {e}"))?
            .status
            .and_then(|s| s.token)
            .ok_or("TokenRequest gave no token")?;
        let cms: Api<ConfigMap> = Api::namespaced(self.agent.client.clone(), &ns);
        let ca = match cms.get_opt("kube-root-ca.crt").await {
            Ok(Some(cm)) => cm.data.and_then(|d| d.get("ca.crt").cloned()),
            _ => None,
        }
        .unwrap_or_else(|| self.agent.ca_pem.clone());
        let dir = self.dir.join("serviceaccount");
        // Written aside and renamed, so a reader never sees half a token.
        for (file, text) in [
            ("token", token.as_str()),
            ("ca.crt", ca.as_str()),
            ("namespace", ns.as_str()),
        ] {
            let tmp = dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, dir.join(file)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Starts due probe attempts and applies finished ones.
    async fn probes(&mut self, pod: &Pod, i: usize, c: &Container, grace: Duration) {
        if self.ctrs[i].child.is_none() {
            return;
        }
        let ip = self.net.pod_ip;
        let now = Instant::now();
        if self.ctrs[i].kill_at.is_some() {
            // Stopping: only readiness still counts (it drops as the
            // process drains), as the kubelet keeps probing it.
            if let Some(p) = &c.readiness_probe {
                if let Some(ok) = step(&mut self.ctrs[i].readiness, p, c, ip, now).await {
                    self.ctrs[i].ready = ok;
                }
            }
            return;
        }
        // Startup first: the others wait until it has passed.
        if !self.ctrs[i].started {
            match &c.startup_probe {
                None => self.ctrs[i].started = true,
                Some(p) => {
                    if let Some(ok) = step(&mut self.ctrs[i].startup, p, c, ip, now).await {
                        if ok {
                            self.ctrs[i].started = true;
                        } else {
                            self.fail_probe(pod, i, c, "Startup", grace).await;
                            return;
                        }
                    }
                }
            }
            if !self.ctrs[i].started {
                return;
            }
        }
        match &c.readiness_probe {
            None => self.ctrs[i].ready = true,
            Some(p) => {
                if let Some(ok) = step(&mut self.ctrs[i].readiness, p, c, ip, now).await {
                    self.ctrs[i].ready = ok;
                    if !ok {
                        self.event(
                            pod,
                            "Warning",
                            "Unhealthy",
                            &format!("Readiness probe failed ({})", c.name),
                        )
                        .await;
                    }
                }
            }
        }
        if let Some(p) = &c.liveness_probe {
            if step(&mut self.ctrs[i].liveness, p, c, ip, now).await == Some(false) {
                self.fail_probe(pod, i, c, "Liveness", grace).await;
            }
        }
    }

    async fn fail_probe(&mut self, pod: &Pod, i: usize, c: &Container, kind: &str, grace: Duration) {
        let msg = format!(
            "Container {} failed {} probe, will be restarted",
            c.name,
            kind.to_lowercase()
        );
        self.event(pod, "Warning", "Unhealthy", &msg).await;
        self.signal(i, libc::SIGTERM);
        self.ctrs[i].kill_at = Some(Instant::now() + grace);
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(pid) = self.ctrs[i].pid {
            // SAFETY: a plain kill(2) on our own child, which has not been reaped.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// SIGTERM to every container, SIGKILL to what is left after `grace`,
    /// and waits for them.
    async fn stop_all(&mut self, grace: Duration) {
        for i in 0..self.ctrs.len() {
            self.signal(i, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        for ctr in &mut self.ctrs {
            let Some(child) = ctr.child.as_mut() else { continue };
            let status = match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(status) => status.ok(),
                Err(_) => {
                    let _ = child.start_kill();
                    tokio::time::timeout(Duration::from_secs(5), child.wait())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
            };
            if let Some(status) = status {
                use std::os::unix::process::ExitStatusExt;
                let code = status.code().unwrap_or(128 + status.signal().unwrap_or(0));
                info!(pid = ?ctr.pid, code, "container exited on stop");
            }
            ctr.child = None;
            ctr.pid = None;
        }
    }

    /// Graceful deletion begins: SIGTERM to every container, SIGKILL at the
    /// end of the grace period, no more restarts. The pod keeps being
    /// probed and reported until its processes are gone; then the object is
    /// removed (grace 0, this pod's uid only), as the kubelet does.
    async fn begin_termination(&mut self, pod: &Pod) {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0) as u64;
        let name = pod.metadata.name.clone().unwrap_or_default();
        info!(%name, grace, "pod deleted: stopping containers");
        self.event(pod, "Normal", "Killing", "Stopping containers").await;
        self.terminating = true;
        let deadline = Instant::now() + Duration::from_secs(grace);
        for i in 0..self.ctrs.len() {
            self.ctrs[i].done = true;
            if self.ctrs[i].child.is_some() {
                self.signal(i, libc::SIGTERM);
                self.ctrs[i].kill_at = Some(deadline);
            }
        }
    }

    /// Patches the pod's status when it changed.
    async fn report(&mut self, pod: &Pod, containers: &[Container], policy: &str) {
        let now = now_rfc3339();
        let mut statuses = Vec::new();
        for (i, c) in containers.iter().enumerate() {
            let ctr = &self.ctrs[i];
            let state = if ctr.child.is_some() {
                json!({"running": {"startedAt": ctr.started_at}})
            } else if let Some((reason, message)) = &ctr.waiting {
                json!({"waiting": {"reason": reason, "message": message}})
            } else if let Some((_, term)) = &ctr.last_exit {
                json!({ "terminated": term })
            } else {
                json!({"waiting": {"reason": "ContainerCreating"}})
            };
            let mut s = json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": ctr.ready && ctr.child.is_some(),
                "started": ctr.started && ctr.child.is_some(),
                "restartCount": ctr.restarts,
                "state": state,
            });
            if let Some(pid) = ctr.pid {
                s["containerID"] = json!(format!("ssegate-node-agent://{pid}"));
            }
            if let (Some((_, term)), true) = (&ctr.last_exit, ctr.child.is_some() || ctr.waiting.is_some()) {
                s["lastState"] = json!({ "terminated": term });
            }
            statuses.push(s);
        }
        let running = self
            .ctrs
            .iter()
            .any(|c| c.child.is_some() || (c.last_exit.is_some() && !c.done));
        let all_done = !self.ctrs.is_empty() && self.ctrs.iter().all(|c| c.done && c.child.is_none());
        let phase = if all_done {
            let failed = self
                .ctrs
                .iter()
                .any(|c| c.last_exit.as_ref().is_some_and(|(code, _)| *code != 0));
            // A deleted pod ends Failed when a container did not exit 0.
            if failed && (policy != "Always" || self.terminating) {
                "Failed"
            } else {
                "Succeeded"
            }
        } else if running {
            "Running"
        } else {
            "Pending"
        };
        let ready = !self.ctrs.is_empty() && self.ctrs.iter().all(|c| c.ready && c.child.is_some());
        let mut conditions = Vec::new();
        for (ty, ok) in [
            ("PodScheduled", true),
            ("Initialized", true),
            ("ContainersReady", ready),
            ("Ready", ready),
        ] {
            let entry = self.conditions.entry(ty).or_insert((ok, now.clone()));
            if entry.0 != ok {
                *entry = (ok, now.clone());
            }
            conditions.push(json!({
                "type": ty,
                "status": if ok { "True" } else { "False" },
                "lastTransitionTime": entry.1,
            }));
        }
        let ip = self.net.pod_ip.to_string();
        let host = self.agent.args.node_ip.to_string();
        let status = json!({
            "phase": phase,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": host,
            "hostIPs": [{"ip": host}],
            "startTime": self.start_time,
            "conditions": conditions,
            "containerStatuses": statuses,
        });
        if status == self.last_status {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.agent.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let patch = json!({ "status": status });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last_status = status,
            Err(e) => warn!(%name, "status patch: {e}"),
        }
    }

    /// A core/v1 Event about the pod, as the kubelet writes them.
    async fn event(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        if kind == "Warning" {
            warn!(pod = ?pod.metadata.name, reason, message);
        }
        self.agent.event(pod, kind, reason, message).await;
    }
}

/// Removes the object once nothing runs (grace 0, this pod's uid only), as
/// the kubelet does at the end of a graceful deletion.
async fn final_delete(agent: &Agent, pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(
        agent.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    if let Err(e) = api.delete(&name, &dp).await {
        warn!(%name, "final delete: {e}");
    }
}

/// One probe's schedule: starts an attempt when due and returns a changed
/// verdict when a finished attempt crosses a threshold.
async fn step(run: &mut ProbeRun, p: &Probe, c: &Container, ip: std::net::Ipv4Addr, now: Instant) -> Option<bool> {
    let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
    if run.next.is_none() {
        run.next = Some(now + Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64));
    }
    let mut changed = None;
    if run.running.as_ref().is_some_and(JoinHandle::is_finished) {
        let ok = run.running.take().expect("finished").await.unwrap_or(false);
        changed = run.tally.record(
            ok,
            p.success_threshold.unwrap_or(1).max(1) as u32,
            p.failure_threshold.unwrap_or(3).max(1) as u32,
        );
    }
    if run.running.is_none() && run.next.is_some_and(|t| now >= t) {
        let check = Check::from_probe(p, c, ip);
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
        run.running = Some(tokio::spawn(async move { check.run(timeout).await }));
        run.next = Some(now + period);
    }
    changed
}
