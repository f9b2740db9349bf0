//! Client certificate chains already verified. One client often opens many connections with
//! the same certificate: metrics-server scrapes every node of a hollow-node process, each node
//! on a port of its own, and a fresh handshake to each verified the same chain to the same CA
//! again (a quarter of the server's handshake work, measured). The chain's verdict depends on
//! the chain, the roots and the time alone, so it is remembered for a short while, and never
//! past the chain's own expiry. Each handshake still proves possession of the certificate's key:
//! its signature (CertificateVerify) is checked every time. Only successes are remembered; a
//! chain that failed is verified again, and fails again, at every handshake.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// How long a verified chain is trusted without verifying it again: the kubelet's webhook
/// authenticator caches a verdict for minutes; a minute bounds how long a CA taken out of the
/// file, or a clock set back, goes unnoticed.
pub const TTL_SECS: u64 = 60;
/// Chains remembered at once; the oldest goes first. A cluster has a handful of clients
/// with certificates (the apiserver, metrics-server, Prometheus).
pub const CAPACITY: usize = 64;

/// Verified chains (end-entity certificate first, then the intermediates, as DER) and the
/// span in which each may be trusted, from its verification until its expiry or the TTL,
/// in seconds since the Unix epoch. Pure: the caller gives the time.
#[derive(Debug, Default)]
pub struct VerifiedChains {
    entries: VecDeque<Entry>,
}

#[derive(Debug)]
struct Entry {
    chain: Vec<Vec<u8>>,
    from: u64,
    until: u64,
}

impl VerifiedChains {
    /// Whether `chain` was verified and may still be trusted at `now`.
    pub fn trusted(&self, chain: &[&[u8]], now: u64) -> bool {
        // Before `from` only with a clock set back: verify again (the chain may not be valid
        // yet at that time).
        self.entries
            .iter()
            .any(|e| e.from <= now && now < e.until && same(&e.chain, chain))
    }

    /// Remembers `chain`, verified at `now`, until the earliest of `now + TTL_SECS` and
    /// `not_after` (the soonest expiry in the chain, when known). Expired entries go first,
    /// then the oldest beyond [`CAPACITY`].
    pub fn remember(&mut self, chain: &[&[u8]], now: u64, not_after: Option<u64>) {
        let ttl_end = now.saturating_add(TTL_SECS);
        let until = not_after.map_or(ttl_end, |end| end.min(ttl_end));
        self.entries
            .retain(|e| now < e.until && !same(&e.chain, chain));
        if until <= now {
            return;
        }
        while self.entries.len() >= CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            chain: chain.iter().map(|c| c.to_vec()).collect(),
            from: now,
            until,
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn same(stored: &[Vec<u8>], chain: &[&[u8]]) -> bool {
    stored.len() == chain.len() && stored.iter().zip(chain).all(|(a, b)| a.as_slice() == *b)
}

/// A client certificate verifier that asks `inner` only for chains it has not verified lately
/// (see the module). Every other decision, signatures included, is `inner`'s.
#[derive(Debug)]
pub struct CachingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    chains: Mutex<VerifiedChains>,
}

impl CachingVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        CachingVerifier {
            inner,
            chains: Mutex::new(VerifiedChains::default()),
        }
    }
}

/// The soonest notAfter of `chain`, in seconds since the epoch; None if one does not parse
/// (then the TTL alone bounds the entry; `inner` has accepted the chain, so this is not
/// expected).
fn soonest_expiry(chain: &[&[u8]]) -> Option<u64> {
    chain
        .iter()
        .map(|der| {
            certs::not_after_der(&CertificateDer::from(*der), "client certificate")
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs())
        })
        .try_fold(u64::MAX, |soonest, end| end.map(|e| soonest.min(e)))
}

