//! OCI image layouts on disk (`index.json` + `blobs/sha256/…`, as `umoci` and `skopeo copy … oci:DIR:TAG`
//! write them): finding a tag's manifest and reading verified blobs.

use super::ImageError;
use super::store::{digest_hex, sha256};
use oci_client::manifest::{ImageIndexEntry, OciImageIndex, OciImageManifest};
use std::path::{Path, PathBuf};

/// Where a tag is written in an index entry.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Manifests, configs and indexes larger than this are not read (they are a few KiB in practice).
const MAX_JSON_BYTES: u64 = 4 << 20;

/// The path of blob `digest` in the layout at `dir`.
pub(crate) fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    Ok(dir.join("blobs/sha256").join(digest_hex(digest)?))
}

/// Reads a small blob whole and checks its digest.
pub(crate) fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>, ImageError> {
    let path = blob_path(dir, digest)?;
    let data = read_small(&path)?;
    let actual = sha256(&data);
    if actual != digest {
        return Err(ImageError::Invalid(format!(
            "{} has digest {actual}, not {digest}",
            path.display()
        )));
    }
    Ok(data)
}

fn read_small(path: &Path) -> Result<Vec<u8>, ImageError> {
    use std::io::Read;
    let io = |source| ImageError::Io {
        what: "read",
        path: path.to_owned(),
        source,
    };
    let mut data = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 > MAX_JSON_BYTES {
        return Err(ImageError::Invalid(format!(
            "{} is larger than {MAX_JSON_BYTES} bytes",
            path.display()
        )));
    }
    Ok(data)
}

fn is_index(media_type: &str) -> bool {
    media_type.ends_with("image.index.v1+json") || media_type.ends_with("manifest.list.v2+json")
}

fn parse<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(data).map_err(|e| ImageError::Invalid(format!("{what}: {e}")))
}

/// The manifest `reference` (a tag or a `sha256:` digest) names in the layout at `dir`, and its digest.
pub(crate) fn manifest(
    dir: &Path,
    reference: &str,
) -> Result<(OciImageManifest, String), ImageError> {
    let index: OciImageIndex = parse(&read_small(&dir.join("index.json"))?, "index.json")?;
    let entry = index
        .manifests
        .iter()
        .find(|m| {
            m.digest == reference
                || m.annotations
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|name| name == reference)
        })
        .ok_or_else(|| {
            let tags: Vec<&str> = index
                .manifests
                .iter()
                .filter_map(|m| m.annotations.as_ref()?.get(REF_NAME).map(String::as_str))
                .collect();
            ImageError::Invalid(format!(
                "the layout {} has no image {reference:?} (it has: {})",
                dir.display(),
                tags.join(", ")
            ))
        })?;
    let mut digest = entry.digest.clone();
    let mut data = read_blob(dir, &digest)?;
    if is_index(&entry.media_type) {
        let nested: OciImageIndex = parse(&data, "the image index")?;
        digest = for_this_platform(&nested.manifests)
            .ok_or_else(|| {
                ImageError::Invalid(format!(
                    "the image index {digest} has no manifest for this platform"
                ))
            })?
            .digest
            .clone();
        data = read_blob(dir, &digest)?;
    }
    Ok((parse(&data, "the image manifest")?, digest))
}

fn for_this_platform(entries: &[ImageIndexEntry]) -> Option<&ImageIndexEntry> {
    let digest = oci_client::client::current_platform_resolver(entries)?;
    entries.iter().find(|e| e.digest == digest)
}
