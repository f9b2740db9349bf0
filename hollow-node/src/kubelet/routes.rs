//! The kubelet API's paths as the kubelet reads them: which request a path is, and the
//! authorization it needs (kubernetes pkg/kubelet/server/auth.go: `nodes/<subresource>`, the
//! verb from the HTTP method). Pure functions of the method and path.

use http::Method;

/// What a path asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Healthz,
    /// A path that names no pod, only answerable on a node's own port.
    NodeWide(NodeWide),
    ContainerLogs {
        namespace: String,
        pod: String,
        container: String,
    },
    /// Something a hollow node cannot do: no container runs.
    Refused {
        action: Action,
        namespace: String,
        pod: String,
    },
    NotFound,
}

/// What a node-wide path asks for, all built from one sample of the node's pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeWide {
    /// `/metrics/resource`: the node's resource metrics (Prometheus text).
    ResourceMetrics,
    /// `/metrics/cadvisor`: the node's cAdvisor container metrics (Prometheus text).
    CadvisorMetrics,
    /// `/metrics`: the kubelet's own metrics (Prometheus text).
    KubeletMetrics,
    /// `/stats/summary`: the node's stats summary (JSON).
    StatsSummary,
}

/// The streaming requests the kubelet serves by running something in a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Exec,
    Attach,
    PortForward,
    Run,
}

impl Action {
    pub fn describe(self) -> &'static str {
        match self {
            Action::Exec => "exec into",
            Action::Attach => "attach to",
            Action::PortForward => "forward ports to",
            Action::Run => "run a command in",
        }
    }
}

/// What the kubelet asks the SubjectAccessReview: `verb` on `nodes/<subresource>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// Go's `path.Clean` for an absolute path: no empty, `.` or `..` segments, no trailing slash.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

fn is_subpath(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The kubelet's authorization attributes of a request; `None` for a method it has no verb for.
pub fn attributes(method: &Method, path: &str) -> Option<Attributes> {
    let verb = match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return None,
    };
    let path = clean(path);
    let subresource = if is_subpath(&path, "/stats") {
        "stats"
    } else if is_subpath(&path, "/metrics") {
        "metrics"
    } else if is_subpath(&path, "/logs") {
        "log"
    } else if is_subpath(&path, "/spec") {
        "spec"
    } else {
        "proxy"
    };
    Some(Attributes { verb, subresource })
}

