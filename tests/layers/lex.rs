//! Just enough of a Rust lexer for the import scan: comments and literals
//! are blanked out (so `"crate::x"` in a string or `crate::x` in a doc
//! comment is not an import), then the rest is split into identifiers,
//! `::` and single punctuation characters, each with its line.
//!
//! Limits: no macro expansion (a path built by a macro is not seen), and
//! a `'` followed by one character and another `'` is taken for a char
//! literal, which is what rustc does too.

/// A token and the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tok {
    pub text: String,
    pub line: usize,
}

/// `src` with every comment (line, block, nested block, doc), string, byte
/// string, raw string and char literal replaced by spaces; newlines are
/// kept so that line numbers still hold.
pub fn blank(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank_range = |out: &mut String, range: &[char]| {
        out.extend(range.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    };
    let mut i = 0;
    while i < c.len() {
        let end = if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            Some(
                c[i..]
                    .iter()
                    .position(|&ch| ch == '\n')
                    .map_or(c.len(), |n| i + n),
            )
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            Some(block_comment_end(&c, i))
        } else if let Some(end) = raw_string_end(&c, i) {
            Some(end)
        } else if c[i] == '"' {
            Some(string_end(&c, i))
        } else if c[i] == '\'' {
            // A lifetime or label (`'a`) has no closing quote: only the
            // quote is blanked and the name stays an identifier.
            Some(char_literal_end(&c, i).unwrap_or(i + 1))
        } else {
            None
        };
        match end {
            Some(end) => {
                blank_range(&mut out, &c[i..end]);
                i = end;
            }
            None if is_ident_char(c[i]) => {
                // Whole identifiers at once, so that the `r` ending `for` or
                // `b` ending `sub` is never taken for a literal's prefix.
                let n = c[i..].iter().take_while(|&&ch| is_ident_char(ch)).count();
                out.extend(&c[i..i + n]);
                i += n;
            }
            None => {
                out.push(c[i]);
                i += 1;
            }
        }
    }
    out
}

/// Tokens of already [`blank`]ed source.
pub fn tokens(blanked: &str) -> Vec<Tok> {
    let c: Vec<char> = blanked.chars().collect();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if is_ident_char(ch) {
            let n = c[i..].iter().take_while(|&&ch| is_ident_char(ch)).count();
            toks.push(Tok {
                text: c[i..i + n].iter().collect(),
                line,
            });
            i += n;
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            toks.push(Tok {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            toks.push(Tok {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    toks
}

fn is_ident_char(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// End (exclusive) of the block comment opening at `i`; they nest.
fn block_comment_end(c: &[char], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < c.len() {
        match (c[j], c.get(j + 1)) {
            ('/', Some('*')) => {
                depth += 1;
                j += 2;
            }
            ('*', Some('/')) => {
                depth -= 1;
                j += 2;
                if depth == 0 {
                    return j;
                }
            }
            _ => j += 1,
        }
    }
    c.len()
}

/// End (exclusive) of the `"…"` string opening at `i`, escapes honoured.
fn string_end(c: &[char], i: usize) -> usize {
    let mut j = i + 1;
    while j < c.len() {
        match c[j] {
            '\\' => j += 2,
            '"' => return j + 1,
            _ => j += 1,
        }
    }
    c.len()
}

/// End (exclusive) of a raw string (`r"…"`, `r#"…"#`, `br##"…"##`,
/// `cr"…"`) starting at `i`, or None when `i` does not start one (`r#ident`
/// is a raw identifier, not a string).
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(c.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = c[j..].iter().take_while(|&&ch| ch == '#').count();
    j += hashes;
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"'
            && c[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&ch| ch == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

/// End (exclusive) of the char literal opening at `i` (`'x'`, `'\''`,
/// `'\u{1F600}'`), or None for a lifetime or label.
fn char_literal_end(c: &[char], i: usize) -> Option<usize> {
    match (c.get(i + 1), c.get(i + 2)) {
        (Some('\\'), Some(_)) => {
            // Skip the escaped character (it may be a quote), then find the
            // closing quote.
            let from = i + 3;
            c[from..]
                .iter()
                .take(10)
                .position(|&ch| ch == '\'')
                .map(|n| from + n + 1)
        }
        (Some(&ch), Some('\'')) if ch != '\'' => Some(i + 3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<String> {
        tokens(&blank(src)).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn comments_and_strings_are_blanked_lines_kept() {
        let src =
            "a // crate::x\n/* crate::y /* nested */ crate::z */ b\n\"crate::s \\\" crate::t\" c";
        let b = blank(src);
        assert!(!b.contains("crate"), "{b}");
        assert_eq!(b.lines().count(), 3);
        assert_eq!(toks(src), ["a", "b", "c"]);
        let lines: Vec<usize> = tokens(&b).iter().map(|t| t.line).collect();
        assert_eq!(lines, [1, 2, 3]);
    }

    #[test]
    fn raw_strings_byte_strings_and_chars() {
        let src = r####"x r#"crate::a " still"# y br##"crate::b"# "##  b"crate::c" '"' '\'' '\u{7b}' '{' z"####;
        assert_eq!(toks(src), ["x", "y", "b", "z"]);
    }

    #[test]
    fn lifetimes_and_raw_identifiers_are_not_literals() {
        assert_eq!(
            toks("fn f<'a>(x: &'a str) -> &'static str { r#type }"),
            [
                "fn", "f", "<", "a", ">", "(", "x", ":", "&", "a", "str", ")", "-", ">", "&",
                "static", "str", "{", "r", "#", "type", "}"
            ]
        );
    }

    #[test]
    fn r_b_and_c_alone_are_identifiers() {
        assert_eq!(
            toks("let r = br; let c = b'x'; for\"s\""),
            ["let", "r", "=", "br", ";", "let", "c", "=", "b", ";", "for"]
        );
    }

    #[test]
    fn path_separator_is_one_token() {
        assert_eq!(
            toks("crate::a::{b, c}"),
            ["crate", "::", "a", "::", "{", "b", ",", "c", "}"]
        );
    }
}
