//! Bounds a YAML document must meet before it reaches the YAML parser
//! (configs, the cache's `policy.yaml`), checked by one linear scan.
//!
//! - **Size:** [`MAX_YAML_BYTES`].
//! - **Nesting:** libyaml (under `serde_norway`) re-checks its stack of
//!   possible simple keys for every token, so a document nested N deep
//!   costs O(N²): measured on this code, 64,000 `[` took 6.5 s, and a
//!   1 MiB one would take about half an hour. The scan refuses anything
//!   nested deeper than [`MAX_DEPTH`].
//! - **Aliases:** `*name` replays an anchored node wherever it is used,
//!   and `serde_norway` only caps the number of replays (100 × the
//!   document's events), not their size, so ten levels of ten aliases
//!   each (the "billion laughs") or one large anchor used many times
//!   expand to gigabytes. A config is plain data: aliases are refused.
//!
//! The scan follows YAML 1.2 closely enough to count honestly: comments,
//! single- and double-quoted scalars (which may span lines) and block
//! scalars (`|`, `>`) are skipped, so brackets, `*` and `#` inside text
//! don't count; flow brackets count only where a node may start (or
//! anywhere inside a flow collection, where plain scalars can't hold them).
//! When in doubt it counts a level too many, never one too few.

/// Largest YAML document accepted: 16 MiB. Real configs are a few KiB;
/// inline `content` makes some larger. Parsing 50 MiB into one scalar
/// took 0.85 s here, so 16 MiB bounds time and memory comfortably.
pub const MAX_YAML_BYTES: usize = 16 << 20;

/// Deepest nesting accepted (block indentation levels, compact `- `
/// entries and flow brackets together). A config needs about 5; an
/// `offspot` mapping a few more. `serde_norway` itself stops at 128.
pub const MAX_DEPTH: usize = 64;

/// Why a document was refused, with the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlBoundError {
    /// Too large.
    #[error("{len} bytes is over the limit of {MAX_YAML_BYTES} bytes")]
    TooLarge {
        /// The document's length.
        len: usize,
    },
    /// Nested too deeply.
    #[error("line {line}: nested more than {MAX_DEPTH} levels deep")]
    TooDeep {
        /// Where.
        line: usize,
    },
    /// An alias.
    #[error("line {line}: YAML aliases (*name) are not supported")]
    Alias {
        /// Where.
        line: usize,
    },
}

/// Check `text` against the bounds above.
pub fn check_yaml_bounds(text: &str) -> Result<(), YamlBoundError> {
    if text.len() > MAX_YAML_BYTES {
        return Err(YamlBoundError::TooLarge { len: text.len() });
    }
    let mut s = Scan::default();
    for (i, line) in text.split('\n').enumerate() {
        s.line(line.as_bytes(), i + 1)?;
    }
    Ok(())
}

/// Where the scan is between lines.
#[derive(Debug, Default)]
struct Scan {
    /// Inside a quoted scalar that continues on the next line.
    quote: Option<u8>,
    /// Inside a block scalar whose parent line had this indentation.
    block_scalar: Option<usize>,
    /// Open flow collections.
    flow: usize,
    /// Indentations of the enclosing block nodes.
    indents: Vec<usize>,
}

