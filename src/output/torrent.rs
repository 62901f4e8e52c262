//! `OUTPUT.torrent` (`--torrent`): a BitTorrent v1 metainfo file (BEP 3)
//! for the download file, single-file mode, with web seeds (BEP 19
//! `url-list`) and trackers (`announce`, BEP 12 `announce-list`). The
//! pieces come from the output pass ([`super::pieces::Pieces`]); this
//! file picks the piece length and writes the bencoded dictionary
//! (serde_bencode sorts every dictionary's keys, as BEP 3 requires).

use serde::Serialize;

/// The smallest piece length: 16 KiB, BitTorrent's block (the unit of a
/// peer request, BEP 3), below which no common creator goes.
pub const MIN_PIECE: u64 = 16 << 10;
/// The largest piece length the automatic rule picks: 16 MiB (mktorrent's
/// and libtorrent's ceilings are in this range; larger pieces make a peer
/// re-download more for one bad byte). `--piece-size` may go beyond it.
pub const MAX_AUTO_PIECE: u64 = 16 << 20;
/// The most pieces the automatic rule aims at: 2,000, about libtorrent's
/// target (a ~40 KB `pieces` string); the rule gives 1,001 to 2,000
/// pieces between its bounds.
pub const TARGET_PIECES: u64 = 2000;

/// `--piece-size` values a torrent may have: a power of two from
/// [`MIN_PIECE`] to 512 MiB (libtorrent refuses a piece length of 1 GiB
/// or more when it loads a torrent).
pub fn valid_piece_size(n: u64) -> bool {
    n.is_power_of_two() && (MIN_PIECE..=512 << 20).contains(&n)
}

/// The piece length for a file of `size` bytes: the smallest power of two
/// that makes at most [`TARGET_PIECES`] pieces, kept between
/// [`MIN_PIECE`] and [`MAX_AUTO_PIECE`]. So 1 GiB gets 1 MiB pieces (1,024
/// of them), 4 GiB 4 MiB (1,024), anything over 15.6 GiB (2,000 × 8 MiB)
/// 16 MiB (a 1 TB file: 59,605 pieces, 1.2 MB of hashes), anything up to
/// 31.25 MiB (2,000 × 16 KiB) 16 KiB.
pub fn piece_length(size: u64) -> u64 {
    size.div_ceil(TARGET_PIECES)
        .checked_next_power_of_two()
        .unwrap_or(MAX_AUTO_PIECE)
        .clamp(MIN_PIECE, MAX_AUTO_PIECE)
}

/// What `--torrent` was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TorrentOptions {
    /// `--webseed URL`, in order: BEP 19 `url-list`. A URL ending in `/`
    /// is a directory (clients append the file's name); else the file.
    pub webseeds: Vec<String>,
    /// `--tracker URL`, in order: `announce` is the first, `announce-list`
    /// has each in a tier of its own (tried in order). None is valid: the
    /// web seeds alone serve the file.
    pub trackers: Vec<String>,
    /// `--piece-size`; default [`piece_length`] of the file's size.
    pub piece_size: Option<u64>,
}

/// `created by`.
pub const CREATED_BY: &str = concat!("image-creator ", env!("CARGO_PKG_VERSION"));

/// One torrent, ready to be written.
#[derive(Debug, Clone)]
pub struct Torrent<'a> {
    /// The download file's name (`info.name`).
    pub name: &'a str,
    /// Its length in bytes.
    pub length: u64,
    /// The piece length.
    pub piece_length: u64,
    /// The pieces' SHA-1s end to end (20 bytes each).
    pub pieces: &'a [u8],
    /// Web seeds, trackers.
    pub options: &'a TorrentOptions,
    /// `creation date` (seconds since the epoch); None leaves it out.
    pub creation_date: Option<i64>,
}

#[derive(Serialize)]
struct Metainfo<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    announce: Option<&'a str>,
    #[serde(rename = "announce-list", skip_serializing_if = "Vec::is_empty")]
    announce_list: Vec<Vec<&'a str>>,
    #[serde(rename = "created by")]
    created_by: &'a str,
    #[serde(rename = "creation date", skip_serializing_if = "Option::is_none")]
    creation_date: Option<i64>,
    info: Info<'a>,
    #[serde(rename = "url-list", skip_serializing_if = "Vec::is_empty")]
    url_list: Vec<&'a str>,
}

#[derive(Serialize)]
struct Info<'a> {
    length: u64,
    name: &'a str,
    #[serde(rename = "piece length")]
    piece_length: u64,
    #[serde(with = "serde_bytes")]
    pieces: &'a [u8],
}

/// The torrent could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("encoding the torrent of {name}: {source}")]
pub struct TorrentError {
    /// The download file's name.
    pub name: String,
    /// Why.
    #[source]
    pub source: serde_bencode::Error,
}

