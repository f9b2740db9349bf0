//! e2e/scripts/kube-bins.sh: a complete KUBE_BIN_DIR or cache is used as it is; an incomplete or
//! damaged one is named and rebuilt (here, on a PATH without apt-get, refused with a clear error).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const BINARIES: [&str; 5] = e2e::bins::BINARIES;

fn fake_binaries(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for b in BINARIES {
        let p = dir.join(b);
        std::fs::write(&p, "#!/bin/sh\necho fake v1.20.2\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// A PATH holding the tools the script uses, but not apt-get: a rebuild stops at once.
fn path_without_apt(dir: &Path) -> String {
    std::fs::create_dir_all(dir).expect("mkdir");
    for tool in [
        "bash",
        "sha256sum",
        "id",
        "flock",
        "mkdir",
        "rm",
        "sed",
        "cat",
        "env",
        "sh",
        "printf",
        "echo",
    ] {
        for base in ["/usr/bin", "/bin"] {
            let src = Path::new(base).join(tool);
            if src.exists() {
                let _ = std::os::unix::fs::symlink(&src, dir.join(tool));
                break;
            }
        }
    }
    dir.display().to_string()
}

fn run(envs: &[(&str, String)], path: Option<String>) -> Output {
    let script = e2e::workspace_root().join("e2e/scripts/kube-bins.sh");
    let mut cmd = Command::new("/bin/bash");
    cmd.arg(script).env_remove("KUBE_BIN_DIR");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    cmd.output().expect("run kube-bins.sh")
}

#[test]
fn kube_bin_dir_is_used_when_complete_and_named_when_not() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = tmp.path().join("good");
    fake_binaries(&good);
    let out = run(&[("KUBE_BIN_DIR", good.display().to_string())], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        good.display().to_string()
    );

    std::fs::remove_file(good.join("kubemark")).expect("rm");
    let out = run(&[("KUBE_BIN_DIR", good.display().to_string())], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("kubemark") && err.contains("KUBE_BIN_DIR"),
        "{err}"
    );
}

#[test]
fn cache_is_checked_against_its_stamp() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("cache");
    let bin = cache.join("kube-1.20.2/bin");
    fake_binaries(&bin);
    let stamp = Command::new("sha256sum")
        .args(BINARIES)
        .current_dir(&bin)
        .output()
        .expect("sha256sum");
    std::fs::write(bin.join(".complete"), &stamp.stdout).expect("stamp");
    let no_apt = path_without_apt(&tmp.path().join("path"));
    let env = [("MOCK_KIND_CACHE", cache.display().to_string())];

    let out = run(&env, Some(no_apt.clone()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        bin.display().to_string()
    );

    // A binary changed after the build (a truncated copy, say) no longer matches the stamp.
    std::fs::write(bin.join("etcd"), "#!/bin/sh\necho truncated\n").expect("damage");
    let out = run(&env, Some(no_apt));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "damaged cache accepted");
    assert!(err.contains("incomplete or damaged"), "{err}");
    assert!(
        err.contains("no apt-get") || err.contains("needs root"),
        "{err}"
    );
}
