//! Prometheus metrics: link decisions by outcome and channel, refusals by code, request latency
//! per endpoint, database pool use. Served as text at `GET /metrics`.
//!
//! Every label set is registered before the first request is answered (channels from the
//! configuration, outcomes and refusal codes from their enums when the metrics are made,
//! endpoints from the HTTP layer's route table, which it hands over with
//! [`Metrics::register_endpoints`] before its first request), and the hot path holds the counters
//! themselves: counting is a map lookup by `&str` and an atomic add, with no allocation and no
//! lock.

use std::collections::HashMap;
use std::sync::OnceLock;

use actix_web::http::Method;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::domain::{Answer, ChannelDirectory, Outcome, Refusal};
use crate::storage::Db;

/// The label of decisions whose channel is unknown (the client id maps to no channel).
const NO_CHANNEL: &str = "none";
/// The endpoint label of requests that matched no route.
const UNMATCHED: &str = "unmatched";
/// Latency buckets, in seconds: from half a millisecond (a cached sign-in) to five seconds.
const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// The decision outcomes, in the order of [`outcome_index`].
const OUTCOMES: [&str; 6] = [
    "Linked",
    "Created",
    "AlreadyLinked",
    "WouldLink",
    "WouldCreate",
    "Refused",
];

/// The service's metrics, on a registry of their own (so several servers in one process, as in
/// the tests, never share counters).
pub struct Metrics {
    registry: Registry,
    decisions: HashMap<String, [IntCounter; OUTCOMES.len()]>,
    decisions_without_channel: [IntCounter; OUTCOMES.len()],
    refusals: [IntCounter; Refusal::ALL.len()],
    latency_vec: HistogramVec,
    /// Per endpoint and method, once the HTTP layer has named its endpoints.
    latency: OnceLock<HashMap<&'static str, Vec<(Method, Histogram)>>>,
    latency_unmatched: Histogram,
    pool_connections: IntGauge,
    pool_idle: IntGauge,
    pool_in_use: IntGauge,
    pool_max: IntGauge,
    /// Webhook attempts by outcome ([`DELIVERY_OUTCOMES`]).
    deliveries: [IntCounter; DELIVERY_OUTCOMES.len()],
    oldest_pending_delivery: IntGauge,
    audit_queue_waits: IntCounter,
}

/// The outcomes of a webhook attempt: delivered, to be tried again, failed for good.
pub const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "retry", "failed"];

impl Metrics {
    /// Registers every metric and the label sets of decisions (for each configured channel) and
    /// refusals; the endpoints' come with [`Metrics::register_endpoints`].
    pub fn new(channels: &ChannelDirectory) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let decisions_vec = IntCounterVec::new(
            Opts::new(
                "autolink_decisions_total",
                "Link decisions taken on B2C's calls, by channel and outcome (Refused for refusals).",
            ),
            &["channel", "outcome"],
        )?;
        registry.register(Box::new(decisions_vec.clone()))?;
        let per_channel = |channel: &str| -> [IntCounter; OUTCOMES.len()] {
            OUTCOMES.map(|outcome| decisions_vec.with_label_values(&[channel, outcome]))
        };
        let decisions = channels
            .all()
            .iter()
            .map(|c| (c.id.clone(), per_channel(&c.id)))
            .collect();
        let decisions_without_channel = per_channel(NO_CHANNEL);

        let refusals_vec = IntCounterVec::new(
            Opts::new(
                "autolink_refusals_total",
                "Refusals of B2C's calls, by refusal code.",
            ),
            &["code"],
        )?;
        registry.register(Box::new(refusals_vec.clone()))?;
        let refusals = Refusal::ALL.map(|r| refusals_vec.with_label_values(&[r.code()]));

