//! Stage references: how `FROM <name>`, `COPY --from=<name|index|image>`
//! and `RUN --mount=from=` resolve, as BuildKit resolves them: by index,
//! by stage name (case-insensitive), or else as an image. A stage may only
//! refer to stages before it, so the stage graph has no cycles.

use super::{error_at, Source};
use crate::dockerfile::diag::{suggest, Diagnostic, Pos};
use crate::image::reference;

/// The flag text to point a caret at for a reference of kind `what`.
pub fn flag_token(what: &str) -> &'static str {
    if what == "copy from" {
        "--from"
    } else {
        "from="
    }
}

/// How references resolve for one stage.
pub struct Refs<'a> {
    pub names: &'a [Option<String>],
    /// Index of the stage being planned.
    pub current: usize,
}

impl Refs<'_> {
    fn here(&self) -> String {
        self.names
            .get(self.current)
            .cloned()
            .flatten()
            .unwrap_or_else(|| format!("stage-{}", self.current))
    }

    /// What `value` names, without the order check. A bare word close to a
    /// stage name gets a warning (it is more likely a typo than an image).
    pub fn lookup(
        &self,
        value: &str,
        pos: Pos,
        warnings: &mut Vec<Diagnostic>,
    ) -> Result<Source, Diagnostic> {
        let names = self.names;
        if let Ok(index) = value.parse::<i64>() {
            return match usize::try_from(index).ok().filter(|i| *i < names.len()) {
                Some(i) => Ok(Source::Stage { index: i }),
                None => Err(error_at(
                    pos,
                    format!(
                        "invalid stage index {index}: the Dockerfile has {} stage(s), numbered from 0",
                        names.len()
                    ),
                )),
            };
        }
        let lower = value.to_lowercase();
        if let Some(i) = names
            .iter()
            .position(|n| n.as_deref() == Some(lower.as_str()))
        {
            return Ok(Source::Stage { index: i });
        }
        if value.contains('$') {
            return Err(error_at(
                pos,
                format!("variable expansion is not supported for --from ({value:?}): define a stage with `FROM {value} AS name` (global ARGs work there) and use --from=name"),
            ));
        }
        reference::validate(value)
            .map_err(|why| error_at(pos, format!("invalid image reference {value:?}: {why}")))?;
        if !value.contains([':', '/', '@']) {
            let stage_names: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
            if let Some(s) = suggest(value, &stage_names) {
                warnings.push(Diagnostic::warning(
                    pos,
                    "StageNameTypo",
                    format!("{value:?} is not a stage, so it is pulled as the image docker.io/library/{value}; did you mean stage {s:?}?"),
                ));
            }
        }
        Ok(Source::Image {
            reference: value.to_string(),
        })
    }

    /// Stage references must point to an earlier stage.
    pub fn check_order(
        &self,
        source: &Source,
        value: &str,
        what: &str,
        pos: Pos,
    ) -> Result<(), Diagnostic> {
        let Source::Stage { index } = source else {
            return Ok(());
        };
        let here = self.here();
        if *index == self.current {
            return Err(error_at(
                pos,
                format!("circular dependency detected on stage: {here} ({what} {value:?} refers to the stage itself)"),
            ));
        }
        if *index > self.current {
            return Err(error_at(
                pos,
                format!("cannot {what} stage {value:?}, it needs to be defined before current stage {here:?}"),
            ));
        }
        Ok(())
    }

    /// [`Refs::lookup`] then [`Refs::check_order`].
    pub fn resolve(
        &self,
        value: &str,
        what: &str,
        pos: Pos,
        warnings: &mut Vec<Diagnostic>,
    ) -> Result<Source, Diagnostic> {
        let source = self.lookup(value, pos, warnings)?;
        self.check_order(&source, value, what, pos)?;
        Ok(source)
    }
}
