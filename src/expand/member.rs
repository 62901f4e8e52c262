//! Member names: path safety (docs/spec.md §9) and the junk filter.

use super::error::MemberError;

/// A member path split into its components, `.` and empty ones dropped.
pub type Components<'a> = Vec<&'a [u8]>;

/// Split a member name; refuse absolute paths and `..` components. An
/// empty result (`./`) names the target directory itself.
pub fn components(name: &[u8]) -> Result<Components<'_>, MemberError> {
    // PATH_MAX: longer names can't be used on the Pi anyway, and the bound
    // keeps per-member work (one step per component) small.
    if name.len() > MAX_NAME_BYTES {
        return Err(MemberError::Unsafe("name longer than 4095 bytes"));
    }
    if name.first() == Some(&b'/') {
        return Err(MemberError::Unsafe("absolute path"));
    }
    if name.contains(&0) {
        return Err(MemberError::Unsafe("NUL byte in the name"));
    }
    let mut out = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(MemberError::Unsafe("`..` path component")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Longest member name accepted (Linux `PATH_MAX` − 1).
pub const MAX_NAME_BYTES: usize = 4095;

/// Junk the old tool dropped (docs/spec.md §9): anything under `__MACOSX/`,
/// `.DS_Store`, AppleDouble `._*` files, `Thumbs.db`, `desktop.ini`.
pub fn is_junk(path: &[&[u8]]) -> bool {
    if path.iter().any(|c| *c == b"__MACOSX") {
        return true;
    }
    match path.last() {
        Some(n) => {
            *n == b".DS_Store" || n.starts_with(b"._") || *n == b"Thumbs.db" || *n == b"desktop.ini"
        }
        None => false,
    }
}

/// Refuse a symlink at `path` whose `target` leaves the target directory:
/// absolute targets, or relative ones whose `..` climb above it. `..` may
/// only lead the target (`../../x`): after a name, the name could itself be
/// a link and `name/..` would then not be where it looks. With that rule a
/// lexical check is exact: the leading `..` climb through the link's real
/// parent directories, and every link met on the way down was checked the
/// same way when it was created.
pub fn check_symlink(path: &[&[u8]], target: &[u8]) -> Result<(), MemberError> {
    if target.is_empty() {
        return Err(MemberError::Unsafe("empty symlink target"));
    }
    // The kernel reads a target up to its first NUL: `..\0x` would be
    // `..` on the Pi while it looks like a name here.
    if target.contains(&0) {
        return Err(MemberError::Unsafe("NUL byte in the symlink target"));
    }
    if target.first() == Some(&b'/') {
        return Err(MemberError::Unsafe("symlink with an absolute target"));
    }
    let mut depth = path.len().saturating_sub(1);
    let mut named = false;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if named => {
                return Err(MemberError::Unsafe("symlink target with `..` after a name"))
            }
            b".." => {
                depth = depth.checked_sub(1).ok_or(MemberError::Unsafe(
                    "symlink target leaves the target directory",
                ))?;
            }
            _ => {
                named = true;
                depth += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_in_a_symlink_target_and_overlong_names_are_refused() {
        assert!(check_symlink(&[b"a".as_slice(), b"l"], b"..\0x").is_err());
        assert!(check_symlink(&[b"l".as_slice()], b"x\0/../../etc").is_err());
        assert!(check_symlink(&[b"a".as_slice(), b"l"], b"../x").is_ok());
        let long = vec![b'a'; MAX_NAME_BYTES + 1];
        assert!(components(&long).is_err());
        assert!(components(&long[..MAX_NAME_BYTES]).is_ok());
    }

    #[test]
    fn names() {
        assert_eq!(
            components(b"./a//b/./c").ok(),
            Some(vec![&b"a"[..], b"b", b"c"])
        );
        assert_eq!(components(b"./").ok(), Some(vec![]));
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"a/../../b").is_err());
        assert!(components(b"..").is_err());
    }

    #[test]
    fn junk() {
        for j in [
            "__MACOSX/a/b",
            ".DS_Store",
            "d/._x",
            "Thumbs.db",
            "x/desktop.ini",
        ] {
            let c = components(j.as_bytes()).unwrap_or_default();
            assert!(is_junk(&c), "{j}");
        }
        assert!(!is_junk(&[b"a".as_slice(), b"b._c"]));
    }

    #[test]
    fn symlinks() {
        let at = |p: &str, t: &str| {
            let c = components(p.as_bytes()).unwrap_or_default();
            check_symlink(&c, t.as_bytes()).is_ok()
        };
        assert!(at("a/l", "../b"));
        assert!(at("a/b/l", "../../c/d"));
        assert!(!at("a/l", "../../etc"));
        assert!(!at("l", ".."));
        assert!(!at("l", "/etc/passwd"));
        assert!(!at("l", "a/../b"));
        assert!(!at("s/l", "x/../../.."));
    }
}
