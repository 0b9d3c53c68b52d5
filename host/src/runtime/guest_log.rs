//! Guests' stdout and stderr, as lines in the host's log tagged with the
//! component's name, at most [`LINES_PER_CALL`] lines a call.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The longest line logged; the rest of a longer line is cut, so a guest
/// cannot flood the log with one write.
const MAX_LINE: usize = 4096;

/// How many of the last lines a trap's error quotes.
const LAST_LINES: usize = 3;

/// How many lines one call may log, across stdout and stderr, so that a
/// chatty or hostile guest cannot flood the host's log.
const LINES_PER_CALL: u32 = 200;

/// The lines a call may log, and one more, which is replaced by the notice
/// that the rest is dropped.
const BUDGET: u32 = LINES_PER_CALL + 1;

/// One of a guest's output streams.
#[derive(Clone)]
pub(crate) struct GuestLog {
    component: Arc<str>,
    stream: &'static str,
    /// The last lines written, kept so that a trap's error can quote what
    /// the guest said before it (a panic message, typically).
    last_lines: Arc<Mutex<VecDeque<String>>>,
    /// Lines the running call may still log; shared by its stdout and
    /// stderr.
    budget: Arc<AtomicU32>,
}

impl GuestLog {
    /// The stdout and stderr of one instance.
    pub(crate) fn for_instance(component: Arc<str>) -> (GuestLog, GuestLog) {
        let budget = Arc::new(AtomicU32::new(BUDGET));
        let stream = |stream| GuestLog {
            component: component.clone(),
            stream,
            last_lines: Arc::default(),
            budget: budget.clone(),
        };
        (stream("stdout"), stream("stderr"))
    }

    /// Starts a call: its own budget of lines, and no last lines yet (a
    /// fault quotes only what its own call wrote).
    pub(crate) fn begin_call(&self) {
        self.budget.store(BUDGET, Ordering::Relaxed);
        self.last_lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The last few lines the guest wrote, joined by ` | `, if any.
    pub(crate) fn last_lines(&self) -> Option<String> {
        let lines = self.last_lines.lock().unwrap_or_else(|e| e.into_inner());
        (!lines.is_empty()).then(|| Vec::from(lines.clone()).join(" | "))
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            log: self.clone(),
            line: Vec::new(),
        })
    }
}

struct LineWriter {
    log: GuestLog,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end();
        match self
            .log
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        {
            Ok(1) => tracing::warn!(
                target: "cqrs_wasi_host::guest",
                component = %self.log.component,
                "the call wrote more than {LINES_PER_CALL} lines; the rest of its output is dropped"
            ),
            Ok(_) => tracing::info!(
                target: "cqrs_wasi_host::guest",
                component = %self.log.component,
                stream = self.log.stream,
                "{text}"
            ),
            Err(_) => {}
        }
        let mut last_lines = self
            .log
            .last_lines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last_lines.len() == LAST_LINES {
            last_lines.pop_front();
        }
        last_lines.push_back(text.to_owned());
        self.line.clear();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        for &byte in buf {
            if byte == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(byte);
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}
