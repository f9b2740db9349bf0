//! Who is asking and whether they may, as the kubelet decides it with webhook authentication
//! and authorization: a client certificate from the cluster's client CA (verified during the
//! TLS handshake) names the user (CN) and groups (O); a bearer token is checked with a
//! TokenReview; then a SubjectAccessReview asks for `<verb> nodes/<subresource>` on the node.
//! Answers are cached as the kubelet caches them (tokens 2 min, allowed 5 min, denied 30 s),
//! in bounded caches (tokens by their SHA-256, never the token itself), so a busy caller costs
//! no review per request.
//!
//! One process is many kubelets, so it first asks whether the user may act on *every* node
//! (the review without a name, as RBAC grants a rule without `resourceNames`); only when that
//! is denied does it ask node by node, as each kubelet would. A scrape of 2,000 nodes thus
//! costs one SubjectAccessReview, not 2,000, and concurrent misses share one review
//! ([`super::flights`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use crate::kubelet::flights::Flights;
use crate::kubelet::routes::Attributes;

/// How long a TokenReview's answer is trusted (the kubelet's `authentication.webhook.cacheTTL`).
pub const TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long a failed TokenReview's answer is kept, so a bad token cannot flood the apiserver.
pub const BAD_TOKEN_TTL: Duration = Duration::from_secs(30);
/// The kubelet's `authorization.webhook.cacheAuthorizedTTL` and `cacheUnauthorizedTTL`.
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries per cache; a full cache drops what expired, then everything.
pub const MAX_CACHED: usize = 4096;
/// Longest bearer token accepted (service-account JWTs are about 1 KiB).
pub const MAX_TOKEN: usize = 16 << 10;

/// What the token cache keys on: the token's SHA-256, so no token stays in memory.
type TokenKey = [u8; 32];

fn token_key(token: &str) -> TokenKey {
    let mut key = [0u8; 32];
    key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    key
}

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a request presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// The leaf of a chain the TLS handshake verified against the client CA (DER).
    Certificate(&'a [u8]),
    Token(&'a str),
    Anonymous,
}

/// The credential of a request: a verified client certificate first, then a bearer token.
pub fn credential<'a>(peer: Option<&'a [u8]>, authorization: Option<&'a str>) -> Credential<'a> {
    if let Some(der) = peer {
        return Credential::Certificate(der);
    }
    let token = authorization.and_then(|h| {
        let mut parts = h.trim().splitn(2, ' ');
        let scheme = parts.next()?;
        let token = parts.next()?.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN)
            .then_some(token)
    });
    token.map_or(Credential::Anonymous, Credential::Token)
}

/// The user a client certificate names: CN, in the groups of its O attributes.
pub fn certificate_user(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User {
        name,
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
    })
}

/// A cache whose entries expire; `now` is passed in so tests need no clock.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    max: usize,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(max: usize) -> Self {
        TtlCache {
            entries: HashMap::new(),
            max: max.max(1),
        }
    }
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(_, until)| now < *until)
            .map(|(v, _)| v.clone())
    }
    pub fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        if self.entries.len() >= self.max && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, until)| now < *until);
            if self.entries.len() >= self.max {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (value, now + ttl));
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The outcome for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed(User),
    /// 401: no credential, or one that does not authenticate.
    Unauthenticated,
    /// 403, with the kubelet's text.
    Forbidden(String),
    /// 500: the apiserver could not be asked.
    Failed(String),
}

/// The kubelet's description of what was asked, for 403 and 500 texts.
pub fn describe(user: &User, attrs: Attributes) -> String {
    format!(
        "user={}, verb={}, resource=nodes, subresource={}",
        user.name, attrs.verb, attrs.subresource
    )
}

/// (user, verb, subresource, node); the node is empty for the question about every node.
type DecisionKey = (User, &'static str, &'static str, String);

/// Which node a SubjectAccessReview names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewName<'a> {
    /// No name: every node, as a rule without `resourceNames` grants.
    Every,
    Node(&'a str),
}

