//! A stdio MCP server's standard error: each line is logged under the server's name (rather
//! than written raw into the engine's own log stream), and the last few are kept, so a server
//! that fails to start can be reported with what it said.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::process::ChildStderr;
use tokio::task::JoinHandle;

/// How many of the last lines are kept.
const KEPT: usize = 5;

/// The longest line logged or kept; a longer one is cut (and a line with no end is split).
const MAX_LINE: usize = 1024;

/// The lines a server has written to its standard error, as they come.
pub(crate) struct StderrTail {
    last: Arc<Mutex<VecDeque<String>>>,
    reader: JoinHandle<()>,
}

impl StderrTail {
    /// Follows `stderr`, the standard error of the server `server`, until the process closes it.
    pub(crate) fn follow(server: &str, mut stderr: ChildStderr) -> Self {
        let last = Arc::new(Mutex::new(VecDeque::with_capacity(KEPT)));
        let kept = Arc::clone(&last);
        let server = server.to_owned();
        let reader = tokio::spawn(async move {
            let mut pending: Vec<u8> = Vec::new();
            let mut chunk = [0_u8; 4096];
            loop {
                let read = match stderr.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => read,
                };
                pending.extend_from_slice(&chunk[..read]);
                while let Some(end) = line_end(&pending) {
                    let line: Vec<u8> = pending.drain(..end).collect();
                    note(&server, &kept, &line);
                }
            }
            if !pending.is_empty() {
                note(&server, &kept, &pending);
            }
        });
        Self { last, reader }
    }

    /// The last lines, joined, once the process has closed its standard error (waiting at
    /// most `wait` for that); `None` when it wrote nothing.
    pub(crate) async fn last_words(mut self, wait: Duration) -> Option<String> {
        let _ended = tokio::time::timeout(wait, &mut self.reader).await;
        let last = self.last.lock();
        (!last.is_empty()).then(|| last.iter().cloned().collect::<Vec<_>>().join(" / "))
    }
}

/// Where the first line of `pending` ends (after its newline), or `MAX_LINE` when it is that
/// long with no newline.
fn line_end(pending: &[u8]) -> Option<usize> {
    match pending.iter().position(|b| *b == b'\n') {
        Some(at) => Some(at + 1),
        None => (pending.len() >= MAX_LINE).then_some(MAX_LINE),
    }
}

/// Logs one line and keeps it among the last.
fn note(server: &str, kept: &Mutex<VecDeque<String>>, line: &[u8]) {
    let line = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
    let line = line.trim_end();
    if line.is_empty() {
        return;
    }
    tracing::info!(server, line, "mcp: the server wrote to its stderr");
    let mut kept = kept.lock();
    if kept.len() == KEPT {
        kept.pop_front();
    }
    kept.push_back(line.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_a_newline_or_at_the_limit() {
        let long = vec![b'x'; MAX_LINE + 10];
        let table: [(&[u8], Option<usize>); 4] = [
            (b"", None),
            (b"partial", None),
            (b"one\ntwo", Some(4)),
            (&long, Some(MAX_LINE)),
        ];
        for (pending, end) in table {
            assert_eq!(
                line_end(pending),
                end,
                "{:?}",
                String::from_utf8_lossy(pending)
            );
        }
    }

    #[tokio::test]
    async fn the_last_lines_of_a_process_are_kept() {
        let mut child = tokio::process::Command::new("sh")
            .args([
                "-c",
                "for i in 1 2 3 4 5 6 7; do echo line $i >&2; done; printf 'no end' >&2",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let tail = StderrTail::follow("test", child.stderr.take().unwrap());
        let said = tail.last_words(Duration::from_secs(10)).await;
        assert_eq!(
            said.as_deref(),
            Some("line 4 / line 5 / line 6 / line 7 / no end")
        );
        child.wait().await.unwrap();
    }
}
