//! `nemesis`: the nemesis suite for long runs and replays.
//!
//! ```text
//! nemesis [--seed N] [--secs N] [--nodes N] [--report text|json]
//!         [--retry-secs N] [--origin-rate RATE] [--readers N] [--concurrent N] [--quiet]
//!         [--kinds K1,K2...] [--skip K1,K2...] [--keep] [--plan]
//! ```
//!
//! `--kinds` draws only the named fault kinds and `--skip` leaves some out
//! (to narrow a failing seed down); `--keep` keeps the logs of a run that
//! passed (a failed run always keeps them); `--plan` prints the schedule
//! the seed draws and exits.
//!
//! Prints the seed first (a failure replays with `--seed`), faults as they
//! happen on stderr, and the report on stdout; exits 1 if an invariant was
//! violated, 2 if the harness could not run.

use std::io::Write;
use std::process::ExitCode;

use shoal_tests::nemesis::plan::Kind;
use shoal_tests::nemesis::{random_seed, run, Config};

const USAGE: &str = "usage: nemesis [--seed N] [--secs N] [--nodes N] [--report text|json] \
[--retry-secs N] [--origin-rate RATE] [--readers N] [--concurrent N] [--quiet] \
[--kinds K1,K2...] [--skip K1,K2...] [--keep] [--plan]";

struct Args {
    cfg: Config,
    json: bool,
    plan_only: bool,
}

/// A comma-separated list of fault kinds.
fn kinds(list: &str) -> Result<Vec<Kind>, String> {
    list.split(',')
        .map(|name| {
            Kind::from_name(name.trim()).ok_or_else(|| {
                let all: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault kind {name:?}; kinds: {}", all.join(", "))
            })
        })
        .collect()
}

fn parse() -> Result<Args, String> {
    let mut cfg = Config {
        seed: random_seed(),
        ..Config::default()
    };
    let (mut json, mut plan_only) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--quiet" {
            cfg.verbose = false;
            continue;
        }
        if flag == "--keep" {
            cfg.keep = true;
            continue;
        }
        if flag == "--plan" {
            plan_only = true;
            continue;
        }
        let value = args
            .next()
            .ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--seed" => cfg.seed = num(&value)?,
            "--secs" => cfg.secs = num(&value)?,
            "--nodes" => cfg.nodes = num(&value)? as usize,
            "--retry-secs" => cfg.retry_secs = num(&value)?,
            "--origin-rate" => cfg.origin_rate = value,
            "--readers" => cfg.readers_per_mount = num(&value)? as usize,
            "--concurrent" => cfg.concurrent = num(&value)? as usize,
            "--kinds" => cfg.kinds = kinds(&value)?,
            "--skip" => {
                let skip = kinds(&value)?;
                cfg.kinds.retain(|k| !skip.contains(k));
            }
            "--report" => match value.as_str() {
                "json" => json = true,
                "text" => json = false,
                other => return Err(format!("--report {other}: expected text or json")),
            },
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if cfg.kinds.is_empty() {
        return Err("no fault kinds left to draw".into());
    }
    if !(2..=20).contains(&cfg.nodes) {
        return Err("--nodes must be between 2 and 20".into());
    }
    Ok(Args {
        cfg,
        json,
        plan_only,
    })
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let Args {
        cfg,
        json,
        plan_only,
    } = match parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("nemesis: {e}");
            return ExitCode::from(2);
        }
    };
    if plan_only {
        let plan = cfg.plan();
        let mut out = std::io::stdout().lock();
        for f in &plan.faults {
            // A closed pipe (`| head`) just ends the listing.
            if writeln!(out, "[{:7.2}s] {}", f.at.as_secs_f64(), f.describe()).is_err() {
                break;
            }
        }
        return ExitCode::SUCCESS;
    }
    match run(&cfg) {
        Ok(report) => {
            if json {
                println!("{:#}", report.json());
            } else {
                print!("{}", report.text());
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("nemesis: could not run (seed {}): {e:#}", cfg.seed);
            ExitCode::from(2)
        }
    }
}
