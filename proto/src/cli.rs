//! The shape every Shoal command-line client shares: its async body runs
//! on a small runtime, and a failure is one `error: …` line on stderr and
//! exit status 1.

use std::future::Future;
use std::process::ExitCode;

/// Runs `body` to completion and maps its result to the exit status.
pub fn run<E: std::fmt::Display>(body: impl Future<Output = Result<(), E>>) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
