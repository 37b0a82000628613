//! What a client's requests cost, for the `/metrics` of the component that owns it
//! (compare client-go's `rest_client_requests_total`), kept with `prometheus-client`.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Requests by method and answer code (`error` when none came), and their latency to the
/// answer's head.
#[derive(Clone)]
pub struct ClientMetrics {
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl ClientMetrics {
    /// Records one request.
    pub fn observe(&self, method: &http::Method, code: Option<u16>, elapsed: Duration) {
        let code = code.map_or_else(|| "error".to_owned(), |c| c.to_string());
        self.requests
            .get_or_create(&vec![("method", method.to_string()), ("code", code)])
            .inc();
        self.latency
            .get_or_create(&vec![("method", method.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    /// Adds the client's metrics to `registry` (`rest_client_requests_total`,
    /// `rest_client_request_duration_seconds`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rest_client_requests",
            "Requests to the API by method and HTTP code",
            self.requests.clone(),
        );
        registry.register(
            "rest_client_request_duration_seconds",
            "Time to the head of the API's answer, by method",
            self.latency.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_method_and_code() {
        let m = ClientMetrics::default();
        m.observe(&http::Method::GET, Some(200), Duration::from_millis(3));
        m.observe(&http::Method::GET, Some(200), Duration::from_millis(5));
        m.observe(&http::Method::POST, None, Duration::from_secs(1));
        let mut r = Registry::default();
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains(r#"rest_client_requests_total{method="GET",code="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"rest_client_requests_total{method="POST",code="error"} 1"#));
        assert!(text.contains(r#"rest_client_request_duration_seconds_count{method="GET"} 2"#));
    }
}
