//! What a local run prints while it runs: a header per job and per step around the steps' own bytes, as they
//! arrive. Write errors are ignored: a closed pipe (`gantry run | head`) must not stop the jobs half-way.

use super::summary::{JobReport, Summary, duration};
use gantry_model::JobStatus;
use std::io::Write;

/// The run's output stream.
pub(crate) struct Terminal<W: Write> {
    out: W,
    /// Whether the last byte written ended a line, so a header never lands after a step's unfinished line.
    at_line_start: bool,
}

impl<W: Write> Terminal<W> {
    /// Prints to `out`.
    pub fn new(out: W) -> Self {
        Terminal {
            out,
            at_line_start: true,
        }
    }

    /// `── job NAME ──`, before anything of the job.
    pub fn job_started(&mut self, name: &str) {
        self.line(&format!("── job {name} ──"));
    }

    /// `$ STEP`, continuation lines of a multi-line step marked `> ` as a shell would.
    pub fn step_started(&mut self, step: &str) {
        let mut lines = step.trim_end().lines();
        self.line(&format!("$ {}", lines.next().unwrap_or_default()));
        for more in lines {
            self.line(&format!("> {more}"));
        }
    }

    /// The steps' bytes, unchanged, as soon as they come.
    pub fn output(&mut self, bytes: &[u8]) {
        if let Some(&last) = bytes.last() {
            self.at_line_start = last == b'\n';
            let _ = self.out.write_all(bytes);
            let _ = self.out.flush();
        }
    }

    /// `── NAME: success in 1.2s ──`, or the failure and what it was.
    pub fn job_ended(&mut self, job: &JobReport) {
        let took = job.duration.map(duration).unwrap_or_default();
        let mut line = format!("── {}: {} in {took}", job.name, job.status);
        if job.status != JobStatus::Success
            && let Some(message) = &job.message
        {
            line.push_str(&format!(": {message}"));
        }
        self.line(&format!("{line} ──"));
    }

    /// `── job NAME skipped: needs …, which failed ──`.
    pub fn job_skipped(&mut self, name: &str, reason: &str) {
        self.line(&format!("── job {name} skipped: {reason} ──"));
    }

    /// The summary table under a blank line.
    pub fn summary(&mut self, summary: &Summary) {
        self.line("");
        self.line("── summary ──");
        let table = summary.table();
        self.output(table.as_bytes());
    }

    /// `gantry: TEXT` on stderr: what went wrong around the jobs rather than in them.
    pub fn error(&mut self, text: &str) {
        let _ = writeln!(std::io::stderr(), "gantry: {text}");
    }

    /// One line of Gantry's own, on a line of its own.
    fn line(&mut self, text: &str) {
        let lead = if self.at_line_start { "" } else { "\n" };
        self.output(format!("{lead}{text}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn headers_always_start_a_line_and_output_is_passed_through() {
        let mut term = Terminal::new(Vec::new());
        term.job_started("build");
        term.step_started("printf 'no newline'");
        term.output(b"no newline");
        term.step_started("echo a &&\n  echo b\n");
        term.output(b"a\nb\n");
        term.job_ended(&JobReport {
            status: JobStatus::Failed,
            duration: Some(Duration::from_millis(1500)),
            message: Some("step 2 exited with 1".into()),
            ..JobReport::pending("build")
        });
        term.job_skipped("deploy", "needs build, which failed");
        assert_eq!(
            String::from_utf8(term.out).unwrap(),
            "── job build ──\n$ printf 'no newline'\nno newline\n$ echo a &&\n>   echo b\na\nb\n\
             ── build: failed in 1.5s: step 2 exited with 1 ──\n\
             ── job deploy skipped: needs build, which failed ──\n"
        );
    }
}
