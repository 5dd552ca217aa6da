//! The shape of the code, checked (as rust-analyzer's `tidy`): database drivers only in the store, `nix` only in
//! the worker and the binary's files ARCHITECTURE.md names, `unsafe` only in the runtime and always with a
//! `SAFETY:` comment, no source file over 600 lines, every source file on ARCHITECTURE.md's code map, and the
//! two migration folders alike, none edited once applied. Each rule is a function of file names and texts, and
//! the unit tests at the end plant a violation of each.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lines a source file outside `tests/` may have.
const MAX_LINES: usize = 600;
/// Where a source file may use a database driver.
const STORE: &str = "server/src/store/";
/// Where `unsafe` may be allowed.
const RUNTIME: &str = "worker/src/runtime/";
/// The checksums of the migrations as applied (`sha256sum`'s format).
const CHECKSUMS: &str = "migrations/checksums.sha256";

/// A file of the repository: its path from the root, and its text.
struct Source {
    path: String,
    text: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file of the crates (not the tests, benches' sources included), by path from the root.
fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    for dir in [
        "model/src",
        "git/src",
        "server/src",
        "worker/src",
        "src",
        "bench/src",
    ] {
        walk(&root().join(dir), &mut files);
    }
    read(files)
}

/// The files at `paths`, sorted, by path from the root.
fn read(mut paths: Vec<PathBuf>) -> Vec<Source> {
    paths.sort();
    paths
        .into_iter()
        .map(|path| Source {
            text: std::fs::read_to_string(&path).unwrap(),
            path: path
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `code` names the crate `name`: `name::…` or `use name`, not as the tail of another word (`unix::`).
fn names_crate(code: &str, name: &str) -> bool {
    let path = format!("{name}::");
    let starts_word = |at: usize| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    };
    code.match_indices(&path).any(|(at, _)| starts_word(at))
        || code.trim_start().starts_with(&format!("use {name}"))
}

/// Lines that use a database driver outside the store.
fn drivers_outside_the_store(files: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.path.starts_with(STORE)) {
        for (n, line) in file.text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if names_crate(code, "sqlx") || names_crate(code, "rusqlite") {
                found.push(format!("{}:{}: {}", file.path, n + 1, line.trim()));
            }
        }
    }
    found
}

/// Lines that use git2 outside the `git` crate (tests included: they go through it too).
fn git2_outside_the_git_crate(files: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.path.starts_with("git/")) {
        for (n, line) in file.text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if names_crate(code, "git2") {
                found.push(format!("{}:{}: {}", file.path, n + 1, line.trim()));
            }
        }
    }
    found
}

/// Crates other than `owner` that depend on one of `crates` (dev-dependencies, for tests, aside).
fn dependencies_outside(manifests: &[Source], crates: &[&str], owner: &str) -> Vec<String> {
    let mut found = Vec::new();
    for manifest in manifests.iter().filter(|m| m.path != owner) {
        let mut section = "";
        for line in manifest.text.lines() {
            if line.starts_with('[') {
                section = line.trim();
                continue;
            }
            let dependency = section == "[dependencies]"
                || section.starts_with("[target.") && section.ends_with(".dependencies]");
            let name = line.split(['=', '.']).next().unwrap_or_default().trim();
            if dependency && crates.contains(&name) {
                found.push(format!("{}: {}", manifest.path, line.trim()));
            }
        }
    }
    found
}

/// The files of `src/`, of the server and of the benchmarks ARCHITECTURE.md says call `nix`: the `src/…`,
/// `server/src/…` and `bench/src/…` paths of the paragraph that says so.
fn nix_files_named(architecture: &str) -> BTreeSet<String> {
    architecture
        .split("\n\n")
        .filter(|paragraph| paragraph.contains("`nix`"))
        .flat_map(|paragraph| paragraph.split('`').skip(1).step_by(2))
        .filter(|quoted| {
            (quoted.starts_with("src/")
                || quoted.starts_with("bench/src/")
                || quoted.starts_with("server/src/"))
                && quoted.ends_with(".rs")
        })
        .map(str::to_owned)
        .collect()
}

/// Lines that use `nix` outside the worker and the files of `src/` ARCHITECTURE.md names.
fn nix_outside_the_worker(files: &[Source], allowed: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for file in files
        .iter()
        .filter(|f| !f.path.starts_with("worker/") && !allowed.contains(&f.path))
    {
        for (n, line) in file.text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if names_crate(code, "nix") {
                found.push(format!("{}:{}: {}", file.path, n + 1, line.trim()));
            }
        }
    }
    found
}

