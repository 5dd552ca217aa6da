//! Keeping credentials out of what Gantry shows: a clone URL may carry `user:token@`.

/// The URL with any `user:password@` replaced by `***@`; other text is returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..scheme_end + 3], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// `text` with every occurrence of `url` replaced by its redacted form (for error messages that quote it).
pub fn redact_in(text: &str, url: &str) -> String {
    let redacted = redact_url(url);
    if redacted == url {
        text.to_owned()
    } else {
        text.replace(url, &redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hidden_and_plain_urls_kept() {
        assert_eq!(
            redact_url("https://user:tok@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("https://github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(redact_url("/srv/git/r.git"), "/srv/git/r.git");
        assert_eq!(redact_url("https://host/path@x"), "https://host/path@x");
        assert_eq!(
            redact_in("fetch https://a:b@h/r failed", "https://a:b@h/r"),
            "fetch https://***@h/r failed"
        );
    }
}
