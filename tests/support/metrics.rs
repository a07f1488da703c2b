//! Metric names in rule files, dashboards and PromQL, checked against the metric catalogue.

/// The `hunter_*` metric names in a rule file, dashboard or PromQL text (recording rule names
/// such as `hunter:x:sum` are not metric names and are skipped).
pub fn metric_names_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("hunter_") {
        let start = at + found;
        let preceded_by_word = start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || matches!(bytes[start - 1], b'_' | b':'));
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded_by_word && bytes.get(end) != Some(&b':') {
            names.push(text[start..end].to_owned());
        }
        at = end;
    }
    names
}

/// Whether `series` is a catalogued metric, or a histogram's `_bucket`, `_sum` or `_count`.
pub fn is_catalogued_series(series: &str) -> bool {
    use hunter_core::telemetry::{MetricKind, metric};
    if metric(series).is_some() {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        series
            .strip_suffix(suffix)
            .and_then(metric)
            .is_some_and(|m| m.kind == MetricKind::Histogram)
    })
}

/// The sum of the samples of `name` in Prometheus text whose labels include every
/// `label="value"` of `labels`; `None` when no sample matches (the series is not exported yet).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name != name
            || !labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Waits until the consumer group of `stage` has committed everything on `topic`: the
/// `hunter_kafka_consumer_lag_records` the process at `metrics_url` exports sums to 0. Offsets
/// are stored only once a message's effect was acknowledged, so then every effect of every
/// record on the topic (a lead, a row) is already out: what is read afterwards is final.
pub async fn wait_for_no_lag(
    metrics_url: &str,
    stage: &str,
    topic: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    crate::wait_for(
        &format!("{stage}'s lag on {topic} to reach 0 ({metrics_url})"),
        timeout,
        || async {
            let text = reqwest::get(metrics_url).await?.text().await?;
            let lag = metric_sum(
                &text,
                "hunter_kafka_consumer_lag_records",
                &[("stage", stage), ("topic", topic)],
            );
            Ok((lag == Some(0.0)).then_some(()))
        },
    )
    .await
}
