//! Turns the YAML parser's complaints into errors a newcomer can act on: the line where the mistake is (not
//! where the parser noticed it), a hint for the common mistakes, and the offending line with a caret.

use super::PipelineError;

/// Refines a YAML error of `text`: moves it to the flow collection that was never closed, and adds a hint.
pub(super) fn explain(text: &str, mut err: PipelineError) -> PipelineError {
    let (Some(line), Some(column)) = (err.line, err.column) else {
        return err;
    };
    if let Some(open) = unclosed_flow(text, line, column).filter(|o| o.line < line) {
        let close = if open.bracket == '[' { ']' } else { '}' };
        err.message = format!(
            "this `{}` is never closed (the parser stopped further on, at {line}:{column}: {})",
            open.bracket, err.message
        );
        err.hint = Some(if open.bracket == '[' {
            format!(
                "close it with `{close}` on line {}, or write the list one item per line, each starting with `- `",
                open.line
            )
        } else {
            format!("close it with `{close}` on line {}", open.line)
        });
        (err.line, err.column) = (Some(open.line), Some(open.column));
        return err;
    }
    err.message = plain_words(err.message);
    err.hint = hint(text, line, column, &err.message);
    err
}

/// The YAML and serde libraries' wording, for their messages a user meets, said for a pipeline file.
fn plain_words(message: String) -> String {
    if let Some(key) = message
        .strip_prefix("duplicate mapping key: ")
        .and_then(|rest| rest.split(", set DuplicateKeyPolicy").next())
    {
        return format!(
            "`{key}` appears twice in the same mapping: YAML keeps one of them, so each key is unique"
        );
    }
    if message.contains("untagged enum Scalar") {
        return "expected a value here (text, a number or true/false); write \"\" for an empty text".into();
    }
    message
}

fn hint(text: &str, line: u64, column: u64, message: &str) -> Option<String> {
    let source = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let at = source
        .char_indices()
        .nth(usize::try_from(column).ok()?.saturating_sub(1))
        .map_or(source.len(), |(i, _)| i);
    let mapping_value = message.contains("mapping values are not allowed");
    if mapping_value || message.contains("expected string") || message.contains("invalid type: map")
    {
        // `key: a: b` is reported at the second colon, so its value starts after the first; a list item
        // that reads as a map (`- echo a: b`) is reported where the item starts.
        let start = if mapping_value {
            let item = indent_of(source) + source.trim_start().strip_prefix("- ").map_or(0, |_| 2);
            source[item..].find(": ").map(|i| item + i + 2)
        } else {
            Some(at)
        };
        if let Some(start) = start.filter(|s| source[*s..].contains(": ")) {
            let value = source[start..].trim_end();
            let written = source[..start].trim_start();
            if let Some(command) = value
                .split_once(": ")
                .filter(|(key, _)| ["run", "script", "command", "cmd"].contains(key))
                .map(|(_, command)| command)
            {
                return Some(format!(
                    "a step is a command line, not a map: write `{written}{}`",
                    command.trim()
                ));
            }
            return Some(format!(
                "YAML reads `: ` as a key and its value; quote the whole text: `{written}{}`",
                single_quoted(value)
            ));
        }
    }
    if message.contains("tabs disallowed") || source[..at].contains('\t') {
        return Some("indent with spaces: YAML does not allow tabs in indentation".into());
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (unknown, expected) = rest.split_once("`, expected one of ")?;
        let closest = expected
            .split(", ")
            .map(|k| (strsim::levenshtein(unknown, k.trim_matches('`')), k))
            .min()?;
        return (closest.0 <= 2.max(unknown.len() / 3))
            .then(|| format!("did you mean `{}`?", closest.1.trim_matches('`')));
    }
    if message.contains("expected sequence start") {
        return Some(
            "this key takes a list: `[a, b]`, or one item per line starting with `- `".into(),
        );
    }
    if message.contains("expected ':'") || message.contains("did not find expected") {
        return Some(
            "each line of a mapping is `key: value` and each item of a list starts with `- `: \
             check this line's indentation against the lines above it"
                .into(),
        );
    }
    None
}

fn indent_of(source: &str) -> usize {
    source.len() - source.trim_start_matches(' ').len()
}

/// `text` as a single-quoted YAML scalar, in which only `'` needs escaping (doubled).
fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Where a flow collection was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Opened {
    line: u64,
    column: u64,
    bracket: char,
}

