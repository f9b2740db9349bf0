//! This replica's membership Lease for a pool, and the fresh read of every replica's: the I/O
//! behind [`super::members::decide`].

use std::collections::HashMap;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams};

use super::members::{FENCE, LEASE_DURATION, Seen, parse_view};
use super::spec::POOL_LABEL;
use crate::{Result, api_err, is_not_found, patch_params};

/// The annotation holding the replicas a member's view names.
pub const VIEW: &str = "mock-kind.io/pool-view";
/// A member Lease nobody renewed for this long is deleted by the replica that notices.
const FORGET_AFTER_LEASES: u32 = 15;

pub struct Membership {
    api: Api<Lease>,
    pool: String,
    me: String,
    published: Vec<String>,
    /// When the last successful renewal began: past [`FENCE`], this replica runs nothing.
    renewed: Option<Instant>,
    /// Each member Lease's resourceVersion and when this replica saw it change. A Lease is
    /// live for [`LEASE_DURATION`] after that, judged on this replica's clock alone.
    observed: HashMap<String, (String, Instant)>,
}

/// The live members of a read, and whether this replica must run nothing.
pub struct Read {
    pub live: Vec<Seen>,
    pub fenced: bool,
}

impl Membership {
    pub fn new(client: &kube::Client, namespace: &str, pool: &str, me: &str) -> Self {
        Membership {
            api: Api::namespaced(client.clone(), namespace),
            pool: pool.to_string(),
            me: me.to_string(),
            published: Vec::new(),
            renewed: None,
            observed: HashMap::new(),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    fn lease_name(&self) -> String {
        format!("hollownodepool-{}-{}", self.pool, self.me)
    }

    /// Writes this replica's Lease (renewTime now, `view` as its published view), creating it
    /// when missing. On success `view` is what the others read as published: the others may
    /// count on this replica running only its share of it.
    pub async fn publish(&mut self, view: &[String]) -> Result<()> {
        let began = Instant::now();
        let name = self.lease_name();
        let lease = Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(POOL_LABEL.to_string(), self.pool.clone())].into()),
                annotations: Some([(VIEW.to_string(), view.join(","))].into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.me.clone()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                renew_time: Some(MicroTime(jiff::Timestamp::now())),
                ..Default::default()
            }),
        };
        let written = match self
            .api
            .patch(&name, &patch_params(), &Patch::Merge(&lease))
            .await
        {
            Err(e) if is_not_found(&e) => self
                .api
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ()),
            other => other.map(|_| ()),
        };
        written.map_err(api_err(format!("write member lease {name}")))?;
        self.renewed = Some(began);
        self.published = view.to_vec();
        Ok(())
    }

    /// Renews this replica's Lease, then reads every member's from the apiserver itself (not
    /// a cache): a replica starts nodes only on what the others have written.
    pub async fn sync(&mut self) -> Read {
        let view = self.published.clone();
        if let Err(e) = self.publish(&view).await {
            tracing::warn!(pool = %self.pool, error = %e, "renewing this replica's pool membership");
        }
        let fenced = self.renewed.is_none_or(|t| t.elapsed() > FENCE);
        let listed = self
            .api
            .list(&ListParams::default().labels(&format!("{POOL_LABEL}={}", self.pool)))
            .await;
        let leases = match listed {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(pool = %self.pool, error = %e, "reading the pool's members");
                return Read {
                    live: Vec::new(),
                    fenced: true,
                };
            }
        };
        let now = Instant::now();
        let mut live = Vec::new();
        for lease in leases {
            let (Some(name), Some(rv)) = (
                lease.metadata.name.clone(),
                lease.metadata.resource_version.clone(),
            ) else {
                continue;
            };
            let Some(id) = lease.spec.as_ref().and_then(|s| s.holder_identity.clone()) else {
                continue;
            };
            let seen = self
                .observed
                .entry(name.clone())
                .and_modify(|(v, t)| {
                    if *v != rv {
                        *v = rv.clone();
                        *t = now;
                    }
                })
                .or_insert((rv, now))
                .1;
            let quiet = now.duration_since(seen);
            if id != self.me && quiet > LEASE_DURATION * FORGET_AFTER_LEASES {
                self.forget(&name).await;
                continue;
            }
            if id == self.me || quiet < LEASE_DURATION {
                let view = lease
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(VIEW))
                    .map(|v| parse_view(v))
                    .unwrap_or_default();
                live.push(Seen { id, view });
            }
        }
        Read { live, fenced }
    }

    /// Deletes a member Lease long unrenewed (its replica is gone for good).
    async fn forget(&mut self, name: &str) {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                self.observed.remove(name);
                tracing::info!(pool = %self.pool, lease = name, "forgot a member gone for good");
            }
            Err(e) if is_not_found(&e) => {
                self.observed.remove(name);
            }
            Err(e) => {
                tracing::warn!(pool = %self.pool, lease = name, error = %e, "deleting a stale member lease")
            }
        }
    }

    /// Leaves the pool (after this replica stopped its nodes): the others take them at once.
    pub async fn leave(&self) {
        let name = self.lease_name();
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(pool = %self.pool, error = %e, "deleting this replica's member lease")
            }
        }
    }
}
