//! `--script FILE`: a scenario described in TOML (see `examples/` and the README,
//! "Testing your own service"). This module reads the file and compiles it: templates into
//! segments ([`template`]), the CSV into rows ([`data`]), matchers into searchers, and
//! refuses every mistake before a connection opens, naming the file, line and column.
//!
//! ```toml
//! url = "ws://127.0.0.1:8080/chat?user={{user}}"
//! headers = { Authorization = "Bearer {{token}}" }
//! data = "users.csv"
//! connections = 1000
//! ping_interval = "30s"   # heartbeat (optional)
//! [[open]]            # once per connection, in order, after the upgrade
//! name = "login"
//! send = '{"type":"login","user":"{{user}}"}'
//! expect = '"ok":true'
//! timeout = "5s"
//! [loop]              # then until the run or stage ends
//! name = "say"
//! rate = 2            # per connection per second
//! send = '{"type":"say","text":"{{stamp}}"}'
//! ```

pub mod data;
pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use memchr::memmem;
use serde::Deserialize;
use toml::Spanned;

use crate::config::plan::{ns, parse_duration};
use crate::config::{parse_target, Target};
use data::Data;
use template::Template;

/// Default time an `expect` waits.
pub const DEFAULT_TIMEOUT_NS: u64 = 10_000_000_000;
/// Largest number of steps in `[[open]]`.
pub const MAX_STEPS: usize = 64;

// ---------------------------------------------------------------------------------------
// The file as written.
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    url: Spanned<String>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    data: Option<Spanned<String>>,
    connections: Option<Spanned<i64>>,
    ping_interval: Option<Spanned<String>>,
    #[serde(default)]
    open: Vec<Spanned<StepDoc>>,
    #[serde(rename = "loop")]
    lp: Option<Spanned<LoopDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepDoc {
    name: Option<Spanned<String>>,
    send: Option<Spanned<String>>,
    #[serde(default)]
    binary: bool,
    encoding: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
    regex: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    sleep: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoopDoc {
    name: Option<Spanned<String>>,
    rate: Option<Spanned<f64>>,
    send: Option<Spanned<String>>,
    #[serde(default)]
    binary: bool,
    encoding: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
    regex: Option<Spanned<String>>,
    echo: Option<bool>,
}

// ---------------------------------------------------------------------------------------
// The compiled script.
// ---------------------------------------------------------------------------------------

/// What a step or the loop sends.
#[derive(Debug, Clone)]
pub enum Payload {
    Text(Template),
    Binary(Vec<u8>),
}

/// What a received message must contain.
#[derive(Debug, Clone)]
pub enum Matcher {
    Contains(Box<memmem::Finder<'static>>),
    Regex(regex::bytes::Regex),
}

impl Matcher {
    pub fn matches(&self, msg: &[u8]) -> bool {
        match self {
            Matcher::Contains(f) => f.find(msg).is_some(),
            Matcher::Regex(r) => r.is_match(msg),
        }
    }
}

/// One `[[open]]` step.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub send: Option<Payload>,
    pub expect: Option<Matcher>,
    pub timeout_ns: u64,
    pub sleep_ns: u64,
}

/// The `[loop]`.
#[derive(Debug, Clone)]
pub struct Loop {
    pub name: String,
    /// Messages per second per connection (None: push-only, or the CLI's --rate).
    pub rate: Option<f64>,
    pub send: Option<Payload>,
    /// Filters what arrives: only matching messages are counted (and timed).
    pub expect: Option<Matcher>,
    /// Whether the server sends a connection its own messages back (then each send
    /// expects one, and one that never comes is lost).
    pub echo: bool,
}

impl Loop {
    /// Whether sends carry a `{{stamp}}` (round trip and delivery from the stamp).
    pub fn stamped(&self) -> bool {
        matches!(&self.send, Some(Payload::Text(t)) if t.has_stamp())
    }
}

/// A checked, compiled script.
#[derive(Debug, Clone)]
pub struct Script {
    pub path: PathBuf,
    /// `url` as written (templated).
    pub url: String,
    /// The URL's server: scheme, host and port (its path is the template below).
    pub target: Target,
    /// Path and query.
    pub path_template: Template,
    /// `Name: value` templates.
    pub headers: Vec<(String, Template)>,
    pub data: Option<Data>,
    pub connections: Option<u32>,
    /// Heartbeat: ping every open connection this often (0: no pings).
    pub ping_interval_ns: u64,
    pub open: Vec<Step>,
    pub lp: Option<Loop>,
}

impl Script {
    /// The per-connection request is the same for every connection.
    pub fn constant_request(&self) -> bool {
        self.path_template.is_constant() && self.headers.iter().all(|(_, t)| t.is_constant())
    }

    /// The CSV row of connection `conn` (empty without data).
    pub fn row(&self, conn: u64) -> &[String] {
        self.data.as_ref().map_or(&[], |d| d.row(conn))
    }

    /// Names of the latency rows the script adds: open steps that wait for something,
    /// then `LOOP rtt` and `LOOP delivery`.
    pub fn step_names(&self) -> Vec<String> {
        self.open
            .iter()
            .filter(|s| s.expect.is_some())
            .map(|s| s.name.clone())
            .collect()
    }

    /// Reads and compiles `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --script {}: {e}", path.display()))?;
        compile(path, &text)
    }
}

