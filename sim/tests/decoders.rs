//! Issue 16, point 7: the simulator's decoders of user input never panic. Any text as a
//! trace of each format, and any scenario — a valid one with its numbers replaced by
//! arbitrary ones, or any YAML — end in a result or a clear error.

use std::path::Path;

use kaas_sim::scenario::Scenario;
use kaas_sim::simulate::simulate;
use proptest::prelude::*;
use serde_json::Value;

const BASE: &str = "name: fuzz\ncluster: [{ name: gpu, memoryBytes: 1000000000, count: 1 }]\n\
    functions: [{ name: f, slo: { deadlineMs: 100 }, profile: [{ acceleratorClass: gpu, runtimeMs: 1 }] }]\n\
    policy: { name: balance }\ndurationS: 1\nmaxRequests: 200\n";

/// Rows a trace of any format might hold: numbers, names, timestamps, quotes, separators.
fn trace_text() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        any::<f64>().prop_map(|f| f.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        Just("f".to_string()),
        Just("\"f, quoted\"".to_string()),
        Just("2023-11-16 18:17:03.97".to_string()),
        "\\PC{0,6}",
    ];
    let row = prop::collection::vec(field, 0..16).prop_map(|f| f.join(","));
    prop::collection::vec(row, 0..12).prop_map(|rows| rows.join("\r\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_trace_runs_or_names_the_bad_row(text in trace_text(), format in prop::sample::select(vec!["csv", "azure2021", "azure-llm", "azure2019"])) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.csv"), &text).unwrap();
        let yaml = format!("{BASE}workload: {{ trace: {{ format: {format}, path: t.csv }} }}\n");
        if let Ok(s) = Scenario::from_yaml(&yaml, dir.path())
            && let Err(e) = simulate(&s, "balance", 1.0, None)
        {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn any_scenario_numbers_run_or_say_why(numbers in prop::collection::vec(prop_oneof![any::<f64>().prop_map(Value::from), any::<i64>().prop_map(Value::from), Just(Value::from(0)), Just(Value::from(u64::MAX))], 40)) {
        for file in ["heavy-tailed", "hetero-cold"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/scenarios/{file}.yaml"));
            let text = std::fs::read_to_string(&path).unwrap();
            let mut v: Value = serde_yaml_ng::from_str(&text).unwrap();
            let mut n = 0;
            mutate(&mut v, &numbers, &mut n);
            // Keep runs short whatever the numbers say.
            v["maxRequests"] = Value::from(500);
            let yaml = serde_yaml_ng::to_string(&v).unwrap();
            if let Ok(s) = Scenario::from_yaml(&yaml, path.parent().unwrap()) {
                let _ = simulate(&s, "slo-aware", 1.0, None);
            }
        }
    }

    #[test]
    fn any_yaml_is_a_scenario_or_an_error(text in "\\PC{0,300}") {
        let _ = Scenario::from_yaml(&text, Path::new("."));
    }
}

fn mutate(v: &mut Value, numbers: &[Value], n: &mut usize) {
    match v {
        Value::Number(_) => {
            *v = numbers[*n % numbers.len()].clone();
            *n += 1;
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mutate(x, numbers, n)),
        Value::Object(o) => o.values_mut().for_each(|x| mutate(x, numbers, n)),
        _ => {}
    }
}

/// The harness above reaches the simulator: a valid trace in the same scenario runs.
#[test]
fn the_fuzzed_scenario_runs_with_a_valid_trace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), "f,1\r\n\"f\",2\r\n").unwrap();
    let yaml = format!("{BASE}workload: {{ trace: {{ format: csv, path: t.csv }} }}\n");
    let s = Scenario::from_yaml(&yaml, dir.path()).unwrap();
    let r = simulate(&s, "balance", 1.0, None).unwrap();
    assert_eq!(r.report.requests, 2);
}
