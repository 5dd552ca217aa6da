//! Real git repositories and real pushes, through the `git` command.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir`, panicking with git's output when it fails; returns stdout and stderr.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Gantry Test",
            "-c",
            "user.email=test@gantry.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git must be installed (apt-get install git)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "git {args:?} failed in {}: {text}",
        dir.display()
    );
    text
}

/// A bare repository (the "server") and a clone of it to commit in.
pub struct Repo {
    /// The bare repository.
    pub bare: PathBuf,
    /// The working clone.
    pub work: PathBuf,
}

impl Repo {
    /// Makes both under `dir`.
    pub fn new(dir: &Path) -> Repo {
        let bare = dir.join("origin.git");
        let work = dir.join("work");
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "--bare", "-q"]);
        git(
            dir,
            &[
                "clone",
                "-q",
                bare.to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        Repo { bare, work }
    }

    /// Writes `.gantry.yml` (and nothing else), commits and pushes to `main`; returns the push's output
    /// (which shows what the post-receive hook printed) and the commit's sha.
    pub fn push_pipeline(&self, pipeline: &str) -> (String, String) {
        std::fs::write(self.work.join(".gantry.yml"), pipeline).unwrap();
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", "a pipeline"],
        );
        let sha = git(&self.work, &["rev-parse", "HEAD"]).trim().to_owned();
        let output = git(&self.work, &["push", "origin", "HEAD:refs/heads/main"]);
        (output, sha)
    }
}
