//! `[cluster]` read from the configuration.

use intake_config::Reader;

use crate::{ClusterConfig, check_url};

impl ClusterConfig {
    /// Reads `[cluster]`, recording every problem in `r`.
    pub fn read(r: &mut Reader<'_>) -> ClusterConfig {
        let d = ClusterConfig::default();
        let redis_url: String = r.get("cluster.redis_url", d.redis_url.clone());
        if !redis_url.is_empty()
            && let Err(e) = check_url(&redis_url)
        {
            r.error("cluster.redis_url", e.to_string());
        }
        ClusterConfig {
            redis_url,
            key_prefix: r.get("cluster.key_prefix", d.key_prefix.clone()),
            sync_interval: r.timeout("cluster.sync_interval", d.sync_interval),
            timeout: r.timeout("cluster.timeout", d.timeout),
        }
    }
}
