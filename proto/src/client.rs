//! What every zedops MQTT client (the agent, the API) sets up the same way (feature `client`).

/// The system's CA bundle on Debian-like hosts, used when no `--ca-file` is given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS transport for `mqtts://` brokers: the given CA (PEM), else the system's roots.
pub fn tls_transport(ca: Option<&[u8]>) -> Result<rumqttc::Transport, String> {
    let ca = match ca {
        Some(c) => c.to_vec(),
        None => std::fs::read(SYSTEM_CA_BUNDLE).map_err(|e| {
            format!("cannot read the system CA bundle {SYSTEM_CA_BUNDLE} ({e}); pass --ca-file")
        })?,
    };
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth: None,
        },
    ))
}
