//! The exit codes of docs/spec.md §7. Every error type of the library says which
//! one it means with an `exit_kind()` method; the binary maps it to the
//! process exit code.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_those_of_the_spec() {
        let all = [
            ExitKind::Failure,
            ExitKind::MissingRequirement,
            ExitKind::BadInput,
            ExitKind::Unreachable,
        ];
        assert_eq!(all.map(ExitKind::code), [1, 2, 3, 4]);
    }
}