/// `allow(unsafe_code)` outside the runtime, and `unsafe` blocks with no `SAFETY:` comment in the three lines
/// above them (or on their line).
fn unsafe_without_reason(files: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let lines: Vec<&str> = file.text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains("allow(unsafe_code)") && !file.path.starts_with(RUNTIME) {
                found.push(format!(
                    "{}:{}: unsafe allowed outside {RUNTIME}",
                    file.path,
                    n + 1
                ));
            }
            if code.contains("unsafe {") || code.trim_end().ends_with("unsafe") {
                let said = lines[n.saturating_sub(3)..=n]
                    .iter()
                    .any(|l| l.contains("SAFETY:"));
                if !said {
                    found.push(format!(
                        "{}:{}: `unsafe` with no SAFETY: comment",
                        file.path,
                        n + 1
                    ));
                }
            }
        }
    }
    found
}

/// Source files over [`MAX_LINES`].
fn too_long(files: &[Source]) -> Vec<String> {
    files
        .iter()
        .filter(|f| f.text.lines().count() > MAX_LINES)
        .map(|f| {
            format!(
                "{}: {} lines (at most {MAX_LINES})",
                f.path,
                f.text.lines().count()
            )
        })
        .collect()
}

/// Source files ARCHITECTURE.md does not name: by their file name in backquotes, or `folder/` for a `mod.rs`.
fn not_on_the_map(files: &[Source], architecture: &str) -> Vec<String> {
    files
        .iter()
        .filter(|f| {
            let path = Path::new(&f.path);
            let name = path.file_name().unwrap().to_string_lossy();
            let named = match &*name {
                "mod.rs" => {
                    let folder = path
                        .parent()
                        .unwrap()
                        .file_name()
                        .unwrap()
                        .to_string_lossy();
                    format!("`{folder}/")
                }
                _ => format!("{name}`"),
            };
            !architecture.contains(&named)
        })
        .map(|f| format!("{} is not on ARCHITECTURE.md's code map", f.path))
        .collect()
}

/// Migrations in one folder and not the other.
fn migrations_apart(sqlite: &BTreeSet<String>, postgres: &BTreeSet<String>) -> Vec<String> {
    sqlite
        .symmetric_difference(postgres)
        .map(|name| format!("{name} is in one migration folder only"))
        .collect()
}

/// Migrations whose text changed since their checksum was recorded, and ones with no checksum yet.
fn migrations_edited(files: &[(String, Vec<u8>)], checksums: &str) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let recorded: std::collections::BTreeMap<&str, &str> = checksums
        .lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(sum, path)| (path.trim(), sum.trim()))
        .collect();
    let mut found = Vec::new();
    for (path, bytes) in files {
        let sum = hex::encode(Sha256::digest(bytes));
        match recorded.get(path.as_str()) {
            Some(kept) if *kept == sum => {}
            Some(_) => found.push(format!(
                "{path} was edited after it was applied: a database migrated with it keeps the old text \
                 (add a new migration instead)"
            )),
            None => found.push(format!(
                "{path} has no checksum in {CHECKSUMS}: add `sha256sum {path} >> {CHECKSUMS}` once it is final"
            )),
        }
    }
    found
}

fn migrations(dialect: &str) -> Vec<(String, Vec<u8>)> {
    let dir = root().join("migrations").join(dialect);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| {
            let path = format!("migrations/{dialect}/{name}");
            let bytes = std::fs::read(root().join(&path)).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap()
}

fn manifests() -> Vec<Source> {
    [
        "Cargo.toml",
        "model/Cargo.toml",
        "git/Cargo.toml",
        "server/Cargo.toml",
        "worker/Cargo.toml",
        "bench/Cargo.toml",
    ]
    .into_iter()
    .map(|path| Source {
        path: path.into(),
        text: std::fs::read_to_string(root().join(path)).unwrap(),
    })
    .collect()
}

/// What points outside the repository, which a clone does not have: the design notes and tools that live beside
/// it. Spelt in pieces so that this file does not name them.
const OUTSIDE: [&str; 3] = [
    concat!("../", "shared"),
    concat!("DESIGN", " §"),
    concat!("DESIGN", ".md"),
];

/// Every file git tracks that is text, by path from the root.
fn tracked_text_files() -> Vec<Source> {
    let out = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .expect("git must be installed (apt-get install git)");
    assert!(
        out.status.success(),
        "git ls-files failed: the tests run in a git checkout"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter(|p| !p.is_empty())
        .filter_map(|path| {
            let text = std::fs::read_to_string(root().join(path)).ok()?;
            Some(Source {
                path: path.to_owned(),
                text,
            })
        })
        .collect()
}

/// Lines that refer to a document or tool outside the repository.
fn references_outside(files: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        for (n, line) in file.text.lines().enumerate() {
            if OUTSIDE.iter().any(|o| line.contains(o)) {
                found.push(format!("{}:{}: {}", file.path, n + 1, line.trim()));
            }
        }
    }
    found
}

/// Links of the Markdown files to files of the repository that do not exist (`[text](path)`, relative to the
/// linking file; web links and anchors aside).
fn broken_links(files: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files.iter().filter(|f| f.path.ends_with(".md")) {
        let dir = Path::new(&file.path).parent().unwrap_or(Path::new(""));
        for (n, line) in file.text.lines().enumerate() {
            for (at, _) in line.match_indices("](") {
                let rest = &line[at + 2..];
                let Some(target) = rest.split(')').next() else {
                    continue;
                };
                let path = target.split('#').next().unwrap_or_default();
                if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                    continue;
                }
                if !root().join(dir).join(path).exists() {
                    found.push(format!("{}:{}: {target}", file.path, n + 1));
                }
            }
        }
    }
    found
}

