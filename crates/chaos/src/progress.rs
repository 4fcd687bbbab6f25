//! What the run shows while it runs, on stderr: a progress bar of accepted operations (or
//! started offboardings) with the fault counts when stderr is a terminal, a plain progress line every few seconds otherwise
//! (CI logs), and one timestamped line per injected fault either way.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often the plain progress line is written when there is no terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(15);

pub struct Progress {
    bar: ProgressBar,
    start: Instant,
}

impl Progress {
    pub fn new(total: u64) -> Self {
        Self::counting(total, "operations")
    }

    /// A bar of `total` things named `unit` ("offboardings started").
    pub fn counting(total: u64, unit: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        Self {
            bar,
            start: Instant::now(),
        }
    }

    /// True when stderr is not a terminal and the bar draws nothing.
    pub fn is_plain(&self) -> bool {
        self.bar.is_hidden()
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// One line above the bar (or plainly on stderr), stamped with the run's elapsed time.
    pub fn log(&self, line: impl Display) {
        let t = self.start.elapsed().as_secs_f64();
        self.bar.suspend(|| eprintln!("chaos [{t:>7.1}s] {line}"));
    }

    pub fn update(&self, position: u64, message: String) {
        self.bar.set_position(position);
        self.bar.set_message(message);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
