//! The image config (docs/spec.md §4): parsed with unknown keys refused at every
//! level, then validated into an [`ImageConfig`] whose errors name the key.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::checksum::Checksum;
use super::oci::OciReference;
use super::size::Size;

/// A config that does not parse or validate. Exit code 3.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// YAML syntax, unknown key, wrong type: serde's message names the key
    /// path and the line/column.
    #[error("{source_name}: {message}")]
    Parse {
        /// Config file or URL.
        source_name: String,
        /// serde / YAML message.
        message: String,
    },
    /// A value that parsed but is not acceptable.
    #[error("{source_name}: {key}: {message}")]
    Invalid {
        /// Config file or URL.
        source_name: String,
        /// Key path, e.g. `files[2].to`.
        key: String,
        /// Why.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    base: RawBase,
    #[serde(default)]
    output: RawOutput,
    #[serde(default)]
    oci_images: Vec<RawOci>,
    #[serde(default)]
    files: Vec<RawFile>,
    #[serde(default)]
    write_config: bool,
    #[serde(default)]
    offspot: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBase {
    source: String,
    rootfs_size: Size,
    #[serde(default)]
    checksum: Option<Checksum>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    #[serde(default)]
    size: Option<serde_norway::Value>,
    #[serde(default)]
    compress: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOci {
    ident: String,
    filesize: Size,
    fullsize: Size,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    to: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    via: Via,
    #[serde(default)]
    size: Option<Size>,
    #[serde(default)]
    checksum: Option<Checksum>,
}

/// How a `files[]` entry's payload becomes files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Write the bytes as they are.
    #[default]
    Direct,
    /// `content` is base64: write the decoded bytes.
    Base64,
    /// A tar archive to expand into `to`.
    Tar,
    /// tar.gz.
    Gztar,
    /// tar.bz2.
    Bztar,
    /// tar.xz.
    Xztar,
    /// zip.
    Zip,
}

impl Via {
    /// True for the archive formats (`to` is a directory).
    pub fn is_archive(self) -> bool {
        !matches!(self, Self::Direct | Self::Base64)
    }
}

/// Where bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An http(s) URL.
    Http(String),
    /// A local file (`file://` URL or bare path, resolved).
    Local(PathBuf),
}

impl Source {
    /// Parse a URL or path, resolving relative paths against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, String> {
        let t = text.trim();
        if t.starts_with("http://") || t.starts_with("https://") {
            return Ok(Self::Http(t.to_string()));
        }
        let path = if let Some(rest) = t.strip_prefix("file://") {
            rest
        } else if t.contains("://") {
            return Err(format!(
                "unsupported URL scheme in {t:?} (use http, https or file)"
            ));
        } else {
            t
        };
        if path.is_empty() {
            return Err("empty path".into());
        }
        Ok(Self::Local(base_dir.join(path)))
    }

    /// For messages.
    pub fn display(&self) -> String {
        match self {
            Self::Http(u) => u.clone(),
            Self::Local(p) => p.display().to_string(),
        }
    }

    /// True when the name ends in `.xz`.
    pub fn is_xz(&self) -> bool {
        match self {
            Self::Http(u) => u
                .split(['?', '#'])
                .next()
                .is_some_and(|p| p.ends_with(".xz")),
            Self::Local(p) => p.extension().is_some_and(|e| e == "xz"),
        }
    }
}

/// The base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseSource {
    /// A version like `1.4.2`, resolved against the base URL.
    Version(String),
    /// A URL or path.
    Source(Source),
}

/// `base`.
#[derive(Debug, Clone)]
pub struct Base {
    /// Where the base image comes from.
    pub source: BaseSource,
    /// Byte offset of the data partition (p3) in the base.
    pub rootfs_size: u64,
    /// Expected digest (ignored for versions).
    pub checksum: Option<Checksum>,
}

/// `output.size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSize {
    /// The smallest image that fits.
    Auto,
    /// An exact size in bytes.
    Bytes(u64),
}

/// Where a file's payload comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Inline `content` (already stripped; decoded if `via: base64`).
    Content(Vec<u8>),
    /// A URL or path.
    Source(Source),
}

/// One `files[]` entry.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Destination relative to `/data` (`""` is `/data` itself), normalised.
    pub to: String,
    /// The payload.
    pub payload: Payload,
    /// How to write it.
    pub via: Via,
    /// Declared size (file size, or expanded size for archives).
    pub size: Option<u64>,
    /// Declared checksum of the payload.
    pub checksum: Option<Checksum>,
}

