//! rangecache: the native server that carries out the core's decisions with hyper, opendal and
//! tokio. The binary is `src/main.rs`; this library holds everything it drives so the
//! integration tests and benches can reach it.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod fsck;
pub mod get;
pub mod http;
pub mod metrics;
pub mod storage;
pub mod tiered;
pub mod tls;

use std::sync::Arc;

use config::{Config, ConfigError, TierConfig, TierKind};
use metrics::Metrics;
use storage::{Tier, TierError};
use tiered::TierSlot;

/// Opens every configured tier, nearest first; an error names the tier's field. `metrics`
/// counts what `faulty` tiers inject.
pub async fn build_tiers(config: &Config, metrics: &Metrics) -> Result<Vec<TierSlot>, ConfigError> {
    let mut slots = Vec::with_capacity(config.tiers.len());
    for (idx, tier) in config.tiers.iter().enumerate() {
        let fail = |e: &dyn std::fmt::Display| ConfigError {
            field: format!("tier[{idx}]"),
            message: format!("cannot open tier {:?}: {e}", tier.name),
        };
        let opened: Arc<dyn Tier> = match &tier.kind {
            TierKind::Faulty { inner, faults } => {
                let inner = open_tier(tier, inner).await.map_err(|e| fail(&e))?;
                faulty(inner, faults, idx, metrics)
            }
            kind => open_tier(tier, kind).await.map_err(|e| fail(&e))?,
        };
        slots.push(TierSlot { tier: opened, max_ttl: tier.max_ttl });
    }
    Ok(slots)
}

/// Opens a tier of `kind`, configured by `tier`.
async fn open_tier(tier: &TierConfig, kind: &TierKind) -> Result<Arc<dyn Tier>, TierError> {
    Ok(match kind {
        TierKind::Remote { url, token, copy_ttl, ca_file } => {
            let roots = extra_roots(tier, ca_file.as_deref())?;
            Arc::new(storage::remote::RemoteTier::with_roots(
                &tier.name,
                url,
                token.clone(),
                *copy_ttl,
                &roots,
            )?)
        }
        TierKind::Memory => Arc::new(storage::memory::MemoryTier::new(
            &tier.name,
            tier.max_size.expect("a memory tier has a max_size"),
        )),
        TierKind::Disk { path } => Arc::new(
            storage::disk::DiskTier::open(
                &tier.name,
                path,
                tier.max_size.unwrap_or(config::DEFAULT_DISK_SIZE),
            )
            .await?,
        ),
        TierKind::S3 { bucket, endpoint, region, prefix, ca_file } => {
            // Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (SPEC §5).
            let s3 = storage::s3::S3Config {
                bucket: bucket.clone(),
                endpoint: endpoint.clone(),
                region: region.clone(),
                prefix: prefix.clone(),
                access_key_id: None,
                secret_access_key: None,
            };
            let roots = extra_roots(tier, ca_file.as_deref())?;
            Arc::new(storage::s3::S3Tier::with_roots(&tier.name, &s3, &roots)?)
        }
        TierKind::Faulty { .. } => {
            unreachable!("the configuration refuses a faulty tier in a faulty tier")
        }
    })
}

#[cfg(feature = "faults")]
fn faulty(
    inner: Arc<dyn Tier>,
    faults: &config::FaultConfig,
    idx: usize,
    metrics: &Metrics,
) -> Arc<dyn Tier> {
    Arc::new(storage::faulty::FaultyTier::new(inner, faults, idx, metrics.faults_injected.clone()))
}

#[cfg(not(feature = "faults"))]
fn faulty(
    _inner: Arc<dyn Tier>,
    _faults: &config::FaultConfig,
    _idx: usize,
    _metrics: &Metrics,
) -> Arc<dyn Tier> {
    unreachable!("the configuration refuses a faulty tier without the faults feature")
}

/// The certificates of a tier's `ca_file`, none without one.
fn extra_roots(
    tier: &TierConfig,
    ca_file: Option<&std::path::Path>,
) -> Result<Vec<reqwest::Certificate>, TierError> {
    ca_file
        .map_or(Ok(Vec::new()), tls::extra_roots)
        .map_err(|message| TierError::Backend { tier: tier.name.clone(), message })
}
