//! `warmpoolctl watch`: a live view of every pool fed by WatchPools.
//!
//! The server sends one PoolStatus per pool at start, then one marking that
//! snapshot complete, then one per change or event; we keep the latest
//! status of every pool and redraw the whole table, so each frame is
//! complete on its own. The first frame waits for the marker, so it shows
//! every pool, not those that arrived first (a server older than the marker
//! gets [`SNAPSHOT_WAIT`], less if its stream ends or fails sooner: what
//! arrived is drawn before the error). Pool events (exhausted,
//! degraded, recovered, settings changed, leak deleted, throttled, deleted)
//! are printed as `event ...` lines under the table: on a terminal the most
//! recent few, redrawn with it; elsewhere each event once, in the frame
//! after which it arrived. On a terminal a frame replaces the previous one;
//! otherwise (a pipe, a test) frames are appended, each terminated by a
//! blank line, so a reader can consume them line by line and knows a frame
//! is complete when it sees the blank line. While a throttle gate's pause
//! (a service's Retry-After, every AZ's) or quota hold keeps a pool's
//! boots waiting, a terminal is also redrawn every second, for the countdown
//! (the server does not send a pool again as its pause counts down), and
//! every 5 s while a LAST ERROR shows its age (a quiet pool may send
//! nothing for hours).

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use anyhow::bail;
use futures::{FutureExt, StreamExt};
use warmpool_client::{api, Client, ClientError};

use crate::cli::OutputFormat;
use crate::output::{pool_event_kind, pool_name, timestamp, to_json, PoolStatusView};
use crate::table::watch_table;

/// Moves the cursor home after clearing the screen.
const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

/// How long `watch` waits for the end of the server's opening snapshot
/// before it draws what it has: a server older than the marker never sends
/// it (and one with no pool sent nothing else).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// How often a terminal is redrawn while a throttle countdown shows.
const COUNTDOWN_TICK: Duration = Duration::from_secs(1);

/// How often a terminal is redrawn while a row shows an age (LAST ERROR's
/// "45s ago"), which the server sends no update for.
const AGE_TICK: Duration = Duration::from_secs(5);

/// Events a terminal frame keeps under the table.
const RECENT_EVENTS: usize = 8;

/// The latest status of every pool seen so far, ordered by (flavor, az) so
/// rows do not jump around between frames, and the pool events.
#[derive(Default)]
pub struct PoolBoard {
    pools: BTreeMap<(String, String), api::Pool>,
    /// The last few event lines, oldest first.
    recent: VecDeque<String>,
    /// Event lines not yet drawn, all of them: a pipe prints each event once,
    /// however many arrive between two frames (`recent` keeps only a few).
    fresh: Vec<String>,
}

impl PoolBoard {
    /// Records one update: the pool's new state (a deleted pool leaves the
    /// table) and its events.
    pub fn apply(&mut self, status: api::PoolStatus) {
        if let Some(pool) = status.pool {
            let key = (pool.flavor.clone(), pool.availability_zone.clone());
            if status.deleted {
                self.pools.remove(&key);
            } else {
                self.pools.insert(key, pool);
            }
        }
        for event in &status.events {
            let line = event_line(event);
            self.recent.push_back(line.clone());
            self.fresh.push(line);
        }
        while self.recent.len() > RECENT_EVENTS {
            self.recent.pop_front();
        }
    }

    /// Whether some pool's gate holds its boots, with a time left to show.
    fn counting_down(&self) -> bool {
        self.pools.values().any(|pool| {
            pool.sizing
                .as_ref()
                .and_then(|s| s.gate.as_ref())
                .is_some_and(|g| {
                    g.state == i32::from(api::ThrottleState::Throttled)
                        || g.state == i32::from(api::ThrottleState::QuotaPaused)
                })
        })
    }

    /// Whether some row shows an age (LAST ERROR's "45s ago"), which grows
    /// with no message from the server.
    fn shows_an_age(&self) -> bool {
        self.pools
            .values()
            .any(|pool| pool.last_error_at.is_some() && !pool.last_error.is_empty())
    }

