//! The retention benchmark: a store of N finished interactions (the harness
//! scenario, spread over 100 days by a manual clock, every model call
//! priced), pruned by a policy that keeps nothing finished and rolls all
//! usage up by the hour. It measures the store's size before, after the
//! pruning (the space in use) and after a vacuum (the space given back),
//! the pruning's time, and checks every usage report reads the same sums.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thinklio_core::{
    ManualClock, ModelPrice, PriceTable, Principal, PruneReport, RetentionPolicy, Runtime, Store,
    Timestamp, UsageFilter, UsageGroup,
};
use thinklio_store_postgres::{PostgresOptions, PostgresStore};
use thinklio_store_sqlite::{SqliteOptions, SqliteStore};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DAYS: u64 = 100;

pub struct Options {
    pub interactions: u64,
    pub postgres: bool,
    pub write: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            interactions: 100_000,
            postgres: true,
            write: false,
        }
    }
}

/// One store's figures.
pub struct Figures {
    pub store: &'static str,
    pub fill: Duration,
    pub before: u64,
    pub in_use_after: u64,
    pub after_vacuum: u64,
    pub prune: Duration,
    pub report: PruneReport,
    pub reports_unchanged: bool,
}

/// What every usage report reads, by day and by month of the 100 days.
async fn reports(store: &dyn Store) -> Result<Vec<String>, BoxError> {
    let day = 86_400_000;
    let mut out = Vec::new();
    let mut filters = vec![UsageFilter::all()];
    for d in (0..DAYS as i64).step_by(7) {
        filters.push(UsageFilter::all().between(
            Timestamp::from_millis(d * day),
            Timestamp::from_millis((d + 1) * day),
        ));
    }
    for m in 0..4 {
        filters.push(UsageFilter::all().between(
            Timestamp::from_millis(m * 30 * day),
            Timestamp::from_millis((m + 1) * 30 * day),
        ));
    }
    for filter in &filters {
        out.push(format!("{:?}", store.usage_totals(filter).await?));
        for group in [UsageGroup::User, UsageGroup::Agent, UsageGroup::Account] {
            out.push(format!("{:?}", store.usage_report(group, filter).await?));
        }
    }
    Ok(out)
}