impl ReviewName<'_> {
    /// The review's `resourceAttributes.name`.
    fn name(&self) -> Option<&str> {
        match self {
            ReviewName::Every => None,
            ReviewName::Node(n) => Some(n),
        }
    }
}

/// Authenticates and authorizes kubelet API requests against the apiserver.
pub struct Gate {
    client: kube::Client,
    tokens: Mutex<TtlCache<TokenKey, Option<User>>>,
    decisions: Mutex<TtlCache<DecisionKey, bool>>,
    token_flights: Flights<TokenKey, Option<User>>,
    decision_flights: Flights<DecisionKey, bool>,
    /// Reviews sent to the apiserver.
    reviews: Counter,
}

impl Gate {
    pub fn new(client: kube::Client, reviews: Counter) -> Self {
        Gate {
            client,
            tokens: Mutex::new(TtlCache::new(MAX_CACHED)),
            decisions: Mutex::new(TtlCache::new(MAX_CACHED)),
            token_flights: Flights::default(),
            decision_flights: Flights::default(),
            reviews,
        }
    }

    /// Authentication, then authorization of `attrs` on node `node`.
    pub async fn decide(&self, cred: Credential<'_>, attrs: Attributes, node: &str) -> Decision {
        let user = match cred {
            Credential::Anonymous => return Decision::Unauthenticated,
            Credential::Certificate(der) => match certificate_user(der) {
                Some(u) => u,
                None => return Decision::Unauthenticated,
            },
            Credential::Token(token) => match self.token_user(token).await {
                Ok(Some(u)) => u,
                Ok(None) => return Decision::Unauthenticated,
                Err(e) => {
                    tracing::warn!(error = %e, "TokenReview failed");
                    return Decision::Unauthenticated;
                }
            },
        };
        match self.allowed(&user, attrs, node).await {
            Ok(true) => Decision::Allowed(user),
            Ok(false) => Decision::Forbidden(format!("Forbidden ({})", describe(&user, attrs))),
            Err(e) => {
                tracing::warn!(error = %e, user = %user.name, "SubjectAccessReview failed");
                Decision::Failed(format!("Authorization error ({})", describe(&user, attrs)))
            }
        }
    }

    async fn token_user(&self, token: &str) -> Result<Option<User>, String> {
        let key = token_key(token);
        if let Some(hit) = self
            .tokens
            .lock()
            .ok()
            .and_then(|c| c.get(&key, Instant::now()))
        {
            return Ok(hit);
        }
        self.token_flights
            .share(&key, || async {
                let user = self.review_token(token).await.map_err(|e| e.to_string())?;
                let ttl = if user.is_some() {
                    TOKEN_TTL
                } else {
                    BAD_TOKEN_TTL
                };
                if let Ok(mut c) = self.tokens.lock() {
                    c.insert(key, user.clone(), ttl, Instant::now());
                }
                Ok(user)
            })
            .await
    }

