//! A Lease renewal in the apiserver's protobuf encoding, as the kubelet sends it: a PUT of the
//! whole (small) Lease with the resourceVersion of the last write. The apiserver decodes and
//! encodes protobuf for a fraction of what a JSON merge patch costs it (the patch is applied
//! on a JSON rendering of the stored object, then decoded again), and renewals are most of
//! what thousands of nodes ask of it.
//!
//! Only what a renewal needs is written (name, namespace, resourceVersion, the owning Node,
//! holder, duration, renew time) and only the resourceVersion is read back. Field numbers are
//! those of k8s.io/api `generated.proto` (checked against a 1.20.2 apiserver's own encoding of
//! a Lease, kept as `apiserver-1.20-lease.pb`):
//! - envelope: the bytes `k8s\0`, then `runtime.Unknown` {typeMeta 1 {apiVersion 1, kind 2},
//!   raw 2}
//! - `Lease` {metadata 1, spec 2}; `ObjectMeta` {name 1, namespace 3, uid 5,
//!   resourceVersion 6, ownerReferences 13}; `OwnerReference` {kind 1, name 3, uid 4,
//!   apiVersion 5}
//! - `LeaseSpec` {holderIdentity 1, leaseDurationSeconds 2, renewTime 4 (`MicroTime`
//!   {seconds 1, nanos 2})}

use crate::protowire::{DecodeError, bytes, envelope, find, int, message, open};

/// The media type of both the request and the answer.
pub const CONTENT_TYPE: &str = crate::protowire::MEDIA_TYPE;

/// Everything a renewal writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub resource_version: &'a str,
    /// The Node's uid, for the owner reference a PUT must carry again (it replaces the object).
    pub node_uid: Option<&'a str>,
    pub duration_secs: i32,
    /// Seconds and nanoseconds since the epoch.
    pub renew_time: (i64, i32),
}

/// The PUT body for `r`.
pub fn encode(r: &Renewal<'_>) -> Vec<u8> {
    let mut lease = Vec::with_capacity(160);
    message(&mut lease, 1, |m| {
        bytes(m, 1, r.name.as_bytes());
        bytes(m, 3, r.namespace.as_bytes());
        bytes(m, 6, r.resource_version.as_bytes());
        if let Some(uid) = r.node_uid {
            message(m, 13, |o| {
                bytes(o, 1, b"Node");
                bytes(o, 3, r.name.as_bytes());
                bytes(o, 4, uid.as_bytes());
                bytes(o, 5, b"v1");
            });
        }
    });
    message(&mut lease, 2, |s| {
        bytes(s, 1, r.name.as_bytes());
        int(s, 2, i64::from(r.duration_secs));
        message(s, 4, |t| {
            int(t, 1, r.renew_time.0);
            int(t, 2, i64::from(r.renew_time.1));
        });
    });
    envelope("coordination.k8s.io/v1", "Lease", &lease)
}

/// The resourceVersion of the Lease in an answer (`Unknown.raw` → `Lease.metadata` →
/// `ObjectMeta.resourceVersion`), for the next renewal's precondition.
pub fn resource_version(answer: &[u8]) -> Result<String, DecodeError> {
    let raw = open(answer)?.raw;
    let meta = find(raw, 1)?.ok_or(DecodeError::Missing("metadata"))?;
    let rv = find(meta, 6)?.ok_or(DecodeError::Missing("metadata.resourceVersion"))?;
    let rv =
        std::str::from_utf8(rv).map_err(|_| DecodeError::NotUtf8("metadata.resourceVersion"))?;
    if rv.is_empty() {
        return Err(DecodeError::Missing("metadata.resourceVersion"));
    }
    Ok(rv.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protowire::MAGIC;
    use proptest::prelude::*;

    /// A Lease as kube-apiserver 1.20.2 answered a GET in protobuf (resourceVersion "72").
    const APISERVER_LEASE: &[u8] = include_bytes!("apiserver-1.20-lease.pb");

    fn renewal(rv: &str) -> Renewal<'_> {
        Renewal {
            name: "hollow-node-0-17",
            namespace: "kube-node-lease",
            resource_version: rv,
            node_uid: Some("5fed24fe-95ca-4f87-b81d-c4d1e9680488"),
            duration_secs: 40,
            renew_time: (1_796_066_152, 123_456_000),
        }
    }

    #[test]
    fn reads_the_apiservers_own_encoding() {
        assert_eq!(resource_version(APISERVER_LEASE).as_deref(), Ok("72"));
    }

    /// Our encoding has the apiserver's shape: the same envelope, type meta and nesting.
    #[test]
    fn encodes_the_shape_the_apiserver_uses() {
        let ours = encode(&renewal("72"));
        let unknown = ours.strip_prefix(MAGIC).expect("magic");
        let theirs = APISERVER_LEASE.strip_prefix(MAGIC).expect("magic");
        assert_eq!(find(unknown, 1), find(theirs, 1), "typeMeta");
        let raw = find(unknown, 2).expect("ok").expect("raw");
        let meta = find(raw, 1).expect("ok").expect("metadata");
        assert_eq!(find(meta, 1), Ok(Some(&b"hollow-node-0-17"[..])));
        assert_eq!(find(meta, 3), Ok(Some(&b"kube-node-lease"[..])));
        let owner = find(meta, 13).expect("ok").expect("owner");
        assert_eq!(find(owner, 1), Ok(Some(&b"Node"[..])));
        assert_eq!(find(owner, 5), Ok(Some(&b"v1"[..])));
        let spec = find(raw, 2).expect("ok").expect("spec");
        assert_eq!(find(spec, 1), Ok(Some(&b"hollow-node-0-17"[..])));
        let time = find(spec, 4).expect("ok").expect("renewTime");
        // seconds 1796066152 and nanos 123456000 as varints.
        assert_eq!(time[0], 0x08);
        assert!(time.contains(&0x10));
    }

    #[test]
    fn decode_errors_table() {
        let cases: &[(&str, &[u8], DecodeError)] = &[
            ("empty", b"", DecodeError::NoMagic),
            ("json", b"{\"kind\":\"Lease\"}", DecodeError::NoMagic),
            ("magic only", b"k8s\0", DecodeError::Missing("object")),
            (
                "truncated length",
                b"k8s\0\x12\x05ab",
                DecodeError::Malformed,
            ),
            (
                "endless varint",
                b"k8s\0\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
                DecodeError::Malformed,
            ),
            ("bad wire type", b"k8s\0\x0f", DecodeError::Malformed),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(resource_version(bytes).as_ref(), Err(want), "{name}");
        }
    }

    proptest! {
        #[test]
        fn round_trips_any_renewal(
            name in "[a-z0-9.-]{1,253}",
            rv in "[0-9]{1,20}",
            uid in proptest::option::of("[a-f0-9-]{36}"),
            duration in any::<i32>(),
            secs in any::<i64>(),
            nanos in any::<i32>(),
        ) {
            let r = Renewal {
                name: &name,
                namespace: "kube-node-lease",
                resource_version: &rv,
                node_uid: uid.as_deref(),
                duration_secs: duration,
                renew_time: (secs, nanos),
            };
            prop_assert_eq!(resource_version(&encode(&r)), Ok(rv.clone()));
        }

        #[test]
        fn never_panics_on_any_answer(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut answer = MAGIC.to_vec();
            answer.extend(tail);
            let _ = resource_version(&answer);
        }
    }
}
