//! What a stored delivery keeps: the raw body with its secrets taken out. Old Gitea bodies carry the hook's
//! secret in a top-level `secret` field; GitHub's pings carry the hook's config. Deliveries are shown to users,
//! so anything under a secret-like key, and the repository's webhook secret wherever it appears, is replaced.

/// Keys whose values are never kept (compared without case).
const SECRET_KEYS: &[&str] = &[
    "secret",
    "token",
    "password",
    "private_token",
    "access_token",
    "webhook_secret",
];

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// `body` with the values of secret-like keys and every occurrence of `secret` replaced by [`REDACTED`].
pub fn redact_delivery(body: &[u8], secret: &str) -> Vec<u8> {
    let bytes = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) => {
            if redact_value(&mut value) {
                serde_json::to_vec(&value).expect("a JSON value serializes")
            } else {
                body.to_vec()
            }
        }
        Err(_) => body.to_vec(),
    };
    replace_all(&bytes, secret.as_bytes(), REDACTED.as_bytes())
}

/// Redacts in place; true when something changed.
fn redact_value(value: &mut serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(map) => {
            let mut changed = false;
            for (key, v) in map.iter_mut() {
                let secret_key = SECRET_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k));
                let has_value = !(v.is_null() || v.as_str() == Some(""));
                if secret_key && has_value && !v.is_object() && !v.is_array() {
                    *v = serde_json::Value::String(REDACTED.into());
                    changed = true;
                } else {
                    changed |= redact_value(v);
                }
            }
            changed
        }
        serde_json::Value::Array(items) => items.iter_mut().fold(false, |c, v| redact_value(v) | c),
        _ => false,
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_and_the_webhook_secret_are_taken_out() {
        let body = br#"{"secret":"hunter22","ref":"refs/heads/main","hook":{"config":{"Token":"abc","url":"x"}},
            "commits":[{"message":"leaked hunter22 here","password":null}]}"#;
        let kept = String::from_utf8(redact_delivery(body, "hunter22")).unwrap();
        assert!(!kept.contains("hunter22"), "{kept}");
        assert!(!kept.contains("abc"), "{kept}");
        let v: serde_json::Value = serde_json::from_str(&kept).unwrap();
        assert_eq!(v["secret"], REDACTED);
        assert_eq!(v["hook"]["config"]["Token"], REDACTED);
        assert_eq!(v["hook"]["config"]["url"], "x");
        assert_eq!(v["commits"][0]["message"], "leaked [redacted] here");
        assert!(v["commits"][0]["password"].is_null());
    }

    #[test]
    fn a_body_without_secrets_is_kept_byte_for_byte() {
        let body = b"{\n  \"ref\": \"refs/heads/main\",  \"after\": \"00\"\n}";
        assert_eq!(redact_delivery(body, "s3cretsecret"), body);
        assert_eq!(
            redact_delivery(b"not json s3cret", "s3cret"),
            b"not json [redacted]"
        );
    }
}
