//! `needs:` checked across the file: every need names a job, and they make no cycle.

use super::{JobSpec, PipelineError};
use crate::names::JobName;

/// Refuses a need of a job the file lacks, and needs that make a cycle.
pub(super) fn check<'a>(jobs: impl Iterator<Item = &'a JobSpec>) -> Result<(), PipelineError> {
    let jobs: Vec<&JobSpec> = jobs.collect();
    let error = |job: &JobSpec, message: String| PipelineError {
        line: None,
        column: None,
        key: Some(format!("jobs.{}.needs", job.name)),
        message,
        hint: None,
    };
    let index: std::collections::HashMap<&JobName, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| (&job.name, i))
        .collect();
    // Kahn's algorithm, linear in jobs and needs: whatever cannot be ordered is part of a cycle.
    let mut waiting: Vec<usize> = vec![0; jobs.len()];
    let mut needed_by: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
    for (i, job) in jobs.iter().enumerate() {
        for need in &job.needs {
            if need == &job.name {
                return Err(error(job, "a job cannot need itself".into()));
            }
            let Some(&n) = index.get(need) else {
                return Err(error(
                    job,
                    format!("needs `{need}`, which is not a job of this pipeline"),
                ));
            };
            waiting[i] += 1;
            needed_by[n].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..jobs.len()).filter(|&i| waiting[i] == 0).collect();
    let mut ordered = 0;
    while let Some(i) = ready.pop() {
        ordered += 1;
        for &next in &needed_by[i] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(next);
            }
        }
    }
    if ordered == jobs.len() {
        return Ok(());
    }
    let stuck = (0..jobs.len()).find(|&i| waiting[i] > 0).unwrap_or(0);
    Err(error(
        jobs[stuck],
        "the `needs` of this job form a cycle".into(),
    ))
}
