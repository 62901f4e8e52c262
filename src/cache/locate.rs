//! The line of a key path (`files.filters[1].max_size`) in block-style YAML,
//! so errors found after parsing (a limit exceeding its parent's, a bad
//! regex) name their line like serde's own errors do.
//!
//! This is a locator, not a parser: it follows indentation and `- ` items of
//! block style, which is what people write in `policy.yaml`. For flow style
//! (`{a: 1}`) it may not find the key and the error just has no line.

/// One step of a key path.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seg<'a> {
    /// A mapping key.
    Key(&'a str),
    /// A sequence index.
    Index(usize),
}

#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    /// 1-based line number.
    number: usize,
    indent: usize,
    content: &'a str,
}

/// The 1-based line where `path` is, if found.
pub(crate) fn line_of(text: &str, path: &[Seg<'_>]) -> Option<usize> {
    let lines: Vec<Line<'_>> = text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let content = l.trim_start_matches(' ');
            let content = content.trim_end();
            if content.is_empty() || content.starts_with('#') || content == "---" {
                return None;
            }
            Some(Line {
                number: i + 1,
                indent: l.len() - l.trim_start_matches(' ').len(),
                content,
            })
        })
        .collect();
    find(&lines, path)
}

fn find(lines: &[Line<'_>], path: &[Seg<'_>]) -> Option<usize> {
    let (seg, rest) = path.split_first()?;
    let indent = lines.first()?.indent;
    match *seg {
        Seg::Key(key) => {
            let at = lines
                .iter()
                .position(|l| l.indent == indent && key_of(l.content).is_some_and(|k| k == key))?;
            if rest.is_empty() {
                return Some(lines[at].number);
            }
            // A sequence value may sit at the key's own indentation.
            let end = lines[at + 1..]
                .iter()
                .position(|l| {
                    l.indent < indent || (l.indent == indent && !l.content.starts_with("- "))
                })
                .map_or(lines.len(), |n| at + 1 + n);
            let child = &lines[at + 1..end];
            if child.first().is_some_and(|l| l.indent == indent) {
                // `key:` followed by `- item` at the same column: only the items.
                let n = child
                    .iter()
                    .position(|l| l.indent == indent && !l.content.starts_with("- "))
                    .unwrap_or(child.len());
                return find(&child[..n], rest);
            }
            let n = child
                .iter()
                .position(|l| l.indent <= indent)
                .unwrap_or(child.len());
            find(&child[..n], rest)
        }
        Seg::Index(index) => {
            let starts: Vec<usize> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.indent == indent && l.content.starts_with("- "))
                .map(|(i, _)| i)
                .collect();
            let start = *starts.get(index)?;
            let end = starts.get(index + 1).copied().unwrap_or(lines.len());
            if rest.is_empty() {
                return Some(lines[start].number);
            }
            // The item's first line, seen without its `- `, then its block.
            let first = lines[start];
            let body = first.content[2..].trim_start_matches(' ');
            let mut item = vec![Line {
                number: first.number,
                indent: first.indent + (first.content.len() - body.len()),
                content: body,
            }];
            item.extend(lines[start + 1..end].iter().copied());
            find(&item, rest)
        }
    }
}

fn key_of(content: &str) -> Option<&str> {
    let (k, _) = content.split_once(':')?;
    Some(k.trim().trim_matches(|c| c == '"' || c == '\''))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# a comment
max_size: 10G
files:
  max_size: 5G
  filters:
    - pattern: wikipedia
      max_size: 1G
    -   pattern: \"x\"

        ignore: true
oci_images:
  filters:
  - pattern: kiwix
    max_num: 3
";

    #[test]
    fn finds_keys_items_and_nested_keys() {
        use Seg::{Index, Key};
        assert_eq!(line_of(DOC, &[Key("max_size")]), Some(2));
        assert_eq!(line_of(DOC, &[Key("files"), Key("max_size")]), Some(4));
        assert_eq!(
            line_of(
                DOC,
                &[Key("files"), Key("filters"), Index(0), Key("max_size")]
            ),
            Some(7)
        );
        assert_eq!(
            line_of(
                DOC,
                &[Key("files"), Key("filters"), Index(1), Key("pattern")]
            ),
            Some(8)
        );
        assert_eq!(
            line_of(
                DOC,
                &[Key("files"), Key("filters"), Index(1), Key("ignore")]
            ),
            Some(10)
        );
        assert_eq!(
            line_of(
                DOC,
                &[Key("oci_images"), Key("filters"), Index(0), Key("max_num")]
            ),
            Some(14)
        );
        assert_eq!(line_of(DOC, &[Key("files"), Key("max_num")]), None);
        assert_eq!(
            line_of(DOC, &[Key("files"), Key("filters"), Index(2)]),
            None
        );
    }
}
