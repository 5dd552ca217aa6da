//! How a container's run ended, in words a user can act on.

use super::Outcome;
use super::cgroup::CgroupStats;
use super::events::Progress;
use gantry_model::{FailureKind, Resources};
use std::process::ExitStatus;
use std::time::Duration;

/// Everything known once a container is torn down.
pub(crate) struct Ending<'a> {
    pub steps: &'a [String],
    pub resources: &'a Resources,
    pub timeout: Duration,
    pub timed_out: bool,
    pub progress: &'a Progress,
    pub stats: &'a CgroupStats,
    pub init_status: Option<ExitStatus>,
}

/// Decides the outcome. Cancellation and timeouts win; a limit hit explains a failure but does not fail a job
/// whose steps all succeeded (a test suite may provoke and survive an OOM kill on purpose).
pub(crate) fn decide(end: &Ending<'_>) -> Outcome {
    let progress = end.progress;
    // The step that was running when the job was stopped (cancelled, timed out), if one was: then the job has
    // no exit code — the last step did not exit by itself, and the one before it is not the job's.
    let stopped_step = progress.last_started.filter(|&started| {
        progress
            .last_exit
            .is_none_or(|(exited, _)| exited < started)
    });
    let mut outcome = Outcome {
        exit_code: match stopped_step {
            Some(_) => None,
            None => progress.last_exit.map(|(_, code)| code),
        },
        cpu_seconds: end.stats.cpu_seconds,
        peak_memory_bytes: end.stats.peak_memory_bytes,
        ..Outcome::default()
    };
    let failed_step = progress.last_exit.filter(|&(_, code)| code != 0);
    let steps_done = progress
        .last_exit
        .map_or(0, |(index, _)| index as usize + 1);
    let during = || match stopped_step {
        Some(index) => {
            let step = end.steps.get(index as usize).map_or("?", String::as_str);
            format!(" during step {} (`{}`)", index + 1, short(step))
        }
        None => String::new(),
    };
    let (kind, message) = if progress.cancelled {
        // The kind says "cancelled" already: the message says where.
        let message = match (stopped_step, progress.last_started) {
            (Some(_), _) => format!("stopped{}", during()),
            (None, None) => "stopped before its first step".to_string(),
            (None, Some(_)) => "stopped after its last step".to_string(),
        };
        (FailureKind::Cancelled, message)
    } else if end.timed_out {
        (
            FailureKind::Timeout,
            format!(
                "the job ran longer than its timeout of {} and was killed{}",
                duration(end.timeout),
                during()
            ),
        )
    } else if let Some(message) = &progress.service_failed {
        (FailureKind::Service, message.clone())
    } else if failed_step.is_none() && steps_done == end.steps.len() {
        return outcome;
    } else if end.stats.oom_killed {
        let limit = bytes(end.resources.memory_bytes);
        (
            FailureKind::Oom,
            format!(
                "the job ran out of memory: the OOM killer killed a process (memory limit {limit})"
            ),
        )
    } else if end.stats.pids_limit_hit {
        let limit = end.resources.pids;
        (
            FailureKind::PidsLimit,
            format!("the job hit its process limit (pids: {limit}): a fork failed"),
        )
    } else if let Some((index, code)) = failed_step {
        let step = end.steps.get(index as usize).map_or("?", String::as_str);
        (
            FailureKind::Exit,
            format!("step {} (`{}`) exited with {code}", index + 1, short(step)),
        )
    } else if let Some(message) = &progress.setup_failed {
        (
            FailureKind::Infra,
            format!("container setup failed: {message}"),
        )
    } else {
        let status = end
            .init_status
            .map_or("status unknown".to_string(), |s| s.to_string());
        let step =
            (steps_done < end.steps.len()).then(|| format!(" during step {}", steps_done + 1));
        (
            FailureKind::Infra,
            format!(
                "the container's init ended unexpectedly{} ({status})",
                step.unwrap_or_default()
            ),
        )
    };
    outcome.failure = Some(kind);
    outcome.message = Some(message);
    outcome
}

/// A step's first line, cut to fit in a message.
fn short(step: &str) -> String {
    let line = step.trim().lines().next().unwrap_or("");
    let cut: String = line.chars().take(60).collect();
    if cut.len() < step.trim().len() {
        format!("{cut}…")
    } else {
        cut
    }
}

fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs, d.subsec_millis()) {
        (0, ms) => format!("{ms}ms"),
        (s, 0) if s % 3600 == 0 => format!("{}h", s / 3600),
        (s, 0) if s % 60 == 0 => format!("{}m", s / 60),
        (s, 0) => format!("{s}s"),
        _ => format!("{:.1}s", d.as_secs_f64()),
    }
}

fn bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    if n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end<'a>(
        steps: &'a [String],
        progress: &'a Progress,
        stats: &'a CgroupStats,
        res: &'a Resources,
    ) -> Ending<'a> {
        Ending {
            steps,
            resources: res,
            timeout: Duration::from_secs(90),
            timed_out: false,
            progress,
            stats,
            init_status: None,
        }
    }

    #[test]
    fn a_failed_step_is_named_by_its_number_and_command() {
        let steps = vec![
            "true".to_string(),
            "false".to_string(),
            "echo never".to_string(),
        ];
        let progress = Progress {
            last_exit: Some((1, 3)),
            ..Progress::default()
        };
        let (stats, res) = (CgroupStats::default(), Resources::default());
        let outcome = decide(&end(&steps, &progress, &stats, &res));
        assert_eq!(outcome.failure, Some(FailureKind::Exit));
        assert_eq!(outcome.exit_code, Some(3));
        assert_eq!(
            outcome.message.as_deref(),
            Some("step 2 (`false`) exited with 3")
        );
    }

    #[test]
    fn limit_hits_explain_failures_but_do_not_fail_successful_jobs() {
        let steps = vec!["x".to_string()];
        let stats = CgroupStats {
            oom_killed: true,
            ..CgroupStats::default()
        };
        let res = Resources {
            memory_bytes: 64 << 20,
            ..Resources::default()
        };
        let failed = Progress {
            last_exit: Some((0, 137)),
            ..Progress::default()
        };
        let outcome = decide(&end(&steps, &failed, &stats, &res));
        assert_eq!(outcome.failure, Some(FailureKind::Oom));
        assert!(outcome.message.unwrap().contains("64 MiB"));
        let passed = Progress {
            last_exit: Some((0, 0)),
            ..Progress::default()
        };
        assert_eq!(decide(&end(&steps, &passed, &stats, &res)).failure, None);
    }

    #[test]
    fn a_job_stopped_mid_step_has_no_exit_code_and_says_where_it_was_stopped() {
        let steps = vec!["true".to_string(), "sleep 100".to_string()];
        let (stats, res) = (CgroupStats::default(), Resources::default());
        // Step 1 exited 0, step 2 was running.
        let running = |cancelled| Progress {
            last_started: Some(1),
            last_exit: Some((0, 0)),
            cancelled,
            ..Progress::default()
        };
        let cancelled = decide(&end(&steps, &running(true), &stats, &res));
        assert_eq!(cancelled.failure, Some(FailureKind::Cancelled));
        assert_eq!(cancelled.exit_code, None, "not step 1's 0");
        assert_eq!(
            cancelled.message.as_deref(),
            Some("stopped during step 2 (`sleep 100`)")
        );
        let still_running = running(false);
        let mut timed_out = end(&steps, &still_running, &stats, &res);
        timed_out.timed_out = true;
        let timed_out = decide(&timed_out);
        assert_eq!(timed_out.exit_code, None);
        assert!(
            timed_out
                .message
                .unwrap()
                .ends_with("killed during step 2 (`sleep 100`)")
        );
        // Cancelled before anything ran, and after the last step ended by itself (it keeps its code).
        let none = Progress {
            cancelled: true,
            ..Progress::default()
        };
        let before = decide(&end(&steps, &none, &stats, &res));
        assert_eq!(
            (before.exit_code, before.message.as_deref()),
            (None, Some("stopped before its first step"))
        );
        let done = Progress {
            last_started: Some(1),
            last_exit: Some((1, 0)),
            cancelled: true,
            ..Progress::default()
        };
        assert_eq!(decide(&end(&steps, &done, &stats, &res)).exit_code, Some(0));
    }

    #[test]
    fn timeouts_are_said_in_the_units_they_were_given_in() {
        assert_eq!(duration(Duration::from_secs(3600)), "1h");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
        assert_eq!(duration(Duration::from_secs(2)), "2s");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration(Duration::from_millis(300)), "300ms");
    }
}
