//! What people see: the live view on a real terminal (tmux gives the
//! build a pseudo-terminal and shows its screen as a person would see
//! it), the plain lines for CI logs, `rawjson` for tools, `-q`.

use crate::image::{stderr, Ctx};
use crate::run::busybox;
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of the test's own, with one 120×40 window; killed when
/// dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str, env: &[(&str, &str)]) -> Tmux {
        let socket = format!("kiln-test-{}-{}", std::process::id(), rand_suffix());
        let mut cmd = Command::new("tmux");
        // -u: UTF-8 whatever the locale (the view draws ✔ and spinners).
        cmd.args([
            "-u",
            "-L",
            &socket,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
        ]);
        for (k, v) in env {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        let o = cmd
            .arg(format!("{command}; echo EXIT=$?; sleep 60"))
            .output()
            .expect("tmux (scripts/test installs it)");
        assert!(o.status.success(), "tmux: {}", stderr(&o));
        Tmux { socket }
    }

    /// The screen, as text (`escapes`: with the color codes).
    fn screen(&self, escapes: bool) -> String {
        let mut args = vec!["-u", "-L", &self.socket, "capture-pane", "-p"];
        if escapes {
            args.push("-e");
        }
        let o = Command::new("tmux").args(&args).output().expect("tmux");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Waits until the screen shows `what`; returns that screen.
    fn wait_for(&self, what: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen(false);
            if s.contains(what) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {what:?}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&self, keys: &str) {
        let o = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", keys])
            .output()
            .expect("tmux");
        assert!(o.status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

fn build_command(c: &Ctx, extra: &str) -> String {
    format!(
        "{} build --cache-dir {} {extra} {}",
        crate::util::kiln_bin().display(),
        c.path("store").display(),
        c.ctx().display()
    )
}

/// On a terminal: a running step shows its spinner, timer and last lines
/// of output; once done it is one line with its time, cached steps say
/// CACHED, and the output lines are gone from the screen.
#[test]
fn the_live_view_on_a_terminal() {
    let c = busybox(
        "RUN for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.4; done; echo done > /d\n",
        &[],
    );
    let t = Tmux::start(&build_command(&c, ""), &[]);
    let running = t.wait_for("line-4", 30);
    assert!(
        running.contains("[stage-0 3/3] RUN for i in 1 2 3 4 5 6"),
        "{running}"
    );
    // The last lines only: line-1 has scrolled out of the step's tail.
    assert!(!running.contains("line-1\n"), "{running}");
    let end = t.wait_for("EXIT=", 30);
    assert!(end.contains("EXIT=0"), "{end}");
    assert!(end.contains("✔ [stage-0 2/3] COPY bin /bin"), "{end}");
    let run_line = end
        .lines()
        .find(|l| l.contains("[stage-0 3/3] RUN"))
        .unwrap_or_else(|| panic!("{end}"));
    assert!(
        run_line.starts_with('✔') && run_line.trim_end().ends_with('s'),
        "{run_line:?}"
    );
    assert!(!end.contains("line-6"), "the step's output stayed:\n{end}");
    assert!(end.contains("built sha256:"), "{end}");
    // Colors on a terminal, none with NO_COLOR.
    assert!(t.screen(true).contains("\x1b["));
    drop(t);
    let again = Tmux::start(&build_command(&c, ""), &[("NO_COLOR", "1")]);
    let end = again.wait_for("EXIT=", 30);
    assert!(
        end.contains("✔ [stage-0 3/3] RUN") && end.contains("CACHED"),
        "{end}"
    );
    let raw = again.screen(true);
    assert!(!raw.contains("\x1b["), "colors despite NO_COLOR:\n{raw:?}");
}

/// Ctrl-C during a step: kiln stops, says so, and leaves no live lines.
#[test]
fn ctrl_c_leaves_the_terminal_clean() {
    let c = busybox("RUN echo started; sleep 30\n", &[]);
    let t = Tmux::start(&build_command(&c, ""), &[]);
    t.wait_for("started", 30);
    t.keys("C-c");
    let end = t.wait_for("EXIT=", 20);
    assert!(end.contains("EXIT=130"), "{end}");
    assert!(end.contains("interrupted"), "{end}");
    assert!(
        !end.contains("[stage-0 2/2] RUN echo started; sleep 30 "),
        "a spinner line stayed:\n{end}"
    );
    assert!(!end.contains("started\n"), "{end}");
}

/// Plain lines as BuildKit numbers them, with the output prefixed, a DONE
/// or CACHED line per step and a summary; rawjson is one object per line;
/// -q prints the image ID only.
#[test]
fn plain_rawjson_and_quiet() {
    let c = busybox("RUN echo hello from the step\n", &[]);
    let o = c.kiln(&[
        "--progress=plain",
        "-o",
        &format!("type=oci,dest={}", c.path("o.tar").display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    let lines: Vec<&str> = e.lines().collect();
    let head = lines
        .iter()
        .position(|l| l.ends_with("[stage-0 3/3] RUN echo hello from the step"))
        .unwrap_or_else(|| panic!("{e}"));
    let id = lines[head].split(' ').next().unwrap_or("");
    assert!(id.starts_with('#'), "{e}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{id} ")) && l.ends_with(" hello from the step")),
        "{e}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("{id} DONE "))),
        "{e}"
    );
    let summary = lines.last().copied().unwrap_or("");
    assert!(
        summary.starts_with("built sha256:")
            && summary.contains("(0 steps cached, 2 ran)")
            && summary.ends_with(&format!("OCI archive {}", c.path("o.tar").display())),
        "{summary}"
    );

    let o = c.kiln(&["--progress=rawjson"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let objects: Vec<serde_json::Value> = stderr(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(objects.iter().any(|v| v["type"] == "step"
        && v["event"] == "cached"
        && v["text"] == "RUN echo hello from the step"));
    let last = objects.last().expect("objects");
    assert_eq!(last["type"], "result");
    assert_eq!(last["cached"], 2);

    let o = c.kiln(&["-q"]);
    assert!(o.status.success());
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.trim().starts_with("sha256:") && out.lines().count() == 1,
        "{out}"
    );
}

/// Transfers on a terminal: each blob's bar ends as one line.
#[test]
fn pulls_show_their_blobs_on_a_terminal() {
    let reg = crate::registry::Registry::start();
    let _base = reg.seed_base("tty/base:v1", None);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Tmux::start(
        &format!(
            "{} pull --cache-dir {} {}/tty/base:v1",
            crate::util::kiln_bin().display(),
            dir.path().join("store").display(),
            reg.addr
        ),
        &[],
    );
    let end = t.wait_for("EXIT=", 30);
    assert!(end.contains("EXIT=0"), "{end}");
    assert!(end.contains("✔ pulled sha256:"), "{end}");
}

/// A transfer in progress shows its byte bar: a slow network (the fault
/// proxy stops for 4 s after the first MiB of each blob) holds a pull of
/// a 3 MiB layer mid-way, where the screen shows the blob's bar with the
/// bytes so far of its size; it ends as one `✔ pulled` line.
#[test]
fn a_slow_pull_shows_its_byte_bar() {
    use crate::proxy::{Fault, FaultProxy};
    let reg = crate::registry::Registry::start();
    let mut rng = crate::util::Lcg(7);
    // Random bytes: gzip leaves the layer about as big.
    let data: Vec<u8> = (0..3 << 20).map(|_| rng.next() as u8).collect();
    let b = Ctx::new("FROM scratch\nCOPY big.bin /\n", &[]);
    std::fs::write(b.ctx().join("big.bin"), &data).expect("big.bin");
    b.build_oci(&["-t", "big:v1"]);
    reg.push_archive(&b.path("out.tar"), "v1", "tty/big:v1");
    let proxy = FaultProxy::start(&reg.addr, |r| {
        if r.method == "GET" && r.path().contains("/blobs/") {
            Fault::Stall(1 << 20, Duration::from_secs(4))
        } else {
            Fault::Pass
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Tmux::start(
        &format!(
            "{} pull --cache-dir {} {}/tty/big:v1",
            crate::util::kiln_bin().display(),
            dir.path().join("store").display(),
            proxy.addr
        ),
        &[],
    );
    // Stopped at 1 MiB of 3, for 4 s: a third of the bar.
    let mid = t.wait_for("[========", 30);
    let bar = mid
        .lines()
        .find(|l| l.contains("MiB/"))
        .unwrap_or_default()
        .to_string();
    assert!(bar.contains("pulling sha256:"), "{mid}");
    assert!(
        bar.contains(" MiB/3.00 MiB") && bar.contains(">   "),
        "{mid}"
    );
    let end = t.wait_for("EXIT=", 30);
    assert!(end.contains("EXIT=0"), "{end}");
    assert!(end.contains("✔ pulled sha256:"), "{end}");
    assert!(!end.contains("MiB/"), "the bar stayed:\n{end}");
}
