//! Identified versions (docs/spec.md §8): one identity, several versions, of which
//! `keep_identified_versions: N` keeps the N highest.
//!
//! - ZIM files: `<ident>_<YYYY-MM>.zim` → identity `<ident>`, version `YYYY-MM`
//!   (a ZIM fetched from two mirrors is still one identity).
//! - OCI images: identity = registry/repository/name and platform, version = tag.
//!
//! Versions compare naturally: runs of digits as numbers (`1.10` > `1.9`),
//! everything else as text.

use std::cmp::Ordering;

/// An identity and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// What is versioned (a ZIM's name without its date, an image without
    /// its tag).
    pub name: String,
    /// The version (a ZIM's `YYYY-MM`, an image tag).
    pub version: String,
}

impl Identity {
    pub(crate) fn new(name: impl Into<String>, version: impl Into<String>) -> Identity {
        Identity {
            name: name.into(),
            version: version.into(),
        }
    }

    /// The identity of a ZIM file name `<ident>_<YYYY-MM>.zim`.
    pub fn from_zim_name(file_name: &str) -> Option<Identity> {
        let stem = file_name.strip_suffix(".zim")?;
        let (ident, date) = stem.rsplit_once('_')?;
        let b = date.as_bytes();
        let is_date = b.len() == 7
            && b[4] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || c.is_ascii_digit());
        (is_date && !ident.is_empty()).then(|| Identity::new(ident, date))
    }
}

/// Natural order of two version strings.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = split_run(a, true);
                let (nb, rb) = split_run(b, true);
                let (na, nb) = (trim_zeros(na), trim_zeros(nb));
                // Longer digit run (without leading zeros) = larger number;
                // same length compares lexically, which is numerically.
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) if x.is_ascii_digit() != y.is_ascii_digit() => {
                // A number sorts after text at the same place: `1.0` > `1.rc`.
                return if x.is_ascii_digit() {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
            }
            _ => {
                let (ta, ra) = split_run(a, false);
                let (tb, rb) = split_run(b, false);
                let ord = ta.to_ascii_lowercase().cmp(&tb.to_ascii_lowercase());
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
        }
    }
}

fn split_run(s: &[u8], digits: bool) -> (&[u8], &[u8]) {
    let n = s
        .iter()
        .position(|c| c.is_ascii_digit() != digits)
        .unwrap_or(s.len());
    s.split_at(n)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().position(|&c| c != b'0').unwrap_or(s.len());
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["1.10", "1.9", "1.9.1", "2.0", "1.2", "10.0", "1.10-rc1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["1.2", "1.9", "1.9.1", "1.10", "1.10-rc1", "2.0", "10.0"]
        );
        assert_eq!(natural_cmp("2024-01", "2023-12"), Ordering::Greater);
        assert_eq!(natural_cmp("007", "7"), Ordering::Equal);
        assert_eq!(natural_cmp("v3.8.1", "v3.8.10"), Ordering::Less);
    }

    #[test]
    fn zim_names() {
        assert_eq!(
            Identity::from_zim_name("wikipedia_en_all_maxi_2024-01.zim"),
            Some(Identity::new("wikipedia_en_all_maxi", "2024-01"))
        );
        assert_eq!(Identity::from_zim_name("wikipedia_en_all_maxi.zim"), None);
        assert_eq!(Identity::from_zim_name("x_2024-1.zim"), None);
        assert_eq!(Identity::from_zim_name("_2024-01.zim"), None);
        assert_eq!(Identity::from_zim_name("x_2024-01.tar"), None);
    }
}
