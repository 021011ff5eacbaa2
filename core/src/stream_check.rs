//! A push-based version of [`classify`](crate::message::classify) for lines too long to keep:
//! [`StreamCheck`] takes the line in pieces, keeps a bounded amount of state whatever the
//! line's length, and at the end says what `classify` would have said of the whole line.
//!
//! It accepts exactly what `classify` accepts, which is not quite "valid JSON": `classify`
//! reads some values (object keys, `method`, `type`, a top-level scalar, a batch's entries)
//! and skips the others (`result`, `error`, `params`, `id`, unknown keys, everything nested
//! deeper), and serde_json is stricter with what it reads than with what it skips:
//!
//! * a `\u` escape of a lone UTF-16 surrogate is refused in a string it reads, accepted in one
//!   it skips;
//! * a number too large for an f64 (`1e400`) is refused where it is read, accepted where it
//!   is skipped.
//!
//! UTF-8 is checked everywhere, and control characters are refused in every string.
//!
//! Nesting: serde_json's recursion limit (128) never applies to `classify`, which only
//! recurses three levels deep and skips everything deeper iteratively, so `classify` accepts
//! any depth. This checker keeps one bit per open container and refuses lines nested deeper
//! than [`MAX_DEPTH`] (8 KiB of state): the one place where it and `classify` can disagree.

use crate::message::{ClassifyError, Kind, RawId};
use serde_json::value::RawValue;

/// Deepest nesting accepted (`classify` has no limit; see the module's documentation).
pub const MAX_DEPTH: u32 = 1 << 16;
/// Longest id kept, in bytes of raw JSON text (as `IdScanner`).
pub const MAX_ID: usize = 256;
/// Longest method kept, in bytes once unescaped.
pub const MAX_METHOD: usize = 1024;
/// Longest params kept, in bytes of raw JSON text.
pub const MAX_PARAMS: usize = 4096;
/// Longest number checked where `classify` reads numbers (a top-level scalar, a batch entry,
/// the value of `method` or `type`); a longer one there is refused.
pub const MAX_READ_NUMBER: usize = 4096;

/// What a whole line turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streamed {
    /// As `classify` would say for an object; `Kind::Invalid` for a batch.
    pub kind: Kind,
    /// The top-level id's raw JSON text, if present, not null, and at most [`MAX_ID`] bytes.
    pub id: Option<RawId>,
    /// The id was present and not null but longer than [`MAX_ID`]: it is not kept (the kind
    /// still counts it, so a request with such an id is still a `Request`).
    pub long_id: bool,
    /// The method, unescaped, if it is a string of at most [`MAX_METHOD`] bytes.
    pub method: Option<String>,
    /// The method was a string longer than [`MAX_METHOD`]: it is not kept (the kind still
    /// counts it).
    pub long_method: bool,
    /// The raw params text, if present and at most [`MAX_PARAMS`] bytes.
    pub params: Option<Vec<u8>>,
    /// Length of the raw params text; 0 when there are no params.
    pub params_len: usize,
    /// `Some(n)`: the line is a valid batch (a JSON array) of `n` entries, which are not
    /// classified one by one (a batch is not handled in a stream; `kind` is `Invalid`).
    pub batch: Option<usize>,
}

impl Streamed {
    /// The params as a [`RawValue`], for the helpers of [`crate::message`].
    pub fn params_raw(&self) -> Option<&RawValue> {
        serde_json::from_slice(self.params.as_deref()?).ok()
    }
}

/// Checks one line pushed through it in pieces. See the module's documentation.
#[derive(Debug)]
pub struct StreamCheck {
    err: Option<String>,
    expect: Expect,
    lex: Lex,
    /// Open containers.
    depth: u32,
    /// One bit per open container, 1 for an object.
    stack: Vec<u64>,
    /// What the containers at depths 1 to 3 are (deeper ones are all skipped).
    roles: [Role; 3],
    /// The role of the scalar being lexed.
    val: ValRole,
    /// The last key of the envelope being read.
    key: Key,
    // Strings.
    esc: Esc,
    validate: bool,
    in_key: bool,
    /// UTF-8 continuation bytes still expected, and the range of the next one.
    utf8_need: u8,
    utf8_lo: u8,
    utf8_hi: u8,
    /// The unescaped text of the string being read, when wanted (a key, `method`, `type`).
    text: Vec<u8>,
    text_cap: usize,
    text_over: bool,
    // Numbers and literals.
    num: Num,
    num_text: Vec<u8>,
    num_over: bool,
    lit: &'static [u8],
    lit_at: usize,
    // Raw capture of the top-level id or params.
    cap: Option<Capture>,
    cap_depth: u32,
    cap_from: usize,
    cap_buf: Vec<u8>,
    cap_len: usize,
    // Facts about the top-level value.
    top: Top,
    id: Option<RawId>,
    id_len: usize,
    method: MethodSeen,
    method_text: Option<String>,
    long_method: bool,
    has_outcome: bool,
    heartbeat: bool,
    params: Option<Vec<u8>>,
    params_len: usize,
    entries: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Value,
    ValueOrClose,
    KeyOrClose,
    Key,
    Colon,
    CommaOrClose,
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    Between,
    Str,
    Num,
    Lit,
}

