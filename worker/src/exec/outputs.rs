//! A job's workspace as a source and a destination of files: what its `artifacts:` and `reports:` patterns
//! match once the container is gone, and a safe place for the artifacts of the jobs it needs before it starts.
//!
//! The workspace holds what the job (and the commit) put there, symlinks included, and the worker runs as root:
//! nothing here follows a symlink, so `bin -> /etc` in a checkout can neither leak nor receive host files.

use gantry_model::junit::{self, MAX_REPORT_BYTES, TestCase};
use globset::{GlobBuilder, GlobMatcher};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A regular file a pattern matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Path relative to the workspace, `/`-separated.
    pub path: String,
    /// Where it is on the host.
    pub host_path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
}

fn matcher(glob: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("pattern {glob:?}: {e}"))
}

/// The regular files the patterns match (a pattern naming a directory takes all files under it), each once,
/// by path; `what` (`artifacts`, `reports`) names the key in errors. A pattern that matches nothing is an error.
pub fn find(workspace: &Path, patterns: &[String], what: &str) -> Result<Vec<Found>, String> {
    let mut found = BTreeMap::new();
    for pattern in patterns {
        let (file, tree) = (matcher(pattern)?, matcher(&format!("{pattern}/**"))?);
        let before = found.len();
        let prefix = gantry_model::artifact::literal_prefix(pattern);
        let start = workspace.join(prefix);
        // walkdir does not follow the start itself, but the directories on the way to it are the kernel's to
        // resolve: each must be a real directory.
        if !real_directories(workspace, prefix) {
            return Err(format!(
                "{what}: {pattern:?} matched no file in the workspace"
            ));
        }
        let walk = walkdir::WalkDir::new(&start)
            .follow_links(false)
            .follow_root_links(false);
        for entry in walk {
            let entry = match entry {
                Ok(entry) => entry,
                // The prefix does not exist (or a directory vanished): it matches nothing.
                Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
                    continue;
                }
                Err(e) => return Err(format!("{what}: cannot read {}: {e}", start.display())),
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let Ok(relative) = entry.path().strip_prefix(workspace) else {
                continue;
            };
            let Some(path) = relative.to_str() else {
                return Err(format!(
                    "{what}: {} is not a UTF-8 path",
                    relative.display()
                ));
            };
            if !(file.is_match(path) || tree.is_match(path)) {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| format!("{what}: cannot read {path}: {e}"))?;
            found.insert(
                path.to_owned(),
                Found {
                    path: path.to_owned(),
                    host_path: entry.path().to_owned(),
                    size: meta.len(),
                    mode: meta.permissions().mode() & 0o777,
                },
            );
        }
        if found.len() == before && !found.keys().any(|p| file.is_match(p) || tree.is_match(p)) {
            return Err(format!(
                "{what}: {pattern:?} matched no file in the workspace"
            ));
        }
    }
    Ok(found.into_values().collect())
}

/// Whether every component of `prefix` but the last is a directory (not a symlink to one) under `workspace`.
fn real_directories(workspace: &Path, prefix: &str) -> bool {
    let mut dir = workspace.to_owned();
    let mut parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    parts.pop();
    parts.into_iter().all(|part| {
        dir.push(part);
        fs::symlink_metadata(&dir).is_ok_and(|meta| meta.is_dir())
    })
}

/// Reads the JUnit reports the patterns match, in path order.
pub fn read_reports(workspace: &Path, patterns: &[String]) -> Result<Vec<TestCase>, String> {
    let mut cases = Vec::new();
    for report in find(workspace, patterns, "reports")? {
        if report.size > MAX_REPORT_BYTES {
            return Err(format!(
                "reports: {} is {} bytes, more than the {MAX_REPORT_BYTES} a report may have",
                report.path, report.size
            ));
        }
        let bytes = fs::read(&report.host_path)
            .map_err(|e| format!("reports: cannot read {}: {e}", report.path))?;
        let text = String::from_utf8_lossy(&bytes);
        cases.extend(junit::parse(&text).map_err(|e| format!("reports: {}: {e}", report.path))?);
    }
    Ok(cases)
}

