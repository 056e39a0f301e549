//! TLS for the whole process: rustls with the aws-lc-rs crypto provider (the one lapin
//! already brings), installed once as the process default before any TLS client is
//! made (Redis `rediss://`, Docker over TCP with client certificates, the management
//! API, `amqps://`).

/// Makes aws-lc-rs rustls' process-wide provider; harmless when one already is.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
