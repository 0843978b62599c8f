//! Logging for the examples: to stderr, in colour only on a terminal.

use std::io::IsTerminal;

/// Library logs (retries, handler failures) to stderr at `default` level unless
/// `RUST_LOG` says otherwise; the bot token never appears in them.
///
/// ANSI colours only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>), so a log redirected to a file or a pipe stays plain text.
pub(crate) fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}
