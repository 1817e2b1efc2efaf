//! Debian's PostgreSQL for the tests: a cluster of its own per test (`initdb` in a temporary
//! directory, `postgres` on a free loopback port, run as the `postgres` user), stopped on drop.
//! Never one that happens to run on the machine.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context};

use crate::procs::{Proc, TempDir};

/// A running PostgreSQL with one database, `zedops`, that user `zedops` owns.
pub struct Postgres {
    /// `postgres://zedops@127.0.0.1:PORT/zedops`
    pub url: String,
    _proc: Proc,
    _dir: TempDir,
}

/// The newest installed server's `bin/` (`/usr/lib/postgresql/<version>/bin`).
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed: run scripts/provision.sh")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("postgres").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
        .context("no PostgreSQL server under /usr/lib/postgresql: run scripts/provision.sh")
}

/// The uid and gid of the `postgres` user (the server refuses to run as root).
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        ensure!(
            out.status.success(),
            "no postgres user: run scripts/provision.sh"
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

fn as_postgres(bin: &Path, (uid, gid): (u32, u32)) -> Command {
    let mut c = Command::new(bin);
    c.uid(uid).gid(gid).stdin(Stdio::null());
    c
}

impl Postgres {
    pub async fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let user = postgres_user()?;
        let dir = TempDir::new("postgres")?;
        std::os::unix::fs::chown(&dir.path, Some(user.0), Some(user.1))?;
        let data = dir.path.join("data");
        let mut initdb = as_postgres(&bin.join("initdb"), user);
        initdb.args([
            "-D",
            &data.to_string_lossy(),
            "-A",
            "trust",
            "-U",
            "zedops",
            "-N",
        ]);
        crate::procs::run_ok(&mut initdb, "initdb")?;
        let port = crate::free_port();
        let log = std::fs::File::create(dir.path.join("postgres.log"))?;
        let child = as_postgres(&bin.join("postgres"), user)
            .args(["-D", &data.to_string_lossy(), "-p", &port.to_string()])
            .args([
                "-k",
                &dir.path.to_string_lossy(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .args(["-c", "fsync=off", "-c", "max_connections=100"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        let proc = Proc {
            child,
            what: "postgres".into(),
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        crate::eventually(
            "postgres to listen",
            Duration::from_secs(20),
            || async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
        )
        .await?;
        let created = crate::eventually("the zedops database", Duration::from_secs(20), || {
            let out = as_postgres(&bin.join("createdb"), user)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "zedops",
                    "zedops",
                ])
                .output();
            async move { out.ok().filter(|o| o.status.success()).map(|_| ()) }
        })
        .await;
        created.with_context(|| {
            std::fs::read_to_string(dir.path.join("postgres.log")).unwrap_or_default()
        })?;
        Ok(Self {
            url: format!("postgres://zedops@127.0.0.1:{port}/zedops"),
            _proc: proc,
            _dir: dir,
        })
    }
}
