//! Bearer tokens against a real registry: Debian's `docker-registry` (the
//! CNCF distribution registry) with `auth: token`, and a small token
//! service written here. It signs RS256 JWTs with the `openssl` CLI (the
//! self-signed certificate goes in the token's `x5c` header and in the
//! registry's `rootcertbundle`), grants user `alice` what she asks for in
//! repositories under `team/`, gives anonymous callers a token with no
//! access (as Docker Hub does), refuses a wrong password with 401, and
//! records every request it sees.

use crate::image::{stderr, Ctx};
use crate::registry::Registry;
use base64::Engine as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SERVICE: &str = "kiln-test-registry";
const ISSUER: &str = "kiln-test-issuer";
const USER: &str = "alice";
const PASSWORD: &str = "s3cret-t0ken-pw";

/// One request the token service answered.
#[derive(Debug, Clone)]
struct TokenRequest {
    /// The query string as sent.
    query: String,
    /// Each `scope` parameter, split at spaces (the scope grammar allows
    /// several in one parameter, and a client may repeat the parameter).
    scopes: Vec<String>,
    /// Basic credentials came with the request.
    with_credentials: bool,
    /// ... and they were alice's (a token was issued); false for a 401.
    accepted: bool,
    /// What the token grants, as `repository:name:action,...`.
    granted: Vec<String>,
    at: Instant,
}

/// The token service: a loopback listener thread; its key and certificate
/// live in `dir`.
struct TokenServer {
    addr: String,
    cert: PathBuf,
    log: Arc<Mutex<Vec<TokenRequest>>>,
    /// Tokens expire this many seconds after they are issued (the
    /// registry adds 60 s of leeway to `exp`, so a negative value makes
    /// tokens that die within seconds).
    exp_offset: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `secs` since the epoch as RFC 3339 (UTC).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Decodes a query component (`%XX`, and `+` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("openssl stdin");
    let o = child.wait_with_output().expect("openssl");
    assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    o.stdout
}

impl TokenServer {
    fn start() -> TokenServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let (k, c) = (key.to_string_lossy(), cert.to_string_lossy());
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &k,
                "-out",
                &c,
                "-days",
                "2",
                "-subj",
                "/CN=kiln-test-token-signer",
            ],
            b"",
        );
        let der = openssl(&["x509", "-in", &c, "-outform", "DER"], b"");
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let exp_offset = Arc::new(AtomicI64::new(300));
        let (log2, exp2) = (log.clone(), exp_offset.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, exp, key, x5c) = (log2.clone(), exp2.clone(), key.clone(), x5c.clone());
                std::thread::spawn(move || serve_token(stream, &log, &exp, &key, &x5c));
            }
        });
        TokenServer {
            addr,
            cert,
            log,
            exp_offset,
            _dir: dir,
        }
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.log.lock().expect("log").clone()
    }

    fn clear(&self) {
        self.log.lock().expect("log").clear();
    }

    /// A registry that takes this service's tokens.
    fn registry(&self) -> Registry {
        Registry::start_config(|_| {
            format!(
                "auth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                self.addr,
                self.cert.display()
            )
        })
    }
}

