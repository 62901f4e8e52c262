//! Reading a bmap file a user hands us (`verify --bmap`), with an XML
//! parser (quick-xml): whatever layout `bmaptool copy` reads — any
//! whitespace, one line, comments, either quotes, any attribute order,
//! character references — gives the same ranges.
//!
//! It reads what bmaptool reads (`BmapCopy._parse_bmap`,
//! `_get_block_ranges`): the root's `version`, the root's children
//! `ImageSize`, `BlockSize`, `BlocksCount`, `MappedBlocksCount`,
//! `ChecksumType` and `BmapFileChecksum` (text, comments skipped, trimmed),
//! and the `Range` children of `BlockMap` (`FIRST` or `FIRST-LAST`, the
//! `chksum` attribute); other elements and attributes are ignored, as
//! bmaptool ignores them.
//!
//! It fails closed, since a verifier that finds nothing to check must not
//! say "OK": a file that is not well-formed XML, a missing or repeated
//! field, a number, range or checksum it can't read, a checksum type other
//! than sha256, a range without a checksum, counts that disagree (bmaptool
//! refuses those too), a changed file, and a map without ranges are each a
//! [`BmapError`] naming the file and the line.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use sha2::{Digest, Sha256};

use super::{Bmap, BmapRange};

/// A bmap file we can't verify with: the file, the line, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {kind}", path.display())]
pub struct BmapError {
    /// The bmap file.
    pub path: PathBuf,
    /// Line (from 1) of the element or the XML error.
    pub line: usize,
    /// What is wrong.
    pub kind: BmapErrorKind,
}

