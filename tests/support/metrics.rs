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
