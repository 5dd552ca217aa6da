//! `parallel: N` and `matrix:` (docs/pipeline.md): one job of the file becomes several, `test:1` … `test:N` with
//! `GANTRY_SHARD_INDEX` and `GANTRY_SHARD_TOTAL`, or one per combination of the matrix's values (`lint:stable`,
//! `lint:stable,x86`) with each key in the env; a job that needs an expanded one needs all of its instances.

use super::{JobSpec, PipelineError, Scalar, valid_env_name};
use crate::JobName;
use indexmap::IndexMap;
use serde_saphyr::Spanned;

/// The most instances one job may expand to.
const MAX_INSTANCES: usize = 100;

/// One instance of an expanded job: its name's suffix and its own variables.
pub(super) struct Instance {
    suffix: String,
    env: Vec<(String, String)>,
}

/// The instances `parallel` or `matrix` ask for; none: the job stays one job.
pub(super) fn of(
    job: &str,
    parallel: Option<Spanned<u32>>,
    matrix: Option<Spanned<IndexMap<String, Vec<Scalar>>>>,
) -> Result<Vec<Instance>, PipelineError> {
    let key = |field: &str| format!("jobs.{job}.{field}");
    match (parallel, matrix) {
        (Some(_), Some(m)) => Err(PipelineError::at(
            m.referenced,
            key("matrix"),
            "a job has either parallel or matrix, not both",
        )),
        (Some(n), None) => {
            let total = n.value as usize;
            if !(1..=MAX_INSTANCES).contains(&total) {
                return Err(PipelineError::at(
                    n.referenced,
                    key("parallel"),
                    format!("parallel must be between 1 and {MAX_INSTANCES}"),
                ));
            }
            Ok((1..=total)
                .map(|i| Instance {
                    suffix: i.to_string(),
                    env: vec![
                        ("GANTRY_SHARD_INDEX".into(), i.to_string()),
                        ("GANTRY_SHARD_TOTAL".into(), total.to_string()),
                    ],
                })
                .collect())
        }
        (None, Some(m)) => {
            let error = |message: String| PipelineError::at(m.referenced, key("matrix"), message);
            if m.value.is_empty() {
                return Err(error("a matrix needs at least one variable".into()));
            }
            let mut combinations = vec![Instance {
                suffix: String::new(),
                env: Vec::new(),
            }];
            for (name, values) in m.value {
                if !valid_env_name(&name) {
                    return Err(error(format!(
                        "{name:?} is not a valid environment variable name"
                    )));
                }
                if values.is_empty() {
                    return Err(error(format!("{name} has no values")));
                }
                let values: Vec<String> = values.into_iter().map(Scalar::into_text).collect();
                if let Some(bad) = values.iter().find(|v| !valid_suffix_part(v)) {
                    return Err(error(format!(
                        "{bad:?} (in {name}) cannot be part of a job name: use letters, digits, '.', '_' and '-'"
                    )));
                }
                if combinations.len() * values.len() > MAX_INSTANCES {
                    return Err(error(format!(
                        "the matrix makes more than {MAX_INSTANCES} jobs"
                    )));
                }
                combinations = combinations
                    .into_iter()
                    .flat_map(|c| {
                        let name = &name;
                        values.iter().map(move |value| {
                            let mut env = c.env.clone();
                            env.push((name.clone(), value.clone()));
                            let suffix = if c.suffix.is_empty() {
                                value.clone()
                            } else {
                                format!("{},{value}", c.suffix)
                            };
                            Instance { suffix, env }
                        })
                    })
                    .collect();
            }
            Ok(combinations)
        }
        (None, None) => Ok(Vec::new()),
    }
}

fn valid_suffix_part(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Replaces each job that has instances by them, and each need of an expanded job by all its instances.
pub(super) fn expand(jobs: Vec<(JobSpec, Vec<Instance>)>) -> Result<Vec<JobSpec>, PipelineError> {
    let names = |job: &JobSpec, instances: &[Instance]| -> Result<Vec<JobName>, PipelineError> {
        if instances.is_empty() {
            return Ok(vec![job.name.clone()]);
        }
        instances
            .iter()
            .map(|i| {
                JobName::new(format!("{}:{}", job.name, i.suffix)).map_err(|e| PipelineError {
                    line: None,
                    column: None,
                    key: Some(format!("jobs.{}", job.name)),
                    message: e.to_string(),
                    hint: None,
                })
            })
            .collect()
    };
    let mut expanded_names: IndexMap<JobName, Vec<JobName>> = IndexMap::new();
    for (job, instances) in &jobs {
        expanded_names.insert(job.name.clone(), names(job, instances)?);
    }
    let mut out = Vec::new();
    for (job, instances) in jobs {
        let needs: Vec<JobName> = job
            .needs
            .iter()
            .flat_map(|need| expanded_names.get(need).cloned().unwrap_or_default())
            .collect();
        if instances.is_empty() {
            out.push(JobSpec { needs, ..job });
            continue;
        }
        let instance_names = expanded_names[&job.name].clone();
        for (instance, name) in instances.into_iter().zip(instance_names) {
            let mut spec = job.clone();
            spec.name = name;
            spec.needs = needs.clone();
            spec.env.extend(instance.env);
            out.push(spec);
        }
    }
    Ok(out)
}