/// What is wrong with a bmap file.
#[derive(Debug, thiserror::Error)]
pub enum BmapErrorKind {
    /// Not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Xml(#[from] quick_xml::Error),
    /// An element is not closed at the end of the file.
    #[error("<{0}> is not closed")]
    Unclosed(String),
    /// The root element is not `<bmap>`, or there is more than one.
    #[error("<{0}> where a bmap file has one root element, <bmap>")]
    NotBmap(String),
    /// Text outside the root element.
    #[error("text outside the <bmap> element: {0:?}")]
    Stray(String),
    /// A reference to an entity other than XML's five (a DTD's).
    #[error("&{0}; is not one of XML's entities or a character reference")]
    Entity(String),
    /// A version we don't read.
    #[error("bmap format version {0:?}: only 2.x (and 1.4, the same format) is supported")]
    Version(String),
    /// `<bmap>` without `version`.
    #[error("<bmap> has no version attribute")]
    NoVersion,
    /// A required element is missing.
    #[error("no <{0}> element")]
    Missing(&'static str),
    /// An element bmaptool reads once appears twice.
    #[error("a second <{0}>")]
    Duplicate(&'static str),
    /// An element that holds text holds an element.
    #[error("<{inner}> inside <{outer}>, which holds text only")]
    Nested {
        /// The element holding text.
        outer: &'static str,
        /// The element found in it.
        inner: String,
    },
    /// A field that is not a number.
    #[error("<{field}> is not a number: {text:?}")]
    Number {
        /// The field.
        field: &'static str,
        /// Its text.
        text: String,
    },
    /// `BlockSize` 0.
    #[error("<BlockSize> is 0")]
    ZeroBlockSize,
    /// `BlocksCount` that does not match the image size.
    #[error("<BlocksCount> is {said}; <ImageSize> and <BlockSize> make {computed}")]
    BlocksCount {
        /// What the file says.
        said: u64,
        /// ceil(ImageSize / BlockSize).
        computed: u64,
    },
    /// A checksum type other than sha256.
    #[error("checksum type {0:?}: only sha256 is supported")]
    ChecksumType(String),
    /// A `BmapFileChecksum` that is not 64 lowercase hex digits.
    #[error("<BmapFileChecksum> is not a sha256 (64 lowercase hex digits): {0:?}")]
    FileChecksum(String),
    /// The file's own checksum does not match.
    #[error("the file's checksum is {actual}, it says {expected}: the bmap file was changed")]
    Changed {
        /// What the file says.
        expected: String,
        /// What its bytes give.
        actual: String,
    },
    /// A `Range` whose text is not `FIRST` or `FIRST-LAST`.
    #[error("<Range> {0:?} is not FIRST or FIRST-LAST (block numbers, first <= last)")]
    RangeText(String),
    /// A `Range` past the image's end.
    #[error("<Range> {first}-{last} is outside the image's {blocks} blocks")]
    RangeOutside {
        /// First block.
        first: u64,
        /// Last block.
        last: u64,
        /// Blocks in the image.
        blocks: u64,
    },
    /// A `Range` without `chksum`: it could not be verified.
    #[error("<Range> {0:?} has no chksum attribute: it can't be verified")]
    RangeNoChecksum(String),
    /// A `chksum` that is not a sha256.
    #[error("<Range> chksum {0:?} is not a sha256 (64 hex digits)")]
    RangeChecksum(String),
    /// `MappedBlocksCount` that does not match the ranges.
    #[error("<MappedBlocksCount> is {said}, the ranges hold {counted} blocks")]
    MappedCount {
        /// What the file says.
        said: u64,
        /// The ranges' blocks.
        counted: u64,
    },
    /// A `BlockMap` without a `Range`.
    #[error("<BlockMap> has no <Range>: nothing to verify")]
    NoRanges,
}

/// The root's children read as text (bmaptool's `xml.find(NAME).text`),
/// indexed by the constants below.
const FIELDS: [&str; 6] = [
    "ImageSize",
    "BlockSize",
    "BlocksCount",
    "MappedBlocksCount",
    "ChecksumType",
    "BmapFileChecksum",
];
const IMAGE_SIZE: usize = 0;
const BLOCK_SIZE: usize = 1;
const BLOCKS_COUNT: usize = 2;
const MAPPED_BLOCKS_COUNT: usize = 3;
const CHECKSUM_TYPE: usize = 4;
const BMAP_FILE_CHECKSUM: usize = 5;

/// A text read from the file and the line its element starts on.
#[derive(Debug, Clone)]
struct Text {
    text: String,
    line: usize,
}

/// A `Range` as written.
#[derive(Debug)]
struct RawRange {
    span: Text,
    chksum: Option<String>,
}

/// What the XML holds, before it is checked.
#[derive(Debug, Default)]
struct Raw {
    /// The root's `version` (and the root's line).
    version: Option<Text>,
    root_line: usize,
    /// [`FIELDS`], in that order.
    fields: [Option<Text>; 6],
    /// The line of `<BlockMap>`.
    block_map: Option<usize>,
    ranges: Vec<RawRange>,
}

/// Where a text being collected goes.
#[derive(Debug, Clone, Copy)]
enum Collect {
    /// [`FIELDS`]`[i]`.
    Field(usize),
    /// The last range.
    Range,
}

/// Line numbers of byte offsets, counted forward (offsets only grow).
struct Lines<'a> {
    text: &'a [u8],
    at: usize,
    line: usize,
}

impl Lines<'_> {
    fn of(&mut self, offset: u64) -> usize {
        let offset = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        if offset < self.at {
            // Not expected (offsets grow); count again from the start.
            self.at = 0;
            self.line = 1;
        }
        let newlines = self.text[self.at..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line += newlines;
        self.at = offset;
        self.line
    }
}

/// The XML walk: the open elements, and the text being collected.
struct Walk<'a> {
    path: &'a Path,
    lines: Lines<'a>,
    /// Names of the open elements, the root first.
    open: Vec<String>,
    /// Where text goes while a field or range is open.
    collecting: Option<Collect>,
    seen_root: bool,
    raw: Raw,
}

impl Bmap {
    /// Parse a bmap file (`path` names it in errors): version 2.x with
    /// sha256 range checksums; the file's own checksum is checked too. See
    /// the module's documentation for what is read and what is refused.
    pub fn parse(path: &Path, text: &str) -> Result<Self, BmapError> {
        let raw = Walk::new(path, text).run(text)?;
        check(path, text, raw)
    }
}