    /// One frame as of `now`: the table, then on a terminal the recent
    /// events, else the events that arrived since the last frame.
    pub fn render(&mut self, terminal: bool, now: SystemTime) -> String {
        let mut frame = watch_table(self.pools.values(), now);
        let fresh = std::mem::take(&mut self.fresh);
        let lines = if terminal {
            self.recent.iter().cloned().collect()
        } else {
            fresh
        };
        for line in lines {
            frame.push_str(&line);
            frame.push('\n');
        }
        frame
    }
}

/// `event <time> <pool> <KIND> <message>`; one line, never blank, so it
/// stays inside its frame.
fn event_line(e: &api::PoolEvent) -> String {
    let at =
        e.at.as_ref()
            .map_or_else(|| "-".to_owned(), |t| timestamp(t, false));
    let pool = if e.flavor.is_empty() && e.availability_zone.is_empty() {
        "-".to_owned()
    } else {
        pool_name(&e.flavor, &e.availability_zone)
    };
    let message = crate::table::one_line(&e.message);
    format!("event {at} {pool} {} {message}", pool_event_kind(e.kind))
}

/// Writes one table frame: over the previous one on a terminal, appended
/// and followed by a blank line elsewhere.
pub fn write_frame(out: &mut impl Write, frame: &str, terminal: bool) -> std::io::Result<()> {
    if terminal {
        write!(out, "{CLEAR_SCREEN}{frame}")?;
    } else {
        writeln!(out, "{frame}")?;
    }
    out.flush()
}

/// The watch broke after the daemon had answered it. The connection worked,
/// so whatever cut it (the daemon stopping, a proxy, the network) was not its
/// setup: a hint about TLS settings would send the user the wrong way.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BrokeAfterAnswers(pub ClientError);

pub async fn run(client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    let stream = client.watch_pools().await?;
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let reader_gone = async move {
        if terminal {
            // The reader is the user: ^C ends the view.
            std::future::pending().await
        } else {
            stdout_reader_gone().await
        }
    };
    let clock = SystemTime::now;
    show(
        stream,
        &mut stdout.lock(),
        terminal,
        format,
        reader_gone,
        clock,
    )
    .await
}

/// Resolves once the reading end of stdout is closed (`| head` took what it
/// wanted), never where that cannot be known (a file has no reader to
/// lose). Quiet pools may send nothing for hours: a write would find the
/// reader gone only then, and the watch outlive its pipeline until it did.
async fn stdout_reader_gone() {
    let (gone, told) = tokio::sync::oneshot::channel();
    // poll(2) on a thread of its own: the runtime's reactor would need the
    // descriptor registered through unsafe code, and made non-blocking,
    // which the other processes sharing it do not expect. The thread
    // sleeps in the kernel until the reader goes, or for as long as the
    // process lives.
    let spawned = std::thread::Builder::new()
        .name("stdout-reader".into())
        .spawn(move || {
            if wait_for_stdout_reader_to_leave() {
                let _ = gone.send(());
            }
        });
    if spawned.is_ok() && told.await.is_ok() {
        return;
    }
    std::future::pending().await
}

