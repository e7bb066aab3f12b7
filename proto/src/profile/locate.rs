//! JSON paths (`network.chain[0].address`) and finding where a path's value
//! starts in the profile text, so errors found after parsing can still say
//! "line 4, column 18".
//!
//! The locator only ever runs on text serde_json has already accepted, and
//! only when there is an error to report.

#![forbid(unsafe_code)]

use std::fmt;

/// One step of a [`JsonPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value sits in the document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JsonPath(Vec<Seg>);

impl JsonPath {
    pub(crate) fn root() -> Self {
        JsonPath(Vec::new())
    }

    pub(crate) fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        JsonPath(v)
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        JsonPath(v)
    }

    pub(crate) fn segs(&self) -> &[Seg] {
        &self.0
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                // Keys with dots, spaces or quotes are shown as JSON strings.
                Seg::Key(k) => write!(f, "[{}]", serde_json::Value::String(k.clone()))?,
            }
        }
        Ok(())
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$'))
}

/// 1-based line and column (in characters) of the value at `path` in `text`;
/// if part of the path is missing, of the deepest value that exists.
pub(crate) fn locate(text: &str, path: &JsonPath) -> (usize, usize) {
    let mut sc = Scanner {
        b: text.as_bytes(),
        pos: 0,
    };
    sc.ws();
    for seg in path.segs() {
        let start = sc.pos;
        let found = match seg {
            Seg::Key(k) => sc.find_key(k),
            Seg::Index(i) => sc.find_index(*i),
        };
        match found {
            Some(p) => sc.pos = p,
            None => {
                sc.pos = start;
                break;
            }
        }
    }
    line_col(text, sc.pos)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// At a `{`: the start of the value of the last member named `key`.
    fn find_key(&mut self, key: &str) -> Option<usize> {
        if self.peek() != Some(b'{') {
            return None;
        }
        self.pos += 1;
        let mut found = None;
        loop {
            self.ws();
            match self.peek()? {
                b'}' => return found,
                b',' => {
                    self.pos += 1;
                    continue;
                }
                b'"' => {}
                _ => return found,
            }
            let k = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return found;
            }
            self.pos += 1;
            self.ws();
            // Duplicate keys: the last one wins, as in serde_json's map.
            if k == key {
                found = Some(self.pos);
            }
            self.skip_value()?;
        }
    }

    /// At a `[`: the start of element `i`.
    fn find_index(&mut self, i: usize) -> Option<usize> {
        if self.peek() != Some(b'[') {
            return None;
        }
        self.pos += 1;
        for n in 0.. {
            self.ws();
            match self.peek()? {
                b']' => return None,
                b',' => {
                    self.pos += 1;
                    self.ws();
                }
                _ => {}
            }
            if n == i {
                return Some(self.pos);
            }
            self.skip_value()?;
        }
        None
    }

    /// At a `"`: the decoded string; leaves `pos` after the closing quote.
    fn string(&mut self) -> Option<String> {
        let start = self.pos;
        self.skip_string()?;
        serde_json::from_slice(&self.b[start..self.pos]).ok()
    }

    fn skip_string(&mut self) -> Option<()> {
        self.pos += 1;
        loop {
            match self.peek()? {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Skip one value of any kind (containers by bracket depth).
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => self.skip_string()?,
                b'{' | b'[' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' | b']' => {
                    if depth == 0 {
                        return Some(());
                    }
                    depth -= 1;
                    self.pos += 1;
                }
                b',' if depth == 0 => return Some(()),
                _ => self.pos += 1,
            }
            if depth == 0 && !self.in_scalar() {
                return Some(());
            }
        }
    }

    /// Whether the byte at `pos` still belongs to a number or literal.
    fn in_scalar(&self) -> bool {
        matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(segs: &[Seg]) -> JsonPath {
        JsonPath(segs.to_vec())
    }

    #[test]
    fn path_display_uses_dots_and_brackets() {
        let path = JsonPath::root()
            .key("network")
            .key("chain")
            .index(2)
            .key("address");
        assert_eq!(path.to_string(), "network.chain[2].address");
        assert_eq!(
            JsonPath::root().key("a.b").key("c").to_string(),
            "[\"a.b\"].c"
        );
    }

    #[test]
    fn locate_finds_nested_values() {
        let text = "{\n  \"network\": {\n    \"chain\": [\n      {\"type\": \"socks\", \"address\": 12}\n    ]\n  }\n}";
        let path = JsonPath::root()
            .key("network")
            .key("chain")
            .index(0)
            .key("address");
        assert_eq!(locate(text, &path), (4, 36));
        assert_eq!(locate(text, &JsonPath::root().key("network")), (2, 14));
    }

    #[test]
    fn locate_skips_strings_with_brackets_and_escapes() {
        let text = r#"{"a": "}]\"{", "b": [1, {"x": "[,"}, true], "c": 3}"#;
        assert_eq!(locate(text, &p(&[Seg::Key("c".into())])), (1, 50));
        assert_eq!(
            locate(text, &p(&[Seg::Key("b".into()), Seg::Index(2)])),
            (1, 38)
        );
    }

    #[test]
    fn locate_takes_the_last_duplicate_and_decodes_escaped_keys() {
        let text = r#"{"k": 1, "\u006b": 2}"#;
        assert_eq!(locate(text, &p(&[Seg::Key("k".into())])), (1, 20));
    }

    #[test]
    fn locate_falls_back_to_deepest_existing_value() {
        let text = "{\"a\": {\"b\": 1}}";
        let path = JsonPath::root().key("a").key("zz");
        assert_eq!(locate(text, &path), (1, 7));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = "{\"ä\": \"é\", \"x\": 1}";
        assert_eq!(locate(text, &JsonPath::root().key("x")), (1, 17));
    }
}
