//! What the runtime and a container's init say to each other. The config goes in as one JSON document on
//! init's config pipe; init answers with one JSON object per line on its control pipe, while the steps' output
//! travels on a separate pipe (their stdout and stderr), so a job can never forge a control message by printing.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything init needs. Masks are expanded and canonicalized on the host side, so init stays small.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitConfig {
    pub hostname: String,
    pub workspace: PathBuf,
    /// How `workspace` becomes `/workspace`; absent (an older runtime): bound read-write.
    #[serde(default)]
    pub workspace_mount: super::WorkspaceMount,
    pub steps: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A host directory; init mounts the tmpfs that holds the overlay's upper layer on it, in the container's
    /// own mount namespace.
    pub scratch: PathBuf,
    pub masks: Vec<Mask>,
    /// Host paths shown read-only at the same place in the steps' root on the host image (`host_paths`),
    /// over the masks above them and under those beneath them.
    #[serde(default)]
    pub host_paths: Vec<PathBuf>,
    /// The image's read-only layers, lowest first; empty: the host's `/`.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
    /// The steps' working dir; none: `/workspace`.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// The image's `User`, resolved inside the container; none: root.
    #[serde(default)]
    pub user: Option<String>,
    /// The seccomp filters, compiled by the worker; PID 1 installs them before the first step.
    pub seccomp: super::security::SeccompProgram,
    /// Started by PID 1 before it builds the steps' root, and waited for after.
    #[serde(default)]
    pub services: Vec<super::ServiceConfig>,
    /// The user namespace's map; none: the container runs in the host's user namespace.
    #[serde(default)]
    pub id_map: Option<super::IdMap>,
    /// `network: egress`: the veth to make into the worker's bridge, and the address to take.
    #[serde(default)]
    pub egress: Option<super::egress::EgressLink>,
    /// The `/etc/resolv.conf` of the steps and services (egress jobs); none: the image's own.
    #[serde(default)]
    pub resolv_conf: Option<String>,
}

/// A host path to hide inside the container.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Mask {
    pub path: PathBuf,
    /// Directories get an empty dir bound over them, anything else a bind of `/dev/null`.
    pub dir: bool,
    /// The empty dir is writable, with the directory's mode (a home, or a dir tools write to such as
    /// apt's `partial/`), rather than read-only.
    #[serde(default)]
    pub writable: bool,
}

/// One line on the control pipe.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum InitMessage {
    /// The container is built; steps start next.
    Ready,
    StepStarted {
        index: u32,
    },
    StepExited {
        index: u32,
        exit_code: i32,
    },
    SetupFailed {
        message: String,
    },
    /// A service exited or did not get ready in time; no step ran.
    ServiceFailed {
        message: String,
    },
}

/// Lines up to `PIPE_BUF` are written atomically, so a message never interleaves with another writer's.
const MAX_LINE: usize = 4096;

impl InitMessage {
    /// The message as one newline-terminated JSON line of at most [`MAX_LINE`] bytes.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        if line.len() >= MAX_LINE
            && let InitMessage::SetupFailed { message } | InitMessage::ServiceFailed { message } =
                self
        {
            // Escapes can make the JSON up to six times longer than the text: halve until it fits.
            let mut cut = message.len();
            while line.len() >= MAX_LINE {
                cut /= 2;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                let message = format!("{}…", &message[..cut]);
                let short = match self {
                    InitMessage::ServiceFailed { .. } => InitMessage::ServiceFailed { message },
                    _ => InitMessage::SetupFailed { message },
                };
                line = serde_json::to_vec(&short).unwrap_or_default();
            }
        }
        line.push(b'\n');
        line
    }

    /// Parses one line (without its newline); None for anything that is not a message.
    pub fn parse(line: &[u8]) -> Option<Self> {
        serde_json::from_slice(line).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_a_round_trip_as_single_lines() {
        for msg in [
            InitMessage::Ready,
            InitMessage::StepStarted { index: 2 },
            InitMessage::StepExited {
                index: 2,
                exit_code: -1,
            },
            InitMessage::SetupFailed {
                message: "mount overlay\non /x: EINVAL".into(),
            },
        ] {
            let line = msg.to_line();
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(InitMessage::parse(&line[..line.len() - 1]), Some(msg));
        }
    }

    #[test]
    fn a_huge_setup_error_is_cut_to_fit_one_atomic_write() {
        for text in ["é", "\u{1}"] {
            let msg = InitMessage::SetupFailed {
                message: text.repeat(10_000),
            };
            let line = msg.to_line();
            assert!(line.len() <= MAX_LINE);
            assert!(InitMessage::parse(&line[..line.len() - 1]).is_some());
        }
    }
}
