//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas never both act.
//! A replica takes the lease when it is free or expired, renews it well within its
//! duration, and stops acting as soon as a renewal fails past the deadline.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a lease is valid without renewal; a standby takes over after this.
    pub duration: Duration,
    /// How often the holder renews (and a standby retries).
    pub retry: Duration,
}

/// The outcome of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Held,
    HeldByOther(String),
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renew) = spec.renew_time.as_ref() else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renew.0 + SignedDuration::from_secs(secs) < now
}

/// Takes or renews the lease once.
pub async fn try_acquire(client: &Client, cfg: &LeaseConfig) -> Result<Attempt, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let now = Timestamp::now();
    let secs = i32::try_from(cfg.duration.as_secs()).unwrap_or(15).max(1);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::HeldByOther("?".into())),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let mine = holder == cfg.identity;
            if !mine && !holder.is_empty() && !expired(spec, now) {
                return Ok(Attempt::HeldByOther(holder));
            }
            if !mine {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.holder_identity = Some(cfg.identity.clone());
            }
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(secs);
            // resourceVersion makes this a compare-and-swap: a racing replica gets a 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::HeldByOther(holder)),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this replica holds the lease.
pub async fn acquire(client: &Client, cfg: &LeaseConfig) {
    let mut last_holder = String::new();
    loop {
        match try_acquire(client, cfg).await {
            Ok(Attempt::Held) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
                return;
            }
            Ok(Attempt::HeldByOther(h)) => {
                if h != last_holder {
                    tracing::info!(lease = %cfg.name, holder = %h, "standing by");
                    last_holder = h;
                }
            }
            Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
        }
        tokio::time::sleep(cfg.retry).await;
    }
}

/// Renews the lease until a renewal cannot be made before the lease would expire; returns
/// then, and the caller must stop acting at once.
pub async fn hold(client: &Client, cfg: &LeaseConfig) {
    let mut last_ok = std::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.retry).await;
        match try_acquire(client, cfg).await {
            Ok(Attempt::Held) => last_ok = std::time::Instant::now(),
            Ok(Attempt::HeldByOther(h)) => {
                tracing::warn!(holder = %h, "lost the lease");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
        }
        // Stop a margin before the others may take over.
        if last_ok.elapsed() + cfg.retry >= cfg.duration {
            tracing::warn!("could not renew the lease in time");
            return;
        }
    }
}

/// Gives the lease up (on clean shutdown) so a standby takes over without waiting.
pub async fn release(client: &Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    if let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await {
        if let Some(spec) = lease.spec.as_mut() {
            if spec.holder_identity.as_deref() == Some(cfg.identity.as_str()) {
                spec.holder_identity = None;
                spec.renew_time = None;
                let _ = api.replace(&cfg.name, &PostParams::default(), &lease).await;
            }
        }
    }
}
