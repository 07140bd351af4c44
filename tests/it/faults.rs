//! A real registry behind the fault-injecting proxy ([`crate::proxy`]):
//! pulls and pushes that meet 5xx answers, 429s, dropped connections and
//! bodies cut short in either direction, and kiln's use of `HTTP_PROXY`.

use crate::image::{stderr, tar_files, Ctx};
use crate::proxy::{Entry, Fault, FaultProxy, Hits, FAULT_MESSAGE};
use crate::registry::Registry;
use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `len` incompressible bytes (SHA-256 in counter mode), the same for the
/// same seed.
fn random_bytes(len: usize, seed: &str) -> Vec<u8> {
    use sha2::Digest as _;
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0u64;
    while out.len() < len {
        let mut h = sha2::Sha256::new();
        h.update(seed.as_bytes());
        h.update(i.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(len);
    out
}

/// A context whose image is one layer holding `/big.bin`: `len` random
/// bytes (returned too).
fn big_context(len: usize, seed: &str) -> (Ctx, Vec<u8>) {
    let c = Ctx::new("FROM scratch\nCOPY big.bin /big.bin\n", &[]);
    let bytes = random_bytes(len, seed);
    std::fs::write(c.ctx().join("big.bin"), &bytes).expect("write big.bin");
    (c, bytes)
}

/// Puts an image with a `len`-byte random `/big.bin` into the registry
/// as `dest` (with skopeo, straight at the registry); returns the file's
/// bytes and the layer's digest.
fn seed_big(reg: &Registry, dest: &str, len: usize) -> (Vec<u8>, String) {
    let (c, bytes) = big_context(len, dest);
    let img = c.build_oci(&["-t", "big:v1"]);
    reg.push_archive(&c.path("out.tar"), "v1", dest);
    let layer = img.manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest")
        .to_string();
    (bytes, layer)
}

/// The requests with this method and path, in order.
fn attempts<'a>(log: &'a [Entry], method: &str, path: &str) -> Vec<&'a Entry> {
    log.iter()
        .filter(|e| e.req.method == method && e.req.path() == path)
        .collect()
}

/// The manifest digest from kiln's `pushed REF@DIGEST (...)` line.
fn pushed_digest(err: &str) -> Option<String> {
    let line = err.lines().find(|l| l.starts_with("pushed "))?;
    let at = line.split('@').nth(1)?;
    Some(at.split_whitespace().next()?.to_string())
}

/// The manifest digest skopeo reads for `docker://REF`, straight from the
/// registry.
fn skopeo_digest(reference: &str) -> String {
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "skopeo inspect: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("skopeo json");
    v["Digest"].as_str().expect("Digest").to_string()
}

/// The files of `reference` as kiln pulls it into a fresh store.
/// The push kiln reported is the registry's (skopeo reads the digest kiln
/// printed), and its `big.bin` layer pulls back byte for byte.
fn assert_pushed_intact(o: &Output, reg: &Registry, bytes: &[u8]) {
    let printed =
        pushed_digest(&stderr(o)).unwrap_or_else(|| panic!("no pushed line:\n{}", stderr(o)));
    let direct = format!("{}/team/app:v1", reg.addr);
    assert_eq!(skopeo_digest(&direct), printed);
    assert!(
        pull_back(&direct).get("big.bin").map(Vec::as_slice) == Some(bytes),
        "the pushed layer's bytes differ"
    );
}

fn pull_back(reference: &str) -> BTreeMap<String, Vec<u8>> {
    let d = Ctx::new(&format!("FROM {reference}\n"), &[]);
    let o = d.kiln(&["-o", "type=tar,dest=-"]);
    assert!(o.status.success(), "pulling back: {}", stderr(&o));
    tar_files(&o.stdout)
}

fn ok(o: &Output, proxy: &FaultProxy) {
    assert!(
        o.status.success(),
        "kiln failed ({:?}):\n{}\nproxy log:\n{}",
        o.status.code(),
        stderr(o),
        proxy.summary()
    );
}

