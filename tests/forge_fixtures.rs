//! Every real delivery in `tests/fixtures/webhooks/` (copied from the forges' own repositories, see its
//! `SOURCES.md`) parsed by its forge's parser: one line per file, snapshotted, so a change in what any payload
//! becomes shows up in review. Also the published HMAC test vectors of `SOURCES.md`.

use gantry_server::forge::{self, HookError, HookEvent, gitea, github, gitlab};
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webhooks");

/// The event header a forge sends with the payload, from the fixture's file name.
fn event_of(forge: &str, file: &str) -> &'static str {
    let stem = file.split(['-', '.']).next().unwrap();
    match (forge, stem) {
        ("gitlab", "push") => "Push Hook",
        ("gitlab", "tag_push") => "Tag Push Hook",
        ("gitlab", "merge_request") => "Merge Request Hook",
        (_, "push") => "push",
        (_, "pull_request") => "pull_request",
        (_, "ping") => "ping",
        (_, "create") => "create",
        (_, "delete") => "delete",
        _ => panic!("no event known for {forge}/{file}: name the fixture after its event"),
    }
}

fn describe(result: Result<HookEvent, HookError>) -> String {
    match result {
        Ok(HookEvent::Build(b)) => {
            let pr = b
                .pull_request
                .map(|pr| {
                    format!(
                        " pr #{} {} -> {}{}",
                        pr.number,
                        pr.source_branch,
                        pr.target_branch,
                        if pr.from_fork { " (fork)" } else { "" }
                    )
                })
                .unwrap_or_default();
            let message = b
                .message
                .as_deref()
                .and_then(|m| m.lines().next())
                .unwrap_or("");
            format!(
                "build {} {} @ {}{pr} | by {:?} | {message:?} | repo {:?} {:?}",
                b.event,
                b.git_ref,
                b.commit,
                b.author.unwrap_or_default(),
                b.repo_full_name.unwrap_or_default(),
                b.repo_urls.first().cloned().unwrap_or_default(),
            )
        }
        Ok(HookEvent::Ignored(reason)) => format!("ignored: {reason}"),
        Err(e) => format!("refused: {e}"),
    }
}

#[test]
fn every_fixture_parses_into_the_right_event() {
    let mut lines = Vec::new();
    for forge in ["github", "gitlab", "gitea"] {
        let mut files: Vec<_> = std::fs::read_dir(Path::new(FIXTURES).join(forge))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".json"))
            .collect();
        files.sort();
        for file in files {
            let body = std::fs::read(Path::new(FIXTURES).join(forge).join(&file)).unwrap();
            let event = event_of(forge, &file);
            let parsed = match forge {
                "github" => github::parse(event, &body),
                "gitlab" => gitlab::parse(event, &body),
                _ => gitea::parse(event, &body),
            };
            lines.push(format!(
                "{forge}/{file} [{event}]\n    {}",
                describe(parsed)
            ));
        }
    }
    assert_eq!(lines.len(), 32, "every fixture is listed");
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn the_published_hmac_vectors_verify_and_any_change_does_not() {
    // GitHub's documentation (validating-webhook-deliveries.md).
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let body = b"Hello, World!";
    assert_eq!(
        forge::verify_sha256_signature("It's a Secret to Everybody", body, Some(sig)),
        Ok(())
    );
    assert_eq!(
        forge::verify_sha256_signature("It's a Secret to Everybody", b"Hello, World?", Some(sig)),
        Err(HookError::BadSignature)
    );
    // drone/go-scm's GitHub webhook test: the exact bytes of a fixture under `topsecret`.
    let body = std::fs::read(format!("{FIXTURES}/github/push-branch-update.go-scm.json")).unwrap();
    let sig = "sha256=e3bfe744d4e2e29ed990bde8acfb8255ca51ef65f99657767989fb6349f32957";
    assert_eq!(
        forge::verify_sha256_signature("topsecret", &body, Some(sig)),
        Ok(())
    );
    assert_eq!(
        forge::verify_sha256_signature("topsecreT", &body, Some(sig)),
        Err(HookError::BadSignature)
    );
    // drone/go-scm's Gitea webhook test: bare hex, no prefix.
    let body = std::fs::read(format!(
        "{FIXTURES}/gitea/pull_request-edited.signed-vector.go-scm.json"
    ))
    .unwrap();
    let sig = "a31111f057bafe895837f4a93c0f1f528919c199a20438b1fc8e23485780a33a";
    let secret = "71295b197fa25f4356d2fb9965df3f2379d903d7";
    assert_eq!(gitea::verify_signature(secret, &body, Some(sig)), Ok(()));
    let mut changed = body.clone();
    changed[10] ^= 1;
    assert_eq!(
        gitea::verify_signature(secret, &changed, Some(sig)),
        Err(HookError::BadSignature)
    );
    assert_eq!(
        gitea::verify_signature(secret, &body, Some("")),
        Err(HookError::MissingSignature)
    );
}