/// The server of a command that takes a URL or `--script FILE` (doctor, ceiling): the URL
/// as shown, its resolved target, and the script if there is one.
pub fn url_or_script(
    url: Option<&str>,
    script: Option<&Path>,
) -> Result<(String, Target, Option<Script>), String> {
    match (url, script) {
        (Some(_), Some(p)) => Err(format!(
            "give the URL in the script ({}) or on the command line, not both",
            p.display()
        )),
        (None, Some(p)) => {
            let s = Script::load(p)?;
            let mut t = s.target.clone();
            t.url = s.url.clone();
            Ok((s.url.clone(), t, Some(s)))
        }
        (Some(u), None) => Ok((u.to_string(), parse_target(u)?, None)),
        (None, None) => Err("give the server URL (ws://HOST:PORT/PATH) or --script FILE".into()),
    }
}

/// `file:line:col` of byte `offset` in `text`.
fn position(path: &Path, text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{}:{line}:{col}", path.display())
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err<T>(&self, offset: usize, msg: impl std::fmt::Display) -> Result<T, String> {
        Err(format!("{}: {msg}", position(self.path, self.text, offset)))
    }

    /// Compiles a string value as a template; an error points at its placeholder.
    fn template(&self, v: &Spanned<String>, columns: &[String]) -> Result<Template, String> {
        Template::compile(v.get_ref(), columns).or_else(|e| {
            let raw =
                &self.text[v.span().start.min(self.text.len())..v.span().end.min(self.text.len())];
            let at = raw
                .find(&e.placeholder)
                .map_or(v.span().start, |i| v.span().start + i);
            self.err(at, e.message)
        })
    }

    fn duration(&self, v: &Spanned<String>, what: &str) -> Result<u64, String> {
        match parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => Ok(ns(d)),
            Ok(_) => self.err(v.span().start, format!("{what} must be more than 0")),
            Err(e) => self.err(v.span().start, format!("{what}: {e}")),
        }
    }

    fn name(&self, v: &Option<Spanned<String>>, default: String) -> Result<String, String> {
        let Some(n) = v else { return Ok(default) };
        let s = n.get_ref();
        if s.is_empty()
            || s.len() > 32
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return self.err(
                n.span().start,
                format!("name {s:?}: use 1 to 32 letters, digits, '_' or '-' (it names a latency row and a threshold)"),
            );
        }
        Ok(s.clone())
    }

    fn matcher(
        &self,
        expect: &Option<Spanned<String>>,
        regex: &Option<Spanned<String>>,
    ) -> Result<Option<Matcher>, String> {
        match (expect, regex) {
            (Some(_), Some(r)) => self.err(
                r.span().start,
                "give either expect (a substring) or regex, not both",
            ),
            (Some(e), None) if e.get_ref().is_empty() => self.err(
                e.span().start,
                "expect is empty: it would match every message",
            ),
            (Some(e), None) => Ok(Some(Matcher::Contains(Box::new(
                memmem::Finder::new(e.get_ref().as_bytes()).into_owned(),
            )))),
            (None, Some(r)) => match regex::bytes::Regex::new(r.get_ref()) {
                Ok(re) => Ok(Some(Matcher::Regex(re))),
                Err(e) => self.err(r.span().start, format!("invalid regex: {e}")),
            },
            (None, None) => Ok(None),
        }
    }

    fn payload(
        &self,
        send: &Option<Spanned<String>>,
        binary: bool,
        encoding: &Option<Spanned<String>>,
        columns: &[String],
    ) -> Result<Option<Payload>, String> {
        let Some(s) = send else {
            if let Some(e) = encoding {
                return self.err(
                    e.span().start,
                    "encoding applies to a binary send; there is no send",
                );
            }
            return Ok(None);
        };
        if !binary {
            if let Some(e) = encoding {
                return self.err(
                    e.span().start,
                    "encoding applies to binary = true sends only",
                );
            }
            return Ok(Some(Payload::Text(self.template(s, columns)?)));
        }
        let raw: String = s.get_ref().chars().filter(|c| !c.is_whitespace()).collect();
        let enc = encoding.as_ref().map_or("hex", |e| e.get_ref().as_str());
        let bytes = match enc {
            "hex" => decode_hex(&raw),
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(raw.as_bytes())
                .map_err(|e| format!("not base64: {e}")),
            other => {
                let at = encoding.as_ref().map_or(s.span().start, |e| e.span().start);
                return self.err(at, format!("encoding {other:?}: use \"hex\" or \"base64\""));
            }
        };
        match bytes {
            Ok(b) => Ok(Some(Payload::Binary(b))),
            Err(e) => self.err(s.span().start, format!("binary send ({enc}): {e}")),
        }
    }
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| format!("{:?} is not a hex byte", &s[i..i + 2]))
        })
        .collect()
}

