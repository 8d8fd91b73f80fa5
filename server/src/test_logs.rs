//! What the unit tests share to read what the code under test logs: one
//! capture, rather than a copy in each module's tests. (The integration
//! tests, another crate, have theirs in `tests/support`.)

use std::sync::{Arc, Mutex};

/// What the thread logs (INFO and above) while the guard is held.
pub(crate) struct Logs {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    pub(crate) fn capture() -> Self {
        install_global_subscriber();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let lines = lines.clone();
            move || LogWriter(lines.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        Self {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).into_owned()
    }

    /// The lines of `level` that say `says`.
    pub(crate) fn count(&self, level: &str, says: &str) -> usize {
        self.text()
            .lines()
            .filter(|line| line.contains(level) && line.contains(says))
            .count()
    }
}

/// Installs, once per process, a global subscriber (WARN and above, to
/// the test's output) beside the captures. While a capture's is the only
/// subscriber registered, a log line's interest, cached process-wide, is
/// asked of the default of the thread that logs it first
/// (tokio-rs/tracing#3611): a thread without one, another test's or a
/// runtime's worker, caches "never", and every capture misses that line
/// from then on. With two registered, both are asked.
fn install_global_subscriber() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_test_writer()
            .try_init();
    });
}

/// What `f` logs on this thread (INFO and above), as text.
pub(crate) fn logged(f: impl FnOnce()) -> String {
    let logs = Logs::capture();
    f();
    logs.text()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

mod tests {
    use super::*;

    /// A line whose callsite another thread, one without a subscriber (a
    /// test that captures nothing, a runtime's worker), logged first is
    /// still captured here.
    #[test]
    fn a_line_first_logged_on_a_thread_without_a_subscriber_is_captured() {
        fn log() {
            tracing::info!("first logged elsewhere");
        }
        let logs = Logs::capture();
        std::thread::spawn(log).join().unwrap();
        log();
        assert_eq!(
            logs.count("INFO", "first logged elsewhere"),
            1,
            "{}",
            logs.text()
        );
    }
}