/// A pull meets a 500 on the manifest, a dropped connection and then a
/// body cut short on its layer: each is retried, and the build gets the
/// layer's bytes intact.
#[test]
fn pull_retries_a_500_a_drop_and_a_cut_body() {
    let reg = Registry::start();
    let (bytes, layer) = seed_big(&reg, "team/base:v1", 3 << 20);
    let hits = Hits::default();
    let l = layer.clone();
    let proxy = FaultProxy::start(&reg.addr, move |r| {
        if r.method == "GET" && r.path().contains("/manifests/") && hits.next("manifest") == 0 {
            Fault::Status(500)
        } else if r.method == "GET" && r.path().ends_with(&l) {
            match hits.next("layer") {
                0 => Fault::Drop,
                1 => Fault::CutResponse(256 << 10),
                _ => Fault::Pass,
            }
        } else {
            Fault::Pass
        }
    });
    let c = Ctx::new(&format!("FROM {}/team/base:v1\n", proxy.addr), &[]);
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    ok(&o, &proxy);
    let files = tar_files(&o.stdout);
    assert!(
        files.get("big.bin") == Some(&bytes),
        "big.bin is not the pushed bytes"
    );

    let log = proxy.log();
    let summary = proxy.summary();
    let manifest = attempts(&log, "GET", "/v2/team/base/manifests/v1");
    assert!(manifest.len() >= 2, "{summary}");
    assert_eq!(manifest[0].fault, Fault::Status(500), "{summary}");
    assert_eq!(manifest[0].status, Some(500), "{summary}");
    assert_eq!(manifest[1].fault, Fault::Pass, "{summary}");
    assert_eq!(
        manifest[1].status,
        Some(200),
        "the retry got the manifest: {summary}"
    );

    let blob = attempts(&log, "GET", &format!("/v2/team/base/blobs/{layer}"));
    assert!(blob.len() >= 3, "{summary}");
    assert_eq!(blob[0].fault, Fault::Drop, "{summary}");
    assert_eq!(blob[0].status, None, "dropped without an answer: {summary}");
    assert_eq!(blob[1].fault, Fault::CutResponse(256 << 10), "{summary}");
    assert_eq!(blob[1].status, Some(200), "{summary}");
    assert_eq!(blob[1].returned, 256 << 10, "the body was cut: {summary}");
    assert_eq!(blob[2].fault, Fault::Pass, "{summary}");
    assert!(
        blob[2].status == Some(200) && blob[2].returned > (3 << 20),
        "the third try got the whole layer: {summary}"
    );
}

