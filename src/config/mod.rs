//! The image config (docs/spec.md §4): schema, sizes, durations, checksums, OCI
//! references and `offspot.yaml` rendering.

mod bounds;
mod checksum;
mod oci;
mod offspot;
mod schema;
mod size;

pub use bounds::{check_yaml_bounds, YamlBoundError, MAX_DEPTH, MAX_YAML_BYTES};
pub use checksum::{Checksum, ChecksumKind, HashAlgo};
pub use oci::OciReference;
pub use offspot::render_offspot_yaml;
pub use schema::{
    normalize_data_path, Base, BaseSource, ConfigError, FileEntry, ImageConfig, OciEntry,
    OutputSize, Payload, Source, Via,
};
pub use size::{parse_duration, parse_size, Duration, ParseError, Size};
