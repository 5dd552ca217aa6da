//! JUnit XML test reports (`reports:`): the common shape that JUnit, pytest, cargo-nextest, Go's gotestsum and
//! most test runners write — `<testsuites>` or a lone `<testsuite>`, suites nested or not, `<testcase>` with a
//! `<failure>`, `<error>` or `<skipped>` child — read into flat test cases.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Reports larger than this are refused unread (per file).
pub const MAX_REPORT_BYTES: u64 = 32 << 20;
/// The most test cases kept per job; the rest are counted in the job's message, not stored.
pub const MAX_CASES_PER_JOB: usize = 20_000;
/// A failure's message is cut at this many bytes (the full text stays in the job's log, if the runner printed it).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// How one test case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    /// It passed.
    Passed,
    /// An assertion failed (`<failure>`).
    Failed,
    /// It could not run to its end (`<error>`).
    Errored,
    /// It did not run (`<skipped>`).
    Skipped,
}

impl TestStatus {
    /// The name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Errored => "errored",
            Self::Skipped => "skipped",
        }
    }
}

impl FromStr for TestStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Passed, Self::Failed, Self::Errored, Self::Skipped]
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown test status {s:?}"))
    }
}

impl fmt::Display for TestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One test case of a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    /// The innermost suite's name, else the case's `classname`.
    pub suite: String,
    /// The case's name.
    pub name: String,
    /// How it ended.
    pub status: TestStatus,
    /// Its `time`, in milliseconds, when the report gives one.
    pub duration_ms: Option<u64>,
    /// The failure's, error's or skip's message (its `message` attribute, else its text), cut to
    /// [`MAX_MESSAGE_BYTES`].
    pub message: Option<String>,
}

impl TestCase {
    /// The case with every secret value in its suite, name and message masked: reports are the job's output
    /// too (a test named after a token, an assertion quoting one).
    pub fn masked(self, masker: &crate::secret::mask::Masker) -> TestCase {
        TestCase {
            suite: masker.mask_str(&self.suite),
            name: masker.mask_str(&self.name),
            message: self.message.map(|m| masker.mask_str(&m)),
            ..self
        }
    }
}

#[derive(Deserialize)]
struct RawSuite {
    #[serde(rename = "@name", default)]
    name: Option<String>,
    #[serde(rename = "testsuite", default)]
    suites: Vec<RawSuite>,
    #[serde(rename = "testcase", default)]
    cases: Vec<RawCase>,
}

#[derive(Deserialize)]
struct RawCase {
    #[serde(rename = "@name", default)]
    name: String,
    #[serde(rename = "@classname", default)]
    classname: Option<String>,
    #[serde(rename = "@time", default)]
    time: Option<String>,
    #[serde(default)]
    failure: Vec<RawOutcome>,
    #[serde(default)]
    error: Vec<RawOutcome>,
    #[serde(default)]
    skipped: Vec<RawOutcome>,
}

#[derive(Deserialize)]
struct RawOutcome {
    #[serde(rename = "@message", default)]
    message: Option<String>,
    #[serde(rename = "$text", default)]
    text: Option<String>,
}

/// Reads a report into its test cases, in file order.
pub fn parse(xml: &str) -> Result<Vec<TestCase>, String> {
    let root: RawSuite = quick_xml::de::from_str(xml).map_err(|e| format!("not JUnit XML: {e}"))?;
    let mut cases = Vec::new();
    flatten(root, "", &mut cases);
    Ok(cases)
}

fn flatten(suite: RawSuite, outer: &str, out: &mut Vec<TestCase>) {
    let name = suite.name.unwrap_or_default();
    let here = if name.is_empty() { outer } else { &name };
    for case in suite.cases {
        out.push(case_from(case, here));
    }
    for inner in suite.suites {
        flatten(inner, here, out);
    }
}

fn case_from(case: RawCase, suite: &str) -> TestCase {
    let (status, outcome) = if let Some(o) = case.error.into_iter().next() {
        (TestStatus::Errored, Some(o))
    } else if let Some(o) = case.failure.into_iter().next() {
        (TestStatus::Failed, Some(o))
    } else if let Some(o) = case.skipped.into_iter().next() {
        (TestStatus::Skipped, Some(o))
    } else {
        (TestStatus::Passed, None)
    };
    let message = outcome
        .and_then(|o| o.message.filter(|m| !m.trim().is_empty()).or(o.text))
        .map(|m| cut(m.trim()))
        .filter(|m| !m.is_empty());
    let suite = match (suite.is_empty(), case.classname) {
        (true, Some(class)) => class,
        _ => suite.to_owned(),
    };
    TestCase {
        suite,
        name: case.name,
        status,
        duration_ms: case
            .time
            .and_then(|t| t.trim().replace(',', "").parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (s * 1000.0).round() as u64),
        message,
    }
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_suites_and_every_outcome() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="all" tests="4">
  <testsuite name="math" tests="3" time="0.3">
    <properties><property name="seed" value="1"/></properties>
    <testcase name="adds" classname="math.Add" time="0.012"/>
    <testcase name="divides" classname="math.Div" time="1,200.5">
      <failure message="expected 2, got 3" type="AssertionError">trace &amp; more</failure>
    </testcase>
    <system-out>noise</system-out>
    <testcase name="slow"><skipped/></testcase>
  </testsuite>
  <testsuite name="io">
    <testcase name="reads"><error><![CDATA[panicked at <main>]]></error></testcase>
  </testsuite>
</testsuites>"#;
        let cases = parse(xml).unwrap();
        let summary: Vec<_> = cases
            .iter()
            .map(|c| (c.suite.as_str(), c.name.as_str(), c.status, c.duration_ms))
            .collect();
        assert_eq!(
            summary,
            [
                ("math", "adds", TestStatus::Passed, Some(12)),
                ("math", "divides", TestStatus::Failed, Some(1_200_500)),
                ("math", "slow", TestStatus::Skipped, None),
                ("io", "reads", TestStatus::Errored, None),
            ]
        );
        assert_eq!(cases[1].message.as_deref(), Some("expected 2, got 3"));
        assert_eq!(cases[3].message.as_deref(), Some("panicked at <main>"));
        assert_eq!(cases[2].message, None);
    }

    #[test]
    fn a_lone_suite_and_a_suite_without_a_name() {
        let cases =
            parse(r#"<testsuite><testcase classname="pkg.T" name="t"><failure>boom</failure></testcase></testsuite>"#)
                .unwrap();
        assert_eq!(cases[0].suite, "pkg.T");
        assert_eq!(cases[0].message.as_deref(), Some("boom"));
    }

    #[test]
    fn garbage_is_an_error_and_long_messages_are_cut() {
        assert!(parse("<testsuite><testcase").is_err());
        assert!(parse("not xml at all").is_err());
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let xml = format!(
            r#"<testsuite name="s"><testcase name="t"><failure message="{long}"/></testcase></testsuite>"#
        );
        let message = parse(&xml).unwrap().remove(0).message.unwrap();
        assert!(message.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8() && message.ends_with('…'));
    }
}
