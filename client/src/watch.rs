//! `warmpoolctl watch`: a live view of pool depth fed by WatchPools.
//!
//! The server sends one PoolStatus per pool at start and one per change; we
//! keep the latest status of every pool and redraw the whole table, so each
//! frame is complete on its own. On a terminal a frame replaces the previous
//! one; otherwise (a pipe, a test) frames are appended, each terminated by a
//! blank line, so a reader can consume them line by line and knows a frame
//! is complete when it sees the blank line.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use anyhow::bail;
use futures::{FutureExt, StreamExt};
use warmpool_client::{api, Client};

use crate::cli::OutputFormat;
use crate::output::{to_json, PoolStatusView};
use crate::table::watch_table;

/// Moves the cursor home after clearing the screen.
const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

/// The latest status of every pool seen so far, ordered by (flavor, az) so
/// rows do not jump around between frames.
#[derive(Default)]
pub struct PoolBoard {
    pools: BTreeMap<(String, String), api::Pool>,
}

impl PoolBoard {
    /// Records one update; a status without a pool carries nothing to show.
    pub fn apply(&mut self, status: api::PoolStatus) {
        if let Some(pool) = status.pool {
            let key = (pool.flavor.clone(), pool.availability_zone.clone());
            self.pools.insert(key, pool);
        }
    }

    pub fn render(&self) -> String {
        watch_table(self.pools.values())
    }
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

pub async fn run(client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    let mut stream = client.watch_pools().await?;
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let mut board = PoolBoard::default();

    while let Some(item) = stream.next().await {
        let status = item?;
        match format {
            OutputFormat::Json => {
                // One object per update, as it arrives: a log, not a view.
                let line = serde_json::to_string(&to_json(PoolStatusView::from(&status)))?;
                let mut out = stdout.lock();
                writeln!(out, "{line}")?;
                out.flush()?;
            }
            OutputFormat::Table => {
                board.apply(status);
                // Fold in updates that have already arrived (notably the
                // one-per-pool burst at start) so we draw one frame for them
                // instead of a partial table per message.
                while let Some(Some(item)) = stream.next().now_or_never() {
                    board.apply(item?);
                }
                write_frame(&mut stdout.lock(), &board.render(), terminal)?;
            }
        }
    }
    // A live view has no natural end: the server went away or shut down.
    bail!("the server closed the watch stream")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample_pools;

    fn status(pool: api::Pool) -> api::PoolStatus {
        api::PoolStatus {
            pool: Some(pool),
            at: None,
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

        let frame = board.render();
        let lines: Vec<&str> = frame.lines().collect();
        assert_eq!(lines.len(), 3, "{frame}");
        assert!(lines[1].starts_with("m1.large@az1 "), "{frame}");
        assert_eq!(lines[1].split_whitespace().nth(1), Some("4"), "{frame}");
        assert!(lines[2].starts_with("m1.xlarge@az2 "), "{frame}");
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
}
