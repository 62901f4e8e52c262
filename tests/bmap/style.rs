//! A bmap written the way another tool (or a person) might write it:
//! bmaptool's format 2.0 with other whitespace, either quotes, spaces
//! around `=`, extra attributes before or after the ones bmaptool reads,
//! elements in another order, comments (between elements and inside
//! their text), character references and CDATA in numbers, on one line
//! or many. Every such file is one `bmaptool copy` accepts (checked by
//! tests/bmap.rs). Shared by tests/bmap.rs and tests/verify.rs.

use image_creator::output::Bmap;
use sha2::{Digest, Sha256};

/// Where the file's own checksum goes until [`seal`] computes it.
pub const MARK: &str = "@@BMAP_FILE_CHECKSUM@@";

/// `doc` with its `BmapFileChecksum` (written [`MARK`]) computed as
/// bmaptool checks it: the sha256 of the file with the value as 64 `0`s.
pub fn seal(doc: &str) -> String {
    let zeros = doc.replacen(MARK, &"0".repeat(64), 1);
    let sum = image_creator::io::hex(&Sha256::digest(zeros.as_bytes()));
    doc.replacen(MARK, &sum, 1)
}

/// Layout choices, drawn in turn from a byte string (cycled).
#[derive(Debug, Clone)]
pub struct Style {
    bytes: Vec<u8>,
    at: usize,
    one_line: bool,
    /// The order of the root's seven children (six fields, BlockMap).
    order: Vec<usize>,
}

impl Style {
    /// Choices from `bytes`; `order` is a permutation of `0..7`.
    pub fn new(bytes: Vec<u8>, one_line: bool, order: Vec<usize>) -> Self {
        assert_eq!(order.len(), 7, "seven children");
        Self {
            bytes: if bytes.is_empty() { vec![0] } else { bytes },
            at: 0,
            one_line,
            order,
        }
    }

    fn pick(&mut self, n: usize) -> usize {
        let b = self.bytes[self.at % self.bytes.len()];
        self.at += 1;
        usize::from(b) % n
    }

    /// Whitespace between markup, or inside an element's text.
    fn space(&mut self) -> &'static str {
        let lines = ["", " ", "\t", "\n", "\n    ", "\r\n\t", "  \n\n "];
        let flat = ["", " ", "\t", "   "];
        if self.one_line {
            flat[self.pick(flat.len())]
        } else {
            lines[self.pick(lines.len())]
        }
    }

    /// Nothing, or a comment.
    fn comment(&mut self) -> &'static str {
        let lines = [
            "",
            "",
            "<!-- a comment -->",
            "<!--\n  on two lines -->",
            "<!---->",
        ];
        let flat = ["", "", "<!-- a comment -->", "<!---->"];
        if self.one_line {
            flat[self.pick(flat.len())]
        } else {
            lines[self.pick(lines.len())]
        }
    }

    /// ` name="value"` with either quote, maybe spaces around `=`.
    fn attr(&mut self, name: &str, value: &str) -> String {
        let q = if self.pick(2) == 0 { '"' } else { '\'' };
        let eq = [" = ", "=", " =", "= "][self.pick(4)];
        let lead = [" ", "  "][self.pick(2)];
        format!("{lead}{name}{eq}{q}{value}{q}")
    }

    /// An extra attribute bmaptool ignores (`name`; each name once in a
    /// tag: a repeated attribute is not XML), or nothing.
    fn extra(&mut self, name: &str) -> String {
        match self.pick(3) {
            0 => String::new(),
            1 => self.attr(name, "x"),
            _ => self.attr(name, "1 &amp; 2"),
        }
    }

    /// `n` in decimal: plain, its first digit a character reference
    /// (decimal or hex), in CDATA, or split by a comment.
    fn number(&mut self, n: u64) -> String {
        let s = n.to_string();
        let (head, tail) = s.split_at(1);
        let c = u32::from(head.as_bytes()[0]);
        match self.pick(5) {
            0 => format!("&#{c};{tail}"),
            1 => format!("&#x{c:x};{tail}"),
            2 => format!("<![CDATA[{s}]]>"),
            3 if !tail.is_empty() => format!("{head}<!-- c -->{tail}"),
            _ => s,
        }
    }

    /// An element holding `text`, padded.
    fn element(&mut self, name: &str, text: &str) -> String {
        let (a, b) = (self.space(), self.space());
        format!("<{name}>{a}{text}{b}</{name}>")
    }
}

/// `bmap` written in `style`, sealed.
pub fn write(bmap: &Bmap, style: &mut Style) -> String {
    let mut s = String::new();
    match style.pick(3) {
        0 => {}
        1 => s.push_str("<?xml version=\"1.0\" ?>"),
        _ => s.push_str("<?xml version='1.0' encoding='UTF-8'?>"),
    }
    s.push_str(style.space());
    s.push_str(style.comment());
    s.push_str(style.space());
    let (pre, post) = (style.extra("note"), style.extra("data-z"));
    let version = style.attr("version", "2.0");
    s.push_str(&format!("<bmap{pre}{version}{post}{}>", style.space()));
    let blocks = bmap.image_size.div_ceil(bmap.block_size);
    for child in style.order.clone() {
        s.push_str(style.space());
        s.push_str(style.comment());
        s.push_str(style.space());
        let e = match child {
            0 => {
                let n = style.number(bmap.image_size);
                style.element("ImageSize", &n)
            }
            1 => {
                let n = style.number(bmap.block_size);
                style.element("BlockSize", &n)
            }
            2 => {
                let n = style.number(blocks);
                style.element("BlocksCount", &n)
            }
            3 => {
                let n = style.number(bmap.mapped_count());
                style.element("MappedBlocksCount", &n)
            }
            4 => style.element("ChecksumType", "sha256"),
            5 => {
                let c = style.comment();
                style.element("BmapFileChecksum", &format!("{c}{MARK}"))
            }
            _ => block_map(bmap, style),
        };
        s.push_str(&e);
    }
    s.push_str(style.space());
    s.push_str("</bmap>");
    s.push_str(style.space());
    seal(&s)
}

fn block_map(bmap: &Bmap, style: &mut Style) -> String {
    let mut s = String::from("<BlockMap>");
    for r in &bmap.ranges {
        s.push_str(style.space());
        s.push_str(style.comment());
        let chksum = style.attr("chksum", &r.sha256);
        let (pre, post) = (style.extra("note"), style.extra("data-z"));
        let first = style.number(r.first);
        let span = if r.first == r.last && style.pick(2) == 0 {
            first
        } else {
            let dash = ["-", " - ", "-\t"][style.pick(3)];
            format!("{first}{dash}{}", style.number(r.last))
        };
        let (a, b) = (style.space(), style.space());
        s.push_str(&format!(
            "<Range{pre}{chksum}{post}{a}>{b}{span}{}</Range>",
            style.space()
        ));
    }
    s.push_str(style.space());
    s.push_str("</BlockMap>");
    s
}
