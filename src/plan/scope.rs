//! The variables in scope while a stage is planned: the image's ENV, the
//! ARGs declared so far, and the environment that expansion and RUN see.
//!
//! As in BuildKit, ARG and ENV both add to the build state's environment
//! (the later one wins there), while only ENV reaches the image config.

/// Docker's default PATH, used when the base image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The ARGs Docker predefines: usable with `--build-arg` without an ARG
/// instruction, and left out of history.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Sets `key` in an ordered env list, replacing in place.
pub fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
}

/// The state of a stage as planning walks it.
#[derive(Debug, Clone, Default)]
pub struct StageScope {
    /// The image config's ENV.
    pub env: Vec<(String, String)>,
    /// What expansion and RUN see: ENV and ARG values.
    pub run_env: Vec<(String, String)>,
    /// ARGs declared in this stage (or inherited from a stage base) with values.
    pub args: Vec<(String, String)>,
    /// Names of every ARG declared in this stage, with or without value.
    pub declared: Vec<String>,
    pub workdir: String,
    /// Whether WORKDIR was set in this stage or an absolute WORKDIR is known.
    pub workdir_set: bool,
    pub user: String,
    pub shell: Vec<String>,
    /// SHELL was set (in this stage, a stage base or the image config).
    pub shell_set: bool,
    pub onbuild: Vec<String>,
    /// The base's ENV is known (scratch, a stage, or a resolved image).
    pub env_known: bool,
}

impl StageScope {
    pub fn set_env(&mut self, key: &str, value: &str) {
        set(&mut self.env, key, value);
        set(&mut self.run_env, key, value);
    }

    pub fn set_arg(&mut self, key: &str, value: Option<&str>) {
        if !self.declared.iter().any(|d| d == key) {
            self.declared.push(key.to_string());
        }
        if let Some(v) = value {
            set(&mut self.args, key, v);
            set(&mut self.run_env, key, v);
        }
    }

    /// Ensures PATH is set, as BuildKit does for every stage.
    pub fn ensure_path(&mut self) {
        if !self.env.iter().any(|(k, _)| k == "PATH") {
            self.set_env("PATH", DEFAULT_PATH);
        }
    }
}
