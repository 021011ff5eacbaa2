//! Certificates and keys from files into rustls configurations (placeholder: the full checks
//! arrive with the helper's module).

use mcp_relay_runtime::tls::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

pub struct Loaded<T> {
    pub config: T,
    pub warnings: Vec<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\")",
            path.display()
        ));
    }
    Ok(certs)
}

pub fn server_config(
    files: &ServerFiles,
    alpn: &[&[u8]],
    _now: SystemTime,
) -> Result<Loaded<rustls::ServerConfig>, String> {
    let chain = certs("--tls-cert", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("--tls-key {}: {e}", files.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("--tls-client-ca", path)? {
                roots
                    .add(c)
                    .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "--tls-key {} does not match the certificate in --tls-cert {} ({e})",
            files.key.display(),
            files.cert.display()
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Loaded {
        config,
        warnings: Vec::new(),
    })
}

pub fn client_config(
    ca_cert: Option<&Path>,
    _insecure: bool,
) -> Result<Loaded<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let mut warnings: Vec<String> = native.errors.iter().map(|e| e.to_string()).collect();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_cert {
        for c in certs("--ca-cert", path)? {
            roots
                .add(c)
                .map_err(|e| format!("--ca-cert {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "no trusted CA certificates ({added} from the system store); pass --ca-cert FILE"
        ));
    }
    warnings.clear();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded { config, warnings })
}
