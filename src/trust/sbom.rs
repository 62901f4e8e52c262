//! `OUTPUT.spdx.json` (`--sbom`; docs/spec.md §13): an SPDX 2.3 JSON
//! document from the record of the inputs ([`Lock`]). The image is the
//! described package; the base, every file, archive and container image
//! is a package it `CONTAINS`, with its SHA-256, where it was downloaded
//! from and, for an image, a `pkg:oci` purl. Content items are packages
//! (`filesAnalyzed: false`), not SPDX files: SPDX 2.3 files must carry a
//! SHA-1, which nothing here computes.

use serde_json::{json, Value};

use super::record::{Input, InputKind, Lock};

/// The image the document describes.
#[derive(Debug, Clone)]
pub struct Described<'a> {
    /// OUTPUT's file name.
    pub name: &'a str,
    /// The download file's sha256.
    pub sha256: &'a str,
    /// Its size.
    pub size: Option<u64>,
    /// The document's creation time (`SOURCE_DATE_EPOCH` or now), Unix
    /// seconds.
    pub created: i64,
}

/// `2023-11-14T22:13:20Z`.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crate::progress::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The purl of an image: `pkg:oci/NAME@sha256%3AHEX?arch=…&repository_url=…&tag=…`
/// (the purl spec's `oci` type: the version is the manifest digest,
/// percent-encoded; qualifiers sorted).
pub fn oci_purl(image: &super::ImageInput, platform: &str) -> String {
    let name = image
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(&image.repository)
        .to_ascii_lowercase();
    let arch = platform.split('/').nth(1).unwrap_or("arm64");
    format!(
        "pkg:oci/{name}@{}?arch={}&repository_url={}&tag={}",
        pct(&image.manifest_digest, b""),
        pct(arch, b":"),
        pct(&format!("{}/{}", image.registry, image.repository), b":"),
        pct(&image.tag, b":")
    )
}

/// Percent-encode what a purl component may not hold as is (`also`: the
/// bytes this component may hold besides the unreserved ones and `/`; a
/// qualifier value keeps `:`, as in `repository_url=localhost:5000/…`,
/// the version does not: `sha256%3A…`).
fn pct(s: &str, also: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'.' | b'-' | b'_' | b'~' | b'/')
            || also.contains(&b)
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An SPDX checksum object.
fn sha256(hex: &str) -> Value {
    json!({ "algorithm": "SHA256", "checksumValue": hex.to_ascii_lowercase() })
}

/// `url` as an SPDX download location, when SPDX 2.3's pattern takes it:
/// an http(s)/ftp/sftp URL whose host is a name ending in a 2-5 letter
/// label (the spec's pattern refuses IP addresses and one-label hosts).
pub fn spdx_location(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "http" | "https" | "ftp" | "sftp") {
        return None;
    }
    let host = u.host_str()?;
    let labels: Vec<&str> = host.split(['.', '-']).collect();
    let tld = host.rsplit('.').next()?;
    let fits = host.contains('.')
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric()))
        && (2..=5).contains(&tld.len())
        && tld.bytes().all(|b| b.is_ascii_alphabetic());
    fits.then(|| url.to_string())
}

