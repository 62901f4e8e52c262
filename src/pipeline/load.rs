//! Step 1: the config, from a path or an http(s) URL.

use std::path::{Path, PathBuf};

use super::error::BuildError;
use crate::config::{BaseSource, ImageConfig, Payload, Source};
use crate::fetch::{redact, Net};

/// Largest config accepted from a URL: 1 MiB (real configs are a few KiB;
/// one with inline `content` is still far below).
pub const MAX_REMOTE_CONFIG: usize = 1 << 20;

/// Read and parse the config `src` (a path, `file://` path or URL).
/// Relative local paths in it resolve against its directory (a remote
/// config's, against the working directory).
///
/// A config loaded from a URL may name no local file (`file://`, a bare
/// path, a base given as a path) unless `allow_local_files`: whoever wrote
/// it could otherwise copy any file the build can read into the image.
pub fn load_config(
    src: &str,
    net: &Net,
    allow_local_files: bool,
) -> Result<ImageConfig, BuildError> {
    if src.starts_with("http://") || src.starts_with("https://") {
        let body = net.block_on(net.http.get_small(src, MAX_REMOTE_CONFIG))?;
        let name = redact(src);
        let text = String::from_utf8(body)
            .map_err(|_| BuildError::ConfigNotText { name: name.clone() })?;
        let config = ImageConfig::parse(&text, &name, Path::new("."))?;
        let sources = local_sources(&config);
        if !allow_local_files && !sources.is_empty() {
            return Err(BuildError::LocalSourcesInRemoteConfig {
                config: name,
                sources,
            });
        }
        return Ok(config);
    }
    let path = Path::new(src.strip_prefix("file://").unwrap_or(src));
    let text = std::fs::read_to_string(path).map_err(|source| BuildError::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(ImageConfig::parse(&text, src, &dir)?)
}

/// Every local source of `config`, as (config key, path): the base, the
/// prebuilt image archives (`oci_images[i].url`) and the files
/// (`files[i].url`). `kind: url` checksums are http(s) only.
pub fn local_sources(config: &ImageConfig) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let BaseSource::Source(Source::Local(p)) = &config.base.source {
        out.push(("base.source".to_string(), p.clone()));
    }
    for (i, o) in config.oci_images.iter().enumerate() {
        if let Some(Source::Local(p)) = &o.url {
            out.push((format!("oci_images[{i}].url"), p.clone()));
        }
    }
    for (i, f) in config.files.iter().enumerate() {
        if let Payload::Source(Source::Local(p)) = &f.payload {
            out.push((format!("files[{i}].url"), p.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_local_source_is_named_with_its_key() {
        let text = "base: {source: /srv/base.img, rootfs_size: 1}\n\
            oci_images:\n  - {ident: a/b:c, filesize: 1, fullsize: 1, url: file:///x/img.tar}\n\
            files:\n  - {to: /data/a, url: 'file:///etc/hostname'}\n  - {to: /data/b, url: /etc/hostname}\n\
            \x20 - {to: /data/c, url: 'https://example.org/c'}\n  - {to: /data/d, content: hi}\n";
        let c = ImageConfig::parse(text, "t", Path::new(".")).expect("parses");
        assert_eq!(
            local_sources(&c),
            vec![
                ("base.source".to_string(), PathBuf::from("/srv/base.img")),
                ("oci_images[0].url".to_string(), PathBuf::from("/x/img.tar")),
                ("files[0].url".to_string(), PathBuf::from("/etc/hostname")),
                ("files[1].url".to_string(), PathBuf::from("/etc/hostname")),
            ]
        );
        let remote = "base: {source: 1.4.2, rootfs_size: 1}\nfiles:\n  - {to: /data/c, url: 'https://example.org/c'}\n";
        let c = ImageConfig::parse(remote, "t", Path::new(".")).expect("parses");
        assert!(local_sources(&c).is_empty());
    }
}
