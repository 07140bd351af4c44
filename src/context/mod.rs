//! The build context: a directory seen through `.dockerignore`.
//!
//! Which ignore file applies follows BuildKit: `<Dockerfile name>.dockerignore`
//! beside the Dockerfile when it exists, else `.dockerignore` at the root of
//! the context. Excluded files are invisible to COPY and ADD.
pub mod checksum;
pub mod ignore;

use ignore::Matcher;
use std::path::Path;

/// Reads the ignore file that applies. `dockerfile` is the Dockerfile's
/// path when it came from a file (not stdin).
pub fn load_ignore(context: &Path, dockerfile: Option<&Path>) -> Result<Matcher, String> {
    let mut candidates = Vec::new();
    if let Some(df) = dockerfile {
        if let Some(name) = df.file_name() {
            let mut n = name.to_os_string();
            n.push(".dockerignore");
            candidates.push(df.with_file_name(n));
        }
    }
    candidates.push(context.join(".dockerignore"));
    for c in candidates {
        // A regular file of at most 16 MiB: a FIFO or a device named
        // .dockerignore must not hang or exhaust the build.
        match crate::snapshot::read_small(&c, 16 << 20) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                return Matcher::parse(&text).map_err(|e| format!("{}: {e}", c.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", c.display())),
        }
    }
    Matcher::parse("").map_err(|e| e.to_string())
}
