//! The states of jobs and pipelines, and how a pipeline's state follows from its jobs' (docs/data-model.md).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! text_enum {
    ($(#[$doc:meta])* $ty:ident { $($(#[$vdoc:meta])* $var:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $ty { $($(#[$vdoc])* $var),+ }

        impl $ty {
            /// The name used in the database, the API and the dashboard.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$var => $text),+ }
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($text => Ok(Self::$var),)+ _ => Err(format!("unknown {} {s:?}", stringify!($ty))) }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

text_enum!(
    /// Where a job is in its life.
    JobStatus {
        /// Waiting for a worker (or for the jobs it needs).
        Queued = "queued",
        /// Leased to a worker.
        Running = "running",
        /// Every step exited 0.
        Success = "success",
        /// A step failed, or the job hit a resource limit.
        Failed = "failed",
        /// Cancelled by a user or a newer push.
        Cancelled = "cancelled",
        /// Killed at its timeout.
        TimedOut = "timed_out",
        /// Gantry could not run it (worker lost, infrastructure failure).
        Error = "error",
        /// Not run, because a job it needs did not succeed.
        Skipped = "skipped",
    }
);

text_enum!(
    /// Where a pipeline is in its life.
    PipelineStatus {
        /// Accepted; its file is being read or its jobs wait for workers.
        Queued = "queued",
        /// At least one job runs.
        Running = "running",
        /// Every job succeeded (or was skipped by `when`).
        Success = "success",
        /// Some job failed.
        Failed = "failed",
        /// Cancelled.
        Cancelled = "cancelled",
        /// The file could not be fetched or parsed, or a job ended in `error`.
        Error = "error",
    }
);

text_enum!(
    /// Why a job did not succeed (docs/data-model.md).
    FailureKind {
        /// A step exited non-zero.
        Exit = "exit",
        /// The cgroup's OOM killer killed the job.
        Oom = "oom",
        /// The job hit `pids.max`.
        PidsLimit = "pids_limit",
        /// The job ran past its timeout.
        Timeout = "timeout",
        /// A service exited or never got ready, so the steps did not run.
        Service = "service",
        /// Cancelled.
        Cancelled = "cancelled",
        /// The worker stopped heartbeating.
        WorkerLost = "worker_lost",
        /// Gantry's own machinery failed (checkout, container, image, moving artifacts).
        Infra = "infra",
        /// The job's `artifacts:` or `reports:` could not be collected (nothing matched, too big, unreadable),
        /// or the jobs it needs uploaded the same path.
        Artifacts = "artifacts",
    }
);

impl JobStatus {
    /// Whether the job has reached a final state.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

impl FailureKind {
    /// The status a job ends in when it fails this way.
    pub fn job_status(self) -> JobStatus {
        match self {
            Self::Exit | Self::Oom | Self::PidsLimit | Self::Service | Self::Artifacts => {
                JobStatus::Failed
            }
            Self::Timeout => JobStatus::TimedOut,
            Self::Cancelled => JobStatus::Cancelled,
            Self::WorkerLost | Self::Infra => JobStatus::Error,
        }
    }
}

impl PipelineStatus {
    /// Whether the pipeline has reached a final state.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    /// A pipeline's status from its jobs' (docs/data-model.md). An empty pipeline is still being prepared.
    pub fn from_jobs(jobs: impl IntoIterator<Item = JobStatus>) -> Self {
        let (mut any, mut running, mut queued) = (false, false, false);
        let (mut failed, mut cancelled, mut error) = (false, false, false);
        for status in jobs {
            any = true;
            match status {
                JobStatus::Running => running = true,
                JobStatus::Queued => queued = true,
                JobStatus::Failed | JobStatus::TimedOut => failed = true,
                JobStatus::Cancelled => cancelled = true,
                JobStatus::Error => error = true,
                JobStatus::Success | JobStatus::Skipped => {}
            }
        }
        if running || (queued && (failed || cancelled || error)) {
            Self::Running
        } else if queued || !any {
            Self::Queued
        } else if cancelled {
            Self::Cancelled
        } else if error {
            Self::Error
        } else if failed {
            Self::Failed
        } else {
            Self::Success
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    #[test]
    fn pipeline_status_follows_its_jobs() {
        assert_eq!(
            PipelineStatus::from_jobs([Queued, Queued]),
            PipelineStatus::Queued
        );
        assert_eq!(
            PipelineStatus::from_jobs([Success, Running]),
            PipelineStatus::Running
        );
        assert_eq!(
            PipelineStatus::from_jobs([Success, Skipped]),
            PipelineStatus::Success
        );
        assert_eq!(
            PipelineStatus::from_jobs([Success, Failed]),
            PipelineStatus::Failed
        );
        assert_eq!(
            PipelineStatus::from_jobs([Error, Failed]),
            PipelineStatus::Error
        );
        assert_eq!(
            PipelineStatus::from_jobs([Cancelled, Error]),
            PipelineStatus::Cancelled
        );
    }

    #[test]
    fn names_round_trip() {
        for s in [
            "queued",
            "running",
            "success",
            "failed",
            "cancelled",
            "timed_out",
            "error",
            "skipped",
        ] {
            assert_eq!(s.parse::<JobStatus>().unwrap().as_str(), s);
        }
        assert_eq!(FailureKind::PidsLimit.as_str(), "pids_limit");
        assert_eq!(FailureKind::Timeout.job_status(), TimedOut);
    }
}

/// What becomes of a queued job once the jobs it needs have moved on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeedsVerdict {
    /// Some job it needs did not succeed: it will never run.
    Skip,
    /// Every job it needs succeeded: it can be leased.
    Ready,
    /// Still waiting.
    Wait,
}

/// For each job (name, needs, status), what its needs say now; `Skip` spreads down chains of needs.
pub fn resolve_needs(jobs: &[(String, Vec<String>, JobStatus)]) -> Vec<NeedsVerdict> {
    let mut status: Vec<JobStatus> = jobs.iter().map(|j| j.2).collect();
    let mut verdicts = vec![NeedsVerdict::Wait; jobs.len()];
    loop {
        let mut changed = false;
        for (i, (_, needs, _)) in jobs.iter().enumerate() {
            if status[i] != JobStatus::Queued || verdicts[i] == NeedsVerdict::Skip {
                continue;
            }
            let need_status = |n: &String| jobs.iter().position(|j| &j.0 == n).map(|k| status[k]);
            let verdict = if needs.iter().any(
                |n| matches!(need_status(n), Some(s) if s.is_finished() && s != JobStatus::Success),
            ) {
                NeedsVerdict::Skip
            } else if needs
                .iter()
                .all(|n| need_status(n) == Some(JobStatus::Success))
            {
                NeedsVerdict::Ready
            } else {
                NeedsVerdict::Wait
            };
            if verdict != verdicts[i] {
                verdicts[i] = verdict;
                changed = true;
                if verdict == NeedsVerdict::Skip {
                    status[i] = JobStatus::Skipped;
                }
            }
        }
        if !changed {
            return verdicts;
        }
    }
}

#[cfg(test)]
mod needs_tests {
    use super::*;

    #[test]
    fn a_failed_need_skips_the_whole_chain_and_success_readies() {
        let job = |n: &str, needs: &[&str], s| {
            (
                n.to_owned(),
                needs.iter().map(|x| x.to_string()).collect(),
                s,
            )
        };
        let jobs = vec![
            job("build", &[], JobStatus::Failed),
            job("test", &["build"], JobStatus::Queued),
            job("report", &["test"], JobStatus::Queued),
            job("lint", &[], JobStatus::Success),
            job("docs", &["lint"], JobStatus::Queued),
        ];
        let v = resolve_needs(&jobs);
        assert_eq!(v[1], NeedsVerdict::Skip);
        assert_eq!(v[2], NeedsVerdict::Skip);
        assert_eq!(v[4], NeedsVerdict::Ready);
    }
}
