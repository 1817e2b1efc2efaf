//! A test PKI made with openssl: a CA, a server certificate and client certificates.

use std::process::Command;

/// A CA (`ca.pem`) and a server certificate (`server.pem`, `server.key`) for localhost,
/// 127.0.0.1 and the `extra_ips`, made with openssl in `dir`.
pub fn make_ca(dir: &std::path::Path, extra_ips: &[&str]) -> anyhow::Result<()> {
    let run = |args: &[&str]| openssl(dir, args);
    let ips: String = extra_ips.iter().map(|ip| format!(",IP:{ip}")).collect();
    std::fs::write(
        dir.join("san.ext"),
        format!("subjectAltName=DNS:localhost,IP:127.0.0.1{ips}\n"),
    )?;
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=zedops test CA",
    ])?;
    signed(dir, "server", "/CN=localhost", "san.ext")
}

/// A client certificate (`client.pem`, `client.key`) for `cn`, signed by the CA [`make_ca`] made
/// in `dir`.
pub fn make_client_cert(dir: &std::path::Path, cn: &str) -> anyhow::Result<()> {
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
    signed(dir, "client", &format!("/CN={cn}"), "client.ext")
}

/// `<name>.key` and `<name>.pem` for `subject`, signed by the CA in `dir` with the extensions of
/// the file `ext`.
fn signed(dir: &std::path::Path, name: &str, subject: &str, ext: &str) -> anyhow::Result<()> {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            ext,
        ],
    )
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    crate::procs::run_ok(&mut cmd, &format!("openssl {args:?}"))?;
    Ok(())
}
