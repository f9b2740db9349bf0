//! RBAC objects expanded into single grants (one verb on one resource in one scope for one
//! ServiceAccount) and matched against the audit log's records: which grants a run never used.
//! Pure functions of the manifests and the records.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::audit::Record;

/// One verb on one resource, granted to `user` cluster-wide (`namespace` empty) or in one
/// namespace, perhaps only on some named objects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub user: String,
    pub namespace: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub verb: String,
    pub names: BTreeSet<String>,
}

impl Grant {
    /// `<verb> <resource>[/<subresource>][.<group>]`: what is granted, without who and where.
    pub fn what(&self) -> String {
        let sub = if self.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", self.subresource)
        };
        let group = if self.api_group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.api_group)
        };
        format!("{} {}{sub}{group}", self.verb, self.resource)
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = if self.namespace.is_empty() {
            "cluster-wide".to_owned()
        } else {
            format!("in {}", self.namespace)
        };
        let names = if self.names.is_empty() {
            String::new()
        } else {
            format!(" {:?}", self.names)
        };
        write!(f, "{} {}{names} {scope}", self.user, self.what())
    }
}

/// The user name a ServiceAccount authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Every grant to a ServiceAccount that the (Cluster)Roles and (Cluster)RoleBindings among
/// `objs` make. A RoleBinding confines a ClusterRole's rules to its namespace; a rule of a
/// role that no binding names grants nothing. Rules for non-resource URLs are skipped.
pub fn grants(objs: &[Value]) -> Vec<Grant> {
    let role = |kind: &str, namespace: &str, name: &str| {
        objs.iter().find(|o| {
            o["kind"] == kind
                && text(o, "/metadata/name") == name
                && (kind == "ClusterRole" || text(o, "/metadata/namespace") == namespace)
        })
    };
    let mut out = BTreeSet::new();
    for binding in objs {
        let scope = match text(binding, "/kind") {
            "ClusterRoleBinding" => "",
            "RoleBinding" => text(binding, "/metadata/namespace"),
            _ => continue,
        };
        let Some(role) = role(
            text(binding, "/roleRef/kind"),
            scope,
            text(binding, "/roleRef/name"),
        ) else {
            continue;
        };
        let users: Vec<String> = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["kind"] == "ServiceAccount")
            .map(|s| service_account_user(text(s, "/namespace"), text(s, "/name")))
            .collect();
        for rule in role["rules"].as_array().into_iter().flatten() {
            let names: BTreeSet<String> = strs(&rule["resourceNames"]).into_iter().collect();
            for user in &users {
                for group in strs(&rule["apiGroups"]) {
                    for res in strs(&rule["resources"]) {
                        let (resource, sub) = res.split_once('/').unwrap_or((&res, ""));
                        for verb in strs(&rule["verbs"]) {
                            out.insert(Grant {
                                user: user.clone(),
                                namespace: scope.to_owned(),
                                api_group: group.clone(),
                                resource: resource.to_owned(),
                                subresource: sub.to_owned(),
                                verb,
                                names: names.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

/// Whether `record` is a request that `grant` allowed: same user, verb and resource, inside its
/// scope and names. Refused requests (401, 403) used nothing.
pub fn allows(grant: &Grant, record: &Record) -> bool {
    record.code != 401
        && record.code != 403
        && record.user == grant.user
        && record.verb == grant.verb
        && record.api_group == grant.api_group
        && record.resource == grant.resource
        && record.subresource == grant.subresource
        && (grant.namespace.is_empty() || grant.namespace == record.namespace)
        && (grant.names.is_empty() || grant.names.contains(&record.name))
}

/// The grants no record used.
pub fn unused<'a>(grants: &'a [Grant], records: &[Record]) -> Vec<&'a Grant> {
    grants
        .iter()
        .filter(|g| !records.iter().any(|r| allows(g, r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objs() -> Vec<Value> {
        vec![
            json!({"kind": "ClusterRole", "metadata": {"name": "reader"}, "rules": [
                {"apiGroups": [""], "resources": ["nodes", "nodes/status"], "verbs": ["get", "patch"]},
                {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
            ]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "reader"},
                "roleRef": {"kind": "ClusterRole", "name": "reader"},
                "subjects": [{"kind": "ServiceAccount", "namespace": "ns", "name": "a"},
                             {"kind": "User", "name": "someone"}]}),
            json!({"kind": "ClusterRole", "metadata": {"name": "secrets"}, "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["watch"]}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "s", "namespace": "team"},
                "roleRef": {"kind": "ClusterRole", "name": "secrets"},
                "subjects": [{"kind": "ServiceAccount", "namespace": "ns", "name": "a"}]}),
            json!({"kind": "Role", "metadata": {"name": "own", "namespace": "ns"}, "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["tls"], "verbs": ["get"]}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "own", "namespace": "ns"},
                "roleRef": {"kind": "Role", "name": "own"},
                "subjects": [{"kind": "ServiceAccount", "namespace": "ns", "name": "b"}]}),
            json!({"kind": "ClusterRole", "metadata": {"name": "unbound"}, "rules": [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        ]
    }

    fn grant(user: &str, ns: &str, res: &str, sub: &str, verb: &str, names: &[&str]) -> Grant {
        Grant {
            user: service_account_user("ns", user),
            namespace: ns.into(),
            api_group: String::new(),
            resource: res.into(),
            subresource: sub.into(),
            verb: verb.into(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn record(user: &str, verb: &str, res: &str, sub: &str, ns: &str, name: &str) -> Record {
        Record {
            user: service_account_user("ns", user),
            verb: verb.into(),
            api_group: String::new(),
            resource: res.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            code: 200,
        }
    }

    #[test]
    fn bindings_expand_into_grants() {
        let want = vec![
            grant("a", "", "nodes", "", "get", &[]),
            grant("a", "", "nodes", "", "patch", &[]),
            grant("a", "", "nodes", "status", "get", &[]),
            grant("a", "", "nodes", "status", "patch", &[]),
            grant("a", "team", "secrets", "", "watch", &[]),
            grant("b", "ns", "secrets", "", "get", &["tls"]),
        ];
        assert_eq!(grants(&objs()), want);
    }

    #[test]
    fn records_use_the_grants_they_fall_under() {
        let refused = Record {
            code: 403,
            ..record("a", "get", "nodes", "", "", "n")
        };
        let cases: [(&str, Grant, Record, bool); 9] = [
            (
                "cluster-wide",
                grant("a", "", "nodes", "", "get", &[]),
                record("a", "get", "nodes", "", "", "n"),
                true,
            ),
            (
                "other verb",
                grant("a", "", "nodes", "", "get", &[]),
                record("a", "patch", "nodes", "", "", "n"),
                false,
            ),
            (
                "subresource differs",
                grant("a", "", "nodes", "", "patch", &[]),
                record("a", "patch", "nodes", "status", "", "n"),
                false,
            ),
            (
                "other user",
                grant("a", "", "nodes", "", "get", &[]),
                record("b", "get", "nodes", "", "", "n"),
                false,
            ),
            (
                "refused",
                grant("a", "", "nodes", "", "get", &[]),
                refused,
                false,
            ),
            (
                "in its namespace",
                grant("a", "team", "secrets", "", "watch", &[]),
                record("a", "watch", "secrets", "", "team", ""),
                true,
            ),
            (
                "outside its namespace",
                grant("a", "team", "secrets", "", "watch", &[]),
                record("a", "watch", "secrets", "", "other", ""),
                false,
            ),
            (
                "its name",
                grant("b", "ns", "secrets", "", "get", &["tls"]),
                record("b", "get", "secrets", "", "ns", "tls"),
                true,
            ),
            (
                "another name",
                grant("b", "ns", "secrets", "", "get", &["tls"]),
                record("b", "get", "secrets", "", "ns", "other"),
                false,
            ),
        ];
        for (name, g, r, want) in cases {
            assert_eq!(allows(&g, &r), want, "{name}");
        }
        let all = grants(&objs());
        let left = unused(&all, &[record("a", "get", "nodes", "", "", "n")]);
        assert_eq!(left.len(), all.len() - 1);
        assert_eq!(
            grant("b", "ns", "secrets", "", "get", &["tls"]).to_string(),
            "system:serviceaccount:ns:b get secrets {\"tls\"} in ns"
        );
        let status = Grant {
            api_group: "apps".into(),
            ..grant("a", "", "deployments", "status", "patch", &[])
        };
        assert_eq!(status.what(), "patch deployments/status.apps");
    }
}
