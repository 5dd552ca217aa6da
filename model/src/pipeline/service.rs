//! A job's `services:` (docs/pipeline.md): sibling containers in the job's network namespace, started and made ready
//! before the steps, reachable from them on `localhost` and by name.

use super::{PipelineError, Scalar, check_image, valid_env_name};
use crate::units::parse_duration_secs;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// More would be a test environment of its own, not a job's helpers.
pub const MAX_SERVICES: usize = 8;
const DEFAULT_READY_TIMEOUT_SECS: u64 = 60;

/// One service of a job, fully expanded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Its name: a DNS label, resolving to `127.0.0.1` in the job's `/etc/hosts`, and the service's hostname.
    pub name: String,
    /// The image as written; the job's image when the file names none.
    pub image: String,
    /// The program and its arguments; empty: the image's `Entrypoint` and `Cmd`.
    pub command: Vec<String>,
    /// The service's own variables, on top of its image's `Env` (the job's `env` is not passed on: a database
    /// has no use for the job's tokens).
    pub env: IndexMap<String, String>,
    /// When the service counts as ready.
    pub ready: Readiness,
    /// How long it may take to get ready before the job fails.
    pub ready_timeout_secs: u64,
}

/// What makes a service ready for the steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// As soon as its process runs.
    Started,
    /// When a TCP connection to this port on `127.0.0.1` succeeds.
    Tcp {
        /// The port.
        port: u16,
    },
    /// When this shell command, run in the service's container, exits 0.
    Command {
        /// The command line, run with `/bin/sh -c`.
        command: String,
    },
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Readiness::Started => f.write_str("started"),
            Readiness::Tcp { port } => write!(f, "tcp port {port} open"),
            Readiness::Command { command } => write!(f, "`{command}` succeeds"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    #[serde(default)]
    image: Option<Spanned<String>>,
    #[serde(default)]
    command: Option<Spanned<RawCommand>>,
    #[serde(default)]
    env: IndexMap<String, Scalar>,
    #[serde(default)]
    ready: Option<Spanned<RawReady>>,
    #[serde(default)]
    ready_timeout: Option<Spanned<Scalar>>,
}

/// `command: [postgres, -c, fsync=off]` is run as is; `command: "nc -ll -p 5432"` through `/bin/sh -c`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Argv(Vec<String>),
    Line(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReady {
    #[serde(default)]
    tcp: Option<u16>,
    #[serde(default)]
    command: Option<String>,
}

/// Expands a job's `services:`; `key` makes the job's key paths, `job_image` is the default image.
pub(super) fn expand(
    raw: Spanned<IndexMap<Spanned<String>, Spanned<RawService>>>,
    job_image: &str,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<ServiceSpec>, PipelineError> {
    if raw.value.len() > MAX_SERVICES {
        return Err(PipelineError::at(
            raw.referenced,
            key("services"),
            format!("a job may have at most {MAX_SERVICES} services"),
        ));
    }
    raw.value
        .into_iter()
        .map(|(name, service)| expand_one(name, service.value, job_image, key))
        .collect()
}

fn expand_one(
    name: Spanned<String>,
    raw: RawService,
    job_image: &str,
    key: &dyn Fn(&str) -> String,
) -> Result<ServiceSpec, PipelineError> {
    let key = |field: &str| key(&format!("services.{}{field}", name.value));
    if !valid_label(&name.value) {
        return Err(PipelineError::at(
            name.referenced,
            key(""),
            "a service name is a hostname: 1 to 63 lowercase letters, digits and '-', starting with a letter",
        ));
    }
    let image = match raw.image {
        Some(image) => check_image(image, key(".image"))?,
        None => job_image.to_owned(),
    };
    let command = match raw.command {
        None => Vec::new(),
        Some(Spanned {
            value: RawCommand::Line(line),
            referenced,
            ..
        }) => {
            if line.trim().is_empty() {
                return Err(PipelineError::at(
                    referenced,
                    key(".command"),
                    "the command is empty",
                ));
            }
            vec!["/bin/sh".into(), "-c".into(), line]
        }
        Some(Spanned {
            value: RawCommand::Argv(argv),
            referenced,
            ..
        }) => {
            if argv.first().is_none_or(|program| program.is_empty()) {
                return Err(PipelineError::at(
                    referenced,
                    key(".command"),
                    "the command needs a program to run",
                ));
            }
            argv
        }
    };
    let env: IndexMap<String, String> = raw
        .env
        .into_iter()
        .map(|(k, v)| (k, v.into_text()))
        .collect();
    if let Some(bad) = env.keys().find(|k| !valid_env_name(k)) {
        return Err(PipelineError {
            line: None,
            column: None,
            key: Some(key(".env")),
            message: format!("{bad:?} is not a valid environment variable name"),
            hint: None,
        });
    }
    let ready = match raw.ready {
        None => Readiness::Started,
        Some(ready) => match (ready.value.tcp, ready.value.command) {
            (Some(0), None) => {
                return Err(PipelineError::at(
                    ready.referenced,
                    key(".ready.tcp"),
                    "port 0 cannot be waited for",
                ));
            }
            (Some(port), None) => Readiness::Tcp { port },
            (None, Some(command)) if !command.trim().is_empty() => Readiness::Command { command },
            _ => {
                return Err(PipelineError::at(
                    ready.referenced,
                    key(".ready"),
                    "write either `tcp: PORT` or `command: CHECK` (a non-empty shell command)",
                ));
            }
        },
    };
    let ready_timeout_secs = match raw.ready_timeout {
        None => DEFAULT_READY_TIMEOUT_SECS,
        Some(t) => match parse_duration_secs(&t.value.into_text()) {
            Ok(0) => {
                return Err(PipelineError::at(
                    t.referenced,
                    key(".ready_timeout"),
                    "a timeout must be positive",
                ));
            }
            Ok(secs) => secs,
            Err(m) => return Err(PipelineError::at(t.referenced, key(".ready_timeout"), m)),
        },
    };
    Ok(ServiceSpec {
        name: name.value,
        image,
        command,
        env,
        ready,
        ready_timeout_secs,
    })
}

/// An RFC 1123 label in lowercase, starting with a letter (so it never reads as an address).
fn valid_label(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}
