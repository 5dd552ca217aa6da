//! Masking secret values in a job's output, as it streams: every byte that belongs to an occurrence of a
//! value becomes part of a `***`, one `***` per run of such bytes (so overlapping or adjacent values make one).
//! A value split between two reads is still masked: the masker holds back the end of what it was given while
//! that end could be the start of a value, and gives it out with the next bytes (or at [`Masker::finish`]).
//! A multi-line value is also masked line by line (lines of at least [`super::MIN_VALUE_BYTES`]), since
//! programs often print one line of it, or its lines apart.

use super::MIN_VALUE_BYTES;

/// What a run of secret bytes becomes.
pub const MASK: &[u8] = b"***";
/// Held back beyond this, a run of secret bytes that keeps growing (a value printed again and again with
/// nothing between) is given out as a `***` of its own, so output is not held for ever; the next one follows.
const MAX_HELD: usize = 64 * 1024;

/// Masks a set of values in a stream of bytes.
#[derive(Clone, Debug, Default)]
pub struct Masker {
    needles: Vec<Vec<u8>>,
    longest: usize,
    held: Vec<u8>,
}

impl Masker {
    /// A masker of `values` (and of each line of those with several).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for value in values {
            let lines = value
                .split(|b| *b == b'\n')
                .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
            for needle in std::iter::once(value).chain(lines) {
                if needle.len() >= MIN_VALUE_BYTES && !needles.iter().any(|n| n == needle) {
                    needles.push(needle.to_vec());
                }
            }
        }
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        Self {
            needles,
            longest,
            held: Vec::new(),
        }
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Takes the next bytes of the stream; returns the masked bytes that can be given out now.
    pub fn push(&mut self, input: &[u8]) -> Vec<u8> {
        if self.is_empty() {
            return input.to_vec();
        }
        self.held.extend_from_slice(input);
        let buf = std::mem::take(&mut self.held);
        let safe = self.pending_prefix(&buf).unwrap_or(buf.len());
        let runs = self.runs(&buf);
        // A run reaching the cut could still grow (overlap or adjacency) with bytes to come: keep it whole.
        let mut cut = safe;
        if let Some(&(start, end)) = runs.iter().find(|(a, b)| *a < cut && cut <= *b) {
            cut = if buf.len() > MAX_HELD { end } else { start };
        }
        let out = replace(&buf[..cut], runs.iter().filter(|(_, b)| *b <= cut));
        self.held = buf[cut..].to_vec();
        out
    }

    /// The end of the stream: everything still held, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.held);
        self.mask_all(&rest)
    }

    /// `text` masked as a whole (for a message rather than a stream).
    pub fn mask_all(&self, text: &[u8]) -> Vec<u8> {
        replace(text, self.runs(text).iter())
    }

    /// Overwrites every byte of every occurrence of a value in `text` with `*`, keeping its length (for a
    /// check after the fact, where offsets must not move); says whether it found any.
    pub fn mask_in_place(&self, text: &mut [u8]) -> bool {
        let runs = self.runs(text);
        for &(start, end) in &runs {
            text[start..end].fill(b'*');
        }
        !runs.is_empty()
    }

    /// [`Masker::mask_all`] of a string.
    pub fn mask_str(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.mask_all(text.as_bytes())).into_owned()
    }

    /// Where the earliest tail of `buf` starts that is a proper prefix of a value (it may continue later).
    fn pending_prefix(&self, buf: &[u8]) -> Option<usize> {
        let from = buf.len().saturating_sub(self.longest.saturating_sub(1));
        (from..buf.len()).find(|&s| {
            let tail = &buf[s..];
            self.needles
                .iter()
                .any(|n| n.len() > tail.len() && n.starts_with(tail))
        })
    }

    /// The runs of bytes of `buf` that belong to an occurrence of a value, merged when they overlap or touch,
    /// in order.
    fn runs(&self, buf: &[u8]) -> Vec<(usize, usize)> {
        let mut found: Vec<(usize, usize)> = Vec::new();
        for needle in &self.needles {
            let first = needle[0];
            let mut at = 0;
            while let Some(i) = buf[at..].iter().position(|b| *b == first) {
                let start = at + i;
                if buf[start..].starts_with(needle) {
                    found.push((start, start + needle.len()));
                }
                at = start + 1;
            }
        }
        found.sort_unstable();
        let mut runs: Vec<(usize, usize)> = Vec::with_capacity(found.len());
        for (start, end) in found {
            match runs.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => runs.push((start, end)),
            }
        }
        runs
    }
}