/// One input as a package.
fn package(id: &str, input: &Input, platform: &str) -> Value {
    let from = input.final_url.as_ref().or(input.url.as_ref());
    let location = match (from.and_then(|u| spdx_location(u)), input.kind) {
        (Some(u), _) => u,
        (None, InputKind::Inline) => "NONE".to_string(),
        (None, _) => "NOASSERTION".to_string(),
    };
    let name = match (&input.dest, &input.image) {
        (_, Some(img)) => format!("{}/{}:{}", img.registry, img.repository, img.tag),
        (Some(d), None) => d.clone(),
        (None, None) => input.name(),
    };
    let purpose = match input.kind {
        InputKind::Base => "OPERATING-SYSTEM",
        InputKind::Archive => "ARCHIVE",
        InputKind::Image => "CONTAINER",
        InputKind::File | InputKind::Inline => "FILE",
    };
    let mut p = json!({
        "SPDXID": id,
        "name": name,
        "downloadLocation": location,
        "filesAnalyzed": false,
        "primaryPackagePurpose": purpose,
        "comment": format!("config key {}", input.key),
    });
    let mut checksums = Vec::new();
    if let Some(s) = &input.sha256 {
        checksums.push(sha256(s));
    }
    if let Some(img) = &input.image {
        p["versionInfo"] = img.tag.clone().into();
        if let Some(hex) = img.manifest_digest.strip_prefix("sha256:") {
            checksums.push(sha256(hex));
            p["comment"] = format!(
                "config key {}; the checksum is the image manifest's digest ({platform})",
                input.key
            )
            .into();
        }
        p["externalRefs"] = json!([{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": oci_purl(img, platform),
        }]);
    }
    if let Some(dest) = &input.dest {
        p["packageFileName"] = dest.clone().into();
    }
    if let (Some(u), "NOASSERTION") = (from, location.as_str()) {
        // A URL SPDX's pattern does not take (an address, not a name).
        p["sourceInfo"] = format!("downloaded from {u}").into();
    }
    if !checksums.is_empty() {
        p["checksums"] = checksums.into();
    }
    p
}

/// The document's bytes: pretty JSON, sorted keys, a final newline.
pub fn spdx(lock: &Lock, image: &Described<'_>) -> Vec<u8> {
    let record_sha = crate::io::hex(&{
        use sha2::Digest;
        sha2::Sha256::digest(lock.to_json())
    });
    let mut described = json!({
        "SPDXID": "SPDXRef-Image",
        "name": image.name,
        "packageFileName": image.name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "checksums": [sha256(image.sha256)],
        "comment": format!("built by {} from the config {} (sha256 {})",
            lock.tool, lock.config.source, lock.config.sha256),
    });
    if let Some(size) = image.size {
        described["description"] = format!("a Raspberry Pi disk image, {size} bytes").into();
    }
    let mut packages = vec![described];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    let inputs = std::iter::once(("SPDXRef-Base".to_string(), &lock.base)).chain(
        lock.items
            .iter()
            .enumerate()
            .map(|(i, input)| (format!("SPDXRef-Item-{i}"), input)),
    );
    for (id, input) in inputs {
        packages.push(package(&id, input, &lock.platform));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image.name,
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/image-creator/{}-{}",
            pct(image.name, b""),
            &record_sha[..32]
        ),
        "creationInfo": {
            "created": utc(image.created),
            "creators": [format!("Tool: {}", lock.tool.replace(' ', "-"))],
        },
        "documentDescribes": ["SPDXRef-Image"],
        "packages": packages,
        "relationships": relationships,
    });
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::ImageInput;

    #[test]
    fn download_locations_spdx_takes() {
        let ok = "https://download.kiwix.org/zim/a.zim";
        assert_eq!(spdx_location(ok).as_deref(), Some(ok));
        assert!(spdx_location("http://files.example.test:8080/a").is_some());
        for no in [
            "http://127.0.0.1:8080/a.bin",
            "http://localhost/a",
            "http://[::1]/a",
            "file:///etc/passwd",
            "http://a.b.toolong/x",
            "not a url",
        ] {
            assert_eq!(spdx_location(no), None, "{no}");
        }
    }

    #[test]
    fn times_and_purls() {
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        let img = ImageInput {
            registry: "ghcr.io".into(),
            repository: "offspot/kiwix-serve".into(),
            tag: "3.8.1".into(),
            index_digest: None,
            manifest_digest: format!("sha256:{}", "a".repeat(64)),
            config_digest: None,
            layers: Vec::new(),
        };
        assert_eq!(
            oci_purl(&img, "linux/arm64/v8"),
            format!(
                "pkg:oci/kiwix-serve@sha256%3A{}?arch=arm64&repository_url=ghcr.io/offspot/kiwix-serve&tag=3.8.1",
                "a".repeat(64)
            )
        );
    }
}