/// A layer the registry always answers 500 for: exit 4, naming the
/// registry, the blob, the status and the registry's own words, and
/// nothing of that blob is left in the store.
#[test]
fn a_persistent_500_on_a_blob_fails_cleanly() {
    let reg = Registry::start();
    let (_, layer) = seed_big(&reg, "team/base:v1", 1 << 20);
    let l = layer.clone();
    let proxy = FaultProxy::start(&reg.addr, move |r| {
        if r.method == "GET" && r.path().ends_with(&l) {
            Fault::Status(500)
        } else {
            Fault::Pass
        }
    });
    let c = Ctx::new(&format!("FROM {}/team/base:v1\n", proxy.addr), &[]);
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let e = stderr(&o);
    for want in [proxy.addr.as_str(), layer.as_str(), "500", FAULT_MESSAGE] {
        assert!(e.contains(want), "the error does not name {want:?}:\n{e}");
    }
    let log = proxy.log();
    assert!(
        attempts(&log, "GET", &format!("/v2/team/base/blobs/{layer}")).len() >= 2,
        "a 500 is tried again:\n{}",
        proxy.summary()
    );
    let store = c.path("store");
    let hex = layer.trim_start_matches("sha256:");
    assert!(
        !store.join("blobs/sha256").join(hex).exists(),
        "the failed blob is in the store"
    );
    let left: Vec<_> = std::fs::read_dir(store.join("tmp"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// A push whose first layer upload loses its connection after 1 MiB:
/// kiln asks where the upload stands (or starts it again) and finishes;
/// the registry serves the digest kiln printed, and the layer pulls back
/// intact.
#[test]
fn push_recovers_from_an_upload_cut_short() {
    let reg = Registry::start();
    let cut_done = AtomicBool::new(false);
    let proxy = FaultProxy::start(&reg.addr, move |r| {
        // The first upload request big enough to be cut (not the config's).
        let big = r.content_length().is_none_or(|n| n > 1 << 20);
        if r.is_upload() && big && !cut_done.swap(true, Ordering::SeqCst) {
            Fault::CutRequest(1 << 20)
        } else {
            Fault::Pass
        }
    });
    let (c, bytes) = big_context(4 << 20, "push-cut");
    let o = c.kiln(&["--push", "-t", &format!("{}/team/app:v1", proxy.addr)]);
    ok(&o, &proxy);
    let log = proxy.log();
    let summary = proxy.summary();
    let cut = log
        .iter()
        .find(|e| matches!(e.fault, Fault::CutRequest(_)))
        .unwrap_or_else(|| panic!("no upload was cut:\n{summary}"));
    assert!(
        cut.req.path().starts_with("/v2/team/app/blobs/uploads/"),
        "{summary}"
    );
    assert_eq!(cut.sent, 1 << 20, "1 MiB went through: {summary}");
    assert_eq!(cut.status, None, "the client got no answer: {summary}");
    let later: Vec<&Entry> = log.iter().filter(|e| e.req.n > cut.req.n).collect();
    assert!(
        later.iter().any(|e| {
            (e.req.method == "GET" && e.req.path() == cut.req.path())
                || (e.req.method == "POST" && e.req.path() == "/v2/team/app/blobs/uploads/")
        }),
        "after the cut, neither a GET of the upload URL nor a new upload:\n{summary}"
    );
    assert!(
        later
            .iter()
            .any(|e| e.req.method == "PUT" && e.req.is_upload() && e.upstream == Some(201)),
        "no upload was completed after the cut:\n{summary}"
    );
    assert_pushed_intact(&o, &reg, &bytes);
}

/// The first two upload requests are answered 500, and the first blob
/// HEAD 429 with `Retry-After: 1`: the push waits as told, retries, and
/// succeeds.
#[test]
fn push_retries_5xx_uploads_and_waits_out_a_429() {
    let reg = Registry::start();
    let hits = Hits::default();
    let proxy = FaultProxy::start(&reg.addr, move |r| {
        if r.method == "HEAD" && r.path().contains("/blobs/") && hits.next("head") == 0 {
            Fault::retry_after(429, 1)
        } else if r.is_upload() && hits.next("upload") < 2 {
            Fault::Status(500)
        } else {
            Fault::Pass
        }
    });
    let (c, bytes) = big_context(512 << 10, "push-500");
    let o = c.kiln(&["--push", "-t", &format!("{}/team/app:v1", proxy.addr)]);
    ok(&o, &proxy);
    let log = proxy.log();
    let summary = proxy.summary();
    let first_head = log
        .iter()
        .find(|e| e.req.method == "HEAD")
        .unwrap_or_else(|| panic!("no HEAD:\n{summary}"));
    assert_eq!(first_head.status, Some(429), "{summary}");
    let heads = attempts(&log, "HEAD", first_head.req.path());
    assert!(heads.len() >= 2, "the 429 was not retried:\n{summary}");
    let waited = heads[1].at.duration_since(heads[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}, not the second Retry-After asked:\n{summary}"
    );
    let failed = log
        .iter()
        .filter(|e| e.req.is_upload() && e.status == Some(500))
        .count();
    assert_eq!(failed, 2, "{summary}");
    assert_pushed_intact(&o, &reg, &bytes);
}

/// The request that completes an upload (`PUT ?digest=`) is answered 500
/// once, after the registry has all the bytes: kiln asks the upload's
/// latest URL where it stands and finishes it, sending no byte twice.
/// (The distribution registry forgets an upload asked about through a
/// stale URL, so this also checks that kiln follows each `Location`.)
#[test]
fn push_resumes_when_completing_the_upload_fails() {
    let reg = Registry::start();
    let failed = AtomicBool::new(false);
    let proxy = FaultProxy::start(&reg.addr, move |r| {
        if r.method == "PUT" && r.is_upload() && !failed.swap(true, Ordering::SeqCst) {
            Fault::Status(500)
        } else {
            Fault::Pass
        }
    });
    let (c, bytes) = big_context(4 << 20, "push-put-500");
    let o = c.kiln(&["--push", "-t", &format!("{}/team/app:v1", proxy.addr)]);
    ok(&o, &proxy);
    let log = proxy.log();
    let summary = proxy.summary();
    assert!(
        log.iter()
            .any(|e| e.req.method == "PUT" && e.req.is_upload() && e.status == Some(500)),
        "no PUT was failed:\n{summary}"
    );
    let uploaded: u64 = log
        .iter()
        .filter(|e| e.req.is_upload())
        .map(|e| e.received)
        .sum();
    let layer = bytes.len() as u64;
    // Where the registry dropped the upload (distribution 2.8 does, when
    // the failed PUT was the layer's), the layer goes once more, and only
    // once; where it kept it, nothing goes twice.
    let dropped = log.iter().any(|e| {
        e.req.method == "GET" && e.req.path().contains("/blobs/uploads/") && e.status == Some(404)
    });
    let most = if dropped { 2 * layer } else { layer } + layer / 2;
    assert!(
        uploaded >= layer && uploaded < most,
        "{uploaded} bytes uploaded for a {layer}-byte layer (sent again?):\n{summary}"
    );
    assert_pushed_intact(&o, &reg, &bytes);
}

/// A registry that answers every upload with 500: exit 4, after a bounded
/// number of tries, naming the registry, the blob, the status and the
/// registry's words.
#[test]
fn an_upload_that_always_fails_is_a_clear_error() {
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr, |r| {
        if r.is_upload() {
            Fault::Status(500)
        } else {
            Fault::Pass
        }
    });
    let (c, _) = big_context(256 << 10, "push-fail");
    let o = c.kiln(&["--push", "-t", &format!("{}/team/app:v1", proxy.addr)]);
    let e = stderr(&o);
    let log = proxy.log();
    let summary = proxy.summary();
    assert_eq!(o.status.code(), Some(4), "{e}\n{summary}");
    // The blob being uploaded: the last one asked about before the first
    // upload request.
    let first_upload = log
        .iter()
        .position(|e| e.req.is_upload())
        .unwrap_or_else(|| panic!("no upload request:\n{summary}"));
    let blob = log[..first_upload]
        .iter()
        .rev()
        .find(|e| e.req.method == "HEAD")
        .and_then(|e| e.req.path().rsplit('/').next())
        .unwrap_or_else(|| panic!("no HEAD before the upload:\n{summary}"))
        .to_string();
    for want in [proxy.addr.as_str(), blob.as_str(), "500", FAULT_MESSAGE] {
        assert!(e.contains(want), "the error does not name {want:?}:\n{e}");
    }
    let uploads = log.iter().filter(|e| e.req.is_upload()).count();
    assert!(
        (2..=12).contains(&uploads),
        "{uploads} upload requests: want a few retries, then giving up:\n{summary}"
    );
}

/// Runs `kiln build` with the proxy variables of the environment removed
/// and `env` set.
pub fn kiln_with_proxy_env(c: &Ctx, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(crate::util::kiln_bin());
    cmd.arg("build")
        .arg("--cache-dir")
        .arg(c.path("store"))
        .args(args)
        .arg(c.ctx());
    for v in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        cmd.env_remove(v).env_remove(v.to_ascii_uppercase());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running kiln")
}

/// Reads one response from a raw connection: its head lines and body
/// (by `Content-Length`).
fn read_response(r: &mut impl std::io::BufRead) -> (Vec<String>, Vec<u8>) {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("response head");
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let len = head
        .iter()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("response body");
    (head, body)
}

/// The proxy itself: a connection stays usable after an injected status,
/// and `CONNECT` tunnels to the upstream whatever host it names.
#[test]
fn the_proxy_keeps_connections_and_tunnels() {
    use std::io::{BufReader, Write as _};
    let reg = Registry::start();
    let hits = Hits::default();
    let proxy = FaultProxy::start(&reg.addr, move |r| {
        if r.method == "GET" && hits.next("get") == 0 {
            Fault::Status(503)
        } else {
            Fault::Pass
        }
    });
    let s = std::net::TcpStream::connect(&proxy.addr).expect("connect");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    let get = "GET /v2/ HTTP/1.1\r\nHost: registry.test\r\n\r\n";
    w.write_all(get.as_bytes()).expect("send");
    let (head, body) = read_response(&mut r);
    assert!(head[0].contains(" 503 "), "{head:?}");
    assert!(String::from_utf8_lossy(&body).contains(FAULT_MESSAGE));
    w.write_all(get.as_bytes()).expect("send again");
    let (head, _) = read_response(&mut r);
    assert!(head[0].contains(" 200 "), "{head:?}");
    assert!(
        head.iter()
            .any(|h| h.starts_with("Docker-Distribution-Api-Version")),
        "not the registry's answer: {head:?}"
    );

    let s = std::net::TcpStream::connect(&proxy.addr).expect("connect");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    w.write_all(b"CONNECT registry.test:443 HTTP/1.1\r\nHost: registry.test:443\r\n\r\n")
        .expect("CONNECT");
    let (head, _) = read_response(&mut r);
    assert!(head[0].contains(" 200 "), "{head:?}");
    w.write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\nConnection: close\r\n\r\n")
        .expect("tunnelled GET");
    let (head, _) = read_response(&mut r);
    assert!(head[0].contains(" 200 "), "through the tunnel: {head:?}");
    let log = proxy.log();
    let connect = log
        .iter()
        .find(|e| e.req.method == "CONNECT")
        .unwrap_or_else(|| panic!("{}", proxy.summary()));
    assert_eq!(connect.req.target, "registry.test:443");
    assert_eq!(connect.req.path(), "registry.test:443");
    assert_eq!(log.len(), 3, "{}", proxy.summary());
}
