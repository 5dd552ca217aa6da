//! `when:` (docs/pipeline.md): which pushes and events a pipeline, or one job, runs for. Every key given must match
//! (branch, tag and event), and within a key any entry may; branch and tag entries are globs where `*` stays
//! within one `/`-separated part and `**` crosses them.

use super::PipelineError;
use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// The events a pipeline can be created for (the `event` of the API's pipelines).
pub const EVENTS: [&str; 5] = ["push", "tag", "pull_request", "manual", "api"];

/// A filter on the ref and event a pipeline was created for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct When {
    /// Branch name globs (`main`, `release/*`); empty: any ref.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branch: Vec<String>,
    /// Tag name globs (`v*`); empty: any ref.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<String>,
    /// Events (see [`EVENTS`]); empty: any event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWhen {
    #[serde(default)]
    branch: Vec<Spanned<String>>,
    #[serde(default)]
    tag: Vec<Spanned<String>>,
    #[serde(default)]
    event: Vec<Spanned<String>>,
}

fn glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("{pattern:?} is not a valid glob: {}", e.kind()))
}

/// Validates a `when:` written at `key` (`when` or `jobs.NAME.when`).
pub(super) fn check(raw: RawWhen, key: &str) -> Result<When, PipelineError> {
    let globs = |list: Vec<Spanned<String>>, field: &str| {
        list.into_iter()
            .map(|p| {
                glob(&p.value)
                    .map(|_| p.value)
                    .map_err(|m| PipelineError::at(p.referenced, format!("{key}.{field}"), m))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let branch = globs(raw.branch, "branch")?;
    let tag = globs(raw.tag, "tag")?;
    let event = raw
        .event
        .into_iter()
        .map(|e| {
            if EVENTS.contains(&e.value.as_str()) {
                Ok(e.value)
            } else {
                Err(PipelineError::at(
                    e.referenced,
                    format!("{key}.event"),
                    format!("{:?} is not an event: use {}", e.value, EVENTS.join(", ")),
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(When { branch, tag, event })
}

impl When {
    /// Why a pipeline for `git_ref` and `event` is filtered out, or none when it runs.
    pub fn excludes(&self, git_ref: &str, event: &str) -> Option<String> {
        if !self.event.is_empty() && !self.event.iter().any(|e| e == event) {
            return Some(format!(
                "the event is {event}, and when.event is [{}]",
                self.event.join(", ")
            ));
        }
        let any = |patterns: &[String], name: &str| {
            patterns
                .iter()
                .any(|p| glob(p).is_ok_and(|g| g.is_match(name)))
        };
        if !self.branch.is_empty() {
            match git_ref.strip_prefix("refs/heads/") {
                Some(branch) if any(&self.branch, branch) => {}
                Some(branch) => {
                    return Some(format!(
                        "the branch is {branch}, and when.branch is [{}]",
                        self.branch.join(", ")
                    ));
                }
                None => return Some(format!("{git_ref} is not a branch, and when.branch is set")),
            }
        }
        if !self.tag.is_empty() {
            match git_ref.strip_prefix("refs/tags/") {
                Some(tag) if any(&self.tag, tag) => {}
                Some(tag) => {
                    return Some(format!(
                        "the tag is {tag}, and when.tag is [{}]",
                        self.tag.join(", ")
                    ));
                }
                None => return Some(format!("{git_ref} is not a tag, and when.tag is set")),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn when(branch: &[&str], tag: &[&str], event: &[&str]) -> When {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        When {
            branch: own(branch),
            tag: own(tag),
            event: own(event),
        }
    }

    #[test]
    fn branches_tags_and_events_filter() {
        let w = when(&["main", "release/*"], &[], &["push", "pull_request"]);
        assert_eq!(w.excludes("refs/heads/main", "push"), None);
        assert_eq!(w.excludes("refs/heads/release/1.2", "pull_request"), None);
        let nested = w.excludes("refs/heads/release/1/2", "push").unwrap();
        assert!(nested.contains("release/1/2"), "{nested}");
        assert!(
            w.excludes("refs/heads/main", "api")
                .unwrap()
                .contains("event")
        );
        assert!(
            w.excludes("refs/tags/v1", "push")
                .unwrap()
                .contains("not a branch")
        );
        let tags = when(&[], &["v*"], &[]);
        assert_eq!(tags.excludes("refs/tags/v1.0", "tag"), None);
        assert!(tags.excludes("refs/heads/v1", "push").is_some());
        assert_eq!(When::default().excludes("refs/anything", "manual"), None);
        assert_eq!(
            when(&["**"], &[], &[]).excludes("refs/heads/a/b/c", "push"),
            None
        );
    }
}