impl ClientCertVerifier for CachingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let chain: Vec<&[u8]> = std::iter::once(end_entity.as_ref())
            .chain(intermediates.iter().map(|c| c.as_ref()))
            .collect();
        let secs = now.as_secs();
        // A poisoned lock only costs the cache: verify as if nothing were remembered.
        if self.chains.lock().is_ok_and(|c| c.trusted(&chain, secs)) {
            return Ok(ClientCertVerified::assertion());
        }
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        // Parsed before the lock: other handshakes wait on it.
        let expiry = soonest_expiry(&chain);
        if let Ok(mut c) = self.chains.lock() {
            c.remember(&chain, secs, expiry);
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &[u8] = b"chain a";
    const B: &[u8] = b"chain b";
    const I: &[u8] = b"intermediate";

    #[test]
    fn what_is_trusted_and_until_when() {
        // (name, remembered (chain, at, not_after), asked chain, asked at, trusted)
        type Case = (
            &'static str,
            Vec<(Vec<&'static [u8]>, u64, Option<u64>)>,
            Vec<&'static [u8]>,
            u64,
            bool,
        );
        let cases: Vec<Case> = vec![
            ("nothing remembered", vec![], vec![A], 100, false),
            (
                "the same chain, soon after",
                vec![(vec![A], 100, None)],
                vec![A],
                159,
                true,
            ),
            (
                "the same chain, a TTL later",
                vec![(vec![A], 100, None)],
                vec![A],
                160,
                false,
            ),
            (
                "another certificate",
                vec![(vec![A], 100, None)],
                vec![B],
                101,
                false,
            ),
            (
                "the same certificate, other intermediates",
                vec![(vec![A, I], 100, None)],
                vec![A],
                101,
                false,
            ),
            (
                "the same chain with its intermediate",
                vec![(vec![A, I], 100, None)],
                vec![A, I],
                101,
                true,
            ),
            (
                "a chain that expires before the TTL",
                vec![(vec![A], 100, Some(130))],
                vec![A],
                130,
                false,
            ),
            (
                "... trusted until then",
                vec![(vec![A], 100, Some(130))],
                vec![A],
                129,
                true,
            ),
            (
                "an expired chain is not remembered",
                vec![(vec![A], 100, Some(90))],
                vec![A],
                100,
                false,
            ),
            (
                "a clock set back",
                vec![(vec![A], 100, None)],
                vec![A],
                99,
                false,
            ),
            (
                "remembered again: the later TTL counts",
                vec![(vec![A], 100, None), (vec![A], 150, None)],
                vec![A],
                200,
                true,
            ),
        ];
        for (name, remembered, asked, at, want) in cases {
            let mut c = VerifiedChains::default();
            for (chain, t, end) in remembered {
                c.remember(&chain, t, end);
            }
            assert_eq!(c.trusted(&asked, at), want, "{name}");
        }
    }

    #[test]
    fn at_most_capacity_the_oldest_goes_first() {
        let mut c = VerifiedChains::default();
        let names: Vec<Vec<u8>> = (0..=CAPACITY)
            .map(|i| format!("cert {i}").into_bytes())
            .collect();
        for n in &names {
            c.remember(&[n.as_slice()], 100, None);
        }
        assert_eq!(c.len(), CAPACITY);
        assert!(
            !c.trusted(&[names[0].as_slice()], 101),
            "the oldest was dropped"
        );
        assert!(c.trusted(&[names[CAPACITY].as_slice()], 101));
        // Expired entries make room before any live one goes.
        c.remember(&[b"late".as_slice()], 100 + TTL_SECS, None);
        assert_eq!(c.len(), 1);
    }

    /// Accepts or refuses every chain, counting the chains it was asked to verify.
    #[derive(Debug)]
    struct Counting {
        accept: bool,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl ClientCertVerifier for Counting {
        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            &[]
        }
        fn verify_client_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: UnixTime,
        ) -> Result<ClientCertVerified, rustls::Error> {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.accept {
                Ok(ClientCertVerified::assertion())
            } else {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                ))
            }
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("not used".into()))
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("not used".into()))
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![]
        }
    }

    #[test]
    fn the_inner_verifier_sees_a_chain_once_and_every_failure() {
        let at = |s: u64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(s));
        for (accept, asked_for_three) in [(true, 2), (false, 3)] {
            let inner = Arc::new(Counting {
                accept,
                asked: Default::default(),
            });
            let v = CachingVerifier::new(inner.clone());
            let (a, b) = (CertificateDer::from(A), CertificateDer::from(B));
            let results = [
                v.verify_client_cert(&a, &[], at(100)).is_ok(),
                v.verify_client_cert(&a, &[], at(110)).is_ok(),
                v.verify_client_cert(&b, &[], at(120)).is_ok(),
            ];
            assert_eq!(results, [accept; 3], "accept={accept}");
            assert_eq!(
                inner.asked.load(std::sync::atomic::Ordering::Relaxed),
                asked_for_three,
                "accept={accept}"
            );
            // A TTL after the first verification, the chain is verified again.
            let _ = v.verify_client_cert(&a, &[], at(100 + TTL_SECS));
            assert_eq!(
                inner.asked.load(std::sync::atomic::Ordering::Relaxed),
                asked_for_three + 1
            );
        }
    }

    proptest! {
        #[test]
        fn never_trusted_past_ttl_or_expiry_nor_another_chain(
            chains in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..4), 0u64..1_000, proptest::option::of(0u64..1_200)), 0..100),
            asked in proptest::collection::vec(any::<u8>(), 0..4),
            at in 0u64..1_300,
        ) {
            let mut c = VerifiedChains::default();
            for (chain, t, end) in &chains {
                c.remember(&[chain.as_slice()], *t, *end);
            }
            prop_assert!(c.len() <= CAPACITY);
            if c.trusted(&[asked.as_slice()], at) {
                // Some remembering of exactly this chain covers `at`.
                let covered = chains.iter().any(|(chain, t, end)| {
                    *chain == asked && *t <= at && at < (*t + TTL_SECS).min(end.unwrap_or(u64::MAX))
                });
                prop_assert!(covered);
            }
        }
    }
}