/// Fills `store` with `n` finished interactions over 100 days.
async fn fill(store: Arc<dyn Store>, clock: &ManualClock, n: u64) -> Result<Duration, BoxError> {
    let runtime = crate::harness::builder()
        .store_arc(store)
        .clock(clock.clone())
        .prices(PriceTable::new().with("scripted", ModelPrice::usd_per_million(0.15, 0.60)))
        .build()?;
    let sessions = 16;
    let per_session = n / sessions;
    let step = Duration::from_millis(DAYS * 86_400_000 / n.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let runtime: Runtime = runtime.clone();
        let clock = clock.clone();
        let user = Principal::local();
        tasks.push(tokio::spawn(async move {
            let id = runtime
                .open_session(user, "bench", "bench", Some(&format!("s{s}")))
                .await?
                .id;
            for _ in 0..per_session {
                runtime.send(id, "what is 2 + 3?").await?;
                clock.advance(step);
            }
            Ok::<_, thinklio_core::RuntimeError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

async fn prune(
    store: Arc<dyn Store>,
    clock: &ManualClock,
) -> Result<(Duration, PruneReport, bool), BoxError> {
    let runtime = crate::harness::builder()
        .store_arc(store.clone())
        .clock(clock.clone())
        .build()?;
    let before = reports(&*store).await?;
    clock.advance(Duration::from_secs(3_600));
    let started = Instant::now();
    let report = runtime
        .prune(
            &RetentionPolicy::keep_finished(Duration::ZERO)
                .usage_detail(Duration::ZERO)
                .batch(1_000),
        )
        .await?;
    let elapsed = started.elapsed();
    Ok((elapsed, report, reports(&*store).await? == before))
}

fn sqlite_bytes(path: &std::path::Path) -> Result<(u64, u64), BoxError> {
    let conn = rusqlite::Connection::open(path)?;
    let read = |pragma: &str| -> Result<u64, BoxError> {
        let n: i64 = conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))?;
        Ok(u64::try_from(n)?)
    };
    let (pages, free, size) = (
        read("page_count")?,
        read("freelist_count")?,
        read("page_size")?,
    );
    Ok((pages * size, pages.saturating_sub(free) * size))
}

async fn sqlite(n: u64) -> Result<Figures, BoxError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("retention.db");
    let clock = ManualClock::new(Timestamp::from_millis(0));
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with(&path, SqliteOptions::default().clock(clock.clone())).await?,
    );
    let filled = fill(store.clone(), &clock, n).await?;
    let checkpoint = |path: &std::path::Path| -> Result<(), BoxError> {
        rusqlite::Connection::open(path)?.query_row(
            "PRAGMA wal_checkpoint(TRUNCATE)",
            [],
            |_| Ok(()),
        )?;
        Ok(())
    };
    checkpoint(&path)?;
    let (before, _) = sqlite_bytes(&path)?;
    let (prune_time, report, unchanged) = prune(store.clone(), &clock).await?;
    checkpoint(&path)?;
    let (_, in_use) = sqlite_bytes(&path)?;
    drop(store);
    rusqlite::Connection::open(&path)?.execute_batch("VACUUM")?;
    let (after_vacuum, _) = sqlite_bytes(&path)?;
    Ok(Figures {
        store: "SQLite",
        fill: filled,
        before,
        in_use_after: in_use,
        after_vacuum,
        prune: prune_time,
        report,
        reports_unchanged: unchanged,
    })
}

async fn postgres(n: u64) -> Result<Figures, BoxError> {
    let url = std::env::var("THINKLIO_POSTGRES_URL")
        .map_err(|_| "THINKLIO_POSTGRES_URL is not set (scripts/postgres.sh start prints it)")?;
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let clock = ManualClock::new(Timestamp::from_millis(0));
    let pg = PostgresStore::connect_with(
        &url,
        PostgresOptions::default()
            .schema(&schema)
            .clock(clock.clone()),
    )
    .await?;
    let store: Arc<dyn Store> = Arc::new(pg.clone());
    let filled = fill(store.clone(), &clock, n).await?;
    pg.vacuum(false).await?;
    let before = pg.table_bytes().await?;
    let (prune_time, report, unchanged) = prune(store, &clock).await?;
    pg.vacuum(false).await?;
    let in_use = pg.table_bytes().await?;
    pg.vacuum(true).await?;
    let after_vacuum = pg.table_bytes().await?;
    Ok(Figures {
        store: "PostgreSQL",
        fill: filled,
        before,
        in_use_after: in_use,
        after_vacuum,
        prune: prune_time,
        report,
        reports_unchanged: unchanged,
    })
}

pub async fn run(options: &Options) -> Result<Vec<Figures>, BoxError> {
    let mut figures = vec![sqlite(options.interactions).await?];
    if options.postgres {
        figures.push(postgres(options.interactions).await?);
    }
    Ok(figures)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `n` with a comma every three digits.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn report(n: u64, figures: &[Figures]) -> String {
    let n = thousands(n);
    let mut out = format!(
        "## Retention\n\n\
         A store of {n} finished interactions (the harness scenario: six steps, one priced model \
         call per think, a reply each), spread over {DAYS} days by a manual clock, pruned by \
         `RetentionPolicy::keep_finished(0).usage_detail(0)`: every finished turn keeps its \
         message and the step that ended it, its other steps, transitions and events go, and \
         usage is rolled up by the hour. \"After pruning\" is the space holding data (SQLite: \
         its pages less its free list, which new rows reuse) or, on PostgreSQL, the tables' \
         size after a plain `VACUUM` (which marks the space free for new rows without \
         shrinking the files); \"after vacuum\" is after `VACUUM` (SQLite) or `VACUUM FULL` \
         (PostgreSQL), which give the space back to the file system. Every usage report (totals and by user, agent and account, for 15 days and 4 \
         months) is read before and after and compared.\n\n\
         | store | fill | size before | after pruning | after vacuum | pruning took | steps deleted | events deleted | usage rows → rollups | reports unchanged |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
    );
    for f in figures {
        let _ = writeln!(
            out,
            "| {} | {:.0} s | {} | {} ({:.0}%) | {} ({:.0}%) | {:.1} s | {} | {} | {} → {} | {} |",
            f.store,
            f.fill.as_secs_f64(),
            mib(f.before),
            mib(f.in_use_after),
            100.0 * f.in_use_after as f64 / f.before.max(1) as f64,
            mib(f.after_vacuum),
            100.0 * f.after_vacuum as f64 / f.before.max(1) as f64,
            f.prune.as_secs_f64(),
            f.report.steps,
            f.report.events,
            f.report.usage_rolled_up,
            f.report.usage_rollups,
            if f.reports_unchanged { "yes" } else { "**no**" },
        );
    }
    out.push_str(
        "\nReplies stay: no summary covers these conversations, and a reply is pruned only once \
         one does (the conversation's context reads it until then).\n\n\
         `cargo run --release -p thinklio-benches -- retention --write`\n\n",
    );
    out
}

pub fn main(options: &Options) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let figures = rt.block_on(run(options))?;
    let text = report(options.interactions, &figures);
    println!("{text}");
    if figures.iter().any(|f| !f.reports_unchanged) {
        return Err("a usage report changed after pruning".into());
    }
    if options.write {
        crate::docs::write_section("retention", &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pruning_a_filled_sqlite_store_shrinks_it_and_keeps_reports() {
        let f = sqlite(320).await.unwrap();
        assert!(f.reports_unchanged);
        assert_eq!(f.report.interactions, 320);
        assert!(
            f.after_vacuum < f.before,
            "{} → {}",
            f.before,
            f.after_vacuum
        );
        assert!(report(320, &[f]).contains("| SQLite |"));
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
