//! The web dashboard: static assets built into the binary, served at `/`.

use poem::{endpoint::make_sync, web::Html, Route};

const INDEX: &str = include_str!("../assets/index.html");

/// Routes of the dashboard (mounted at `/`).
pub fn routes() -> Route {
    Route::new().at("/", make_sync(|_| Html(INDEX)))
}
