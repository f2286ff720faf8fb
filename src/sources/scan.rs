//! A linear pre-scan of YAML text, run before any YAML parser sees it.
//!
//! It splits a file into documents at `---` and `...` lines and measures
//! each document's nesting depth, so size and depth limits are enforced in
//! time linear in the bytes: 100,000 nested brackets are refused in
//! microseconds instead of costing the parser half a minute. Documents are
//! then parsed one by one, so a syntax error costs one document, not the
//! rest of the file.
//!
//! The depth is an estimate that never needs a parser: one level per open
//! flow bracket (`[`, `{`) and one per indentation step or compact `- `
//! entry of block collections. Quoted scalars, block scalars (`|`, `>`) and
//! comments are skipped, so brackets inside text never count.

/// One document of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span<'a> {
    /// The document's text, with its `---` line when it has one.
    pub text: &'a str,
    /// 1-based line of the file where the text starts.
    pub first_line: usize,
}

/// A document marker: `---` or `...` at the start of a line, alone or
/// followed by a space or tab. YAML gives these lines this meaning even
/// inside block scalars, so splitting on them needs no parser.
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// Splits `text` into documents as a YAML parser would: a bare document
/// before the first `---`, one per `---`, an explicit empty document for a
/// `---` with nothing after it. Comments, blank lines and directives alone
/// make no document.
pub fn split_documents(text: &str) -> Vec<Span<'_>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let (mut start, mut start_line) = (0, 1);
    // Whether the current document has content, and whether a `---` opened it.
    let (mut content, mut explicit) = (false, false);
    let (mut offset, mut line_no) = (0, 1);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        if is_marker(body, "---") {
            if content || explicit {
                docs.push(Span {
                    text: &text[start..offset],
                    first_line: start_line,
                });
                (start, start_line) = (offset, line_no);
            }
            explicit = true;
            let rest = body[3..].trim();
            content = !rest.is_empty() && !rest.starts_with('#');
        } else if is_marker(body, "...") {
            let end = offset + line.len();
            if content || explicit {
                docs.push(Span {
                    text: &text[start..end],
                    first_line: start_line,
                });
            }
            (start, start_line) = (end, line_no + 1);
            (content, explicit) = (false, false);
        } else if !content {
            let t = body.trim();
            let directive = t.starts_with('%') && !explicit;
            content = !t.is_empty() && !t.starts_with('#') && !directive;
        }
        offset += line.len();
        line_no += 1;
    }
    if content || explicit {
        docs.push(Span {
            text: &text[start..],
            first_line: start_line,
        });
    }
    docs
}

