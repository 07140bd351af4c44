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
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
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

/// Proxies from the environment, as Go's clients use them:
/// - a loopback registry is reached directly, whatever `HTTP_PROXY` says;
/// - `HTTPS_PROXY` carries HTTPS through a `CONNECT` tunnel: the registry's
///   name (`registry.kiln.test`, which no resolver knows) is only ever
///   resolved by the proxy, and the certificate is still checked against
///   `SSL_CERT_FILE`;
/// - `NO_PROXY` naming the registry bypasses the proxy (and so fails to
///   resolve the name);
/// - `HTTP_PROXY` carries plain HTTP to an insecure registry, in absolute
///   form.
#[test]
fn proxies_from_the_environment() {
    use crate::faults::kiln_with_proxy_env;
    use crate::image::{tar_files, Ctx};
    use crate::proxy::FaultProxy;
    let plain = Registry::start();
    plain.seed_base("team/base:v1", None);
    let plain_proxy = FaultProxy::pass(&plain.addr);
    let via_plain = format!("http://{}", plain_proxy.addr);

    let c = Ctx::new(&format!("FROM {}/team/base:v1\n", plain.addr), &[]);
    let o = kiln_with_proxy_env(
        &c,
        &["-o", "type=tar,dest=-"],
        &[("HTTP_PROXY", &via_plain)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        plain_proxy.log().is_empty(),
        "a loopback registry went through HTTP_PROXY:\n{}",
        plain_proxy.summary()
    );

    let (tls, certs) = tls_registry();
    tls.seed_base("team/base:v1", None);
    let tls_proxy = FaultProxy::pass(&tls.addr);
    let via_tls = format!("http://{}", tls_proxy.addr);
    let ca = certs.ca.to_str().expect("utf-8");
    let c = Ctx::new("FROM registry.kiln.test/team/base:v1\n", &[]);
    let o = kiln_with_proxy_env(
        &c,
        &["-o", "type=tar,dest=-"],
        &[("HTTPS_PROXY", &via_tls), ("SSL_CERT_FILE", ca)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(tar_files(&o.stdout).contains_key("base/base.txt"));
    let log = tls_proxy.log();
    assert!(
        !log.is_empty()
            && log
                .iter()
                .all(|e| e.req.method == "CONNECT" && e.req.target == "registry.kiln.test:443"),
        "want only CONNECT registry.kiln.test:443:\n{}",
        tls_proxy.summary()
    );
    // Without the CA, the tunnel is there but the certificate is not
    // trusted.
    let c2 = Ctx::new("FROM registry.kiln.test/team/base:v1\n", &[]);
    let o = kiln_with_proxy_env(
        &c2,
        &["-o", "type=tar,dest=-"],
        &[("HTTPS_PROXY", &via_tls)],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).to_lowercase().contains("certificate"),
        "{}",
        stderr(&o)
    );

    let before = tls_proxy.log().len();
    let o = kiln_with_proxy_env(
        &c2,
        &["-o", "type=tar,dest=-"],
        &[
            ("HTTPS_PROXY", &via_tls),
            ("SSL_CERT_FILE", ca),
            ("NO_PROXY", "registry.kiln.test"),
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("registry.kiln.test"), "{}", stderr(&o));
    assert_eq!(
        tls_proxy.log().len(),
        before,
        "NO_PROXY was ignored:\n{}",
        tls_proxy.summary()
    );

    // A plain-HTTP registry named insecure: HTTPS fails (the name does not
    // resolve without the proxy), then plain HTTP goes through HTTP_PROXY.
    let c3 = Ctx::new("FROM plain.kiln.test:5000/team/base:v1\n", &[]);
    let o = kiln_with_proxy_env(
        &c3,
        &[
            "--insecure-registry",
            "plain.kiln.test:5000",
            "-o",
            "type=tar,dest=-",
        ],
        &[("HTTP_PROXY", &via_plain)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let log = plain_proxy.log();
    assert!(
        !log.is_empty()
            && log
                .iter()
                .all(|e| e.req.target.starts_with("http://plain.kiln.test:5000/v2/")),
        "want absolute-form requests for plain.kiln.test:5000:\n{}",
        plain_proxy.summary()
    );
}
