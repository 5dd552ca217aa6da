//! How big one pipeline may get once expanded: a small file can ask for thousands of jobs, each with a copy of
//! a big `env`, and the server holds and stores every copy. The budget is checked as each job of the file is
//! read, before any copy of it is made.

use super::PipelineError;

/// The caps (the server's `max_jobs_per_pipeline` and `max_expanded_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Jobs, counting each instance of a `parallel` or `matrix` job.
    pub max_jobs: usize,
    /// Bytes of the expanded jobs' env and steps, counted once per job and instance.
    pub max_expanded_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_jobs: 1_000,
            max_expanded_bytes: 16 << 20,
        }
    }
}

/// What the jobs read so far add up to.
pub(super) struct Budget {
    limits: Limits,
    jobs: usize,
    bytes: usize,
}

impl Budget {
    /// An empty budget under `limits`.
    pub fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            jobs: 0,
            bytes: 0,
        }
    }

    /// Counts job `name`, which makes `instances` jobs of `bytes_each`; an error naming the cap it passes.
    pub fn add(
        &mut self,
        name: &str,
        instances: usize,
        bytes_each: usize,
    ) -> Result<(), PipelineError> {
        self.jobs += instances;
        self.bytes = self
            .bytes
            .saturating_add(instances.saturating_mul(bytes_each));
        let refuse = |message: String| PipelineError {
            line: None,
            column: None,
            key: Some(format!("jobs.{name}")),
            message,
            hint: None,
        };
        if self.jobs > self.limits.max_jobs {
            return Err(refuse(format!(
                "the pipeline has more than {} jobs, counting each instance of parallel and matrix jobs (the \
                 server's max_jobs_per_pipeline)",
                self.limits.max_jobs
            )));
        }
        if self.bytes > self.limits.max_expanded_bytes {
            return Err(refuse(format!(
                "the pipeline's jobs add up to more than {} bytes of env and steps, counted once per job and \
                 instance (the server's max_expanded_bytes)",
                self.limits.max_expanded_bytes
            )));
        }
        Ok(())
    }
}
