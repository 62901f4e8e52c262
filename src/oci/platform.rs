//! Platforms (`os/arch[/variant]`) and how they match (docs/spec.md §5):
//! `linux/arm64` == `linux/arm64/v8`, `linux/arm` == `linux/arm/v7`.

/// The default platform of a Raspberry Pi image.
pub const DEFAULT_PLATFORM: &str = "linux/arm64/v8";

/// An image platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `arm64`, `amd64`, `arm`...
    pub architecture: String,
    /// `v8`, `v7`... (`None` when not given).
    pub variant: Option<String>,
}

impl Platform {
    /// Parse `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Self::new(os, arch, None))
            }
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
                Ok(Self::new(os, arch, Some(v)))
            }
            _ => Err(format!(
                "invalid platform {s:?}: expected os/architecture[/variant], e.g. {DEFAULT_PLATFORM}"
            )),
        }
    }

    /// From the fields of an index entry or image config.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
        }
    }

    /// The variant an architecture implies when none is given (containerd's
    /// normalisation: arm64 → v8, arm → v7).
    fn effective_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            (_, Some(v)) => Some(v),
            ("arm64", None) => Some("v8"),
            ("arm", None) => Some("v7"),
            _ => None,
        }
    }

    /// Same os, architecture and (normalised) variant.
    pub fn matches(&self, other: &Self) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && self.effective_variant() == other.effective_variant()
    }

    /// `os/arch/variant` with the implied variant spelled out (used in
    /// archive file names: `linuxarm64v8`).
    pub fn normalized(&self) -> String {
        match self.effective_variant() {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

impl Default for Platform {
    /// `linux/arm64/v8`.
    fn default() -> Self {
        Self::new("linux", "arm64", Some("v8"))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.variant {
            Some(v) => write!(f, "{}/{}/{v}", self.os, self.architecture),
            None => write!(f, "{}/{}", self.os, self.architecture),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        let want = Platform::parse(DEFAULT_PLATFORM).expect("valid");
        assert!(want.matches(&Platform::new("linux", "arm64", None)));
        assert!(want.matches(&Platform::new("linux", "arm64", Some("v8"))));
        assert!(!want.matches(&Platform::new("linux", "arm", None)));
        assert!(!want.matches(&Platform::new("linux", "amd64", None)));
        let arm = Platform::parse("linux/arm").expect("valid");
        assert!(arm.matches(&Platform::new("linux", "arm", Some("v7"))));
        assert!(!arm.matches(&Platform::new("linux", "arm", Some("v6"))));
        assert_eq!(arm.normalized(), "linux/arm/v7");
        assert_eq!(
            Platform::parse("linux/amd64").expect("valid").normalized(),
            "linux/amd64"
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v8").is_err());
    }
}
