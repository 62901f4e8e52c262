//! What planning accepts, the build can write: every destination is
//! checked here the way the ext4 builder will treat it in step 4, so a
//! config that would fail there is refused at planning (exit 3), naming its
//! key, before anything is downloaded or written.
//!
//! - every name on the way is one ext4 can hold (1 to 255 bytes, no NUL,
//!   not `.` or `..`; empty and `.` components are skipped, as the builder
//!   skips them);
//! - no two files share a path (the builder refuses a second entry);
//! - no file is used as a directory: no destination lies inside another
//!   item's file, nor inside a file the base's data partition carries over;
//! - a file is not where the base's data partition already has an entry,
//!   and an archive does not expand into a carried-over file.
//!
//! Archive members can't be known here (a remote archive is read once, by
//! the build); the expansion checks them as it writes.

use std::collections::{BTreeMap, HashMap};

use super::error::PlanError;
use super::item::{data_path, Item};
use crate::fs::ext4::{is_valid_name, OldNames, OldPath};

/// One destination: the path's components, the item's key, and whether
/// it is a directory (an archive expands into it).
struct Dest<'a> {
    parts: Vec<&'a str>,
    key: &'a str,
    dir: bool,
}

impl Dest<'_> {
    fn path(&self) -> String {
        self.parts.join("/")
    }
}

fn refused(key: &str, path: &str, why: String) -> PlanError {
    PlanError::Destination {
        key: key.to_string(),
        path: data_path(path),
        why,
    }
}

/// The destinations of `items`, each name checked.
fn dests(items: &[Item]) -> Result<Vec<Dest<'_>>, PlanError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let dir = item.archive.is_some();
        // A file's own name is taken as is (the builder creates it by that
        // name); the directories on the way skip empty and `.` parts.
        let (parents, name) = match item.dest.rsplit_once('/') {
            _ if dir => (item.dest.as_str(), None),
            Some((p, n)) => (p, Some(n)),
            None => ("", Some(item.dest.as_str())),
        };
        let mut parts: Vec<&str> = parents
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        parts.extend(name);
        for part in &parts {
            if let Err(why) = is_valid_name(part.as_bytes()) {
                let shown: String = part.chars().take(64).collect();
                return Err(refused(
                    &item.key,
                    &item.dest,
                    format!("the name {shown:?} can't be written: {why}"),
                ));
            }
        }
        out.push(Dest {
            parts,
            key: &item.key,
            dir,
        });
    }
    Ok(out)
}

/// The items' destinations among themselves.
pub fn check_items(items: &[Item]) -> Result<(), PlanError> {
    let dests = dests(items)?;
    // Path → (key, is a directory); a directory may be named twice (two
    // archives expanding into it), a file only once.
    let mut by_path: BTreeMap<String, (&str, bool)> = BTreeMap::new();
    for d in &dests {
        let path = d.path();
        match by_path.get(&path) {
            Some(&(other, other_dir)) if !(d.dir && other_dir) => {
                return Err(refused(
                    d.key,
                    &path,
                    format!("{other} writes the same path"),
                ));
            }
            _ => {
                by_path.insert(path, (d.key, d.dir));
            }
        }
    }
    for d in &dests {
        for n in 1..d.parts.len() {
            let prefix = d.parts[..n].join("/");
            if let Some(&(other, false)) = by_path.get(&prefix) {
                return Err(refused(
                    d.key,
                    &d.path(),
                    format!(
                        "{} is a file ({other}), not a directory",
                        data_path(&prefix)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The items' destinations against what the base's data partition carries
/// over (`old`). Each path is looked up once (a lookup reads directory
/// blocks of the old partition; a config of 10,000 files in one directory
/// asks for that directory 10,000 times): memory grows with the distinct
/// prefixes, like the items themselves.
pub fn check_against_base(items: &[Item], old: &OldNames) -> Result<(), PlanError> {
    let mut seen: HashMap<String, OldPath> = HashMap::new();
    for d in dests(items)? {
        let path = d.path();
        for n in 1..=d.parts.len() {
            let prefix = d.parts[..n].join("/");
            let last = n == d.parts.len();
            let found = match seen.get(&prefix) {
                Some(&k) => k,
                None => {
                    let k = old.kind(&prefix).map_err(|e| {
                        refused(
                            d.key,
                            &path,
                            format!("reading the base's data partition: {e}"),
                        )
                    })?;
                    seen.insert(prefix.clone(), k);
                    k
                }
            };
            let why = match found {
                OldPath::Missing => break,
                OldPath::Dir if !last || d.dir => continue,
                OldPath::Dir => "is a directory in the base's data partition",
                OldPath::Other if last && !d.dir => "already exists in the base's data partition",
                OldPath::Other => "is a file in the base's data partition, not a directory",
            };
            return Err(refused(
                d.key,
                &path,
                format!("{} {why}", data_path(&prefix)),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ItemSource;

    fn file(key: &str, dest: &str) -> Item {
        Item {
            key: key.into(),
            dest: dest.into(),
            size: 1,
            source: ItemSource::Bytes(vec![b'x']),
            archive: None,
            cache: None,
            spool: None,
        }
    }

    fn err(items: &[Item]) -> String {
        match check_items(items) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted"),
        }
    }

    #[test]
    fn distinct_paths_pass() {
        let items = [
            file("files[0].to", "a/b"),
            file("files[1].to", "a/c"),
            file("files[2].to", "./d//e"),
        ];
        assert!(check_items(&items).is_ok());
    }

    #[test]
    fn a_long_name_is_refused_with_its_key() {
        let long = "x".repeat(256);
        let e = err(&[file("files[3].to", &format!("a/{long}"))]);
        assert!(e.starts_with("files[3].to: /data/a/"), "{e}");
        assert!(e.contains("longer than 255 bytes"), "{e}");
        let ok = "y".repeat(255);
        assert!(check_items(&[file("files[0].to", &ok)]).is_ok());
    }

    #[test]
    fn a_file_used_as_a_directory_is_refused_either_way() {
        for items in [
            [file("files[0].to", "a"), file("files[1].to", "a/b")],
            [file("files[1].to", "a/b"), file("files[0].to", "a")],
        ] {
            let e = err(&items);
            assert!(e.starts_with("files[1].to: /data/a/b"), "{e}");
            assert!(e.contains("/data/a is a file (files[0].to)"), "{e}");
        }
    }

    #[test]
    fn the_same_file_twice_is_refused() {
        let e = err(&[file("files[0].to", "a/b"), file("files[2].to", "a//b")]);
        assert!(
            e.contains("files[2].to") && e.contains("files[0].to"),
            "{e}"
        );
    }

    #[test]
    fn an_empty_file_name_is_refused() {
        let e = err(&[file("files[0].to", "a/")]);
        assert!(e.contains("empty name"), "{e}");
    }
}