impl Torrent<'_> {
    /// The bencoded metainfo file.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TorrentError> {
        let o = self.options;
        let m = Metainfo {
            announce: o.trackers.first().map(String::as_str),
            announce_list: o.trackers.iter().map(|t| vec![t.as_str()]).collect(),
            created_by: CREATED_BY,
            creation_date: self.creation_date,
            info: Info {
                length: self.length,
                name: self.name,
                piece_length: self.piece_length,
                pieces: self.pieces,
            },
            url_list: o.webseeds.iter().map(String::as_str).collect(),
        };
        serde_bencode::to_bytes(&m).map_err(|source| TorrentError {
            name: self.name.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bencode::value::Value;

    #[test]
    fn piece_length_rule() {
        const KIB: u64 = 1 << 10;
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        for (size, want) in [
            (0, 16 * KIB),
            (1, 16 * KIB),
            (31 * MIB, 16 * KIB),
            (32 * MIB, 32 * KIB),
            (GIB, MIB),
            (2000 * MIB, MIB),
            (2000 * MIB + 1, 2 * MIB),
            (4 * GIB, 4 * MIB),
            (32 * GIB, 16 * MIB),
            (1_000_000_000_000, 16 * MIB),
            (u64::MAX, 16 * MIB),
        ] {
            assert_eq!(piece_length(size), want, "size {size}");
        }
        // Between the bounds: 1,001 to 2,000 pieces.
        for size in [100 * MIB, 3 * GIB + 12_345, 20 * GIB] {
            let n = size.div_ceil(piece_length(size));
            assert!((1001..=2000).contains(&n), "{size}: {n} pieces");
        }
        assert!(valid_piece_size(16 * KIB) && valid_piece_size(512 * MIB));
        for bad in [0, 8 * KIB, 48 * KIB, GIB] {
            assert!(!valid_piece_size(bad), "{bad}");
        }
    }

    fn dict(v: &Value) -> &std::collections::HashMap<Vec<u8>, Value> {
        match v {
            Value::Dict(d) => d,
            other => panic!("not a dictionary: {other:?}"),
        }
    }

    fn text(v: &Value) -> &[u8] {
        match v {
            Value::Bytes(b) => b,
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn metainfo_fields_in_sorted_order() {
        let options = TorrentOptions {
            webseeds: vec!["http://a/x.img".into(), "http://b/".into()],
            trackers: vec!["udp://t1:6969".into(), "http://t2/announce".into()],
            piece_size: None,
        };
        let pieces = [7u8; 40];
        let t = Torrent {
            name: "x.img",
            length: 20_000,
            piece_length: 16 << 10,
            pieces: &pieces,
            options: &options,
            creation_date: Some(1_700_000_000),
        };
        let bytes = t.to_bytes().expect("encodes");
        let s = String::from_utf8_lossy(&bytes);
        // BEP 3: keys sorted as raw strings, at both levels.
        let order = [
            "8:announce",
            "13:announce-list",
            "10:created by",
            "13:creation date",
            "4:info",
            "6:length",
            "4:name",
            "12:piece length",
            "6:pieces40:",
            "8:url-list",
        ];
        let mut at = 0;
        for key in order {
            let i = s[at..]
                .find(key)
                .unwrap_or_else(|| panic!("{key} after {at}: {s}"));
            at += i + key.len();
        }
        assert!(s.starts_with("d8:announce13:udp://t1:6969"), "{s}");
        assert!(s.contains("13:creation datei1700000000e"), "{s}");
        let v: Value = serde_bencode::from_bytes(&bytes).expect("decodes");
        let top = dict(&v);
        let info = dict(&top[&b"info"[..]]);
        assert_eq!(text(&info[&b"name"[..]]), b"x.img");
        assert_eq!(info[&b"length"[..]], Value::Int(20_000));
        assert_eq!(text(&info[&b"pieces"[..]]), &pieces[..]);
        assert_eq!(
            top[&b"announce-list"[..]],
            Value::List(vec![
                Value::List(vec![Value::Bytes(b"udp://t1:6969".to_vec())]),
                Value::List(vec![Value::Bytes(b"http://t2/announce".to_vec())]),
            ])
        );
        assert_eq!(text(&top[&b"created by"[..]]), CREATED_BY.as_bytes());
    }

    #[test]
    fn no_tracker_no_webseed_no_date() {
        let options = TorrentOptions::default();
        let t = Torrent {
            name: "y",
            length: 1,
            piece_length: 16 << 10,
            pieces: &[0; 20],
            options: &options,
            creation_date: None,
        };
        let bytes = t.to_bytes().expect("encodes");
        let v: Value = serde_bencode::from_bytes(&bytes).expect("decodes");
        let mut keys: Vec<_> = dict(&v).keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, [b"created by".to_vec(), b"info".to_vec()]);
    }
}
