//! Issue 16, item 4: `zedops-<name>` CLI plugins, with the real `zedops` binary and shell-script
//! plugins, against `zedops serve` on the secured default: a plugin is listed with its metadata,
//! runs with the server and token in its environment (the shipped example calls the API with
//! curl), its exit code is zedops'; a plugin named like a built-in is shadowed and never run; a
//! plugin that answers its metadata badly is broken and never run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use zedops_tests::procs::{zedops_bin, Serve, TempDir};
use zedops_tests::{init_logs, unique};

/// A shell-script plugin `zedops-<name>` in `dir`: `metadata` is what it prints for
/// `zedops-plugin-metadata`; run otherwise, it touches `<dir>/<name>.ran` and runs `body`.
fn plugin(dir: &Path, name: &str, metadata: &str, body: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("zedops-{name}"));
    let ran = dir.join(format!("{name}.ran"));
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = zedops-plugin-metadata ]; then\n  echo '{metadata}'\n  exit 0\nfi\ntouch '{}'\n{body}\n",
        ran.display()
    );
    std::fs::write(&path, script)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(ran)
}

fn zedops(serve: &Serve, path_dir: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![path_dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    Ok(Command::new(zedops_bin()?)
        .arg("--server")
        .arg(&serve.http)
        .args(args)
        .env("XDG_CONFIG_HOME", serve.home.path.join("config"))
        .env("XDG_DATA_HOME", serve.home.path.join("data"))
        .env("PATH", std::env::join_paths(dirs)?)
        .env_remove("ZEDOPS_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()?)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_listed_run_with_the_client_settings_and_never_shadow_builtins(
) -> anyhow::Result<()> {
    init_logs();
    let serve = Serve::start(&[&format!("--local-agent={}", unique("plug"))], "warn")?;
    let plugins = serve.home.path.join("data/zedops/plugins");
    let on_path = TempDir::new("plugin-path")?;
    let meta = r#"{"schema_version": 1, "description": "DESC", "version": "2.0.1"}"#;

    // The shipped example, installed in the plugins dir.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/zedops-whoami");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(&example, plugins.join("zedops-whoami"))?;
    // One on PATH that shows its arguments and environment, and exits 7.
    let echo_ran = plugin(
        &on_path.path,
        "echo",
        &meta.replace("DESC", "Shows its arguments"),
        "echo \"args: $*\"\necho \"output: $ZEDOPS_OUTPUT\"\necho \"server: $ZEDOPS_SERVER\"\n[ -n \"$ZEDOPS_TOKEN\" ] && echo token-set\nexit 7",
    )?;
    let ps_ran = plugin(&plugins, "ps", meta, "echo plugin-ps")?;
    let bad_ran = plugin(&plugins, "bad", "this is not json", "echo plugin-bad")?;

    // Listed, with metadata and status; as JSON too.
    let out = zedops(&serve, &on_path.path, &["plugins"])?;
    let listing = text(&out);
    assert_eq!(out.status.code(), Some(0), "{listing}");
    for part in ["whoami", "1.0.0", "Print who the token is", "echo", "2.0.1"] {
        assert!(listing.contains(part), "{part} in {listing}");
    }
    let out = zedops(&serve, &on_path.path, &["plugins", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let status = |name: &str| {
        v.as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .map(|p| p["status"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(status("whoami").as_deref(), Some("ok"), "{v}");
    assert_eq!(status("echo").as_deref(), Some("ok"), "{v}");
    assert_eq!(status("ps").as_deref(), Some("shadowed"), "{v}");
    assert_eq!(status("bad").as_deref(), Some("broken"), "{v}");
    let help = text(&zedops(&serve, &on_path.path, &["--help"])?);
    assert!(
        help.contains("Plugins:") && help.contains("whoami"),
        "{help}"
    );

    // The example calls the API with the server and the token zedops resolved for it (here this
    // host's admin token file: no --token was given).
    let out = zedops(&serve, &on_path.path, &["whoami"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("admin (admin) on {}", serve.http)),
        "{}",
        text(&out)
    );
    let out = zedops(&serve, &on_path.path, &["-o", "json", "whoami"])?;
    let who: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(who["role"], "admin", "{who}");

    // Arguments pass through untouched (flags included), the exit code is the plugin's.
    let out = zedops(&serve, &on_path.path, &["echo", "a b", "--flag", "-x"])?;
    let o = text(&out);
    assert_eq!(out.status.code(), Some(7), "{o}");
    assert!(o.contains("args: a b --flag -x"), "{o}");
    assert!(
        o.contains("output: table") && o.contains("token-set"),
        "{o}"
    );
    assert!(o.contains(&format!("server: {}", serve.http)), "{o}");
    assert!(echo_ran.exists());

    // A plugin named like a built-in never runs; a broken one is refused; an unknown command is
    // a usage error.
    let out = zedops(&serve, &on_path.path, &["ps"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("plugin-ps") && !ps_ran.exists());
    let out = zedops(&serve, &on_path.path, &["bad"])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("broken"), "{}", text(&out));
    assert!(!bad_ran.exists(), "a broken plugin ran");
    let out = zedops(&serve, &on_path.path, &["no-such-thing"])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown command"), "{}", text(&out));
    Ok(())
}
