//! Helpers of the TLS end-to-end tests (`tests/tests/e2e_tls.rs`).
//!
//! - [`Pki`]: certificate authorities and certificates made at test time with the `openssl`
//!   command line (`openssl req`, `openssl ca`), in a directory of the test's own: a root
//!   CA, server certificates for `localhost` and 127.0.0.1, client certificates, and the
//!   wrong ones a test needs (another name, expired, about to expire).
//! - Clients that speak TLS without the test binary linking a TLS library: curl (HTTPS),
//!   `openssl s_client` (a line session over `tls://`, and which certificate a listener
//!   presents).
//! - Environments with every certificate-store variable of this machine taken out, so that
//!   what a client or the relay trusts is what the test gives it.
//!
//! Everything runs bounded (`run_bounded`); a program that cannot start fails the test.

// e2e_tls uses most of this; what it does not is kept for tests to come.
#![allow(dead_code)]

use crate::http_support::{run_bounded, Head, Ran, Response, TempDir, DEADLINE};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// The environment
// ---------------------------------------------------------------------------------------

/// Variables through which programs on this machine find certificate stores or extra CAs
/// (the development image sets most of them to the system bundle).
pub const CA_ENV: [&str; 12] = [
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "NIX_SSL_CERT_FILE",
    "GIT_SSL_CAINFO",
    "HTTPLIB2_CA_CERTS",
    "AWS_CA_BUNDLE",
    "PIP_CERT",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
];

/// Proxy variables: the tests' connections go to 127.0.0.1 directly.
const PROXY_ENV: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
];

/// Takes every certificate-store and proxy variable out of `cmd`'s environment.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for var in CA_ENV.iter().chain(PROXY_ENV.iter()) {
        cmd.env_remove(var);
    }
    cmd
}

// ---------------------------------------------------------------------------------------
// openssl
// ---------------------------------------------------------------------------------------

/// Runs `openssl args` in `dir`; its failure fails the test.
pub fn openssl(dir: &Path, args: &[&str]) -> Ran {
    let ran = run_bounded(
        clean_env(Command::new("openssl").current_dir(dir).args(args)),
        DEADLINE,
    )
    .unwrap_or_else(|| panic!("cannot run openssl (is it installed?)"));
    assert!(
        ran.ok(),
        "openssl {} failed ({}):\n{}{}",
        args.join(" "),
        ran.status,
        ran.stdout,
        ran.stderr
    );
    ran
}

/// A path as the `&str` a command line takes (the test paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// What key a certificate is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256 (the default).
    EcP256,
    Rsa2048,
    Ed25519,
}

/// How long a certificate is valid.
#[derive(Clone, Debug)]
pub enum Validity {
    /// From now on, this many days.
    Days(u32),
    /// Between two times, each `YYYYMMDDHHMMSSZ` (UTC).
    Between(String, String),
}

/// What to put in a certificate.
#[derive(Clone, Debug)]
pub struct Spec {
    pub cn: String,
    /// `subjectAltName`, e.g. `DNS:localhost,IP:127.0.0.1` (none for `None`).
    pub san: Option<String>,
    /// Its extended key usage: `serverAuth` or `clientAuth`; a CA has none.
    pub usage: Usage,
    pub key: KeyKind,
    pub validity: Validity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    /// An intermediate CA (`CA:TRUE, pathlen:0`).
    Ca,
}

/// The names a server certificate of the tests is valid for.
pub const SERVER_SAN: &str = "DNS:localhost,IP:127.0.0.1";

impl Spec {
    /// A server certificate for `localhost` and 127.0.0.1, valid 30 days, on a P-256 key.
    pub fn server(cn: &str) -> Spec {
        Spec {
            cn: cn.into(),
            san: Some(SERVER_SAN.into()),
            usage: Usage::Server,
            key: KeyKind::EcP256,
            validity: Validity::Days(30),
        }
    }

