//! Reserving data blocks: regular files get all their blocks when they are
//! created (allocation order = call order), and give back the tail when a
//! stream turns out shorter than planned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::alloc::Run;
use super::builder::Ext4Builder;
use super::error::Ext4Error;
use super::extent;
use super::file::FileWriter;
use super::layout::BLOCK_SIZE;
use super::node::{Ino, Kind};
use super::params::InodeMeta;

/// Largest file: 2^32 logical blocks of 4 KiB (16 TiB), ext4's extent limit.
const MAX_FILE_SIZE: u64 = (1u64 << 32) * BLOCK_SIZE;

impl Ext4Builder {
    /// Create regular file `name` of exactly `size` bytes in `parent` and
    /// reserve its blocks now (allocation order = call order, so the layout
    /// never depends on when data arrives). Stream the bytes with the
    /// returned writer; bytes never written read as zeros.
    pub fn create_file(
        &mut self,
        parent: Ino,
        name: &[u8],
        size: u64,
        meta: InodeMeta,
    ) -> Result<FileWriter, Ext4Error> {
        self.check_new_entry(parent, name)?;
        let path = self.child_path(parent, name);
        if size > MAX_FILE_SIZE {
            return Err(Ext4Error::BadSize {
                path,
                size,
                reason: "larger than ext4's 16 TiB file limit",
            });
        }
        let nblocks = size.div_ceil(BLOCK_SIZE);
        let runs = self.alloc_data(&path, nblocks)?;
        let tree_n = extent::tree_blocks(runs.len()) as u64;
        let tree = match self.alloc_data(&path, tree_n) {
            Ok(t) => t.iter().flat_map(|r| r.start..r.end()).collect(),
            Err(e) => {
                for r in &runs {
                    self.release(*r)?;
                }
                return Err(e);
            }
        };
        let limit = Arc::new(AtomicU64::new(size));
        let runs_arc: Arc<[Run]> = Arc::from(runs.as_slice());
        let ino = match self.new_inode(
            parent,
            name,
            meta,
            Kind::File {
                runs,
                tree,
                limit: limit.clone(),
            },
        ) {
            Ok(i) => i,
            Err(e) => {
                for r in runs_arc.iter() {
                    self.release(*r)?;
                }
                return Err(e);
            }
        };
        Ok(FileWriter::new(
            ino.0,
            Arc::from(path.as_str()),
            self.window.clone(),
            runs_arc,
            limit,
        ))
    }

    fn release(&mut self, r: Run) -> Result<(), Ext4Error> {
        self.alloc
            .release(r.start, r.len)
            .map_err(Ext4Error::Internal)
    }

    pub(super) fn alloc_data(&mut self, what: &str, nblocks: u64) -> Result<Vec<Run>, Ext4Error> {
        if nblocks == 0 {
            return Ok(Vec::new());
        }
        self.alloc
            .alloc_runs(nblocks, u64::from(self.params.max_extent_blocks.max(1)))
            .ok_or_else(|| Ext4Error::NoSpace {
                what: what.to_string(),
                needed: nblocks * BLOCK_SIZE,
                available: self.alloc.free_after_cursor() * BLOCK_SIZE,
                size: self.layout.blocks_count * BLOCK_SIZE,
            })
    }

    /// Shrink a file to `len` bytes (at most its reserved size), releasing
    /// the blocks past it. Use when a stream turned out shorter than planned.
    pub fn set_len(&mut self, file: Ino, len: u64) -> Result<(), Ext4Error> {
        let path = self.path_of(file);
        let node = self.node_mut(file.0)?;
        let Kind::File { runs, tree, limit } = &mut node.kind else {
            return Err(Ext4Error::BadSize {
                path,
                size: len,
                reason: "not a regular file",
            });
        };
        let cur = limit.load(Ordering::Relaxed);
        if len > cur {
            return Err(Ext4Error::BadSize {
                path,
                size: len,
                reason: "files can only shrink after creation",
            });
        }
        limit.store(len, Ordering::Relaxed);
        let keep = len.div_ceil(BLOCK_SIZE);
        let mut kept = 0u64;
        let mut new_runs = Vec::new();
        let mut freed = Vec::new();
        for r in runs.iter() {
            if kept >= keep {
                freed.push(*r);
            } else if kept + r.len > keep {
                let k = keep - kept;
                new_runs.push(Run {
                    start: r.start,
                    len: k,
                });
                freed.push(Run {
                    start: r.start + k,
                    len: r.len - k,
                });
                kept = keep;
            } else {
                new_runs.push(*r);
                kept += r.len;
            }
        }
        let need_tree = extent::tree_blocks(new_runs.len());
        let extra_tree: Vec<u64> = tree.drain(need_tree..).collect();
        *runs = new_runs;
        for r in freed {
            self.release(r)?;
        }
        for b in extra_tree {
            self.release(Run { start: b, len: 1 })?;
        }
        Ok(())
    }
}
