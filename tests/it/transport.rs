//! How kiln reaches registries: HTTPS by default, verified against the
//! system roots plus `SSL_CERT_FILE`; loopback registries over plain HTTP
//! or unverified TLS, whichever they speak, as Docker does.

use crate::image::stderr;
use crate::registry::Registry;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A CA and a server certificate it signed, for 127.0.0.1, 0.0.0.0 and
/// `registry.kiln.test`, made with the openssl command.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_certs(dir: &Path) -> Certs {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=kiln-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=registry",
    ]);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,IP:0.0.0.0,DNS:registry.kiln.test\n\
         basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("srv.pem"),
        key: dir.join("srv.key"),
    }
}

/// A registry that speaks only TLS, with a certificate from `make_certs`.
pub fn tls_registry() -> (Registry, Certs) {
    let mut certs = None;
    let reg = Registry::start_config(|dir| {
        let c = make_certs(dir);
        let yml = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            c.cert.display(),
            c.key.display()
        );
        certs = Some(c);
        yml
    });
    (reg, certs.expect("certificates"))
}

fn kiln(args: &[&str], env: &[(&str, &Path)], store: &Path) -> Output {
    Command::new(crate::util::kiln_bin())
        .args(args)
        .arg("--cache-dir")
        .arg(store)
        .envs(env.iter().copied())
        .output()
        .expect("kiln")
}

/// A loopback registry that speaks only TLS (self-signed, as local test
/// registries are) works as Docker's does: kiln finds that it answers
/// plain HTTP with "HTTPS server" and goes on over unverified TLS, for a
/// pull and a push.
#[test]
fn loopback_registries_may_speak_tls() {
    let (reg, _certs) = tls_registry();
    let b = reg.seed_base("tls/base:v1", None);
    let dir = tempfile::tempdir().expect("tempdir");
    let target = format!("{}/tls/base:v1", reg.addr);
    let o = kiln(&["pull", &target], &[], &dir.path().join("s"));
    assert!(o.status.success(), "{}", stderr(&o));
    let dest = format!("{}/tls/app:v1", reg.addr);
    let c = crate::image::Ctx::new(&format!("FROM {target}\nCOPY a /a\n"), &[("a", "a\n")]);
    let o = c.kiln(&["--push", "-t", &dest]);
    assert!(o.status.success(), "{}", stderr(&o));
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{dest}"))
        .output()
        .expect("skopeo");
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    drop(b);
}

/// A registry that is not on loopback is reached over verified HTTPS: a
/// certificate from an unknown CA is refused, naming the problem, and
/// `SSL_CERT_FILE` adds the CA. (`0.0.0.0:PORT` reaches the registry under
/// a name kiln does not treat as loopback; the certificate names it.)
#[test]
fn https_is_verified_and_ssl_cert_file_adds_a_ca() {
    let (reg, certs) = tls_registry();
    reg.seed_base("tls/base:v1", None);
    let port = reg.addr.rsplit(':').next().expect("port");
    let target = format!("0.0.0.0:{port}/tls/base:v1");
    let dir = tempfile::tempdir().expect("tempdir");
    let o = kiln(&["pull", &target], &[], &dir.path().join("s0"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("https://0.0.0.0:{port}/")) && e.to_lowercase().contains("certificate"),
        "{e}"
    );
    let o = kiln(
        &["pull", &target],
        &[("SSL_CERT_FILE", &certs.ca)],
        &dir.path().join("s1"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("sha256:"));
}
