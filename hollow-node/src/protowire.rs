//! The protobuf wire format as the Kubernetes API uses it, for the few objects hollow-node
//! writes or reads in protobuf (Lease renewals, metrics.k8s.io answers): field writers, the
//! apimachinery envelope (`k8s\0`, then `runtime.Unknown` {typeMeta 1 {apiVersion 1, kind 2},
//! raw 2, contentEncoding 3, contentType 4}) and a bounded reader. Pure; no generated code,
//! as each caller writes a handful of fields.

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// What every protobuf body of the Kubernetes API starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// A length-delimited field (string, bytes, message).
pub fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    key(out, field, 2);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// An integer field; proto2 `int64`/`int32` encode negatives as ten-byte varints (two's
/// complement), as Go's protobuf does.
pub fn int(out: &mut Vec<u8>, field: u32, value: i64) {
    key(out, field, 0);
    varint(out, value as u64);
}

/// A message field whose body `build` writes.
pub fn message(out: &mut Vec<u8>, field: u32, build: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::with_capacity(64);
    build(&mut inner);
    bytes(out, field, &inner);
}

/// `raw`, an object of `api_version`/`kind`, in the envelope.
pub fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 64);
    out.extend_from_slice(MAGIC);
    message(&mut out, 1, |t| {
        bytes(t, 1, api_version.as_bytes());
        bytes(t, 2, kind.as_bytes());
    });
    bytes(&mut out, 2, raw);
    bytes(&mut out, 3, b"");
    bytes(&mut out, 4, b"");
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a Kubernetes protobuf message (no k8s\\0 prefix)")]
    NoMagic,
    #[error("truncated or malformed protobuf")]
    Malformed,
    #[error("the answer holds no {0}")]
    Missing(&'static str),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
}

/// A field's value as the wire has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed,
    Bytes(&'a [u8]),
}

/// Reads a varint at `*at`; at most ten bytes, as protobuf allows.
fn read_varint(buf: &[u8], at: &mut usize) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(*at).ok_or(DecodeError::Malformed)?;
        *at += 1;
        v |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(DecodeError::Malformed)
}

/// Every field of a message, in order: (field number, value).
pub fn fields(buf: &[u8]) -> Result<Vec<(u64, Value<'_>)>, DecodeError> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < buf.len() {
        let k = read_varint(buf, &mut at)?;
        let value = match k & 7 {
            0 => Value::Varint(read_varint(buf, &mut at)?),
            1 | 5 => {
                let width = if k & 7 == 1 { 8 } else { 4 };
                at = at.checked_add(width).ok_or(DecodeError::Malformed)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(read_varint(buf, &mut at)?)
                    .map_err(|_| DecodeError::Malformed)?;
                let end = at.checked_add(len).ok_or(DecodeError::Malformed)?;
                let value = buf.get(at..end).ok_or(DecodeError::Malformed)?;
                at = end;
                Value::Bytes(value)
            }
            _ => return Err(DecodeError::Malformed),
        };
        if at > buf.len() {
            return Err(DecodeError::Malformed);
        }
        out.push((k >> 3, value));
    }
    Ok(out)
}

/// The last length-delimited field `field` of `buf` (later occurrences win, as in protobuf).
pub fn find(buf: &[u8], field: u64) -> Result<Option<&[u8]>, DecodeError> {
    Ok(fields(buf)?
        .into_iter()
        .filter_map(|(f, v)| match v {
            Value::Bytes(b) if f == field => Some(b),
            _ => None,
        })
        .next_back())
}

/// What an envelope holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'a> {
    pub api_version: &'a [u8],
    pub kind: &'a [u8],
    pub raw: &'a [u8],
}

pub fn open(body: &[u8]) -> Result<Opened<'_>, DecodeError> {
    let unknown = body.strip_prefix(MAGIC).ok_or(DecodeError::NoMagic)?;
    let type_meta = find(unknown, 1)?.unwrap_or_default();
    Ok(Opened {
        api_version: find(type_meta, 1)?.unwrap_or_default(),
        kind: find(type_meta, 2)?.unwrap_or_default(),
        raw: find(unknown, 2)?.ok_or(DecodeError::Missing("object"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_known_encoding_byte_for_byte() {
        // Checked by hand: tag = field << 3 | wire type; varints little-endian base 128.
        let mut out = Vec::new();
        int(&mut out, 1, 15_000_000_000);
        bytes(&mut out, 2, b"ab");
        int(&mut out, 3, -1);
        assert_eq!(
            out,
            [
                0x08, 0x80, 0xac, 0xc7, 0xf0, 0x37, // 15,000,000,000
                0x12, 0x02, b'a', b'b', // "ab"
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // -1
            ]
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: &[(&str, &[u8])] = &[
            ("truncated length", b"\x12\x05ab"),
            (
                "endless varint",
                b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            ),
            ("bad wire type", b"\x0f"),
            ("truncated fixed64", b"\x09\x01"),
        ];
        for (name, bytes) in cases {
            assert_eq!(fields(bytes), Err(DecodeError::Malformed), "{name}");
        }
        assert_eq!(open(b"{}"), Err(DecodeError::NoMagic));
        assert_eq!(open(b"k8s\0"), Err(DecodeError::Missing("object")));
    }

    proptest! {
        #[test]
        fn envelopes_open_to_what_went_in(
            api in "[a-z0-9./]{0,40}",
            kind in "[A-Za-z]{0,20}",
            raw in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let body = envelope(&api, &kind, &raw);
            let want = Opened { api_version: api.as_bytes(), kind: kind.as_bytes(), raw: &raw };
            prop_assert_eq!(open(&body), Ok(want));
        }

        #[test]
        fn fields_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = fields(&buf);
        }
    }
}