/// One `oci_images[]` entry.
#[derive(Debug, Clone)]
pub struct OciEntry {
    /// Parsed reference.
    pub ident: OciReference,
    /// Size of the exported tar.
    pub filesize: u64,
    /// Size once extracted.
    pub fullsize: u64,
    /// A prebuilt exported tar to download instead of pulling.
    pub url: Option<Source>,
}

/// A validated image config.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// `base`.
    pub base: Base,
    /// `output.size`.
    pub output_size: OutputSize,
    /// `output.compress`: `true` compresses OUTPUT with xz (docs/spec.md §10).
    pub compress: bool,
    /// `oci_images`.
    pub oci_images: Vec<OciEntry>,
    /// `files`.
    pub files: Vec<FileEntry>,
    /// `write_config`.
    pub write_config: bool,
    /// `offspot` (None when absent or empty).
    pub offspot: Option<serde_norway::Mapping>,
    /// The config text as given (written to `/data/image.yaml`).
    pub raw_text: String,
}

fn is_version(s: &str) -> bool {
    let mut parts = s.splitn(3, '.');
    let num =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let (a, b) = (parts.next(), parts.next());
    let c = parts.next();
    num(a) && num(b) && c.is_some_and(|c| c.bytes().next().is_some_and(|b| b.is_ascii_digit()))
}

/// Normalise `to` lexically; it must be `/data` or below. Returns the path
/// relative to `/data`.
pub fn normalize_data_path(to: &str) -> Result<String, String> {
    if !to.starts_with('/') {
        return Err(format!("{to:?} must be an absolute path under /data"));
    }
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(to).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(format!("{to:?} escapes /"));
                }
            }
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::Prefix(_) => return Err(format!("{to:?} is not a Unix path")),
        }
    }
    if parts.first().map(String::as_str) != Some("data") {
        return Err(format!("{to:?} is not under /data"));
    }
    Ok(parts[1..].join("/"))
}

impl ImageConfig {
    /// Parse and validate config `text`; `source_name` names it in errors and
    /// relative paths resolve against `base_dir`.
    pub fn parse(text: &str, source_name: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let raw = read_raw(text).map_err(|message| ConfigError::Parse {
            source_name: source_name.to_string(),
            message,
        })?;
        Self::validate(raw, text, base_dir).map_err(|Invalid { key, message }| {
            ConfigError::Invalid {
                source_name: source_name.to_string(),
                key,
                message,
            }
        })
    }

    /// Each section in the order of the file, so the first bad key is the
    /// one reported.
    fn validate(raw: RawConfig, text: &str, base_dir: &Path) -> Result<Self, Invalid> {
        Ok(Self {
            base: base(raw.base, base_dir)?,
            output_size: output_size(raw.output.size)?,
            compress: raw.output.compress,
            oci_images: oci_images(raw.oci_images, base_dir)?,
            files: files(raw.files, base_dir)?,
            write_config: raw.write_config,
            offspot: offspot(raw.offspot)?,
            raw_text: text.to_string(),
        })
    }
}

