//! Which jobs a local run runs, and when: the `--job` selection, then file order held back by `needs` (decided
//! by the model's `resolve_needs`, as the server's queue decides it), one job at a time.

use super::LocalError;
use gantry_model::status::{NeedsVerdict, resolve_needs};
use gantry_model::{JobSpec, JobStatus, Pipeline};

/// The jobs of a run and where each is.
pub(crate) struct Plan {
    jobs: Vec<JobSpec>,
    /// Each job's needs within the selection.
    needs: Vec<Vec<String>>,
    status: Vec<JobStatus>,
}

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Run job `index`.
    Run(usize),
    /// Job `index` will never run: a job it needs did not succeed.
    Skip {
        /// The job.
        index: usize,
        /// Which need, and how it ended.
        reason: String,
    },
    /// Nothing is left that can run.
    Done,
}

impl Plan {
    /// The jobs named in `only` (every job when empty), in file order. A need on a job left out is dropped: the
    /// user asked for this job alone. Returns a note for each need dropped.
    pub fn new(pipeline: Pipeline, only: &[String]) -> Result<(Plan, Vec<String>), LocalError> {
        let names: Vec<&str> = pipeline.jobs.iter().map(|j| j.name.as_str()).collect();
        if let Some(unknown) = only.iter().find(|n| !names.contains(&n.as_str())) {
            return Err(LocalError::UnknownJob {
                name: unknown.clone(),
                jobs: names.join(", "),
            });
        }
        let jobs: Vec<JobSpec> = pipeline
            .jobs
            .into_iter()
            .filter(|j| only.is_empty() || only.iter().any(|n| n == j.name.as_str()))
            .collect();
        let mut notes = Vec::new();
        let needs = jobs
            .iter()
            .map(|job| {
                let (kept, dropped): (Vec<String>, Vec<String>) = job
                    .needs
                    .iter()
                    .map(|n| n.as_str().to_owned())
                    .partition(|n| jobs.iter().any(|j| j.name.as_str() == n));
                for need in dropped {
                    notes.push(format!(
                        "{} needs {need}, which --job leaves out: running it without",
                        job.name
                    ));
                }
                kept
            })
            .collect();
        let status = vec![JobStatus::Queued; jobs.len()];
        Ok((
            Plan {
                jobs,
                needs,
                status,
            },
            notes,
        ))
    }

    /// The selected jobs, in file order.
    pub fn jobs(&self) -> &[JobSpec] {
        &self.jobs
    }

    /// The first job in file order that can run or must be skipped; a skipped job is marked so at once.
    pub fn next(&mut self) -> Next {
        let table: Vec<(String, Vec<String>, JobStatus)> = self
            .jobs
            .iter()
            .zip(&self.needs)
            .zip(&self.status)
            .map(|((job, needs), status)| (job.name.as_str().to_owned(), needs.clone(), *status))
            .collect();
        let verdicts = resolve_needs(&table);
        let queued = |i: usize| self.status[i] == JobStatus::Queued;
        let index_of = |need: &String| table.iter().position(|(name, _, _)| name == need);
        // A job is skipped after the needs that skip it, so that its reason names a job that has ended.
        let to_skip_first = |i: usize| {
            self.needs[i]
                .iter()
                .filter_map(index_of)
                .any(|k| queued(k) && verdicts[k] == NeedsVerdict::Skip)
        };
        let Some(index) = (0..self.jobs.len()).find(|&i| {
            queued(i)
                && match verdicts[i] {
                    NeedsVerdict::Ready => true,
                    NeedsVerdict::Skip => !to_skip_first(i),
                    NeedsVerdict::Wait => false,
                }
        }) else {
            return Next::Done;
        };
        if verdicts[index] == NeedsVerdict::Ready {
            self.status[index] = JobStatus::Running;
            return Next::Run(index);
        }
        self.status[index] = JobStatus::Skipped;
        let reason = self.needs[index]
            .iter()
            .find_map(|need| {
                let how = match self.status[index_of(need)?] {
                    JobStatus::Failed => "failed",
                    JobStatus::TimedOut => "timed out",
                    JobStatus::Cancelled => "was cancelled",
                    JobStatus::Error => "could not run",
                    JobStatus::Skipped => "was skipped",
                    _ => return None,
                };
                Some(format!("needs {need}, which {how}"))
            })
            .unwrap_or_else(|| "a job it needs did not succeed".into());
        Next::Skip { index, reason }
    }

    /// Records how job `index` ended.
    pub fn finish(&mut self, index: usize, status: JobStatus) {
        self.status[index] = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(only: &[&str]) -> (Plan, Vec<String>) {
        let file = "jobs:\n  deploy: { needs: [test], steps: [d] }\n  build: { steps: [b] }\n  test: { needs: [build], steps: [t] }\n  lint: { steps: [l] }\n";
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        Plan::new(Pipeline::parse(file).unwrap(), &only).unwrap()
    }

    fn run_all(plan: &mut Plan, outcome: impl Fn(&str) -> JobStatus) -> Vec<String> {
        let mut log = Vec::new();
        loop {
            match plan.next() {
                Next::Run(i) => {
                    let name = plan.jobs()[i].name.to_string();
                    plan.finish(i, outcome(&name));
                    log.push(format!("run {name}"));
                }
                Next::Skip { index, reason } => {
                    log.push(format!("skip {}: {reason}", plan.jobs()[index].name))
                }
                Next::Done => return log,
            }
        }
    }

    #[test]
    fn jobs_run_in_file_order_after_what_they_need() {
        let (mut plan, notes) = plan(&[]);
        assert!(notes.is_empty());
        let log = run_all(&mut plan, |_| JobStatus::Success);
        assert_eq!(log, ["run build", "run test", "run deploy", "run lint"]);
    }

    #[test]
    fn a_failure_skips_what_needs_it_down_the_chain_and_nothing_else() {
        let (mut plan, _) = plan(&[]);
        let log = run_all(&mut plan, |name| match name {
            "build" => JobStatus::Failed,
            _ => JobStatus::Success,
        });
        assert_eq!(
            log,
            [
                "run build",
                "skip test: needs build, which failed",
                "skip deploy: needs test, which was skipped",
                "run lint"
            ]
        );
    }

    #[test]
    fn a_selection_drops_needs_on_jobs_left_out_and_unknown_names_are_refused() {
        let (mut plan, notes) = plan(&["deploy", "lint"]);
        assert_eq!(
            notes,
            ["deploy needs test, which --job leaves out: running it without"]
        );
        let log = run_all(&mut plan, |_| JobStatus::Success);
        assert_eq!(log, ["run deploy", "run lint"]);
        let file = "jobs:\n  a: { steps: [x] }\n";
        let err = Plan::new(Pipeline::parse(file).unwrap(), &["b".into()])
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "the pipeline has no job named \"b\" (its jobs: a)"
        );
    }
}
