//! Pod volumes: `configMap`, `secret` and `emptyDir`, mounted at each
//! container's `volumeMounts[].mountPath` in the container's private mount
//! namespace (the one where the service-account folder is bound at
//! [`crate::pod::SA_DIR`]); the host's own mounts are never touched.
//!
//! - ConfigMap and Secret files are written under the pod's folder
//!   (`<root-dir>/pods/<uid>/volumes/<volume>/`), each aside and renamed into
//!   place, before every container start, and bound read-only (as the
//!   kubelet mounts them). `items` (key → relative path, `mode`),
//!   `defaultMode` (0644 by default) and `optional` are honoured; a missing
//!   non-optional ConfigMap, Secret or key fails the container's start with
//!   a `FailedMount` Event, and the start is retried.
//! - An `emptyDir` is a folder of the pod's (mode 0777, as the kubelet makes
//!   it), shared by its containers, removed with the pod; `medium: Memory`
//!   is a plain folder too (no tmpfs).
//! - `readOnly` makes the bind read-only; `subPath` binds that part of the
//!   volume (created as a folder in an emptyDir when missing).
//! - Projected volumes at the service-account path (what the ServiceAccount
//!   admission plugin adds) are the agent's service-account folder already;
//!   any other volume type fails the start with `FailedMount`.
//!
//! Ownership: files belong to the container's `runAsUser` (root otherwise)
//! and to `fsGroup` when given (else `runAsGroup`), so the mode bits given
//! apply to the process that reads them; the kubelet makes them root's and
//! `fsGroup`'s. `fsGroup` and `supplementalGroups` are the process's
//! supplementary groups, as under the kubelet.
//!
//! Mount points: a mount needs its target to exist, and the target is a path
//! of the host's file system (a mount namespace shares it). When it does not
//! exist, the agent creates it (folders, or an empty file for a file bound by
//! `subPath`), remembers what it created, and removes it when the last pod
//! using it ends, only if it is still empty. It never creates what exists.

use k8s_openapi::api::core::v1::KeyToPath;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// The kubelet's default file mode for ConfigMap and Secret volumes.
pub const DEFAULT_MODE: u32 = 0o644;

/// One file of a ConfigMap or Secret volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Whether `p` is a relative path that stays inside its volume (no `..`,
/// not absolute, not empty).
pub fn check_relative(p: &str) -> Result<(), String> {
    let path = Path::new(p);
    if p.is_empty() || path.is_absolute() {
        return Err(format!("path {p:?} must be relative and not empty"));
    }
    if path.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("path {p:?} must not contain '..' or '.'"));
    }
    Ok(())
}

/// The files of a ConfigMap or Secret volume from the object's data (`None`:
/// the object does not exist): every key, or the listed `items`, with their
/// modes. A missing object or key is an error unless `optional`.
pub fn project(
    what: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Vec<FileSpec>, String> {
    let mode = default_mode.map_or(DEFAULT_MODE, |m| m as u32 & 0o777);
    let Some(data) = data else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(format!("{what} not found"))
        };
    };
    let mut out = Vec::new();
    match items {
        None | Some([]) => {
            for (k, v) in data {
                check_relative(k)?;
                out.push(FileSpec {
                    path: k.clone(),
                    data: v.clone(),
                    mode,
                });
            }
        }
        Some(items) => {
            for item in items {
                check_relative(&item.path)?;
                match data.get(&item.key) {
                    Some(v) => out.push(FileSpec {
                        path: item.path.clone(),
                        data: v.clone(),
                        mode: item.mode.map_or(mode, |m| m as u32 & 0o777),
                    }),
                    None if optional => {}
                    None => return Err(format!("{what}: key {:?} not found", item.key)),
                }
            }
        }
    }
    Ok(out)
}

/// Writes `files` into `dir` (each aside, then renamed, so a reader never
/// sees half a file), owned by `owner` (uid, gid).
pub fn write_files(dir: &Path, files: &[FileSpec], owner: (u32, u32)) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!("..{name}.tmp"));
        std::fs::write(&tmp, &f.data)?;
        std::os::unix::fs::chown(&tmp, Some(owner.0), Some(owner.1))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(f.mode))?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// One bind mount in a container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub read_only: bool,
}

/// Mounts in the order they are made: parents before what they contain
/// (by the number of path components; stable otherwise).
pub fn order(mounts: &mut [Mount]) {
    mounts.sort_by_key(|m| m.dst.components().count());
}

/// Mount points the agent created, with how many pods use each.
static CREATED: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

