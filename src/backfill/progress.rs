//! How far a backfill is: a progress bar on a terminal (files, users, rate, time left), plain
//! lines on standard error otherwise (a log, a CI job), at most one every few seconds.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a plain progress line is written.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The progress display of the writing pass.
pub struct Progress {
    files: usize,
    total: u64,
    started: Instant,
    shown: Shown,
}

enum Shown {
    Bar(ProgressBar),
    Lines(Mutex<Instant>),
}

impl Progress {
    /// Starts the display for `total` users in `files` files.
    pub fn start(files: usize, total: u64, dry_run: bool) -> Progress {
        let shown = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let template = format!(
                "{} {{bar:30}} {{pos}}/{{len}} users, {{msg}}, {{per_sec}}, {{eta}} left",
                if dry_run { "dry run" } else { "backfill" }
            );
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar.set_message(format!("0/{files} files"));
            Shown::Bar(bar)
        } else {
            Shown::Lines(Mutex::new(Instant::now()))
        };
        Progress {
            files,
            total,
            started: Instant::now(),
            shown,
        }
    }

    /// `users` users and `files_done` files are done.
    pub fn advance(&self, users: u64, files_done: usize) {
        match &self.shown {
            Shown::Bar(bar) => {
                bar.set_position(users);
                bar.set_message(format!("{files_done}/{} files", self.files));
            }
            Shown::Lines(last) => {
                let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() < LINE_EVERY {
                    return;
                }
                *last = Instant::now();
                let seconds = self.started.elapsed().as_secs_f64();
                let rate = users as f64 / seconds.max(0.001);
                let left = self.total.saturating_sub(users) as f64 / rate.max(1.0);
                eprintln!(
                    "backfill: {users}/{} users, {files_done}/{} files, {rate:.0} users/s, about {left:.0} s left",
                    self.total, self.files
                );
            }
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Shown::Bar(bar) = &self.shown {
            bar.finish_and_clear();
        }
    }
}