impl<'a> Walk<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        Self {
            path,
            lines: Lines {
                text: text.as_bytes(),
                at: 0,
                line: 1,
            },
            open: Vec::new(),
            collecting: None,
            seen_root: false,
            raw: Raw::default(),
        }
    }

    fn err(&mut self, offset: u64, kind: BmapErrorKind) -> BmapError {
        BmapError {
            path: self.path.to_path_buf(),
            line: self.lines.of(offset),
            kind,
        }
    }

    /// Every event of `text`, then what was found.
    fn run(mut self, text: &'a str) -> Result<Raw, BmapError> {
        let mut reader = Reader::from_str(text);
        loop {
            let at = reader.buffer_position();
            let event = match reader.read_event() {
                Ok(e) => e,
                Err(e) => return Err(self.err(reader.error_position(), e.into())),
            };
            if matches!(event, Event::Eof) {
                break;
            }
            self.event(event, &reader, at)
                .map_err(|kind| self.err(at, kind))?;
        }
        let end = u64::try_from(text.len()).unwrap_or(u64::MAX);
        if let Some(name) = self.open.last().cloned() {
            return Err(self.err(end, BmapErrorKind::Unclosed(name)));
        }
        if !self.seen_root {
            return Err(self.err(end, BmapErrorKind::Missing("bmap")));
        }
        Ok(self.raw)
    }

    /// One event, at byte `at`.
    fn event(
        &mut self,
        event: Event<'_>,
        reader: &Reader<&[u8]>,
        at: u64,
    ) -> Result<(), BmapErrorKind> {
        match event {
            Event::Start(e) => self.start(&e, reader, at),
            Event::Empty(e) => {
                self.start(&e, reader, at)?;
                self.end();
                Ok(())
            }
            Event::End(_) => {
                self.end();
                Ok(())
            }
            Event::Text(t) => self.text(&t.xml10_content().map_err(quick_xml::Error::from)?),
            Event::CData(t) => self.text(&t.xml10_content().map_err(quick_xml::Error::from)?),
            Event::GeneralRef(r) => self.text(&resolve(&r)?),
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) | Event::Eof => {
                Ok(())
            }
        }
    }

    /// An element opens at `at`.
    fn start(
        &mut self,
        e: &BytesStart<'_>,
        reader: &Reader<&[u8]>,
        at: u64,
    ) -> Result<(), BmapErrorKind> {
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        let line = self.lines.of(at);
        let parent = self.open.last().map(String::as_str);
        match (self.open.len(), parent, self.collecting) {
            (_, _, Some(into)) => {
                let outer = match into {
                    Collect::Field(i) => FIELDS[i],
                    Collect::Range => "Range",
                };
                return Err(BmapErrorKind::Nested { outer, inner: name });
            }
            (0, _, _) => {
                if self.seen_root || name != "bmap" {
                    return Err(BmapErrorKind::NotBmap(name));
                }
                self.seen_root = true;
                self.raw.root_line = line;
                self.raw.version = attribute(e, reader, "version")?.map(|text| Text { text, line });
            }
            (1, _, _) => {
                if let Some(i) = FIELDS.iter().position(|f| *f == name) {
                    if self.raw.fields[i].is_some() {
                        return Err(BmapErrorKind::Duplicate(FIELDS[i]));
                    }
                    self.raw.fields[i] = Some(Text {
                        text: String::new(),
                        line,
                    });
                    self.collecting = Some(Collect::Field(i));
                } else if name == "BlockMap" {
                    if self.raw.block_map.is_some() {
                        return Err(BmapErrorKind::Duplicate("BlockMap"));
                    }
                    self.raw.block_map = Some(line);
                }
            }
            (2, Some("BlockMap"), _) if name == "Range" => {
                let chksum = attribute(e, reader, "chksum")?;
                self.raw.ranges.push(RawRange {
                    span: Text {
                        text: String::new(),
                        line,
                    },
                    chksum,
                });
                self.collecting = Some(Collect::Range);
            }
            // Elements bmaptool does not read.
            _ => {}
        }
        self.open.push(name);
        Ok(())
    }

    /// The innermost element closes (quick-xml checks the names match).
    fn end(&mut self) {
        self.open.pop();
        self.collecting = None;
    }

    /// Text (comments already left out: the text around one joins, as
    /// in bmaptool's ElementTree).
    fn text(&mut self, s: &str) -> Result<(), BmapErrorKind> {
        let slot = match self.collecting {
            Some(Collect::Field(i)) => self.raw.fields[i].as_mut(),
            Some(Collect::Range) => self.raw.ranges.last_mut().map(|r| &mut r.span),
            None if self.open.is_empty() && !s.trim().is_empty() => {
                return Err(BmapErrorKind::Stray(s.trim().chars().take(40).collect()));
            }
            None => None,
        };
        if let Some(t) = slot {
            t.text.push_str(s);
        }
        Ok(())
    }
}

