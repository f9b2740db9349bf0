//! The control plane's certificates: one CA, the apiserver's serving certificate, an admin client
//! certificate (group `system:masters`), the apiserver's kubelet client certificate, the
//! aggregation layer's front-proxy CA and client certificate (as kubeadm and kind issue them),
//! and the service-account signing key — all ECDSA P-256, which every component of
//! Kubernetes ≥ 1.20 accepts.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM texts for one control plane.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_cert: String,
    pub ca_key: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// What the apiserver shows a kubelet (logs, exec, proxy): kubeadm's
    /// `apiserver-kubelet-client`, CN `kube-apiserver-kubelet-client` in `system:masters`.
    pub kubelet_client_cert: String,
    pub kubelet_client_key: String,
    /// The aggregation layer's own CA and the client certificate the apiserver proxies to
    /// aggregated APIs with (kubeadm's `front-proxy-ca` and `front-proxy-client`).
    pub front_proxy_ca_cert: String,
    pub front_proxy_client_cert: String,
    pub front_proxy_client_key: String,
    pub service_account_key: String,
    pub service_account_pub: String,
}

impl Pki {
    pub fn generate() -> Result<Self, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let ca_key_pem = ca_key.serialize_pem();
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mock-kind-e2e-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

        // The in-cluster names let a webhook or an aggregated API reach the apiserver by its
        // service name as well; 127.0.0.1 is what every client here uses.
        let mut serving = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
            "10.96.0.1".to_string(),
        ])?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let (admin_cert, admin_key) = client_cert(&ca, "kubernetes-admin", Some("system:masters"))?;
        // kubeadm 1.20 puts the apiserver's kubelet client in system:masters, so the kubelet's
        // SubjectAccessReview for it is allowed without a binding of its own.
        let (kubelet_cert, kubelet_key) =
            client_cert(&ca, "kube-apiserver-kubelet-client", Some("system:masters"))?;
        let front_proxy_ca = self_signed_ca("front-proxy-ca")?;
        let (front_proxy_cert, front_proxy_key) =
            client_cert(&front_proxy_ca, "front-proxy-client", None)?;

        // The apiserver verifies tokens with the public half; the controller-manager signs.
        let sa_key = KeyPair::generate()?;
        Ok(Pki {
            ca_cert: ca.pem(),
            ca_key: ca_key_pem,
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            kubelet_client_cert: kubelet_cert.pem(),
            kubelet_client_key: kubelet_key.serialize_pem(),
            front_proxy_ca_cert: front_proxy_ca.pem(),
            front_proxy_client_cert: front_proxy_cert.pem(),
            front_proxy_client_key: front_proxy_key.serialize_pem(),
            service_account_key: sa_key.serialize_pem(),
            service_account_pub: sa_key.public_key_pem(),
        })
    }
}

/// A CA of its own (the front proxy's); its key is dropped, nothing here signs with it later.
fn self_signed_ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

/// A client certificate for user `cn` (in group `org`, if any) signed by `ca`.
fn client_cert(
    ca: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    org: Option<&str>,
) -> Result<(rcgen::Certificate, KeyPair), rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pem_is_of_its_kind_and_distinct() {
        let pki = Pki::generate().expect("generate");
        let cases = [
            ("ca_cert", &pki.ca_cert, "CERTIFICATE"),
            ("serving_cert", &pki.serving_cert, "CERTIFICATE"),
            ("admin_cert", &pki.admin_cert, "CERTIFICATE"),
            (
                "kubelet_client_cert",
                &pki.kubelet_client_cert,
                "CERTIFICATE",
            ),
            ("kubelet_client_key", &pki.kubelet_client_key, "PRIVATE KEY"),
            (
                "front_proxy_ca_cert",
                &pki.front_proxy_ca_cert,
                "CERTIFICATE",
            ),
            (
                "front_proxy_client_cert",
                &pki.front_proxy_client_cert,
                "CERTIFICATE",
            ),
            (
                "front_proxy_client_key",
                &pki.front_proxy_client_key,
                "PRIVATE KEY",
            ),
            ("ca_key", &pki.ca_key, "PRIVATE KEY"),
            ("serving_key", &pki.serving_key, "PRIVATE KEY"),
            ("admin_key", &pki.admin_key, "PRIVATE KEY"),
            (
                "service_account_key",
                &pki.service_account_key,
                "PRIVATE KEY",
            ),
            (
                "service_account_pub",
                &pki.service_account_pub,
                "PUBLIC KEY",
            ),
        ];
        for (name, pem, kind) in cases {
            assert!(
                pem.starts_with(&format!("-----BEGIN {kind}-----")),
                "{name}: {pem}"
            );
        }
        assert_ne!(pki.serving_key, pki.admin_key);
        assert_ne!(pki.ca_cert, pki.serving_cert);
    }

    #[test]
    fn serving_cert_names_loopback_and_admin_is_a_master() {
        let pki = Pki::generate().expect("generate");
        let serving = pem_to_der(&pki.serving_cert);
        let (_, cert) = x509_parser::parse_x509_certificate(&serving).expect("parse serving");
        let san = cert
            .subject_alternative_name()
            .expect("san ext")
            .expect("san present");
        let text = format!("{:?}", san.value.general_names);
        assert!(
            text.contains("127.0.0.1") || text.contains("[127, 0, 0, 1]"),
            "{text}"
        );
        let admin = pem_to_der(&pki.admin_cert);
        let (_, cert) = x509_parser::parse_x509_certificate(&admin).expect("parse admin");
        assert!(
            cert.subject().to_string().contains("system:masters"),
            "{}",
            cert.subject()
        );
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64")
    }
}
