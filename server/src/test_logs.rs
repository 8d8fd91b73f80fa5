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