/// Answers one `GET /token?service=..&scope=..` (Connection: close).
fn serve_token(
    stream: TcpStream,
    log: &Mutex<Vec<TokenRequest>>,
    exp_offset: &AtomicI64,
    key: &std::path::Path,
    x5c: &str,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut auth = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                auth = Some(value.trim().to_string());
            }
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut scopes = Vec::new();
    let mut service = String::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "scope" => scopes.extend(
                unescape(v)
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "service" => service = unescape(v),
            _ => {}
        }
    }
    let user_pass = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let with_credentials = user_pass.is_some();
    let accepted = user_pass.as_deref() == Some(&format!("{USER}:{PASSWORD}"));
    let mut s = stream;
    if (with_credentials && !accepted) || service != SERVICE {
        log.lock().expect("log").push(TokenRequest {
            query: query.to_string(),
            scopes,
            with_credentials,
            accepted: false,
            granted: Vec::new(),
            at: Instant::now(),
        });
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        let _ = write!(
            s,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"kiln-test-token\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    // Alice gets the pull and push she asks for under team/; anonymous
    // callers get a token that grants nothing.
    let mut access = Vec::new();
    let mut granted = Vec::new();
    for scope in &scopes {
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        if !(accepted && kind == "repository" && name.starts_with("team/")) {
            continue;
        }
        let allowed: Vec<&str> = actions
            .split(',')
            .filter(|a| *a == "pull" || *a == "push")
            .collect();
        if !allowed.is_empty() {
            granted.push(format!("{kind}:{name}:{}", allowed.join(",")));
            access.push(serde_json::json!({"type": kind, "name": name, "actions": allowed}));
        }
    }
    let now = unix_now();
    let offset = exp_offset.load(Ordering::SeqCst);
    let jti = format!("{now}-{}", log.lock().expect("log").len());
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": if accepted { USER } else { "" },
        "aud": SERVICE,
        "exp": now + offset,
        "nbf": now - 1,
        "iat": now,
        "jti": jti,
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = openssl(
        &["dgst", "-sha256", "-sign", &key.to_string_lossy()],
        input.as_bytes(),
    );
    let token = format!("{input}.{}", b64url(&sig));
    // The registry allows 60 s past `exp`: what is left, as it counts.
    let expires_in = (offset + 60).max(1);
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": rfc3339(now),
    })
    .to_string();
    log.lock().expect("log").push(TokenRequest {
        query: query.to_string(),
        scopes,
        with_credentials,
        accepted,
        granted,
        at: Instant::now(),
    });
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A `$DOCKER_CONFIG` directory holding `user_pass` for `registry`.
fn docker_config(c: &Ctx, name: &str, registry: &str, user_pass: Option<&str>) -> String {
    let dir = c.path(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    if let Some(up) = user_pass {
        let auth = base64::engine::general_purpose::STANDARD.encode(up);
        let cfg = serde_json::json!({"auths": {registry: {"auth": auth}}});
        std::fs::write(dir.join("config.json"), cfg.to_string()).expect("config.json");
    }
    dir.to_string_lossy().into_owned()
}

fn creds() -> String {
    format!("{USER}:{PASSWORD}")
}

/// Stdout and stderr of a run, to look for leaked secrets.
fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The team/base image seeded into `ts`'s registry (as alice), a context
/// building `FROM` it, and a docker config with alice's credentials; the
/// token server's log starts empty.
fn app_on_base(ts: &TokenServer) -> (Registry, Ctx, String) {
    let reg = ts.registry();
    reg.seed_base("team/base:v1", Some(&creds()));
    let c = Ctx::new(
        &format!("FROM {}/team/base:v1\nCOPY a /a\n", reg.addr),
        &[("a", "a\n")],
    );
    let cfg = docker_config(&c, "docker", &reg.addr, Some(&creds()));
    ts.clear();
    (reg, c, cfg)
}

/// With credentials in `$DOCKER_CONFIG`, `FROM` pulls a base image from a
/// token-authenticated registry: kiln asks the token service for
/// `repository:team/base:pull` with alice's credentials, and the password
/// appears nowhere in its output.
#[test]
fn pull_with_a_bearer_token() {
    let ts = TokenServer::start();
    let (_reg, c, cfg) = app_on_base(&ts);
    let out = c.path("out.tar");
    let o = c.kiln_env(
        &["-o", &format!("type=oci,dest={}", out.display())],
        &[("DOCKER_CONFIG", &cfg)],
    );
    eprintln!("kiln: {}", stderr(&o));
    assert!(o.status.success(), "{}", stderr(&o));
    let img = crate::image::read_oci(&std::fs::read(&out).expect("out.tar"));
    let paths = crate::image::all_paths(&img);
    assert!(paths.iter().any(|p| p == "base/base.txt"), "{paths:?}");
    let reqs = ts.requests();
    eprintln!("token requests: {reqs:#?}");
    assert!(
        reqs.iter().any(
            |r| r.scopes.iter().any(|s| s == "repository:team/base:pull")
                && r.with_credentials
                && r.accepted
        ),
        "no credentialed request for repository:team/base:pull: {reqs:#?}"
    );
    assert!(
        !all_output(&o).contains(PASSWORD),
        "the password leaked: {}",
        all_output(&o)
    );
}

/// Without credentials kiln asks the token service anonymously, gets a
/// token that grants nothing, and fails with exit 4 and a message that
/// says the registry wants credentials and none are configured (as it says
/// for a basic-auth registry), naming the registry and the 401.
#[test]
fn pull_without_credentials_is_a_clear_error() {
    let ts = TokenServer::start();
    let reg = ts.registry();
    reg.seed_base("team/base:v1", Some(&creds()));
    let c = Ctx::new(&format!("FROM {}/team/base:v1\n", reg.addr), &[]);
    let cfg = docker_config(&c, "docker-none", &reg.addr, None);
    ts.clear();
    let o = c.kiln_env(&["-o", "type=tar,dest=-"], &[("DOCKER_CONFIG", &cfg)]);
    let e = stderr(&o);
    eprintln!("kiln without credentials: {e}");
    assert_eq!(o.status.code(), Some(4), "{e}");
    let reqs = ts.requests();
    assert!(
        !reqs.is_empty() && reqs.iter().all(|r| !r.with_credentials),
        "kiln should ask anonymously: {reqs:#?}"
    );
    assert!(e.contains(&reg.addr) && e.contains("401"), "{e}");
    assert!(
        !e.contains("refused the credentials"),
        "no credentials were configured or sent, yet kiln says they were refused: {e}"
    );
    assert!(
        e.contains("asks for credentials") || e.contains("none are configured"),
        "the error should say the registry wants credentials and none are configured: {e}"
    );
}

/// A wrong password: the token service answers 401, and kiln says so
/// (exit 4), without printing the password.
#[test]
fn wrong_password_is_refused_by_the_token_service() {
    let ts = TokenServer::start();
    let reg = ts.registry();
    reg.seed_base("team/base:v1", Some(&creds()));
    let c = Ctx::new(&format!("FROM {}/team/base:v1\n", reg.addr), &[]);
    let cfg = docker_config(&c, "docker-bad", &reg.addr, Some("alice:not-the-pw-42"));
    ts.clear();
    let o = c.kiln_env(&["-o", "type=tar,dest=-"], &[("DOCKER_CONFIG", &cfg)]);
    let e = stderr(&o);
    eprintln!("kiln with a wrong password: {e}");
    assert_eq!(o.status.code(), Some(3), "{e}");
    let reqs = ts.requests();
    assert!(
        reqs.iter().any(|r| r.with_credentials && !r.accepted),
        "{reqs:#?}"
    );
    assert!(e.contains("token service") && e.contains("401"), "{e}");
    assert!(
        !all_output(&o).contains("not-the-pw-42"),
        "the password leaked: {e}"
    );
}

/// `--push` to a token-authenticated registry: kiln asks for a scope with
/// push, the base layer is mounted from team/base, and skopeo reads back
/// the manifest digest kiln printed.
#[test]
fn push_with_a_bearer_token() {
    let ts = TokenServer::start();
    let (reg, c, cfg) = app_on_base(&ts);
    let target = format!("{}/team/app:v1", reg.addr);
    let o = c.kiln_env(&["--push", "-t", &target], &[("DOCKER_CONFIG", &cfg)]);
    let e = stderr(&o);
    eprintln!("kiln --push: {e}");
    assert!(o.status.success(), "{e}");
    assert!(
        !all_output(&o).contains(PASSWORD),
        "the password leaked: {e}"
    );
    let reqs = ts.requests();
    eprintln!("token requests: {reqs:#?}");
    assert!(
        reqs.iter().any(|r| r.accepted
            && r.granted
                .iter()
                .any(|g| g.starts_with("repository:team/app:") && g.contains("push"))),
        "no token with push on team/app: {reqs:#?}"
    );
    let printed = e
        .lines()
        .find_map(|l| l.strip_prefix(&format!("pushed {target}@")))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("kiln printed no pushed digest: {e}"))
        .to_string();
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--creds", &creds()])
        .arg(format!("docker://{target}"))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "skopeo inspect: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("skopeo json");
    assert_eq!(v["Digest"].as_str(), Some(printed.as_str()));
}

