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
    let logs = CapturedLogs::default();
    let guard =
        tracing::subscriber::set_default(shared::telemetry::subscriber("trace", logs.clone()));
    (logs, guard)
}
