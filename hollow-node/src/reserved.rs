//! Node allocatable as the kubelet computes it: capacity minus what `--kube-reserved` keeps for
//! the system (CPU and memory here), never negative. Quantities are parsed with checked
//! arithmetic and bounded, so a flag value cannot overflow or panic.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{value:?} is not a {what} quantity: {reason}")]
pub struct QuantityError {
    what: &'static str,
    value: String,
    reason: &'static str,
}

/// Longest quantity string looked at.
const MAX_LEN: usize = 32;
/// Largest amount accepted (in the unit of each parser): far above any node, far below u64.
const MAX_AMOUNT: u128 = 1 << 62;
/// Fraction digits kept (nano-units).
const FRACTION_DIGITS: u32 = 9;

/// Parses a Kubernetes quantity (`1.5`, `250m`, `16Gi`, `2G`) into units of `1/scale` of its
/// base unit, rounded up (as the apiserver rounds CPU to whole millicores).
fn parse(what: &'static str, value: &str, scale: u128) -> Result<u64, QuantityError> {
    let err = |reason| QuantityError {
        what,
        value: value.chars().take(MAX_LEN).collect(),
        reason,
    };
    if value.is_empty() || value.len() > MAX_LEN {
        return Err(err("empty or too long"));
    }
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(err("no number"));
    }
    if frac.len() > FRACTION_DIGITS as usize || frac.contains('.') {
        return Err(err("too many fraction digits"));
    }
    let digits = |s: &str| -> Result<u128, QuantityError> {
        if s.is_empty() {
            return Ok(0);
        }
        s.parse::<u128>().map_err(|_| err("not a number"))
    };
    let nanos_per_unit = 10u128.pow(FRACTION_DIGITS);
    let frac_nanos = digits(frac)?
        .checked_mul(10u128.pow(FRACTION_DIGITS - frac.len() as u32))
        .ok_or_else(|| err("too large"))?;
    let nanos = digits(int)?
        .checked_mul(nanos_per_unit)
        .and_then(|n| n.checked_add(frac_nanos))
        .ok_or_else(|| err("too large"))?;
    // (multiplier, divisor) of the suffix.
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        _ => return Err(err("unknown suffix")),
    };
    let scaled = nanos
        .checked_mul(mul)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| err("too large"))?;
    let denom = nanos_per_unit * div;
    let amount = scaled.div_ceil(denom);
    if amount > MAX_AMOUNT {
        return Err(err("too large"));
    }
    u64::try_from(amount).map_err(|_| err("too large"))
}

/// CPU in millicores.
pub fn cpu_millis(value: &str) -> Result<u64, QuantityError> {
    parse("cpu", value, 1000)
}

/// Any resource in thousandths of its unit (`4` → 4000, `250m` → 250, `1Ki` → 1,024,000): how
/// a pool's capacity and allocatable are checked and compared.
pub fn milli_units(value: &str) -> Result<u64, QuantityError> {
    parse("resource", value, 1000)
}

/// Memory in bytes.
pub fn memory_bytes(value: &str) -> Result<u64, QuantityError> {
    parse("memory", value, 1)
}

/// Allocatable CPU: `capacity - reserved` millicores, at least 0, as the kubelet writes it;
/// the capacity as written when nothing is reserved.
pub fn allocatable_cpu(capacity: &str, reserved: &str) -> Result<String, QuantityError> {
    let reserved = cpu_millis(reserved)?;
    if reserved == 0 {
        return Ok(capacity.to_string());
    }
    let left = cpu_millis(capacity)?.saturating_sub(reserved);
    Ok(if left % 1000 == 0 {
        (left / 1000).to_string()
    } else {
        format!("{left}m")
    })
}

/// Allocatable memory: `capacity - reserved` bytes, at least 0 (in Ki when whole, as the
/// kubelet writes it); the capacity as written when nothing is reserved.
pub fn allocatable_memory(capacity: &str, reserved: &str) -> Result<String, QuantityError> {
    let reserved = memory_bytes(reserved)?;
    if reserved == 0 {
        return Ok(capacity.to_string());
    }
    let left = memory_bytes(capacity)?.saturating_sub(reserved);
    Ok(if left % 1024 == 0 {
        format!("{}Ki", left / 1024)
    } else {
        left.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let cases: &[(&str, &str, Option<u64>)] = &[
            ("cores", "4", Some(4000)),
            ("millicores", "250m", Some(250)),
            ("fraction", "1.5", Some(1500)),
            ("fraction rounds up", "0.0001", Some(1)),
            ("leading dot", ".5", Some(500)),
            ("zero", "0", Some(0)),
            ("empty", "", None),
            ("unit only", "m", None),
            ("negative", "-1", None),
            ("two dots", "1.2.3", None),
            ("unknown suffix", "4x", None),
            ("huge", "99999999999999999999999", None),
        ];
        for (name, v, want) in cases {
            assert_eq!(cpu_millis(v).ok(), *want, "cpu {name}");
        }
        let cases: &[(&str, &str, Option<u64>)] = &[
            ("Gi", "16Gi", Some(16 << 30)),
            ("Mi", "512Mi", Some(512 << 20)),
            ("G", "2G", Some(2_000_000_000)),
            ("plain", "1000", Some(1000)),
            ("Ti overflow bound", "9999999Ti", None),
            ("bad", "lots", None),
        ];
        for (name, v, want) in cases {
            assert_eq!(memory_bytes(v).ok(), *want, "memory {name}");
        }
    }

    #[test]
    fn allocatable() {
        let cases = [
            ("nothing reserved", "4", "0", "4"),
            ("some reserved", "4", "100m", "3900m"),
            ("whole cores left", "4", "1", "3"),
            ("never negative", "1", "2", "0"),
        ];
        for (name, cap, res, want) in cases {
            assert_eq!(allocatable_cpu(cap, res).as_deref(), Ok(want), "{name}");
        }
        let cases = [
            ("nothing reserved", "16Gi", "0", "16Gi"),
            ("some reserved", "16Gi", "1Gi", "15728640Ki"),
            ("never negative", "1Gi", "2Gi", "0Ki"),
            ("bytes when not whole Ki", "1000", "1", "999"),
        ];
        for (name, cap, res, want) in cases {
            assert_eq!(allocatable_memory(cap, res).as_deref(), Ok(want), "{name}");
        }
        assert!(allocatable_cpu("4", "bad").is_err());
        assert!(allocatable_memory("bad", "1Gi").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_is_total(v in "\\PC{0,40}") {
            let _ = cpu_millis(&v);
            let _ = memory_bytes(&v);
        }

        #[test]
        fn allocatable_never_exceeds_capacity(cap in 0u64..1_000_000, res in 0u64..2_000_000) {
            let res = res.max(1);
            let got = allocatable_cpu(&format!("{cap}m"), &format!("{res}m")).expect("cpu");
            let left = cpu_millis(&got).expect("parse back");
            proptest::prop_assert_eq!(left, cap.saturating_sub(res));
        }
    }
}
