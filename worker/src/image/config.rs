//! The parts of an OCI image config (and manifest) that running a job needs.

use super::ImageError;
use serde::Deserialize;
use std::path::PathBuf;

/// What an image's config says about how its processes run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Env`, in order; the job's own variables override these.
    pub env: Vec<(String, String)>,
    /// `WorkingDir`: the steps' cwd (made if missing); none means `/workspace`.
    pub working_dir: Option<PathBuf>,
    /// `User`: `uid[:gid]` or `name[:group]`, resolved inside the container; none means root.
    pub user: Option<String>,
    /// `Entrypoint` then `Cmd`: what a service runs when its `command` is not given.
    pub command: Vec<String>,
}

/// A config as read from its JSON, with the layer digests it promises.
#[derive(Debug)]
pub(crate) struct ParsedConfig {
    pub config: ImageConfig,
    /// The uncompressed digest of each layer, lowest first.
    pub diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<RawRunConfig>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The OCI name of this machine's architecture.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Parses an image config, refusing images built for another OS or architecture (their binaries would not
/// run, and the job would fail with an obscure exec error instead).
pub(crate) fn parse_config(bytes: &[u8]) -> Result<ParsedConfig, ImageError> {
    let raw: RawConfig = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::Invalid(format!("the image config is not valid JSON: {e}")))?;
    let os = raw.os.as_deref().unwrap_or("linux");
    let arch = raw.architecture.as_deref().unwrap_or(host_architecture());
    if os != "linux" || arch != host_architecture() {
        return Err(ImageError::Invalid(format!(
            "the image is for {os}/{arch}, this worker runs linux/{}",
            host_architecture()
        )));
    }
    let run = raw.config.unwrap_or(RawRunConfig {
        env: None,
        working_dir: None,
        user: None,
        entrypoint: None,
        cmd: None,
    });
    let env = run
        .env
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let (key, value) = entry.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect();
    // Docker takes a relative WorkingDir as relative to `/`.
    let working_dir = run
        .working_dir
        .filter(|dir| !dir.trim().is_empty())
        .map(|dir| PathBuf::from("/").join(dir));
    let user = run.user.filter(|user| !user.trim().is_empty());
    let command = [run.entrypoint, run.cmd]
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    Ok(ParsedConfig {
        config: ImageConfig {
            env,
            working_dir,
            user,
            command,
        },
        diff_ids: raw.rootfs.map(|r| r.diff_ids).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_workdir_and_user_are_read_and_foreign_images_refused() {
        let arch = host_architecture();
        let json = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["PATH=/bin","A=b=c","junk"],"WorkingDir":"app","User":"1000:50","Entrypoint":["/init"],"Cmd":["serve","-v"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:x"]}}}}"#
        );
        let parsed = parse_config(json.as_bytes()).unwrap();
        assert_eq!(
            parsed.config.env,
            [("PATH".into(), "/bin".into()), ("A".into(), "b=c".into())]
        );
        assert_eq!(parsed.config.working_dir, Some(PathBuf::from("/app")));
        assert_eq!(parsed.config.user.as_deref(), Some("1000:50"));
        assert_eq!(parsed.config.command, ["/init", "serve", "-v"]);
        assert_eq!(parsed.diff_ids, ["sha256:x"]);
        let foreign = r#"{"architecture":"s390x","os":"linux"}"#;
        let err = parse_config(foreign.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("s390x"), "{err}");
        assert_eq!(parse_config(b"{}").unwrap().config, ImageConfig::default());
    }
}