/// Opens `relative` under `workspace` for writing, creating the directories on the way. Refuses to go through a
/// symlink or a non-directory; a symlink or file already at the path itself is replaced.
pub fn create_beneath(workspace: &Path, relative: &str, mode: u32) -> Result<fs::File, String> {
    gantry_model::artifact::check_path(relative)?;
    let mut dir = workspace.to_owned();
    let mut parts = relative.split('/').peekable();
    while let Some(part) = parts.next() {
        let here = dir.join(part);
        if parts.peek().is_none() {
            match fs::symlink_metadata(&here) {
                Ok(meta) if meta.is_dir() => {
                    return Err(format!("{relative} is a directory in this job's workspace"));
                }
                Ok(_) => {
                    fs::remove_file(&here).map_err(|e| format!("cannot replace {relative}: {e}"))?
                }
                Err(_) => {}
            }
            return fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(mode & 0o777)
                .open(&here)
                .map_err(|e| format!("cannot create {relative}: {e}"));
        }
        match fs::symlink_metadata(&here) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "cannot place {relative}: {} is not a directory in this job's workspace",
                    here.strip_prefix(workspace).unwrap_or(&here).display()
                ));
            }
            Err(_) => fs::create_dir(&here)
                .map_err(|e| format!("cannot create {}: {e}", here.display()))?,
        }
        dir = here;
    }
    unreachable!("check_path refuses an empty path")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("target/release/deps")).unwrap();
        fs::write(root.join("target/release/app"), "bin").unwrap();
        fs::set_permissions(
            root.join("target/release/app"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::write(root.join("target/release/deps/lib.so"), "so").unwrap();
        fs::create_dir_all(root.join("junit")).unwrap();
        fs::write(root.join("junit/a.xml"), "<testsuite/>").unwrap();
        symlink("/etc/passwd", root.join("junit/leak.xml")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        dir
    }

    fn paths(found: &[Found]) -> Vec<&str> {
        found.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn files_globs_and_directories_match_and_symlinks_never_do() {
        let dir = tree();
        let found = find(
            dir.path(),
            &["target/release/app".into(), "junit/*.xml".into()],
            "artifacts",
        )
        .unwrap();
        assert_eq!(paths(&found), ["junit/a.xml", "target/release/app"]);
        assert_eq!(found[1].mode, 0o755);
        let found = find(dir.path(), &["target".into()], "artifacts").unwrap();
        assert_eq!(
            paths(&found),
            ["target/release/app", "target/release/deps/lib.so"]
        );
        // `*` stays within one directory, but a directory it matches brings its whole tree, as `cp -r` would.
        let found = find(dir.path(), &["target/*".into()], "artifacts").unwrap();
        assert_eq!(
            paths(&found),
            ["target/release/app", "target/release/deps/lib.so"]
        );
        let found = find(dir.path(), &["*.so".into()], "artifacts");
        assert!(found.unwrap_err().contains("matched no file"));
        let found = find(dir.path(), &["**/*.so".into()], "artifacts").unwrap();
        assert_eq!(paths(&found), ["target/release/deps/lib.so"]);
        for escape in ["etc/passwd", "etc", "junit/leak.xml"] {
            let err = find(dir.path(), &[escape.into()], "artifacts").unwrap_err();
            assert!(err.contains("matched no file"), "{escape}: {err}");
        }
    }

    #[test]
    fn artifacts_are_placed_beneath_the_workspace_only() {
        let dir = tree();
        let mut file = create_beneath(dir.path(), "new/dir/app", 0o755).unwrap();
        std::io::Write::write_all(&mut file, b"x").unwrap();
        let meta = fs::metadata(dir.path().join("new/dir/app")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        let err = create_beneath(dir.path(), "etc/evil", 0o644).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
        assert!(!Path::new("/etc/evil").exists());
        // A symlink at the path itself is replaced, not written through.
        create_beneath(dir.path(), "junit/leak.xml", 0o644).unwrap();
        assert!(
            fs::symlink_metadata(dir.path().join("junit/leak.xml"))
                .unwrap()
                .is_file()
        );
        assert!(create_beneath(dir.path(), "../x", 0o644).is_err());
    }

    #[test]
    fn reports_are_read_and_bad_ones_named() {
        let dir = tree();
        fs::write(
            dir.path().join("junit/a.xml"),
            r#"<testsuite name="s"><testcase name="t"/><testcase name="u"><failure message="no"/></testcase></testsuite>"#,
        )
        .unwrap();
        let cases = read_reports(dir.path(), &["junit/*.xml".into()]).unwrap();
        assert_eq!(cases.len(), 2);
        fs::write(dir.path().join("junit/b.xml"), "<testsuite><testcase").unwrap();
        let err = read_reports(dir.path(), &["junit/*.xml".into()]).unwrap_err();
        assert!(err.contains("junit/b.xml"), "{err}");
    }
}