/// `&name;` or `&#N;` as text: the five predefined entities and character
/// references; anything else (a DTD's entities) is refused.
fn resolve(r: &BytesRef<'_>) -> Result<Cow<'static, str>, BmapErrorKind> {
    if let Some(c) = r.resolve_char_ref()? {
        return Ok(Cow::Owned(c.to_string()));
    }
    let name = r.decode().map_err(quick_xml::Error::from)?;
    match quick_xml::escape::resolve_predefined_entity(&name) {
        Some(s) => Ok(Cow::Borrowed(s)),
        None => Err(BmapErrorKind::Entity(name.into_owned())),
    }
}

/// The value of attribute `key` of `e` (any quotes, references resolved);
/// malformed or repeated attributes are errors.
fn attribute(
    e: &BytesStart<'_>,
    reader: &Reader<&[u8]>,
    key: &str,
) -> Result<Option<String>, BmapErrorKind> {
    let mut found = None;
    for a in e.attributes().with_checks(true) {
        let a = a.map_err(quick_xml::Error::from)?;
        if a.key.as_ref() == key.as_bytes() {
            let v = a.decoded_and_normalized_value(XmlVersion::Implicit1_0, reader.decoder())?;
            found = Some(v.into_owned());
        }
    }
    Ok(found)
}

/// What the walk found, checked field by field.
struct Found<'a> {
    path: &'a Path,
    raw: Raw,
}

impl Found<'_> {
    fn err(&self, line: usize, kind: BmapErrorKind) -> BmapError {
        BmapError {
            path: self.path.to_path_buf(),
            line,
            kind,
        }
    }

    /// [`FIELDS`]`[i]`, required.
    fn field(&self, i: usize) -> Result<&Text, BmapError> {
        self.raw.fields[i]
            .as_ref()
            .ok_or_else(|| self.err(self.raw.root_line, BmapErrorKind::Missing(FIELDS[i])))
    }

    /// [`FIELDS`]`[i]` as a number, and its line.
    fn number(&self, i: usize) -> Result<(u64, usize), BmapError> {
        let t = self.field(i)?;
        let text = t.text.trim();
        let not_a_number = || BmapErrorKind::Number {
            field: FIELDS[i],
            text: text.into(),
        };
        match text.parse() {
            Ok(n) => Ok((n, t.line)),
            Err(_) => Err(self.err(t.line, not_a_number())),
        }
    }
}