impl Scan {
    fn line(&mut self, line: &[u8], no: usize) -> Result<(), YamlBoundError> {
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let blank = line
            .iter()
            .skip(indent)
            .all(|b| matches!(b, b' ' | b'\t' | b'\r'));
        if let Some(parent) = self.block_scalar {
            if blank || indent > parent {
                return Ok(());
            }
            self.block_scalar = None;
        }
        let mut pos = if let Some(q) = self.quote {
            match close_quote(line, 0, q) {
                Some(end) => {
                    self.quote = None;
                    end
                }
                None => return Ok(()),
            }
        } else {
            if blank || line.get(indent) == Some(&b'#') {
                return Ok(());
            }
            if self.flow == 0 {
                while self.indents.last().is_some_and(|&top| top >= indent) {
                    self.indents.pop();
                }
                self.indents.push(indent);
                if self.indents.len() > MAX_DEPTH {
                    return Err(YamlBoundError::TooDeep { line: no });
                }
            }
            indent
        };
        // True where a node may start (line start, after `- `, `: `, `? `,
        // `,` and flow openers).
        let mut at_node = pos == indent;
        let mut dashes = 0usize;
        let check = |s: &Self, dashes: usize| {
            if s.indents.len() + dashes + s.flow > MAX_DEPTH {
                Err(YamlBoundError::TooDeep { line: no })
            } else {
                Ok(())
            }
        };
        while let Some(&c) = line.get(pos) {
            let prev_space = pos == 0 || matches!(line.get(pos - 1), Some(b' ' | b'\t'));
            let next_space = matches!(line.get(pos + 1), None | Some(b' ' | b'\t' | b'\r'));
            match c {
                b' ' | b'\t' | b'\r' => {}
                b'#' if prev_space => return Ok(()),
                b'[' | b'{' if at_node || self.flow > 0 => {
                    self.flow += 1;
                    at_node = true;
                    check(self, dashes)?;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    at_node = false;
                }
                b',' if self.flow > 0 => at_node = true,
                b'"' | b'\'' if at_node => match close_quote(line, pos + 1, c) {
                    Some(end) => {
                        pos = end;
                        at_node = false;
                        continue;
                    }
                    None => {
                        self.quote = Some(c);
                        return Ok(());
                    }
                },
                b'*' if at_node => return Err(YamlBoundError::Alias { line: no }),
                b'-' | b'?' if at_node && next_space => {
                    if self.flow == 0 {
                        dashes += 1;
                        check(self, dashes)?;
                    }
                }
                b'|' | b'>' if at_node && self.flow == 0 => {
                    self.block_scalar = Some(indent);
                    return Ok(());
                }
                b'&' | b'!' if at_node => {
                    // An anchor or a tag: skip its name; a node follows.
                    while line.get(pos).is_some_and(|b| !matches!(b, b' ' | b'\t')) {
                        pos += 1;
                    }
                    continue;
                }
                b':' if next_space
                    || (self.flow > 0 && matches!(line.get(pos + 1), Some(b',' | b']' | b'}'))) =>
                {
                    at_node = true;
                }
                _ => at_node = false,
            }
            pos += 1;
        }
        Ok(())
    }
}

/// The index just past the quote `q` closing a scalar whose text starts at
/// `from`, or `None` when it does not close on this line. `''` is an
/// escaped quote in single quotes, `\` escapes in double quotes.
fn close_quote(line: &[u8], from: usize, q: u8) -> Option<usize> {
    let mut i = from;
    while let Some(&c) = line.get(i) {
        if q == b'"' && c == b'\\' {
            i += 2;
            continue;
        }
        if c == q {
            if q == b'\'' && line.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ordinary_configs_pass() {
        let ok = [
            "base:\n  source: 1.4.2\n  rootfs_size: 3716153344\n",
            "files:\n  - to: /data/a\n    content: \"[[[[[[[[ *x # not a comment\"\n",
            "files:\n  - to: /data/a\n    content: |\n      {{{{{{{{{{{{{{{{{{{{\n      *x\n  - to: /data/b\n",
            "a: 'it''s [[[[ *'\nb: it's a [plain] *scalar\n",
            "a: \"multi\n  line [[[[[[[ *x\n  end\"\nb: [1, {c: d}, 'e']\n",
            "a: &anchor 1\nb: !!str 2\n",
        ];
        for t in ok {
            assert_eq!(check_yaml_bounds(t), Ok(()), "{t}");
        }
        let deep_ok: String = (0..MAX_DEPTH)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(check_yaml_bounds(&deep_ok), Ok(()));
    }

    #[test]
    fn deep_nesting_aliases_and_size_are_refused() {
        let flow = format!("base: {}", "[".repeat(MAX_DEPTH + 1));
        assert_eq!(
            check_yaml_bounds(&flow),
            Err(YamlBoundError::TooDeep { line: 1 })
        );
        let block: String = (0..=MAX_DEPTH)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(matches!(
            check_yaml_bounds(&block),
            Err(YamlBoundError::TooDeep { .. })
        ));
        let dashes = format!("a:\n{}x\n", "- ".repeat(MAX_DEPTH + 1));
        assert!(matches!(
            check_yaml_bounds(&dashes),
            Err(YamlBoundError::TooDeep { line: 2 })
        ));
        let mixed = format!("a: {}", "{b: [".repeat(MAX_DEPTH));
        assert!(matches!(
            check_yaml_bounds(&mixed),
            Err(YamlBoundError::TooDeep { .. })
        ));
        let laughs = "a: &a [x, x]\nb: &b [*a, *a]\n";
        assert_eq!(
            check_yaml_bounds(laughs),
            Err(YamlBoundError::Alias { line: 2 })
        );
        let big = "x".repeat(MAX_YAML_BYTES + 1);
        assert!(matches!(
            check_yaml_bounds(&big),
            Err(YamlBoundError::TooLarge { .. })
        ));
    }
}
