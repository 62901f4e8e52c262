//! `--publish URL` in the run (docs/spec.md §12; the work is
//! [`crate::output::publish`]): the store is asked at planning whether the
//! image's key is free ([`plan`]); `--check` shows where each file would
//! go ([`Checked`]); step 7 feeds the upload from the output pass and
//! completes it once OUTPUT is published (`Opened::finish`,
//! `Opened::publish` in [`super::target`]).

use std::path::Path;

use super::error::BuildError;
use super::output::side_path;
use super::BuildOptions;
use crate::output::Publisher;
use crate::plan::Plan;

/// The publisher of `--publish`, its image's key checked: free, or `-X`;
/// `None` without `--publish`.
pub fn plan(opts: &BuildOptions) -> Result<Option<Publisher>, BuildError> {
    let Some(url) = &opts.output_options.publish else {
        return Ok(None);
    };
    let publisher = Publisher::open(url, &opts.output, opts.fetch.max_attempts)?;
    publisher.check(opts.overwrite)?;
    Ok(Some(publisher))
}

/// The files a build publishes, in the order they go up (`.json` last):
/// the image, `OUTPUT.bmap` with `--bmap`, `OUTPUT.torrent` with
/// `--torrent`, `OUTPUT.json`.
pub fn published_names(image: &str, bmap: bool, torrent: bool) -> Vec<String> {
    let mut suffixes = Vec::new();
    if bmap {
        suffixes.push(".bmap");
    }
    if torrent {
        suffixes.push(".torrent");
    }
    suffixes.push(".json");
    let mut names = vec![image.to_string()];
    for s in suffixes {
        let side = side_path(Path::new(image), s);
        names.push(side.to_string_lossy().into_owned());
    }
    names
}

/// What `--check` prints: the plan, and with `--publish` where each file
/// would go.
#[derive(Debug)]
pub struct Checked {
    /// The plan.
    pub plan: Plan,
    /// `(file, object URL)`, in upload order.
    pub publish: Vec<(String, String)>,
    /// The download cache (a directory) and OUTPUT's directory are one
    /// filesystem with reflinks: content will be cloned between them.
    pub clones: Option<std::path::PathBuf>,
}

impl Checked {
    /// The plan, and the object URL of each file `publisher` would put.
    pub fn new(plan: Plan, opts: &BuildOptions, publisher: Option<&Publisher>) -> Self {
        let publish = publisher
            .map(|p| {
                let o = &opts.output_options;
                published_names(p.image_name(), o.bmap, o.torrent.is_some())
                    .into_iter()
                    .map(|n| {
                        let url = p.object_url(&n);
                        (n, url)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            plan,
            publish,
            clones: None,
        }
    }
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.plan)?;
        if let Some(cache) = &self.clones {
            writeln!(
                f,
                "  cloned: the download cache {} and the image share a filesystem with reflinks: downloads and cache hits share their blocks (cloned), not written twice",
                cache.display()
            )?;
        }
        if !self.publish.is_empty() {
            writeln!(f, "publish (in this order):")?;
            for (name, url) in &self.publish {
                writeln!(f, "  {name}  to {url}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_goes_last_and_bmap_only_when_asked() {
        assert_eq!(
            published_names("o.img.zst", false, false),
            ["o.img.zst", "o.img.zst.json"]
        );
        assert_eq!(
            published_names("o.img.zst", true, true),
            [
                "o.img.zst",
                "o.img.zst.bmap",
                "o.img.zst.torrent",
                "o.img.zst.json"
            ]
        );
    }
}