/// `text` with each run (in order, within `text`) replaced by [`MASK`].
fn replace<'a>(text: &[u8], runs: impl Iterator<Item = &'a (usize, usize)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    for &(start, end) in runs {
        out.extend_from_slice(&text[at..start]);
        out.extend_from_slice(MASK);
        at = end;
    }
    out.extend_from_slice(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(values: &[&str]) -> Masker {
        Masker::new(values.iter().map(|v| v.as_bytes()))
    }

    /// The stream cut into `chunks` gives what the whole text gives at once.
    fn streamed(m: &Masker, chunks: &[&[u8]]) -> Vec<u8> {
        let mut m = m.clone();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(m.push(chunk));
        }
        out.extend(m.finish());
        out
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_value_becomes_stars_wherever_it_is() {
        let m = masker(&["hunter22"]);
        assert_eq!(m.mask_str("pw=hunter22 and hunter22\n"), "pw=*** and ***\n");
        assert_eq!(m.mask_str("hunter2 is not it"), "hunter2 is not it");
    }

    #[test]
    fn a_value_split_between_reads_is_masked_at_every_split_point() {
        let m = masker(&["s3cr3t-value", "other-token"]);
        let whole = b"a s3cr3t-value b other-token c s3cr3t-valu other-token s3cr3t-value";
        let expected = text(m.mask_all(whole));
        assert_eq!(expected, "a *** b *** c s3cr3t-valu *** ***");
        for i in 0..=whole.len() {
            for j in i..=whole.len() {
                let chunks = [&whole[..i], &whole[i..j], &whole[j..]];
                assert_eq!(text(streamed(&m, &chunks)), expected, "split at {i}, {j}");
            }
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(text(streamed(&m, &bytes)), expected, "a byte at a time");
    }

    #[test]
    fn overlapping_and_touching_values_make_one_run() {
        let m = masker(&["abcdef", "defghi"]);
        assert_eq!(m.mask_str("x abcdefghi y"), "x *** y");
        assert_eq!(m.mask_str("abcdefabcdef"), "***");
        let m = masker(&["aaaa"]);
        assert_eq!(
            m.mask_str("aaaaaaa b"),
            "*** b",
            "overlapping occurrences of one value"
        );
        let whole = b"aaaaaaa b aaaa";
        for i in 0..=whole.len() {
            assert_eq!(text(streamed(&m, &[&whole[..i], &whole[i..]])), "*** b ***");
        }
    }

    #[test]
    fn each_line_of_a_multi_line_value_is_masked() {
        let key = "-----BEGIN KEY-----\r\nMIIEvQIBADANBg\nkqhkiG9w0BAQEF\nab\n-----END KEY-----\n";
        let m = masker(&[key]);
        assert_eq!(m.mask_str(&format!("key:\n{key}done")), "key:\n***done");
        assert_eq!(m.mask_str("line kqhkiG9w0BAQEF alone"), "line *** alone");
        assert_eq!(
            m.mask_str("ab stays: too short to mask alone"),
            "ab stays: too short to mask alone"
        );
        let printed = b"MIIEvQIBADANBg\nkqhkiG9w0BAQEF\n";
        assert_eq!(
            text(streamed(&m, &[&printed[..20], &printed[20..]])),
            "***\n***\n"
        );
    }

    #[test]
    fn output_is_held_back_only_while_it_may_be_the_start_of_a_value() {
        let mut m = masker(&["password1"]);
        assert_eq!(text(m.push(b"plain text\n")), "plain text\n");
        assert_eq!(text(m.push(b"here: pass")), "here: ");
        assert_eq!(text(m.push(b"port 80\n")), "passport 80\n");
        assert_eq!(text(m.push(b"pass")), "");
        assert_eq!(
            text(m.finish()),
            "pass",
            "the end of the stream gives out what was held"
        );
    }

    #[test]
    fn a_value_repeated_without_end_is_not_held_for_ever() {
        let mut m = masker(&["abcd"]);
        let mut out = Vec::new();
        for _ in 0..(2 * MAX_HELD / 4096) {
            out.extend(m.push(&b"abcd".repeat(1024)));
        }
        assert!(!out.is_empty(), "something was given out");
        out.extend(m.finish());
        assert!(out.iter().all(|b| *b == b'*'), "nothing but stars");
    }

    #[test]
    fn masking_in_place_keeps_the_length() {
        let m = masker(&["hunter22"]);
        let mut text = b"pw hunter22 ok".to_vec();
        assert!(m.mask_in_place(&mut text));
        assert_eq!(text, b"pw ******** ok");
        assert!(!m.mask_in_place(&mut text));
    }

    #[test]
    fn without_values_everything_passes_at_once() {
        let mut m = Masker::new(std::iter::empty());
        assert!(m.is_empty());
        assert_eq!(m.push(b"abc"), b"abc");
        let tiny = masker(&["ab"]);
        assert!(tiny.is_empty(), "values too short to mask are not masked");
    }
}
