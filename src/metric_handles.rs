//! Metric handles registered once per combination of static label values.
//!
//! A `metrics::counter!(name, "op" => op)` call whose label values are not
//! literals builds its label list and registers (looks up) the metric on
//! every call: two or three heap allocations and a hash of the key. On a
//! path taken once per request that was several allocations per read
//! (docs/benchmarks.md, stop 26). [`Handles`] keeps the handle of each
//! label combination it has seen, so later calls cost a read lock and a
//! clone of an `Arc`.

use std::collections::HashMap;
use std::sync::RwLock;

/// The handles of one metric, by its `N` static label values. `make`
/// registers the metric for a combination not seen yet. A handle
/// registered before the process's recorder is installed stays a no-op:
/// use these only on paths that run after it (a node installs it in
/// `Node::start`, before it serves anything). This module imports nothing
/// of the crate, so any layer may use it.
pub struct Handles<H, const N: usize> {
    make: fn(&[&'static str; N]) -> H,
    seen: RwLock<HashMap<[&'static str; N], H>>,
}

impl<H: Clone, const N: usize> Handles<H, N> {
    /// An empty set; `make` registers one combination's handle.
    pub fn new(make: fn(&[&'static str; N]) -> H) -> Self {
        Handles {
            make,
            seen: RwLock::new(HashMap::new()),
        }
    }

    /// The handle for `labels`, registered on first use.
    pub fn get(&self, labels: [&'static str; N]) -> H {
        if let Some(h) = self
            .seen
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&labels)
        {
            return h.clone();
        }
        self.seen
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(labels)
            .or_insert_with(|| (self.make)(&labels))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_combination_is_registered_once_and_counts_into_the_recorder() {
        let _installed = crate::telemetry::metrics_handle();
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let handles: Handles<metrics::Counter, 2> = Handles::new(|[a, b]| {
            MADE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            metrics::counter!("meridian_test_handles_total", "a" => *a, "b" => *b)
        });
        for _ in 0..3 {
            handles.get(["x", "y"]).increment(1);
        }
        handles.get(["x", "z"]).increment(5);
        assert_eq!(MADE.load(std::sync::atomic::Ordering::SeqCst), 2);
        let recorder = crate::telemetry::metrics_handle();
        let text = recorder.render();
        assert!(
            text.contains(r#"meridian_test_handles_total{a="x",b="y"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"meridian_test_handles_total{a="x",b="z"} 5"#),
            "{text}"
        );
    }
}
