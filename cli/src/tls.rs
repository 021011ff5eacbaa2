//! TLS files → rustls configurations: the certificate, key and client CA of a TLS listener,
//! and the trust of an `https://` remote. Every mistake in a file becomes one line naming
//! the flag and the path; what still works but deserves attention (a certificate about to
//! expire, an unreadable file in the system store) comes back as a warning.
//!
//! The crypto provider is always ring, passed explicitly: nothing here depends on a
//! process-wide default provider. The time is an argument, so that expiry is testable.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, DigitallySignedStruct, InconsistentKeys, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use std::fmt::Display;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The files of a TLS listener: `--tls-cert`, `--tls-key` and, for mutual TLS,
/// `--tls-client-ca`.
#[derive(Clone, Debug)]
pub struct ServerFiles {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 RSA or SEC1 EC), not encrypted.
    pub key: PathBuf,
    /// PEM: the CAs whose client certificates are accepted; with it, a client certificate is
    /// required.
    pub client_ca: Option<PathBuf>,
}

/// A configuration, and what the operator should hear about it (one line each).
#[derive(Debug)]
pub struct Loaded<T> {
    pub config: T,
    pub warnings: Vec<String>,
}

/// TLS 1.3 and 1.2, nothing older.
const VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A certificate this close to its end is reported at every load.
const EXPIRY_WARNING_SECS: i64 = 14 * 86_400;

/// PEM files beyond this are not certificates or keys (a wrong path, `/dev/zero`).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the files; `alpn` is put in `config.alpn_protocols` (`http/1.1` for
/// https listeners, nothing for `tls://`). `now` decides expiry.
pub fn server_config(
    files: &ServerFiles,
    alpn: &[&[u8]],
    now: SystemTime,
) -> Result<Loaded<ServerConfig>, String> {
    let mut warnings = Vec::new();
    let cert_path = files.cert.display();
    let key_path = files.key.display();

    let certs = read_certs("--tls-cert", &files.cert)?;
    let leaf = certs
        .first()
        .ok_or_else(|| no_certificate("--tls-cert", &files.cert))?;
    let validity = validity(leaf).ok_or_else(|| {
        format!("--tls-cert {cert_path}: cannot read the certificate's validity: malformed DER")
    })?;

    let provider = ring();
    let key = provider
        .key_provider
        .load_private_key(read_key(&files.key)?)
        .map_err(|e| {
            let why = match e {
                rustls::Error::General(why) => why,
                other => other.to_string(),
            };
            format!(
                "--tls-key {key_path}: unusable key: {why} (usable: RSA of 2048 bits or more, \
                 ECDSA P-256 or P-384, Ed25519)"
            )
        })?;
    let certified = CertifiedKey::new(certs, key);
    match certified.keys_match() {
        // The key cannot name its public half; rustls accepts that too, and a wrong key
        // then fails at the first handshake.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            let mut line = format!(
                "--tls-key {key_path} does not match the certificate in --tls-cert {cert_path}"
            );
            if let Some(n) = matching_position(&certified) {
                line.push_str(&format!(
                    ": it matches certificate {n} there; the server's own certificate must \
                     come first"
                ));
            }
            return Err(line);
        }
        Err(e) => return Err(format!("--tls-cert {cert_path}: unusable certificate: {e}")),
    }

    let now = unix_seconds(now);
    if now > validity.not_after {
        return Err(format!(
            "--tls-cert {cert_path}: the certificate expired on {}",
            format_utc(validity.not_after)
        ));
    }
    if now < validity.not_before {
        return Err(format!(
            "--tls-cert {cert_path}: the certificate is not valid before {}",
            format_utc(validity.not_before)
        ));
    }
    let left = validity.not_after - now;
    if left < EXPIRY_WARNING_SECS {
        let days = left / 86_400;
        warnings.push(format!(
            "--tls-cert {cert_path}: the certificate expires on {}, in {days} day{}; renew it \
             and send SIGHUP",
            format_utc(validity.not_after),
            if days == 1 { "" } else { "s" }
        ));
    }

    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = read_roots("--tls-client-ca", path)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Loaded { config, warnings })
}

