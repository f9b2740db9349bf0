use super::*;
use crate::protowire::{Value, fields};
use proptest::prelude::*;

fn all(b: &[u8], n: u64) -> Vec<&[u8]> {
    fields(b)
        .expect("well-formed")
        .into_iter()
        .filter_map(|(f, v)| match (f == n, v) {
            (true, Value::Bytes(b)) => Some(b),
            _ => None,
        })
        .collect()
}

fn one(b: &[u8], n: u64) -> &[u8] {
    let v = all(b, n);
    assert_eq!(v.len(), 1, "field {n} once");
    v[0]
}

fn text(b: &[u8], n: u64) -> String {
    String::from_utf8(one(b, n).to_vec()).expect("utf-8")
}

fn int(b: &[u8], n: u64) -> i64 {
    fields(b)
        .expect("well-formed")
        .into_iter()
        .find_map(|(f, v)| match (f == n, v) {
            (true, Value::Varint(v)) => Some(v as i64),
            _ => None,
        })
        .expect("varint field")
}

/// The envelope's (apiVersion, kind, raw).
fn open(body: &[u8]) -> (String, String, Vec<u8>) {
    let o = crate::protowire::open(body).expect("an envelope");
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).expect("utf-8");
    (s(o.api_version), s(o.kind), o.raw.to_vec())
}

/// (key, quantity) of a `map<string, Quantity>` field.
fn usage_of(b: &[u8], n: u64) -> Vec<(String, String)> {
    all(b, n)
        .into_iter()
        .map(|e| (text(e, 1), text(one(e, 2), 1)))
        .collect()
}

const NOW: i64 = 1_764_590_400;

fn u(cpu: u64, mem: u64) -> Usage {
    Usage {
        cpu_nanos: cpu,
        memory_bytes: mem,
    }
}

#[test]
fn accept_headers() {
    let cases = [
        ("no header", None, false),
        (
            "kubectl top and client-go with protobuf",
            Some("application/vnd.kubernetes.protobuf, */*"),
            true,
        ),
        (
            "protobuf then json",
            Some("application/vnd.kubernetes.protobuf,application/json"),
            true,
        ),
        ("json only", Some("application/json"), false),
        ("anything", Some("*/*"), false),
        (
            "protobuf weighted below json",
            Some("application/json, application/vnd.kubernetes.protobuf;q=0.5"),
            false,
        ),
        (
            "protobuf refused",
            Some("application/vnd.kubernetes.protobuf;q=0"),
            false,
        ),
        (
            "json weighted below protobuf",
            Some("application/json;q=0.9, application/vnd.kubernetes.protobuf"),
            true,
        ),
        (
            "case and spaces",
            Some("  Application/VND.Kubernetes.Protobuf ; q=1.0 "),
            true,
        ),
        (
            "malformed weight is refused",
            Some("application/vnd.kubernetes.protobuf;q=2"),
            false,
        ),
        (
            "protobuf stream is another type",
            Some("application/vnd.kubernetes.protobuf;stream=watch;q=0"),
            false,
        ),
    ];
    for (name, accept, want) in cases {
        assert_eq!(wants_protobuf(accept), want, "{name}");
    }
}

