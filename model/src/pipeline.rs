//! The pipeline file, `.gantry.yml` (docs/pipeline.md): parsed with line numbers, validated, expanded into job specs.

use crate::image::ImageRef;
use crate::names::JobName;
use crate::units::{parse_duration_secs, parse_size_bytes};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};
use std::fmt;

mod checkout;
mod diagnose;
mod instances;
mod limits;
mod needs;
mod network;
mod service;
mod when;

pub use checkout::Checkout;
pub use limits::Limits;
pub use network::Network;
pub use service::{MAX_SERVICES, Readiness, ServiceSpec};
pub use when::{EVENTS, When};

/// The file a pipeline is read from, at the repository root.
pub const PIPELINE_FILE: &str = ".gantry.yml";
/// Files above this size are refused before parsing.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// The image a job runs in when it names none: the host's root filesystem, read-only, with a fresh upper layer.
pub const HOST_IMAGE: &str = "host";
const DEFAULT_TIMEOUT_SECS: u64 = 60 * 60;
const DEFAULT_MEMORY_BYTES: u64 = 4 << 30;
const DEFAULT_PIDS: u64 = 4096;

/// A validated pipeline: its jobs in file order, each fully expanded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// The jobs, in the order the file lists them.
    pub jobs: Vec<JobSpec>,
    /// The file's `when:`: the refs and events it runs for.
    #[serde(default)]
    pub when: Option<When>,
}

/// Everything a worker needs to know to run one job (docs/pipeline.md, expanded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job's name.
    pub name: JobName,
    /// The image as written (grammar: [`ImageRef`]); `host` by default.
    pub image: String,
    /// Shell command lines, run in order with `/bin/sh -e -c`.
    pub steps: Vec<String>,
    /// The file's `env`, overridden by the job's.
    pub env: IndexMap<String, String>,
    /// Jobs that must succeed before this one runs.
    pub needs: Vec<JobName>,
    /// Wall-clock limit for the whole job.
    pub timeout_secs: u64,
    /// cgroup limits.
    pub resources: Resources,
    /// Sibling containers started and made ready before the steps.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Labels a worker must all have to run it (`runs-on`).
    #[serde(default)]
    pub runs_on: Vec<String>,
    /// How often a `failed` or `timed_out` attempt runs again (`retry:`); lost workers are retried apart.
    #[serde(default)]
    pub retry: u32,
    /// Files it hands to the jobs that need it: normalized relative paths or globs (`artifacts:`).
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// JUnit XML files it writes, as globs (`reports:`), read whether its steps pass or fail.
    #[serde(default)]
    pub reports: Vec<String>,
    /// Higher runs first among ready jobs (`priority:`, -100 to 100, default 0).
    #[serde(default)]
    pub priority: i32,
    /// The job's own `when:`; a job it filters out is `skipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    /// What its network namespace reaches (`network:`, the job's or the file's; `none` by default).
    #[serde(default, skip_serializing_if = "Network::is_none")]
    pub network: Network,
    /// What its workspace holds besides the files (`checkout:`): history, submodules.
    #[serde(default, skip_serializing_if = "Checkout::is_default")]
    pub checkout: Checkout,
}

/// The limits a job's container gets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// `pids.max`.
    pub pids: u64,
    /// CPU quota in cores; none means no quota.
    pub cpus: Option<f64>,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            pids: DEFAULT_PIDS,
            cpus: None,
        }
    }
}

