//! OCI image references (docs/spec.md §4/§5): `[registry/][repository/]name[:tag][@digest]`.

/// A parsed image reference with Docker's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciReference {
    /// Registry host (`index.docker.io` by default; `docker.io` maps there).
    pub registry: String,
    /// Repository (namespace), `library` by default.
    pub repository: String,
    /// Image name.
    pub name: String,
    /// Tag, `latest` by default.
    pub tag: String,
    /// Digest (`sha256:...`), if pinned.
    pub digest: Option<String>,
}

fn looks_like_registry(s: &str) -> bool {
    s.contains('.') || s.contains(':') || s == "localhost"
}

impl OciReference {
    /// Parse an `ident`.
    pub fn parse(ident: &str) -> Result<Self, String> {
        let t = ident.trim();
        if t.is_empty() || t.chars().any(char::is_whitespace) {
            return Err(format!("invalid image reference {ident:?}"));
        }
        let (rest, digest) = match t.split_once('@') {
            Some((r, d)) => {
                if !d.contains(':') || d.ends_with(':') {
                    return Err(format!("invalid digest in {ident:?}"));
                }
                (r, Some(d.to_string()))
            }
            None => (t, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if tag == Some("") {
            return Err(format!("empty tag in {ident:?}"));
        }
        let mut parts: Vec<&str> = path.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("empty path component in {ident:?}"));
        }
        let registry = if parts.len() > 1 && looks_like_registry(parts[0]) {
            Some(parts.remove(0))
        } else {
            None
        };
        let (repository, name) = match parts.as_slice() {
            [name] => ("library".to_string(), (*name).to_string()),
            [repo, name] => ((*repo).to_string(), (*name).to_string()),
            _ => {
                return Err(format!(
                    "{ident:?} has more than 3 path levels (registry/repository/name)"
                ))
            }
        };
        let registry = match registry {
            None | Some("docker.io") => "index.docker.io".to_string(),
            Some(r) => r.to_string(),
        };
        Ok(Self {
            registry,
            repository,
            name,
            tag: tag.unwrap_or("latest").to_string(),
            digest,
        })
    }

    /// `<registry>/<repository>/<name>:<tag>` (the docker-archive RepoTag).
    pub fn repo_tag(&self) -> String {
        format!(
            "{}/{}/{}:{}",
            self.registry, self.repository, self.name, self.tag
        )
    }

    /// `<registry>_<repository>_<name>_<tag or digest>_<platform>.tar`, with
    /// `/` and `:` removed from each part (docs/spec.md §5).
    pub fn archive_file_name(&self, platform: &str) -> String {
        let clean = |s: &str| s.replace(['/', ':'], "");
        let version = self.digest.as_deref().unwrap_or(&self.tag);
        format!(
            "{}_{}_{}_{}_{}.tar",
            clean(&self.registry),
            clean(&self.repository),
            clean(&self.name),
            clean(version),
            clean(platform)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_file_names() {
        let r = OciReference::parse("ghcr.io/offspot/kiwix-serve:3.8.1").expect("ok");
        assert_eq!(
            r.archive_file_name("linux/arm64/v8"),
            "ghcr.io_offspot_kiwix-serve_3.8.1_linuxarm64v8.tar"
        );
        assert_eq!(r.repo_tag(), "ghcr.io/offspot/kiwix-serve:3.8.1");
        let d = OciReference::parse("nginx").expect("ok");
        assert_eq!(
            (d.registry.as_str(), d.repository.as_str(), d.tag.as_str()),
            ("index.docker.io", "library", "latest")
        );
        let d = OciReference::parse("docker.io/library/nginx:1.25").expect("ok");
        assert_eq!(d.registry, "index.docker.io");
        let l = OciReference::parse("localhost:5000/app@sha256:abc").expect("ok");
        assert_eq!(
            (l.registry.as_str(), l.name.as_str(), l.digest.as_deref()),
            ("localhost:5000", "app", Some("sha256:abc"))
        );
        assert!(OciReference::parse("a.io/b/c/d").is_err());
        assert!(OciReference::parse("x:").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,60}") {
            let _ = OciReference::parse(&s);
        }
    }
}
