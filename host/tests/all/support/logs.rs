//! The log lines of one test: what the host logs, at trace level, on the
//! thread of a test that asked for them.
//!
//! A scoped tracing subscriber (`tracing::subscriber::set_default`) is not
//! enough in a binary whose tests run side by side: while it is the only
//! subscriber registered, a log statement first reached on another thread
//! is judged by that thread's subscriber (none), and is then disabled
//! everywhere, this test's thread included. So one global subscriber is
//! installed, once, and it writes what a thread logs to that thread's
//! capture, if it has one, and drops everything else unformatted. A test on
//! a current-thread runtime (`#[tokio::test]`) runs its host's tasks on its
//! own thread, so it captures everything its host logs there.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

use tracing_subscriber::filter::{EnvFilter, FilterExt, dynamic_filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

/// Everything the host says; wasmtime's own tracing at its compilation's
/// level of detail would only slow the tests down.
const FILTER: &str = "info,cqrs_wasi_host=trace,tower_http=trace";

thread_local! {
    static CAPTURE: RefCell<Option<Buffer>> = const { RefCell::new(None) };
}

type Buffer = Arc<Mutex<Vec<u8>>>;

/// The log lines of this thread from [`capture`] on, until dropped.
pub struct Captured {
    buffer: Buffer,
}

impl Captured {
    /// Everything logged so far, one line per event.
    pub fn text(&self) -> String {
        let bytes = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

/// Starts capturing this thread's log lines.
pub fn capture() -> Captured {
    install();
    let buffer = Buffer::default();
    CAPTURE.with(|capture| *capture.borrow_mut() = Some(buffer.clone()));
    Captured { buffer }
}

fn capturing() -> bool {
    CAPTURE.with(|capture| capture.borrow().is_some())
}

fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(ThreadCapture)
            // Asked at every event (a plain `filter_fn` would be asked once
            // per log statement, on whichever thread reached it first).
            .with_filter(EnvFilter::new(FILTER).and(dynamic_filter_fn(|_, _| capturing())));
        tracing::subscriber::set_global_default(Registry::default().with(layer))
            .expect("no other global subscriber in this test binary");
        // A log statement whose first use raced the installation may have
        // been judged without it.
        tracing::callsite::rebuild_interest_cache();
    });
}

/// Writes to the current thread's capture.
struct ThreadCapture;

impl<'a> MakeWriter<'a> for ThreadCapture {
    type Writer = ThreadWriter;

    fn make_writer(&'a self) -> ThreadWriter {
        ThreadWriter(CAPTURE.with(|capture| capture.borrow().clone()))
    }
}

struct ThreadWriter(Option<Buffer>);

impl Write for ThreadWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(buffer) = &self.0 {
            buffer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
