//! The apiserver's syntax rules for the names a pool puts on Nodes (label keys and values,
//! resource names, DNS names), so a bad pool is refused before a single Node write fails.

/// A DNS-1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len())
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// A DNS-1123 subdomain as the apiserver checks it: at most 253 characters of dot-separated
/// parts of `[a-z0-9-]`, alphanumeric at both ends (no per-part length limit).
pub fn is_dns_subdomain(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| alnum(c) || c == '-')
                && part.starts_with(alnum)
                && part.ends_with(alnum)
        })
}

/// A label value: empty, or at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
pub fn is_label_value(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.is_empty()
        || (s.len() <= 63
            && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
            && s.starts_with(alnum)
            && s.ends_with(alnum))
}

/// A qualified name (label and annotation keys, resource names): `[prefix/]name`, the prefix a
/// DNS subdomain, the name a non-empty label value.
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        type Check = fn(&str) -> bool;
        let cases: &[(&str, Check, &str, bool)] = &[
            ("label", is_dns_label, "gpu-a", true),
            ("label upper", is_dns_label, "Gpu", false),
            ("label dash end", is_dns_label, "gpu-", false),
            ("label empty", is_dns_label, "", false),
            ("subdomain", is_dns_subdomain, "nvidia.com", true),
            ("subdomain empty part", is_dns_subdomain, "a..b", false),
            ("value empty", is_label_value, "", true),
            ("value mixed", is_label_value, "A_b.c-1", true),
            ("value slash", is_label_value, "a/b", false),
            ("value long", is_label_value, &"a".repeat(64), false),
            ("key plain", is_qualified_name, "zone", true),
            ("key prefixed", is_qualified_name, "nvidia.com/gpu", true),
            ("key empty name", is_qualified_name, "nvidia.com/", false),
            ("key two slashes", is_qualified_name, "a/b/c", false),
            ("key bad prefix", is_qualified_name, "Nvidia.com/gpu", false),
            ("key empty", is_qualified_name, "", false),
        ];
        for (name, check, input, want) in cases {
            assert_eq!(check(input), *want, "{name}: {input:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn qualified_names_are_bounded(s in "\\PC{0,300}") {
            if is_qualified_name(&s) {
                proptest::prop_assert!(s.len() <= 253 + 1 + 63);
                proptest::prop_assert!(s.is_ascii());
            }
        }
    }
}
