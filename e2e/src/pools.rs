//! HollowNodePools on the harness's control plane, with the real kubectl as a user would:
//! the CRD of deploy/base installed and Established, then pools applied.

use std::process::Command;

use serde_json::Value;

use crate::bins::workspace_root;
use crate::deploy_rbac::kubectl;
use crate::{ControlPlane, Error};

fn admin(cp: &ControlPlane) -> Command {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig").arg(cp.kubeconfig());
    c
}

/// `kubectl apply` of deploy/base/crd-hollownodepools.yaml, then waits until it is Established.
pub fn install_crd(cp: &ControlPlane) -> Result<(), Error> {
    let crd = workspace_root().join("deploy/base/crd-hollownodepools.yaml");
    kubectl(admin(cp).arg("apply").arg("-f").arg(&crd), None)?;
    kubectl(
        admin(cp).args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/hollownodepools.mock-kind.io",
        ]),
        None,
    )?;
    Ok(())
}

/// `kubectl apply` of one object (a HollowNodePool) given as JSON.
pub fn apply(cp: &ControlPlane, object: &Value) -> Result<(), Error> {
    kubectl(
        admin(cp).args(["apply", "-f", "-"]),
        Some(&object.to_string()),
    )?;
    Ok(())
}
