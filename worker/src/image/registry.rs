//! Pulling from OCI registries with oci-client: plain HTTP for loopback registries (and those the operator
//! marks `plain_http`), TLS for every other; credentials per registry from the worker's config.

use super::ImageError;
use gantry_model::RegistryRef;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One registry's settings (`[[worker.registries]]` in the config file).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The registry as image references spell it: `host[:port]`, e.g. `ghcr.io` or `10.0.0.5:5000`.
    pub host: String,
    /// User name for HTTP basic (or token-service) authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Its password.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (first line), instead of `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A bearer token, instead of a user name and password.
    #[serde(default)]
    pub token: Option<String>,
    /// Talk plain HTTP to this non-loopback registry (loopback registries always get plain HTTP).
    #[serde(default)]
    pub plain_http: bool,
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |set: bool| if set { "<redacted>" } else { "<none>" };
        f.debug_struct("RegistryConfig")
            .field("host", &self.host)
            .field("username", &self.username)
            .field(
                "password",
                &secret(self.password.is_some() || self.password_file.is_some()),
            )
            .field("token", &secret(self.token.is_some()))
            .field("plain_http", &self.plain_http)
            .finish()
    }
}

impl RegistryConfig {
    fn auth(&self) -> Result<RegistryAuth, ImageError> {
        if let Some(token) = &self.token {
            return Ok(RegistryAuth::Bearer(token.clone()));
        }
        let Some(username) = &self.username else {
            return Ok(RegistryAuth::Anonymous);
        };
        let password = match (&self.password, &self.password_file) {
            (Some(password), _) => password.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|source| ImageError::Io {
                    what: "read the password file of registry",
                    path: file.clone(),
                    source,
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            (None, None) => String::new(),
        };
        Ok(RegistryAuth::Basic(username.clone(), password))
    }
}

/// True for `localhost` and loopback addresses, which never leave the host and so get plain HTTP.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One oci-client per registry, kept for the worker's life so that tokens and connections are reused.
#[derive(Default)]
pub(crate) struct Registries {
    configs: Vec<RegistryConfig>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl fmt::Debug for Registries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registries")
            .field("configs", &self.configs)
            .finish_non_exhaustive()
    }
}

/// The registry's answer, or the transport error, in words.
fn pull_error(image: &RegistryRef, error: oci_client::errors::OciDistributionError) -> ImageError {
    let offline = matches!(
        &error,
        oci_client::errors::OciDistributionError::RequestError(_)
    );
    ImageError::Pull {
        image: image.to_string(),
        message: error.to_string(),
        offline,
    }
}

impl Registries {
    pub(crate) fn new(configs: Vec<RegistryConfig>) -> Self {
        Registries {
            configs,
            clients: Mutex::default(),
        }
    }

    fn config(&self, registry: &str) -> Option<&RegistryConfig> {
        self.configs
            .iter()
            .find(|c| c.host.eq_ignore_ascii_case(registry))
    }

    fn client(&self, image: &RegistryRef) -> Arc<Client> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(image.registry.clone())
            .or_insert_with(|| {
                let plain = is_loopback(image.host())
                    || self.config(&image.registry).is_some_and(|c| c.plain_http);
                Arc::new(Client::new(ClientConfig {
                    protocol: if plain {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    connect_timeout: Some(Duration::from_secs(10)),
                    read_timeout: Some(Duration::from_secs(60)),
                    ..ClientConfig::default()
                }))
            })
            .clone()
    }

    fn reference(image: &RegistryRef) -> Reference {
        let (registry, repository) = (image.registry.clone(), image.repository.clone());
        match (&image.tag, &image.digest) {
            (Some(tag), Some(digest)) => {
                Reference::with_tag_and_digest(registry, repository, tag.clone(), digest.clone())
            }
            (None, Some(digest)) => Reference::with_digest(registry, repository, digest.clone()),
            (tag, None) => Reference::with_tag(
                registry,
                repository,
                tag.clone()
                    .unwrap_or_else(|| gantry_model::image::DEFAULT_TAG.into()),
            ),
        }
    }

    /// The registry's client, holding this registry's credentials, and the image's reference: blob pulls take
    /// no credentials of their own.
    async fn authorized(
        &self,
        image: &RegistryRef,
    ) -> Result<(Arc<Client>, Reference), ImageError> {
        let auth = self.auth(image)?;
        let reference = Self::reference(image);
        let client = self.client(image);
        client
            .store_auth_if_needed(reference.resolve_registry(), &auth)
            .await;
        Ok((client, reference))
    }

    /// The image manifest (an index is resolved to this platform's entry) and its digest.
    pub(crate) async fn manifest(
        &self,
        image: &RegistryRef,
    ) -> Result<(OciImageManifest, String), ImageError> {
        let auth = self.auth(image)?;
        self.client(image)
            .pull_image_manifest(&Self::reference(image), &auth)
            .await
            .map_err(|e| pull_error(image, e))
    }

    /// A small blob, whole; oci-client checks its digest.
    pub(crate) async fn blob(
        &self,
        image: &RegistryRef,
        descriptor: &OciDescriptor,
    ) -> Result<Vec<u8>, ImageError> {
        let (client, reference) = self.authorized(image).await?;
        let mut data = Vec::new();
        client
            .pull_blob(&reference, descriptor, &mut data)
            .await
            .map_err(|e| pull_error(image, e))?;
        Ok(data)
    }

    /// A layer blob, streamed into `path`; oci-client checks its digest on the way.
    pub(crate) async fn download(
        &self,
        image: &RegistryRef,
        descriptor: &OciDescriptor,
        path: &Path,
    ) -> Result<(), ImageError> {
        let (client, reference) = self.authorized(image).await?;
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|source| ImageError::Io {
                what: "create",
                path: path.to_owned(),
                source,
            })?;
        let started = std::time::Instant::now();
        client
            .pull_blob(&reference, descriptor, file)
            .await
            .map_err(|e| pull_error(image, e))?;
        tracing::info!(
            image = %image,
            digest = %descriptor.digest,
            bytes = descriptor.size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "downloaded a layer"
        );
        Ok(())
    }

    fn auth(&self, image: &RegistryRef) -> Result<RegistryAuth, ImageError> {
        self.config(&image.registry)
            .map_or(Ok(RegistryAuth::Anonymous), RegistryConfig::auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["docker.io", "10.0.0.1", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = RegistryConfig {
            host: "r.example".into(),
            username: Some("ci".into()),
            password: Some("hunter2".into()),
            ..RegistryConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("ci"),
            "{shown}"
        );
        assert_eq!(
            config.auth().unwrap(),
            RegistryAuth::Basic("ci".into(), "hunter2".into())
        );
    }
}
