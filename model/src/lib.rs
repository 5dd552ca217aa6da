//! What Gantry talks about, with no I/O: the pipeline file (`.gantry.yml`) parsed, validated and expanded into
//! job specs, the names that can be trusted once built, and the wire types that server and worker exchange.

pub mod artifact;
pub mod image;
pub mod junit;
pub mod names;
pub mod pipeline;
pub mod redact;
pub mod secret;
pub mod status;
pub mod units;
pub mod wire;

pub use image::{ImageRef, RegistryRef};
pub use names::{JobName, NameError, RepoName};
pub use pipeline::{JobSpec, Pipeline, PipelineError, Resources};
pub use status::{FailureKind, JobStatus, PipelineStatus};