/// The outermost `[` or `{` still open at `line`:`column`, found by a scan that knows just enough YAML: quoted
/// scalars, comments, block scalars (`|`, `>`), and that a bracket opens a collection only where a value starts.
fn unclosed_flow(text: &str, line: u64, column: u64) -> Option<Opened> {
    let mut open: Vec<Opened> = Vec::new();
    let mut quote: Option<char> = None;
    // A block scalar's lines (indented deeper than the line that opened it) are text, whatever they hold.
    let mut block_parent: Option<usize> = None;
    for (number, source) in (1u64..).zip(text.lines()) {
        if number > line {
            break;
        }
        let indent = indent_of(source);
        if let Some(parent) = block_parent {
            if source.trim().is_empty() || indent > parent {
                continue;
            }
            block_parent = None;
        }
        let chars: Vec<char> = source.chars().collect();
        let mut escaped = false;
        for (i, &c) in chars.iter().enumerate() {
            if number == line && i as u64 + 1 >= column {
                break;
            }
            if let Some(q) = quote {
                match c {
                    '\\' if q == '"' && !escaped => escaped = true,
                    _ if c == q && !escaped => quote = None,
                    _ => escaped = false,
                }
                continue;
            }
            let before = i.checked_sub(1).map(|b| chars[b]);
            let in_flow = !open.is_empty();
            let starts_value = match before {
                None => true,
                Some(b) if b.is_whitespace() => {
                    let prev = chars[..i].iter().rev().find(|c| !c.is_whitespace());
                    prev.is_none_or(|p| matches!(p, ':' | '-' | '?' | ',' | '[' | '{'))
                }
                Some(b) => in_flow && matches!(b, ',' | '[' | '{'),
            };
            match c {
                '#' if before.is_none_or(char::is_whitespace) => break,
                '"' | '\'' if starts_value => quote = Some(c),
                '[' | '{' if starts_value => open.push(Opened {
                    line: number,
                    column: i as u64 + 1,
                    bracket: c,
                }),
                ']' | '}' if in_flow => {
                    open.pop();
                }
                '|' | '>' if starts_value && !in_flow => {
                    let rest: String = chars[i + 1..].iter().collect();
                    let rest = rest.split(" #").next().unwrap_or("").trim();
                    if rest.chars().all(|c| matches!(c, '-' | '+' | '0'..='9')) {
                        block_parent = Some(indent);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    open.first().copied()
}

impl PipelineError {
    /// The offending line of `text` with a caret under the column, as compilers print it; `None` without a line.
    pub fn excerpt(&self, text: &str) -> Option<String> {
        let line = self.line?;
        let source = text
            .lines()
            .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let gutter = line.to_string().len();
        let mut out = format!("{:gutter$} |\n{line} | {source}\n", "");
        if let Some(column) = self.column {
            // Tabs keep their width under the caret.
            let pad: String = source
                .chars()
                .take(usize::try_from(column).ok()?.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("{:gutter$} | {pad}^\n", ""));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pipeline;

    fn error(text: &str) -> PipelineError {
        Pipeline::parse(text).expect_err("the file is refused")
    }

    #[test]
    fn an_unclosed_bracket_is_reported_where_it_opens() {
        let e = error("jobs:\n  test:\n    steps: [echo hi\n    image: host\n");
        assert_eq!((e.line, e.column), (Some(3), Some(12)), "{e}");
        assert!(e.message.starts_with("this `[` is never closed"), "{e}");
        assert!(
            e.hint
                .as_deref()
                .unwrap()
                .contains("close it with `]` on line 3")
        );
        let e = error("jobs:\n  test:\n    env: {A: b\n\n    steps: [x]\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.starts_with("this `{` is never closed"), "{e}");
    }

    #[test]
    fn brackets_in_text_are_not_collections() {
        let text = "jobs:\n  test:\n    steps:\n      - |\n        if [ -f x ]; then\n          echo '[' a[1]\n        fi\n      - echo \"[\" # [\n    bad: [\n";
        assert_eq!(
            unclosed_flow(text, 10, 1),
            Some(Opened {
                line: 9,
                column: 10,
                bracket: '['
            })
        );
        assert_eq!(unclosed_flow(text, 9, 1), None);
    }

    #[test]
    fn an_unquoted_colon_in_a_step_gets_a_hint_to_quote_it() {
        let e = error("jobs:\n  test:\n    steps:\n      - echo a: b\n");
        assert_eq!((e.line, e.column), (Some(4), Some(9)));
        assert_eq!(
            e.hint.as_deref(),
            Some("YAML reads `: ` as a key and its value; quote the whole text: `- 'echo a: b'`")
        );
        let e = error("jobs:\n  test:\n    steps:\n      - echo it's: here\n");
        assert!(e.hint.unwrap().ends_with("`- 'echo it''s: here'`"));
        let e = error("jobs:\n  test:\n    image: busy: box\n    steps: [a]\n");
        assert!(e.hint.unwrap().ends_with("`image: 'busy: box'`"));
        let e = error("jobs:\n  test:\n    steps:\n      - run: make test\n");
        assert_eq!(
            e.hint.as_deref(),
            Some("a step is a command line, not a map: write `- make test`")
        );
    }

    #[test]
    fn a_misspelt_key_gets_the_closest_one() {
        let e = error("jobs:\n  test:\n    stpes:\n      - echo\n");
        assert_eq!(e.hint.as_deref(), Some("did you mean `steps`?"));
        let e = error("jobs:\n  test:\n    zzzzzzzzz: 1\n    steps: [a]\n");
        assert_eq!(e.hint, None, "nothing is close to it");
    }

    #[test]
    fn the_libraries_wording_is_said_for_a_pipeline_file() {
        let e = error("jobs:\n  a:\n    steps: [x]\n  a:\n    steps: [y]\n");
        assert_eq!(e.line, Some(4));
        assert!(e.message.starts_with("`a` appears twice"), "{e}");
        let e = error("jobs:\n  a:\n    env: {A: }\n    steps: [x]\n");
        assert!(e.message.starts_with("expected a value here"), "{e}");
    }

    #[test]
    fn tabs_get_a_hint() {
        let e = error("jobs:\n\ttest:\n    steps:\n      - echo\n");
        assert!(e.hint.unwrap().contains("tabs"));
    }

    #[test]
    fn the_excerpt_shows_the_line_and_a_caret() {
        let text = "jobs:\n  test:\n    steps: [echo hi\n    image: host\n";
        assert_eq!(
            error(text).excerpt(text).unwrap(),
            "  |\n3 |     steps: [echo hi\n  |            ^\n"
        );
    }
}
