//! The grammar of a job's `image:` (docs/pipeline.md, docs/container.md). Pure parsing: whether a directory exists or a registry
//! answers is the worker's business.
//!
//! ```text
//! host                                  the host's `/`, read-only, with a fresh upper layer (the default)
//! dir:/srv/rootfs  |  /srv/rootfs       a root file system directory on the worker's host
//! oci:/srv/layout[:TAG | @sha256:HEX]   an OCI image layout on the worker's host; TAG defaults to `latest`
//! [HOST[:PORT]/]NAME[:TAG][@sha256:HEX] a registry reference, Docker's rules: HOST is the first component
//!                                       when it has a `.` or `:` or is `localhost`, else `docker.io`
//!                                       (and a one-component NAME there means `library/NAME`); TAG defaults
//!                                       to `latest` unless a digest is given
//! ```
//!
//! Local paths must be absolute, without `..`, and without `,`, `:` or `\`: they end up in overlayfs's mount
//! options, which separate layers with `:` and options with `,`.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The registry an unqualified name is pulled from.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used when a reference names none (and no digest).
pub const DEFAULT_TAG: &str = "latest";

/// A parsed `image:` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// The host's root file system.
    Host,
    /// A root file system directory on the worker's host.
    Dir(PathBuf),
    /// An OCI image layout on the worker's host.
    OciLayout {
        /// The layout's directory (holding `index.json` and `blobs/`).
        path: PathBuf,
        /// A tag (`org.opencontainers.image.ref.name` in the index) or a `sha256:` manifest digest.
        reference: String,
    },
    /// An image in an OCI registry.
    Registry(RegistryRef),
}

/// A normalized registry reference: `registry/repository[:tag][@digest]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host[:port]`, e.g. `127.0.0.1:5000` or `docker.io`.
    pub registry: String,
    /// The repository path, e.g. `library/busybox`.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// A pinned manifest digest (`sha256:…`).
    pub digest: Option<String>,
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl RegistryRef {
    /// The registry's host name without the port (to decide loopback or not).
    pub fn host(&self) -> &str {
        self.registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(host, _)| host)
    }
}

impl ImageRef {
    /// Parses an `image:` value; the error says what is wrong, for the pipeline error that names the line.
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        if text == "host" {
            return Ok(ImageRef::Host);
        }
        if let Some(path) = text.strip_prefix("dir:") {
            return Ok(ImageRef::Dir(local_path(path)?));
        }
        if text.starts_with('/') {
            return Ok(ImageRef::Dir(local_path(text)?));
        }
        if let Some(rest) = text.strip_prefix("oci:") {
            let (path, reference) = match rest.split_once('@') {
                Some((path, digest)) => (path, check_digest(digest)?.to_owned()),
                None => match rest.split_once(':') {
                    Some((path, tag)) => (path, check_tag(tag)?.to_owned()),
                    None => (rest, DEFAULT_TAG.to_owned()),
                },
            };
            let path = local_path(path)?;
            return Ok(ImageRef::OciLayout { path, reference });
        }
        parse_registry(text).map(ImageRef::Registry)
    }
}

fn local_path(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("the image path {text:?} must be absolute"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("the image path {text:?} must not contain `..`"));
    }
    if text.contains([',', ':', '\\']) || text.chars().any(char::is_control) {
        return Err(format!(
            "the image path {text:?} must not contain ',', ':', '\\' or control characters"
        ));
    }
    Ok(path.to_owned())
}

fn check_digest(digest: &str) -> Result<&str, String> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(digest)
        }
        _ => Err(format!(
            "{digest:?} is not a digest: write sha256: and 64 lowercase hex digits"
        )),
    }
}

/// Docker's tag grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<&str, String> {
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(tag)
    } else {
        Err(format!(
            "{tag:?} is not a valid tag (letters, digits, `_`, `.`, `-`; at most 128; not starting with `.` or `-`)"
        ))
    }
}

