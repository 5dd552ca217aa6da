//! How a local run ended, job by job, and the table printed at its end.

use gantry_model::{FailureKind, JobStatus};
use std::fmt::Write as _;
use std::time::Duration;

/// How one job of a local run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct JobReport {
    /// The job's name.
    pub name: String,
    /// How it ended; `queued` if the run was interrupted before it.
    pub status: JobStatus,
    /// How long it ran (image, container and steps); none if it did not run.
    pub duration: Option<Duration>,
    /// Exit status of the last step that ran.
    pub exit_code: Option<i32>,
    /// Why it did not succeed.
    pub failure: Option<FailureKind>,
    /// What went wrong, or why it was skipped.
    pub message: Option<String>,
}

/// Every selected job of a local run, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// The jobs.
    pub jobs: Vec<JobReport>,
    /// The run was stopped (Ctrl-C, SIGTERM) before it was done.
    pub interrupted: bool,
}

impl JobReport {
    /// A job that has not run (yet).
    pub(crate) fn pending(name: &str) -> JobReport {
        JobReport {
            name: name.to_owned(),
            status: JobStatus::Queued,
            duration: None,
            exit_code: None,
            failure: None,
            message: None,
        }
    }

    /// The result column: `not run` for a job the run never reached.
    fn result(&self) -> &'static str {
        match self.status {
            JobStatus::Queued | JobStatus::Running => "not run",
            status => status.as_str(),
        }
    }

    /// The detail column: the failure kind and exit code, or why the job was skipped.
    fn detail(&self) -> String {
        match (self.status, self.failure) {
            (JobStatus::Skipped, _) => self.message.clone().unwrap_or_default(),
            (_, Some(FailureKind::Exit)) => {
                format!("exit code {}", self.exit_code.unwrap_or_default())
            }
            (_, Some(kind)) => match self.exit_code {
                Some(code) => format!("{kind}, exit code {code}"),
                None => kind.to_string(),
            },
            _ => String::new(),
        }
    }
}

impl Summary {
    /// Whether every job succeeded (and the run was not interrupted).
    pub fn success(&self) -> bool {
        !self.interrupted && self.jobs.iter().all(|j| j.status == JobStatus::Success)
    }

    /// The table printed at the end of a run, with a closing line that counts the jobs that succeeded.
    pub fn table(&self) -> String {
        let header = ["JOB", "RESULT", "TIME", "DETAIL"].map(str::to_owned);
        let rows: Vec<[String; 4]> = self
            .jobs
            .iter()
            .map(|j| {
                let time = j.duration.map_or("-".into(), duration);
                [j.name.clone(), j.result().into(), time, j.detail()]
            })
            .collect();
        let mut widths = [0; 4];
        for row in std::iter::once(&header).chain(&rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (width, cell) in widths.iter().zip(row) {
                let _ = write!(line, "{cell:<width$}  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let ok = self
            .jobs
            .iter()
            .filter(|j| j.status == JobStatus::Success)
            .count();
        let _ = write!(out, "{ok} of {} jobs succeeded", self.jobs.len());
        if self.interrupted {
            out.push_str("; interrupted");
        }
        out.push('\n');
        out
    }
}

/// `850ms`, `4.2s`, `3m07s`, `1h02m`.
pub(crate) fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.subsec_millis()),
        1..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lines_up_and_says_why_each_job_did_not_succeed() {
        let report = |name: &str, status: JobStatus, secs: Option<f64>| JobReport {
            duration: secs.map(Duration::from_secs_f64),
            status,
            ..JobReport::pending(name)
        };
        let summary = Summary {
            jobs: vec![
                report("build", JobStatus::Success, Some(1.31)),
                JobReport {
                    exit_code: Some(2),
                    failure: Some(FailureKind::Exit),
                    ..report("test", JobStatus::Failed, Some(0.3))
                },
                JobReport {
                    message: Some("needs test, which failed".into()),
                    ..report("deploy", JobStatus::Skipped, None)
                },
                report("lint", JobStatus::Queued, None),
            ],
            interrupted: true,
        };
        assert_eq!(
            summary.table(),
            "JOB     RESULT   TIME   DETAIL\n\
             build   success  1.3s\n\
             test    failed   300ms  exit code 2\n\
             deploy  skipped  -      needs test, which failed\n\
             lint    not run  -\n\
             1 of 4 jobs succeeded; interrupted\n"
        );
        assert!(!summary.success());
        assert_eq!(duration(Duration::from_secs(187)), "3m07s");
    }
}