        let latency_vec = HistogramVec::new(
            HistogramOpts::new(
                "autolink_http_request_duration_seconds",
                "Time from receiving a request to its answer, by endpoint (route pattern) and method.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["endpoint", "method"],
        )?;
        registry.register(Box::new(latency_vec.clone()))?;
        let latency_unmatched = latency_vec.with_label_values(&[UNMATCHED, "any"]);

        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let pool_connections = gauge(
            "autolink_db_pool_connections",
            "Database connections open (in use and idle).",
        )?;
        let pool_idle = gauge(
            "autolink_db_pool_idle_connections",
            "Database connections open and idle.",
        )?;
        let pool_in_use = gauge(
            "autolink_db_pool_in_use_connections",
            "Database connections taken by requests.",
        )?;
        let pool_max = gauge(
            "autolink_db_pool_max_connections",
            "Most database connections the pool opens.",
        )?;
        let deliveries_vec = IntCounterVec::new(
            Opts::new(
                "autolink_webhook_attempts_total",
                "Webhook delivery attempts, by outcome: delivered, retry (failed, tried again later), failed (the last attempt of its schedule failed).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(deliveries_vec.clone()))?;
        let deliveries = DELIVERY_OUTCOMES.map(|o| deliveries_vec.with_label_values(&[o]));
        let audit_queue_waits = IntCounter::new(
            "autolink_audit_queue_waits_total",
            "Answers that waited for room in the audit queue: the database took longer than the queue holds to append the events of read-only decisions.",
        )?;
        registry.register(Box::new(audit_queue_waits.clone()))?;
        let oldest_pending_delivery = gauge(
            "autolink_webhook_oldest_pending_seconds",
            "Age of the oldest pending webhook delivery, in seconds (0: none), as this instance's dispatcher last read it.",
        )?;
        Ok(Metrics {
            registry,
            deliveries,
            oldest_pending_delivery,
            audit_queue_waits,
            decisions,
            decisions_without_channel,
            refusals,
            latency_vec,
            latency: OnceLock::new(),
            latency_unmatched,
            pool_connections,
            pool_idle,
            pool_in_use,
            pool_max,
        })
    }

    /// Counts a decision on a channel (`None` when the request's channel is unknown).
    pub fn decision(&self, channel: Option<&str>, answer: &Answer) {
        let counters = channel
            .and_then(|c| self.decisions.get(c))
            .unwrap_or(&self.decisions_without_channel);
        match answer {
            Ok(resolution) => counters[outcome_index(resolution.outcome)].inc(),
            Err(refusal) => {
                counters[OUTCOMES.len() - 1].inc();
                if let Some(index) = Refusal::ALL.iter().position(|r| r == refusal) {
                    self.refusals[index].inc();
                }
            }
        }
    }

    /// Counts an answer that waited for room in the audit queue.
    pub fn audit_queue_wait(&self) {
        self.audit_queue_waits.inc();
    }

    /// Answers that waited for room in the audit queue so far.
    pub fn audit_queue_waits(&self) -> u64 {
        self.audit_queue_waits.get()
    }

    /// Counts a webhook attempt's outcome (one of [`DELIVERY_OUTCOMES`]).
    pub fn delivery(&self, outcome: &str) {
        if let Some(index) = DELIVERY_OUTCOMES.iter().position(|o| *o == outcome) {
            self.deliveries[index].inc();
        }
    }

    /// Sets the age of the oldest pending webhook delivery.
    pub fn oldest_pending_delivery(&self, seconds: i64) {
        self.oldest_pending_delivery.set(seconds.max(0));
    }

    /// Registers a latency histogram for each endpoint (route pattern and method). Only the first
    /// call registers; the HTTP layer makes it before it answers its first request.
    pub fn register_endpoints(&self, endpoints: impl IntoIterator<Item = (&'static str, Method)>) {
        self.latency.get_or_init(|| {
            let mut latency: HashMap<&'static str, Vec<(Method, Histogram)>> = HashMap::new();
            for (path, method) in endpoints {
                let histogram = self.latency_vec.with_label_values(&[path, method.as_str()]);
                latency.entry(path).or_default().push((method, histogram));
            }
            latency
        });
    }

    /// Records a request's latency under its route pattern (`None`: it matched no route, or the
    /// endpoints are not registered).
    pub fn observe_request(&self, endpoint: Option<&str>, method: &Method, seconds: f64) {
        let histogram = endpoint
            .and_then(|e| self.latency.get()?.get(e))
            .and_then(|by_method| by_method.iter().find(|(m, _)| m == method))
            .map(|(_, h)| h)
            .unwrap_or(&self.latency_unmatched);
        histogram.observe(seconds);
    }

    /// The metrics in the Prometheus text format, with the pool use read now.
    pub fn render(&self, db: &Db) -> Result<String, prometheus::Error> {
        let (connections, idle, max) = db.pool_state();
        self.pool_connections.set(i64::from(connections));
        self.pool_idle.set(i64::from(idle));
        self.pool_in_use
            .set(i64::from(connections.saturating_sub(idle)));
        self.pool_max.set(i64::from(max));
        let mut buffer = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

fn outcome_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Linked => 0,
        Outcome::Created => 1,
        Outcome::AlreadyLinked => 2,
        Outcome::WouldLink => 3,
        Outcome::WouldCreate => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Resolution;
    use crate::domain::{Channel, CustomerType};

    fn channels() -> ChannelDirectory {
        ChannelDirectory::new(
            vec![Channel {
                id: "web".into(),
                legal_entity: "USRT".into(),
                customer_type: CustomerType::B2C,
                client_ids: vec!["abc".into()],
                linking_enabled: None,
            }],
            None,
        )
        .unwrap()
    }

    #[test]
    fn outcome_names_follow_the_engine() {
        for (index, outcome) in [
            Outcome::Linked,
            Outcome::Created,
            Outcome::AlreadyLinked,
            Outcome::WouldLink,
            Outcome::WouldCreate,
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(outcome_index(outcome), index);
            assert_eq!(OUTCOMES[index], outcome.as_str());
        }
    }

    #[test]
    fn decisions_and_refusals_are_counted_under_their_labels() {
        let metrics = Metrics::new(&channels()).unwrap();
        metrics.decision(
            Some("web"),
            &Ok(Resolution {
                outcome: Outcome::Linked,
                account_number: Some("C-1".into()),
                channel: "web".into(),
            }),
        );
        metrics.decision(None, &Err(Refusal::UnknownChannel));
        metrics.register_endpoints([("/healthz", Method::GET)]);
        metrics.register_endpoints([("/ignored", Method::GET)]);
        metrics.observe_request(Some("/healthz"), &Method::GET, 0.001);
        metrics.observe_request(Some("/ignored"), &Method::GET, 0.001);
        let text = metrics
            .registry
            .gather()
            .iter()
            .map(|f| format!("{f:?}"))
            .collect::<String>();
        assert!(text.contains("web"));
        assert_eq!(metrics.decisions["web"][0].get(), 1);
        assert_eq!(metrics.decisions_without_channel[5].get(), 1);
        assert_eq!(metrics.refusals[3].get(), 1);
        let healthz = &metrics.latency.get().unwrap()["/healthz"];
        assert_eq!(healthz[0].1.get_sample_count(), 1);
        assert_eq!(metrics.latency_unmatched.get_sample_count(), 1);
    }
}