/// One pull of a five-layer image: the token for
/// `repository:team/multi:pull` is fetched once and reused for the
/// manifest, the config and every layer, not fetched again per blob.
#[test]
fn one_pull_reuses_its_token() {
    let ts = TokenServer::start();
    let reg = ts.registry();
    let files: Vec<(String, String)> = (0..5)
        .map(|i| (format!("f{i}"), format!("{i}\n")))
        .collect();
    let dockerfile: String = std::iter::once("FROM scratch\n".to_string())
        .chain(files.iter().map(|(f, _)| format!("COPY {f} /{f}\n")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let b = Ctx::new(&dockerfile, &refs);
    let seeded = b.build_oci(&["-t", "multi:v1"]);
    assert_eq!(seeded.layers.len(), 5);
    reg.push_archive_as(&b.path("out.tar"), "v1", "team/multi:v1", Some(&creds()));
    let c = Ctx::new(&format!("FROM {}/team/multi:v1\n", reg.addr), &[]);
    let cfg = docker_config(&c, "docker", &reg.addr, Some(&creds()));
    ts.clear();
    let o = c.kiln_env(&["-o", "type=tar,dest=-"], &[("DOCKER_CONFIG", &cfg)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reqs = ts.requests();
    let mut scopes: Vec<String> = reqs.iter().flat_map(|r| r.scopes.clone()).collect();
    scopes.sort();
    scopes.dedup();
    eprintln!(
        "one pull of 5 layers: {} token requests for {} distinct scopes {scopes:?}",
        reqs.len(),
        scopes.len()
    );
    assert!(
        reqs.len() == scopes.len(),
        "kiln fetched {} tokens for {} scope(s) {scopes:?} in one pull: tokens should be cached per scope; requests: {:#?}",
        reqs.len(),
        scopes.len(),
        reqs.iter().map(|r| &r.query).collect::<Vec<_>>()
    );
}

/// A TCP proxy to `upstream` that holds the first client chunk containing
/// `trigger` for `delay` (as if the operation before it had been long),
/// and notes when it let it through and every `HTTP/1.1 401` sent back.
struct Proxy {
    addr: String,
    released: Arc<Mutex<Option<Instant>>>,
    unauthorized: Arc<Mutex<Vec<Instant>>>,
}

impl Proxy {
    fn start(upstream: &str, trigger: &'static str, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let released = Arc::new(Mutex::new(None));
        let unauthorized = Arc::new(Mutex::new(Vec::new()));
        let (rel, unauth, upstream) =
            (released.clone(), unauthorized.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_in, mut s_out) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mut s_in, mut c_out) = (server, client);
                let rel = rel.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match c_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let hit = String::from_utf8_lossy(&buf[..n]).contains(trigger);
                        if hit && rel.lock().expect("lock").is_none() {
                            std::thread::sleep(delay);
                            *rel.lock().expect("lock") = Some(Instant::now());
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let unauth = unauth.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if buf[..n].starts_with(b"HTTP/1.1 401 ") {
                            unauth.lock().expect("lock").push(Instant::now());
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Proxy {
            addr,
            released,
            unauthorized,
        }
    }
}

/// Tokens that die about 2-3 s after they are issued (the registry allows
/// 60 s past `exp`, so `exp` is set 57 s in the past), and a push whose
/// manifest PUT is held back 4 s by a proxy, as after a long upload: the
/// registry refuses the stale token with 401, and kiln fetches a new one
/// and finishes the push instead of failing.
#[test]
fn an_expired_token_is_fetched_again() {
    let ts = TokenServer::start();
    let reg = ts.registry();
    ts.exp_offset.store(-57, Ordering::SeqCst);
    let proxy = Proxy::start(
        &reg.addr,
        "PUT /v2/team/app/manifests/",
        Duration::from_secs(4),
    );
    let c = Ctx::new(
        "FROM scratch\nCOPY a /a\nCOPY b /b\n",
        &[("a", "a\n"), ("b", "b\n")],
    );
    let cfg = docker_config(&c, "docker", &proxy.addr, Some(&creds()));
    let target = format!("{}/team/app:v1", proxy.addr);
    let o = c.kiln_env(&["--push", "-t", &target], &[("DOCKER_CONFIG", &cfg)]);
    let e = stderr(&o);
    eprintln!("kiln --push with short-lived tokens: {e}");
    let released = proxy
        .released
        .lock()
        .expect("lock")
        .expect("the proxy never saw the manifest PUT");
    let reqs = ts.requests();
    let after: Vec<&TokenRequest> = reqs.iter().filter(|r| r.at > released).collect();
    let refused_after = proxy
        .unauthorized
        .lock()
        .expect("lock")
        .iter()
        .filter(|t| **t > released)
        .count();
    eprintln!(
        "{} token requests, {} after the held-back PUT; {refused_after} 401s after it",
        reqs.len(),
        after.len()
    );
    assert!(
        refused_after >= 1,
        "the registry did not refuse the stale token: the test proves nothing"
    );
    assert!(
        o.status.success(),
        "kiln did not recover from an expired token: {e}"
    );
    assert!(
        after.iter().any(|r| r.accepted
            && r.granted
                .iter()
                .any(|g| g.starts_with("repository:team/app:") && g.contains("push"))),
        "no new push token after the stale one was refused: {reqs:#?}"
    );
    let o = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &creds(),
        ])
        .arg(format!("docker://{}/team/app:v1", reg.addr))
        .output()
        .expect("skopeo");
    assert!(
        o.status.success(),
        "the manifest is not there: {}",
        stderr(&o)
    );
}
