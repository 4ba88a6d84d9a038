//! What the connector layer counts: requests by connector and outcome
//! (HTTP status, `ok` or `error`), LLM tokens and rate-limit waits. The
//! status API's registry shows them under the names [`ConnectorMetrics::register`]
//! gives.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The connector layer's counters. Cheap to clone (shared series).
#[derive(Clone, Default)]
pub struct ConnectorMetrics {
    pub requests: Family<Vec<(String, String)>, Counter>,
    pub llm_tokens: Family<Vec<(String, String)>, Counter>,
    pub rate_limited: Family<Vec<(String, String)>, Counter>,
}

impl ConnectorMetrics {
    pub fn request(&self, connector: &str, status: &str) {
        self.requests
            .get_or_create(&vec![
                ("connector".to_string(), connector.to_string()),
                ("status".to_string(), status.to_string()),
            ])
            .inc();
    }

    pub fn tokens(&self, connector: &str, n: u64) {
        self.llm_tokens
            .get_or_create(&vec![("connector".to_string(), connector.to_string())])
            .inc_by(n);
    }

    pub fn limited(&self, connector: &str) {
        self.rate_limited
            .get_or_create(&vec![("connector".to_string(), connector.to_string())])
            .inc();
    }

    /// Show these counters in `registry` (counter names get `_total` from
    /// the encoder).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "multijob_connector_requests",
            "Connector calls by connector and outcome (HTTP status, ok or error)",
            self.requests.clone(),
        );
        registry.register(
            "multijob_llm_tokens",
            "LLM tokens used, by connector",
            self.llm_tokens.clone(),
        );
        registry.register(
            "multijob_rate_limited",
            "Connector calls that waited for their rate limit, by connector",
            self.rate_limited.clone(),
        );
    }
}
