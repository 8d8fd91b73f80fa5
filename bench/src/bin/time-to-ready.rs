//! time-to-ready: a warm purchase against a Trove-style cold create (boot,
//! wait for mysqld, attach), on an unthrottled and an IOPS-throttled cloud.
//! (trace-replay runs the same measurement as part of its report.)
//!
//! ```text
//! cargo run --release -p bench --bin time-to-ready -- --purchases 100
//! ```

use bench::report;
use bench::ttr::{measure, Path};
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

fn main() {
    let args = Args::parse();
    println!("| path | IOPS throttled | tenant volume | p50 | p99 |\n|---|---|---|--:|--:|");
    for throttled in [false, true] {
        for (path, existing) in [(Path::Warm, false), (Path::Warm, true), (Path::Cold, false)] {
            let m = measure(path, throttled, existing, args.purchases, args.seed);
            println!(
                "| {:?} | {} | {} | {} | {} |",
                path,
                throttled,
                if existing { "existing" } else { "new" },
                report::duration_or_na(m.p(0.5)),
                report::duration_or_na(m.p(0.99))
            );
        }
    }
}
