//! The server's files in its data dir (`docs/operations.md` § Files): the first admin token and
//! the server's signing key, written as secrets (0600, atomically).

use std::path::{Path, PathBuf};

use zedops_api::auth::Role;
use zedops_api::store::Store;
use zedops_proto::sign::KeyPair;

use crate::ServerError;

/// The file holding the first admin token.
pub fn admin_token_file(dir: &Path) -> PathBuf {
    dir.join("admin.token")
}

/// Writes `contents` to `path` with mode 0600, atomically (temp file + rename).
pub fn write_secret(path: &Path, contents: &str) -> Result<(), ServerError> {
    let tmp = path.with_extension("tmp");
    let failed = |source| ServerError::Write {
        path: path.to_owned(),
        source,
    };
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(failed)?;
        f.write_all(contents.as_bytes()).map_err(failed)?;
        f.sync_all().map_err(failed)?;
    }
    std::fs::rename(&tmp, path).map_err(failed)
}

/// On the first start (no token at all), creates the `admin` token and writes it to
/// `<data-dir>/admin.token` (0600). Returns the file's path.
pub async fn ensure_admin_token(store: &Store, dir: &Path) -> Result<PathBuf, ServerError> {
    let file = admin_token_file(dir);
    if store.tokens().await?.is_empty() {
        let token = store.create_token("admin", Role::Admin).await?;
        write_secret(&file, &format!("{token}\n"))?;
        tracing::info!(file = %file.display(), "created the first admin token");
    }
    Ok(file)
}

/// The server's signing key: the one the database holds, shared by every replica. On the first
/// start on a database, this data dir's `<data-dir>/server.key` (hex seed, 0600; created when
/// missing) is stored there; a replica whose file holds another key takes the database's and
/// writes it to its file.
pub async fn server_key(dir: &Path, store: &Store) -> Result<KeyPair, ServerError> {
    let path = dir.join("server.key");
    let local = local_key(&path)?;
    let seed = store.server_key(&local.seed_hex()).await?;
    if seed == local.seed_hex() {
        return Ok(local);
    }
    let key = KeyPair::from_seed_hex(&seed).ok_or(ServerError::DamagedKey {
        path: PathBuf::from("(the database's server key)"),
    })?;
    write_secret(&path, &format!("{seed}\n"))?;
    tracing::info!(file = %path.display(), "this server signs with the key the database holds (shared by its replicas)");
    Ok(key)
}

/// `<data-dir>/server.key`, created when missing.
fn local_key(path: &Path) -> Result<KeyPair, ServerError> {
    match std::fs::read_to_string(path) {
        Ok(s) => KeyPair::from_seed_hex(&s).ok_or(ServerError::DamagedKey {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = zedops_proto::client::new_keypair();
            write_secret(path, &format!("{}\n", key.seed_hex()))?;
            Ok(key)
        }
        Err(source) => Err(ServerError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}
