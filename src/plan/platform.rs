//! Platforms (`os/arch[/variant]`) and the automatic platform ARGs
//! (TARGETPLATFORM, BUILDARCH, ...).

use std::fmt;

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

impl Platform {
    /// The platform kiln runs on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        let variant = if arch == "arm" { "v7" } else { "" };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: variant.into(),
        }
    }

    /// Parses `os/arch[/variant]`, `arch` alone (linux assumed) or
    /// `local`, normalizing aliases (`x86_64` → `amd64`, `aarch64` →
    /// `arm64`, `arm64/v8` → `arm64`) as containerd's platforms package does.
    pub fn parse(text: &str) -> Result<Platform, String> {
        let lower = text.trim().to_ascii_lowercase();
        if lower == "local" {
            return Ok(Platform::host());
        }
        let parts: Vec<&str> = lower.split('/').collect();
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if parts.len() > 3 || parts.iter().any(|p| !valid(p)) {
            return Err(format!(
                "invalid platform {text:?}: expected os/arch[/variant], e.g. linux/amd64"
            ));
        }
        let known_os = [
            "linux",
            "windows",
            "darwin",
            "freebsd",
            "netbsd",
            "openbsd",
            "solaris",
            "illumos",
            "aix",
            "android",
            "ios",
            "plan9",
            "js",
            "wasip1",
            "dragonfly",
        ];
        let (os, arch, variant) = match parts.as_slice() {
            [one] if known_os.contains(one) => {
                return Ok(Platform {
                    os: one.to_string(),
                    ..Platform::host()
                })
            }
            [arch] => ("linux", *arch, ""),
            [os, arch] => (*os, *arch, ""),
            [os, arch, variant] => (*os, *arch, *variant),
            _ => unreachable_platform(),
        };
        if !known_os.contains(&os) {
            return Err(format!(
                "invalid platform {text:?}: unknown operating system {os:?}"
            ));
        }
        let (arch, variant) = normalize_arch(arch, variant);
        Ok(Platform {
            os: os.to_string(),
            arch,
            variant,
        })
    }

    /// The automatic platform ARGs for this platform, with `prefix`
    /// `TARGET` or `BUILD`.
    pub fn args(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (format!("{prefix}PLATFORM"), self.to_string()),
            (format!("{prefix}OS"), self.os.clone()),
            (format!("{prefix}ARCH"), self.arch.clone()),
            (format!("{prefix}VARIANT"), self.variant.clone()),
        ]
    }
}

fn unreachable_platform() -> (&'static str, &'static str, &'static str) {
    ("linux", "amd64", "")
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (a, v) = match (arch, variant) {
        ("i386" | "x86" | "i686", _) => ("386", ""),
        ("x86_64" | "x86-64" | "amd64", v) => ("amd64", if v == "v1" { "" } else { v }),
        ("aarch64" | "arm64", "8" | "v8") => ("arm64", ""),
        ("aarch64" | "arm64", v) => ("arm64", v),
        ("armhf", _) => ("arm", "v7"),
        ("armel", _) => ("arm", "v6"),
        ("arm", "") => ("arm", "v7"),
        ("arm", "5" | "6" | "7" | "8") => ("arm", ""),
        (a, v) => (a, v),
    };
    if arch == "arm" && !variant.is_empty() && !variant.starts_with('v') {
        return ("arm".into(), format!("v{variant}"));
    }
    (a.into(), v.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/arm/7").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert!(Platform::parse("linux//amd64").is_err());
        assert!(Platform::parse("beos/amd64").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }
}
