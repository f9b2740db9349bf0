//! Where the Kubernetes binaries come from: `KUBE_BIN_DIR`, or the cached build made by
//! `e2e/scripts/kube-bins.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::Error;

/// The binaries the harness starts; `kube-bins.sh` checks the same list.
pub const BINARIES: [&str; 5] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubemark",
    "etcd",
];

/// The repository root (the workspace that holds this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The directory holding [`BINARIES`]. `KUBE_BIN_DIR` wins when complete; otherwise the script
/// provides the cached build (building it on first use, which takes minutes and shows progress).
/// Resolved once per process.
pub fn bin_dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(resolve).clone().map_err(Error::Binaries)
}

fn resolve() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("KUBE_BIN_DIR") {
        let dir = PathBuf::from(dir);
        return match missing_in(&dir) {
            None => Ok(dir),
            Some(name) => Err(format!(
                "KUBE_BIN_DIR={} has no executable {name}",
                dir.display()
            )),
        };
    }
    let script = workspace_root().join("e2e/scripts/kube-bins.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    match missing_in(&dir) {
        None => Ok(dir),
        Some(name) => Err(format!(
            "{} reported {} but it has no {name}",
            script.display(),
            dir.display()
        )),
    }
}

fn missing_in(dir: &Path) -> Option<&'static str> {
    BINARIES
        .into_iter()
        .find(|name| !is_executable(&dir.join(name)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The directory of mock-kind's own binaries (mock-kind-scheduler, mock-kind-webhook,
/// hollow-node, ...) for the running test: built once per process as `make test` builds them
/// before testing (`cargo build --workspace --bins`: a no-op there, and the same features, so
/// nothing is built twice), into the test's own target directory and profile.
pub fn workspace_binaries() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(build_workspace_binaries)
        .clone()
        .map_err(Error::Binaries)
}

fn build_workspace_binaries() -> Result<PathBuf, String> {
    // A test runs from <target>/<profile>/deps/.
    let exe = std::env::current_exe().map_err(|e| format!("the test executable: {e}"))?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in <target>/<profile>/deps", exe.display()))?
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "--workspace", "--bins"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --workspace --bins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_the_first_absent_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(missing_in(dir.path()), Some("kube-apiserver"));
        for name in BINARIES {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").expect("write");
            if name == "kubemark" {
                continue; // left without the executable bit
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        assert_eq!(missing_in(dir.path()), Some("kubemark"));
    }
}