/// The request a (cleaned) path names. Streaming paths carry an optional pod UID before the
/// container (`/exec/{ns}/{pod}/{uid}/{container}`), as the kubelet's routes do.
pub fn route(path: &str) -> Route {
    let path = clean(path);
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let pod_of = |action: Action, rest: &[&str], with_container: bool| {
        let ok = matches!((with_container, rest.len()), (true, 3 | 4) | (false, 2 | 3));
        if ok {
            Route::Refused {
                action,
                namespace: rest[0].to_string(),
                pod: rest[1].to_string(),
            }
        } else {
            Route::NotFound
        }
    };
    match segs.as_slice() {
        ["healthz"] => Route::Healthz,
        ["metrics"] => Route::NodeWide(NodeWide::KubeletMetrics),
        ["metrics", "resource"] => Route::NodeWide(NodeWide::ResourceMetrics),
        ["metrics", "cadvisor"] => Route::NodeWide(NodeWide::CadvisorMetrics),
        ["stats", "summary"] => Route::NodeWide(NodeWide::StatsSummary),
        ["containerLogs", ns, pod, container] => Route::ContainerLogs {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            container: container.to_string(),
        },
        ["exec", rest @ ..] => pod_of(Action::Exec, rest, true),
        ["attach", rest @ ..] => pod_of(Action::Attach, rest, true),
        ["run", rest @ ..] => pod_of(Action::Run, rest, true),
        ["portForward", rest @ ..] => pod_of(Action::PortForward, rest, false),
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn attributes_follow_the_kubelet() {
        type Case = (
            &'static str,
            Method,
            &'static str,
            Option<(&'static str, &'static str)>,
        );
        let cases: [Case; 12] = [
            (
                "logs of a container",
                Method::GET,
                "/containerLogs/ns/p/c",
                Some(("get", "proxy")),
            ),
            (
                "exec",
                Method::POST,
                "/exec/ns/p/c",
                Some(("create", "proxy")),
            ),
            (
                "stats",
                Method::GET,
                "/stats/summary",
                Some(("get", "stats")),
            ),
            (
                "metrics",
                Method::GET,
                "/metrics/resource",
                Some(("get", "metrics")),
            ),
            (
                "cadvisor metrics",
                Method::GET,
                "/metrics/cadvisor",
                Some(("get", "metrics")),
            ),
            (
                "the kubelet's metrics",
                Method::GET,
                "/metrics",
                Some(("get", "metrics")),
            ),
            (
                "node logs",
                Method::GET,
                "/logs/syslog",
                Some(("get", "log")),
            ),
            ("spec", Method::GET, "/spec/", Some(("get", "spec"))),
            (
                "not a subpath",
                Method::GET,
                "/statsx",
                Some(("get", "proxy")),
            ),
            (
                "dot-dot escapes stats",
                Method::GET,
                "/stats/../exec/a/b/c",
                Some(("get", "proxy")),
            ),
            ("delete", Method::DELETE, "/pods", Some(("delete", "proxy"))),
            ("no verb", Method::OPTIONS, "/pods", None),
        ];
        for (name, method, path, want) in cases {
            let got = attributes(&method, path).map(|a| (a.verb, a.subresource));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn routes() {
        let refused = |action, ns: &str, pod: &str| Route::Refused {
            action,
            namespace: ns.into(),
            pod: pod.into(),
        };
        let cases = [
            ("healthz", "/healthz", Route::Healthz),
            (
                "resource metrics",
                "/metrics/resource",
                Route::NodeWide(NodeWide::ResourceMetrics),
            ),
            (
                "stats summary",
                "/stats/summary/",
                Route::NodeWide(NodeWide::StatsSummary),
            ),
            (
                "cadvisor metrics",
                "/metrics/cadvisor",
                Route::NodeWide(NodeWide::CadvisorMetrics),
            ),
            (
                "kubelet metrics",
                "/metrics/",
                Route::NodeWide(NodeWide::KubeletMetrics),
            ),
            ("probe metrics", "/metrics/probes", Route::NotFound),
            ("stats of a container", "/stats/ns/p/uid/c", Route::NotFound),
            (
                "logs",
                "/containerLogs/ns/p/c",
                Route::ContainerLogs {
                    namespace: "ns".into(),
                    pod: "p".into(),
                    container: "c".into(),
                },
            ),
            (
                "logs without container",
                "/containerLogs/ns/p",
                Route::NotFound,
            ),
            ("exec", "/exec/ns/p/c", refused(Action::Exec, "ns", "p")),
            (
                "exec with uid",
                "/exec/ns/p/uid/c",
                refused(Action::Exec, "ns", "p"),
            ),
            (
                "attach",
                "/attach/ns/p/c",
                refused(Action::Attach, "ns", "p"),
            ),
            ("run", "/run/ns/p/c", refused(Action::Run, "ns", "p")),
            (
                "port-forward",
                "/portForward/ns/p",
                refused(Action::PortForward, "ns", "p"),
            ),
            ("exec too short", "/exec/ns", Route::NotFound),
            ("unknown", "/pods", Route::NotFound),
            (
                "double slashes",
                "//containerLogs//ns/p/c/",
                Route::ContainerLogs {
                    namespace: "ns".into(),
                    pod: "p".into(),
                    container: "c".into(),
                },
            ),
        ];
        for (name, path, want) in cases {
            assert_eq!(route(path), want, "{name}");
        }
    }

    proptest! {
        #[test]
        fn clean_is_absolute_idempotent_and_has_no_dots(path in "[a-z./]{0,40}") {
            let c = clean(&path);
            prop_assert!(c.starts_with('/'));
            prop_assert_eq!(clean(&c), c.clone());
            prop_assert!(!c.split('/').any(|s| s == ".." || s == "."));
            prop_assert!(!c.contains("//"));
        }

        #[test]
        fn every_method_with_a_verb_is_authorized_on_a_node_subresource(path in "[a-zA-Z/.]{0,40}") {
            let a = attributes(&Method::GET, &path).expect("GET has a verb");
            prop_assert!(["stats", "metrics", "log", "spec", "proxy"].contains(&a.subresource));
        }
    }
}
