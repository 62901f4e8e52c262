//! Step 5: `offspot.yaml` in the boot partition (p1).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::error::BuildError;
use crate::config::{render_offspot_yaml, ImageConfig};
use crate::partition::{Mbr, PartitionWindow};

/// Replace p1's `offspot.yaml` when the config has an `offspot` mapping
/// (otherwise the base's file stays).
pub fn write_boot(
    image: &Arc<File>,
    image_path: &Path,
    mbr: &Mbr,
    config: &ImageConfig,
    log: Option<Arc<dyn crate::partition::WriteLog>>,
) -> Result<(), BuildError> {
    if let Some(m) = &config.offspot {
        let yaml = render_offspot_yaml(m);
        let p1 = mbr.partition(1)?;
        let w1 =
            PartitionWindow::new(image.clone(), image_path, p1.offset(), p1.len()).with_log(log);
        crate::fs::fat::replace_file(&w1, "offspot.yaml", yaml.as_bytes())?;
    }
    Ok(())
}
