//! Certificates for mock-kind's webhook: a CA and a serving certificate (rcgen), the decision
//! whether a bundle must be renewed, and the files / `kubernetes.io/tls` Secret that hold them.
//! [`cluster`] writes the Secret and the caBundle of a MutatingWebhookConfiguration.

pub mod cluster;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Secret keys of a `kubernetes.io/tls` Secret, plus the CA bundle.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";

/// Clock skew tolerated between the signer and the verifier.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: String },
    #[error("{what}: invalid PEM: {source}")]
    Pem { what: String, source: pem::Error },
    #[error("{what}: invalid X.509 certificate: {message}")]
    X509 { what: String, message: String },
    #[error("{what}: {message}")]
    Key { what: String, message: String },
    #[error("time out of range: {0}")]
    Time(String),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("Secret {namespace}/{name}: missing or non-UTF-8 key {key}")]
    SecretField {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("MutatingWebhookConfiguration {name} not found")]
    WebhookConfigNotFound { name: String },
    #[error("{0}")]
    Kube(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to issue.
#[derive(Clone, Debug)]
pub struct CertOptions {
    /// Service name; the certificate covers `<service>.<namespace>.svc` and friends.
    pub service: String,
    pub namespace: String,
    /// Extra DNS names or IP addresses (e.g. `127.0.0.1` for tests).
    pub extra_sans: Vec<String>,
    /// Lifetime of the serving certificate.
    pub validity: Duration,
    /// Lifetime of the CA.
    pub ca_validity: Duration,
}

impl CertOptions {
    pub fn new(service: &str, namespace: &str) -> Self {
        Self {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            extra_sans: Vec::new(),
            validity: Duration::from_secs(365 * 24 * 3600),
            ca_validity: Duration::from_secs(10 * 365 * 24 * 3600),
        }
    }

    /// Every name the serving certificate must cover.
    pub fn sans(&self) -> Vec<String> {
        let (s, n) = (&self.service, &self.namespace);
        let mut names = vec![
            s.clone(),
            format!("{s}.{n}"),
            format!("{s}.{n}.svc"),
            format!("{s}.{n}.svc.cluster.local"),
        ];
        for extra in &self.extra_sans {
            if !names.contains(extra) {
                names.push(extra.clone());
            }
        }
        names
    }
}

/// A serving certificate, its key and the CA bundle clients should trust (the CA that signed the
/// certificate first, then earlier CAs that are still valid, so a rotation never leaves a replica
/// that still serves the previous certificate untrusted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

fn offset(t: SystemTime) -> Result<time::OffsetDateTime> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|e| Error::Time(e.to_string()))?
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64).map_err(|e| Error::Time(e.to_string()))
}

