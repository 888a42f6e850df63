//! Prometheus metrics: one registry per process (in `AppState`, so in-process test apps never share
//! counters), the HTTP request metrics the edge middleware records, and the `/metrics` endpoint. Knows no
//! domain: domains register their own metrics here and add [`Probe`]s for values read at scrape time.

pub mod http;
pub mod infra;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use prometheus::Error as MetricsError;

/// A source of values that are cheaper to read when scraped than to keep current (queue depth from
/// Redis, pool status). `refresh` sets its gauges; it is bounded by [`PROBE_TIMEOUT`].
pub trait Probe: Send + Sync {
    fn refresh(&self) -> BoxFuture<'_, ()>;
}

/// How long one probe may take per scrape; a slow one leaves its gauges at their last values.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Latency buckets (seconds) for HTTP requests: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Duration buckets (seconds) for work that takes longer (runs, queue waits): 10 ms to 1 h.
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

pub struct Metrics {
    registry: Registry,
    pub http: http::HttpMetrics,
    probes: Mutex<Vec<Arc<dyn Probe>>>,
}

impl Metrics {
    /// Every metric name starts with `vespid_`.
    pub fn new() -> Result<Arc<Self>, MetricsError> {
        let registry = Registry::new_custom(Some("vespid".into()), None)?;
        let http = http::HttpMetrics::register(&registry)?;
        Ok(Arc::new(Self {
            registry,
            http,
            probes: Mutex::new(Vec::new()),
        }))
    }

    pub fn counter(&self, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
        let c = IntCounter::with_opts(Opts::new(name, help))?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    pub fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
        let g = IntGauge::with_opts(Opts::new(name, help))?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }

    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, MetricsError> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }

    /// A gauge of fractional values (ages in seconds).
    pub fn float_gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<GaugeVec, MetricsError> {
        let g = GaugeVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> Result<Histogram, MetricsError> {
        let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
        self.registry.register(Box::new(h.clone()))?;
        Ok(h)
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, MetricsError> {
        let h = HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )?;
        self.registry.register(Box::new(h.clone()))?;
        Ok(h)
    }

    /// Adds a probe, refreshed before every scrape.
    pub fn probe(&self, probe: Arc<dyn Probe>) {
        self.probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(probe);
    }

    /// Refreshes the probes (concurrently, each bounded), then renders the text exposition format.
    pub async fn render(&self) -> String {
        let probes: Vec<Arc<dyn Probe>> = self
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        join_all(probes.iter().map(|p| async move {
            if tokio::time::timeout(PROBE_TIMEOUT, p.refresh())
                .await
                .is_err()
            {
                tracing::warn!("a metrics probe timed out; its gauges keep their last values");
            }
        }))
        .await;
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
