//! `{{variable}}` templates, compiled once into segments so that rendering a message is a
//! walk over literal byte runs and a few numbers written in place: no parsing, no lookup
//! by name and no allocation per message.
//!
//! Variables: `{{conn}}` (the global connection index), `{{conn % N}}`, `{{seq}}` (the
//! connection's message counter), `{{stamp}}` (the text stamp, see
//! [`ws_common::text_stamp`]) and every column of the script's CSV file.

use std::io::Write as _;

use ws_common::payload::Stamp;
use ws_common::text_stamp;

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// Bytes `lits[start..end]`.
    Lit(u32, u32),
    Conn,
    ConnMod(u64),
    Seq,
    Stamp,
    /// CSV column.
    Column(usize),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    lits: Vec<u8>,
    segs: Vec<Segment>,
}

/// Why a template does not compile: a message and the byte offset of the `{{` it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub offset: usize,
    /// The placeholder as written (`{{usr}}`), to find it in the file.
    pub placeholder: String,
    pub message: String,
}

/// What a rendering fills the variables with.
pub struct Vars<'a> {
    pub conn: u64,
    pub seq: u64,
    /// The connection's CSV row (empty without a data file).
    pub row: &'a [String],
    pub stamp: Stamp,
}

impl Template {
    /// Compiles `src`; `columns` are the CSV columns, in row order.
    pub fn compile(src: &str, columns: &[String]) -> Result<Self, TemplateError> {
        let mut t = Template {
            lits: Vec::new(),
            segs: Vec::new(),
        };
        let mut rest = src;
        let mut base = 0;
        while let Some(open) = rest.find("{{") {
            t.lit(&rest[..open]);
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(TemplateError {
                    offset: base + open,
                    placeholder: rest[open..].chars().take(20).collect(),
                    message: "'{{' is not closed by '}}'".into(),
                });
            };
            let inner = &after[..close];
            let placeholder = format!("{{{{{inner}}}}}");
            let seg = parse_var(inner.trim(), columns).map_err(|message| TemplateError {
                offset: base + open,
                placeholder,
                message,
            })?;
            t.segs.push(seg);
            let used = open + 2 + close + 2;
            base += used;
            rest = &rest[used..];
        }
        t.lit(rest);
        Ok(t)
    }

    fn lit(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        let start = self.lits.len() as u32;
        self.lits.extend_from_slice(s.as_bytes());
        self.segs.push(Segment::Lit(start, self.lits.len() as u32));
    }

    /// Whether the template uses `{{stamp}}`.
    pub fn has_stamp(&self) -> bool {
        self.segs.contains(&Segment::Stamp)
    }

    /// Whether the template is the same for every connection and message.
    pub fn is_constant(&self) -> bool {
        self.segs.iter().all(|s| matches!(s, Segment::Lit(..)))
    }

    /// Appends the rendering to `out`.
    pub fn render(&self, v: &Vars, out: &mut Vec<u8>) {
        for s in &self.segs {
            match *s {
                Segment::Lit(a, b) => out.extend_from_slice(&self.lits[a as usize..b as usize]),
                // Writing into a Vec cannot fail.
                Segment::Conn => {
                    let _ = write!(out, "{}", v.conn);
                }
                Segment::ConnMod(n) => {
                    let _ = write!(out, "{}", v.conn % n);
                }
                Segment::Seq => {
                    let _ = write!(out, "{}", v.seq);
                }
                Segment::Stamp => text_stamp::write(out, v.stamp),
                Segment::Column(i) => {
                    if let Some(val) = v.row.get(i) {
                        out.extend_from_slice(val.as_bytes());
                    }
                }
            }
        }
    }

    /// The rendering as a string (per connection: URLs and headers).
    pub fn render_string(&self, v: &Vars) -> String {
        let mut out = Vec::new();
        self.render(v, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The variables a script may use, for error messages.
pub fn defined(columns: &[String]) -> String {
    let mut v: Vec<String> = ["conn", "conn % N", "seq", "stamp"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(columns.iter().cloned());
    v.join(", ")
}

fn parse_var(inner: &str, columns: &[String]) -> Result<Segment, String> {
    match inner {
        "conn" => return Ok(Segment::Conn),
        "seq" => return Ok(Segment::Seq),
        "stamp" => return Ok(Segment::Stamp),
        _ => {}
    }
    if let Some((l, r)) = inner.split_once('%') {
        if l.trim() == "conn" {
            return match r.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(Segment::ConnMod(n)),
                _ => Err(format!(
                    "{{{{{inner}}}}}: the divisor must be a whole number above 0 (e.g. {{{{conn % 10}}}})"
                )),
            };
        }
    }
    if let Some(i) = columns.iter().position(|c| c == inner) {
        return Ok(Segment::Column(i));
    }
    Err(format!(
        "variable {inner:?} is not defined; defined: {}",
        defined(columns)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(row: &[String]) -> Vars<'_> {
        Vars {
            conn: 17,
            seq: 3,
            row,
            stamp: Stamp {
                sender: 17,
                seq: 3,
                sent_ns: 99,
            },
        }
    }

    #[test]
    fn renders_every_variable() {
        let cols = vec!["user".to_string(), "token".to_string()];
        let row = vec!["alice".to_string(), "t0k".to_string()];
        let t = Template::compile(
            r#"{"u":"{{user}}","t":"{{ token }}","r":"r{{conn % 10}}","c":{{conn}},"s":{{seq}},"x":"{{stamp}}"}"#,
            &cols,
        )
        .unwrap();
        assert!(t.has_stamp() && !t.is_constant());
        let mut out = Vec::new();
        t.render(&vars(&row), &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with(r#"{"u":"alice","t":"t0k","r":"r7","c":17,"s":3,"x":"WSC00000011"#),
            "{s}"
        );
        let c = Template::compile("plain {text}", &[]).unwrap();
        assert!(c.is_constant());
        assert_eq!(c.render_string(&vars(&[])), "plain {text}");
    }

    #[test]
    fn errors_point_at_the_placeholder() {
        let cols = vec!["user".to_string()];
        let e = Template::compile("ab {{usr}}", &cols).unwrap_err();
        assert_eq!((e.offset, e.placeholder.as_str()), (3, "{{usr}}"));
        assert!(
            e.message.contains("\"usr\" is not defined"),
            "{}",
            e.message
        );
        assert!(e.message.contains("conn, conn % N, seq, stamp, user"));
        assert!(Template::compile("{{conn % 0}}", &cols).is_err());
        assert!(Template::compile("{{conn % x}}", &cols).is_err());
        assert_eq!(Template::compile("x {{conn", &cols).unwrap_err().offset, 2);
    }
}
