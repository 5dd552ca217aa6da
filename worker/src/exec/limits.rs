//! The most a job may ask of this worker (`[worker] max_memory, max_pids, max_cpus, max_timeout`). A job that asks
//! for more is refused before anything runs: it ends `error` (`infra`), saying which limit and by how much, and
//! is not retried — another attempt would ask the same.

use gantry_model::JobSpec;
use std::time::Duration;

/// The worker's upper bounds on what a job's file may ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct JobLimits {
    /// Bytes of memory (`resources.memory`).
    pub max_memory: u64,
    /// Processes (`resources.pids`).
    pub max_pids: u64,
    /// Cores (`resources.cpus`).
    pub max_cpus: f64,
    /// The job's `timeout`.
    pub max_timeout: Duration,
}

/// Six hours: the longest a job may hold a slot unless the worker allows more (GitHub's hosted limit too).
const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// `pids.max` above this is a fork bomb's allowance, not a test suite's.
const DEFAULT_MAX_PIDS: u64 = 32768;

impl Default for JobLimits {
    /// What this machine has: its memory (never below what a job gets when it asks nothing) and cores, 32,768
    /// processes, six hours.
    fn default() -> Self {
        let unasked = gantry_model::pipeline::Resources::default().memory_bytes;
        Self {
            max_memory: host_memory().map_or(u64::MAX, |m| m.max(unasked)),
            max_pids: DEFAULT_MAX_PIDS,
            max_cpus: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            max_timeout: DEFAULT_MAX_TIMEOUT,
        }
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn host_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

impl JobLimits {
    /// Brings a job's default memory and processes (what it gets when it asks nothing) down to this worker's
    /// limits, so that a worker with small limits still runs the jobs that ask nothing. A job that asks for
    /// exactly the default is taken as asking nothing.
    pub fn fit_defaults(&self, spec: &mut JobSpec) {
        let unasked = gantry_model::Resources::default();
        let r = &mut spec.resources;
        if r.memory_bytes == unasked.memory_bytes {
            r.memory_bytes = r.memory_bytes.min(self.max_memory);
        }
        if r.pids == unasked.pids {
            r.pids = r.pids.min(self.max_pids);
        }
    }

    /// Why `spec` asks for more than this worker allows, naming each setting, or none.
    pub fn refusal(&self, spec: &JobSpec) -> Option<String> {
        let r = &spec.resources;
        let mib = |b: u64| format!("{} MiB", b >> 20);
        let mut over = Vec::new();
        if r.memory_bytes > self.max_memory {
            over.push(format!(
                "resources.memory {} > max_memory {}",
                mib(r.memory_bytes),
                mib(self.max_memory)
            ));
        }
        if r.pids > self.max_pids {
            over.push(format!(
                "resources.pids {} > max_pids {}",
                r.pids, self.max_pids
            ));
        }
        if let Some(cpus) = r.cpus.filter(|&c| c > self.max_cpus) {
            over.push(format!(
                "resources.cpus {cpus} > max_cpus {}",
                self.max_cpus
            ));
        }
        if spec.timeout_secs > self.max_timeout.as_secs() {
            over.push(format!(
                "timeout {} s > max_timeout {} s",
                spec.timeout_secs,
                self.max_timeout.as_secs()
            ));
        }
        (!over.is_empty()).then(|| {
            format!(
                "the job asks for more than this worker allows ({}); lower it in the pipeline file, or raise the \
                 limit in the worker's [worker] configuration",
                over.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> JobSpec {
        gantry_model::Pipeline::parse(yaml).unwrap().jobs.remove(0)
    }

    #[test]
    fn a_job_within_the_limits_passes_and_one_over_is_told_each_limit() {
        let limits = JobLimits {
            max_memory: 1 << 30,
            max_pids: 100,
            max_cpus: 2.0,
            max_timeout: Duration::from_secs(3600),
        };
        let fits = spec(
            "jobs:\n  a:\n    timeout: 1h\n    resources: {memory: 1Gi, pids: 100, cpus: 2}\n    steps: [true]\n",
        );
        assert_eq!(limits.refusal(&fits), None);
        let greedy = spec(
            "jobs:\n  a:\n    timeout: 10000h\n    resources: {memory: 64Gi, pids: 1000000, cpus: 64}\n    steps: [true]\n",
        );
        let why = limits.refusal(&greedy).unwrap();
        for part in [
            "resources.memory 65536 MiB > max_memory 1024 MiB",
            "resources.pids 1000000 > max_pids 100",
            "resources.cpus 64 > max_cpus 2",
            "timeout 36000000 s > max_timeout 3600 s",
        ] {
            assert!(why.contains(part), "{why}");
        }
    }

    #[test]
    fn the_defaults_let_an_ordinary_job_run_also_on_a_small_worker() {
        let ordinary = spec("jobs:\n  a:\n    steps: [true]\n");
        assert_eq!(JobLimits::default().refusal(&ordinary), None);
        let small = JobLimits {
            max_memory: 1 << 30,
            max_pids: 100,
            ..JobLimits::default()
        };
        let mut fitted = ordinary.clone();
        small.fit_defaults(&mut fitted);
        assert_eq!(small.refusal(&fitted), None);
        assert_eq!(
            (fitted.resources.memory_bytes, fitted.resources.pids),
            (1 << 30, 100)
        );
    }
}