    /// A client certificate, valid 30 days.
    pub fn client(cn: &str) -> Spec {
        Spec {
            cn: cn.into(),
            san: None,
            usage: Usage::Client,
            key: KeyKind::EcP256,
            validity: Validity::Days(30),
        }
    }

    pub fn key(mut self, key: KeyKind) -> Spec {
        self.key = key;
        self
    }

    pub fn san(mut self, san: &str) -> Spec {
        self.san = Some(san.into());
        self
    }

    pub fn validity(mut self, validity: Validity) -> Spec {
        self.validity = validity;
        self
    }
}

/// A certificate file and its key file (both PEM; the key PKCS#8 as `openssl genpkey`
/// writes it).
#[derive(Clone, Debug)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cn: String,
}

impl CertKey {
    /// The first certificate of its file, as base64 without line breaks (to compare with
    /// what a server presented).
    pub fn leaf_base64(&self) -> String {
        first_pem_block(&fs::read_to_string(&self.cert).expect("reading a certificate"))
            .unwrap_or_else(|| panic!("no certificate in {}", self.cert.display()))
    }
}

/// A certificate authority of the test's own, in a directory removed on drop. Every
/// certificate it issues gets the next serial number.
pub struct Pki {
    dir: TempDir,
    pub root: CertKey,
}

