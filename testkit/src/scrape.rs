//! Reading a Prometheus exposition the way an operator's tooling does:
//! fetched and parsed by Python's `prometheus_client` (independent of the
//! exporter that wrote it), so tests count what happened by the metrics
//! instead of by wall-clock or CPU time.

use std::collections::HashMap;
use std::process::Command;

use super::*;

/// One scrape: value by series (`name{label=value,...}`, labels sorted).
#[derive(Debug, Clone)]
pub struct Scrape {
    series: HashMap<String, f64>,
    /// Every label value seen, for checks that none carries a secret.
    pub label_values: Vec<String>,
}

impl Scrape {
    /// The value of `name` with exactly `labels` (0 if absent).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .get(&series_key(name, labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Every series, as `name{label=value,...}` with labels sorted.
    pub fn series(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }
}

/// How a series is named in a [`Scrape`]: `name{label=value,...}`, labels
/// sorted.
pub fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

/// Scrapes `url` with Python's parser; fails the test if it does not parse.
pub fn scrape(url: &str) -> Scrape {
    let out = Command::new(tool("python3"))
        .arg(workspace_dir().join("tests/python/scrape.py"))
        .arg(url)
        .output()
        .expect("run python3 (`make test` sets up .venv with prometheus-client)");
    assert!(
        out.status.success(),
        "the exposition must parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut series = HashMap::new();
    let mut label_values = Vec::new();
    for sample in parsed["samples"].as_array().expect("samples") {
        let name = sample[0].as_str().expect("name");
        let labels: Vec<(String, String)> = sample[1]
            .as_object()
            .expect("labels")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        label_values.extend(labels.iter().map(|(_, v)| v.clone()));
        let borrowed: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        series.insert(
            series_key(name, &borrowed),
            sample[2].as_f64().unwrap_or(f64::NAN),
        );
    }
    Scrape {
        series,
        label_values,
    }
}
