//! Build errors and the exit codes of SPEC §7.

/// What kind of failure, i.e. which exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// 1: the build failed.
    Failure,
    /// 2: a requirement is missing (feature, tool, disk space).
    MissingRequirement,
    /// 3: bad config or output path.
    BadInput,
    /// 4: a source can not be reached.
    Unreachable,
}

impl ExitKind {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            Self::Failure => 1,
            Self::MissingRequirement => 2,
            Self::BadInput => 3,
            Self::Unreachable => 4,
        }
    }
}

/// A failed build: a kind (exit code) and the error with its context chain.
#[derive(Debug)]
pub struct BuildError {
    /// Exit code class.
    pub kind: ExitKind,
    /// The error.
    pub error: anyhow::Error,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for BuildError {}

/// Attach an exit kind to errors.
pub trait Kind<T> {
    /// Classify the error.
    fn kind(self, kind: ExitKind) -> Result<T, BuildError>;
}

impl<T, E: Into<anyhow::Error>> Kind<T> for Result<T, E> {
    fn kind(self, kind: ExitKind) -> Result<T, BuildError> {
        self.map_err(|e| BuildError {
            kind,
            error: e.into(),
        })
    }
}

/// A `BuildError` from a message.
pub fn fail(kind: ExitKind, message: impl std::fmt::Display) -> BuildError {
    BuildError {
        kind,
        error: anyhow::anyhow!("{message}"),
    }
}

/// A failed HTTP request as a `BuildError`: exit 4 when the source can't be
/// reached (status, connection), 1 otherwise (bad body, checksum, disk).
pub fn http_fail(e: crate::fetch::HttpError) -> BuildError {
    let kind = if e.is_unreachable() {
        ExitKind::Unreachable
    } else {
        ExitKind::Failure
    };
    BuildError {
        kind,
        error: e.into(),
    }
}
