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
/// the image, then `image` + each of `suffixes` (the side files,
/// [`side_suffixes`]).
pub fn published_names(image: &str, suffixes: &[&str]) -> Vec<String> {
    let mut names = vec![image.to_string()];
    for s in suffixes {
        let side = side_path(Path::new(image), s);
        names.push(side.to_string_lossy().into_owned());
    }
    names
}

/// The suffixes of the side files a build writes, in the order they are
/// published (`.json` last): `.bmap` (`--bmap`), `.torrent`
/// (`--torrent`), `.SHA256SUMS` and `.SHA256SUMS.minisig` (`--sign`),
/// `.json` (when step 7 hashes the image). A device gets none.
pub fn side_suffixes(opts: &BuildOptions, target: super::Target) -> Vec<&'static str> {
    let o = &opts.output_options;
    let mut suffixes = Vec::new();
    if target == super::Target::Device {
        return suffixes;
    }
    if o.bmap {
        suffixes.push(".bmap");
    }
    if o.torrent.is_some() {
        suffixes.push(".torrent");
    }
    if opts.trust.sbom {
        suffixes.push(super::attest::SBOM);
    }
    if opts.trust.provenance {
        suffixes.push(super::attest::PROVENANCE);
    }
    if opts.trust.sign.is_some() {
        suffixes.extend([super::sign::SUMS, super::sign::MINISIG]);
    }
    if o.writes_json(matches!(target, super::Target::Compressed(_))) {
        suffixes.push(".json");
    }
    suffixes
}

/// What `--check` prints: the plan, the side files a build would write,
/// and with `--publish` where each file would go.
#[derive(Debug)]
pub struct Checked {
    /// The plan.
    pub plan: Plan,
    /// The side files a build would write beside OUTPUT.
    pub sides: Vec<String>,
    /// `(file, object URL)`, in upload order.
    pub publish: Vec<(String, String)>,
    /// The download cache (a directory) and OUTPUT's directory are one
    /// filesystem with reflinks: content will be cloned between them.
    pub clones: Option<std::path::PathBuf>,
}

impl Checked {
    /// The plan, the side files of OUTPUT (`target`), and the object URL
    /// of each file `publisher` would put.
    pub fn new(
        plan: Plan,
        opts: &BuildOptions,
        target: super::Target,
        publisher: Option<&Publisher>,
    ) -> Self {
        let suffixes = side_suffixes(opts, target);
        let sides = suffixes
            .iter()
            .map(|s| side_path(&opts.output, s).display().to_string())
            .collect();
        let publish = publisher
            .map(|p| {
                published_names(p.image_name(), &suffixes)
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
            sides,
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
        if !self.sides.is_empty() {
            writeln!(f, "side files:")?;
            for s in &self.sides {
                writeln!(f, "  {s}")?;
            }
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
        let mut opts = BuildOptions {
            config_src: "c.yaml".into(),
            output: "o.img.zst".into(),
            build_dir: None,
            check: true,
            keep: false,
            overwrite: false,
            max_size: None,
            base_url: String::new(),
            concurrency: 1,
            fetch: crate::fetch::FetchOptions::default(),
            cache_dir: None,
            allow_local_files: false,
            output_options: super::super::OutputOptions {
                hash: true,
                ..Default::default()
            },
            trust: super::super::TrustOptions::default(),
        };
        let zst = super::super::Target::Compressed(crate::output::Compression::Zstd { level: 3 });
        let names = |o: &BuildOptions| published_names("o.img.zst", &side_suffixes(o, zst));
        assert_eq!(names(&opts), ["o.img.zst", "o.img.zst.json"]);
        opts.output_options.bmap = true;
        opts.output_options.torrent = Some(crate::output::TorrentOptions::default());
        opts.trust.sign = Some("k.key".into());
        assert_eq!(
            names(&opts),
            [
                "o.img.zst",
                "o.img.zst.bmap",
                "o.img.zst.torrent",
                "o.img.zst.SHA256SUMS",
                "o.img.zst.SHA256SUMS.minisig",
                "o.img.zst.json"
            ]
        );
        assert!(side_suffixes(&opts, super::super::Target::Device).is_empty());
    }
}
