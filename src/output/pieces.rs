//! [`Pieces`]: the SHA-1 of each piece of the download file, for
//! `OUTPUT.torrent` (BEP 3 `info.pieces`), from the download stream the
//! pass hands over: pieces run across chunk boundaries, the last one may
//! be short, and a hole of the raw image is hashed as the zeros it reads
//! as (the pass sends it as zeros).

use sha1::{Digest, Sha1};

use super::sink::{out_of_order, DownloadSink};

/// Bytes of one piece's SHA-1.
pub const PIECE_HASH: usize = 20;

/// Hashes a stream piece by piece.
pub struct Pieces {
    piece: u64,
    sha: Sha1,
    /// Bytes of the current piece hashed so far.
    filled: u64,
    at: u64,
    hashes: Vec<u8>,
    len: Option<u64>,
}

impl Pieces {
    /// Pieces of `piece` bytes (a power of two, at least 16 KiB: see
    /// [`super::torrent::piece_length`]; any non-zero size hashes).
    pub fn new(piece: u64) -> Self {
        Self {
            piece: piece.max(1),
            sha: Sha1::new(),
            filled: 0,
            at: 0,
            hashes: Vec::new(),
            len: None,
        }
    }

    /// The piece length.
    pub fn piece_length(&self) -> u64 {
        self.piece
    }

    /// (stream length, the pieces' hashes end to end), once finished.
    pub fn result(&self) -> Option<(u64, &[u8])> {
        self.len.map(|l| (l, self.hashes.as_slice()))
    }

    fn close_piece(&mut self) {
        let sum = std::mem::take(&mut self.sha).finalize();
        self.hashes.extend_from_slice(&sum);
        self.filled = 0;
    }
}

impl DownloadSink for Pieces {
    fn name(&self) -> String {
        "the torrent's pieces".into()
    }

    fn write(&mut self, offset: u64, mut data: &[u8]) -> std::io::Result<()> {
        if offset != self.at {
            return Err(out_of_order(self.at, offset));
        }
        self.at += data.len() as u64;
        while !data.is_empty() {
            let room = self.piece - self.filled;
            let n = usize::try_from(room).map_or(data.len(), |r| r.min(data.len()));
            let (now, rest) = data.split_at(n);
            self.sha.update(now);
            self.filled += n as u64;
            if self.filled == self.piece {
                self.close_piece();
            }
            data = rest;
        }
        Ok(())
    }

    fn finish(&mut self, len: u64) -> std::io::Result<()> {
        if len != self.at {
            return Err(out_of_order(self.at, len));
        }
        if self.filled > 0 {
            self.close_piece();
        }
        self.len = Some(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1(data: &[u8]) -> Vec<u8> {
        Sha1::digest(data).to_vec()
    }

    /// What a torrent creator computes: SHA-1 of each `piece` bytes.
    fn reference(data: &[u8], piece: usize) -> Vec<u8> {
        data.chunks(piece).flat_map(sha1).collect()
    }

    fn hash_in(data: &[u8], piece: u64, cut: usize) -> Vec<u8> {
        let mut p = Pieces::new(piece);
        let mut at = 0;
        for c in data.chunks(cut) {
            p.write(at, c).expect("in order");
            at += c.len() as u64;
        }
        p.finish(at).expect("complete");
        let (len, h) = p.result().expect("finished");
        assert_eq!(len, data.len() as u64);
        h.to_vec()
    }

    #[test]
    fn pieces_across_chunk_boundaries_and_a_short_last_piece() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 253) as u8).collect();
        // Chunks smaller than, equal to, larger than and unaligned with a
        // piece; 100,000 bytes is 6 pieces of 16 KiB and a short one.
        let want = reference(&data, 16 << 10);
        assert_eq!(want.len(), 7 * PIECE_HASH);
        for cut in [1000, 16 << 10, 40_000, 100_000, 7] {
            assert_eq!(hash_in(&data, 16 << 10, cut), want, "chunks of {cut}");
        }
    }

    #[test]
    fn an_exact_multiple_has_no_empty_last_piece() {
        let data = vec![5u8; 64 << 10];
        let got = hash_in(&data, 16 << 10, 10_000);
        assert_eq!(got.len(), 4 * PIECE_HASH);
        assert_eq!(got, reference(&data, 16 << 10));
    }

    /// A hole reaches the sink as zeros (the pass's shared zero chunk):
    /// its pieces are those of zeros, as a client reading the file sees.
    #[test]
    fn holes_hash_as_zeros() {
        let mut data = vec![0u8; 80 << 10];
        data[..100].fill(1);
        data[(70 << 10)..].fill(2);
        let zero_piece = sha1(&[0u8; 16 << 10]);
        let got = hash_in(&data, 16 << 10, 1 << 12);
        assert_eq!(got, reference(&data, 16 << 10));
        assert_eq!(&got[PIECE_HASH..2 * PIECE_HASH], zero_piece.as_slice());
    }

    #[test]
    fn out_of_order_and_wrong_length_are_refused() {
        let mut p = Pieces::new(16 << 10);
        p.write(0, &[1; 10]).expect("in order");
        assert!(p.write(11, &[1]).is_err());
        assert!(p.finish(12).is_err());
        assert!(p.result().is_none());
    }
}
