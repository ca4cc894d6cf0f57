//! Capture the JSON log lines code under test writes, with the production
//! formatter and filters, to assert on them (and on what they never contain).

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

pub struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = Writer;
    fn make_writer(&'a self) -> Self::Writer {
        Writer(self.0.clone())
    }
}

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }

    /// Every line, parsed (each must be JSON).
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
            .collect()
    }
}

/// Capture everything at `trace` (libraries still capped by the production filter)
/// on this thread until the guard drops. Use with a current-thread runtime.
pub fn capture() -> (CapturedLogs, DefaultGuard) {
    ask_every_time_globally();
    let logs = CapturedLogs::default();
    let guard =
        tracing::subscriber::set_default(shared::telemetry::subscriber("trace", logs.clone()));
    (logs, guard)
}

/// The global default while tests capture per thread: interested in every callsite
/// "sometimes", enabled for none. tracing caches each callsite's interest over all
/// registered dispatchers, and a callsite first hit on one thread while another
/// thread's capture is being registered can keep an interest computed without that
/// capture: with the usual global default (which answers "never") the capture then
/// misses that line for the rest of the process (seen once under `cargo test`, all
/// tests in one process; nextest runs one per process). With this one in the set,
/// a stale interest is still "sometimes", so each event asks the thread's own
/// subscriber.
fn ask_every_time_globally() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        // Fails only if something else set a global default first: that one decides.
        let _ = tracing::subscriber::set_global_default(AskEveryTime);
    });
}

struct AskEveryTime;

impl tracing::Subscriber for AskEveryTime {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