/// The TLS client for `https://` remotes. Trust is the system store
/// (`rustls_native_certs`, which honours SSL_CERT_FILE and SSL_CERT_DIR) plus every
/// certificate in `ca_cert`; the system store's unreadable files are warnings as long as
/// something is trusted. `insecure` accepts any certificate. ALPN offers `http/1.1`.
pub fn client_config(
    ca_cert: Option<&Path>,
    insecure: bool,
) -> Result<Loaded<ClientConfig>, String> {
    let mut warnings = Vec::new();
    let provider = ring();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = if insecure {
        if let Some(path) = ca_cert {
            warnings.push(format!(
                "--ca-cert {} is not used: --tls-insecure-skip-verify accepts any certificate",
                path.display()
            ));
        }
        let verifier = AcceptAnyCertificate {
            schemes: provider
                .signature_verification_algorithms
                .supported_schemes(),
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        let system = rustls_native_certs::load_native_certs();
        // Some system bundles carry certificates webpki cannot parse; the rest still count.
        roots.add_parsable_certificates(system.certs);
        if let Some(path) = ca_cert {
            add_all(&mut roots, "--ca-cert", path)?;
        }
        if roots.is_empty() {
            let why = match system.errors.first() {
                Some(e) => e.to_string(),
                None => "it holds no certificates".to_string(),
            };
            return Err(format!(
                "no trusted CA certificates: the system store is empty or unreadable ({why}); \
                 install ca-certificates or pass --ca-cert FILE"
            ));
        }
        warnings.extend(
            system
                .errors
                .iter()
                .map(|e| format!("system CA store: {e}")),
        );
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded { config, warnings })
}

/// `--tls-insecure-skip-verify`: every certificate is accepted. Handshake signatures are not
/// checked either: they would only prove that the peer holds the key of a certificate that
/// is trusted for nothing, so checking them would add no security.
#[derive(Debug)]
struct AcceptAnyCertificate {
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Which certificate of the chain (1-based) the key belongs to, if not the first.
fn matching_position(certified: &CertifiedKey) -> Option<usize> {
    certified
        .cert
        .iter()
        .enumerate()
        .skip(1)
        .find_map(|(i, cert)| {
            CertifiedKey::new(vec![cert.clone()], Arc::clone(&certified.key))
                .keys_match()
                .is_ok()
                .then_some(i + 1)
        })
}

/// The whole file, or `FLAG PATH: cannot read it: ...`.
fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    let cannot = |e: &dyn Display| format!("{flag} {}: cannot read it: {e}", path.display());
    let file = File::open(path).map_err(|e| cannot(&e))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(cannot(&"larger than 16 MiB, not a PEM file"));
    }
    Ok(bytes)
}

fn broken_pem(flag: &str, path: &Path, e: pem::Error) -> String {
    format!("{flag} {}: broken PEM: {e}", path.display())
}

fn no_certificate(flag: &str, path: &Path) -> String {
    format!(
        "{flag} {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\")",
        path.display()
    )
}

/// Every certificate in a PEM file; at least one.
fn read_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_file(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| broken_pem(flag, path, e))?;
    if certs.is_empty() {
        return Err(no_certificate(flag, path));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let flag = "--tls-key";
    let bytes = read_file(flag, path)?;
    // Checked first: rustls skips an encrypted PKCS#8 key, and may fail on or misread the
    // headers of a legacy encrypted one.
    if is_encrypted_key(&bytes) {
        return Err(format!(
            "{flag} {0}: the private key is encrypted; store it decrypted (openssl pkey -in \
             {0} -out KEY.pem) and keep that file's permissions tight",
            path.display()
        ));
    }
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(format!(
            "{flag} {}: no private key in it (expected a PEM PKCS#8, RSA or EC private key)",
            path.display()
        )),
        Err(e) => Err(broken_pem(flag, path, e)),
    }
}

/// A passphrase-protected key: PKCS#8 `ENCRYPTED PRIVATE KEY`, or OpenSSL's legacy
/// `Proc-Type: 4,ENCRYPTED` header inside an RSA or EC key.
fn is_encrypted_key(pem: &[u8]) -> bool {
    let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// Adds every certificate of a PEM file to `roots`.
fn add_all(roots: &mut RootCertStore, flag: &str, path: &Path) -> Result<(), String> {
    for (i, cert) in read_certs(flag, path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "{flag} {}: certificate {} in it is unusable: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(())
}

fn read_roots(flag: &str, path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    add_all(&mut roots, flag, path)?;
    Ok(roots)
}

/// A certificate's validity period, in seconds since the Unix epoch (both ends inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Validity {
    not_before: i64,
    not_after: i64,
}

/// Seconds since the Unix epoch; negative before it.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0; // [0] EXPLICIT, constructed
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element at the start of `input`: its tag, its contents, and what follows it.
/// `None` for anything malformed or truncated.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // a multi-byte tag: none on the path to the validity
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // 0x80 is BER's indefinite length, not DER; more than four length bytes is more
        // than any certificate.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let bytes = rest.get(..count)?;
        let len = bytes.iter().try_fold(0usize, |acc, &b| {
            acc.checked_mul(256)?.checked_add(usize::from(b))
        })?;
        (len, rest.get(count..)?)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// The contents of the element at the start of `input` if it has this tag, and what follows.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match der_element(input)? {
        (found, contents, rest) if found == tag => Some((contents, rest)),
        _ => None,
    }
}