/// Checks that `doc` nests at most `limit` levels; on failure, returns the
/// 0-based line (within `doc`) where the limit was passed.
pub fn check_depth(doc: &str, limit: usize) -> Result<(), usize> {
    // Columns of the open block collections, strictly increasing.
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<u8> = None;
    // Indentation of the line that opened a block scalar still running.
    let mut block_scalar: Option<usize> = None;
    for (n, line) in doc.lines().enumerate() {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        let blank = bytes[indent..].iter().all(u8::is_ascii_whitespace);
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let mut i = 0;
        let mut node_start = quote.is_none();
        if quote.is_none() && flow == 0 {
            if blank || bytes[indent] == b'#' {
                continue;
            }
            if is_marker(line, "---") || is_marker(line, "...") {
                indents.clear();
                i = 3;
            } else {
                while indents.last().is_some_and(|top| *top >= indent) {
                    indents.pop();
                }
                indents.push(indent);
                i = indent;
                // `- - x` and `? x` open a level per indicator, on one line.
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'?')
                    && bytes.get(i + 1).is_none_or(|b| *b == b' ' || *b == b'\t')
                {
                    i += 1;
                    while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
                        i += 1;
                    }
                    if i < bytes.len() {
                        indents.push(i);
                    }
                }
            }
            if indents.len() > limit {
                return Err(n);
            }
        }
        while i < bytes.len() {
            let c = bytes[i];
            i += 1;
            if let Some(q) = quote {
                if q == b'"' && c == b'\\' {
                    i += 1;
                } else if c == q {
                    if q == b'\'' && bytes.get(i) == Some(&b'\'') {
                        i += 1;
                    } else {
                        quote = None;
                        node_start = false;
                    }
                }
                continue;
            }
            match c {
                b' ' | b'\t' => {}
                b'#' if i == 1 || matches!(bytes[i - 2], b' ' | b'\t') => break,
                b'"' | b'\'' if node_start => quote = Some(c),
                b'[' | b'{' if node_start || flow > 0 => {
                    flow += 1;
                    node_start = true;
                    if indents.len() + flow > limit {
                        return Err(n);
                    }
                }
                b']' | b'}' if flow > 0 => {
                    flow -= 1;
                    node_start = false;
                }
                b',' if flow > 0 => node_start = true,
                // In flow context JSON's `"key":"value"` needs no space.
                b':' if flow > 0 || bytes.get(i).is_none_or(|b| matches!(b, b' ' | b'\t')) => node_start = true,
                b'|' | b'>' if node_start && flow == 0 => {
                    block_scalar = Some(indent);
                    break;
                }
                // Anchors and tags come before the node they name.
                b'&' | b'!' if node_start => {
                    while i < bytes.len() && !matches!(bytes[i], b' ' | b'\t') {
                        i += 1;
                    }
                }
                b'-' | b'?' if node_start && bytes.get(i).is_none_or(|b| *b == b' ') => {}
                _ => node_start = false,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<&str> {
        split_documents(text).iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_like_a_yaml_parser() {
        assert_eq!(texts("a: 1\n---\nb: 2\n"), ["a: 1\n", "---\nb: 2\n"]);
        assert_eq!(
            texts("# only a comment\n---\nb: 2\n"),
            ["# only a comment\n---\nb: 2\n"]
        );
        assert_eq!(texts("a: 1\n---\n"), ["a: 1\n", "---\n"]);
        assert_eq!(texts("---\n---\na\n"), ["---\n", "---\na\n"]);
        assert_eq!(texts("--- {a: 1}\n--- # c\nb\n"), ["--- {a: 1}\n", "--- # c\nb\n"]);
        assert_eq!(texts("a\n...\n# c\n"), ["a\n...\n"]);
        assert_eq!(texts("%YAML 1.2\n---\na\n"), ["%YAML 1.2\n---\na\n"]);
        assert_eq!(texts("k: |\n  text\n----\n"), ["k: |\n  text\n----\n"]);
        assert!(texts("").is_empty());
        assert!(texts("\n# nothing\n\n").is_empty());
        let spans = split_documents("a\n---\nb\nc\n---\nd\n");
        let lines: Vec<usize> = spans.iter().map(|s| s.first_line).collect();
        assert_eq!(lines, [1, 2, 5]);
        // The parser agrees on the number of documents.
        for text in ["a: 1\n---\nb: 2\n", "a: 1\n---\n", "---\n---\na\n", "# c\n---\nb\n"] {
            let parsed = serde_yaml::Deserializer::from_str(text).count();
            assert_eq!(parsed, split_documents(text).len(), "{text:?}");
        }
    }

    #[test]
    fn depth_counts_flow_brackets_and_block_indentation() {
        let depth = |text: &str| (1..100).find(|l| check_depth(text, *l).is_ok()).unwrap();
        assert_eq!(depth("a: 1\n"), 1);
        assert_eq!(depth("a: [1, {b: [2]}]\n"), 4);
        assert_eq!(depth("a:\n  b:\n    c: 1\n"), 3);
        assert_eq!(depth("- - - x\n"), 4);
        assert_eq!(depth("spec:\n  rules:\n  - matches:\n    - path: {value: /}\n"), 5);
        // Brackets inside quotes, comments and block scalars are text.
        assert_eq!(depth("a: \"[[[[\" # [[[\nb: '[[''[['\nc: x[[[\n"), 1);
        assert_eq!(depth("a: |\n  [[[[[[\n  {{{{\nb: 1\n"), 1);
        assert_eq!(depth("a: \"multi\n  line [[[[\"\nb: [x]\n"), 2);
        assert_eq!(depth("a: &x [1]\nb: !!seq [2]\n"), 2);
        assert_eq!(depth("{\"a\":\"[[[[\",\"b\":{\"c\":[\"]]\"]}}\n"), 4);
    }

    #[test]
    fn deep_nesting_is_found_at_its_line() {
        assert_eq!(check_depth(&"[".repeat(100_000), 64), Err(0));
        let mut nested = String::new();
        for i in 0..100 {
            nested.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        assert_eq!(check_depth(&nested, 64), Err(64));
        assert_eq!(check_depth(&nested, 100), Ok(()));
        assert_eq!(
            check_depth(&format!("a: {}1{}\n", "[".repeat(64), "]".repeat(64)), 64),
            Err(0)
        );
        assert_eq!(
            check_depth(&format!("a: {}1{}\n", "[".repeat(63), "]".repeat(63)), 64),
            Ok(())
        );
    }
}
