//! TLS files → rustls configurations: the certificate, key and client CA of a TLS listener,
//! and the trust of an `https://` remote. Every mistake in a file becomes one line naming
//! the flag and the path; what still works but deserves attention (a certificate about to
//! expire, an unreadable file in the system store) comes back as a warning.
//!
//! The crypto provider is always ring, passed explicitly: nothing here depends on a
//! process-wide default provider. The time is an argument, so that expiry is testable.

// Until main.rs wires the TLS flags (issue 12), only the tests call into this module.
#![cfg_attr(not(test), allow(dead_code))]

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
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if is_encrypted_key(&bytes) => Err(format!(
            "{flag} {0}: the private key is encrypted; store it decrypted (openssl pkey -in \
             {0} -out KEY.pem) and keep that file's permissions tight",
            path.display()
        )),
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
