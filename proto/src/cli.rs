//! The shape every Shoal command-line client shares: its async body runs
//! on a small runtime, and a failure is one `error: …` line on stderr and
//! exit status 1 — short, even when it quotes what the user wrote.

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

/// Characters of a user's value kept when an error quotes it.
const QUOTED_CHARS: usize = 64;

/// `value` quoted for an error message, cut after its first 64 characters:
/// a value pasted by mistake (or sent by a hostile client) must not turn
/// one error line into a dump of the input.
pub fn quote(value: &str) -> String {
    if value.chars().count() <= QUOTED_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(QUOTED_CHARS).collect();
    format!("{head:?}…")
}

/// Characters of a parser's error kept (a YAML or JSON error quotes the
/// offending value, which may be anything).
const PARSER_ERROR_CHARS: usize = 200;

/// A parser's error (YAML, JSON) as one short line.
pub fn parser_error(e: &impl std::fmt::Display) -> String {
    one_line(&e.to_string(), PARSER_ERROR_CHARS)
}

/// `msg` as one line of at most `max` characters: whitespace runs become
/// one space, and a longer message keeps its start (what is wrong) and its
/// end (where, e.g. "at line 3 column 7") around an ellipsis.
pub fn one_line(msg: &str, max: usize) -> String {
    let line = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= max {
        return line;
    }
    let tail = max / 3;
    let head = max.saturating_sub(tail + 3);
    let mut out: String = chars[..head].iter().collect();
    out.push_str(" … ");
    out.extend(&chars[chars.len() - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_and_messages_are_cut() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "x".repeat(1000);
        let q = quote(&long);
        assert!(q.starts_with("\"xxx") && q.ends_with("\"…") && q.chars().count() == 67);
        assert_eq!(one_line("a\n  b\tc", 100), "a b c");
        let msg = format!("unknown field `{long}` at line 3 column 7");
        let l = one_line(&msg, 120);
        assert_eq!(l.chars().count(), 120);
        assert!(
            l.starts_with("unknown field `xx") && l.ends_with("at line 3 column 7"),
            "{l}"
        );
        assert_eq!(one_line(&"é".repeat(50), 10).chars().count(), 10);
    }
}