/// Blocks until stdout's reader has gone (true) or it turns out that this
/// cannot be known (false). Asks for no event: poll reports errors and
/// hang-ups whatever is asked, and a pipe's writing end reports an error
/// once no reader is left, while "writable" would wake it at once.
#[cfg(unix)]
fn wait_for_stdout_reader_to_leave() -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    let stdout = stdout.as_fd();
    loop {
        let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
        match poll(&mut fds, None) {
            Ok(_) => {
                let events = fds[0].revents();
                if events.intersects(PollFlags::ERR | PollFlags::HUP) {
                    return true;
                }
                if events.contains(PollFlags::NVAL) {
                    return false;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
}

#[cfg(not(unix))]
fn wait_for_stdout_reader_to_leave() -> bool {
    false
}

/// Shows `stream` on `out` until it ends or fails (either ends the view
/// with an error: a live view has no natural end), or until `out`'s reader
/// goes: found by a failed write, or told by `reader_gone` while the view
/// waits. Frames are drawn as of `clock`'s time (the tests' follows the
/// paused tokio clock).
async fn show(
    mut stream: impl futures::Stream<Item = Result<api::PoolStatus, ClientError>> + Unpin,
    out: &mut impl Write,
    terminal: bool,
    format: OutputFormat,
    reader_gone: impl std::future::Future<Output = ()>,
    clock: impl Fn() -> SystemTime,
) -> anyhow::Result<()> {
    let mut reader_gone = std::pin::pin!(reader_gone);
    let mut board = PoolBoard::default();
    // A table's first frame is drawn once every pool has arrived.
    let mut snapshot_due =
        (format == OutputFormat::Table).then(|| tokio::time::Instant::now() + SNAPSHOT_WAIT);
    let mut answered = false;
    let failure = |e: ClientError, answered: bool| -> anyhow::Error {
        if answered {
            BrokeAfterAnswers(e).into()
        } else {
            e.into()
        }
    };
    loop {
        // Past the wait for the snapshot's end, what has arrived is drawn
        // (the empty table rather than a blank screen). A countdown, or an
        // error's age, on a terminal is redrawn as it runs; a pipe's
        // frames are a log of updates, not of the clock.
        let redraw_at = if let Some(due) = snapshot_due {
            Some(due)
        } else if terminal && board.counting_down() {
            Some(tokio::time::Instant::now() + COUNTDOWN_TICK)
        } else if terminal && board.shows_an_age() {
            Some(tokio::time::Instant::now() + AGE_TICK)
        } else {
            None
        };
        let wait = async {
            match redraw_at {
                None => Ok(stream.next().await),
                Some(at) => tokio::time::timeout_at(at, stream.next()).await,
            }
        };
        let next = tokio::select! {
            biased;
            () = &mut reader_gone => return Ok(()),
            next = wait => next,
        };
        let next = match next {
            Ok(next) => next,
            Err(_) => {
                snapshot_due = None;
                let frame = board.render(terminal, clock());
                if let Err(e) = write_frame(out, &frame, terminal) {
                    return unless_reader_left(e);
                }
                continue;
            }
        };
        let status = match next {
            Some(Ok(status)) => status,
            end => {
                // An end or error while the first frame waits for the
                // snapshot's marker (a server older than it, stopping):
                // what arrived is drawn before the view ends, as the
                // batched path below does.
                if snapshot_due.is_some() && answered {
                    let frame = board.render(terminal, clock());
                    if let Err(e) = write_frame(out, &frame, terminal) {
                        return unless_reader_left(e);
                    }
                }
                match end {
                    Some(Err(e)) => return Err(failure(e, answered)),
                    _ => break,
                }
            }
        };
        answered = true;
        match format {
            OutputFormat::Json => {
                // One object per update, as it arrives: a log, not a view.
                let line = serde_json::to_string(&to_json(PoolStatusView::from(&status)))?;
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    return unless_reader_left(e);
                }
            }
            OutputFormat::Table => {
                let mut complete = status.snapshot_complete;
                board.apply(status);
                // Fold in updates that have already arrived so we draw one
                // frame for them instead of a partial table per message.
                let mut failed = None;
                while let Some(Some(item)) = stream.next().now_or_never() {
                    match item {
                        Ok(status) => {
                            complete |= status.snapshot_complete;
                            board.apply(status);
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if complete {
                    snapshot_due = None;
                }
                // What arrived before an error (a pool's last message at
                // shutdown) is drawn before the error ends the view.
                if snapshot_due.is_some() && failed.is_none() {
                    continue;
                }
                let frame = board.render(terminal, clock());
                if let Err(e) = write_frame(out, &frame, terminal) {
                    return unless_reader_left(e);
                }
                if let Some(e) = failed {
                    return Err(failure(e, true));
                }
            }
        }
    }
    bail!("the server closed the watch stream")
}

/// How a view ends whose write failed: as done when its reader has gone
/// (`| head`), the one natural end a live view has; else with the error.
fn unless_reader_left(e: std::io::Error) -> anyhow::Result<()> {
    if crate::reader_left(&e) {
        Ok(())
    } else {
        Err(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample_pools;

    fn status(pool: api::Pool) -> api::PoolStatus {
        api::PoolStatus {
            pool: Some(pool),
            ..Default::default()
        }
    }

    #[test]
    fn board_keeps_latest_status_per_pool_in_order() {
        let mut pools = sample_pools();
        let mut board = PoolBoard::default();
        board.apply(status(pools[1].clone()));
        board.apply(status(pools[0].clone()));
        pools[0].counts.as_mut().unwrap().ready = 4;
        board.apply(status(pools[0].clone()));
        board.apply(api::PoolStatus::default());

        let frame = board.render(false, SystemTime::now());
        let lines: Vec<&str> = frame.lines().collect();
        assert_eq!(lines.len(), 3, "{frame}");
        assert!(lines[1].starts_with("m1.large@az1 "), "{frame}");
        assert_eq!(lines[1].split_whitespace().nth(1), Some("4"), "{frame}");
        assert!(lines[2].starts_with("m1.xlarge@az2 "), "{frame}");
    }

    #[test]
    fn events_show_under_the_table_and_deleted_pools_leave_it() {
        let pools = sample_pools();
        let mut board = PoolBoard::default();
        board.apply(status(pools[0].clone()));
        board.apply(status(pools[1].clone()));
        board.apply(api::PoolStatus {
            pool: Some(pools[0].clone()),
            events: vec![api::PoolEvent {
                kind: api::PoolEventKind::Exhausted.into(),
                message: "pool exhausted: an Allocate\nfound no Ready instance it could claim"
                    .into(),
                flavor: "m1.large".into(),
                availability_zone: "az1".into(),
                at: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        let frame = board.render(false, SystemTime::now());
        let last = frame.lines().last().unwrap();
        assert_eq!(
            last,
            "event 1970-01-01T00:00:00Z m1.large@az1 EXHAUSTED pool exhausted: an Allocate found no Ready instance it could claim"
        );
        // On a pipe each event is printed once; a terminal keeps the recent ones.
        assert!(!board.render(false, SystemTime::now()).contains("event "));
        assert!(board.render(true, SystemTime::now()).contains("EXHAUSTED"));

        board.apply(api::PoolStatus {
            pool: Some(pools[1].clone()),
            deleted: true,
            events: vec![api::PoolEvent {
                kind: api::PoolEventKind::Deleted.into(),
                message: "pool deleted".into(),
                flavor: "m1.xlarge".into(),
                availability_zone: "az2".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let frame = board.render(false, SystemTime::now());
        assert!(
            !frame.lines().any(|l| l.starts_with("m1.xlarge@az2 ")),
            "a deleted pool keeps its row: {frame}"
        );
        assert!(
            frame.ends_with("event - m1.xlarge@az2 DELETED pool deleted\n"),
            "{frame}"
        );
    }

    #[test]
    fn a_pipe_prints_every_event_however_many_arrive_between_frames() {
        let pools = sample_pools();
        let mut board = PoolBoard::default();
        for n in 0..10 {
            board.apply(api::PoolStatus {
                pool: Some(pools[0].clone()),
                events: vec![api::PoolEvent {
                    kind: api::PoolEventKind::Exhausted.into(),
                    message: format!("exhausted {n}"),
                    flavor: "m1.large".into(),
                    availability_zone: "az1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        let frame = board.render(false, SystemTime::now());
        let events: Vec<&str> = frame.lines().filter(|l| l.starts_with("event ")).collect();
        let expected: Vec<String> = (0..10)
            .map(|n| format!("event - m1.large@az1 EXHAUSTED exhausted {n}"))
            .collect();
        assert_eq!(events, expected, "{frame}");
        assert!(
            !board.render(false, SystemTime::now()).contains("event "),
            "printed twice"
        );
        // A terminal redraws only the most recent few.
        let terminal = board.render(true, SystemTime::now());
        assert_eq!(
            terminal.lines().filter(|l| l.starts_with("event ")).count(),
            RECENT_EVENTS,
            "{terminal}"
        );
        assert!(terminal.contains("exhausted 9") && !terminal.contains("exhausted 1\n"));
    }

    #[test]
    fn frames_on_a_pipe_are_blocks_separated_by_a_blank_line() {
        let mut out = Vec::new();
        write_frame(&mut out, "H\nrow1\n", false).unwrap();
        write_frame(&mut out, "H\nrow2\n", false).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "H\nrow1\n\nH\nrow2\n\n");
    }

    #[test]
    fn frames_on_a_terminal_clear_the_screen() {
        let mut out = Vec::new();
        write_frame(&mut out, "H\nrow1\n", true).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\x1b[2J\x1b[HH\nrow1\n");
    }

    /// What arrived before an error is drawn before the error ends the view.
    #[tokio::test]
    async fn the_last_updates_before_an_error_are_drawn() {
        let mut pools = sample_pools();
        let first = status(pools[0].clone());
        pools[0].counts.as_mut().unwrap().ready = 7;
        let last = status(pools[0].clone());
        let items: Vec<Result<api::PoolStatus, ClientError>> = vec![
            Ok(first),
            Ok(last),
            Err(ClientError::Malformed("the server went away".into())),
        ];
        let mut out = Vec::new();
        let err = show(
            futures::stream::iter(items),
            &mut out,
            false,
            OutputFormat::Table,
            std::future::pending(),
            SystemTime::now,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("went away"), "{err}");
        assert!(err.downcast_ref::<BrokeAfterAnswers>().is_some(), "{err:?}");
        let text = String::from_utf8(out).unwrap();
        let frames: Vec<&str> = text.split("\n\n").filter(|f| !f.is_empty()).collect();
        assert_eq!(frames.len(), 1, "{text}");
        let row = frames[0].lines().nth(1).unwrap();
        assert_eq!(row.split_whitespace().nth(1), Some("7"), "{text}");
    }

    /// A stream that fails or ends while the first frame waits for the
    /// snapshot's marker (a server older than it, stopping within
    /// [`SNAPSHOT_WAIT`]): what arrived is drawn before the view ends, as
    /// it is when the error comes with it.
    #[tokio::test(start_paused = true)]
    async fn what_arrived_before_the_marker_is_drawn_when_the_stream_stops() {
        let pools = sample_pools();
        let failing = || {
            futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Err(ClientError::Malformed("the server went away".into()))
            })
            .boxed()
        };
        let ending_later = || {
            futures::stream::once(tokio::time::sleep(Duration::from_millis(500)))
                .filter_map(|()| async { None })
                .boxed()
        };
        let ending_at_once = || futures::stream::empty().boxed();
        for (how, end, message) in [
            ("failing", failing(), "went away"),
            ("ending later", ending_later(), "closed the watch stream"),
            (
                "ending at once",
                ending_at_once(),
                "closed the watch stream",
            ),
        ] {
            let items = futures::stream::iter([Ok(status(pools[0].clone()))]).chain(end);
            let mut out = Vec::new();
            let err = show(
                Box::pin(items),
                &mut out,
                false,
                OutputFormat::Table,
                std::future::pending(),
                SystemTime::now,
            )
            .await
            .unwrap_err();
            assert!(err.to_string().contains(message), "{how}: {err}");
            let text = String::from_utf8(out).unwrap();
            let frames: Vec<&str> = text.split("\n\n").filter(|f| !f.is_empty()).collect();
            assert_eq!(frames.len(), 1, "{how}: {text:?}");
            let rows: Vec<&str> = frames[0].lines().collect();
            assert_eq!(rows.len(), 2, "{how}: {text}");
            assert!(rows[1].starts_with("m1.large@az1 "), "{how}: {text}");
        }
    }

    /// A pool held by a service's throttle pause, its pause ending `left`
    /// from `now` though the message says `remaining`.
    fn throttled(now: SystemTime, left: Duration, remaining: i64) -> api::Pool {
        let mut pool = sample_pools().remove(0);
        pool.sizing = Some(api::SizingStatus {
            gate: Some(api::ThrottleGate {
                state: api::ThrottleState::Throttled.into(),
                pause_remaining: crate::output::tests::d(remaining, 0),
                paused_until: Some((now + left).into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        pool
    }

    /// The server does not send a pool again as its pause counts down (nor
    /// every second of it): the time left is counted to the pause's end as
    /// the frame is drawn, not read from the last message.
    #[test]
    fn a_throttle_countdown_is_counted_to_the_pause_end_when_drawn() {
        let now = SystemTime::now();
        let pool = throttled(now, Duration::from_secs(5), 60);
        let mut board = PoolBoard::default();
        board.apply(status(pool.clone()));
        let frame = board.render(false, now);
        let row: Vec<&str> = frame.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[7], "throttled:5s", "{frame}");
        let later = board.render(false, now + Duration::from_secs(3));
        let row: Vec<&str> = later.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[7], "throttled:2s", "{later}");
        // `pools get` shows it the same way.
        let detail = crate::table::pool_detail(&pool, now);
        assert!(
            detail.contains("throttle:          throttled:5s, "),
            "{detail}"
        );
    }

    /// A terminal redraws the view every second while a countdown shows,
    /// though nothing arrives; a pipe (a log of frames) does not.
    #[tokio::test(start_paused = true)]
    async fn a_terminal_redraws_a_countdown_every_second() {
        for (terminal, held, frames) in [(true, true, 4), (true, false, 1), (false, true, 1)] {
            let mut pool = throttled(SystemTime::now(), Duration::from_secs(60), 60);
            if !held {
                pool.sizing = None;
            }
            let later = futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(3500)).await;
                Err(ClientError::Malformed("the server went away".into()))
            });
            let complete = api::PoolStatus {
                snapshot_complete: true,
                ..Default::default()
            };
            let items = futures::stream::iter([Ok(status(pool)), Ok(complete)]).chain(later);
            let mut out = Vec::new();
            show(
                Box::pin(items),
                &mut out,
                terminal,
                OutputFormat::Table,
                std::future::pending(),
                SystemTime::now,
            )
            .await
            .unwrap_err();
            let text = String::from_utf8(out).unwrap();
            let drawn = text.matches("POOL ").count();
            assert_eq!(drawn, frames, "terminal {terminal}, held {held}: {text}");
        }
    }

    /// LAST ERROR's age is counted to the frame's time, and a quiet pool
    /// may send nothing for hours: a terminal is redrawn every
    /// [`AGE_TICK`] while a row shows an age, so "45s ago" does not stay
    /// on screen an hour later. A pipe (a log of frames) gets no extra
    /// frame, nor does a terminal with no age to show.
    #[tokio::test(start_paused = true)]
    async fn a_terminal_keeps_a_last_errors_age_current() {
        let (wall, start) = (SystemTime::now(), tokio::time::Instant::now());
        let clock = move || wall + start.elapsed();
        for (terminal, dated) in [(true, true), (false, true), (true, false)] {
            let mut pool = sample_pools().remove(0);
            pool.sizing = None;
            pool.last_error = "boot timed out".into();
            pool.last_error_at = dated.then(|| (clock() - Duration::from_secs(45)).into());
            let complete = api::PoolStatus {
                snapshot_complete: true,
                ..Default::default()
            };
            let quiet_hour = futures::stream::once(async {
                tokio::time::sleep(Duration::from_secs(3600) + AGE_TICK / 2).await;
                Err(ClientError::Malformed("the server went away".into()))
            });
            let items = futures::stream::iter([Ok(status(pool)), Ok(complete)]).chain(quiet_hour);
            let mut out = Vec::new();
            show(
                Box::pin(items),
                &mut out,
                terminal,
                OutputFormat::Table,
                std::future::pending(),
                clock,
            )
            .await
            .unwrap_err();
            let text = String::from_utf8(out).unwrap();
            let frames: Vec<&str> = text.split("POOL ").skip(1).collect();
            let case = format!("terminal {terminal}, dated {dated}");
            if !(terminal && dated) {
                assert_eq!(frames.len(), 1, "{case}: {text}");
                continue;
            }
            assert!(
                frames[0].contains(" 45s ago: boot timed out"),
                "{case}: {}",
                frames[0]
            );
            let last = frames.last().unwrap();
            assert!(last.contains(" 1h ago: boot timed out"), "{case}: {last}");
            let most = (3600 / AGE_TICK.as_secs() + 1) as usize;
            assert_eq!(frames.len(), most, "{case}");
        }
    }

    /// A reader that leaves while the stream is silent ends the view as
    /// done, though nothing is written that would fail.
    #[tokio::test(start_paused = true)]
    async fn a_reader_leaving_a_silent_stream_ends_the_view() {
        let pools = sample_pools();
        let complete = api::PoolStatus {
            snapshot_complete: true,
            ..Default::default()
        };
        let items = futures::stream::iter([Ok(status(pools[0].clone())), Ok(complete)])
            .chain(futures::stream::pending());
        let (leave, left) = tokio::sync::oneshot::channel::<()>();
        let mut out = Vec::new();
        let view = show(
            Box::pin(items),
            &mut out,
            false,
            OutputFormat::Table,
            async {
                let _ = left.await;
            },
            SystemTime::now,
        );
        let ((), shown) = tokio::join!(
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                let _ = leave.send(());
            },
            view
        );
        shown.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("POOL ").count(), 1, "{text}");
    }

    /// A daemon without pools sends no pool (an older one not even the
    /// snapshot marker): the empty table shows.
    #[tokio::test(start_paused = true)]
    async fn a_watch_without_pools_shows_the_empty_table() {
        let later = futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Err(ClientError::Malformed("the server went away".into()))
        });
        let mut out = Vec::new();
        let err = show(
            Box::pin(later),
            &mut out,
            false,
            OutputFormat::Table,
            std::future::pending(),
            SystemTime::now,
        )
        .await
        .unwrap_err();
        // Nothing was answered: the failure may be the connection's setup.
        assert!(err.downcast_ref::<BrokeAfterAnswers>().is_none(), "{err:?}");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POOL "), "{text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    }

    /// A server older than the snapshot's marker never sends it: the first
    /// frame shows what arrived within [`SNAPSHOT_WAIT`], every pool of a
    /// listing that came apart, and later messages are drawn as they come.
    #[tokio::test(start_paused = true)]
    async fn without_a_snapshot_marker_the_first_frame_waits_a_while() {
        let pools = sample_pools();
        let first = futures::stream::iter([Ok(status(pools[0].clone()))]);
        let second = pools[1].clone();
        let rest = futures::stream::once(async move {
            tokio::time::sleep(SNAPSHOT_WAIT / 2).await;
            Ok(status(second))
        });
        let end = futures::stream::once(async {
            tokio::time::sleep(SNAPSHOT_WAIT * 3).await;
            Err(ClientError::Malformed("the server went away".into()))
        });
        let mut out = Vec::new();
        show(
            Box::pin(first.chain(rest).chain(end)),
            &mut out,
            false,
            OutputFormat::Table,
            std::future::pending(),
            SystemTime::now,
        )
        .await
        .unwrap_err();
        let text = String::from_utf8(out).unwrap();
        let frames: Vec<&str> = text.split("\n\n").filter(|f| !f.is_empty()).collect();
        assert_eq!(frames.len(), 1, "{text}");
        assert_eq!(frames[0].lines().count(), 3, "{text}");
    }
}
