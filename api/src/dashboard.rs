//! The web dashboard: static assets built into the binary, served at `/`.
//!
//! `index.html` loads `/assets/app.js` (an ES module importing `sse.js`, `actions.js` and `logs.js`, no dependencies) and
//! `/assets/style.css`;
//! the page then talks to the API under `/api/v1` with the user's bearer token. Nothing comes from
//! elsewhere, so every response carries a Content-Security-Policy that allows this origin only.
//! The pages themselves need no token: they hold no data until the API answers.

use std::sync::OnceLock;

use poem::http::{header, StatusCode};
use poem::web::Path;
use poem::{get, handler, Request, Response, Route};
use sha2::{Digest, Sha256};

/// Scripts, styles, images and API calls from this origin only; no inline code, no plugins, no
/// framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
                       form-action 'self'; frame-ancestors 'none'";

/// One built-in file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../assets/index.html"),
};

/// Files under `/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "actions.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/actions.js"),
    },
    Asset {
        name: "logs.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/logs.js"),
    },
    Asset {
        name: "sse.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/sse.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/style.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/icon.svg"),
    },
];

/// Routes of the dashboard (mounted at `/`).
pub fn routes() -> Route {
    Route::new()
        .at("/", get(index))
        .at("/assets/:file", get(asset))
}

#[handler]
fn index(req: &Request) -> Response {
    respond(req, &INDEX)
}

#[handler]
fn asset(req: &Request, Path(file): Path<String>) -> poem::Result<Response> {
    let found = ASSETS.iter().find(|a| a.name == file).ok_or_else(|| {
        poem::Error::from_string(
            format!("the dashboard has no asset named {file}"),
            StatusCode::NOT_FOUND,
        )
    })?;
    Ok(respond(req, found))
}

/// The ETag of an asset: a hash of its bytes, computed once per asset.
fn etag(a: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        std::iter::once(&INDEX)
            .chain(ASSETS)
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                (a.name, format!("\"{hex}\""))
            })
            .collect()
    });
    tags.iter()
        .find(|(n, _)| *n == a.name)
        .map(|(_, t)| t.as_str())
        .unwrap_or("\"0\"")
}

/// The asset with security headers; `304 Not Modified` when the browser has this version. Browsers
/// revalidate every time (`no-cache`), so a new binary's assets show at the next load.
fn respond(req: &Request, a: &Asset) -> Response {
    let tag = etag(a);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let builder = Response::builder()
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::ETAG, tag);
    if fresh {
        return builder.status(StatusCode::NOT_MODIFIED).finish();
    }
    builder.content_type(a.content_type).body(a.body)
}

#[cfg(test)]
mod tests {
    use poem::{Endpoint, Request};

    use super::*;

    async fn get(uri: &str, etag: Option<&str>) -> Response {
        let mut req = Request::builder().uri(uri.parse().unwrap());
        if let Some(t) = etag {
            req = req.header(header::IF_NONE_MATCH, t);
        }
        match routes().call(req.finish()).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    fn header_of(r: &Response, name: header::HeaderName) -> &str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn serves_the_page_and_assets_with_a_csp() {
        for (uri, ty) in [
            ("/", "text/html; charset=utf-8"),
            ("/assets/app.js", "text/javascript; charset=utf-8"),
            ("/assets/sse.js", "text/javascript; charset=utf-8"),
            ("/assets/actions.js", "text/javascript; charset=utf-8"),
            ("/assets/style.css", "text/css; charset=utf-8"),
            ("/assets/icon.svg", "image/svg+xml"),
        ] {
            let r = get(uri, None).await;
            assert_eq!(r.status(), StatusCode::OK, "{uri}");
            assert_eq!(header_of(&r, header::CONTENT_TYPE), ty, "{uri}");
            assert!(
                header_of(&r, header::CONTENT_SECURITY_POLICY).starts_with("default-src 'self'"),
                "{uri}"
            );
            assert_eq!(header_of(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            let tag = header_of(&r, header::ETAG).to_owned();
            let again = get(uri, Some(&tag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{uri}");
        }
        let page = get("/", None)
            .await
            .into_body()
            .into_string()
            .await
            .unwrap();
        assert!(page.contains(r#"<script type="module" src="/assets/app.js">"#));
    }

    #[tokio::test]
    async fn unknown_assets_are_404() {
        assert_eq!(
            get("/assets/nope.js", None).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("/assets/../src/lib.rs", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        assert!(!page.contains("<script>"), "inline scripts break the CSP");
        assert!(!page.contains("<style"), "inline styles break the CSP");
        assert!(!page.contains(" style="), "inline styles break the CSP");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no CDN"
        );
    }
}
