//! A job's services, made ready to start: their images resolved (pulled once, like the job's) and their
//! command and environment settled.

use super::config::{DEFAULT_PATH, set_env};
use crate::image::{ImageStore, ResolvedImage};
use crate::runtime::{ImageRoot, ServiceConfig};
use gantry_model::pipeline::ServiceSpec;
use std::time::Duration;

/// Resolves every service's image and builds its config; the error says which service and why.
pub async fn resolve(
    images: &ImageStore,
    specs: &[ServiceSpec],
) -> Result<Vec<ServiceConfig>, String> {
    let mut services = Vec::with_capacity(specs.len());
    for spec in specs {
        let image = images.resolve(&spec.image).await.map_err(|e| {
            format!(
                "service {}: image {:?} could not be prepared: {e}",
                spec.name, spec.image
            )
        })?;
        services.push(config(spec, image)?);
    }
    Ok(services)
}

/// The service's argv is its `command`, else its image's `Entrypoint` and `Cmd`; its environment a default
/// `PATH`, then the image's `Env`, then its own `env`.
fn config(spec: &ServiceSpec, image: ResolvedImage) -> Result<ServiceConfig, String> {
    let argv = if spec.command.is_empty() {
        image.config.command.clone()
    } else {
        spec.command.clone()
    };
    if argv.is_empty() {
        return Err(format!(
            "service {}: it has no `command`, and its image {:?} names none (no Entrypoint or Cmd)",
            spec.name, spec.image
        ));
    }
    let mut env = vec![("PATH".to_owned(), DEFAULT_PATH.to_owned())];
    let own = spec.env.iter().map(|(k, v)| (k.clone(), v.clone()));
    set_env(&mut env, image.config.env.iter().cloned().chain(own));
    Ok(ServiceConfig {
        name: spec.name.clone(),
        image: ImageRoot {
            layers: image.layers,
            working_dir: image.config.working_dir,
            user: image.config.user,
        },
        argv,
        env,
        ready: spec.ready.clone(),
        ready_timeout: Duration::from_secs(spec.ready_timeout_secs),
    })
}
