//! `make chaos`: the chaos suite (`tapedeck_tests::chaos`) against real processes, on
//! one Redis or (`--cluster`) a 3-node Redis Cluster; its table on stdout, exit status 1
//! when a check fails. `--scale 1,2,3` prints the
//! scale-out figures instead (jobs per second by number of workers, no faults).
//!
//! The processes' logs stay in the run's directory when a check fails (or with `--dir`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tapedeck_tests::chaos::{self, Plan};

#[derive(Parser)]
#[command(about = "Tapedeck's chaos suite and scale-out figures")]
struct Args {
    /// The short plan `make test` runs (50 jobs, one gateway, two workers).
    #[arg(long)]
    short: bool,
    /// On a 3-node Redis Cluster instead of one Redis.
    #[arg(long)]
    cluster: bool,
    /// Jobs to upload (default: the plan's; 200 with --scale).
    #[arg(long)]
    jobs: Option<usize>,
    /// Time the same short jobs with each of these numbers of workers, no faults.
    #[arg(long, value_delimiter = ',')]
    scale: Vec<usize>,
    /// Run in this directory and keep it (default: a temporary one, kept on failure).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let temp = tempfile::Builder::new()
        .prefix("tapedeck-chaos-")
        .tempdir()
        .expect("creating a temporary directory");
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    if !args.scale.is_empty() {
        return scale(&args, &root).await;
    }
    let mut plan = if args.short {
        Plan::short()
    } else {
        Plan::full()
    };
    if let Some(jobs) = args.jobs {
        plan.jobs = jobs;
    }
    plan.cluster = args.cluster;
    let report = chaos::run(plan, &root).await;
    println!("{}", report.table());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        if args.dir.is_none() {
            let kept = temp.keep();
            eprintln!("chaos: FAILED; logs kept in {}/logs", kept.display());
        }
        ExitCode::FAILURE
    }
}

async fn scale(args: &Args, root: &std::path::Path) -> ExitCode {
    let jobs = args.jobs.unwrap_or(200);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "| workers (1 slot each) | nproc | jobs | seconds | jobs/s | Redis commands per job |"
    );
    println!("|---|---|---|---|---|---|");
    for &workers in &args.scale {
        let dir = root.join(format!("scale-{workers}"));
        match chaos::scale(workers, jobs, &dir).await {
            Ok(p) => println!(
                "| {} | {nproc} | {} | {:.1} | {:.2} | {:.1} |",
                p.workers,
                p.jobs,
                p.seconds,
                p.jobs as f64 / p.seconds,
                p.commands_per_job
            ),
            Err(e) => {
                eprintln!("scale with {workers} workers: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
