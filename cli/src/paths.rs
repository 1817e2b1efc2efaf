//! Where zedops keeps things (XDG base directories) and the first admin token.

use std::path::{Path, PathBuf};

use anyhow::Context;
use zedops_api::auth::Role;
use zedops_api::store::Store;

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

/// The file holding the first admin token.
pub fn admin_token_file(dir: &Path) -> PathBuf {
    dir.join("admin.token")
}

/// Writes `contents` to `path` with mode 0600, atomically (temp file + rename).
pub fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// On the first start (no token at all), creates the `admin` token and writes it to
/// `<data-dir>/admin.token` (0600). Returns the file's path.
pub fn ensure_admin_token(store: &Store, dir: &Path) -> anyhow::Result<PathBuf> {
    let file = admin_token_file(dir);
    let tokens = store.tokens().map_err(|e| anyhow::anyhow!("{e}"))?;
    if tokens.is_empty() {
        let token = store
            .create_token("admin", Role::Admin)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        write_secret(&file, &format!("{token}\n"))?;
        tracing::info!(file = %file.display(), "created the first admin token");
    }
    Ok(file)
}

/// The server's signing key, `<data-dir>/server.key` (hex seed, 0600), created on first use.
pub fn server_key(dir: &Path) -> anyhow::Result<zedops_proto::sign::KeyPair> {
    let file = dir.join("server.key");
    match std::fs::read_to_string(&file) {
        Ok(s) => zedops_proto::sign::KeyPair::from_seed_hex(&s).with_context(|| {
            format!(
                "{} is damaged: remove it and re-enroll every agent",
                file.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = crate::enroll::new_keypair();
            write_secret(&file, &format!("{}\n", key.seed_hex()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}