/// Check what the walk found and make the [`Bmap`].
fn check(path: &Path, text: &str, raw: Raw) -> Result<Bmap, BmapError> {
    let f = Found { path, raw };
    let version = f
        .raw
        .version
        .as_ref()
        .ok_or_else(|| f.err(f.raw.root_line, BmapErrorKind::NoVersion))?;
    // bmaptool reads MAJOR.MINOR as two integers; 1.4 is 2.0 by another
    // number (a release mistake, says bmaptool).
    let v = version.text.trim();
    let minor = v.strip_prefix("2.").unwrap_or("");
    let two = !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit());
    if !(two || v == "1.4") {
        return Err(f.err(version.line, BmapErrorKind::Version(v.into())));
    }
    let kind = f.field(CHECKSUM_TYPE)?;
    if !kind.text.trim().eq_ignore_ascii_case("sha256") {
        let named = kind.text.trim().into();
        return Err(f.err(kind.line, BmapErrorKind::ChecksumType(named)));
    }
    let (image_size, _) = f.number(IMAGE_SIZE)?;
    let (block_size, line) = f.number(BLOCK_SIZE)?;
    if block_size == 0 {
        return Err(f.err(line, BmapErrorKind::ZeroBlockSize));
    }
    let blocks = image_size.div_ceil(block_size);
    let (said, line) = f.number(BLOCKS_COUNT)?;
    if said != blocks {
        let kind = BmapErrorKind::BlocksCount {
            said,
            computed: blocks,
        };
        return Err(f.err(line, kind));
    }
    let stated = f.field(BMAP_FILE_CHECKSUM)?;
    check_file_checksum(text, stated).map_err(|kind| f.err(stated.line, kind))?;
    let block_map = f
        .raw
        .block_map
        .ok_or_else(|| f.err(f.raw.root_line, BmapErrorKind::Missing("BlockMap")))?;
    let mut ranges = Vec::with_capacity(f.raw.ranges.len());
    let mut counted = 0u64;
    for r in &f.raw.ranges {
        let range = check_range(r, blocks).map_err(|kind| f.err(r.span.line, kind))?;
        counted = counted.saturating_add(range.last - range.first + 1);
        ranges.push(range);
    }
    if ranges.is_empty() {
        return Err(f.err(block_map, BmapErrorKind::NoRanges));
    }
    let (said, line) = f.number(MAPPED_BLOCKS_COUNT)?;
    if said != counted {
        return Err(f.err(line, BmapErrorKind::MappedCount { said, counted }));
    }
    Ok(Bmap {
        image_size,
        block_size,
        ranges,
    })
}

/// The file's own checksum, as bmaptool checks it: the sha256 of the file
/// with the first occurrence of the stated checksum replaced by `0`s.
fn check_file_checksum(text: &str, stated: &Text) -> Result<(), BmapErrorKind> {
    let expected = stated.text.trim();
    if !is_sha256(expected) || expected.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(BmapErrorKind::FileChecksum(expected.into()));
    }
    let zeroed = text.replacen(expected, &"0".repeat(64), 1);
    let actual = crate::io::hex(&Sha256::digest(zeroed.as_bytes()));
    if actual == expected {
        Ok(())
    } else {
        Err(BmapErrorKind::Changed {
            expected: expected.into(),
            actual,
        })
    }
}

/// One range, read as bmaptool reads it (split at the first `-`, each
/// side trimmed), inside the image's `blocks`, with its sha256.
fn check_range(r: &RawRange, blocks: u64) -> Result<BmapRange, BmapErrorKind> {
    let span = r.span.text.trim();
    let bad = || BmapErrorKind::RangeText(span.into());
    let (first, last) = match span.split_once('-') {
        Some((a, b)) => (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        ),
        None => {
            let n = span.parse().map_err(|_| bad())?;
            (n, n)
        }
    };
    if first > last {
        return Err(bad());
    }
    if last >= blocks {
        return Err(BmapErrorKind::RangeOutside {
            first,
            last,
            blocks,
        });
    }
    let sha256 = r
        .chksum
        .as_ref()
        .ok_or_else(|| BmapErrorKind::RangeNoChecksum(span.into()))?;
    if !is_sha256(sha256) {
        return Err(BmapErrorKind::RangeChecksum(sha256.clone()));
    }
    Ok(BmapRange {
        first,
        last,
        sha256: sha256.to_ascii_lowercase(),
    })
}

