//! Bounds on what any HTTP client can make the server hold or do before it is authenticated:
//! request bodies are capped, and unauthenticated routes (`POST /api/v1/enroll`) are
//! rate-limited per client address (issue 14, item 9).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use poem::http::StatusCode;
use poem::{Body, Endpoint, IntoResponse, Request, Response};

use crate::error::error_response;

/// The largest request body the API reads. Every body of the API is a small JSON object.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Requests to unauthenticated routes allowed per client address in a burst.
pub const UNAUTHENTICATED_BURST: f64 = 20.0;
/// … refilled at this many per second (one every 6 s).
pub const UNAUTHENTICATED_PER_S: f64 = 1.0 / 6.0;
/// Client addresses remembered; full buckets are forgotten first.
const MAX_TRACKED: usize = 10_000;

/// Token buckets per client address, bounded.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// Takes one token for `ip`; false when its bucket is empty.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() >= MAX_TRACKED && !b.contains_key(&ip) {
            b.retain(|_, (tokens, at)| refill(*tokens, *at, now) < UNAUTHENTICATED_BURST);
            if b.len() >= MAX_TRACKED {
                b.clear();
            }
        }
        let (tokens, at) = b.entry(ip).or_insert((UNAUTHENTICATED_BURST, now));
        let available = refill(*tokens, *at, now);
        *at = now;
        if available >= 1.0 {
            *tokens = available - 1.0;
            true
        } else {
            *tokens = available;
            false
        }
    }
}

fn refill(tokens: f64, at: Instant, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(at).as_secs_f64();
    (tokens + elapsed * UNAUTHENTICATED_PER_S).min(UNAUTHENTICATED_BURST)
}

/// Failed enrollments become audit records at most once per [`FAILURE_DIGEST_EVERY`], each
/// carrying how many failed since the last, so junk requests cannot evict real audit records.
#[derive(Debug, Default)]
pub struct FailureDigest {
    state: Mutex<(u64, Option<Instant>)>,
}

/// How often failed enrollments are summarised in the audit log.
pub const FAILURE_DIGEST_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl FailureDigest {
    /// Counts a failure; `Some(n)` when an audit record for the `n` failures since the last one
    /// is due now.
    pub fn failed(&self, now: Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 += 1;
        let due =
            st.1.is_none_or(|t| now.saturating_duration_since(t) >= FAILURE_DIGEST_EVERY);
        due.then(|| {
            let n = st.0;
            *st = (0, Some(now));
            n
        })
    }
}

/// The routes anyone may call without a token.
pub fn unauthenticated(path: &str) -> bool {
    path == "/api/v1/enroll"
}

/// Middleware: caps request bodies (a declared length over the cap is refused at once with 413;
/// a body without a declared length is cut off at the cap, and reading it fails), and
/// rate-limits unauthenticated routes per client address (429).
pub async fn guard<E: Endpoint>(
    ep: Arc<E>,
    limiter: Arc<RateLimiter>,
    mut req: Request,
) -> poem::Result<Response> {
    if unauthenticated(req.uri().path()) {
        let ip = req
            .remote_addr()
            .as_socket_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if !limiter.allow(ip, Instant::now()) {
            return Ok(error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "too many unauthenticated requests from this address: wait a few seconds and try again",
            ));
        }
    }
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_BODY_BYTES as u64 => {
            return Ok(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is {n} bytes; the limit is {MAX_BODY_BYTES}"),
            ));
        }
        Some(_) => {}
        None => {
            let body = req.take_body();
            req.set_body(capped(body));
        }
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

/// A body that fails once more than [`MAX_BODY_BYTES`] arrived.
fn capped(body: Body) -> Body {
    let stream = body
        .into_bytes_stream()
        .scan((0usize, false), |(seen, failed), chunk| {
            if *failed {
                return std::future::ready(None);
            }
            let item = chunk.and_then(|bytes| {
                *seen += bytes.len();
                if *seen > MAX_BODY_BYTES {
                    Err(std::io::Error::other(format!(
                        "the request body exceeds the limit of {MAX_BODY_BYTES} bytes"
                    )))
                } else {
                    Ok(bytes)
                }
            });
            *failed = item.is_err();
            std::future::ready(Some(item))
        });
    Body::from_bytes_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_empty_and_refill() {
        let l = RateLimiter::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        let t0 = Instant::now();
        let allowed = (0..30).filter(|_| l.allow(ip, t0)).count();
        assert_eq!(allowed, UNAUTHENTICATED_BURST as usize);
        assert!(l.allow(IpAddr::from([10, 0, 0, 2]), t0), "per address");
        assert!(l.allow(ip, t0 + Duration::from_secs(7)), "refilled");
    }

    #[test]
    fn failures_are_digested() {
        let d = FailureDigest::default();
        let t0 = Instant::now();
        assert_eq!(d.failed(t0), Some(1));
        assert!((0..1000).all(|_| d.failed(t0).is_none()));
        assert_eq!(d.failed(t0 + FAILURE_DIGEST_EVERY), Some(1001));
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let l = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 500) {
            l.allow(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_TRACKED);
    }
}
