//! `multijob migrate`: move a Redis deployment's keys to the layout this
//! version writes, or show what that would do (`--dry-run`). The leader
//! does the same when it starts; this command is for doing it ahead of
//! an upgrade, or for seeing first.

use std::time::Duration;

use anyhow::Context;

use super::Outcome;
use crate::cluster::{ClusterConfig, Keys, election};
use crate::store::redis::{LAYOUT, LayoutFound, MigrationPlan, MigrationReport, RedisStore};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "What it does, from layout 4 (the releases before layout 5):
  - refuses while a process of layout 4 is connected (a leader, a worker, a replica): stop them
    first; processes of this version may stay up;
  - retires layout 4's `leader` key, so no layout 4 process leads these keys again;
  - re-encodes every run record (smaller; the same runs), a page at a time: killed midway, the
    next `migrate` or leader goes on from the last page written;
  - leaves events, indexes, counters and the ready and results streams as they are: runs in
    flight keep their place and run once.
A leader of this version does the same when it starts, so running this is optional.

Exit status: 0 migrated (or nothing to do; with --dry-run: it would go ahead), 1 refused or failed.

Examples:
  multijob migrate --redis redis://db:6379/ --dry-run
  multijob migrate --redis redis://db:6379/

Environment: MULTIJOB_REDIS_URL; also read: RUST_LOG (log filter, default info; the progress
  lines go to stderr), MULTIJOB_LEADER_TTL_MS (the lease it holds while it migrates)"
)]
pub struct Args {
    /// The deployment's Redis (redis://host:port/db).
    #[arg(long, value_name = "URL", env = "MULTIJOB_REDIS_URL")]
    pub redis: String,
    /// Show the layout found, what the migration would change and who
    /// would stop it; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let _log = super::init_logging();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(migrate(args))
}

async fn migrate(args: Args) -> anyhow::Result<Outcome> {
    let store = RedisStore::open(&args.redis).await?;
    let plan = store.migration_plan().await?;
    print!("{}", describe(&plan, store.url()));
    if args.dry_run || plan.found == LayoutFound::Current {
        return Ok(if plan.blockers.is_empty() {
            Outcome::Success
        } else {
            Outcome::Failure
        });
    }
    if !plan.blockers.is_empty() {
        eprintln!("multijob: not migrating: stop the processes of layout 4 first");
        return Ok(Outcome::Failure);
    }
    let cfg = ClusterConfig::new(&args.redis);
    let keys = Keys::new(|name| store.key(name));
    let conn = crate::cluster::connect(&args.redis, Duration::from_secs(2))
        .await
        .with_context(|| format!("connecting to Redis at {}", store.url()))?;
    let node = format!("migrate:{}", cfg.node);
    let Some(term) = election::acquire(conn.clone(), &keys.election, &node, cfg.leader_ttl).await?
    else {
        let mut c = conn.clone();
        let holder: Option<String> = redis::cmd("GET")
            .arg(&keys.election.leader)
            .query_async(&mut c)
            .await
            .unwrap_or(None);
        eprintln!(
            "multijob: not migrating: {} holds the lease, and a leader of this version migrates \
             when it starts: wait for it, or stop it and run `multijob migrate` again",
            holder.as_deref().unwrap_or("another process")
        );
        return Ok(Outcome::Failure);
    };
    store.set_fence(Some(("leader:epoch".to_string(), term.epoch)));
    let migrated = store.migrate_layout().await;
    let mut c = conn.clone();
    term.resign(&mut c, &keys.election, &node).await;
    match migrated? {
        Some(report) => print!("{}", summary(&report)),
        None => println!("nothing to do: the keys are in layout {LAYOUT}"),
    }
    Ok(Outcome::Success)
}

/// The plan as a person reads it.
fn describe(plan: &MigrationPlan, url: &str) -> String {
    let mut out = match plan.found {
        LayoutFound::Current => {
            return format!("keys at {url}: layout {LAYOUT}; nothing to migrate\n");
        }
        LayoutFound::Older => format!("keys at {url}: layout 4\nmigrating to layout {LAYOUT}:\n"),
        LayoutFound::Unfinished => format!(
            "keys at {url}: layout {LAYOUT}, its migration unfinished (scan cursor {})\n\
             going on with the migration:\n",
            plan.cursor.as_deref().unwrap_or("0")
        ),
    };
    out.push_str(
        "  - retires layout 4's `leader` key: no layout 4 process leads these keys again\n",
    );
    let (n, before, after) = plan.sample;
    let sizes = if n == 0 || before == 0 {
        String::new()
    } else {
        let change = (after as f64 / before as f64 - 1.0) * 100.0;
        format!(
            " (a sample of {n}: {before} bytes now, {after} bytes as layout {LAYOUT}, {change:+.0}%)"
        )
    };
    out.push_str(&format!(
        "  - re-encodes {} run records{sizes}\n",
        plan.records
    ));
    out.push_str(
        "  - leaves events, indexes, counters and the ready and results streams as they are\n",
    );
    if plan.blockers.is_empty() {
        out.push_str("processes of layout 4 connected: none\n");
    } else {
        out.push_str(
            "refused while these processes of layout 4 are connected (stop them first):\n",
        );
        for b in &plan.blockers {
            out.push_str(&format!("  - {b}\n"));
        }
    }
    out
}

/// What a migration did, as a person reads it.
fn summary(r: &MigrationReport) -> String {
    let mut out = format!(
        "migrated to layout {LAYOUT}{} in {:.1} s: {} run records read, {} rewritten, \
         {} bytes now (were {})\n",
        if r.resumed {
            " (went on from an earlier attempt)"
        } else {
            ""
        },
        r.elapsed.as_secs_f64(),
        r.read,
        r.rewritten,
        r.bytes_after,
        r.bytes_before
    );
    if !r.unreadable.is_empty() {
        out.push_str(&format!(
            "left as they were, not decodable: {}\n",
            r.unreadable.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(found: LayoutFound, blockers: &[&str]) -> MigrationPlan {
        MigrationPlan {
            found,
            records: 20,
            sample: (20, 16_200, 12_400),
            blockers: blockers.iter().map(|b| b.to_string()).collect(),
            cursor: Some("96".into()),
        }
    }

    #[test]
    fn a_plan_says_what_changes_and_who_stops_it() {
        let text = describe(&plan(LayoutFound::Older, &[]), "redis://h/");
        assert!(text.contains("layout 4\nmigrating to layout 5"), "{text}");
        assert!(text.contains("re-encodes 20 run records (a sample of 20: 16200 bytes now, 12400 bytes as layout 5, -23%)"), "{text}");
        assert!(text.contains("layout 4 connected: none"), "{text}");
        let text = describe(
            &plan(
                LayoutFound::Unfinished,
                &["worker w1 (heartbeat 0.5 s ago)"],
            ),
            "redis://h/",
        );
        assert!(text.contains("unfinished (scan cursor 96)"), "{text}");
        assert!(
            text.contains("  - worker w1 (heartbeat 0.5 s ago)"),
            "{text}"
        );
        let text = describe(&plan(LayoutFound::Current, &[]), "redis://h/");
        assert_eq!(text, "keys at redis://h/: layout 5; nothing to migrate\n");
    }
}
