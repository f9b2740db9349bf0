//! `make sandbox` in its non-interactive mode: start everything, apply the demonstration, and
//! check the facts of its summary, in both placement modes (`make sandbox PLACEMENT=affinity`).
//! The services run under deploy/'s RBAC (the overlay of each mode) and the apiserver's audit
//! log must show none of their requests refused: the demonstration's half of least privilege
//! (`least_privilege.rs` proves the other half, that every grant is used).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn sandbox_demonstration_holds() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_mock-kind-sandbox"));
    let bin_dir = exe.parent().expect("bin dir").to_path_buf();
    for svc in ["mock-kind-scheduler", "mock-kind-webhook", "hollow-node"] {
        assert!(
            bin_dir.join(svc).is_file(),
            "{svc} is not built in {}: run `cargo build --workspace --bins` (make test does)",
            bin_dir.display()
        );
    }
    for placement in ["extender", "affinity"] {
        demonstration_holds(&exe, &bin_dir, placement);
    }
}

fn demonstration_holds(exe: &std::path::Path, bin_dir: &std::path::Path, placement: &str) {
    let out = Command::new(exe)
        .args(["--placement", placement])
        .args([
            "--once",
            "--nodes",
            "20",
            "--replicas",
            "60",
            "--timeout",
            "240",
        ])
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .expect("run sandbox");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{placement}: sandbox failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let facts = [
        "20/20 hollow nodes Ready",
        "1 real node Ready",
        "60/60 pods of deployment demo-operator/example-operator Running: 60 on hollow nodes",
        "0 on real nodes",
        "openshift.io/sa.scc.uid-range=",
        "matches spoofed_excluded_pods \"^metrics-\": on node real-0 (a real node), Running",
        "demo-plain/plain-web (namespace not spoofed): on node real-0 (a real node), Running",
        "started on hollow node hollow-",
        "metrics.k8s.io lists 20 nodes (kubectl top nodes)",
        "RBAC: ",
        "requests of mock-kind's ServiceAccounts, 0 refused",
        "all as expected",
    ];
    for fact in facts {
        assert!(
            stdout.contains(fact),
            "{placement}: summary lacks {fact:?}:\n{stdout}\nstderr:\n{stderr}"
        );
    }
}
