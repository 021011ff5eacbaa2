//! TLS, spliced in once below the core: a [`Link`] is a TCP socket that reads and writes
//! plaintext, with rustls between it and the wire when the listener or the remote asks for
//! it. The core sees the same bytes either way; it never learns whether a connection is
//! encrypted.
//!
//! Byte accounting stays exact: `Input::Written` is reported for plaintext only once the
//! records that carry it are in the kernel's buffer, so the core's closing after its last
//! byte is written loses nothing. rustls holds at most [`BUFFER_LIMIT`] of plaintext
//! accepted but not yet encrypted (before the handshake ends), and its own records.
//!
//! Certificates are the binary's business (files, SIGHUP): it hands over a
//! [`rustls::ServerConfig`] through a [`ServerTls`], whose [`ServerTls::replace`] takes effect
//! for the next handshake while established connections keep theirs.

use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::sync::{Arc, RwLock};

pub use rustls;

/// The most plaintext rustls keeps for one connection before it is encrypted and written
/// (what the core hands out while a handshake is under way waits here; past it, the write
/// waits).
pub const BUFFER_LIMIT: usize = 64 * 1024;

/// A listener's TLS: the server configuration new handshakes use. Cheap to clone; every
/// clone sees a [`ServerTls::replace`].
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl ServerTls {
    /// TLS with this configuration (its certificate, client verification and ALPN).
    pub fn new(config: rustls::ServerConfig) -> ServerTls {
        ServerTls {
            config: Arc::new(RwLock::new(Arc::new(config))),
        }
    }

    /// Uses `config` for every handshake from now on (a renewed certificate, say);
    /// connections already established keep theirs. Callable from any thread.
    pub fn replace(&self, config: rustls::ServerConfig) {
        let config = Arc::new(config);
        match self.config.write() {
            Ok(mut slot) => *slot = config,
            // A writer panicked while holding the lock; the slot is a plain Arc and is
            // still whole.
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// The configuration a handshake starting now uses.
    pub(crate) fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.config.read() {
            Ok(slot) => Arc::clone(&slot),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// How the relay speaks TLS to `https://` remotes.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// Trust anchors, client certificate (if any) and ALPN.
    pub config: Arc<rustls::ClientConfig>,
    /// The configuration verifies nothing (`--tls-insecure-skip-verify`): every connection
    /// is logged with a warning.
    pub insecure: bool,
}
