//! URLs for messages and logs, their credentials hidden.

/// `url` for messages and logs, its credentials hidden: `user:pass@` (or
/// a user name alone, where tokens travel too) becomes `***@`, as the URL
/// parser (WHATWG rules, the `url` crate) finds them. A URL with a host and
/// no credentials is shown as written. Text that is not a URL with a host
/// (unparseable, no scheme, `scheme:opaque`) may still hold credentials
/// the parser did not see as such: nothing before its last `@` is shown.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            // Both succeed: a URL with credentials has a host.
            let _ = u.set_password(None);
            let _ = u.set_username("***");
            u.to_string()
        }
        Ok(u) if u.has_host() => url.to_string(),
        _ => match url.rsplit_once('@') {
            Some((_, rest)) => format!("***@{rest}"),
            None => url.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact("https://u:p@host/x?y"), "https://***@host/x?y");
        assert_eq!(redact("https://host/a@b"), "https://host/a@b");
        // A user name alone, a password with an `@` (encoded or not).
        assert_eq!(redact("https://tok@host/x"), "https://***@host/x");
        assert_eq!(redact("https://u:p%40ss@host/"), "https://***@host/");
        assert_eq!(
            redact("http://u:p@ss@host:8080/x"),
            "http://***@host:8080/x"
        );
        // IPv6 hosts, with and without credentials.
        assert_eq!(
            redact("https://u:p@[::1]:8443/a"),
            "https://***@[::1]:8443/a"
        );
        assert_eq!(redact("https://[::1]/a@b"), "https://[::1]/a@b");
        // No `//` after a special scheme: still an authority to the parser.
        assert_eq!(redact("https:u:secret@host/x"), "https://***@host/x");
        // Without credentials: as written, not normalised.
        assert_eq!(redact("https://HOST/a/../b?q=1"), "https://HOST/a/../b?q=1");
    }

    #[test]
    fn odd_or_unparseable_text_leaks_nothing_before_an_at() {
        for (input, secret) in [
            ("u:secret@host/x", "secret"),          // no scheme
            ("mailto:secret@host", "secret"),       // no host
            ("https://u:secret@[::1/x", "secret"),  // unclosed IPv6 bracket
            ("https://u:secret@ho st/x", "secret"), // a space in the host
            ("https://u:secret@/x", "secret"),      // empty host
            ("secret@", "secret"),
        ] {
            let shown = redact(input);
            assert!(!shown.contains(secret), "{input} -> {shown}");
            assert!(shown.starts_with("***@"), "{input} -> {shown}");
        }
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(redact("host/path"), "host/path");
    }
}
