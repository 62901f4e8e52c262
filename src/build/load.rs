//! Step 1: the config, from a path or an http(s) URL.

use std::path::{Path, PathBuf};

use super::error::BuildError;
use crate::config::ImageConfig;
use crate::fetch::{redact, Net};

/// Largest config accepted from a URL: 4 MiB (real configs are a few KiB).
const MAX_REMOTE_CONFIG: usize = 4 << 20;

/// Read and parse the config `src` (a path, `file://` path or URL).
/// Relative local paths in it resolve against its directory (a remote
/// config's, against the working directory).
pub fn load_config(src: &str, net: &Net) -> Result<ImageConfig, BuildError> {
    if src.starts_with("http://") || src.starts_with("https://") {
        let body = net.block_on(net.http.get_small(src, MAX_REMOTE_CONFIG))?;
        let name = redact(src);
        let text = String::from_utf8(body)
            .map_err(|_| BuildError::ConfigNotText { name: name.clone() })?;
        return Ok(ImageConfig::parse(&text, &name, Path::new("."))?);
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
