//! A job's container, made the same way by the worker and by `gantry run`: the image, environment, hostname,
//! steps and limits follow from the job's spec; where it runs (its id, workspace, masks) is the caller's say.

use crate::image::{ImageStore, ResolvedImage};
use crate::runtime::{ContainerConfig, ImageRoot, ServiceConfig, WorkspaceMount};
use gantry_model::JobSpec;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The search path steps get unless the pipeline (or the image) sets one.
pub(super) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the caller decides about a job's container.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The container's id; it starts with the runtime's worker name.
    pub id: String,
    /// The host directory that becomes `/workspace`.
    pub workspace: PathBuf,
    /// How it becomes `/workspace`.
    pub workspace_mount: WorkspaceMount,
    /// Host paths hidden from the job, besides the runtime's own masks.
    pub masked_paths: Vec<PathBuf>,
}

/// A job's image and its services, ready to run.
#[derive(Clone, Debug, Default)]
pub struct PreparedImages {
    /// The steps' image.
    pub image: ResolvedImage,
    /// The services, with their images resolved.
    pub services: Vec<ServiceConfig>,
}

/// Resolves (pulling what is missing) the job's image and its services'; the error is the job's failure
/// message.
pub async fn prepare_images(images: &ImageStore, spec: &JobSpec) -> Result<PreparedImages, String> {
    let image = prepare_image(images, spec).await?;
    let services = super::services::resolve(images, &spec.services).await?;
    Ok(PreparedImages { image, services })
}

async fn prepare_image(images: &ImageStore, spec: &JobSpec) -> Result<ResolvedImage, String> {
    let started = Instant::now();
    let image = images
        .resolve(&spec.image)
        .await
        .map_err(|e| format!("image {:?} could not be prepared: {e}", spec.image))?;
    if !image.layers.is_empty() {
        tracing::info!(
            image = %spec.image,
            digest = image.digest.as_deref().unwrap_or("-"),
            layers = image.layers.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "image ready"
        );
    }
    Ok(image)
}

/// The container that runs `spec` in its prepared images, with Gantry's variables `builtin_env` (see
/// [`gantry_model::wire::builtin_env`]).
pub fn container_config(
    spec: &JobSpec,
    builtin_env: &[(String, String)],
    images: PreparedImages,
    placement: Placement,
) -> ContainerConfig {
    let PreparedImages { image, services } = images;
    let env = merge_env(&image, builtin_env, spec);
    ContainerConfig {
        id: placement.id,
        hostname: hostname_for(spec.name.as_str()),
        workspace: placement.workspace,
        workspace_mount: placement.workspace_mount,
        steps: spec.steps.clone(),
        env,
        resources: spec.resources.clone(),
        masked_paths: placement.masked_paths,
        timeout: Duration::from_secs(spec.timeout_secs),
        image: ImageRoot {
            layers: image.layers,
            working_dir: image.config.working_dir,
            user: image.config.user,
        },
        services,
        network: spec.network,
    }
}

/// `gantry-` and the job's name as a valid host name label (at most 63 of `[a-z0-9-]`).
fn hostname_for(job: &str) -> String {
    let clean: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("gantry-{}", clean.trim_matches('-'))
        .chars()
        .take(63)
        .collect()
}

/// The steps' environment, later entries winning, each name once in first-seen order: a default `PATH` (and
/// `HOME` on the host image; in an image, `HOME` comes from its `/etc/passwd` unless set), the image's `Env`,
/// Gantry's variables, the job's own. Nothing of the worker's own environment leaks in.
fn merge_env(
    image: &ResolvedImage,
    builtin_env: &[(String, String)],
    spec: &JobSpec,
) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_owned(), DEFAULT_PATH.to_owned())];
    if image.layers.is_empty() {
        env.push(("HOME".to_owned(), "/root".to_owned()));
    }
    let from_image = image.config.env.iter().cloned();
    let builtin = builtin_env.iter().cloned();
    let job = spec.env.iter().map(|(k, v)| (k.clone(), v.clone()));
    set_env(&mut env, from_image.chain(builtin).chain(job));
    env
}

/// Sets each variable in turn, a later value replacing an earlier one in place (names keep their first place).
pub(super) fn set_env(
    env: &mut Vec<(String, String)>,
    vars: impl IntoIterator<Item = (String, String)>,
) {
    for (key, value) in vars {
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => env.push((key, value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_model::Pipeline;

    fn spec() -> JobSpec {
        let file = "env: { A: file, PATH: /opt/bin }\njobs:\n  Build_1:\n    env: { B: job }\n    steps: [make]\n";
        Pipeline::parse(file).unwrap().jobs.remove(0)
    }

    #[test]
    fn the_job_overrides_gantry_which_overrides_the_image() {
        let mut image = ResolvedImage::default();
        image.layers.push("/layer".into());
        image.config.env = vec![("A".into(), "image".into()), ("C".into(), "image".into())];
        let builtin = [
            ("CI".to_owned(), "true".to_owned()),
            ("C".to_owned(), "gantry".to_owned()),
        ];
        let env = merge_env(&image, &builtin, &spec());
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "A", "C", "CI", "B"]);
        let value = |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(value("PATH"), Some("/opt/bin"));
        assert_eq!(value("A"), Some("file"));
        assert_eq!(value("C"), Some("gantry"));
    }

    #[test]
    fn the_host_image_gets_a_home_and_the_placement_is_kept() {
        let placement = Placement {
            id: "w-1".into(),
            workspace: "/ws".into(),
            workspace_mount: WorkspaceMount::ReadOnlyLower,
            masked_paths: vec!["/secret".into()],
        };
        let config = container_config(&spec(), &[], PreparedImages::default(), placement);
        assert_eq!(config.hostname, "gantry-build-1");
        assert!(config.env.contains(&("HOME".into(), "/root".into())));
        assert_eq!(config.workspace_mount, WorkspaceMount::ReadOnlyLower);
        assert_eq!((config.id.as_str(), config.steps.len()), ("w-1", 1));
        assert_eq!(config.timeout, Duration::from_secs(3600));
    }
}