fn assert_none(rule: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{rule}:\n{}", found.join("\n"));
}

#[test]
fn database_drivers_are_used_only_in_the_store() {
    assert_none(
        "sqlx or rusqlite outside server/src/store/",
        drivers_outside_the_store(&sources()),
    );
    let drivers = dependencies_outside(&manifests(), &["sqlx", "rusqlite"], "server/Cargo.toml");
    assert_none("a crate other than the server depends on a driver", drivers);
}

#[test]
fn git2_is_used_only_by_the_git_crate() {
    let mut files = sources();
    let mut tests = Vec::new();
    walk(&root().join("tests"), &mut tests);
    // This file plants violations in its own unit tests.
    tests.retain(|path| !path.ends_with("tidy.rs"));
    files.extend(read(tests));
    assert_none("git2 outside git/", git2_outside_the_git_crate(&files));
    let manifests = dependencies_outside(&manifests(), &["git2"], "git/Cargo.toml");
    assert_none("a crate other than git/ depends on git2", manifests);
}

#[test]
fn nix_is_used_only_by_the_worker_and_the_binary_files_architecture_names() {
    let allowed = nix_files_named(&architecture());
    assert!(
        !allowed.is_empty(),
        "ARCHITECTURE.md names no file of src/ that calls `nix`"
    );
    assert_none(
        "nix outside the worker",
        nix_outside_the_worker(&sources(), &allowed),
    );
}

#[test]
fn unsafe_code_is_in_the_runtime_and_says_why() {
    assert_none("unsafe", unsafe_without_reason(&sources()));
}

#[test]
fn no_source_file_is_longer_than_600_lines() {
    assert_none("too long", too_long(&sources()));
}

#[test]
fn every_source_file_is_on_the_code_map() {
    assert_none(
        "missing from the map",
        not_on_the_map(&sources(), &architecture()),
    );
}

#[test]
fn the_repository_documents_itself_and_points_at_nothing_outside_it() {
    // An applied migration may not change (its checksum is checked): the two that cite the old notes stay.
    let checksums = std::fs::read_to_string(root().join(CHECKSUMS)).unwrap_or_default();
    let mut files = tracked_text_files();
    files.retain(|f| !checksums.contains(&format!(" {}\n", f.path)));
    assert_none(
        "references to what a clone does not have (docs/ says it now)",
        references_outside(&files),
    );
}

#[test]
fn every_link_between_the_documents_leads_somewhere() {
    assert_none("broken links", broken_links(&tracked_text_files()));
}

#[test]
fn both_dialects_have_the_same_migrations_and_none_changed_once_applied() {
    let names = |dialect| -> BTreeSet<String> {
        migrations(dialect)
            .into_iter()
            .map(|(path, _)| path.rsplit('/').next().unwrap().to_owned())
            .collect()
    };
    assert_none(
        "migrations",
        migrations_apart(&names("sqlite"), &names("postgres")),
    );
    let checksums = std::fs::read_to_string(root().join(CHECKSUMS)).unwrap_or_default();
    let all: Vec<_> = migrations("sqlite")
        .into_iter()
        .chain(migrations("postgres"))
        .collect();
    assert_none("migrations", migrations_edited(&all, &checksums));
}

/// Each rule catches a violation planted in a file of its own.
mod planted {
    use super::*;

    fn file(path: &str, text: &str) -> Vec<Source> {
        vec![Source {
            path: path.into(),
            text: text.into(),
        }]
    }

