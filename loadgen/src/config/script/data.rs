//! The script's `data` file: CSV with a header row. Each column is a template variable;
//! connection `i` uses row `i mod rows`. Read whole at start (a row per user is small) and
//! checked: a missing file, no header, no rows or a row with the wrong number of fields
//! is refused with its line.

use std::path::Path;

/// The parsed CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Data {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Data {
    /// Row of connection `conn`.
    pub fn row(&self, conn: u64) -> &[String] {
        // `rows` is never empty (checked at load).
        &self.rows[(conn % self.rows.len().max(1) as u64) as usize]
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read data file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|(line, m)| format!("{}:{line}: {m}", path.display()))
    }

    /// Parses CSV text; errors carry their (1-based) line.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((hl, header)) = lines.next() else {
            return Err((
                1,
                "the file is empty: expected a header row (e.g. user,token) and one row per user"
                    .into(),
            ));
        };
        let columns = split(header).map_err(|m| (hl, m))?;
        for (i, c) in columns.iter().enumerate() {
            let ok = !c.is_empty()
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                && !c.starts_with(|ch: char| ch.is_ascii_digit());
            if !ok {
                return Err((
                    hl,
                    format!(
                        "column {} of the header is {c:?}: a column name is a variable name (letters, digits, _)",
                        i + 1
                    ),
                ));
            }
            if ["conn", "seq", "stamp"].contains(&c.as_str()) {
                return Err((
                    hl,
                    format!("column {c:?} would hide the built-in variable {{{{{c}}}}}"),
                ));
            }
            if columns[..i].contains(c) {
                return Err((hl, format!("column {c:?} appears twice in the header")));
            }
        }
        let mut rows = Vec::new();
        for (n, l) in lines {
            let r = split(l).map_err(|m| (n, m))?;
            if r.len() != columns.len() {
                return Err((
                    n,
                    format!(
                        "this row has {} field(s), the header has {} ({})",
                        r.len(),
                        columns.len(),
                        columns.join(",")
                    ),
                ));
            }
            rows.push(r);
        }
        if rows.is_empty() {
            return Err((hl, "the file has a header but no rows".into()));
        }
        Ok(Self { columns, rows })
    }
}

/// One CSV line: commas, optional double quotes ("" inside quotes is a quote).
fn split(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                out.push(finish(&mut cur, was_quoted));
                was_quoted = false;
            }
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    out.push(finish(&mut cur, was_quoted));
    Ok(out)
}

fn finish(cur: &mut String, quoted: bool) -> String {
    let s = std::mem::take(cur);
    if quoted {
        s
    } else {
        s.trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_quotes() {
        let d = Data::parse("user,token\r\nalice,t1\n\n\"bob, jr\",\"a\"\"b\"\n").unwrap();
        assert_eq!(d.columns, vec!["user", "token"]);
        assert_eq!(d.rows[1], vec!["bob, jr", "a\"b"]);
        assert_eq!(d.row(0)[0], "alice");
        assert_eq!(d.row(3)[0], "bob, jr");
    }

    #[test]
    fn bad_files_name_the_line() {
        assert_eq!(Data::parse("").unwrap_err().0, 1);
        assert!(Data::parse("user\n").unwrap_err().1.contains("no rows"));
        let e = Data::parse("user,token\na,b\nc\n").unwrap_err();
        assert_eq!(e.0, 3);
        assert!(e.1.contains("1 field(s), the header has 2"), "{}", e.1);
        assert!(Data::parse("user,user\na,b\n").is_err());
        assert!(Data::parse("user name\na\n").is_err());
        assert!(Data::parse("conn\n1\n").is_err());
        assert_eq!(Data::parse("u\n\"a\n").unwrap_err().0, 2);
    }
}
