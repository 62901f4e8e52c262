//! `ext4-view` over a [`PartitionWindow`]: how an existing ext4 filesystem
//! is read, by the carry-over of the base's data partition and by
//! `image-creator verify`. Every read goes through the window, so it is
//! bounds-checked and its error names the image and the absolute offset.

use ext4_view::Ext4Read;

use crate::partition::PartitionWindow;

/// The [`Ext4Read`] of a window: `ext4_view::Ext4::load(Box::new(WindowRead(w)))`.
#[derive(Debug, Clone)]
pub struct WindowRead(pub PartitionWindow);

impl Ext4Read for WindowRead {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0
            .read_at(start_byte, dst)
            .map_err(|e| Box::new(e) as _)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn reads_inside_the_window_and_refuses_past_it() {
        let mut f = tempfile::tempfile().expect("temp file");
        std::io::Write::write_all(&mut f, &(0u8..=255).collect::<Vec<_>>()).expect("write");
        let w = PartitionWindow::new(Arc::new(f), std::path::Path::new("img"), 16, 32);
        let mut r = WindowRead(w);
        let mut buf = [0u8; 4];
        assert!(r.read(2, &mut buf).is_ok());
        assert_eq!(buf, [18, 19, 20, 21]);
        let e = r.read(30, &mut buf).expect_err("past the window's end");
        assert!(e.to_string().contains("img"), "{e}");
    }
}
