//! Progress reporting: library code reports events to a [`Reporter`]; only
//! the binary renders them. (Live bars and the JSON progress file come with
//! the progress issue.)

/// Receives build events.
pub trait Reporter: Send + Sync {
    /// A step starts (`index` of `count`).
    fn step(&self, index: usize, count: usize, name: &str);
    /// An item (file, archive, image) is done.
    fn item_done(&self, name: &str, bytes: u64, digest: Option<&str>);
    /// Something the user should know but that does not stop the build.
    fn warn(&self, message: &str);
}

/// A reporter that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn step(&self, _: usize, _: usize, _: &str) {}
    fn item_done(&self, _: &str, _: u64, _: Option<&str>) {}
    fn warn(&self, _: &str) {}
}
