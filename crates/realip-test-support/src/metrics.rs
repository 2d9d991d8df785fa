//! The `metrics` facade's values as a test reads them, from `metrics-util`'s debugging
//! recorder.

use std::collections::BTreeMap;
use std::future::Future;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

pub use metrics_util::debugging::Snapshotter;

/// Runs `script` to completion on a current-thread runtime (I/O and timers enabled) with a
/// debugging recorder installed on this thread only, so tests running in parallel do not
/// mix their values. `script` gets the recorder's snapshotter, to [`read`] values while it
/// runs; the same snapshotter is returned, to read them afterwards.
pub fn record<F, Fut>(script: F) -> Snapshotter
where
    F: FnOnce(Snapshotter) -> Fut,
    Fut: Future<Output = ()>,
{
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    // The script is polled on this thread only, where the recorder is installed.
    metrics::with_local_recorder(&recorder, || runtime.block_on(script(snapshotter.clone())));
    snapshotter
}

/// The values recorded, by `name{label=value,...}` (`name` alone without labels): counters
/// and gauges as their value, histograms as their number of samples. The debugging recorder
/// drains every value it reports.
pub fn read(snapshotter: &Snapshotter) -> BTreeMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = if labels.is_empty() {
                key.name().to_owned()
            } else {
                format!("{}{{{}}}", key.name(), labels.join(","))
            };
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(samples) => samples.len() as f64,
            };
            (name, value)
        })
        .collect()
}
