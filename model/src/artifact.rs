//! Artifacts (docs/api.md, docs/pipeline.md): the files a job hands to the jobs that need it. The rules for their paths and for
//! the `artifacts:` and `reports:` patterns live here, so that the parser, the server and the worker agree.

use crate::wire::ArtifactRef;
use std::collections::HashMap;

/// The longest artifact path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Checks a path an artifact is stored and restored at: relative, `/`-separated, no empty, `.` or `..`
/// component, no NUL. Such a path can be joined under a workspace and never leave it.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("an artifact path may not be empty".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "an artifact path is at most {MAX_PATH_BYTES} bytes"
        ));
    }
    if path.contains('\0') {
        return Err(format!("{path:?} contains a NUL byte"));
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path:?} is absolute; artifact paths are relative to the workspace"
        ));
    }
    if let Some(bad) = path
        .split('/')
        .find(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(format!(
            "{path:?} has a {bad:?} component; artifact paths are plain relative paths"
        ));
    }
    Ok(())
}

/// Validates an `artifacts:` or `reports:` pattern and returns it normalized (no leading `./`, no trailing `/`).
/// Patterns are globs (`*`, `?`, `[…]`, `**`); a pattern naming a directory takes everything under it.
pub fn check_pattern(pattern: &str) -> Result<String, String> {
    let trimmed = pattern.trim();
    let mut normal = trimmed;
    while let Some(rest) = normal.strip_prefix("./") {
        normal = rest;
    }
    let normal = normal.trim_end_matches('/');
    check_path(normal).map_err(|e| format!("pattern {trimmed:?}: {e}"))?;
    globset::Glob::new(normal).map_err(|e| format!("pattern {trimmed:?}: {}", e.kind()))?;
    Ok(normal.to_owned())
}

/// The part of a pattern before its first glob character, as whole components: where a search for its matches
/// can start (`target/release` for `target/release/*.so`).
pub fn literal_prefix(pattern: &str) -> &str {
    let glob_at = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    if glob_at == pattern.len() {
        return pattern;
    }
    match pattern[..glob_at].rfind('/') {
        Some(slash) => &pattern[..slash],
        None => "",
    }
}

/// What a job receives from the jobs it needs: every artifact once, or a message naming the two jobs that
/// uploaded the same path (docs/pipeline.md: such a job fails rather than pick one).
pub fn merge(artifacts: &[ArtifactRef]) -> Result<(), String> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for artifact in artifacts {
        if let Some(first) = seen.insert(&artifact.path, &artifact.job) {
            return Err(format!(
                "artifact {:?} is uploaded by both {first} and {}; give them different paths",
                artifact.path, artifact.job
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn paths_stay_under_the_workspace() {
        for good in ["a", "target/release/app", "a b/c.d", ".hidden/x"] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            "a\0b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check_path(&"a".repeat(MAX_PATH_BYTES + 1)).is_err());
    }

    #[test]
    fn patterns_are_normalized_and_checked() {
        assert_eq!(check_pattern("./target/app").unwrap(), "target/app");
        assert_eq!(check_pattern("dist/").unwrap(), "dist");
        assert_eq!(check_pattern("junit/**/*.xml").unwrap(), "junit/**/*.xml");
        assert!(check_pattern("/abs").unwrap_err().contains("absolute"));
        assert!(check_pattern("../up").unwrap_err().contains(".."));
        assert!(check_pattern("a[").is_err());
    }

    #[test]
    fn searches_start_at_the_literal_prefix() {
        assert_eq!(literal_prefix("target/release/app"), "target/release/app");
        assert_eq!(literal_prefix("target/release/*.so"), "target/release");
        assert_eq!(literal_prefix("*.xml"), "");
        assert_eq!(literal_prefix("a/b*/c"), "a");
    }

    #[test]
    fn two_jobs_uploading_one_path_are_named() {
        let art = |job: &str, path: &str| ArtifactRef {
            job: job.into(),
            job_id: Uuid::nil(),
            path: path.into(),
            size: 1,
            sha256: String::new(),
            mode: 0o644,
        };
        assert_eq!(merge(&[art("test:1", "a"), art("test:2", "b")]), Ok(()));
        let err = merge(&[art("test:1", "out/x"), art("test:2", "out/x")]).unwrap_err();
        assert!(
            err.contains("test:1") && err.contains("test:2") && err.contains("out/x"),
            "{err}"
        );
    }
}
