//! Jobs whose pods fail, on hollow nodes against the real Job controller: under restartPolicy
//! Never each scripted failure (`delayFailed`) is a Failed pod and the controller gives up with
//! `BackoffLimitExceeded` once more pods failed than `backoffLimit`; under OnFailure the kubelet
//! restarts the container in place and the controller counts its restarts instead.

mod common;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

fn failing_job(name: &str, policy: &str, backoff_limit: i32) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"backoffLimit": backoff_limit, "template": {
            "metadata": {"annotations": {"mock-kind.io/delayFailed": "1s"}},
            "spec": {"restartPolicy": policy, "automountServiceAccountToken": false,
                "containers": [{"name": "work", "image": "busybox"}]}}}
    }))
    .expect("job")
}

/// The Job's Failed condition, once the controller set it: (status, reason).
fn failed_condition(job: &Job) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed")
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

async fn wait_job_failed(jobs: &Api<Job>, name: &str) -> Job {
    e2e::wait_for(
        Duration::from_secs(120),
        &format!("job {name} Failed"),
        || async {
            let job = jobs.get(name).await?;
            Ok(failed_condition(&job).is_some().then_some(job))
        },
    )
    .await
    .expect("job failed")
}

async fn job_pods(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .expect("list job pods")
        .items
}

fn terminated_error(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref()?.terminated.as_ref())
        .is_some_and(|t| t.reason.as_deref() == Some("Error") && t.exit_code == 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn job_backoff_limit_on_failing_pods() {
    let (cp, hollow) = common::cluster("hn-jobs", 2, "jobs").await;
    let client = cp.client();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "jobs");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "jobs");
    for job in [
        failing_job("never", "Never", 2),
        failing_job("onfailure", "OnFailure", 1),
    ] {
        jobs.create(&Default::default(), &job)
            .await
            .expect("create job");
    }

    // Never: the controller starts a new pod after each failure (its own back-off) and gives up
    // after backoffLimit + 1 failed pods.
    let job = wait_job_failed(&jobs, "never").await;
    assert_eq!(
        failed_condition(&job),
        Some(("True".into(), "BackoffLimitExceeded".into()))
    );
    let status = job.status.as_ref().expect("job status");
    // 1.20's controller counts failures by its own requeues, so a busy controller may start
    // one pod past the limit before it notices; fewer than backoffLimit + 1 would be our bug.
    let failed_count = status.failed.unwrap_or(0);
    assert!((3..=4).contains(&failed_count), "never: {status:?}");
    assert_eq!(status.succeeded.unwrap_or(0), 0);
    let failed: Vec<Pod> = job_pods(&pods, "never")
        .await
        .into_iter()
        .filter(|p| common::phase(p) == "Failed")
        .collect();
    assert_eq!(
        failed.len() as i32,
        failed_count,
        "never: one Failed pod per counted failure"
    );
    assert!(
        failed.iter().all(terminated_error),
        "never: every pod's container terminated with Error 1"
    );

    // OnFailure: one pod, its container restarted by the kubelet; the controller fails the Job
    // when the restarts reach backoffLimit and deletes the pod.
    let job = wait_job_failed(&jobs, "onfailure").await;
    assert_eq!(
        failed_condition(&job),
        Some(("True".into(), "BackoffLimitExceeded".into()))
    );

    hollow.stop().await;
}