/// 64 hex digits.
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: &str = "@@SUM@@";

    /// `doc` with its `BmapFileChecksum` (written [`MARK`]) computed.
    fn sealed(doc: &str) -> String {
        let zeros = doc.replacen(MARK, &"0".repeat(64), 1);
        let sum = crate::io::hex(&Sha256::digest(zeros.as_bytes()));
        doc.replacen(MARK, &sum, 1)
    }

    /// A valid bmap of a 3-block image, one element a line, unsealed.
    fn template() -> String {
        [
            "<?xml version='1.0'?>",
            "<bmap version='2.0'>",
            "<ImageSize>10000</ImageSize>",
            "<BlockSize>4096</BlockSize>",
            "<BlocksCount>3</BlocksCount>",
            "<MappedBlocksCount>3</MappedBlocksCount>",
            "<ChecksumType>sha256</ChecksumType>",
            &format!("<BmapFileChecksum>{MARK}</BmapFileChecksum>"),
            "<BlockMap>",
            &format!("<Range chksum='{}'>0-1</Range>", "a".repeat(64)),
            &format!("<Range chksum='{}'>2</Range>", "b".repeat(64)),
            "</BlockMap>",
            "</bmap>",
        ]
        .join("\n")
    }

    /// The template with `from` replaced by `to`, sealed.
    fn with(from: &str, to: &str) -> String {
        let t = template();
        assert!(t.contains(from), "{from:?} is in the template");
        sealed(&t.replacen(from, to, 1))
    }

    fn refused(text: &str) -> BmapError {
        match Bmap::parse(Path::new("t.bmap"), text) {
            Ok(b) => panic!("accepted: {b:?}\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_template_parses_and_what_bmaptool_ignores_is_ignored() {
        let b = Bmap::parse(Path::new("t.bmap"), &sealed(&template())).expect("valid");
        assert_eq!(
            (b.image_size, b.block_size, b.ranges.len()),
            (10000, 4096, 2)
        );
        assert_eq!((b.ranges[1].first, b.ranges[1].last), (2, 2));
        // Version 1.4 (= 2.0), other attributes, elements bmaptool does not
        // read (a Range outside BlockMap, text and elements in BlockMap).
        let other = template()
            .replacen("version='2.0'", "version='1.4' xmlns:z='u'", 1)
            .replacen(
                "<BlockMap>",
                "<Other><Range>9</Range></Other><BlockMap>x<Note a='1'/>",
                1,
            );
        let c = Bmap::parse(Path::new("t.bmap"), &sealed(&other));
        assert_eq!(c.ok(), Some(b));
    }

    #[test]
    fn quotes_spacing_comments_references_and_cdata_read_the_same() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let map = format!(
            "<BlockMap><!-- one line --><Range other=\"x\"  chksum = \"{a}\" >\t0<!-- c -->-&#49; </Range>\
             <Range chksum='{b}'><![CDATA[ 2 ]]></Range></BlockMap>"
        );
        let t = template();
        let start = t.find("<BlockMap>").expect("map");
        let end = t.find("</BlockMap>").expect("map end") + "</BlockMap>".len();
        let doc = format!("{}{map}{}", &t[..start], &t[end..]).replace('\n', " ");
        let got = Bmap::parse(Path::new("t.bmap"), &sealed(&doc)).expect("valid");
        let want = [(0, 1, "a".repeat(64)), (2, 2, "b".repeat(64))];
        let got: Vec<_> = got
            .ranges
            .into_iter()
            .map(|r| (r.first, r.last, r.sha256))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn errors_name_the_line_of_the_element() {
        let e = refused(&with(
            &format!("<Range chksum='{}'>2", "b".repeat(64)),
            "<Range>2",
        ));
        assert!(matches!(e.kind, BmapErrorKind::RangeNoChecksum(_)), "{e}");
        assert_eq!(e.line, 11, "{e}");
        assert!(e.to_string().starts_with("t.bmap:11: "), "{e}");
        let e = refused(&with(
            "<ImageSize>10000</ImageSize>",
            "<ImageSize>10000</Image>",
        ));
        assert!(matches!(e.kind, BmapErrorKind::Xml(_)), "{e}");
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn fails_closed() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let ranges = format!("<Range chksum='{a}'>0-1</Range>\n<Range chksum='{b}'>2</Range>");
        type Expected = fn(&BmapErrorKind) -> bool;
        let cases: Vec<(String, Expected)> = vec![
            (with(&ranges, ""), |k| matches!(k, BmapErrorKind::NoRanges)),
            (
                with(&format!("<BlockMap>\n{ranges}\n</BlockMap>"), "<BlockMap/>"),
                |k| matches!(k, BmapErrorKind::NoRanges),
            ),
            (
                with(&format!("<BlockMap>\n{ranges}\n</BlockMap>"), ""),
                |k| matches!(k, BmapErrorKind::Missing("BlockMap")),
            ),
            (with(&format!("'{a}'"), "'abc'"), |k| {
                matches!(k, BmapErrorKind::RangeChecksum(_))
            }),
            (with(">0-1<", ">x<"), |k| {
                matches!(k, BmapErrorKind::RangeText(_))
            }),
            (with(">0-1<", ">1-0<"), |k| {
                matches!(k, BmapErrorKind::RangeText(_))
            }),
            (with(">0-1<", ">0-<"), |k| {
                matches!(k, BmapErrorKind::RangeText(_))
            }),
            (with(">0-1<", "><"), |k| {
                matches!(k, BmapErrorKind::RangeText(_))
            }),
            (with(">2<", ">3<"), |k| {
                matches!(k, BmapErrorKind::RangeOutside { .. })
            }),
            (with(">sha256<", ">md5<"), |k| {
                matches!(k, BmapErrorKind::ChecksumType(_))
            }),
            (with("<ChecksumType>sha256</ChecksumType>", ""), |k| {
                matches!(k, BmapErrorKind::Missing("ChecksumType"))
            }),
            (with("version='2.0'", "version='3.0'"), |k| {
                matches!(k, BmapErrorKind::Version(_))
            }),
            (with("version='2.0'", "version='2.x'"), |k| {
                matches!(k, BmapErrorKind::Version(_))
            }),
            (with(" version='2.0'", ""), |k| {
                matches!(k, BmapErrorKind::NoVersion)
            }),
            (with(">3</BlocksCount>", ">4</BlocksCount>"), |k| {
                matches!(k, BmapErrorKind::BlocksCount { .. })
            }),
            (with(">3</Mapped", ">2</Mapped"), |k| {
                matches!(k, BmapErrorKind::MappedCount { .. })
            }),
            (with(">4096<", ">0<"), |k| {
                matches!(k, BmapErrorKind::ZeroBlockSize)
            }),
            (with(">10000<", "> 1_0000 <"), |k| {
                matches!(k, BmapErrorKind::Number { .. })
            }),
            (
                with("<BlockSize>", "<ImageSize>10000</ImageSize><BlockSize>"),
                |k| matches!(k, BmapErrorKind::Duplicate("ImageSize")),
            ),
            (with(">10000<", "><b/>10000<"), |k| {
                matches!(k, BmapErrorKind::Nested { .. })
            }),
            (with(">10000<", ">&big;<"), |k| {
                matches!(k, BmapErrorKind::Entity(_))
            }),
            (with("<bmap ", "<map "), |k| {
                matches!(k, BmapErrorKind::Xml(_) | BmapErrorKind::NotBmap(_))
            }),
            (with("</bmap>", "</bmap><bmap version='2.0'/>"), |k| {
                matches!(k, BmapErrorKind::NotBmap(_))
            }),
            (with("</bmap>", "</bmap>junk"), |k| {
                matches!(k, BmapErrorKind::Stray(_))
            }),
            (with("</bmap>", ""), |k| {
                matches!(k, BmapErrorKind::Unclosed(_))
            }),
            (template().replacen(MARK, &"c".repeat(64), 1), |k| {
                matches!(k, BmapErrorKind::Changed { .. })
            }),
            (with(MARK, "abc"), |k| {
                matches!(k, BmapErrorKind::FileChecksum(_))
            }),
        ];
        for (text, expected) in cases {
            let e = refused(&text);
            assert!(expected(&e.kind), "unexpected error {e}\n{text}");
            assert!(e.line >= 1, "{e}");
        }
    }
}
