//! Golden tests of the pod lifecycle, kwok-style: each `tests/data/lifecycle/<case>.input.yaml`
//! holds a Pod, the objects that exist and the moments the hollow kubelet looks at the pod; the
//! test runs `pod_status::evaluate` at each moment (applying the status it writes, as the API
//! would) and compares what it wrote, recorded and decided with `<case>.output.yaml`.
//!
//! `UPDATE_GOLDEN=1 cargo test -p hollow-node --test lifecycle_golden` rewrites the outputs;
//! review the diff against the kubelet's behaviour before committing it.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hollow_node::pod_status::{ObjRef, PodContext, PodSettings, RefState, evaluate, has_key};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    /// What the case shows (copied to the output for the reviewer).
    description: String,
    pod: Pod,
    /// Objects that exist from the start, as `Secret/name`, `ConfigMap/name`, `Pvc/name`
    /// (a PVC that exists but is not bound: `unbound:Pvc/name`; a Secret or ConfigMap with
    /// exactly these keys: `Secret/name:key1,key2`, else it has every key asked for).
    #[serde(default)]
    present: Vec<String>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Step {
    /// RFC 3339.
    now: String,
    /// Objects that appear at this step (and stay), replacing the same object's entry.
    #[serde(default)]
    appear: Vec<String>,
    /// The pod is deleted through the API at this step with this grace period.
    #[serde(default)]
    delete_grace_period_seconds: Option<i64>,
}

#[derive(Serialize, PartialEq)]
struct Output {
    description: String,
    steps: Vec<StepOutput>,
}

#[derive(Serialize, PartialEq)]
struct StepOutput {
    now: String,
    /// The status written, or none when the pod's status already says it all.
    write: Option<PodStatus>,
    events: Vec<EventOutput>,
    requeue: Option<String>,
    delete: bool,
}

#[derive(Serialize, PartialEq)]
struct EventOutput {
    #[serde(rename = "type")]
    type_: &'static str,
    reason: &'static str,
    action: &'static str,
    message: String,
}

fn lookup(present: &HashSet<String>, r: &ObjRef) -> RefState {
    let key = format!("{:?}/{}", r.kind, r.name);
    let with_keys = present
        .iter()
        .find_map(|p| p.strip_prefix(&format!("{key}:")));
    if let Some(keys) = with_keys {
        let keys: Vec<&str> = keys.split(',').collect();
        let has = |k: &str| keys.contains(&k);
        if has_key(r, &has, &|_| false) {
            RefState::Present
        } else {
            RefState::MissingKey
        }
    } else if present.contains(&key) {
        RefState::Present
    } else if present.contains(&format!("unbound:{key}")) {
        RefState::NotBound("Pending".into())
    } else {
        RefState::Missing
    }
}

fn run(input: Input) -> Output {
    let mut pod = input.pod;
    let mut present: HashSet<String> = input.present.into_iter().collect();
    let mut steps = Vec::new();
    for step in input.steps {
        let now: jiff::Timestamp = step
            .now
            .parse()
            .unwrap_or_else(|e| panic!("now {:?}: {e}", step.now));
        for appeared in step.appear {
            // An object that appears replaces what was there (its keys change).
            let object = appeared.split(':').next().unwrap_or_default().to_string();
            present.retain(|p| p.split(':').next() != Some(object.as_str()));
            present.insert(appeared);
        }
        if let Some(grace) = step.delete_grace_period_seconds {
            // The apiserver sets deletionTimestamp to now + grace.
            let at = now + jiff::SignedDuration::from_secs(grace);
            pod.metadata.deletion_timestamp = Some(Time(at));
            pod.metadata.deletion_grace_period_seconds = Some(grace);
        }
        let find = |r: &ObjRef| lookup(&present, r);
        let o = evaluate(
            &pod,
            &PodContext {
                now,
                host_ip: "172.18.0.2",
                pod_ip: Some(Ipv4Addr::new(10, 128, 0, 2)),
                settings: PodSettings::default(),
                lookup: &find,
            },
        );
        if let Some(s) = &o.status {
            pod.status = Some(s.clone());
        }
        steps.push(StepOutput {
            now: now.to_string(),
            write: o.status,
            events: o
                .events
                .iter()
                .map(|e| EventOutput {
                    type_: if e.kind.warning() {
                        "Warning"
                    } else {
                        "Normal"
                    },
                    reason: e.kind.reason(),
                    action: e.kind.action(),
                    message: e.message.clone(),
                })
                .collect(),
            requeue: o.requeue.map(|d: Duration| format!("{d:?}")),
            delete: o.delete,
        });
    }
    Output {
        description: input.description,
        steps,
    }
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lifecycle");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/data/lifecycle")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".input.yaml"))
        .collect();
    out.sort();
    out
}

#[test]
fn lifecycle_golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let inputs = cases();
    assert!(inputs.len() >= 7, "golden cases found: {inputs:?}");
    let mut failed = Vec::new();
    for input_path in inputs {
        let name = input_path.to_string_lossy().replace(".input.yaml", "");
        let output_path = PathBuf::from(format!("{name}.output.yaml"));
        let text = std::fs::read_to_string(&input_path).expect("read input");
        let input: Input =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", input_path.display()));
        let got = serde_yaml::to_string(&run(input)).expect("serialize output");
        if update {
            std::fs::write(&output_path, &got).expect("write output");
            continue;
        }
        match std::fs::read_to_string(&output_path) {
            Ok(want) if want == got => {}
            Ok(want) => {
                let line = want
                    .lines()
                    .zip(got.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(want.lines().count().min(got.lines().count()));
                failed.push(format!(
                    "{}: differs from line {}: want {:?}, got {:?}",
                    output_path.display(),
                    line + 1,
                    want.lines().nth(line),
                    got.lines().nth(line)
                ));
            }
            Err(e) => failed.push(format!("{}: {e}", output_path.display())),
        }
    }
    assert!(
        failed.is_empty(),
        "golden outputs differ (UPDATE_GOLDEN=1 rewrites them; review the diff):\n{}",
        failed.join("\n")
    );
}
