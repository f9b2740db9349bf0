//! The HollowNodePool CRD on the real 1.20 apiserver, through the real kubectl: it installs and
//! becomes Established, the example pools in deploy/pools apply and read back as our types
//! with the schema's defaults filled in and pass our validation, `kubectl scale` changes
//! spec.replicas through the scale subresource, the printer columns show, and the schema's
//! bounds refuse a pool of 10,001 nodes.

mod common;

use std::time::Duration;

use hollow_node::pool::{HollowNodePool, validate};
use kube::api::Api;

#[tokio::test(flavor = "multi_thread")]
async fn crd_examples_and_kubectl_scale() {
    let cp = common::apiserver_only().await;
    common::install_crd(&cp).await;

    for file in ["plain", "infra", "gpu", "zones"] {
        let path = common::repo(&format!("deploy/pools/{file}.yaml"));
        let o = common::kubectl(&cp, &["apply", "-f", &path]).await;
        assert!(
            o.status.success(),
            "apply {file}: {}",
            common::output_text(&o)
        );
    }
    let o = common::kubectl(&cp, &["apply", "-k", &common::repo("deploy/pools")]).await;
    assert!(
        o.status.success(),
        "apply examples: {}",
        common::output_text(&o)
    );

    let pools: Api<HollowNodePool> = Api::all(cp.client());
    let listed = e2e::wait_for(Duration::from_secs(30), "four pools listed", || {
        let pools = pools.clone();
        async move {
            let l = pools.list(&Default::default()).await?;
            Ok((l.items.len() == 4).then_some(l.items))
        }
    })
    .await
    .expect("pools");
    for pool in &listed {
        validate(pool.name(), &pool.spec)
            .unwrap_or_else(|e| panic!("{} as stored: {e}", pool.name()));
    }
    let gpu = pools.get("gpu").await.expect("get gpu");
    // Defaults the schema filled in, read back through our types.
    let cases = [
        ("os", gpu.spec.template.os.as_str(), "linux"),
        ("arch", gpu.spec.template.arch.as_str(), "amd64"),
        (
            "fault condition",
            gpu.spec.faults.condition.as_str(),
            "Ready",
        ),
        (
            "unhealthyAfter",
            gpu.spec.faults.unhealthy_after.as_str(),
            "0s",
        ),
        (
            "integer quantity",
            gpu.spec
                .template
                .capacity
                .get("nvidia.com/gpu")
                .map(String::as_str)
                .unwrap_or_default(),
            "8",
        ),
        (
            "instance type",
            gpu.spec.template.instance_type.as_str(),
            "p4d.24xlarge",
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(gpu.spec.replicas, 4);

    let o = common::kubectl(&cp, &["scale", "hollownodepool/gpu", "--replicas=7"]).await;
    assert!(
        o.status.success(),
        "kubectl scale: {}",
        common::output_text(&o)
    );
    let scaled = pools.get("gpu").await.expect("get gpu");
    assert_eq!(scaled.spec.replicas, 7, "kubectl scale sets spec.replicas");
    let o = common::kubectl(&cp, &["get", "hollownodepool/gpu", "-o", "wide"]).await;
    let table = common::output_text(&o);
    assert!(o.status.success(), "kubectl get: {table}");
    for column in ["DESIRED", "REGISTERED", "READY", "PAUSED", "AGE"] {
        assert!(table.contains(column), "column {column}: {table}");
    }
    assert!(
        table.lines().nth(1).is_some_and(|l| l.contains(" 7 ")),
        "{table}"
    );

    // The schema's bound: refused by the apiserver, nothing stored.
    let o = common::kubectl(&cp, &["scale", "hollownodepool/gpu", "--replicas=10001"]).await;
    assert!(
        !o.status.success(),
        "10,001 replicas accepted: {}",
        common::output_text(&o)
    );
    assert!(
        common::output_text(&o).contains("10000"),
        "{}",
        common::output_text(&o)
    );
    let kept = pools.get("gpu").await.expect("get gpu");
    assert_eq!(kept.spec.replicas, 7);
    let o = common::kubectl(
        &cp,
        &[
            "patch",
            "hollownodepool/gpu",
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"taints":[{"key":"k","effect":"Sometimes"}]}}}"#,
        ],
    )
    .await;
    assert!(
        !o.status.success(),
        "bad taint effect accepted: {}",
        common::output_text(&o)
    );
}
