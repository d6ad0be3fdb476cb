//! rangecache: the native server that carries out the core's decisions with hyper, opendal and
//! tokio. The binary is `src/main.rs`; this library holds everything it drives so the
//! integration tests and benches can reach it.
#![forbid(unsafe_code)]

pub mod config;
pub mod fsck;
pub mod http;
pub mod metrics;
pub mod storage;
pub mod tiered;

use std::sync::Arc;

use config::{Config, ConfigError, TierKind};
use storage::Tier;
use tiered::TierSlot;

/// Opens every configured tier, nearest first; an error names the tier's field.
pub async fn build_tiers(config: &Config) -> Result<Vec<TierSlot>, ConfigError> {
    let mut slots = Vec::with_capacity(config.tiers.len());
    for (idx, tier) in config.tiers.iter().enumerate() {
        let fail = |e: &dyn std::fmt::Display| ConfigError {
            field: format!("tier[{idx}]"),
            message: format!("cannot open tier {:?}: {e}", tier.name),
        };
        let opened: Arc<dyn Tier> = match &tier.kind {
            TierKind::Remote { url, token, copy_ttl } => Arc::new(
                storage::remote::RemoteTier::new(&tier.name, url, token.clone(), *copy_ttl)
                    .map_err(|e| fail(&e))?,
            ),
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
                .await
                .map_err(|e| fail(&e))?,
            ),
            TierKind::S3 { bucket, endpoint, region, prefix } => {
                // Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (SPEC §5).
                let s3 = storage::s3::S3Config {
                    bucket: bucket.clone(),
                    endpoint: endpoint.clone(),
                    region: region.clone(),
                    prefix: prefix.clone(),
                    access_key_id: None,
                    secret_access_key: None,
                };
                Arc::new(storage::s3::S3Tier::new(&tier.name, &s3).map_err(|e| fail(&e))?)
            }
        };
        slots.push(TierSlot { tier: opened, max_ttl: tier.max_ttl });
    }
    Ok(slots)
}