/// Makes `target` exist as a mount point (a folder, or an empty file when
/// `file`), creating what is missing and counting this pod's use of what
/// the agent created; `held` is what the pod holds already (not counted
/// twice). Released with [`release_mount_points`].
pub fn ensure_mount_point(target: &Path, file: bool, held: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut created = CREATED.lock().expect("mount points");
    let mut chain: Vec<&Path> = target.ancestors().collect();
    chain.reverse();
    for (i, p) in chain.iter().enumerate() {
        let last = i + 1 == chain.len();
        let p = p.to_path_buf();
        if let Some(n) = created.get_mut(&p) {
            if !held.contains(&p) {
                *n += 1;
                held.push(p);
            }
            continue;
        }
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        if last && file {
            std::fs::OpenOptions::new().create_new(true).write(true).open(&p)?;
        } else {
            std::fs::create_dir(&p)?;
        }
        tracing::info!(path = %p.display(), "created a mount point on the host");
        created.insert(p.clone(), 1);
        held.push(p);
    }
    Ok(())
}

/// The pod no longer uses the mount points in `held`: the last user removes
/// each one it created, deepest first, and only when empty.
pub fn release_mount_points(held: &mut Vec<PathBuf>) {
    let mut created = CREATED.lock().expect("mount points");
    held.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in held.drain(..) {
        let Some(n) = created.get_mut(&p) else { continue };
        *n -= 1;
        if *n > 0 {
            continue;
        }
        created.remove(&p);
        let removed = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&p).is_ok(),
            Ok(m) if m.len() == 0 => std::fs::remove_file(&p).is_ok(),
            _ => false,
        };
        if removed {
            tracing::info!(path = %p.display(), "removed a mount point the agent had created");
        } else {
            tracing::warn!(path = %p.display(), "left a mount point the agent had created: not empty");
        }
    }
}

/// ConfigMap data as files: `data` as UTF-8, then `binaryData`.
pub fn config_map_files(
    data: Option<&BTreeMap<String, String>>,
    binary: Option<&BTreeMap<String, Vec<u8>>>,
) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in data.into_iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    for (k, v) in binary.into_iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, Vec<u8>> {
        [("a".to_owned(), b"1".to_vec()), ("b".to_owned(), b"2".to_vec())]
            .into_iter()
            .collect()
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
            ..Default::default()
        }
    }

    #[test]
    fn every_key_with_the_default_mode() {
        let files = project("configmap \"c\"", Some(&data()), None, None, false).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files.iter().all(|f| f.mode == 0o644));
        let files = project("c", Some(&data()), None, Some(0o400), false).unwrap();
        assert!(files.iter().all(|f| f.mode == 0o400));
    }

    #[test]
    fn items_pick_keys_paths_and_modes() {
        let items = [item("b", "sub/two.txt", Some(0o600)), item("a", "one", None)];
        let files = project("c", Some(&data()), Some(&items), Some(0o440), false).unwrap();
        assert_eq!(
            files,
            vec![
                FileSpec {
                    path: "sub/two.txt".into(),
                    data: b"2".to_vec(),
                    mode: 0o600
                },
                FileSpec {
                    path: "one".into(),
                    data: b"1".to_vec(),
                    mode: 0o440
                },
            ]
        );
        let missing = [item("zz", "z", None)];
        assert!(project("c", Some(&data()), Some(&missing), None, false)
            .unwrap_err()
            .contains("\"zz\""));
        assert!(project("c", Some(&data()), Some(&missing), None, true)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn missing_object_unless_optional() {
        assert_eq!(
            project("configmap \"x\"", None, None, None, false).unwrap_err(),
            "configmap \"x\" not found"
        );
        assert!(project("configmap \"x\"", None, None, None, true).unwrap().is_empty());
    }

    #[test]
    fn paths_stay_inside() {
        assert!(check_relative("a/b").is_ok());
        assert!(check_relative("../x").is_err());
        assert!(check_relative("a/../../x").is_err());
        assert!(check_relative("/etc/passwd").is_err());
        assert!(check_relative("").is_err());
        let items = [item("a", "../escape", None)];
        assert!(project("c", Some(&data()), Some(&items), None, false).is_err());
    }

    #[test]
    fn parents_mount_first() {
        let m = |d: &str| Mount {
            src: "/s".into(),
            dst: d.into(),
            read_only: false,
        };
        let mut v = vec![m("/a/b/c"), m("/a"), m("/x/y")];
        order(&mut v);
        let dsts: Vec<_> = v.iter().map(|m| m.dst.display().to_string()).collect();
        assert_eq!(dsts, ["/a", "/x/y", "/a/b/c"]);
    }

    #[test]
    fn created_mount_points_go_when_the_last_pod_ends() {
        let base = std::env::temp_dir().join(format!("sgna-vol-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let target = base.join("x/y");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        ensure_mount_point(&target, false, &mut a).unwrap();
        ensure_mount_point(&target, false, &mut a).unwrap();
        ensure_mount_point(&target, false, &mut b).unwrap();
        assert!(target.is_dir());
        release_mount_points(&mut a);
        assert!(target.is_dir(), "another pod still uses it");
        release_mount_points(&mut b);
        assert!(!base.join("x").exists(), "what the agent created is gone");
        assert!(base.exists(), "what existed stays");
        let file = base.join("f.conf");
        ensure_mount_point(&file, true, &mut a).unwrap();
        assert!(file.is_file());
        release_mount_points(&mut a);
        assert!(!file.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