/// What an open container is to `classify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// An object read as a message; `top` when it is the line itself.
    Envelope { top: bool },
    /// The top-level array.
    Batch,
    /// An object as the value of `method` or `type`: keys read, values skipped.
    AnyObj,
    /// Skipped.
    Skipped,
}

/// What a value is to `classify`, from where it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValRole {
    Top,
    Entry,
    Method { top: bool },
    Type { top: bool },
    Id { top: bool },
    Params { top: bool },
    Skipped,
}

impl ValRole {
    /// `classify` reads it (strings checked strictly, numbers parsed).
    fn read(self) -> bool {
        matches!(
            self,
            ValRole::Top | ValRole::Entry | ValRole::Method { .. } | ValRole::Type { .. }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Id,
    Method,
    Outcome,
    Params,
    Type,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Esc {
    None,
    Backslash,
    Hex {
        n: u8,
        acc: u16,
    },
    /// After a leading surrogate, in a string read strictly: `\` must follow.
    WantBackslash {
        hi: u16,
    },
    WantU {
        hi: u16,
    },
    LowHex {
        hi: u16,
        n: u8,
        acc: u16,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capture {
    Id,
    Params,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Top {
    Unknown,
    Object,
    Array,
    Scalar,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MethodSeen {
    Absent,
    NotString,
    Str,
}

type Step = Result<(), &'static str>;

impl Default for StreamCheck {
    fn default() -> Self {
        Self::new()
    }
}

/// Strings up to this long are scanned byte by byte.
const SHORT: usize = 32;

/// Bytes that stand for themselves in a string: printable ASCII but `"` and `\`.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x80 {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

fn hex(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Whether any byte is a control character (below 0x20), a word at a time.
fn has_control(run: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    let mut words = run.chunks_exact(8);
    let mut acc = 0u64;
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        let x = u64::from_le_bytes(a);
        // Nonzero exactly when some byte is below 0x20 (the classic "has less than" test).
        acc |= x.wrapping_sub(ONES * 0x20) & !x & (ONES * 0x80);
    }
    acc != 0 || words.remainder().iter().any(|&b| b < 0x20)
}

impl StreamCheck {
    /// A checker for one line.
    pub fn new() -> Self {
        StreamCheck {
            err: None,
            expect: Expect::Value,
            lex: Lex::Between,
            depth: 0,
            stack: Vec::new(),
            roles: [Role::Skipped; 3],
            val: ValRole::Top,
            key: Key::Other,
            esc: Esc::None,
            validate: false,
            in_key: false,
            utf8_need: 0,
            utf8_lo: 0,
            utf8_hi: 0,
            text: Vec::new(),
            text_cap: 0,
            text_over: false,
            num: Num::Zero,
            num_text: Vec::new(),
            num_over: false,
            lit: b"",
            lit_at: 0,
            cap: None,
            cap_depth: 0,
            cap_from: 0,
            cap_buf: Vec::new(),
            cap_len: 0,
            top: Top::Unknown,
            id: None,
            id_len: 0,
            method: MethodSeen::Absent,
            method_text: None,
            long_method: false,
            has_outcome: false,
            heartbeat: false,
            params: None,
            params_len: 0,
            entries: 0,
        }
    }

    /// The first error found so far: the line is not JSON, and feeding more will not change
    /// that.
    pub fn error(&self) -> Option<&str> {
        self.err.as_deref()
    }

    /// The next bytes of the line, in any pieces.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.err.is_some() {
            return;
        }
        self.cap_from = 0;
        if let Err(e) = self.run(bytes) {
            self.err = Some(e.to_owned());
            return;
        }
        if self.cap.is_some() {
            self.capture(&bytes[self.cap_from..]);
        }
    }

    /// The line has ended: what `classify` would say of it.
    pub fn finish(mut self) -> Result<Streamed, ClassifyError> {
        if self.err.is_none() {
            let r = match self.lex {
                Lex::Num => self.end_number(0, &[]),
                Lex::Str => Err("EOF while parsing a string"),
                Lex::Lit => Err("EOF while parsing a literal"),
                Lex::Between => Ok(()),
            };
            if let Err(e) = r {
                self.err = Some(e.to_owned());
            } else if self.expect != Expect::End {
                self.err = Some("EOF while parsing a value".to_owned());
            }
        }
        if let Some(e) = self.err {
            return Err(ClassifyError::NotJson(e));
        }
        match self.top {
            Top::Object => {
                let has_method = self.method == MethodSeen::Str;
                let kind = match (has_method, self.method, self.has_outcome) {
                    (true, _, false) if self.id_len > 0 => Kind::Request,
                    (true, _, false) => Kind::Notification,
                    (false, MethodSeen::Absent, true) => Kind::Response,
                    (false, MethodSeen::Absent, false) if self.heartbeat => Kind::Heartbeat,
                    _ => Kind::Invalid,
                };
                Ok(Streamed {
                    kind,
                    long_id: self.id_len > MAX_ID,
                    id: self.id,
                    method: if has_method { self.method_text } else { None },
                    long_method: has_method && self.long_method,
                    params: self.params,
                    params_len: self.params_len,
                    batch: None,
                })
            }
            Top::Array => Ok(Streamed {
                kind: Kind::Invalid,
                id: None,
                long_id: false,
                method: None,
                long_method: false,
                params: None,
                params_len: 0,
                batch: Some(self.entries),
            }),
            Top::Scalar | Top::Unknown => Err(ClassifyError::NotAMessage),
        }
    }

    fn run(&mut self, bytes: &[u8]) -> Step {
        let mut i = 0;
        while i < bytes.len() {
            match self.lex {
                Lex::Str if self.esc == Esc::None && self.utf8_need == 0 => {
                    let rest = &bytes[i..];
                    // Short strings: a plain loop; long or non-ASCII ones: memchr and the
                    // standard library's UTF-8 check, over the whole run at once.
                    let short = rest.len().min(SHORT);
                    let mut j = 0;
                    while j < short && PLAIN[usize::from(rest[j])] {
                        j += 1;
                    }
                    if (j == short && short < rest.len()) || rest.get(j).is_some_and(|&b| b >= 0x80)
                    {
                        j += memchr::memchr2(b'"', b'\\', &rest[j..]).unwrap_or(rest.len() - j);
                        let run = &rest[..j];
                        if has_control(run) {
                            return Err("control character in a string");
                        }
                        if let Err(e) = std::str::from_utf8(run) {
                            if e.error_len().is_some() || j < rest.len() {
                                return Err("invalid UTF-8 in a string");
                            }
                            // A character cut by the end of this piece.
                            for &b in &run[e.valid_up_to()..] {
                                self.utf8_byte(b)?;
                            }
                        }
                    }
                    let run = &rest[..j];
                    if self.text_cap > 0 {
                        self.keep_text(run);
                    }
                    i += j;
                    if let Some(&b) = rest.get(j) {
                        self.string_byte(b, i, bytes)?;
                        i += 1;
                    }
                }
                Lex::Str => {
                    self.string_byte(bytes[i], i, bytes)?;
                    i += 1;
                }
                Lex::Num => {
                    let b = bytes[i];
                    if self.number_byte(b)? {
                        i += 1;
                    } else {
                        self.end_number(i, bytes)?;
                    }
                }
                Lex::Lit => {
                    let b = bytes[i];
                    if self.lit.get(self.lit_at) != Some(&b) {
                        return Err("invalid literal");
                    }
                    self.lit_at += 1;
                    i += 1;
                    if self.lit_at == self.lit.len() {
                        self.lex = Lex::Between;
                        let null = self.lit == b"null";
                        self.end_scalar(null, false, i, bytes)?;
                    }
                }
                Lex::Between => {
                    // Structural bytes in a row, without going back to the dispatch.
                    loop {
                        self.structural(bytes[i], i, bytes)?;
                        i += 1;
                        if i == bytes.len() || self.lex != Lex::Between {
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn structural(&mut self, b: u8, pos: usize, bytes: &[u8]) -> Step {
        if is_ws(b) {
            return Ok(());
        }
        match self.expect {
            Expect::Value => self.begin_value(b, pos),
            Expect::ValueOrClose if b == b']' => self.close(pos, bytes),
            Expect::ValueOrClose => self.begin_value(b, pos),
            Expect::KeyOrClose if b == b'}' => self.close(pos, bytes),
            Expect::KeyOrClose | Expect::Key if b == b'"' => {
                let role = self.role(self.depth);
                self.begin_string(
                    true,
                    !matches!(role, Role::Skipped),
                    if matches!(role, Role::Envelope { .. }) {
                        6
                    } else {
                        0
                    },
                );
                Ok(())
            }
            Expect::KeyOrClose | Expect::Key => Err("key must be a string"),
            Expect::Colon if b == b':' => {
                self.expect = Expect::Value;
                Ok(())
            }
            Expect::Colon => Err("expected `:`"),
            Expect::CommaOrClose => {
                let object = self.top_is_object();
                match b {
                    b',' => {
                        self.expect = if object { Expect::Key } else { Expect::Value };
                        Ok(())
                    }
                    b'}' if object => self.close(pos, bytes),
                    b']' if !object => self.close(pos, bytes),
                    _ => Err("expected `,` or the container's end"),
                }
            }
            Expect::End => Err("trailing characters"),
        }
    }

    fn role(&self, depth: u32) -> Role {
        match depth {
            1..=3 => self.roles[depth as usize - 1],
            _ => Role::Skipped,
        }
    }

    fn top_is_object(&self) -> bool {
        let d = self.depth as usize - 1;
        self.stack[d / 64] >> (d % 64) & 1 == 1
    }

    /// The role of a value starting now, from where it stands.
    fn value_role(&self) -> ValRole {
        if self.depth == 0 {
            return ValRole::Top;
        }
        match self.role(self.depth) {
            Role::Envelope { top } => match self.key {
                Key::Id => ValRole::Id { top },
                Key::Method => ValRole::Method { top },
                Key::Params => ValRole::Params { top },
                Key::Type => ValRole::Type { top },
                Key::Outcome | Key::Other => ValRole::Skipped,
            },
            Role::Batch => ValRole::Entry,
            Role::AnyObj | Role::Skipped => ValRole::Skipped,
        }
    }

    fn begin_value(&mut self, b: u8, pos: usize) -> Step {
        let role = self.value_role();
        self.val = role;
        match role {
            ValRole::Id { top: true } => self.begin_capture(Capture::Id, pos),
            ValRole::Params { top: true } => self.begin_capture(Capture::Params, pos),
            _ => {}
        }
        if self.depth == 0 {
            self.top = match b {
                b'{' => Top::Object,
                b'[' => Top::Array,
                _ => Top::Scalar,
            };
        }
        match b {
            b'{' | b'[' => {
                let object = b == b'{';
                let new = match (role, object) {
                    (ValRole::Top, true) => Role::Envelope { top: true },
                    (ValRole::Top, false) => Role::Batch,
                    (ValRole::Entry, true) => Role::Envelope { top: false },
                    (ValRole::Method { .. } | ValRole::Type { .. }, true) => Role::AnyObj,
                    _ => Role::Skipped,
                };
                self.open(object, new)
            }
            b'"' => {
                let cap = match role {
                    ValRole::Method { top: true } => MAX_METHOD,
                    ValRole::Type { top: true } => 9,
                    _ => 0,
                };
                self.begin_string(false, role.read(), cap);
                Ok(())
            }
            b'-' | b'0'..=b'9' => {
                self.lex = Lex::Num;
                self.num = match b {
                    b'-' => Num::Minus,
                    b'0' => Num::Zero,
                    _ => Num::Int,
                };
                self.num_text.clear();
                self.num_over = false;
                if role.read() {
                    self.num_text.push(b);
                }
                Ok(())
            }
            b't' | b'f' | b'n' => {
                self.lex = Lex::Lit;
                self.lit = match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                self.lit_at = 1;
                Ok(())
            }
            _ => Err("expected a value"),
        }
    }

    fn open(&mut self, object: bool, role: Role) -> Step {
        if self.depth >= MAX_DEPTH {
            return Err("nested too deeply");
        }
        let d = self.depth as usize;
        if d / 64 == self.stack.len() {
            self.stack.push(0);
        }
        let bit = 1u64 << (d % 64);
        if object {
            self.stack[d / 64] |= bit;
        } else {
            self.stack[d / 64] &= !bit;
        }
        self.depth += 1;
        if let 1..=3 = self.depth {
            self.roles[d] = role;
        }
        self.expect = if object {
            Expect::KeyOrClose
        } else {
            Expect::ValueOrClose
        };
        Ok(())
    }

    fn close(&mut self, pos: usize, bytes: &[u8]) -> Step {
        self.depth -= 1;
        // The value the container was, seen from its parent.
        self.val = self.value_role();
        self.end_scalar(false, false, pos + 1, bytes)
    }

    /// A value ended just before `end` (an index into `bytes`).
    fn end_scalar(&mut self, null: bool, string: bool, end: usize, bytes: &[u8]) -> Step {
        if self.cap.is_some() && self.depth == self.cap_depth {
            self.end_capture(null, end, bytes);
        }
        match self.val {
            ValRole::Method { top: true } => {
                self.method = if string {
                    MethodSeen::Str
                } else {
                    MethodSeen::NotString
                };
                if string {
                    self.long_method = self.text_over;
                    self.method_text = if self.text_over {
                        None
                    } else {
                        String::from_utf8(std::mem::take(&mut self.text)).ok()
                    };
                }
            }
            ValRole::Type { top: true } => {
                self.heartbeat = string
                    && !self.text_over
                    && matches!(&self.text[..], b"heartbeat" | b"handshake");
            }
            _ => {}
        }
        if self.depth == 1 && self.roles[0] == Role::Batch {
            self.entries += 1;
        }
        if self.depth == 1
            && self.key == Key::Outcome
            && self.roles[0] == (Role::Envelope { top: true })
        {
            self.has_outcome = true;
        }
        self.expect = if self.depth == 0 {
            Expect::End
        } else {
            Expect::CommaOrClose
        };
        Ok(())
    }

    fn begin_capture(&mut self, what: Capture, pos: usize) {
        self.cap = Some(what);
        self.cap_depth = self.depth;
        self.cap_from = pos;
        self.cap_buf.clear();
        self.cap_len = 0;
    }

    fn capture(&mut self, piece: &[u8]) {
        let limit = match self.cap {
            Some(Capture::Id) => MAX_ID,
            _ => MAX_PARAMS,
        };
        self.cap_len += piece.len();
        let room = limit.saturating_sub(self.cap_buf.len());
        self.cap_buf
            .extend_from_slice(&piece[..piece.len().min(room)]);
    }

    fn end_capture(&mut self, null: bool, end: usize, bytes: &[u8]) {
        let from = self.cap_from.min(end);
        self.capture(&bytes[from..end]);
        let len = self.cap_len;
        match self.cap.take() {
            Some(Capture::Id) if null => {
                self.id = None;
                self.id_len = 0;
            }
            Some(Capture::Id) => {
                self.id_len = len;
                self.id = if len <= MAX_ID {
                    std::str::from_utf8(&self.cap_buf)
                        .ok()
                        .and_then(|t| RawValue::from_string(t.to_owned()).ok())
                        .map(|r| RawId::from_raw(&r))
                } else {
                    None
                };
            }
            Some(Capture::Params) => {
                self.params_len = len;
                self.params = (len <= MAX_PARAMS).then(|| std::mem::take(&mut self.cap_buf));
            }
            None => {}
        }
    }

    fn begin_string(&mut self, key: bool, validate: bool, text_cap: usize) {
        self.lex = Lex::Str;
        self.in_key = key;
        self.validate = validate;
        self.esc = Esc::None;
        self.text.clear();
        self.text_cap = text_cap;
        self.text_over = false;
    }

    fn keep_text(&mut self, run: &[u8]) {
        let room = self.text_cap - self.text.len();
        if run.len() > room {
            self.text_over = true;
            self.text.extend_from_slice(&run[..room]);
        } else {
            self.text.extend_from_slice(run);
        }
    }

    fn keep_char(&mut self, c: u32) {
        if self.text_cap > 0 {
            let mut buf = [0u8; 4];
            // Surrogates never reach here: read strings pair them, skipped ones keep nothing.
            let n = char::from_u32(c).map_or(0, |c| c.encode_utf8(&mut buf).len());
            self.keep_text(&buf[..n]);
        }
    }

    fn utf8_byte(&mut self, b: u8) -> Step {
        if self.utf8_need > 0 {
            if b < self.utf8_lo || b > self.utf8_hi {
                return Err("invalid UTF-8 in a string");
            }
            self.utf8_need -= 1;
            self.utf8_lo = 0x80;
            self.utf8_hi = 0xBF;
            return Ok(());
        }
        let (need, lo, hi) = match b {
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return Err("invalid UTF-8 in a string"),
        };
        self.utf8_need = need;
        self.utf8_lo = lo;
        self.utf8_hi = hi;
        Ok(())
    }

    /// One byte of a string, off the fast path: an escape, a quote, or a byte of a
    /// character cut between pieces.
    fn string_byte(&mut self, b: u8, pos: usize, bytes: &[u8]) -> Step {
        if self.utf8_need > 0 {
            self.utf8_byte(b)?;
            if self.text_cap > 0 {
                self.keep_text(&[b]);
            }
            return Ok(());
        }
        match self.esc {
            Esc::None => match b {
                b'"' => {
                    self.lex = Lex::Between;
                    if self.in_key {
                        self.end_key();
                        Ok(())
                    } else {
                        self.end_scalar(false, true, pos + 1, bytes)
                    }
                }
                b'\\' => {
                    self.esc = Esc::Backslash;
                    Ok(())
                }
                0..=0x1F => Err("control character in a string"),
                0x80.. => {
                    self.utf8_byte(b)?;
                    if self.text_cap > 0 {
                        self.keep_text(&[b]);
                    }
                    Ok(())
                }
                _ => {
                    if self.text_cap > 0 {
                        self.keep_text(&[b]);
                    }
                    Ok(())
                }
            },
            Esc::Backslash => {
                let c = match b {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 8,
                    b'f' => 12,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.esc = Esc::Hex { n: 0, acc: 0 };
                        return Ok(());
                    }
                    _ => return Err("invalid escape"),
                };
                self.esc = Esc::None;
                if self.text_cap > 0 {
                    self.keep_text(&[c]);
                }
                Ok(())
            }
            Esc::Hex { n, acc } => {
                let acc = acc << 4 | hex(b).ok_or("invalid escape")?;
                if n < 3 {
                    self.esc = Esc::Hex { n: n + 1, acc };
                    return Ok(());
                }
                self.esc = Esc::None;
                if !self.validate {
                    return Ok(());
                }
                match acc {
                    0xDC00..=0xDFFF => Err("lone surrogate in a \\u escape"),
                    0xD800..=0xDBFF => {
                        self.esc = Esc::WantBackslash { hi: acc };
                        Ok(())
                    }
                    _ => {
                        self.keep_char(u32::from(acc));
                        Ok(())
                    }
                }
            }
            Esc::WantBackslash { hi } if b == b'\\' => {
                self.esc = Esc::WantU { hi };
                Ok(())
            }
            Esc::WantU { hi } if b == b'u' => {
                self.esc = Esc::LowHex { hi, n: 0, acc: 0 };
                Ok(())
            }
            Esc::WantBackslash { .. } | Esc::WantU { .. } => Err("lone surrogate in a \\u escape"),
            Esc::LowHex { hi, n, acc } => {
                let acc = acc << 4 | hex(b).ok_or("invalid escape")?;
                if n < 3 {
                    self.esc = Esc::LowHex { hi, n: n + 1, acc };
                    return Ok(());
                }
                if !(0xDC00..=0xDFFF).contains(&acc) {
                    return Err("lone surrogate in a \\u escape");
                }
                self.esc = Esc::None;
                let c = 0x10000 + ((u32::from(hi) - 0xD800) << 10 | (u32::from(acc) - 0xDC00));
                self.keep_char(c);
                Ok(())
            }
        }
    }

    fn end_key(&mut self) {
        self.expect = Expect::Colon;
        if let Role::Envelope { .. } = self.role(self.depth) {
            self.key = if self.text_over {
                Key::Other
            } else {
                match &self.text[..] {
                    b"id" => Key::Id,
                    b"method" => Key::Method,
                    b"result" | b"error" => Key::Outcome,
                    b"params" => Key::Params,
                    b"type" => Key::Type,
                    _ => Key::Other,
                }
            };
        }
    }

    /// Whether `b` continues the number.
    fn number_byte(&mut self, b: u8) -> Result<bool, &'static str> {
        let next = match (self.num, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, b'1'..=b'9') => Num::Int,
            (Num::Zero, b'0'..=b'9') => return Err("invalid number"),
            (Num::Int, b'0'..=b'9') => Num::Int,
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::E,
            (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
            (Num::E, b'+' | b'-') => Num::ESign,
            (Num::E | Num::ESign | Num::Exp, b'0'..=b'9') => Num::Exp,
            (Num::Minus | Num::Dot | Num::E | Num::ESign, _) => return Err("invalid number"),
            _ => return Ok(false),
        };
        self.num = next;
        if self.val.read() {
            if self.num_text.len() < MAX_READ_NUMBER {
                self.num_text.push(b);
            } else {
                self.num_over = true;
            }
        }
        Ok(true)
    }

    /// The number ended just before `end`.
    fn end_number(&mut self, end: usize, bytes: &[u8]) -> Step {
        if matches!(self.num, Num::Minus | Num::Dot | Num::E | Num::ESign) {
            return Err("invalid number");
        }
        self.lex = Lex::Between;
        if self.val.read() {
            if self.num_over {
                return Err("number too long to check");
            }
            // Where classify reads a number, serde_json parses it, and refuses one too large
            // for an f64: parse it the same way.
            let text = std::str::from_utf8(&self.num_text).map_err(|_| "invalid number")?;
            if serde_json::from_str::<serde_json::Value>(text).is_err() {
                return Err("number out of range");
            }
        }
        self.end_scalar(false, false, end, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{classify, Message};

    /// What `classify` says of a line, in the checker's terms.
    fn reference(line: &[u8]) -> Result<Streamed, ClassifyError> {
        match classify(line)? {
            Message::Single(e) => {
                let params = e.params.map(|p| p.get().as_bytes().to_vec());
                Ok(Streamed {
                    kind: e.kind,
                    long_id: e.id.is_some_and(|i| i.get().len() > MAX_ID),
                    id: e
                        .id
                        .filter(|i| i.get().len() <= MAX_ID)
                        .map(RawId::from_raw),
                    long_method: e.method.as_ref().is_some_and(|m| m.len() > MAX_METHOD),
                    method: e
                        .method
                        .filter(|m| m.len() <= MAX_METHOD)
                        .map(|m| m.into_owned()),
                    params_len: params.as_ref().map_or(0, Vec::len),
                    params: params.filter(|p| p.len() <= MAX_PARAMS),
                    batch: None,
                })
            }
            Message::Batch(es) => Ok(Streamed {
                kind: Kind::Invalid,
                id: None,
                long_id: false,
                method: None,
                long_method: false,
                params: None,
                params_len: 0,
                batch: Some(es.len()),
            }),
        }
    }

    fn in_pieces(pieces: &[&[u8]]) -> Result<Streamed, ClassifyError> {
        let mut c = StreamCheck::new();
        for p in pieces {
            c.feed(p);
        }
        c.finish()
    }

    /// The checker agrees with `classify` on `line` whole, byte by byte, and split in two
    /// at every position; returns the verdict.
    fn agree(line: &[u8]) -> Result<Streamed, ClassifyError> {
        let want = reference(line);
        let same = |got: &Result<Streamed, ClassifyError>, how: &str| match (got, &want) {
            (Err(ClassifyError::NotJson(_)), Err(ClassifyError::NotJson(_))) => {}
            _ => assert_eq!(got, &want, "{how} for {:?}", String::from_utf8_lossy(line)),
        };
        same(&in_pieces(&[line]), "whole");
        let bytes: Vec<&[u8]> = line.chunks(1).collect();
        same(&in_pieces(&bytes), "byte by byte");
        for at in 0..=line.len() {
            let (a, b) = line.split_at(at);
            same(&in_pieces(&[a, b]), &format!("split at {at}"));
        }
        want
    }

    fn kind(line: &str) -> String {
        match agree(line.as_bytes()) {
            Ok(s) if s.batch.is_some() => format!("batch {}", s.batch.unwrap_or(0)),
            Ok(s) => format!(
                "{:?} {} {}",
                s.kind,
                s.id.as_ref().map_or("-", |i| i.as_str()),
                s.method.as_deref().unwrap_or("-")
            ),
            Err(ClassifyError::NotJson(_)) => "not json".into(),
            Err(ClassifyError::NotAMessage) => "not a message".into(),
        }
    }

    #[test]
    fn classifies_like_classify() {
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
                "Request 1 ping",
            ),
            (
                r#"{"method":"tools/call","params":{"id":9},"jsonrpc":"2.0","id":"a"}"#,
                r#"Request "a" tools/call"#,
            ),
            (r#"{"jsonrpc":"2.0","method":"n"}"#, "Notification - n"),
            (r#"{"id":null,"method":"x"}"#, "Notification - x"),
            (r#"{"id":3,"result":{}}"#, "Response 3 -"),
            (r#"{"id":null,"error":{"code":1}}"#, "Response - -"),
            (r#"{"type":"heartbeat"}"#, "Heartbeat - -"),
            (r#"{"type":"handshake","x":1}"#, "Heartbeat - -"),
            (r#"{"type":"heartbeats"}"#, "Invalid - -"),
            (r#"{"type":"he\u0061rtbeat"}"#, "Heartbeat - -"),
            (r#"{"id":1,"method":5}"#, "Invalid 1 -"),
            (r#"{"method":"a\/b","id":2}"#, "Request 2 a/b"),
            (r#"{"\u0069d":7,"m\u0065thod":"q"}"#, "Request 7 q"),
            (
                r#"{"method":"\ud83d\ude00","id":[1, {"a":2}]}"#,
                "Request [1, {\"a\":2}] \u{1f600}",
            ),
            // Duplicates: the later one wins, as in read_envelope.
            (r#"{"id":1,"id":null,"method":"m"}"#, "Notification - m"),
            (r#"{"id":null,"id":2,"method":"m"}"#, "Request 2 m"),
            (r#"{"method":"a","method":{"b":1}}"#, "Invalid - -"),
            (r#"{"method":1,"method":"b"}"#, "Notification - b"),
            (r#"{"type":"heartbeat","type":1}"#, "Invalid - -"),
            (r#"{"method":"m","result":1}"#, "Invalid - m"),
            (r#"{}"#, "Invalid - -"),
            (
                " \t\r\n{ \"id\" : -0 , \"result\" : null } \r\n\t",
                "Response -0 -",
            ),
            (r#"{"id":1e5,"result":1}"#, "Response 1e5 -"),
            (r#"[{"id":1,"method":"a"},{"method":"b"},3]"#, "batch 3"),
            ("[]", "batch 0"),
            ("[[[]],\"\\ud800x\"]", "not json"),
            ("[\"\\udc00\"]", "not json"),
            ("[1e400]", "not json"),
            ("[[1e400, \"\\udc00\"]]", "batch 1"),
            ("42", "not a message"),
            ("\"\\ud83d\\ude00\"", "not a message"),
            ("\"\\ud83d\"", "not json"),
            ("\"\\ud83d\\n\"", "not json"),
            ("true", "not a message"),
            ("null ", "not a message"),
            ("-0.5e-3", "not a message"),
            ("1e400", "not json"),
            ("-1e400", "not json"),
            ("1e-400", "not a message"),
            ("01", "not json"),
            ("-", "not json"),
            ("1.", "not json"),
            ("1.e5", "not json"),
            ("1e", "not json"),
            ("1e+", "not json"),
            ("+1", "not json"),
            (".5", "not json"),
            ("42 x", "not json"),
            ("tru", "not json"),
            ("truex", "not json"),
            ("nul", "not json"),
            ("", "not json"),
            (" \r\n", "not json"),
            ("hello", "not json"),
            (r#"{"id":1} x"#, "not json"),
            (r#"{"id":1}{}"#, "not json"),
            (r#"{"id":1,"method":"a""#, "not json"),
            (r#"{"id":1,}"#, "not json"),
            (r#"{"a":[1,]}"#, "not json"),
            (r#"{"a":[,1]}"#, "not json"),
            (r#"{"a" 1}"#, "not json"),
            (r#"{1:1}"#, "not json"),
            (r#"{"a":1]"#, "not json"),
            (r#"{"a":[1}"#, "not json"),
            (r#"{"a":"\x"}"#, "not json"),
            (r#"{"a":"\u12"}"#, "not json"),
            (r#"{"a":"\u12G4"}"#, "not json"),
            ("{\"a\":\"tab\there\"}", "not json"),
            ("{\"a\":\"\u{7f}\u{e9}\u{20ac}\u{1f600}\"}", "Invalid - -"),
            // Lone surrogates: accepted where classify skips, refused where it reads.
            (r#"{"result":"\ud800","id":1}"#, "Response 1 -"),
            (r#"{"result":{"\udc00":1},"id":1}"#, "Response 1 -"),
            (r#"{"id":"\ud800","result":1}"#, "Response \"\\ud800\" -"),
            (
                r#"{"params":"\udfff\ud800\ud800","method":"m"}"#,
                "Notification - m",
            ),
            (r#"{"method":"\ud800","id":1}"#, "not json"),
            (r#"{"method":"\udc00"}"#, "not json"),
            (r#"{"method":"\ud800\u0041"}"#, "not json"),
            (r#"{"method":"\ud800\n"}"#, "not json"),
            (r#"{"type":"\ud800"}"#, "not json"),
            (r#"{"x\ud800":1}"#, "not json"),
            (r#"{"method":{"\ud800":1}}"#, "not json"),
            (r#"{"method":{"a":"\ud800"}}"#, "Invalid - -"),
            (r#"{"method":[{"\ud800":1e400}]}"#, "Invalid - -"),
            // Big numbers: refused where classify reads them.
            (r#"{"result":1e400,"id":1}"#, "Response 1 -"),
            (r#"{"id":1e400,"result":1}"#, "Response 1e400 -"),
            (r#"{"method":1e400}"#, "not json"),
            (r#"{"type":-1e400}"#, "not json"),
            (r#"{"method":{"a":1e400}}"#, "Invalid - -"),
            (r#"{"result":01}"#, "not json"),
            (r#"{"result":-}"#, "not json"),
            (r#"{"result":[-0,0.0,1E+2,1e-2]}"#, "Response - -"),
            ("\u{feff}{}", "not json"),
        ];
        for (line, want) in cases {
            assert_eq!(kind(line), want, "for {line}");
        }
    }

    #[test]
    fn invalid_utf8_anywhere() {
        for line in [
            &b"{\"result\":{\"nam\xff\":\"s\"},\"id\":1}"[..],
            b"{\"method\":\"x\",\"other\":\"\xc3\"}",
            b"{\"method\":\"x\xc3\xa9\xc3\"}",
            b"{\"a\":\"\xed\xa0\x80\"}",
            b"{\"a\":\"\xf4\x90\x80\x80\"}",
            b"{\"a\":\"\xc0\xaf\"}",
            b"{\"a\":\"\xe2\x82\"}",
            b"{\"a\":\xc3\xa9}",
            b"\xff",
        ] {
            assert!(matches!(agree(line), Err(ClassifyError::NotJson(_))));
        }
        let ok = "{\"method\":\"\u{e9}\u{20ac}\u{10348}\",\"params\":\"\u{10ffff}\"}";
        assert_eq!(
            agree(ok.as_bytes()).unwrap().method.as_deref(),
            Some("\u{e9}\u{20ac}\u{10348}")
        );
    }

    #[test]
    fn nesting_has_no_small_limit() {
        // serde_json's recursion limit (128) never applies to what classify skips.
        for depth in [1, 126, 127, 128, 129, 300] {
            let line = format!(
                r#"{{"id":1,"result":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert_eq!(kind(&line), "Response 1 -", "depth {depth}");
            let line = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                kind(&line),
                "batch 1".replace('1', if depth == 1 { "0" } else { "1" })
            );
            let line = format!(
                r#"{{"result":{}}}"#,
                "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth)
            );
            agree(line.as_bytes()).unwrap();
        }
        let deep = MAX_DEPTH as usize;
        let line = format!(r#"{{"result":{}{}}}"#, "[".repeat(deep), "]".repeat(deep));
        assert!(in_pieces(&[line.as_bytes()]).is_err());
        let line = format!(
            r#"{{"result":{}{}}}"#,
            "[".repeat(deep - 1),
            "]".repeat(deep - 1)
        );
        assert!(in_pieces(&[line.as_bytes()]).is_ok());
    }

    #[test]
    fn keeps_what_fits() {
        let long_id = format!("\"{}\"", "i".repeat(MAX_ID));
        let line = format!(r#"{{"id":{long_id},"method":"m"}}"#);
        let s = agree(line.as_bytes()).unwrap();
        assert_eq!((s.kind, s.id, s.long_id), (Kind::Request, None, true));
        let id = format!("\"{}\"", "i".repeat(MAX_ID - 2));
        let line = format!(r#"{{"id":{id},"method":"m"}}"#);
        assert_eq!(agree(line.as_bytes()).unwrap().id.unwrap().as_str(), id);

        let m = "m".repeat(MAX_METHOD);
        let line = format!(r#"{{"method":"{m}"}}"#);
        assert_eq!(
            agree(line.as_bytes()).unwrap().method.as_deref(),
            Some(&m[..])
        );
        let line = format!(r#"{{"method":"{m}\u0041"}}"#);
        let s = agree(line.as_bytes()).unwrap();
        assert_eq!(
            (s.kind, s.method, s.long_method),
            (Kind::Notification, None, true)
        );

        let p = format!("[\"{}\"]", "p".repeat(MAX_PARAMS - 4));
        let line = format!(r#"{{"method":"m","params":{p}}}"#);
        let s = agree(line.as_bytes()).unwrap();
        assert_eq!(s.params.as_deref(), Some(p.as_bytes()));
        assert_eq!(s.params_len, MAX_PARAMS);
        assert!(s.params_raw().is_some());
        let p = format!("[\"{}\" ]", "p".repeat(MAX_PARAMS));
        let line = format!(r#"{{"method":"m","params": {p} }}"#);
        let s = in_pieces(&[line.as_bytes()]).unwrap();
        assert_eq!((s.params, s.params_len), (None, p.len()));
    }

    #[test]
    fn stops_at_the_first_error() {
        let mut c = StreamCheck::new();
        c.feed(br#"{"id":1,"#);
        assert_eq!(c.error(), None);
        c.feed(br#"]"#);
        let e = c.error().map(str::to_owned);
        assert!(e.is_some());
        c.feed(br#""method":"m"}"#);
        assert_eq!(c.error().map(str::to_owned), e);
        assert!(matches!(c.finish(), Err(ClassifyError::NotJson(_))));
    }
}