/// Why a pipeline file was refused: where, which key, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PipelineError {
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// The key the error is about, as a path (`jobs.build.steps`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, for the common mistakes (`diagnose.rs`).
    pub hint: Option<String>,
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PIPELINE_FILE)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
            if let Some(column) = self.column {
                write!(f, ", column {column}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl PipelineError {
    fn at(loc: Location, key: impl Into<String>, message: impl Into<String>) -> Self {
        let known = loc != Location::UNKNOWN;
        Self {
            line: known.then(|| loc.line()),
            column: known.then(|| loc.column()),
            key: Some(key.into()),
            message: message.into(),
            hint: None,
        }
    }
}

/// A YAML scalar where the file may write a string, a number or a boolean (`RUST_BACKTRACE: 1`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl Scalar {
    /// About how long its text is.
    fn text_len(&self) -> usize {
        match self {
            Scalar::Text(s) => s.len(),
            _ => 24,
        }
    }

    fn into_text(self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(x) => x.to_string(),
            Scalar::Text(s) => s,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    image: Option<Spanned<String>>,
    #[serde(default)]
    env: IndexMap<String, Scalar>,
    #[serde(default)]
    when: Option<when::RawWhen>,
    #[serde(default)]
    network: Option<Network>,
    #[serde(default)]
    checkout: Option<Spanned<Checkout>>,
    jobs: Spanned<IndexMap<Spanned<String>, Spanned<RawJob>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    steps: Spanned<Vec<String>>,
    #[serde(default)]
    image: Option<Spanned<String>>,
    #[serde(default)]
    env: IndexMap<String, Scalar>,
    #[serde(default)]
    needs: Vec<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<Scalar>>,
    #[serde(default)]
    resources: Option<RawResources>,
    #[serde(default)]
    services: Option<Spanned<IndexMap<Spanned<String>, Spanned<service::RawService>>>>,
    #[serde(default, rename = "runs-on")]
    runs_on: Vec<Spanned<String>>,
    #[serde(default)]
    retry: Option<Spanned<u32>>,
    #[serde(default)]
    parallel: Option<Spanned<u32>>,
    #[serde(default)]
    matrix: Option<Spanned<IndexMap<String, Vec<Scalar>>>>,
    #[serde(default)]
    artifacts: Vec<Spanned<String>>,
    #[serde(default)]
    reports: Vec<Spanned<String>>,
    #[serde(default)]
    when: Option<when::RawWhen>,
    #[serde(default)]
    priority: Option<Spanned<i32>>,
    #[serde(default)]
    network: Option<Network>,
    #[serde(default)]
    checkout: Option<Spanned<Checkout>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    #[serde(default)]
    cpus: Option<Spanned<f64>>,
    #[serde(default)]
    memory: Option<Spanned<Scalar>>,
    #[serde(default)]
    pids: Option<Spanned<u64>>,
}

impl Pipeline {
    /// Parses and validates the text of a pipeline file.
    pub fn parse(text: &str) -> Result<Pipeline, PipelineError> {
        Self::parse_with(text, &Limits::default())
    }

    /// [`Pipeline::parse`] under `limits`: a file whose jobs would pass them is refused, with an error that
    /// names the cap, before the copies are made.
    pub fn parse_with(text: &str, limits: &Limits) -> Result<Pipeline, PipelineError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(PipelineError {
                line: None,
                column: None,
                key: None,
                message: format!("the file is larger than {MAX_FILE_BYTES} bytes"),
                hint: None,
            });
        }
        // YAML 1.2 booleans only, so `y`, `on` or `no` in an env value stay the text the user wrote.
        let options = serde_saphyr::options! { strict_booleans: true };
        let raw: RawFile = serde_saphyr::from_str_with_options(text, options)
            .map_err(|e| diagnose::explain(text, yaml_error(e)))?;
        let default_image = raw
            .image
            .map(|image| check_image(image, "image".into()))
            .transpose()?;
        let file_when = raw.when.map(|w| when::check(w, "when")).transpose()?;
        let default_checkout = match raw.checkout {
            Some(c) => {
                c.value
                    .check()
                    .map_err(|m| PipelineError::at(c.referenced, "checkout", m))?;
                c.value
            }
            None => Checkout::default(),
        };
        let file_env: IndexMap<String, String> = raw
            .env
            .into_iter()
            .map(|(k, v)| (k, v.into_text()))
            .collect();
        if raw.jobs.value.is_empty() {
            return Err(PipelineError::at(
                raw.jobs.referenced,
                "jobs",
                "a pipeline needs at least one job",
            ));
        }
        let file_env_bytes: usize = file_env.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut budget = limits::Budget::new(*limits);
        let mut jobs = Vec::with_capacity(raw.jobs.value.len().min(limits.max_jobs));
        for (name, mut job) in raw.jobs.value {
            let (parallel, matrix) = (job.value.parallel.take(), job.value.matrix.take());
            let instances = instances::of(&name.value, parallel, matrix)?;
            let own: usize = job.value.steps.value.iter().map(String::len).sum::<usize>()
                + job
                    .value
                    .env
                    .iter()
                    .map(|(k, v)| k.len() + v.text_len())
                    .sum::<usize>();
            budget.add(&name.value, instances.len().max(1), file_env_bytes + own)?;
            jobs.push((
                expand_job(
                    name,
                    job,
                    FileDefaults {
                        image: default_image.as_deref(),
                        network: raw.network.unwrap_or_default(),
                        checkout: default_checkout,
                    },
                    &file_env,
                )?,
                instances,
            ));
        }
        needs::check(jobs.iter().map(|(job, _)| job))?;
        Ok(Pipeline {
            jobs: instances::expand(jobs)?,
            when: file_when,
        })
    }
}

