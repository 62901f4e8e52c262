//! Reserving data blocks: regular files get all their blocks when they are
//! created (allocation order = call order), and give back the tail when a
//! stream turns out shorter than planned.

use std::sync::Arc;

use super::alloc::Run;
use super::builder::Ext4Builder;
use super::error::Ext4Error;
use super::extent;
use super::file::FileWriter;
use super::layout::BLOCK_SIZE;
use super::node::{Ino, Kind, Runs};
use super::params::InodeMeta;
use super::units::{BlockCount, BlockNo};

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
        let runs = self.alloc_data(&path, BlockCount::for_bytes(size))?;
        let tree: Box<[BlockNo]> =
            match self.alloc_data(&path, extent::tree_block_count(runs.len())) {
                Ok(t) => t.iter().flat_map(Run::blocks).collect(),
                Err(e) => {
                    for r in &runs {
                        self.release(*r)?;
                    }
                    return Err(e);
                }
            };
        let runs_arc: Arc<[Run]> = Arc::from(runs.as_slice());
        let kind = Kind::File {
            runs: Runs::new(runs),
            tree,
        };
        let ino = match self.new_inode(parent, name, meta, kind) {
            Ok(i) => i,
            Err(e) => {
                for r in runs_arc.iter() {
                    self.release(*r)?;
                }
                return Err(e);
            }
        };
        if !self.sizes.set(ino.0, size) {
            return Err(Ext4Error::Internal(format!(
                "{path}: inode past the size table"
            )));
        }
        Ok(FileWriter::new(
            ino.0,
            Arc::from(path.as_str()),
            self.window.clone(),
            runs_arc,
            self.sizes.clone(),
        ))
    }

    /// A writer for regular file `file` (as [`Ext4Builder::create_file`]
    /// returned), for callers that do not keep theirs.
    pub fn writer(&self, file: Ino) -> Result<FileWriter, Ext4Error> {
        let Kind::File { runs, .. } = &self.node(file.0)?.kind else {
            return Err(Ext4Error::Internal(format!(
                "{}: not a regular file",
                self.path_of(file)
            )));
        };
        Ok(FileWriter::new(
            file.0,
            Arc::from(self.path_of(file).as_str()),
            self.window.clone(),
            Arc::from(runs.as_slice()),
            self.sizes.clone(),
        ))
    }

    fn release(&mut self, r: Run) -> Result<(), Ext4Error> {
        self.alloc
            .release(r.start, r.len)
            .map_err(Ext4Error::Internal)
    }

    /// Reserve `nblocks` data blocks from the allocation cursor, as runs of
    /// at most `max_extent_blocks`; `what` names the path in the error.
    pub(super) fn alloc_data(
        &mut self,
        what: &str,
        nblocks: BlockCount,
    ) -> Result<Vec<Run>, Ext4Error> {
        if nblocks == BlockCount::ZERO {
            return Ok(Vec::new());
        }
        let max_run = BlockCount(u64::from(self.params.max_extent_blocks.max(1)));
        self.alloc
            .alloc_runs(nblocks, max_run)
            .ok_or_else(|| Ext4Error::NoSpace {
                what: what.to_string(),
                needed: nblocks.bytes_saturating(),
                available: self.alloc.free_after_cursor().bytes_saturating(),
                size: self.layout.blocks_count.bytes_saturating(),
            })
    }

    /// Shrink a file to `len` bytes (at most its reserved size), releasing
    /// the blocks past it. Use when a stream turned out shorter than planned.
    pub fn set_len(&mut self, file: Ino, len: u64) -> Result<(), Ext4Error> {
        let cur = self.sizes.get(file.0);
        let sizes = self.sizes.clone();
        let bad = |b: &Self, reason| Ext4Error::BadSize {
            path: b.path_of(file),
            size: len,
            reason,
        };
        let Ok(Kind::File { runs, tree }) = self.node(file.0).map(|n| &n.kind) else {
            return Err(bad(self, "not a regular file"));
        };
        if len > cur {
            return Err(bad(self, "files can only shrink after creation"));
        }
        let (new_runs, freed) = split_runs(runs.as_slice(), BlockCount::for_bytes(len));
        let need_tree = extent::tree_blocks(new_runs.len()).min(tree.len());
        let (kept_tree, extra_tree) = tree.split_at(need_tree);
        let (kept_tree, extra_tree): (Box<[BlockNo]>, Vec<BlockNo>) =
            (kept_tree.into(), extra_tree.to_vec());
        sizes.set(file.0, len);
        if let Kind::File { runs, tree } = &mut self.node_mut(file.0)?.kind {
            *runs = Runs::new(new_runs);
            *tree = kept_tree;
        }
        for r in freed {
            self.release(r)?;
        }
        for start in extra_tree {
            self.release(Run {
                start,
                len: BlockCount(1),
            })?;
        }
        Ok(())
    }
}

/// Split `runs` (in logical order) after the first `keep` blocks: the runs
/// that hold them, and the runs past them.
fn split_runs(runs: &[Run], keep: BlockCount) -> (Vec<Run>, Vec<Run>) {
    let mut left = keep;
    let mut kept = Vec::new();
    let mut freed = Vec::new();
    for r in runs {
        if left == BlockCount::ZERO {
            freed.push(*r);
        } else if r.len > left {
            kept.push(Run {
                start: r.start,
                len: left,
            });
            // left < r.len: the tail is inside the run.
            freed.push(Run {
                start: BlockNo(r.start.get().saturating_add(left.get())),
                len: r.len.saturating_sub(left),
            });
            left = BlockCount::ZERO;
        } else {
            kept.push(*r);
            left = left.saturating_sub(r.len);
        }
    }
    (kept, freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u64, len: u64) -> Run {
        Run {
            start: BlockNo(start),
            len: BlockCount(len),
        }
    }

    #[test]
    fn split_keeps_a_prefix() {
        let runs = [run(10, 4), run(20, 4)];
        assert_eq!(
            split_runs(&runs, BlockCount(6)),
            (vec![run(10, 4), run(20, 2)], vec![run(22, 2)])
        );
        assert_eq!(
            split_runs(&runs, BlockCount(4)),
            (vec![run(10, 4)], vec![run(20, 4)])
        );
        assert_eq!(split_runs(&runs, BlockCount(0)), (vec![], runs.to_vec()));
        assert_eq!(split_runs(&runs, BlockCount(8)), (runs.to_vec(), vec![]));
    }
}