fn parse_registry(text: &str) -> Result<RegistryRef, String> {
    let (name, digest) = match text.split_once('@') {
        Some((name, digest)) => (name, Some(check_digest(digest)?.to_owned())),
        None => (text, None),
    };
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (check_host(first)?, rest)
        }
        _ => (DEFAULT_REGISTRY.to_owned(), name),
    };
    let (path, tag) = match path.rsplit_once(':') {
        Some((path, tag)) => (path, Some(check_tag(tag)?.to_owned())),
        None => (path, None),
    };
    check_repository(path, text)?;
    let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_owned()
    };
    let tag = tag.or_else(|| digest.is_none().then(|| DEFAULT_TAG.to_owned()));
    Ok(RegistryRef {
        registry,
        repository,
        tag,
        digest,
    })
}

fn check_host(host: &str) -> Result<String, String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') => (name, Some(port)),
        _ => (host, None),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        && !name.starts_with(['.', '-']);
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if name_ok && port_ok {
        Ok(host.to_ascii_lowercase())
    } else {
        Err(format!(
            "{host:?} is not a registry host (host name or IPv4 address, optional :PORT)"
        ))
    }
}

/// Docker's repository grammar: `/`-separated components of lowercase letters and digits, joined by `.`, `_`,
/// `__` or runs of `-`.
fn check_repository(path: &str, whole: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let separator_ok = c
            .split(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            .all(|sep| matches!(sep, "" | "." | "_" | "__") || sep.bytes().all(|b| b == b'-'));
        !bytes.is_empty()
            && bytes.first().is_some_and(alnum)
            && bytes.last().is_some_and(alnum)
            && bytes
                .iter()
                .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
            && separator_ok
    };
    if path.len() <= 255 && path.split('/').all(component_ok) {
        return Ok(());
    }
    let hint = if path.bytes().any(|b| b.is_ascii_uppercase()) {
        " (repository names are lowercase)"
    } else {
        ""
    };
    Err(format!(
        "{whole:?} is not an image: use `host`, `dir:/path`, `oci:/layout[:tag]` or a registry reference like \
         `registry.example.com/team/app:1.0`{hint}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str) -> String {
        match ImageRef::parse(text).unwrap() {
            ImageRef::Registry(r) => r.to_string(),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn registry_references_are_normalized_like_docker_does() {
        assert_eq!(registry("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(registry("team/app:1.2"), "docker.io/team/app:1.2");
        assert_eq!(
            registry("127.0.0.1:5000/test/busybox:latest"),
            "127.0.0.1:5000/test/busybox:latest"
        );
        assert_eq!(registry("localhost/x"), "localhost/x:latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            registry(&format!("ghcr.io/o/r@{digest}")),
            format!("ghcr.io/o/r@{digest}")
        );
        let ImageRef::Registry(r) = ImageRef::parse("127.0.0.1:5000/x").unwrap() else {
            panic!()
        };
        assert_eq!(r.host(), "127.0.0.1");
    }

    #[test]
    fn local_images_take_absolute_clean_paths() {
        assert_eq!(ImageRef::parse("host").unwrap(), ImageRef::Host);
        assert_eq!(
            ImageRef::parse("dir:/srv/root").unwrap(),
            ImageRef::Dir("/srv/root".into())
        );
        assert_eq!(
            ImageRef::parse("/srv/root").unwrap(),
            ImageRef::Dir("/srv/root".into())
        );
        assert_eq!(
            ImageRef::parse("oci:/srv/l:v1").unwrap(),
            ImageRef::OciLayout {
                path: "/srv/l".into(),
                reference: "v1".into()
            }
        );
        assert_eq!(
            ImageRef::parse("oci:/srv/l").unwrap(),
            ImageRef::OciLayout {
                path: "/srv/l".into(),
                reference: "latest".into()
            }
        );
        for bad in [
            "dir:relative",
            "dir:/a/../etc",
            "/a,b",
            "oci:/x:bad tag",
            "Alpine",
            "a//b",
            "x@sha256:12",
            "-x",
            "",
            "a:",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
