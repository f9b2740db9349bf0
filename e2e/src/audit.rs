//! The apiserver's audit log: the policy the harness gives it (Metadata level for service
//! accounts, nothing else) and the records read back from its JSON lines, so a test can say
//! which verbs on which resources each service account really used.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::Error;

/// One request as the audit log saw it: who did what to which kind of object, where.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Record {
    /// `system:serviceaccount:<namespace>:<name>` for a service account.
    pub user: String,
    /// The authorizer's verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// `""` for the core group.
    pub api_group: String,
    pub resource: String,
    /// `""` when none (`status` for `pods/status`).
    pub subresource: String,
    /// `""` for cluster-scoped objects and cluster-wide lists and watches.
    pub namespace: String,
    /// `""` when the request named no object (create, list, watch of all).
    pub name: String,
    /// The HTTP status the apiserver answered (0 when the log did not say).
    pub code: u16,
}

/// The audit policy: Metadata (who, verb, object, answer; no bodies) for every request of a
/// service account, nothing for anyone else. Records are written once, when the response is
/// complete (or, for watches, when they start).
pub fn policy() -> Value {
    json!({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            { "level": "Metadata", "userGroups": ["system:serviceaccounts"] },
            { "level": "None" },
        ],
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(default)]
    stage: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    user: User,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<Status>,
}

#[derive(Deserialize, Default)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    api_group: String,
    #[serde(default)]
    subresource: String,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    code: u16,
}

/// One line of the log. `None` for lines that are no resource request (non-resource URLs such
/// as `/api` discovery, which no RBAC rule on resources grants), for the `ResponseStarted` stage
/// of a watch (its `ResponseComplete` line says the same again), and for anything unreadable.
pub fn parse_line(line: &str) -> Option<Record> {
    let ev: Event = serde_json::from_str(line).ok()?;
    let obj = ev.object_ref?;
    if obj.resource.is_empty() || ev.verb.is_empty() || ev.stage == "ResponseStarted" {
        return None;
    }
    Some(Record {
        user: ev.user.username,
        verb: ev.verb,
        api_group: obj.api_group,
        resource: obj.resource,
        subresource: obj.subresource,
        namespace: obj.namespace,
        name: obj.name,
        code: ev.response_status.map_or(0, |s| s.code),
    })
}

/// Every resource request in the log at `path`, in order.
pub fn read(path: &Path) -> Result<Vec<Record>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text.lines().filter_map(parse_line).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shapes as kube-apiserver 1.20 writes them (trimmed: no annotations, no timestamps).
    const WATCH: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/team-a/secrets?watch=1","verb":"watch","user":{"username":"system:serviceaccount:mock-kind:hollow-node","uid":"u","groups":["system:serviceaccounts","system:authenticated"]},"sourceIPs":["127.0.0.1"],"objectRef":{"resource":"secrets","namespace":"team-a","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200}}"#;
    const STATUS: &str = r#"{"kind":"Event","stage":"ResponseComplete","verb":"patch","user":{"username":"system:serviceaccount:mock-kind:hollow-node"},"objectRef":{"resource":"pods","namespace":"default","name":"web-1","apiVersion":"v1","subresource":"status"},"responseStatus":{"code":200}}"#;
    const LEASE: &str = r#"{"kind":"Event","stage":"ResponseComplete","verb":"update","user":{"username":"sa"},"objectRef":{"resource":"leases","namespace":"kube-node-lease","name":"n-0","apiGroup":"coordination.k8s.io","apiVersion":"v1"},"responseStatus":{"code":409}}"#;
    const NODE: &str = r#"{"stage":"ResponseComplete","verb":"create","user":{"username":"sa"},"objectRef":{"resource":"nodes","apiVersion":"v1"},"responseStatus":{"code":403}}"#;
    const STARTED: &str = r#"{"stage":"ResponseStarted","verb":"watch","user":{"username":"sa"},"objectRef":{"resource":"pods","apiVersion":"v1"},"responseStatus":{"code":200}}"#;
    const DISCOVERY: &str = r#"{"stage":"ResponseComplete","verb":"get","user":{"username":"sa"},"requestURI":"/api","responseStatus":{"code":200}}"#;

    fn rec(verb: &str, group: &str, res: &str, sub: &str, ns: &str, name: &str) -> Record {
        Record {
            user: "sa".into(),
            verb: verb.into(),
            api_group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            code: 0,
        }
    }

    #[test]
    fn lines_become_records() {
        let watch = Record {
            user: "system:serviceaccount:mock-kind:hollow-node".into(),
            code: 200,
            ..rec("watch", "", "secrets", "", "team-a", "")
        };
        let status = Record {
            user: "system:serviceaccount:mock-kind:hollow-node".into(),
            code: 200,
            ..rec("patch", "", "pods", "status", "default", "web-1")
        };
        let lease = Record {
            code: 409,
            ..rec(
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                "kube-node-lease",
                "n-0",
            )
        };
        let node = Record {
            code: 403,
            ..rec("create", "", "nodes", "", "", "")
        };
        let cases: [(&str, &str, Option<Record>); 8] = [
            ("watch in a namespace", WATCH, Some(watch)),
            ("subresource", STATUS, Some(status)),
            ("named group", LEASE, Some(lease)),
            ("cluster-scoped, refused", NODE, Some(node)),
            ("watch start is skipped", STARTED, None),
            ("non-resource URL", DISCOVERY, None),
            ("not JSON", "Flag --insecure-port has been deprecated", None),
            ("empty", "", None),
        ];
        for (name, line, want) in cases {
            assert_eq!(parse_line(line), want, "{name}");
        }
    }

    #[test]
    fn policy_logs_service_accounts_only() {
        let p = policy();
        assert_eq!(p["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(p["rules"][0]["level"], "Metadata");
        assert_eq!(p["rules"][0]["userGroups"][0], "system:serviceaccounts");
        assert_eq!(p["rules"][1]["level"], "None", "everyone else: nothing");
    }

    #[test]
    fn read_skips_what_is_not_a_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        std::fs::write(&path, format!("{WATCH}\n{STARTED}\ngarbage\n{STATUS}\n")).expect("write");
        let got = read(&path).expect("read");
        assert_eq!(got.len(), 2);
        assert!(read(&dir.path().join("missing")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_line_parses_or_is_skipped(line in ".{0,200}") {
            let _ = parse_line(&line);
        }

        #[test]
        fn written_records_read_back(
            verb in "[a-z]{1,10}", group in "([a-z]{1,8}\\.k8s\\.io)?", res in "[a-z]{1,12}",
            sub in "([a-z]{1,8})?", ns in "([a-z0-9-]{1,12})?", code in 100u16..600,
        ) {
            let line = json!({
                "stage": "ResponseComplete", "verb": verb, "user": {"username": "sa"},
                "objectRef": {"resource": res, "apiGroup": group, "subresource": sub,
                              "namespace": ns},
                "responseStatus": {"code": code},
            }).to_string();
            let want = Record { code, ..rec(&verb, &group, &res, &sub, &ns, "") };
            proptest::prop_assert_eq!(parse_line(&line), Some(want));
        }
    }
}
