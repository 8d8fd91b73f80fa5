//! What warmpool's tests share to read what the code under test logs:
//! [`Logs::capture`], the lines logged on the test's thread, and
//! [`install_global_subscriber`], the process-wide subscriber every
//! capture needs beside it (and a test's own log output).
//!
//! One copy for pool-manager's and warmpoold's unit tests and integration
//! tests (each integration test binary, each crate's unit tests, is a
//! process of its own: the global subscriber is installed once in each).
//! This crate depends on neither pool-manager nor warmpool-server, whose
//! unit tests use it.

use std::sync::{Arc, Mutex, Once};

use tracing::Level;

/// The log lines written on this thread while the guard is held, as
/// `tracing_subscriber::fmt` formats them, without colours.
///
/// The capture is the thread's default subscriber, not a global one:
/// tests running in parallel each read their own lines only. A
/// current-thread runtime's tasks (`#[tokio::test]`'s default, the paused
/// clock's; the embedded cloud's and an in-process warmpoold's tasks
/// included) run on the test's thread and are captured; a line logged on
/// another thread (a `multi_thread` runtime's workers, `spawn_blocking`,
/// `std::thread::spawn`) is not: it goes to the global subscriber only
/// (WARN and above, to the test's output).
pub struct Logs {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    /// Captures INFO and above, what the tests read (an operator's
    /// default level, warmpoold's `info`).
    pub fn capture() -> Self {
        Self::capture_at(Level::INFO)
    }

    /// Captures `level` and above. The probe's unit tests capture at DEBUG
    /// (they read only its WARN lines, through [`Logs::warnings`]).
    pub fn capture_at(level: Level) -> Self {
        install_global_subscriber();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let lines = lines.clone();
            move || LogWriter(lines.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .with_max_level(level)
            .finish();
        Self {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Everything captured so far. A test that reads only what was logged
    /// since some step notes `text().len()` before it and slices after.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).into_owned()
    }

    /// The lines of `level` ("WARN", "ERROR", "INFO"...), read from the
    /// level field each line has, not from its message.
    pub fn lines_at(&self, level: &str) -> Vec<String> {
        // fmt writes the timestamp, then the level, then the target.
        self.text()
            .lines()
            .filter(|line| line.split_whitespace().nth(1) == Some(level))
            .map(str::to_owned)
            .collect()
    }

    /// The WARN lines.
    pub fn warnings(&self) -> Vec<String> {
        self.lines_at("WARN")
    }

    /// How many lines of `level` say `says`.
    pub fn count(&self, level: &str, says: &str) -> usize {
        self.lines_at(level)
            .iter()
            .filter(|line| line.contains(says))
            .count()
    }
}

/// What `f` logs on this thread (INFO and above), as text.
pub fn logged(f: impl FnOnce()) -> String {
    let logs = Logs::capture();
    f();
    logs.text()
}

/// Installs, once per process, a global subscriber beside the captures:
/// WARN and above (or what `RUST_LOG` says) to the test's output, so that
/// a failing test shows the warnings of every thread, its captures' too.
///
/// [`Logs::capture`] calls it: a capture needs it. While a capture's is
/// the only subscriber registered, a log line's interest, cached
/// process-wide, is asked of the default of the thread that logs it first
/// (tokio-rs/tracing#3611): a thread without one, another test's or a
/// runtime's worker, caches "never", and every capture misses that line
/// from then on. With two registered, both are asked.
///
/// Tests that capture nothing call it for the log output alone (a daemon
/// started in-process logs on runtime threads). If something else
/// installed a global subscriber first, that one stays: it serves as well.
pub fn install_global_subscriber() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
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

#[cfg(test)]
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

    /// A line's level is read from its level field: a WARN line saying
    /// "ERROR" is no ERROR line.
    #[test]
    fn levels_are_read_from_the_level_field_not_the_message() {
        let logs = Logs::capture();
        tracing::warn!("an ERROR the cloud sent");
        tracing::info!("the WARN light is off");
        assert_eq!(logs.warnings().len(), 1, "{}", logs.text());
        assert_eq!(logs.count("WARN", "ERROR"), 1, "{}", logs.text());
        assert_eq!(logs.count("ERROR", "ERROR"), 0, "{}", logs.text());
        assert_eq!(logs.lines_at("INFO").len(), 1, "{}", logs.text());
    }

    /// Only this thread's lines are captured.
    #[test]
    fn another_threads_lines_are_not_captured() {
        let logs = Logs::capture();
        std::thread::spawn(|| tracing::warn!("from another thread"))
            .join()
            .unwrap();
        assert_eq!(logs.text(), "");
    }
}