/// A value that parsed but is refused: its key and why ([`ImageConfig::parse`]
/// adds the config's name).
struct Invalid {
    key: String,
    message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The YAML read into the raw schema (unknown keys refused), after the
/// bounds check; the error is the message.
fn read_raw(text: &str) -> Result<RawConfig, String> {
    // Before the YAML parser sees it (quadratic in depth; aliases).
    super::bounds::check_yaml_bounds(text).map_err(|e| e.to_string())?;
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

/// `base`: a version or a source, and a valid checksum.
fn base(raw: RawBase, base_dir: &Path) -> Result<Base, Invalid> {
    let source = if is_version(raw.source.trim()) {
        BaseSource::Version(raw.source.trim().to_string())
    } else {
        BaseSource::Source(
            Source::parse(&raw.source, base_dir).map_err(|m| invalid("base.source", m))?,
        )
    };
    let mut checksum = raw.checksum;
    if let Some(c) = checksum.as_mut() {
        c.validate().map_err(|m| invalid("base.checksum", m))?;
    }
    Ok(Base {
        source,
        rootfs_size: raw.rootfs_size.0,
        checksum,
    })
}

/// `output.size`: absent, null or `auto`, a size string or a byte count.
fn output_size(raw: Option<serde_norway::Value>) -> Result<OutputSize, Invalid> {
    let key = "output.size";
    match raw {
        None | Some(serde_norway::Value::Null) => Ok(OutputSize::Auto),
        Some(serde_norway::Value::String(s)) if s.trim().eq_ignore_ascii_case("auto") => {
            Ok(OutputSize::Auto)
        }
        Some(serde_norway::Value::String(s)) => super::size::parse_size(&s)
            .map(OutputSize::Bytes)
            .map_err(|e| invalid(key, e.to_string())),
        Some(serde_norway::Value::Number(n)) => n
            .as_u64()
            .map(OutputSize::Bytes)
            .ok_or_else(|| invalid(key, format!("{n} is not a byte count"))),
        Some(other) => Err(invalid(
            key,
            format!("expected a size or \"auto\", got {other:?}"),
        )),
    }
}

/// `oci_images`: each reference parsed, each `url` a source.
fn oci_images(raw: Vec<RawOci>, base_dir: &Path) -> Result<Vec<OciEntry>, Invalid> {
    let mut out = Vec::new();
    for (i, o) in raw.into_iter().enumerate() {
        let ident = OciReference::parse(&o.ident)
            .map_err(|m| invalid(format!("oci_images[{i}].ident"), m))?;
        let url = o
            .url
            .map(|u| Source::parse(&u, base_dir))
            .transpose()
            .map_err(|m| invalid(format!("oci_images[{i}].url"), m))?;
        out.push(OciEntry {
            ident,
            filesize: o.filesize.0,
            fullsize: o.fullsize.0,
            url,
        });
    }
    Ok(out)
}

/// `files`: each entry validated, no destination used twice.
fn files(raw: Vec<RawFile>, base_dir: &Path) -> Result<Vec<FileEntry>, Invalid> {
    let mut seen = HashSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, f)| file_entry(i, f, base_dir, &mut seen))
        .collect()
}

/// `files[i]`: its destination under `/data` (not one of `seen`, which
/// it joins), payload and checksum, checked in that order.
fn file_entry(
    i: usize,
    f: RawFile,
    base_dir: &Path,
    seen: &mut HashSet<String>,
) -> Result<FileEntry, Invalid> {
    let key = |k: &str| format!("files[{i}].{k}");
    let to = normalize_data_path(&f.to).map_err(|m| invalid(key("to"), m))?;
    if !seen.insert(to.clone()) {
        return Err(invalid(
            key("to"),
            format!("/data/{to} is already the destination of another entry"),
        ));
    }
    if to.is_empty() && !f.via.is_archive() {
        return Err(invalid(key("to"), "a file can not replace /data itself"));
    }
    let payload = payload(i, f.content, f.url, f.via, base_dir)?;
    let mut checksum = f.checksum;
    if let Some(c) = checksum.as_mut() {
        c.validate().map_err(|m| invalid(key("checksum"), m))?;
    }
    Ok(FileEntry {
        to,
        payload,
        via: f.via,
        size: f.size.map(|s| s.0),
        checksum,
    })
}

/// `files[i]`'s payload: `content` (trimmed; decoded with `via: base64`)
/// wins over `url`; one of them is needed.
fn payload(
    i: usize,
    content: Option<String>,
    url: Option<String>,
    via: Via,
    base_dir: &Path,
) -> Result<Payload, Invalid> {
    let key = |k: &str| format!("files[{i}].{k}");
    match (content, url) {
        (Some(c), _) => {
            let c = c.trim();
            if via != Via::Base64 {
                return Ok(Payload::Content(c.as_bytes().to_vec()));
            }
            use base64::Engine;
            let clean: String = c.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .map(Payload::Content)
                .map_err(|e| invalid(key("content"), format!("not valid base64: {e}")))
        }
        (None, Some(u)) => {
            if via == Via::Base64 {
                return Err(invalid(
                    key("via"),
                    "base64 applies to `content`, not to a URL",
                ));
            }
            Source::parse(&u, base_dir)
                .map(Payload::Source)
                .map_err(|m| invalid(key("url"), m))
        }
        (None, None) => Err(invalid(format!("files[{i}]"), "needs `url` or `content`")),
    }
}