    async fn review_token(&self, token: &str) -> Result<Option<User>, kube::Error> {
        self.reviews.inc();
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let got = api.create(&PostParams::default(), &review).await?;
        Ok(got
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| {
                Some(User {
                    name: u.username.filter(|n| !n.is_empty())?,
                    uid: u.uid.unwrap_or_default(),
                    groups: u.groups.unwrap_or_default(),
                    extra: u.extra.unwrap_or_default(),
                })
            }))
    }

    /// Whether `user` may `attrs` on `node`: on every node, else on this one by name.
    async fn allowed(&self, user: &User, attrs: Attributes, node: &str) -> Result<bool, String> {
        if self.decision(user, attrs, ReviewName::Every).await? {
            return Ok(true);
        }
        self.decision(user, attrs, ReviewName::Node(node)).await
    }

    /// One question, from the cache or asked once however many wait for it.
    async fn decision(
        &self,
        user: &User,
        attrs: Attributes,
        scope: ReviewName<'_>,
    ) -> Result<bool, String> {
        let name = scope.name().unwrap_or_default().to_string();
        let key = (user.clone(), attrs.verb, attrs.subresource, name);
        if let Some(hit) = self
            .decisions
            .lock()
            .ok()
            .and_then(|c| c.get(&key, Instant::now()))
        {
            return Ok(hit);
        }
        self.decision_flights
            .share(&key, || async {
                let allowed = self
                    .review_access(user, attrs, scope)
                    .await
                    .map_err(|e| e.to_string())?;
                let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
                if let Ok(mut c) = self.decisions.lock() {
                    c.insert(key.clone(), allowed, ttl, Instant::now());
                }
                Ok(allowed)
            })
            .await
    }

    async fn review_access(
        &self,
        user: &User,
        attrs: Attributes,
        scope: ReviewName<'_>,
    ) -> Result<bool, kube::Error> {
        self.reviews.inc();
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()).filter(|e| !e.is_empty()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.to_string()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.to_string()),
                    name: scope.name().map(str::to_string),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let got = api.create(&PostParams::default(), &review).await?;
        Ok(got.status.is_some_and(|s| s.allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn credentials_in_the_kubelets_order() {
        let der: &[u8] = b"cert";
        type Case<'a> = (&'a str, Option<&'a [u8]>, Option<&'a str>, Credential<'a>);
        let cases: [Case<'_>; 7] = [
            (
                "certificate wins",
                Some(der),
                Some("Bearer t"),
                Credential::Certificate(der),
            ),
            ("bearer", None, Some("Bearer abc"), Credential::Token("abc")),
            (
                "scheme case",
                None,
                Some("bearer abc"),
                Credential::Token("abc"),
            ),
            (
                "basic is not a token",
                None,
                Some("Basic abc"),
                Credential::Anonymous,
            ),
            ("empty token", None, Some("Bearer "), Credential::Anonymous),
            ("no header", None, None, Credential::Anonymous),
            ("scheme only", None, Some("Bearer"), Credential::Anonymous),
        ];
        for (name, peer, header, want) in cases {
            assert_eq!(credential(peer, header), want, "{name}");
        }
        let long = format!("Bearer {}", "x".repeat(MAX_TOKEN + 1));
        assert_eq!(credential(None, Some(&long)), Credential::Anonymous);
    }

    #[test]
    fn tokens_are_cached_by_digest_only() {
        let cases = [
            ("same token, same key", "abc", "abc", true),
            ("other token, other key", "abc", "abd", false),
            ("prefix is not the token", "abc", "ab", false),
        ];
        for (name, a, b, same) in cases {
            assert_eq!(token_key(a) == token_key(b), same, "{name}");
            assert_ne!(
                &token_key(a)[..a.len()],
                a.as_bytes(),
                "{name}: not the token itself"
            );
        }
    }

    #[test]
    fn certificate_names_user_and_groups() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let user = certificate_user(cert.der()).expect("user");
        assert_eq!(user.name, "kube-apiserver-kubelet-client");
        assert_eq!(user.groups, vec!["system:masters".to_string()]);
        assert_eq!(certificate_user(b"not a certificate"), None);
    }

    #[test]
    fn cache_entries_expire_and_stay_bounded() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = TtlCache::new(2);
        c.insert("a", 1, s(10), t0);
        let cases = [
            ("fresh", "a", t0 + s(9), Some(1)),
            ("expired", "a", t0 + s(10), None),
            ("never stored", "b", t0, None),
        ];
        for (name, key, at, want) in cases {
            assert_eq!(c.get(&key, at), want, "{name}");
        }
        c.insert("b", 2, s(10), t0);
        // Full: the expired entry makes room at t0 + 20.
        c.insert("c", 3, s(10), t0 + s(20));
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&"c", t0 + s(20)), Some(3));
    }

    proptest! {
        #[test]
        fn cache_never_grows_past_its_bound(ops in proptest::collection::vec((0u8..50, 0u64..100, 1u64..50), 0..200)) {
            let t0 = Instant::now();
            let mut c = TtlCache::new(8);
            for (key, at, ttl) in ops {
                let now = t0 + Duration::from_secs(at);
                c.insert(key, at, Duration::from_secs(ttl), now);
                prop_assert!(c.len() <= 8);
                prop_assert_eq!(c.get(&key, now), Some(at));
            }
        }
    }
}
