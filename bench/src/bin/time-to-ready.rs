//! time-to-ready: a warm purchase against a Trove-style cold create (boot,
//! wait for mysqld, attach), on an unthrottled and an IOPS-throttled cloud.
//! Prints the time-to-ready section of trace-replay's report, the same
//! cells measured the same way (trace-replay adds the acceptance verdict).
//!
//! ```text
//! cargo run --release -p bench --bin time-to-ready -- --purchases 100
//! ```

use bench::ttr;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Time to ready: warm purchase vs cold create, throttled and not")]
struct Args {
    /// Purchases per cell.
    #[arg(long, default_value_t = 100, value_parser = bench::at_least_one())]
    purchases: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cells: Vec<_> = ttr::Cell::all()
        .into_iter()
        .map(|cell| (cell, cell.measure(args.purchases, args.seed)))
        .collect();
    print!("{}", ttr::section(args.purchases, &cells));
    let failed = cells.iter().filter(|(_, m)| m.is_err()).count();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} cells failed (each is named above, with what to do)",
            cells.len()
        );
    }
    Ok(())
}