/// Compiles the script text read from `path`.
pub fn compile(path: &Path, text: &str) -> Result<Script, String> {
    let doc: FileDoc = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        format!("{}: {}", position(path, text, at), e.message().trim())
    })?;
    let cx = Ctx { path, text };
    let dir = path.parent().unwrap_or(Path::new("."));
    let data = match &doc.data {
        Some(d) => {
            let p = dir.join(d.get_ref());
            match Data::load(&p) {
                Ok(data) => Some(data),
                Err(e) => return cx.err(d.span().start, format!("data: {e}")),
            }
        }
        None => None,
    };
    let columns: Vec<String> = data.as_ref().map(|d| d.columns.clone()).unwrap_or_default();

    // url: the server part is fixed, the path and query are a template.
    let url = doc.url.get_ref();
    let u0 = doc.url.span().start;
    let Some(scheme_end) = url.find("://") else {
        return cx.err(
            u0,
            format!("url {url:?} is not ws://HOST[:PORT]/PATH or wss://..."),
        );
    };
    let after = &url[scheme_end + 3..];
    let auth_len = after.find(['/', '?']).unwrap_or(after.len());
    let authority = &after[..auth_len];
    if authority.contains("{{") {
        return cx.err(
            u0,
            "the url's host and port cannot be templated (one server per run); put variables in the path or query",
        );
    }
    let base = format!("{}{authority}/", &url[..scheme_end + 3]);
    let target = parse_target(&base).or_else(|e| cx.err(u0, e))?;
    let mut rest = after[auth_len..].to_string();
    if rest.is_empty() || rest.starts_with('?') {
        rest.insert(0, '/');
    }
    let path_span = Spanned::new(doc.url.span(), rest);
    let path_template = cx.template(&path_span, &columns)?;

    let mut headers = Vec::new();
    for (name, v) in &doc.headers {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token) {
            return cx.err(
                v.span().start,
                format!("header name {name:?} is not an HTTP token"),
            );
        }
        if v.get_ref().contains(['\r', '\n']) {
            return cx.err(
                v.span().start,
                format!("header {name} contains a line break"),
            );
        }
        let lower = name.to_ascii_lowercase();
        if [
            "host",
            "upgrade",
            "connection",
            "sec-websocket-key",
            "sec-websocket-version",
        ]
        .contains(&lower.as_str())
        {
            return cx.err(
                v.span().start,
                format!("header {name} is set by ws-loadgen itself"),
            );
        }
        headers.push((name.clone(), cx.template(v, &columns)?));
    }

    let connections = match &doc.connections {
        Some(c) if *c.get_ref() <= 0 || *c.get_ref() > u32::MAX as i64 => {
            return cx.err(
                c.span().start,
                "connections must be between 1 and 4294967295",
            )
        }
        Some(c) => Some(*c.get_ref() as u32),
        None => None,
    };

    let ping_interval_ns = match &doc.ping_interval {
        Some(p) => cx.duration(p, "ping_interval")?,
        None => 0,
    };
    if doc.open.len() > MAX_STEPS {
        return cx.err(
            doc.open[MAX_STEPS].span().start,
            format!("more than {MAX_STEPS} [[open]] steps"),
        );
    }
    let mut open = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, st) in doc.open.iter().enumerate() {
        let at = st.span().start;
        let s = st.get_ref();
        let name = cx.name(&s.name, format!("open{}", i + 1))?;
        if names.contains(&name) {
            return cx.err(at, format!("step name {name:?} is used twice"));
        }
        names.push(name.clone());
        let send = cx.payload(&s.send, s.binary, &s.encoding, &columns)?;
        let expect = cx.matcher(&s.expect, &s.regex)?;
        let sleep_ns = match &s.sleep {
            Some(d) => cx.duration(d, "sleep")?,
            None => 0,
        };
        if sleep_ns > 0 && expect.is_some() {
            return cx.err(
                at,
                format!("step {name:?}: sleep and expect in one step; make them two steps"),
            );
        }
        let timeout_ns = match (&s.timeout, &expect) {
            (Some(t), Some(_)) => cx.duration(t, "timeout")?,
            (Some(t), None) => {
                return cx.err(
                    t.span().start,
                    "timeout applies to expect, and this step has none",
                )
            }
            (None, _) => DEFAULT_TIMEOUT_NS,
        };
        if send.is_none() && expect.is_none() && sleep_ns == 0 {
            return cx.err(
                at,
                format!("step {name:?} does nothing: give send, expect (or regex) or sleep"),
            );
        }
        open.push(Step {
            name,
            send,
            expect,
            timeout_ns,
            sleep_ns,
        });
    }

    let lp = match &doc.lp {
        None => None,
        Some(l) => {
            let at = l.span().start;
            let d = l.get_ref();
            let name = cx.name(&d.name, "loop".into())?;
            if names.contains(&name) {
                return cx.err(at, format!("loop name {name:?} is also a step's"));
            }
            let send = cx.payload(&d.send, d.binary, &d.encoding, &columns)?;
            let expect = cx.matcher(&d.expect, &d.regex)?;
            let rate = match &d.rate {
                Some(r) if send.is_none() => {
                    return cx.err(
                        r.span().start,
                        "rate without send: a loop without send only receives (push-only)",
                    )
                }
                Some(r) if !(r.get_ref().is_finite() && *r.get_ref() > 0.0) => {
                    return cx.err(
                        r.span().start,
                        "rate must be more than 0 (messages per second per connection)",
                    )
                }
                Some(r) => Some(*r.get_ref()),
                None => None,
            };
            let echo = d.echo.unwrap_or(send.is_some());
            if echo && send.is_none() {
                return cx.err(at, "echo = true needs a send");
            }
            let unstamped_text = matches!(&send, Some(Payload::Text(t)) if !t.has_stamp());
            if echo
                && (unstamped_text || matches!(send, Some(Payload::Binary(_))))
                && expect.is_none()
            {
                return cx.err(
                    at,
                    "the loop's sends carry no {{stamp}}, so a reply can only be told by expect: put {{stamp}} in send, give expect (or regex), or set echo = false",
                );
            }
            Some(Loop {
                name,
                rate,
                send,
                expect,
                echo,
            })
        }
    };
    if open.is_empty() && lp.is_none() {
        return cx.err(0, "the script has no [[open]] step and no [loop]: nothing for a connection to do (a hold run is --scenario hold)");
    }
    Ok(Script {
        path: path.to_path_buf(),
        url: url.clone(),
        target,
        path_template,
        headers,
        data,
        connections,
        ping_interval_ns,
        open,
        lp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of this call's own: tests run in parallel, and one rewriting a shared
    /// users.csv while another reads it made the reader see an empty file.
    fn dir() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("ws-script-{}-{n}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        std::fs::write(d.join("users.csv"), "user,token\nalice,t1\nbob,t2\n").unwrap();
        std::fs::write(d.join("ragged.csv"), "user,token\nalice\n").unwrap();
        d
    }

    fn check(text: &str) -> Result<Script, String> {
        compile(&dir().join("s.toml"), text)
    }

    const CHAT: &str = r#"url = "ws://127.0.0.1:9/chat?user={{user}}"
headers = { Authorization = "Bearer {{token}}" }
data = "users.csv"
connections = 10
[[open]]
name = "login"
send = '{"type":"login","user":"{{user}}","token":"{{token}}"}'
expect = '"ok":true'
timeout = "5s"
[[open]]
name = "join"
send = '{"type":"join","room":"r{{conn % 10}}"}'
regex = '"joined"'
[loop]
name = "say"
rate = 2
send = '{"type":"say","text":"{{stamp}}"}'
"#;

    #[test]
    fn the_chat_example_compiles() {
        let s = check(CHAT).unwrap();
        assert_eq!(s.open.len(), 2);
        assert_eq!(s.open[0].timeout_ns, 5_000_000_000);
        assert_eq!(s.connections, Some(10));
        assert_eq!(s.row(3)[0], "bob");
        let l = s.lp.as_ref().unwrap();
        assert!(l.echo && l.stamped() && l.rate == Some(2.0));
        assert_eq!(s.target.addr.port(), 9);
        assert!(!s.constant_request());
        assert_eq!(s.step_names(), vec!["login", "join"]);
    }

    /// The error for `text` and the `line:col` it names.
    fn err(text: &str) -> (String, String) {
        let e = check(text).unwrap_err();
        let after = e.split_once("s.toml:").map(|x| x.1).unwrap_or("");
        let mut it = after.splitn(3, ':');
        let pos = format!("{}:{}", it.next().unwrap_or(""), it.next().unwrap_or(""));
        (pos, e)
    }

    #[test]
    fn mistakes_name_line_and_column() {
        let (p, e) = err("url = \"ws://127.0.0.1:9/\"\nbogus = 1\n[loop]\n");
        assert_eq!(p, "2:1", "{e}");
        assert!(e.contains("bogus"), "{e}");
        let (p, e) = err("url = \"ws://127.0.0.1:9/\"\n[[open]]\nsend = \"hi {{usr}}\"\n");
        assert_eq!(p, "3:12", "{e}");
        assert!(
            e.contains("\"usr\" is not defined; defined: conn, conn % N, seq, stamp"),
            "{e}"
        );
        let (p, e) = err("url = \"ws://127.0.0.1:9/\"\ndata = \"nope.csv\"\n[loop]\n");
        assert_eq!(p, "2:8", "{e}");
        assert!(e.contains("nope.csv"), "{e}");
        let (_, e) = err("url = \"ws://127.0.0.1:9/\"\ndata = \"ragged.csv\"\n[loop]\n");
        assert!(e.contains("ragged.csv:2: this row has 1 field(s)"), "{e}");
        let (p, e) =
            err("url = \"ws://127.0.0.1:9/\"\n[[open]]\nexpect = \"x\"\ntimeout = \"5 parsecs\"\n");
        assert_eq!(p, "4:11", "{e}");
        let (p, e) = err("url = \"ws://127.0.0.1:9/\"\n[loop]\nsend = \"{{stamp}}\"\nrate = -1\n");
        assert_eq!(p, "4:8", "{e}");
        let (p, e) = err("url = \"ws://127.0.0.1:9/\"\n[[open]]\nregex = \"(\"\n");
        assert_eq!(p, "3:9", "{e}");
        assert!(e.contains("invalid regex"), "{e}");
        let (p, _) = err("url = \"ws://127.0.0.1:9/\"\n[[open]]\nname = \"a\"\n");
        assert_eq!(p, "2:1");
        let (_, e) = err("url = \"ws://{{host}}/\"\n[loop]\n");
        assert!(e.contains("cannot be templated"), "{e}");
        let (p, e) = err("url = \"ws://127.0.0.1:9/\"\n[loop]\nsend = \"no stamp\"\n");
        assert!(e.contains("{{stamp}}"), "{e}");
        assert_eq!(p, "2:1");
        let (p, _) = err("url = \"ws://127.0.0.1:9/\"\nconnections = 0\n[loop]\n");
        assert_eq!(p, "2:15");
        let (p, _) = err("url = \"ws://127.0.0.1:9/\"\n[[open]]\nsend = \"zz\"\nbinary = true\n");
        assert_eq!(p, "3:8");
        assert!(err("url = 3\n").1.contains("s.toml:1:7"));
        assert!(err("url = \"ws://127.0.0.1:9/\"\n")
            .1
            .contains("nothing for a connection"));
    }

    #[test]
    fn binary_and_push_only() {
        let s = check(
            "url = \"ws://127.0.0.1:9/\"\n[[open]]\nsend = \"0a 0B\"\nbinary = true\n[[open]]\nsend = \"AQI=\"\nbinary = true\nencoding = \"base64\"\n[[open]]\nsleep = \"1s\"\n[loop]\nexpect = \"news\"\n",
        )
        .unwrap();
        assert!(matches!(&s.open[0].send, Some(Payload::Binary(b)) if b == &[10, 11]));
        assert!(matches!(&s.open[1].send, Some(Payload::Binary(b)) if b == &[1, 2]));
        assert_eq!(s.open[2].sleep_ns, 1_000_000_000);
        assert!(s.constant_request());
        let l = s.lp.unwrap();
        assert!(!l.echo && l.send.is_none());
        assert!(l.expect.unwrap().matches(b"breaking news"));
    }
}

#[cfg(test)]
mod examples {
    /// Every example in examples/ compiles.
    #[test]
    fn the_examples_compile() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                super::Script::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 4, "{n} examples");
    }
}