/// Issues a new CA and a serving certificate valid from `now` (backdated one hour for skew).
/// `previous_ca_pem` (the bundle being replaced, if any) is appended minus expired CAs.
pub fn generate(
    opts: &CertOptions,
    now: SystemTime,
    previous_ca_pem: Option<&str>,
) -> Result<Bundle> {
    let start = offset(now.checked_sub(BACKDATE).unwrap_or(now))?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("mock-kind-ca {}.{}", opts.service, opts.namespace),
    );
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = start;
    ca_params.not_after = offset(now + opts.ca_validity)?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(opts.sans())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{}.{}.svc", opts.service, opts.namespace),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = start;
    // The serving certificate never outlives its CA.
    params.not_after = offset(now + opts.validity.min(opts.ca_validity))?;
    let cert = params.signed_by(&key, &issuer)?;

    let new_ca = ca_cert.pem();
    let ca_pem = match previous_ca_pem {
        Some(prev) => merge_ca_bundle(&new_ca, prev, now),
        None => new_ca,
    };
    Ok(Bundle {
        ca_pem,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// `new_ca` followed by the certificates of `previous` that are still valid at `now` and differ
/// from `new_ca`. Unparseable entries of `previous` are dropped.
pub fn merge_ca_bundle(new_ca: &str, previous: &str, now: SystemTime) -> String {
    let new_ders = parse_certs(new_ca, "new CA").unwrap_or_default();
    let mut out = new_ca.trim_end().to_owned();
    out.push('\n');
    let Ok(prev) = parse_certs(previous, "previous CA bundle") else {
        return out;
    };
    for der in prev {
        if new_ders.contains(&der) {
            continue;
        }
        match not_after_der(&der, "previous CA") {
            Ok(end) if end > now => out.push_str(&pem_encode(&der)),
            _ => {}
        }
    }
    out
}

/// The CA a replacement bundle must keep trusting: the one that signed `bundle`'s certificate
/// (first in its CA bundle), as long as that certificate has not expired at `now` — replicas
/// may still serve it until they reload. Older CAs have nothing left to vouch for.
pub fn still_needed_ca(bundle: &Bundle, now: SystemTime) -> Option<String> {
    let cert_end = not_after(&bundle.cert_pem, "previous serving certificate").ok()?;
    if cert_end <= now {
        return None;
    }
    let ca = parse_certs(&bundle.ca_pem, "previous CA bundle").ok()?;
    Some(pem_encode(&ca[0]))
}

/// One certificate as PEM.
pub fn pem_encode(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// Every certificate in a PEM string (at least one).
pub fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem {
            what: what.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            what: what.to_owned(),
        });
    }
    Ok(certs)
}

/// The private key (PKCS#8, PKCS#1 or SEC1) in a PEM string.
pub fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|source| match source {
        pem::Error::NoItemsFound => Error::Key {
            what: what.to_owned(),
            message: "no PEM private key found".to_owned(),
        },
        source => Error::Pem {
            what: what.to_owned(),
            source,
        },
    })
}

/// When the certificate `der` expires.
pub fn not_after_der(der: &CertificateDer<'_>, what: &str) -> Result<SystemTime> {
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| Error::X509 {
        what: what.to_owned(),
        message: e.to_string(),
    })?;
    let ts = x509.validity().not_after.timestamp();
    Ok(if ts <= 0 {
        UNIX_EPOCH
    } else {
        UNIX_EPOCH + Duration::from_secs(ts as u64)
    })
}

/// When the first certificate of `pem` expires.
pub fn not_after(pem: &str, what: &str) -> Result<SystemTime> {
    let certs = parse_certs(pem, what)?;
    not_after_der(&certs[0], what)
}

/// Checks that the key belongs to the certificate; returns the rustls `CertifiedKey`.
pub fn certified_key(
    cert_pem: &str,
    key_pem: &str,
    what: &str,
) -> Result<rustls::sign::CertifiedKey> {
    let chain = parse_certs(cert_pem, what)?;
    let key = parse_key(key_pem, what)?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| Error::Key {
        what: what.to_owned(),
        message: format!("certificate and key do not match or key unsupported: {e}"),
    })
}