    #[test]
    fn a_driver_outside_the_store() {
        assert_eq!(
            drivers_outside_the_store(&file("server/src/http/api.rs", "let r = sqlx::query(x);"))
                .len(),
            1
        );
        assert!(
            drivers_outside_the_store(&file("server/src/store/jobs.rs", "use sqlx::Row;"))
                .is_empty()
        );
        assert!(
            drivers_outside_the_store(&file("src/cli/mod.rs", "\"info,sqlx=warn\"")).is_empty()
        );
        let manifest = file(
            "worker/Cargo.toml",
            "[dependencies]\nrusqlite.workspace = true\n[dev-dependencies]\nsqlx = \"1\"\n",
        );
        let drivers = dependencies_outside(&manifest, &["sqlx", "rusqlite"], "server/Cargo.toml");
        assert_eq!(drivers, ["worker/Cargo.toml: rusqlite.workspace = true"]);
        let git = file("tests/forges.rs", "let repo = git2::Repository::init(dir);");
        assert_eq!(git2_outside_the_git_crate(&git).len(), 1);
        let inside = file("git/src/fetch.rs", "git2::FetchOptions::new()");
        assert!(git2_outside_the_git_crate(&inside).is_empty());
    }

    #[test]
    fn nix_in_the_server() {
        let allowed =
            nix_files_named("Only the worker calls `nix`, and `src/cli/up.rs`.\n\nOther.");
        assert_eq!(allowed.iter().collect::<Vec<_>>(), ["src/cli/up.rs"]);
        assert_eq!(
            nix_outside_the_worker(&file("server/src/lib.rs", "use nix::unistd;"), &allowed).len(),
            1
        );
        assert!(
            nix_outside_the_worker(&file("src/cli/up.rs", "nix::unistd::getpid()"), &allowed)
                .is_empty()
        );
    }

    #[test]
    fn unsafe_outside_the_runtime_or_without_a_reason() {
        assert_eq!(
            unsafe_without_reason(&file("server/src/lib.rs", "#![allow(unsafe_code)]")).len(),
            1
        );
        let bare = file(
            "worker/src/runtime/init.rs",
            "fn f() {\n    unsafe { libc::fork() };\n}",
        );
        assert_eq!(unsafe_without_reason(&bare).len(), 1);
        let said = file(
            "worker/src/runtime/init.rs",
            "// SAFETY: single-threaded here.\nunsafe { libc::fork() };",
        );
        assert!(unsafe_without_reason(&said).is_empty());
    }

    #[test]
    fn a_reference_outside_the_repository() {
        let cited = file(
            "server/src/queue/mod.rs",
            concat!("//! As DESIGN", " §3 says"),
        );
        assert_eq!(references_outside(&cited).len(), 1);
        let tool = file(
            "bench/README.md",
            concat!("runs `../", "shared/tools/peer`"),
        );
        assert_eq!(references_outside(&tool).len(), 1);
        let ours = file("server/src/queue/mod.rs", "//! As docs/data-model.md says");
        assert!(references_outside(&ours).is_empty());
    }

    #[test]
    fn a_link_to_a_missing_document() {
        let readme = file(
            "README.md",
            "See [the API](docs/nope.md) and [tidy](tests/tidy.rs#L1), [web](https://x.org/a.md).",
        );
        assert_eq!(broken_links(&readme), ["README.md:1: docs/nope.md"]);
    }

    #[test]
    fn a_file_of_601_lines() {
        assert_eq!(
            too_long(&file("model/src/big.rs", &"x\n".repeat(601))).len(),
            1
        );
        assert!(too_long(&file("model/src/big.rs", &"x\n".repeat(600))).is_empty());
    }

    #[test]
    fn a_file_off_the_map() {
        let files = vec![
            Source {
                path: "server/src/new.rs".into(),
                text: String::new(),
            },
            Source {
                path: "server/src/queue/mod.rs".into(),
                text: String::new(),
            },
            Source {
                path: "server/src/queue/wait.rs".into(),
                text: String::new(),
            },
        ];
        let off = not_on_the_map(&files, "- `queue/`: … `wait.rs` waits.");
        assert_eq!(
            off,
            ["server/src/new.rs is not on ARCHITECTURE.md's code map"]
        );
    }

    #[test]
    fn a_migration_in_one_folder_or_edited() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            migrations_apart(&names(&["0001.sql", "0002.sql"]), &names(&["0001.sql"])).len(),
            1
        );
        let files = vec![(
            "migrations/sqlite/0001.sql".to_owned(),
            b"CREATE TABLE t (x INT);".to_vec(),
        )];
        let sum = {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(b"CREATE TABLE t (x INT);"))
        };
        assert!(
            migrations_edited(&files, &format!("{sum}  migrations/sqlite/0001.sql\n")).is_empty()
        );
        let edited = migrations_edited(
            &files,
            &format!("{}  migrations/sqlite/0001.sql\n", "0".repeat(64)),
        );
        assert!(
            edited[0].contains("edited after it was applied"),
            "{edited:?}"
        );
        assert!(migrations_edited(&files, "")[0].contains("no checksum"));
    }
}
