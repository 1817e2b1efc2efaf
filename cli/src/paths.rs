//! Where zedops keeps things by default (XDG base directories); the server's own files are
//! `zedops_server::files`.

use std::path::PathBuf;

fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/"));
            home.join(fallback)
        })
}

/// Server data dir: `$ZEDOPS_DATA_DIR` is handled by clap; this is the default.
pub fn data_dir() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share").join("zedops")
}

/// Client config dir (`config.toml`).
pub fn config_dir() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config").join("zedops")
}

/// Agent state dir.
pub fn state_dir() -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state").join("zedops-agent")
}

pub use zedops_server::files::{admin_token_file, write_secret};
