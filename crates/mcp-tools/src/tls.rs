//! TLS for MCP servers over `https://`: rmcp's HTTP client (reqwest, rustls without a chosen
//! crypto provider) uses the process's default provider; the server installs ring, the
//! provider the rest of the server's TLS already uses, once.

/// Installs ring as the process's rustls provider, unless one is installed already.
pub(crate) fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