#[test]
fn pod_metrics_list_decodes_as_generated_proto_says() {
    let items = [
        PodSample {
            namespace: "ns",
            name: "web-0",
            containers: vec![("app", u(250_000_000, 300 << 20)), ("sidecar", u(1, 1000))],
        },
        PodSample {
            namespace: "other",
            name: "db",
            containers: vec![("db", u(0, 0))],
        },
    ];
    let body = pod_metrics_list(&items, NOW);
    let (api_version, kind, raw) = open(&body);
    assert_eq!(
        (api_version.as_str(), kind.as_str()),
        ("metrics.k8s.io/v1beta1", "PodMetricsList")
    );
    assert!(one(&raw, 1).is_empty(), "empty ListMeta");
    let got = all(&raw, 2);
    assert_eq!(got.len(), 2);
    let pod = got[0];
    let meta = one(pod, 1);
    assert_eq!(
        (text(meta, 1), text(meta, 3)),
        ("web-0".into(), "ns".into())
    );
    assert_eq!(int(one(meta, 8), 1), NOW, "creationTimestamp");
    assert_eq!(int(one(pod, 2), 1), NOW, "timestamp seconds");
    assert_eq!(int(one(pod, 3), 1), 15_000_000_000, "window in ns");
    let containers = all(pod, 4);
    assert_eq!(text(containers[0], 1), "app");
    assert_eq!(
        usage_of(containers[0], 2),
        vec![
            ("cpu".into(), "250000000n".into()),
            ("memory".into(), "307200Ki".into())
        ]
    );
    assert_eq!(
        usage_of(containers[1], 2),
        vec![
            ("cpu".into(), "1n".into()),
            ("memory".into(), "1000".into())
        ]
    );
    assert_eq!(text(one(got[1], 1), 3), "other");
}

#[test]
fn node_metrics_decode_as_generated_proto_says() {
    let node = NodeSample {
        name: "hollow-3",
        usage: u(100_000_000, 256 << 20),
    };
    let (_, kind, raw) = open(&node_metrics_object(&node, NOW));
    assert_eq!(kind, "NodeMetrics");
    let meta = one(&raw, 1);
    assert_eq!(text(meta, 1), "hollow-3");
    assert!(all(meta, 3).is_empty(), "nodes have no namespace");
    assert_eq!(
        usage_of(&raw, 4),
        vec![
            ("cpu".into(), "100000000n".into()),
            ("memory".into(), "262144Ki".into())
        ]
    );
    let (_, kind, raw) = open(&node_metrics_list(&[node, node], NOW));
    assert_eq!(kind, "NodeMetricsList");
    assert_eq!(all(&raw, 2).len(), 2);
}

#[test]
fn a_known_encoding_byte_for_byte() {
    // Time{seconds: 1, nanos: 0} as field 2, then Duration{15e9} as field 3: checked by hand
    // against the wire format (tag = field << 3 | wire type; varints little-endian base 128).
    let mut out = Vec::new();
    sampled(&mut out, 1);
    assert_eq!(
        out,
        [
            0x12, 0x04, 0x08, 0x01, 0x10, 0x00, // timestamp
            0x1a, 0x06, 0x08, 0x80, 0xac, 0xc7, 0xf0, 0x37, // window: 15,000,000,000
        ]
    );
}

proptest! {
    #[test]
    fn any_pod_round_trips(
        ns in "[a-z0-9-]{1,63}",
        name in "[a-z0-9.-]{1,253}",
        containers in proptest::collection::vec(("[a-z0-9-]{1,63}", 0u64..crate::usage::MAX_CPU_NANOS, 0u64..crate::usage::MAX_MEMORY_BYTES), 0..8),
        now in 0i64..4_102_444_800,
    ) {
        let sample = PodSample {
            namespace: &ns,
            name: &name,
            containers: containers.iter().map(|(n, c, m)| (n.as_str(), u(*c, *m))).collect(),
        };
        let (_, _, raw) = open(&pod_metrics_object(&sample, now));
        let meta = one(&raw, 1);
        prop_assert_eq!(text(meta, 1), name.clone());
        prop_assert_eq!(text(meta, 3), ns.clone());
        prop_assert_eq!(int(one(&raw, 2), 1), now);
        let got = all(&raw, 4);
        prop_assert_eq!(got.len(), containers.len());
        for (c, (n, cpu, mem)) in got.iter().zip(&containers) {
            prop_assert_eq!(text(c, 1), n.clone());
            let usage = usage_of(c, 2);
            prop_assert_eq!(crate::usage::cpu_nanos(&usage[0].1), Ok(*cpu));
            prop_assert_eq!(crate::usage::memory_bytes(&usage[1].1), Ok(*mem));
        }
    }

    #[test]
    fn any_accept_header_is_answered(accept in "\\PC{0,200}") {
        let _ = wants_protobuf(Some(&accept));
    }
}