/// `offspot`: a mapping; absent, null or empty is none.
fn offspot(raw: Option<serde_norway::Value>) -> Result<Option<serde_norway::Mapping>, Invalid> {
    match raw {
        None | Some(serde_norway::Value::Null) => Ok(None),
        Some(serde_norway::Value::Mapping(m)) if m.is_empty() => Ok(None),
        Some(serde_norway::Value::Mapping(m)) => Ok(Some(m)),
        Some(_) => Err(invalid("offspot", "must be a mapping")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
base:
  source: 1.4.2
  rootfs_size: 3716153344
output:
  size: auto
files:
  - to: /data/contents/hello.txt
    content: "  hello  "
  - to: /data//x/./y/../z.bin
    url: file://blob.bin
    size: 1KiB
    checksum: {algo: sha-256, value: E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855}
  - to: /data/b64
    via: base64
    content: aGVsbG8=
oci_images:
  - ident: ghcr.io/offspot/kiwix-serve:3.8.1
    filesize: 1000
    fullsize: 2000
write_config: true
offspot:
  ap: {ssid: demo}
"#;

    #[test]
    fn parses_a_full_config() {
        let c = ImageConfig::parse(OK, "c.yaml", Path::new("/cfg")).expect("valid");
        assert_eq!(c.base.source, BaseSource::Version("1.4.2".into()));
        assert_eq!(c.base.rootfs_size, 3_716_153_344);
        assert_eq!(c.output_size, OutputSize::Auto);
        assert_eq!(c.files[0].to, "contents/hello.txt");
        assert_eq!(c.files[0].payload, Payload::Content(b"hello".to_vec()));
        assert_eq!(c.files[1].to, "x/z.bin");
        assert_eq!(
            c.files[1].payload,
            Payload::Source(Source::Local(PathBuf::from("/cfg/blob.bin")))
        );
        assert_eq!(c.files[1].size, Some(1024));
        assert!(c.files[1]
            .checksum
            .as_ref()
            .is_some_and(|k| k.value.starts_with("e3b0")));
        assert_eq!(c.files[2].payload, Payload::Content(b"hello".to_vec()));
        assert!(c.write_config && c.offspot.is_some());
    }

    fn err(text: &str) -> String {
        ImageConfig::parse(text, "c.yaml", Path::new("/"))
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err("base: {source: 1.0.0, rootfs_size: 1}\nfiles:\n  - to: /data/a\n    content: x\n    sise: 3\n");
        assert!(
            e.contains("sise") && e.contains("c.yaml") && e.contains("line"),
            "{e}"
        );
        let e = err("base: {source: 1.0.0, rootfs_size: 1, root_size: 2}\n");
        assert!(e.contains("root_size"), "{e}");
        let e = err("base: {source: 1.0.0, rootfs_size: 1}\nextra: 1\n");
        assert!(e.contains("extra"), "{e}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let base = "base: {source: 1.0.0, rootfs_size: 1}\n";
        let cases = [
            (
                "files:\n  - to: /etc/passwd\n    content: x\n",
                "files[0].to",
            ),
            (
                "files:\n  - to: /data/../etc\n    content: x\n",
                "files[0].to",
            ),
            (
                "files:\n  - to: /data/a\n    content: x\n  - to: /data/./a\n    content: y\n",
                "files[1].to",
            ),
            ("files:\n  - to: /data/a\n", "files[0]"),
            (
                "files:\n  - to: /data/a\n    url: ftp://x\n",
                "files[0].url",
            ),
            (
                "files:\n  - to: /data/a\n    via: base64\n    content: '!!!'\n",
                "files[0].content",
            ),
            (
                "files:\n  - to: /data/a\n    content: x\n    checksum: {algo: md5, value: abc}\n",
                "files[0].checksum",
            ),
            ("output: {size: 12Q}\n", "output.size"),
            (
                "oci_images:\n  - {ident: 'a/b/c/d/e', filesize: 1, fullsize: 1}\n",
                "oci_images[0].ident",
            ),
            ("offspot: [1, 2]\n", "offspot"),
        ];
        for (extra, key) in cases {
            let e = err(&format!("{base}{extra}"));
            assert!(e.contains(key), "{extra}: {e}");
        }
        assert!(err("files: []\n").contains("base"), "base is required");
        let e = err("base: {source: 1.0.0}\n");
        assert!(e.contains("rootfs_size"), "{e}");
    }

    #[test]
    fn sources_and_versions() {
        assert!(
            is_version("1.4.2")
                && is_version("1.4.2-rc1")
                && !is_version("1.4")
                && !is_version("a.b.c")
        );
        let s = Source::parse("base.img.xz", Path::new("/cfg")).expect("path");
        assert_eq!(s, Source::Local(PathBuf::from("/cfg/base.img.xz")));
        assert!(s.is_xz());
        assert!(Source::parse("https://x/y.img.xz?a=1", Path::new("/"))
            .expect("url")
            .is_xz());
    }
}