fn yaml_error(err: serde_saphyr::Error) -> PipelineError {
    let loc = err.location().filter(|l| *l != Location::UNKNOWN);
    // The crate's Display renders a source snippet; the first line is the message itself.
    let rendered = err.to_string();
    let first = rendered.lines().next().unwrap_or("invalid YAML").trim();
    // It reads `error: line 3 column 5: unknown field …`; the place is ours to say, once.
    let message = first.strip_prefix("error:").unwrap_or(first).trim_start();
    let message = match (message.strip_prefix("line "), loc) {
        (Some(rest), Some(_)) => rest.split_once(": ").map_or(message, |(_, text)| text),
        _ => message,
    }
    .to_owned();
    PipelineError {
        line: loc.map(|l| l.line()),
        column: loc.map(|l| l.column()),
        key: None,
        message,
        hint: None,
    }
}

fn check_image(image: Spanned<String>, key: String) -> Result<String, PipelineError> {
    ImageRef::parse(&image.value)
        .map(|_| image.value)
        .map_err(|message| PipelineError::at(image.referenced, key, message))
}

fn expand_job(
    name: Spanned<String>,
    job: Spanned<RawJob>,
    defaults: FileDefaults<'_>,
    file_env: &IndexMap<String, String>,
) -> Result<JobSpec, PipelineError> {
    let key = |field: &str| format!("jobs.{}.{field}", name.value);
    let job_name = JobName::new(name.value.clone()).map_err(|e| {
        PipelineError::at(
            name.referenced,
            format!("jobs.{}", name.value),
            e.to_string(),
        )
    })?;
    if name.value.contains([':', ',']) {
        return Err(PipelineError::at(
            name.referenced,
            key(""),
            "job names may not contain ':' or ',' (they name the instances of parallel and matrix jobs)",
        ));
    }
    let job = job.value;
    if job.steps.value.is_empty() {
        return Err(PipelineError::at(
            job.steps.referenced,
            key("steps"),
            "a job needs at least one step",
        ));
    }
    if let Some(i) = job.steps.value.iter().position(|s| s.trim().is_empty()) {
        return Err(PipelineError::at(
            job.steps.referenced,
            key("steps"),
            format!("step {} is empty", i + 1),
        ));
    }
    let image = match job.image {
        Some(image) => check_image(image, key("image"))?,
        None => defaults.image.unwrap_or(HOST_IMAGE).to_owned(),
    };
    let mut env = file_env.clone();
    env.extend(job.env.into_iter().map(|(k, v)| (k, v.into_text())));
    if let Some(bad) = env.keys().find(|k| !valid_env_name(k)) {
        return Err(PipelineError {
            line: None,
            column: None,
            key: Some(key("env")),
            message: format!("{bad:?} is not a valid environment variable name"),
            hint: None,
        });
    }
    let timeout_secs = match job.timeout {
        None => DEFAULT_TIMEOUT_SECS,
        Some(t) => parse_duration_secs(&t.value.into_text())
            .and_then(|s| {
                if s == 0 {
                    Err("a timeout must be positive".into())
                } else {
                    Ok(s)
                }
            })
            .map_err(|m| PipelineError::at(t.referenced, key("timeout"), m))?,
    };
    let resources = expand_resources(job.resources, &key)?;
    let services = match job.services {
        Some(raw) => service::expand(raw, &image, &key)?,
        None => Vec::new(),
    };
    let needs = job
        .needs
        .into_iter()
        .map(|n| {
            JobName::new(n.value)
                .map_err(|e| PipelineError::at(n.referenced, key("needs"), e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let runs_on = job
        .runs_on
        .into_iter()
        .map(|label| {
            if valid_label(&label.value) {
                Ok(label.value)
            } else {
                Err(PipelineError::at(
                    label.referenced,
                    key("runs-on"),
                    format!(
                        "{:?} is not a worker label: use 1 to 63 letters, digits, '.', '_' and '-'",
                        label.value
                    ),
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    let retry = match job.retry {
        Some(r) if r.value > MAX_RETRY => {
            return Err(PipelineError::at(
                r.referenced,
                key("retry"),
                format!("retry is at most {MAX_RETRY}"),
            ));
        }
        Some(r) => r.value,
        None => 0,
    };
    let patterns = |list: Vec<Spanned<String>>, field: &str| {
        list.into_iter()
            .map(|p| {
                crate::artifact::check_pattern(&p.value)
                    .map_err(|m| PipelineError::at(p.referenced, key(field), m))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let when = job.when.map(|w| when::check(w, &key("when"))).transpose()?;
    let priority = match job.priority {
        Some(p) if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&p.value) => {
            return Err(PipelineError::at(
                p.referenced,
                key("priority"),
                format!("priority is between -{MAX_PRIORITY} and {MAX_PRIORITY}"),
            ));
        }
        Some(p) => p.value,
        None => 0,
    };
    let checkout = match job.checkout {
        Some(c) => {
            c.value
                .check()
                .map_err(|m| PipelineError::at(c.referenced, key("checkout"), m))?;
            c.value
        }
        None => defaults.checkout,
    };
    let artifacts = patterns(job.artifacts, "artifacts")?;
    let reports = patterns(job.reports, "reports")?;
    Ok(JobSpec {
        name: job_name,
        image,
        steps: job.steps.value,
        env,
        needs,
        timeout_secs,
        resources,
        services,
        runs_on,
        retry,
        artifacts,
        reports,
        priority,
        when,
        network: job.network.unwrap_or(defaults.network),
        checkout,
    })
}

/// What the file says for every job that does not say otherwise.
struct FileDefaults<'a> {
    image: Option<&'a str>,
    network: Network,
    checkout: Checkout,
}

/// The largest `priority:` either way.
const MAX_PRIORITY: i32 = 100;

/// The most a job's own `retry:` may ask for.
const MAX_RETRY: u32 = 5;

/// What a worker label may be (also checked when workers register).
pub fn valid_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn expand_resources(
    raw: Option<RawResources>,
    key: &dyn Fn(&str) -> String,
) -> Result<Resources, PipelineError> {
    let mut res = Resources::default();
    let Some(raw) = raw else { return Ok(res) };
    if let Some(mem) = raw.memory {
        res.memory_bytes = parse_size_bytes(&mem.value.into_text())
            .map_err(|m| PipelineError::at(mem.referenced, key("resources.memory"), m))?;
    }
    if let Some(pids) = raw.pids {
        if pids.value < 8 {
            return Err(PipelineError::at(
                pids.referenced,
                key("resources.pids"),
                "pids must be at least 8",
            ));
        }
        res.pids = pids.value;
    }
    if let Some(cpus) = raw.cpus {
        if !(cpus.value.is_finite() && cpus.value > 0.0) {
            return Err(PipelineError::at(
                cpus.referenced,
                key("resources.cpus"),
                "cpus must be positive",
            ));
        }
        res.cpus = Some(cpus.value);
    }
    Ok(res)
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
