//! What the server tells agents on other hosts about where it is (issue 17): its public URL, in
//! the answer of `POST /api/v1/agents` (so `zedops agents add` prints a command that works on the
//! other host), and the brokers to connect to, in the enrollment answer (so an agent needs no
//! `--broker` guess). The server sets it once it knows its listeners ([`crate::Api::advertise`]).

use std::sync::RwLock;

use zedops_proto::BrokerUrl;

/// The server's public addresses; empty until the server sets them (the client then falls back
/// to the URL it used and the server's host on port 1883).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertised {
    /// `http(s)://host:port` where agents reach the API.
    pub server_url: Option<String>,
    /// Where agents reach the broker, in order.
    pub brokers: Vec<BrokerUrl>,
}

/// [`Advertised`], set after start.
#[derive(Debug, Default)]
pub struct AdvertisedCell(RwLock<Advertised>);

impl AdvertisedCell {
    pub fn set(&self, a: Advertised) {
        if let Ok(mut w) = self.0.write() {
            *w = a;
        }
    }

    pub fn get(&self) -> Advertised {
        self.0.read().map(|a| a.clone()).unwrap_or_default()
    }
}
