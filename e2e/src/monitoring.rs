//! The metric names the chart's Grafana dashboard and PrometheusRule query, for the tests
//! that find each in a real `/metrics` scrape (issue 17, point 2).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Metrics only a cluster has (no series in standalone mode): checked by the operator's
/// own test instead.
pub const CLUSTER_ONLY: [&str; 1] = ["kaas_gateway_node_heartbeat_age_seconds"];

/// The chart directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/kaas")
}

/// Every `kaas_…` metric name in the dashboard JSON and the PrometheusRule template (the
/// recording rules' own `kaas:…` names are not metrics the binaries export).
pub fn monitored_metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in ["dashboards/kaas.json", "templates/prometheusrule.yaml"] {
        let text = std::fs::read_to_string(chart_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        names.extend(metric_names(&text));
    }
    names
}

/// The `kaas_[a-z0-9_]+` words of `text`.
pub fn metric_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("kaas_") {
        let before = rest[..i].chars().next_back();
        let tail = &rest[i..];
        let end = tail.find(|c: char| !word(c)).unwrap_or(tail.len());
        if before.is_none_or(|c| !word(c) && c != ':') {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end.max(1)..];
    }
    out
}

/// The sample names of a Prometheus text exposition.
pub fn exposed(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_whole_words_and_not_recording_rules() {
        let n = metric_names(
            "sum(rate(kaas_gateway_invocations_total{x=\"y\"}[5m])) / kaas:function_slo_miss_ratio:rate5m, xkaas_no",
        );
        assert_eq!(n.into_iter().collect::<Vec<_>>(), ["kaas_gateway_invocations_total"]);
        let e = exposed("# TYPE a counter\na_total{l=\"v\"} 1\nb 2\n");
        assert_eq!(e.into_iter().collect::<Vec<_>>(), ["a_total", "b"]);
    }

    #[test]
    fn the_dashboard_and_rules_query_the_families_the_issue_asks_for() {
        let n = monitored_metric_names();
        for needed in [
            "kaas_gateway_function_slo_met_total",
            "kaas_gateway_function_latency_seconds_bucket",
            "kaas_executor_rejections_total",
            "kaas_gateway_function_cold_starts_total",
            "kaas_executor_device_busy_seconds_total",
            "kaas_executor_memory_in_use_bytes",
            "kaas_executor_queued_requests",
            "kaas_executor_device_healthy",
            "kaas_gateway_node_heartbeat_age_seconds",
            "kaas_device_plugin_kaasnode_publish_errors_total",
        ] {
            assert!(n.contains(needed), "{needed} is not queried: {n:?}");
        }
    }
}
