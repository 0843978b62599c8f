//! What the multi-process examples (flood, scale_out) share: a tokio runtime per process,
//! an exit code from a result, JSON lines to the parent, and noticing that the parent went
//! away (its end of our stdin closed). Logging is in `logging.rs`.

use std::future::Future;
use std::io::{Read, Write};

/// Runs `future` on a new multi-threaded runtime; `Ok` becomes what `ok` makes of it, an
/// error is printed after `who` and becomes exit code 1.
pub(crate) fn run_main<T, F>(who: &str, future: F, ok: impl FnOnce(T) -> u8) -> u8
where
    F: Future<Output = Result<T, String>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(future) {
        Ok(v) => ok(v),
        Err(e) => {
            eprintln!("{who}: {e}");
            1
        }
    }
}

/// Writes one JSON line to stdout, flushed (the parent reads it as it comes).
pub(crate) fn emit(value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Calls `then` once stdin reaches its end: the parent closed it to say stop, or died.
pub(crate) fn on_stdin_close(then: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            then();
        })
        .expect("spawn the parent watcher");
}
