//! `WWW-Authenticate: Bearer …` (RFC 6750 §3, RFC 9728 §5.1): the parameters of the Bearer
//! challenge among any others the header carries.

/// What a Bearer challenge says. Unknown parameters are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    /// `resource_metadata`: where the protected resource metadata is (RFC 9728).
    pub resource_metadata: Option<String>,
    /// `scope`: the scopes the resource wants for this request.
    pub scope: Option<String>,
    /// `error`, e.g. `invalid_token` or `insufficient_scope`.
    pub error: Option<String>,
}

impl Challenge {
    /// Whether this is a step-up challenge (`error="insufficient_scope"`).
    pub fn insufficient_scope(&self) -> bool {
        self.error.as_deref() == Some("insufficient_scope")
    }

    /// Parses the Bearer challenge of a `WWW-Authenticate` value; `None` when it has none.
    /// Several header lines may be passed joined with `,`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let mut lexer = Lexer {
            s: header.as_bytes(),
            i: 0,
        };
        let mut in_bearer = false;
        let mut found = None::<Challenge>;
        loop {
            lexer.skip(b" \t,");
            let Some(token) = lexer.token() else {
                // Not a token (or the end): skip one byte so that junk cannot loop.
                if lexer.i >= lexer.s.len() {
                    break;
                }
                lexer.i += 1;
                continue;
            };
            lexer.skip(b" \t");
            if lexer.peek() == Some(b'=') {
                lexer.i += 1;
                lexer.skip(b" \t");
                if matches!(lexer.peek(), None | Some(b',' | b'=')) {
                    // The end of a token68 (`Basic dXNlcg==`), not a parameter.
                    lexer.skip(b"=");
                    continue;
                }
                // A parameter of the current challenge.
                let value = lexer.value();
                if in_bearer {
                    if let Some(c) = found.as_mut() {
                        let slot = match token.to_ascii_lowercase().as_str() {
                            "resource_metadata" => Some(&mut c.resource_metadata),
                            "scope" => Some(&mut c.scope),
                            "error" => Some(&mut c.error),
                            _ => None,
                        };
                        if let Some(slot) = slot {
                            slot.get_or_insert(value);
                        }
                    }
                }
            } else {
                // A new challenge's scheme (or a token68 without padding, which names no
                // scheme of ours).
                if found.is_some() && in_bearer {
                    break;
                }
                in_bearer = token.eq_ignore_ascii_case("bearer");
                if in_bearer {
                    found = Some(Challenge::default());
                }
            }
        }
        found
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, set: &[u8]) {
        while self.peek().is_some_and(|b| set.contains(&b)) {
            self.i += 1;
        }
    }

    /// An RFC 9110 token.
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A parameter value: a quoted string (with `\` escapes) or a token.
    fn value(&mut self) -> String {
        if self.peek() != Some(b'"') {
            let start = self.i;
            while self
                .peek()
                .is_some_and(|b| b != b',' && b != b' ' && b != b'\t')
            {
                self.i += 1;
            }
            return String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        }
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                b => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, expect: Option<(Option<&str>, Option<&str>, Option<&str>)>) {
        let got = Challenge::parse(header);
        let want = expect.map(|(rm, scope, error)| Challenge {
            resource_metadata: rm.map(str::to_owned),
            scope: scope.map(str::to_owned),
            error: error.map(str::to_owned),
        });
        assert_eq!(got, want, "{header}");
    }

    #[test]
    fn bearer_parameters() {
        check(
            r#"Bearer resource_metadata="https://h/.well-known/oauth-protected-resource/mcp""#,
            Some((
                Some("https://h/.well-known/oauth-protected-resource/mcp"),
                None,
                None,
            )),
        );
        check(
            r#"Bearer error="insufficient_scope", scope="files:read files:write", resource_metadata="https://h/prm""#,
            Some((
                Some("https://h/prm"),
                Some("files:read files:write"),
                Some("insufficient_scope"),
            )),
        );
        check(
            r#"bearer realm="x",scope=read , error=invalid_token"#,
            Some((None, Some("read"), Some("invalid_token"))),
        );
        check("Bearer", Some((None, None, None)));
        check(
            r#"Bearer scope="a \"quoted\" b""#,
            Some((None, Some(r#"a "quoted" b"#), None)),
        );
    }

    #[test]
    fn among_other_challenges() {
        check(
            r#"Basic realm="r", Bearer scope="s", DPoP algs="ES256""#,
            Some((None, Some("s"), None)),
        );
        check(
            r#"Basic dXNlcjpwYXNz==, Bearer scope="s""#,
            Some((None, Some("s"), None)),
        );
        check(
            r#"DPoP scope="s", Bearer error="e""#,
            Some((None, None, Some("e"))),
        );
        check(r#"Basic realm="r""#, None);
        check("", None);
    }

    #[test]
    fn junk_ends() {
        for junk in [
            "=,=,\"",
            "Bearer scope=\"unterminated",
            "Bearer ===",
            "\u{0}\u{1}",
            "Bearer ,,,, ,",
        ] {
            let _ = Challenge::parse(junk);
        }
        check(
            "Bearer scope=\"unterminated",
            Some((None, Some("unterminated"), None)),
        );
    }

    #[test]
    fn step_up_is_recognised() {
        let c = Challenge::parse(r#"Bearer error="insufficient_scope", scope="admin""#).unwrap();
        assert!(c.insufficient_scope());
        assert!(!Challenge::parse("Bearer").unwrap().insufficient_scope());
    }
}