impl Pki {
    /// A root CA (P-256, valid 30 days) named `<name> test CA`.
    pub fn new(name: &str) -> Pki {
        let dir = TempDir::new(&format!("pki-{name}"));
        let d = dir.path();
        fs::create_dir_all(d.join("issued")).expect("creating issued/");
        fs::write(d.join("index.txt"), "").expect("index.txt");
        fs::write(d.join("serial"), "1000\n").expect("serial");
        let config = format!(
            "[ ca ]\ndefault_ca = testca\n\
             [ testca ]\ndatabase = {db}\nnew_certs_dir = {issued}\nserial = {serial}\n\
             default_md = sha256\npolicy = policy_any\nunique_subject = no\n\
             copy_extensions = none\n\
             [ policy_any ]\ncommonName = supplied\n",
            db = d.join("index.txt").display(),
            issued = d.join("issued").display(),
            serial = d.join("serial").display(),
        );
        fs::write(d.join("ca.cnf"), config).expect("ca.cnf");
        let key = d.join("ca.key");
        let cert = d.join("ca.pem");
        gen_key(d, &key, KeyKind::EcP256);
        let subject = format!("/CN={name} test CA");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                s(&key),
                "-subj",
                &subject,
                "-days",
                "30",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                s(&cert),
            ],
        );
        Pki {
            dir,
            root: CertKey {
                cert,
                key,
                cn: format!("{name} test CA"),
            },
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The root CA's certificate: what clients are given to trust.
    pub fn ca(&self) -> &Path {
        &self.root.cert
    }

    /// A path in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues `spec` signed by the root CA, as `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, spec: &Spec) -> CertKey {
        self.issue_by(&self.root, file, spec)
    }

    /// Issues `spec` signed by `issuer` (the root or an intermediate of this PKI).
    pub fn issue_by(&self, issuer: &CertKey, file: &str, spec: &Spec) -> CertKey {
        let d = self.dir.path();
        let key = d.join(format!("{file}.key"));
        let csr = d.join(format!("{file}.csr"));
        let cert = d.join(format!("{file}.pem"));
        let ext = d.join(format!("{file}.ext"));
        gen_key(d, &key, spec.key);
        let subject = format!("/CN={}", spec.cn);
        openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                s(&key),
                "-subj",
                &subject,
                "-out",
                s(&csr),
            ],
        );
        let mut lines = vec!["[ ext ]".to_owned()];
        match spec.usage {
            Usage::Server | Usage::Client => {
                lines.push("basicConstraints = critical,CA:FALSE".into());
                lines.push("keyUsage = critical,digitalSignature".into());
                let eku = if spec.usage == Usage::Server {
                    "serverAuth"
                } else {
                    "clientAuth"
                };
                lines.push(format!("extendedKeyUsage = {eku}"));
            }
            Usage::Ca => {
                lines.push("basicConstraints = critical,CA:TRUE,pathlen:0".into());
                lines.push("keyUsage = critical,keyCertSign,cRLSign".into());
            }
        }
        if let Some(san) = &spec.san {
            lines.push(format!("subjectAltName = {san}"));
        }
        fs::write(&ext, lines.join("\n") + "\n").expect("writing the extension file");
        let config = d.join("ca.cnf");
        let mut args: Vec<String> = [
            "ca",
            "-batch",
            "-notext",
            "-config",
            s(&config),
            "-cert",
            s(&issuer.cert),
            "-keyfile",
            s(&issuer.key),
            "-in",
            s(&csr),
            "-out",
            s(&cert),
            "-extfile",
            s(&ext),
            "-extensions",
            "ext",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        match &spec.validity {
            Validity::Days(days) => args.extend(["-days".into(), days.to_string()]),
            Validity::Between(start, end) => args.extend([
                "-startdate".into(),
                start.clone(),
                "-enddate".into(),
                end.clone(),
            ]),
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        openssl(d, &args);
        CertKey {
            cert,
            key,
            cn: spec.cn.clone(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1 named `cn`.
    pub fn server(&self, file: &str, cn: &str) -> CertKey {
        self.issue(file, &Spec::server(cn))
    }

    /// A client certificate named `cn`.
    pub fn client(&self, file: &str, cn: &str) -> CertKey {
        self.issue(file, &Spec::client(cn))
    }

    /// An intermediate CA signed by the root.
    pub fn intermediate(&self, file: &str, cn: &str) -> CertKey {
        let spec = Spec {
            cn: cn.into(),
            san: None,
            usage: Usage::Ca,
            key: KeyKind::EcP256,
            validity: Validity::Days(30),
        };
        self.issue(file, &spec)
    }

    /// `leaf`'s certificate followed by `chain`'s, in `<file>`: a full chain.
    pub fn full_chain(&self, file: &str, leaf: &CertKey, chain: &[&CertKey]) -> CertKey {
        let mut pem = fs::read_to_string(&leaf.cert).expect("reading the leaf");
        for c in chain {
            pem.push_str(&fs::read_to_string(&c.cert).expect("reading a CA certificate"));
        }
        let path = self.path(file);
        fs::write(&path, pem).expect("writing the full chain");
        CertKey {
            cert: path,
            key: leaf.key.clone(),
            cn: leaf.cn.clone(),
        }
    }

    /// `key` in the traditional PEM form (`BEGIN RSA PRIVATE KEY`, PKCS#1, for RSA;
    /// `BEGIN EC PRIVATE KEY`, SEC1, for EC) in `<file>`.
    pub fn traditional_key(&self, key: &Path, file: &str) -> PathBuf {
        let out = self.path(file);
        openssl(
            self.dir(),
            &["pkey", "-in", s(key), "-traditional", "-out", s(&out)],
        );
        out
    }
}

fn gen_key(dir: &Path, out: &Path, kind: KeyKind) {
    let mut args = vec!["genpkey", "-out", s(out)];
    match kind {
        KeyKind::EcP256 => args.extend(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        KeyKind::Rsa2048 => args.extend(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        KeyKind::Ed25519 => args.extend(["-algorithm", "ED25519"]),
    }
    openssl(dir, &args);
}

/// The base64 of the first PEM certificate in `text`, without line breaks.
pub fn first_pem_block(text: &str) -> Option<String> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = text.find(begin)? + begin.len();
    let stop = start + text[start..].find(end)?;
    Some(text[start..stop].split_whitespace().collect())
}

/// Replaces `dest` with a copy of `src` the way a certificate renewal does: written next to
/// it, then renamed over it (a reader sees the old file or the new one, never half).
pub fn replace_file(src: &Path, dest: &Path) {
    let tmp = dest.with_extension("new");
    fs::copy(src, &tmp).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
    fs::rename(&tmp, dest).unwrap_or_else(|e| panic!("renaming onto {}: {e}", dest.display()));
}

// ---------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------

/// A UTC time `secs` after the epoch as (year, month, day, hour, minute, second).
pub fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// Now plus `offset`, as `openssl ca` takes a date (`YYYYMMDDHHMMSSZ`) and as the relay
/// prints one (`YYYY-MM-DD HH:MM:SS UTC`).
pub fn date_from_now(offset: Duration) -> (String, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    let (y, mo, d, h, mi, s) = civil((now + offset).as_secs());
    (
        format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z"),
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC"),
    )
}

// ---------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------

/// Runs `curl -sS --max-time 10 args` with no certificate store or proxy from the
/// environment (what it trusts is `--cacert`, if given).
pub fn curl(args: &[&str]) -> Ran {
    run_bounded(
        clean_env(
            Command::new("curl")
                .args(["-sS", "--max-time", "10", "--noproxy", "*"])
                .args(args),
        ),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|| panic!("cannot run curl (is it installed?)"))
}

/// `curl -i` output as a response: the last head (curl prints a `100 Continue` head first
/// when there was one) and the body.
pub fn parse_curl_i(out: &str) -> Option<Response> {
    let mut rest = out;
    loop {
        let (head, body) = rest.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        return Some(Response {
            head: Head { status, headers },
            body: body.as_bytes().to_vec(),
        });
    }
}

/// A JSON-RPC POST to a Streamable HTTP endpoint through curl (`args` say how to trust the
/// server, and which client certificate to show); the response, or curl's failure.
pub fn curl_post(
    url: &str,
    args: &[&str],
    session: Option<&str>,
    body: &str,
) -> Result<Response, Ran> {
    let session_header = session.map(|s| format!("Mcp-Session-Id: {s}"));
    let mut argv: Vec<&str> = vec![
        "-i",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-H",
        "Accept: application/json, text/event-stream",
    ];
    if let Some(h) = &session_header {
        argv.extend(["-H", h]);
    }
    argv.extend(args);
    argv.extend(["--data-binary", body, url]);
    let ran = curl(&argv);
    match (ran.ok(), parse_curl_i(&ran.stdout)) {
        (true, Some(resp)) => Ok(resp),
        _ => Err(ran),
    }
}

// ---------------------------------------------------------------------------------------
// openssl s_client
// ---------------------------------------------------------------------------------------

/// `openssl s_client` arguments to reach `addr` as `localhost` (SNI), trusting `ca` and
/// failing on a certificate it cannot verify.
pub fn s_client_args(addr: SocketAddr, ca: &Path) -> Vec<String> {
    vec![
        "s_client".into(),
        "-connect".into(),
        addr.to_string(),
        "-servername".into(),
        "localhost".into(),
        "-CAfile".into(),
        s(ca).into(),
        "-verify_return_error".into(),
    ]
}

/// The certificate (base64 of its DER, as in [`CertKey::leaf_base64`]) that a new handshake
/// with `addr` is presented, verified against `ca`; `Err` with s_client's output if the
/// handshake failed.
pub fn presented_cert(addr: SocketAddr, ca: &Path) -> Result<String, String> {
    let ran = run_bounded(
        clean_env(Command::new("openssl").args(s_client_args(addr, ca))),
        DEADLINE,
    )
    .unwrap_or_else(|| panic!("cannot run openssl s_client"));
    match first_pem_block(&ran.stdout) {
        Some(cert) if ran.ok() => Ok(cert),
        _ => Err(format!(
            "openssl s_client to {addr} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            ran.status, ran.stdout, ran.stderr
        )),
    }
}

/// The address of a listener of `scheme` (`tls`, `https`) from the relay's `listening on
/// SCHEME://ADDR` log line.
pub fn listener_addr(log_line: &str, scheme: &str) -> SocketAddr {
    let needle = format!("listening on {scheme}://");
    log_line
        .split(&needle)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no {scheme}:// address in {log_line:?}"))
}
