//! The metric names the chart's Grafana dashboard and PrometheusRule query, for the tests
//! that find each in a real `/metrics` scrape (issue 17, point 2).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Metrics only a cluster has (no series in standalone mode or a device plugin): an
/// alert may read them (the operator's own test checks them); the dashboard may not.
pub const CLUSTER_ONLY: [&str; 1] = ["kaas_gateway_node_heartbeat_age_seconds"];

/// The chart directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/kaas")
}

fn names_in(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(chart_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    metric_names(&text)
}

/// Every `kaas_…` metric name the Grafana dashboard's queries use.
pub fn dashboard_metric_names() -> BTreeSet<String> {
    names_in("dashboards/kaas.json")
}

/// Every `kaas_…` metric name in the PrometheusRule template (the recording rules' own
/// `kaas:…` names are not metrics the binaries export).
pub fn rule_metric_names() -> BTreeSet<String> {
    names_in("templates/prometheusrule.yaml")
}

/// What a scrape must hold: every dashboard name, and every rule name a cluster need not
/// supply (see [`CLUSTER_ONLY`]).
pub fn monitored_metric_names() -> BTreeSet<String> {
    let mut names = dashboard_metric_names();
    names.extend(rule_metric_names().into_iter().filter(|n| !CLUSTER_ONLY.contains(&n.as_str())));
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
        let mut n = dashboard_metric_names();
        n.extend(rule_metric_names());
        for name in CLUSTER_ONLY {
            assert!(
                !dashboard_metric_names().contains(name),
                "the dashboard reads {name}, which no scrape here has"
            );
        }
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