/// Why `bundle` must be replaced at `now`, or `None` when it is good for longer than `margin`:
/// the key matches the certificate, the certificate chains to the CA bundle and covers every
/// required name, and neither it nor its CA expires within `margin`.
pub fn renewal_reason(
    bundle: &Bundle,
    opts: &CertOptions,
    now: SystemTime,
    margin: Duration,
) -> Option<String> {
    if let Err(e) = certified_key(&bundle.cert_pem, &bundle.key_pem, "serving certificate") {
        return Some(e.to_string());
    }
    let ca = match parse_certs(&bundle.ca_pem, "CA bundle") {
        Ok(ca) => ca,
        Err(e) => return Some(e.to_string()),
    };
    let chain = match parse_certs(&bundle.cert_pem, "serving certificate") {
        Ok(c) => c,
        Err(e) => return Some(e.to_string()),
    };
    let horizon = now + margin;
    match not_after_der(&chain[0], "serving certificate") {
        Ok(end) if end <= horizon => {
            return Some(format!(
                "serving certificate expires at {}, within the renewal margin",
                fmt_time(end)
            ));
        }
        Ok(_) => {}
        Err(e) => return Some(e.to_string()),
    }
    let mut roots = rustls::RootCertStore::empty();
    for der in &ca {
        if roots.add(der.clone()).is_err() {
            return Some("CA bundle holds an unusable certificate".to_owned());
        }
    }
    let verifier = match rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    {
        Ok(v) => v,
        Err(e) => return Some(format!("CA bundle: {e}")),
    };
    let at = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    for name in opts.sans() {
        let Ok(server_name) = ServerName::try_from(name.clone()) else {
            return Some(format!("required name {name:?} is not a valid server name"));
        };
        use rustls::client::danger::ServerCertVerifier;
        if let Err(e) = verifier.verify_server_cert(&chain[0], &chain[1..], &server_name, &[], at) {
            return Some(format!("serving certificate is not valid for {name}: {e}"));
        }
    }
    // The CA that signed the certificate must outlive the margin too: it comes first.
    match not_after_der(&ca[0], "CA") {
        Ok(end) if end <= horizon => Some(format!(
            "CA expires at {}, within the renewal margin",
            fmt_time(end)
        )),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

fn fmt_time(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| format!("{t:?}"))
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` into `dir`, each atomically (temp file + rename),
/// the key last-but-one and the certificate last so a watcher never pairs a new key with an
/// old certificate for long; watchers must still check the pair matches.
pub fn write_files(dir: &Path, bundle: &Bundle) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.display().to_string(),
        source,
    })?;
    for (name, body) in [
        (CA_CRT, &bundle.ca_pem),
        (TLS_KEY, &bundle.key_pem),
        (TLS_CRT, &bundle.cert_pem),
    ] {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            std::fs::write(&tmp, body)?;
            #[cfg(unix)]
            if name == TLS_KEY {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            }
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| Error::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn opts() -> CertOptions {
        let mut o = CertOptions::new("mock-kind-webhook", "mock-kind");
        o.extra_sans = vec!["127.0.0.1".to_owned()];
        o.validity = 30 * DAY;
        o.ca_validity = 365 * DAY;
        o
    }

    #[test]
    fn sans_cover_service_forms_and_extras() {
        let got = opts().sans();
        for want in [
            "mock-kind-webhook",
            "mock-kind-webhook.mock-kind",
            "mock-kind-webhook.mock-kind.svc",
            "mock-kind-webhook.mock-kind.svc.cluster.local",
            "127.0.0.1",
        ] {
            assert!(got.iter().any(|n| n == want), "missing {want} in {got:?}");
        }
    }

    #[test]
    fn pem_parsing_table() {
        let b = generate(&opts(), SystemTime::now(), None).expect("generate");
        let two = format!("{}{}", b.cert_pem, b.ca_pem);
        // (case, certificate PEM, key PEM, certificates found or the error)
        let cases: [(&str, &str, &str, Result<usize, &str>); 6] = [
            ("cert and key", &b.cert_pem, &b.key_pem, Ok(1)),
            ("chain of two", &two, &b.key_pem, Ok(2)),
            ("empty", "", &b.key_pem, Err("no PEM certificate")),
            (
                "key where the cert goes",
                &b.key_pem,
                &b.key_pem,
                Err("no PEM certificate"),
            ),
            (
                "cert where the key goes",
                &b.cert_pem,
                &b.cert_pem,
                Err("no PEM private key"),
            ),
            (
                "unterminated section",
                "-----BEGIN CERTIFICATE-----\nAAAA\n",
                &b.key_pem,
                Err("invalid PEM"),
            ),
        ];
        for (name, cert, key, want) in cases {
            let got = parse_certs(cert, name)
                .and_then(|c| parse_key(key, name).map(|_| c.len()))
                .map_err(|e| e.to_string());
            match (got, want) {
                (Ok(n), Ok(want)) => assert_eq!(n, want, "{name}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn renewal_decision_table() {
        let now = SystemTime::now();
        let fresh = generate(&opts(), now, None).expect("generate");
        let other = generate(&opts(), now, None).expect("generate other");
        let old = generate(&opts(), now - 40 * DAY, None).expect("generate expired");
        let mut wrong_name_opts = opts();
        wrong_name_opts.service = "other".to_owned();
        let wrong_name = generate(&wrong_name_opts, now, None).expect("generate wrong name");

        let cases: Vec<(&str, Bundle, Duration, Option<&str>)> = vec![
            ("fresh, small margin", fresh.clone(), DAY, None),
            (
                "fresh, margin beyond expiry",
                fresh.clone(),
                31 * DAY,
                Some("serving certificate expires"),
            ),
            (
                "expired",
                old.clone(),
                DAY,
                Some("serving certificate expires"),
            ),
            (
                "key of another pair",
                Bundle {
                    key_pem: other.key_pem.clone(),
                    ..fresh.clone()
                },
                DAY,
                Some("do not match"),
            ),
            (
                "CA that did not sign it",
                Bundle {
                    ca_pem: other.ca_pem.clone(),
                    ..fresh.clone()
                },
                DAY,
                Some("not valid for"),
            ),
            (
                "names of another service",
                wrong_name,
                DAY,
                Some("not valid for mock-kind-webhook"),
            ),
            (
                "garbage certificate",
                Bundle {
                    cert_pem: "junk".to_owned(),
                    ..fresh.clone()
                },
                DAY,
                Some("no PEM certificate"),
            ),
        ];
        for (name, bundle, margin, want) in cases {
            let got = renewal_reason(&bundle, &opts(), now, margin);
            match (want, &got) {
                (None, None) => {}
                (Some(needle), Some(reason)) => {
                    assert!(
                        reason.contains(needle),
                        "{name}: reason {reason:?} lacks {needle:?}"
                    )
                }
                _ => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn merge_keeps_valid_previous_cas_and_drops_expired_or_duplicate() {
        let now = SystemTime::now();
        let a = generate(&opts(), now, None).expect("a");
        let b = generate(&opts(), now, None).expect("b");
        let mut expired_opts = opts();
        expired_opts.ca_validity = DAY;
        let expired = generate(&expired_opts, now - 3 * DAY, None).expect("expired");

        let previous = format!("{}{}{}", b.ca_pem, expired.ca_pem, a.ca_pem);
        let merged = merge_ca_bundle(&a.ca_pem, &previous, now);
        let got = parse_certs(&merged, "merged").expect("parse");
        let want = [
            parse_certs(&a.ca_pem, "a").expect("a")[0].clone(),
            parse_certs(&b.ca_pem, "b").expect("b")[0].clone(),
        ];
        assert_eq!(got, want);

        // Only the CA of a still-valid previous certificate is carried over.
        let rotated_twice = generate(
            &opts(),
            now,
            still_needed_ca(&rotated_once(&a, now), now).as_deref(),
        )
        .expect("twice");
        assert_eq!(
            parse_certs(&rotated_twice.ca_pem, "twice")
                .expect("parse")
                .len(),
            2
        );
        let expired_cert = generate(&opts(), now - 40 * DAY, None).expect("expired cert");
        assert_eq!(still_needed_ca(&expired_cert, now), None);

        // generate() carries the previous bundle over the same way.
        let rotated = generate(&opts(), now, Some(&a.ca_pem)).expect("rotated");
        let got = parse_certs(&rotated.ca_pem, "rotated").expect("parse");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], want[0]);
        assert_eq!(renewal_reason(&rotated, &opts(), now, DAY), None);
    }

    fn rotated_once(previous: &Bundle, now: SystemTime) -> Bundle {
        generate(&opts(), now, still_needed_ca(previous, now).as_deref()).expect("rotated")
    }

    #[test]
    fn files_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = generate(&opts(), SystemTime::now(), None).expect("generate");
        write_files(dir.path(), &bundle).expect("write");
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).expect("read");
        let back = Bundle {
            ca_pem: read(CA_CRT),
            cert_pem: read(TLS_CRT),
            key_pem: read(TLS_KEY),
        };
        assert_eq!(back, bundle);
    }
}
