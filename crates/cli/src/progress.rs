//! Progress display: an indicatif bar on a terminal, plain periodic lines
//! otherwise (logs, CI), nothing with --quiet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidemark_repo::progress::Progress;

pub struct CliProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
    items: AtomicU64,
    bytes: AtomicU64,
    total_items: AtomicU64,
    total_bytes: AtomicU64,
    last_line: Mutex<Instant>,
    started: Instant,
}

impl CliProgress {
    pub fn new(terminal: bool, quiet: bool) -> CliProgress {
        let bar = terminal.then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        CliProgress {
            bar,
            quiet,
            items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total_items: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            last_line: Mutex::new(Instant::now()),
            started: Instant::now(),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn plain_line(&self, force: bool) {
        if self.quiet || self.bar.is_some() {
            return;
        }
        let mut last = self.last_line.lock().expect("poisoned");
        if !force && last.elapsed() < Duration::from_secs(10) {
            return;
        }
        *last = Instant::now();
        eprintln!(
            "[{:.0}s] {} items, {} MiB of {} MiB",
            self.started.elapsed().as_secs_f64(),
            self.items.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed) >> 20,
            self.total_bytes.load(Ordering::Relaxed) >> 20
        );
    }
}

impl Progress for CliProgress {
    fn set_total(&self, items: u64, bytes: u64) {
        self.total_items.store(items, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(bytes);
        }
    }

    fn advance(&self, items: u64, bytes: u64) {
        self.items.fetch_add(items, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
        self.plain_line(false);
    }

    fn warn(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("warning: {msg}")),
            None => eprintln!("warning: {msg}"),
        }
    }

    fn phase(&self, name: &str) {
        match &self.bar {
            Some(b) => b.set_message(name.to_string()),
            None if !self.quiet => eprintln!("{name}"),
            None => {}
        }
    }
}
