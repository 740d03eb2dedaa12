//! A replay's progress: on a terminal a bar of the bytes read (files) or a
//! spinner (Kafka), redrawn in place; off a terminal (a backfill job's log)
//! one plain status line per interval. Either says how far the input is
//! read (a file replay's bytes, a Kafka replay's records left to read by
//! the brokers' watermarks) and, once everything is read, what the replay
//! is doing until it ends.
//!
//! Invariant: progress only reads the run's counters; what it shows never
//! changes what the replay does or writes.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Observer, Totals};

/// How a replay shows its progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShowProgress {
    /// Nothing until the summary.
    Off,
    /// A bar or spinner redrawn in place (stderr is a terminal).
    Bar,
    /// A status line on stderr every so often (a log).
    Lines(Duration),
}

/// How often a bar or spinner is redrawn.
const REDRAW: Duration = Duration::from_millis(200);

/// A replay's progress; an [`Observer`] of its run.
pub(crate) struct ReplayProgress<'a> {
    bar: Option<indicatif::ProgressBar>,
    /// Status lines: how often, and when the last was written.
    lines: Option<(Duration, Instant)>,
    /// Bytes read so far and in all (a file replay).
    bytes: Option<(&'a AtomicU64, u64)>,
    started: Instant,
}

impl<'a> ReplayProgress<'a> {
    /// A file replay's: a bar of the bytes read.
    pub(crate) fn files(show: ShowProgress, bytes_read: &'a AtomicU64, total: u64) -> Self {
        let bar = (show == ShowProgress::Bar).then(|| bytes_bar(total));
        ReplayProgress::with(show, bar, Some((bytes_read, total)))
    }

    /// A Kafka replay's: a spinner with the records left.
    pub(crate) fn kafka(show: ShowProgress) -> Self {
        let bar = (show == ShowProgress::Bar).then(|| {
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.enable_steady_tick(REDRAW);
            spinner
        });
        ReplayProgress::with(show, bar, None)
    }

    fn with(
        show: ShowProgress,
        bar: Option<indicatif::ProgressBar>,
        bytes: Option<(&'a AtomicU64, u64)>,
    ) -> Self {
        let now = Instant::now();
        let lines = match show {
            ShowProgress::Lines(every) => Some((every, now)),
            _ => None,
        };
        ReplayProgress {
            bar,
            lines,
            bytes,
            started: now,
        }
    }

    /// Takes the bar off the terminal (before the summary or an error).
    pub(crate) fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// How far the input is read, in words: a file replay's share of the
    /// bytes, a Kafka replay's records left (when the watermarks are known).
    fn read_so_far(&self, totals: &Totals) -> String {
        match self.bytes {
            Some((read, total)) => {
                let read = read.load(Ordering::Relaxed).min(total);
                let percent = (read * 100).checked_div(total).unwrap_or(100);
                format!("{percent}% read ({} of {} MiB)", mib(read), mib(total))
            }
            None => match records_left(totals) {
                Some(left) => format!("{left} records left to read"),
                None => "reading".to_string(),
            },
        }
    }

    fn line(&self, text: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        // A log line that cannot be written is not worth failing a replay.
        let _ = writeln!(std::io::stderr(), "replay: {text} [{secs:.1} s]");
    }
}

impl Observer for ReplayProgress<'_> {
    fn tick(&mut self, totals: &Totals) {
        if let Some(bar) = &self.bar {
            match self.bytes {
                Some((read, total)) => {
                    let read = read.load(Ordering::Relaxed);
                    bar.set_position(read);
                    if read >= total && bar.message().is_empty() {
                        bar.set_message("all read, writing the store");
                    }
                }
                None => bar.set_message(format!(
                    "{} events; {}",
                    totals.events,
                    self.read_so_far(totals)
                )),
            }
        }
        if let Some((every, last)) = self.lines
            && last.elapsed() >= every
        {
            self.lines = Some((every, Instant::now()));
            self.line(&format!(
                "{}, {} events",
                self.read_so_far(totals),
                totals.events
            ));
        }
    }

    fn finishing(&mut self, what: &'static str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("all read, {what}"));
        }
        if self.lines.is_some() {
            self.line(&format!("all read, {what}"));
        }
    }
}

/// Records behind the end of every dataflow's input that has reported.
fn records_left(totals: &Totals) -> Option<i64> {
    totals
        .dataflows
        .values()
        .filter_map(|d| d.lag)
        .reduce(i64::saturating_add)
}

fn mib(bytes: u64) -> u64 {
    bytes / (1 << 20)
}

fn bytes_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // The spinner and the clock move on their own: the end of a large
    // replay (records handed to the store, runs merged) reads nothing for
    // seconds.
    bar.enable_steady_tick(REDRAW);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::DataflowTotals;

    #[test]
    fn a_file_replay_says_its_share_of_the_bytes() {
        let read = AtomicU64::new(3 << 20);
        let p = ReplayProgress::files(ShowProgress::Off, &read, 12 << 20);
        assert_eq!(p.read_so_far(&Totals::default()), "25% read (3 of 12 MiB)");
        read.store(13 << 20, Ordering::Relaxed);
        assert_eq!(
            p.read_so_far(&Totals::default()),
            "100% read (12 of 12 MiB)"
        );
        let empty = ReplayProgress::files(ShowProgress::Off, &read, 0);
        assert_eq!(
            empty.read_so_far(&Totals::default()),
            "100% read (0 of 0 MiB)"
        );
    }

    #[test]
    fn a_kafka_replay_sums_the_records_left_of_the_dataflows_that_reported() {
        let p = ReplayProgress::kafka(ShowProgress::Off);
        let mut totals = Totals::default();
        assert_eq!(p.read_so_far(&totals), "reading");
        totals
            .dataflows
            .insert("a".into(), DataflowTotals::default());
        assert_eq!(p.read_so_far(&totals), "reading");
        for (name, lag) in [("a", 5), ("b", 7)] {
            let d = DataflowTotals {
                lag: Some(lag),
                ..DataflowTotals::default()
            };
            totals.dataflows.insert(name.into(), d);
        }
        totals
            .dataflows
            .insert("c".into(), DataflowTotals::default());
        assert_eq!(p.read_so_far(&totals), "12 records left to read");
    }
}
