//! CloudWatch metrics in Embedded Metric Format: a JSON line on stdout that
//! CloudWatch Logs turns into metrics (no API call, no extra permission).
//!
//! A small writer rather than a crate: reconcile emits a handful of gauges once per
//! run, and the format is one object — `_aws.CloudWatchMetrics` names the
//! namespace, the dimension set and each metric's unit; the values sit at the top
//! level beside the dimension values.
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::io::Write;

use serde_json::{Map, Value, json};

use crate::config::Env;

/// Where metrics go: `METRICS_NAMESPACE` (default `Telephony`) and the dimension
/// `Stack` = `STACK_NAME` (the template sets the CloudFormation stack name, so
/// staging and production do not mix; default `local`).
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub namespace: String,
    pub stack: String,
}

impl MetricsConfig {
    pub fn from_env(env: &Env) -> Self {
        Self {
            namespace: env
                .get("METRICS_NAMESPACE")
                .unwrap_or("Telephony")
                .to_owned(),
            stack: env.get("STACK_NAME").unwrap_or("local").to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Seconds,
    /// A quantity with no CloudWatch unit (an amount of money).
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
            Unit::None => "None",
        }
    }
}

/// One EMF document: values sharing one set of dimensions.
#[derive(Debug, Clone)]
pub struct MetricSet {
    dimensions: Vec<(&'static str, String)>,
    values: Vec<(&'static str, Unit, f64)>,
}

impl MetricSet {
    /// Dimensioned by `Stack` only.
    pub fn for_stack(cfg: &MetricsConfig) -> Self {
        Self {
            dimensions: vec![("Stack", cfg.stack.clone())],
            values: Vec::new(),
        }
    }

    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((name, value.into()));
        self
    }

    pub fn value(mut self, name: &'static str, unit: Unit, value: f64) -> Self {
        self.values.push((name, unit, value));
        self
    }

    /// The EMF object, stamped `timestamp_ms`.
    pub fn document(&self, cfg: &MetricsConfig, timestamp_ms: i64) -> Value {
        let mut doc = Map::new();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": cfg.namespace,
                    "Dimensions": [self.dimensions.iter().map(|(n, _)| *n).collect::<Vec<_>>()],
                    "Metrics": self.values.iter()
                        .map(|(n, u, _)| json!({"Name": n, "Unit": u.as_str()}))
                        .collect::<Vec<_>>(),
                }],
            }),
        );
        for (name, value) in &self.dimensions {
            doc.insert((*name).into(), json!(value));
        }
        for (name, _, value) in &self.values {
            doc.insert((*name).into(), json!(value));
        }
        Value::Object(doc)
    }
}

/// Write each set as one line to `out` (stdout in Lambda, where CloudWatch Logs
/// picks EMF lines out of the log stream). Metrics are best effort: a write error
/// is logged, never fails the run.
pub fn emit(cfg: &MetricsConfig, sets: &[MetricSet], out: &mut impl Write) {
    let now = chrono::Utc::now().timestamp_millis();
    for set in sets {
        let line = set.document(cfg, now).to_string();
        if let Err(e) = writeln!(out, "{line}") {
            tracing::warn!(error = %e, "could not write metrics");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_has_the_emf_shape() {
        let cfg = MetricsConfig {
            namespace: "Telephony".into(),
            stack: "staging".into(),
        };
        let set = MetricSet::for_stack(&cfg)
            .dimension("Code", "twilio_unavailable")
            .value("ReleaseFailures", Unit::Count, 2.0);
        let doc = set.document(&cfg, 1_700_000_000_000);
        assert_eq!(
            doc,
            json!({
                "_aws": {"Timestamp": 1_700_000_000_000i64, "CloudWatchMetrics": [{
                    "Namespace": "Telephony",
                    "Dimensions": [["Stack", "Code"]],
                    "Metrics": [{"Name": "ReleaseFailures", "Unit": "Count"}]}]},
                "Stack": "staging", "Code": "twilio_unavailable", "ReleaseFailures": 2.0
            })
        );
        let mut out = Vec::new();
        emit(&cfg, &[set.clone(), set], &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2);
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["ReleaseFailures"], json!(2.0));
        }
    }
}
