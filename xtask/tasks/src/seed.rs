//! `cargo xtask seed --env <development|test|staging> [--seed N] [--scale F] [--reset]`: loads
//! a sample dataset into DATABASE_URL, with a progress bar per table on a terminal and plain
//! lines elsewhere, then a summary with rows and rows/s per table.

use std::{
    io::IsTerminal,
    process::ExitCode,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};
use pgops::Exit;
use pgops_seed::{Dataset, Error, Outcome, Progress, SeedOptions, TableReport};

/// Options of `cargo xtask seed`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset: development, test or staging.
    #[arg(long = "env", value_parser = ["development", "test", "staging"])]
    pub dataset: String,
    /// The random seed; the same seed gives the same data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Size relative to the dataset's documented size (staging 1.0: 100k patients, 1M audit logs).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Empty the sample tables first (needed to change seed or scale on a seeded database).
    #[arg(long)]
    pub reset: bool,
    /// The database to seed (its password is never printed) [default: the `cargo xtask dev`
    /// stack's database, when that stack has run].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// Runs the seed.
pub fn run(args: &Args) -> ExitCode {
    seed(args).into()
}

/// Seeds and says how it went, as an exit code.
pub fn seed(args: &Args) -> Exit {
    // Refuse production before touching anything, even before connecting.
    if let Err(e) = pgops_seed::refuse_production(&|name| std::env::var(name).ok()) {
        eprintln!("error: {e}");
        return Exit::Usage;
    }
    let Some(dataset) = Dataset::from_name(&args.dataset) else {
        eprintln!("error: unknown dataset {}", args.dataset);
        return Exit::Usage;
    };
    let given = args
        .database_url
        .clone()
        .or_else(|| crate::stack::recorded_database_url(&crate::stack::default_dir()));
    if given.is_none() {
        eprintln!(
            "error: DATABASE_URL is not set; export it, pass --database-url, or start the local stack with `cargo xtask dev`"
        );
        return Exit::Usage;
    }
    let url = match pgops::db::database_url(given.as_deref()) {
        Ok(url) => url,
        Err(failure) => {
            eprintln!("error: {failure}");
            return failure.exit;
        }
    };
    let mut conn = match pgops::db::connect(&url) {
        Ok(conn) => conn,
        Err(failure) => {
            eprintln!("error: {failure}");
            return failure.exit;
        }
    };
    let options = SeedOptions {
        dataset,
        seed: args.seed,
        scale: args.scale,
        reset: args.reset,
    };
    let started = Instant::now();
    let mut progress: Box<dyn Progress> = if std::io::stderr().is_terminal() {
        Box::new(Bars::default())
    } else {
        Box::new(Lines::default())
    };
    match pgops_seed::seed(&mut conn, &options, progress.as_mut()) {
        Ok(Outcome::AlreadySeeded { checksum }) => {
            println!(
                "{url} already holds the {} dataset with seed {} and scale {} (checksum {}); nothing to do",
                dataset.name(),
                args.seed,
                args.scale,
                &checksum[..12]
            );
            Exit::Ok
        }
        Ok(Outcome::Seeded(report)) => {
            println!(
                "seeded {url} with the {} dataset (seed {}, scale {})",
                dataset.name(),
                args.seed,
                args.scale
            );
            println!(
                "  {:<14} {:>10} {:>9} {:>12}",
                "table", "rows", "seconds", "rows/s"
            );
            let mut rows = 0;
            for t in &report.tables {
                rows += t.rows;
                println!(
                    "  {:<14} {:>10} {:>9.2} {:>12.0}",
                    t.table,
                    t.rows,
                    t.elapsed.as_secs_f64(),
                    t.rows_per_second()
                );
            }
            println!(
                "  {:<14} {:>10} {:>9.2}  (keys, indexes and foreign-key checks, built after the load)",
                "keys",
                "",
                report.keys_elapsed.as_secs_f64()
            );
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "  {:<14} {:>10} {:>9.2} {:>12.0}  (ANALYZE included)",
                "total",
                rows,
                elapsed,
                rows as f64 / elapsed
            );
            println!("  checksum {}", report.checksum);
            Exit::Ok
        }
        Err(e) => {
            eprintln!("error: {}", url.scrub(&e.to_string()));
            match e {
                Error::Database { .. } | Error::Io(_) => Exit::Problem,
                _ => Exit::Usage,
            }
        }
    }
}

/// A progress bar per table.
#[derive(Default)]
struct Bars {
    bar: Option<ProgressBar>,
}

impl Progress for Bars {
    fn start(&mut self, table: &str, expected: u64) {
        let bar = ProgressBar::new(expected.max(1));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>14} [{bar:30}] {human_pos:>10}/{human_len:10} {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(table.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }

    fn advance(&mut self, rows: u64) {
        if let Some(bar) = &self.bar {
            if rows > bar.length().unwrap_or(0) {
                bar.set_length(rows);
            }
            bar.set_position(rows);
        }
    }

    fn finish(&mut self, table: &TableReport) {
        if let Some(bar) = self.bar.take() {
            bar.set_length(table.rows.max(1));
            bar.set_position(table.rows);
            bar.finish();
        }
    }
}

/// Plain lines, for CI logs.
#[derive(Default)]
struct Lines {
    next_report: u64,
}

impl Progress for Lines {
    fn start(&mut self, table: &str, expected: u64) {
        eprintln!("seeding {table} (about {expected} rows)");
        self.next_report = 250_000;
    }

    fn advance(&mut self, rows: u64) {
        if rows >= self.next_report {
            eprintln!("  {rows} rows");
            self.next_report += 250_000;
        }
    }

    fn finish(&mut self, table: &TableReport) {
        eprintln!(
            "  {} rows in {:.2}s",
            table.rows,
            table.elapsed.as_secs_f64()
        );
    }
}
