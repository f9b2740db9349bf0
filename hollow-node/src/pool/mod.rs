//! `HollowNodePool`: node shapes declared as a cluster-scoped resource. `spec` holds the types,
//! `validate` what a pool must satisfy, `plan` the Nodes a valid pool stands for; all pure.

pub mod converge;
pub mod finalizer;
pub mod manifests;
pub mod members;
pub mod membership;
pub mod mirror;
pub mod names;
pub mod plan;
pub mod reconcile;
pub mod spec;
pub mod status;
pub mod validate;

pub use plan::{NodePlan, node_name};
pub use spec::{
    HollowNodePool, POOL_LABEL, PoolFaults, PoolSpec, PoolStatus, PoolTaint, PoolTemplate,
};
pub use validate::{PoolError, ValidPool, validate};

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn deploy(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(rel)
    }

    #[test]
    fn example_pools_decode_and_validate() {
        let dir = deploy("pools");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("deploy/pools") {
            let path = entry.expect("entry").path();
            let file = path
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or_default();
            if !file.ends_with(".yaml") || file == "kustomization.yaml" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let pool: HollowNodePool = serde_yaml::from_str(&text).expect(file);
            let valid = validate(pool.name(), &pool.spec).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(valid.replicas > 0, "{file}: an example has nodes");
            names.push(pool.name().to_string());
        }
        names.sort();
        assert_eq!(names, ["gpu", "infra", "plain", "zonal"]);
    }

    /// The CRD's schema defaults are the types' (a pool applied without a field and one
    /// decoded without it mean the same).
    #[test]
    fn crd_defaults_match_the_types() {
        let text = std::fs::read_to_string(deploy("base/crd-hollownodepools.yaml")).expect("crd");
        let crd: serde_json::Value = serde_yaml::from_str(&text).expect("yaml");
        let spec = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties";
        let default = |path: &str| {
            crd.pointer(&format!("{spec}/{path}/default"))
                .cloned()
                .unwrap_or_else(|| panic!("no default at {path}"))
        };
        let types = serde_json::to_value(PoolSpec::default()).expect("json");
        for path in [
            "template/properties/os",
            "template/properties/arch",
            "template/properties/instanceType",
            "faults/properties/unhealthyAfter",
            "faults/properties/unhealthyDuration",
            "faults/properties/healthyDuration",
            "faults/properties/flapping",
            "faults/properties/condition",
            "paused",
            "replicas",
        ] {
            let pointer = format!("/{}", path.replace("/properties", ""));
            assert_eq!(Some(&default(path)), types.pointer(&pointer), "{path}");
        }
        let max = crd
            .pointer(&format!("{spec}/replicas/maximum"))
            .and_then(serde_json::Value::as_i64);
        assert_eq!(max, Some(validate::MAX_REPLICAS));
    }
}