/// The validity of a DER certificate (RFC 5280 §4.1): Certificate → tbsCertificate →
/// [0] version (optional), serialNumber, signature, issuer → validity.
fn validity(der: &[u8]) -> Option<Validity> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let rest = match der_element(tbs)? {
        (VERSION, _, rest) => rest,
        _ => tbs,
    };
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (period, _) = expect(rest, SEQUENCE)?;
    let (before_tag, before, rest) = der_element(period)?;
    let (after_tag, after, _) = der_element(rest)?;
    Some(Validity {
        not_before: asn1_time(before_tag, before)?,
        not_after: asn1_time(after_tag, after)?,
    })
}

/// UTCTime `YYMMDDHHMMSSZ` (50–99 are 19xx) or GeneralizedTime `YYYYMMDDHHMMSSZ`, the only
/// forms RFC 5280 allows, as seconds since the Unix epoch.
fn asn1_time(tag: u8, text: &[u8]) -> Option<i64> {
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = decimal(text.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        (GENERALIZED_TIME, 15) => (decimal(text.get(..4)?)?, text.get(4..)?),
        _ => return None,
    };
    if rest.get(10) != Some(&b'Z') {
        return None;
    }
    let field = |at: usize| decimal(rest.get(at..at + 2)?);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// ASCII digits as a number; `None` if any byte is not a digit (at most four here).
fn decimal(digits: &[u8]) -> Option<i64> {
    digits.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date. Years are counted from March, so
/// that the leap day ends a year; a 400-year era has exactly 146097 days.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719468 days separate 0000-03-01 from 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn format_utc(unix: i64) -> String {
    let (year, month, day) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::Connection;
    use std::ffi::OsString;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, MutexGuard};
    use std::time::Duration;

    /// A directory of its own under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "mcp-relay-tls-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.path(name);
            std::fs::write(&path, bytes).unwrap();
            path
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.path(name)).unwrap()
        }

        /// Runs the openssl CLI in this directory and returns its stdout. These tests need
        /// it: without it they fail, they do not skip.
        fn openssl(&self, args: &[&str]) -> String {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&self.0)
                .output()
                .unwrap_or_else(|e| panic!("the TLS tests need the openssl CLI on PATH: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }

        /// A private key in one of the forms rustls reads; `name` is its file.
        fn key(&self, name: &str, form: KeyForm) -> PathBuf {
            match form {
                KeyForm::RsaPkcs1 => {
                    self.openssl(&["genrsa", "-traditional", "-out", name, "2048"]);
                }
                KeyForm::RsaPkcs8 => {
                    self.openssl(&[
                        "genpkey",
                        "-algorithm",
                        "RSA",
                        "-pkeyopt",
                        "rsa_keygen_bits:2048",
                        "-out",
                        name,
                    ]);
                }
                KeyForm::EcSec1 => {
                    self.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-out", name]);
                }
                KeyForm::EcPkcs8 => {
                    let sec1 = format!("{name}.sec1");
                    self.key(&sec1, KeyForm::EcSec1);
                    self.openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &sec1, "-out", name]);
                }
                KeyForm::Ed25519 => {
                    self.openssl(&["genpkey", "-algorithm", "ed25519", "-out", name]);
                }
            }
            let label = match form {
                KeyForm::RsaPkcs1 => "-----BEGIN RSA PRIVATE KEY-----",
                KeyForm::EcSec1 => "-----BEGIN EC PRIVATE KEY-----",
                _ => "-----BEGIN PRIVATE KEY-----",
            };
            assert!(self.read(name).contains(label), "{name} is not {form:?}");
            self.path(name)
        }

        /// A self-signed certificate for `localhost` (a CA certificate: trusted by nothing).
        fn self_signed(&self, key: &str, cert: &str, days: &str) -> PathBuf {
            self.openssl(&[
                "req",
                "-x509",
                "-new",
                "-key",
                key,
                "-out",
                cert,
                "-days",
                days,
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ]);
            self.path(cert)
        }

        /// A CA: `NAME.key`, `NAME.pem`.
        fn ca(&self, name: &str) -> PathBuf {
            let key = format!("{name}.key");
            self.key(&key, KeyForm::EcSec1);
            let subject = format!("/CN={name}");
            let cert = format!("{name}.pem");
            self.openssl(&[
                "req", "-x509", "-new", "-key", &key, "-out", &cert, "-days", "30", "-subj",
                &subject,
            ]);
            self.path(&cert)
        }

        /// An end-entity certificate for `localhost` signed by the CA `ca`: `NAME.pem`,
        /// `NAME.key`.
        fn signed(&self, ca: &str, name: &str) -> (PathBuf, PathBuf) {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let cert = format!("{name}.pem");
            self.key(&key, KeyForm::EcSec1);
            self.write(
                "leaf.ext",
                b"subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
            );
            self.openssl(&[
                "req",
                "-new",
                "-key",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=localhost",
            ]);
            self.openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-set_serial",
                "2",
                "-days",
                "30",
                "-extfile",
                "leaf.ext",
                "-out",
                &cert,
            ]);
            (self.path(&cert), self.path(&key))
        }

        /// `notBefore`/`notAfter` as openssl prints them, in our format.
        fn openssl_dates(&self, cert: &str) -> (String, String) {
            let out = self.openssl(&["x509", "-in", cert, "-noout", "-startdate", "-enddate"]);
            let mut lines = out.lines();
            (
                openssl_date(lines.next().unwrap()),
                openssl_date(lines.next().unwrap()),
            )
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum KeyForm {
        RsaPkcs1,
        RsaPkcs8,
        EcSec1,
        EcPkcs8,
        Ed25519,
    }

    /// `notAfter=Dec  3 18:59:21 2026 GMT` → `2026-12-03 18:59:21 UTC`.
    fn openssl_date(line: &str) -> String {
        let (_, date) = line.split_once('=').unwrap();
        let parts: Vec<&str> = date.split_whitespace().collect();
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = months.iter().position(|m| *m == parts[0]).unwrap() + 1;
        let day: u32 = parts[1].parse().unwrap();
        assert_eq!(parts[4], "GMT");
        format!("{}-{month:02}-{day:02} {} UTC", parts[3], parts[2])
    }

    fn files(cert: &Path, key: &Path) -> ServerFiles {
        ServerFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: None,
        }
    }

    fn leaf_validity(cert: &Path) -> Validity {
        let pem = std::fs::read(cert).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        validity(&der).unwrap()
    }

    fn at(unix: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap())
    }

    fn err<T: std::fmt::Debug>(result: Result<T, String>) -> String {
        result.expect_err("expected an error")
    }

    /// Moves TLS records from `from` to `to` until `from` has nothing to send.
    fn pass(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut rest = &wire[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets()?;
        }
        Ok(())
    }

    /// A handshake in memory; the error says which side refused.
    fn handshake(
        server: ServerConfig,
        client: ClientConfig,
    ) -> Result<(Connection, Connection), String> {
        let mut server = Connection::from(rustls::ServerConnection::new(Arc::new(server)).unwrap());
        let name = ServerName::try_from("localhost").unwrap();
        let mut client =
            Connection::from(rustls::ClientConnection::new(Arc::new(client), name).unwrap());
        for _ in 0..10 {
            pass(&mut client, &mut server).map_err(|e| format!("server: {e}"))?;
            pass(&mut server, &mut client).map_err(|e| format!("client: {e}"))?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok((server, client));
            }
        }
        Err("the handshake did not finish in 10 rounds".to_string())
    }

    fn insecure_client() -> ClientConfig {
        let loaded = client_config(None, true).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        loaded.config
    }

    /// A client trusting exactly `ca`, presenting `identity` (cert, key) if given; built
    /// here because the relay's own client has no certificate of its own.
    fn client_trusting(ca: &Path, identity: Option<(&Path, &Path)>) -> ClientConfig {
        let builder = ClientConfig::builder_with_provider(ring())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_root_certificates(read_roots("--ca-cert", ca).unwrap());
        match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    read_certs("--tls-cert", cert).unwrap(),
                    read_key(key).unwrap(),
                )
                .unwrap(),
        }
    }

    #[test]
    fn tls_every_key_form_loads_and_serves_a_handshake() {
        let dir = Scratch::new();
        let forms = [
            KeyForm::RsaPkcs1,
            KeyForm::RsaPkcs8,
            KeyForm::EcSec1,
            KeyForm::EcPkcs8,
            KeyForm::Ed25519,
        ];
        for form in forms {
            let key = dir.key(&format!("{form:?}.key"), form);
            let cert = dir.self_signed(&format!("{form:?}.key"), &format!("{form:?}.pem"), "30");
            let loaded = server_config(&files(&cert, &key), &[b"http/1.1"], SystemTime::now())
                .unwrap_or_else(|e| panic!("{form:?}: {e}"));
            assert!(
                loaded.warnings.is_empty(),
                "{form:?}: {:?}",
                loaded.warnings
            );
            assert_eq!(loaded.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
            let (server, client) = handshake(loaded.config, insecure_client())
                .unwrap_or_else(|e| panic!("{form:?}: {e}"));
            assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]), "{form:?}");
            assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]), "{form:?}");
        }
        // tls:// listeners negotiate no ALPN.
        let cert = dir.path("EcSec1.pem");
        let key = dir.path("EcSec1.key");
        let loaded = server_config(&files(&cert, &key), &[], SystemTime::now()).unwrap();
        assert!(loaded.config.alpn_protocols.is_empty());
        let (server, _) = handshake(loaded.config, insecure_client()).unwrap();
        assert_eq!(server.alpn_protocol(), None);
    }

    #[test]
    fn tls_a_key_of_another_certificate_is_named() {
        let dir = Scratch::new();
        dir.key("a.key", KeyForm::EcSec1);
        let b = dir.key("b.key", KeyForm::Ed25519);
        let cert = dir.self_signed("a.key", "a.pem", "30");
        let e = err(server_config(&files(&cert, &b), &[], SystemTime::now()));
        assert_eq!(
            e,
            format!(
                "--tls-key {} does not match the certificate in --tls-cert {}",
                b.display(),
                cert.display()
            )
        );
    }

    #[test]
    fn tls_a_chain_with_the_ca_first_is_named() {
        let dir = Scratch::new();
        let ca = dir.ca("ca");
        let (_, key) = dir.signed("ca", "leaf");
        let (ca_pem, leaf_pem) = (dir.read("ca.pem"), dir.read("leaf.pem"));
        let backwards = dir.write("backwards.pem", format!("{ca_pem}{leaf_pem}").as_bytes());
        let e = err(server_config(
            &files(&backwards, &key),
            &[],
            SystemTime::now(),
        ));
        assert_eq!(
            e,
            format!(
                "--tls-key {} does not match the certificate in --tls-cert {}: it matches \
                 certificate 2 there; the server's own certificate must come first",
                key.display(),
                backwards.display()
            )
        );
        // In order, the chain loads, and a client trusting the CA accepts it.
        let chain = dir.write("chain.pem", format!("{leaf_pem}{ca_pem}").as_bytes());
        let loaded = server_config(&files(&chain, &key), &[], SystemTime::now()).unwrap();
        handshake(loaded.config, client_trusting(&ca, None)).unwrap();
    }

    #[test]
    fn tls_expiry_follows_now() {
        let dir = Scratch::new();
        let key = dir.key("k.key", KeyForm::EcSec1);
        let cert = dir.self_signed("k.key", "k.pem", "30");
        let v = leaf_validity(&cert);
        let (start, end) = dir.openssl_dates("k.pem");
        assert_eq!(
            (format_utc(v.not_before), format_utc(v.not_after)),
            (start, end)
        );
        let load = |now: i64| server_config(&files(&cert, &key), &[], at(now));
        let c = cert.display();

        assert_eq!(
            err(load(v.not_after + 1)),
            format!(
                "--tls-cert {c}: the certificate expired on {}",
                format_utc(v.not_after)
            )
        );
        assert_eq!(
            err(load(v.not_before - 1)),
            format!(
                "--tls-cert {c}: the certificate is not valid before {}",
                format_utc(v.not_before)
            )
        );
        let warning = |days: &str| {
            format!(
                "--tls-cert {c}: the certificate expires on {}, in {days}; renew it and send \
                 SIGHUP",
                format_utc(v.not_after)
            )
        };
        let cases = [
            (v.not_after - 10 * 86_400 - 3600, vec![warning("10 days")]),
            (v.not_after - 86_400 - 1, vec![warning("1 day")]),
            (v.not_after, vec![warning("0 days")]),
            (v.not_after - 14 * 86_400 + 1, vec![warning("13 days")]),
            (v.not_after - 14 * 86_400, vec![]),
            (v.not_before, vec![]),
        ];
        for (now, expected) in cases {
            assert_eq!(load(now).unwrap().warnings, expected, "now = {now}");
        }
    }

    #[test]
    fn tls_der_walker_agrees_with_openssl() {
        let dir = Scratch::new();
        dir.key("k.key", KeyForm::EcSec1);
        // 30 days: UTCTime; a century: past 2049, so GeneralizedTime (RFC 5280).
        for (days, form) in [("30", "UTCTIME"), ("36500", "GENERALIZEDTIME")] {
            let name = format!("{days}.pem");
            let cert = dir.self_signed("k.key", &name, days);
            let parsed = dir.openssl(&["asn1parse", "-in", &name]);
            assert!(parsed.contains(form), "{days} days: no {form} in\n{parsed}");
            let v = leaf_validity(&cert);
            assert_eq!(
                (format_utc(v.not_before), format_utc(v.not_after)),
                dir.openssl_dates(&name),
                "{days} days"
            );
        }
    }

    #[test]
    fn tls_time_conversions() {
        let t = |tag, text: &[u8]| asn1_time(tag, text);
        assert_eq!(t(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(t(UTC_TIME, b"500101000000Z"), Some(-631_152_000));
        assert_eq!(t(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(t(GENERALIZED_TIME, b"20491231235959Z"), Some(2_524_607_999));
        assert_eq!(
            t(GENERALIZED_TIME, b"99991231235959Z"),
            Some(253_402_300_799)
        );
        assert_eq!(t(GENERALIZED_TIME, b"20000229000000Z"), Some(951_782_400));
        assert_eq!(t(GENERALIZED_TIME, b"20240229120000Z"), Some(1_709_208_000));
        for bad in [
            &b"20230229120000Z"[..], // not a leap year
            b"21000229120000Z",      // not a leap year either
            b"20241301000000Z",
            b"20240100000000Z",
            b"20240101240000Z",
            b"20240101006000Z",
            b"2024010100000aZ",
            b"20240101000000z",
            b"2024010100000Z",
            b"202401010000000",
            b"2024-1-01000000Z",
            b"",
        ] {
            assert_eq!(
                t(GENERALIZED_TIME, bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(t(UTC_TIME, b"20240101000000Z"), None);
        assert_eq!(t(GENERALIZED_TIME, b"240101000000Z"), None);
        assert_eq!(t(UTC_TIME, b"2401010000+0100"), None);
        assert_eq!(t(INTEGER, b"240101000000Z"), None);

        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(253_402_300_799), "9999-12-31 23:59:59 UTC");
        assert_eq!(format_utc(-631_152_000), "1950-01-01 00:00:00 UTC");
        // Every day from year 0 to 4000 survives the round trip, in order.
        let mut previous = None;
        for days in days_from_civil(0, 1, 1)..=days_from_civil(4000, 12, 31) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
            if let Some(p) = previous {
                assert!((y, m, d) > p);
            }
            previous = Some((y, m, d));
        }
        assert_eq!(unix_seconds(at(1_000)), 1_000);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), -5);
    }

    /// A DER length header.
    fn der_header(tag: u8, len: usize) -> Vec<u8> {
        let mut out = vec![tag];
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out
    }

    #[test]
    fn tls_malformed_der_never_panics() {
        let dir = Scratch::new();
        dir.key("k.key", KeyForm::RsaPkcs8);
        let cert = dir.self_signed("k.key", "k.pem", "30");
        let der = CertificateDer::from_pem_slice(&std::fs::read(cert).unwrap()).unwrap();
        let der: &[u8] = &der;
        let full = validity(der).unwrap();
        assert!(der.len() > 256, "an RSA certificate has long-form lengths");

        // Every prefix is short of the outer SEQUENCE.
        for n in 0..der.len() {
            assert_eq!(validity(&der[..n]), None, "prefix of {n} bytes");
        }

        // tbsCertificate cut short, inside well-formed outer headers: the validity is found
        // once its bytes are there, and never before.
        let (certificate, _) = expect(der, SEQUENCE).unwrap();
        let (tbs, _) = expect(certificate, SEQUENCE).unwrap();
        let mut found = false;
        for n in 0..=tbs.len() {
            let mut inner = der_header(SEQUENCE, n);
            inner.extend_from_slice(&tbs[..n]);
            let mut outer = der_header(SEQUENCE, inner.len());
            outer.extend(inner);
            match validity(&outer) {
                Some(v) => {
                    assert_eq!(v, full);
                    found = true;
                }
                None => assert!(!found, "lost the validity at {n} bytes"),
            }
        }
        assert!(found);

        // Every byte replaced by values that matter to a DER reader.
        for i in 0..der.len() {
            for b in [
                0x00, 0x01, 0x1f, 0x30, 0x7f, 0x80, 0x81, 0x82, 0x84, 0x85, 0xff,
            ] {
                let mut bent = der.to_vec();
                bent[i] = b;
                let _ = validity(&bent);
            }
        }

        // Random bytes behind a plausible start.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut input = vec![0x30, 0x82, 0x01, 0x00, 0x30];
            input.extend((0..len).map(|_| next() as u8));
            input.truncate((next() % 205) as usize);
            let _ = validity(&input);
        }
    }

    #[test]
    fn tls_unreadable_and_garbage_files_are_named() {
        let dir = Scratch::new();
        let key = dir.key("k.key", KeyForm::EcSec1);
        let cert = dir.self_signed("k.key", "k.pem", "30");
        let load =
            |cert: &Path, key: &Path| err(server_config(&files(cert, key), &[], SystemTime::now()));

        let missing = dir.path("missing.pem");
        let e = load(&missing, &key);
        assert!(
            e.starts_with(&format!(
                "--tls-cert {}: cannot read it: ",
                missing.display()
            )) && e.contains("No such file"),
            "{e}"
        );
        let e = load(&cert, &missing);
        assert!(
            e.starts_with(&format!(
                "--tls-key {}: cannot read it: ",
                missing.display()
            )),
            "{e}"
        );
        let e = load(&dir.0, &key);
        assert!(
            e.contains(": cannot read it: ") && e.contains("directory"),
            "{e}"
        );

        let no_cert = |p: &Path| {
            format!(
                "--tls-cert {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\")",
                p.display()
            )
        };
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let garbage = dir.write("garbage", &noise);
        assert_eq!(load(&garbage, &key), no_cert(&garbage));
        assert_eq!(load(&key, &key), no_cert(&key));
        let empty = dir.write("empty", b"");
        assert_eq!(load(&empty, &key), no_cert(&empty));

        let no_key = |p: &Path| {
            format!(
                "--tls-key {}: no private key in it (expected a PEM PKCS#8, RSA or EC private \
                 key)",
                p.display()
            )
        };
        assert_eq!(load(&cert, &garbage), no_key(&garbage));
        assert_eq!(load(&cert, &cert), no_key(&cert));

        let not_der = dir.write(
            "not-der.pem",
            b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        assert_eq!(
            load(&not_der, &key),
            format!(
                "--tls-cert {}: cannot read the certificate's validity: malformed DER",
                not_der.display()
            )
        );
        let pem = dir.read("k.pem");
        let cut = dir.write("cut.pem", &pem.as_bytes()[..pem.len() / 2]);
        let e = load(&cut, &key);
        assert!(
            e.starts_with(&format!("--tls-cert {}: broken PEM: ", cut.display())),
            "{e}"
        );

        let mut with_ca = files(&cert, &key);
        with_ca.client_ca = Some(garbage.clone());
        assert_eq!(
            err(server_config(&with_ca, &[], SystemTime::now())),
            format!(
                "--tls-client-ca {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\")",
                garbage.display()
            )
        );
        with_ca.client_ca = Some(missing.clone());
        let e = err(server_config(&with_ca, &[], SystemTime::now()));
        assert!(
            e.starts_with(&format!(
                "--tls-client-ca {}: cannot read it: ",
                missing.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn tls_unusable_and_encrypted_keys_are_named() {
        let dir = Scratch::new();
        dir.key("k.key", KeyForm::EcSec1);
        let cert = dir.self_signed("k.key", "k.pem", "30");
        let load = |key: &Path| err(server_config(&files(&cert, key), &[], SystemTime::now()));

        dir.openssl(&["genrsa", "-out", "rsa1024.key", "1024"]);
        dir.openssl(&[
            "ecparam",
            "-name",
            "secp521r1",
            "-genkey",
            "-out",
            "p521.key",
        ]);
        for name in ["rsa1024.key", "p521.key"] {
            let path = dir.path(name);
            let e = load(&path);
            assert!(
                e.starts_with(&format!("--tls-key {}: unusable key: ", path.display())),
                "{e}"
            );
        }

        dir.openssl(&[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-aes-128-cbc",
            "-pass",
            "pass:x",
            "-out",
            "pkcs8.key",
        ]);
        dir.openssl(&[
            "ec",
            "-in",
            "k.key",
            "-aes128",
            "-passout",
            "pass:x",
            "-out",
            "legacy.key",
        ]);
        assert!(dir.read("legacy.key").contains("Proc-Type: 4,ENCRYPTED"));
        for name in ["pkcs8.key", "legacy.key"] {
            let path = dir.path(name);
            let e = load(&path);
            assert!(
                e.starts_with(&format!(
                    "--tls-key {}: the private key is encrypted; ",
                    path.display()
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn tls_client_ca_requires_a_client_certificate() {
        let dir = Scratch::new();
        let ca = dir.ca("ca");
        dir.ca("other");
        let (server_cert, server_key) = dir.signed("ca", "server");
        let (client_cert, client_key) = dir.signed("ca", "client");
        let (stranger_cert, stranger_key) = dir.signed("other", "stranger");
        let mut mtls = files(&server_cert, &server_key);
        mtls.client_ca = Some(ca.clone());
        let server = || server_config(&mtls, &[], SystemTime::now()).unwrap().config;

        let (server_side, _) = handshake(
            server(),
            client_trusting(&ca, Some((&client_cert, &client_key))),
        )
        .unwrap();
        assert_eq!(server_side.peer_certificates().map(<[_]>::len), Some(1));

        let e = handshake(server(), client_trusting(&ca, None)).unwrap_err();
        assert_eq!(e, "server: peer sent no certificates");
        let e = handshake(
            server(),
            client_trusting(&ca, Some((&stranger_cert, &stranger_key))),
        )
        .unwrap_err();
        assert!(
            e.starts_with("server: ") && e.contains("UnknownIssuer"),
            "{e}"
        );

        // Without --tls-client-ca, nobody is asked for a certificate.
        let plain = server_config(&files(&server_cert, &server_key), &[], SystemTime::now());
        let (server_side, _) =
            handshake(plain.unwrap().config, client_trusting(&ca, None)).unwrap();
        assert!(server_side.peer_certificates().is_none());
    }

    #[test]
    fn tls_insecure_client_accepts_an_untrusted_certificate() {
        let dir = Scratch::new();
        let ca = dir.ca("ca");
        dir.ca("other");
        let (cert, key) = dir.signed("other", "server");
        dir.key("self.key", KeyForm::EcSec1);
        let self_signed = dir.self_signed("self.key", "self.pem", "30");
        let server = |cert: &Path, key: &Path| {
            server_config(&files(cert, key), &[], SystemTime::now())
                .unwrap()
                .config
        };

        // A client trusting another CA refuses it...
        let e = handshake(server(&cert, &key), client_trusting(&ca, None)).unwrap_err();
        assert!(
            e.starts_with("client: ") && e.contains("UnknownIssuer"),
            "{e}"
        );
        // ...the insecure one does not, nor a self-signed one, and it says that --ca-cert is
        // of no use to it.
        handshake(server(&cert, &key), insecure_client()).unwrap();
        handshake(
            server(&self_signed, &dir.path("self.key")),
            insecure_client(),
        )
        .unwrap();
        let loaded = client_config(Some(&ca), true).unwrap();
        assert_eq!(
            loaded.warnings,
            vec![format!(
                "--ca-cert {} is not used: --tls-insecure-skip-verify accepts any certificate",
                ca.display()
            )]
        );
        handshake(server(&cert, &key), loaded.config).unwrap();
    }

    /// SSL_CERT_FILE and SSL_CERT_DIR belong to this guard's holder until it is dropped;
    /// then they are as they were.
    struct CertEnv {
        saved: Vec<(&'static str, Option<OsString>)>,
        _lock: MutexGuard<'static, ()>,
    }

    impl CertEnv {
        fn take() -> CertEnv {
            static LOCK: Mutex<()> = Mutex::new(());
            let lock = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let saved = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
                .into_iter()
                .map(|name| (name, std::env::var_os(name)))
                .collect();
            std::env::remove_var("SSL_CERT_DIR");
            CertEnv { saved, _lock: lock }
        }

        fn cert_file(&self, path: &Path) {
            std::env::set_var("SSL_CERT_FILE", path);
        }
    }

    impl Drop for CertEnv {
        fn drop(&mut self) {
            for (name, value) in &self.saved {
                match value {
                    Some(value) => std::env::set_var(name, value),
                    None => std::env::remove_var(name),
                }
            }
        }
    }

    #[test]
    fn tls_client_trusts_the_system_store_and_ca_cert() {
        let dir = Scratch::new();
        let ca = dir.ca("ca");
        let other_ca = dir.ca("other");
        let (cert, key) = dir.signed("ca", "server");
        let server = || {
            server_config(&files(&cert, &key), &[b"http/1.1"], SystemTime::now())
                .unwrap()
                .config
        };
        let env = CertEnv::take();

        // An empty system store and nothing else: refused, with the remedy.
        let empty = dir.write("empty.pem", b"");
        env.cert_file(&empty);
        assert_eq!(
            err(client_config(None, false)),
            "no trusted CA certificates: the system store is empty or unreadable (it holds no \
             certificates); install ca-certificates or pass --ca-cert FILE"
        );
        let missing = dir.path("missing.pem");
        env.cert_file(&missing);
        let e = err(client_config(None, false));
        assert!(
            e.starts_with("no trusted CA certificates: the system store is empty or unreadable (")
                && e.contains(&missing.display().to_string())
                && e.ends_with("); install ca-certificates or pass --ca-cert FILE"),
            "{e}"
        );

        // --ca-cert alone is enough; the unreadable system store becomes a warning.
        let loaded = client_config(Some(&ca), false).unwrap();
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].starts_with("system CA store: "));
        assert_eq!(loaded.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let (_, client) = handshake(server(), loaded.config).unwrap();
        assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]));

        env.cert_file(&empty);
        let loaded = client_config(Some(&ca), false).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        handshake(server(), loaded.config).unwrap();

        // Trusting another CA only: the server is refused.
        let e = handshake(
            server(),
            client_config(Some(&other_ca), false).unwrap().config,
        );
        assert!(err(e).starts_with("client: "));

        // The system store, through SSL_CERT_FILE, is trusted without --ca-cert.
        env.cert_file(&ca);
        let loaded = client_config(None, false).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        handshake(server(), loaded.config).unwrap();

        // --ca-cert mistakes.
        env.cert_file(&empty);
        let garbage = dir.write("garbage.pem", b"not a certificate\n");
        assert_eq!(
            err(client_config(Some(&garbage), false)),
            format!(
                "--ca-cert {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\")",
                garbage.display()
            )
        );
        let e = err(client_config(Some(&missing), false));
        assert!(
            e.starts_with(&format!(
                "--ca-cert {}: cannot read it: ",
                missing.display()
            )),
            "{e}"
        );
    }
}
