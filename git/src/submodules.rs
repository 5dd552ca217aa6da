//! The submodules of a commit: `.gitmodules` read at the commit (`path` and `url` of each), the commit each
//! path points at from the tree's gitlinks, and a relative URL resolved against the repository's own.

use super::{Commit, GitError};
use std::path::Path;

/// `.gitmodules` bigger than this is refused unread.
const MAX_GITMODULES: usize = 1 << 20;

/// One submodule of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submodule {
    /// Where it goes in the workspace.
    pub path: String,
    /// Where it is fetched from (a relative URL already resolved).
    pub url: String,
    /// The commit the superproject points it at.
    pub commit: String,
}

impl Commit {
    /// The submodules of this commit whose path holds a gitlink; `base_url` resolves relative URLs.
    pub fn submodules(&self, base_url: &str) -> Result<Vec<Submodule>, GitError> {
        let Some(text) = self.read_file(".gitmodules", MAX_GITMODULES)? else {
            return Ok(Vec::new());
        };
        let tree = self.repo.find_commit(self.oid)?.tree()?;
        let mut found = Vec::new();
        for (path, url) in parse(&String::from_utf8_lossy(&text)) {
            let Ok(entry) = tree.get_path(Path::new(&path)) else {
                continue;
            };
            if entry.kind() != Some(git2::ObjectType::Commit) {
                continue;
            }
            found.push(Submodule {
                url: resolve(base_url, &url),
                commit: entry.id().to_string(),
                path,
            });
        }
        Ok(found)
    }
}

/// The `(path, url)` of each `[submodule "…"]` section that has both.
fn parse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(Option<String>, Option<String>)> = None;
    let mut flush = |current: &mut Option<(Option<String>, Option<String>)>| {
        if let Some((Some(path), Some(url))) = current.take() {
            out.push((path, url));
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            flush(&mut current);
            current = line.starts_with("[submodule").then_some((None, None));
        } else if let (Some((path, url)), Some((key, value))) =
            (current.as_mut(), line.split_once('='))
        {
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim() {
                "path" => *path = Some(value),
                "url" => *url = Some(value),
                _ => {}
            }
        }
    }
    flush(&mut current);
    out
}

/// `url` as git resolves a submodule URL: `./x` and `../x` against the superproject's URL, anything else as is.
fn resolve(base: &str, url: &str) -> String {
    if !url.starts_with("./") && !url.starts_with("../") {
        return url.to_owned();
    }
    let mut base = base.trim_end_matches('/').to_owned();
    let mut rest = url;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            rest = r;
            if let Some(cut) = base.rfind('/') {
                base.truncate(cut);
            }
        } else {
            break;
        }
    }
    format!("{base}/{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitmodules_sections_are_read_and_relative_urls_resolved() {
        let text = "[submodule \"lib\"]\n\tpath = vendor/lib\n\turl = ../lib.git\n\
                    [core]\n\tbare = false\n[submodule \"x\"]\n\turl = https://e.org/x.git\n\tpath = x\n";
        assert_eq!(
            parse(text),
            [
                ("vendor/lib".to_owned(), "../lib.git".to_owned()),
                ("x".to_owned(), "https://e.org/x.git".to_owned())
            ]
        );
        assert_eq!(
            resolve("https://forge/org/app.git", "../lib.git"),
            "https://forge/org/lib.git"
        );
        assert_eq!(resolve("/srv/app.git/", "./sub"), "/srv/app.git/sub");
        assert_eq!(
            resolve("/srv/app.git", "https://e.org/x"),
            "https://e.org/x"
        );
    }
}
