//! `function.preload`: Python modules imported once by a parent interpreter (the zygote)
//! that forks instances (`platform/src/function/zygote/`).
//!
//! Rules: each entry is a dotted Python module name (`pyarrow`, `pyarrow.parquet`,
//! `mymodule`), listed once, at most [`MAX_PRELOAD`] of them; and the command must be a
//! Python interpreter running a script, `[python, script, args...]`: the interpreter's
//! file name is `python`, `python3` or `python3.N` (any folder), and the script is not an
//! interpreter option (`-m`, `-c`, `-u`, ...), because the forked instance runs the script
//! with `runpy.run_path` as a plain `python3 script.py` would.

use std::collections::BTreeSet;
use std::path::Path;

use super::checker::Checker;

/// Most modules one job may preload.
const MAX_PRELOAD: usize = 64;

/// Whether `program` names a CPython interpreter (`python`, `python3`, `python3.12`).
pub(crate) fn is_python_interpreter(program: &str) -> bool {
    let Some(name) = Path::new(program)
        .file_name()
        .and_then(|name| name.to_str())
    else {
        return false;
    };
    let Some(version) = name.strip_prefix("python") else {
        return false;
    };
    match version.split_once('.') {
        None => version.is_empty() || version == "3",
        Some((major, minor)) => {
            major == "3" && !minor.is_empty() && minor.bytes().all(|byte| byte.is_ascii_digit())
        }
    }
}

/// Whether `name` is a dotted Python module name.
fn is_module_name(name: &str) -> bool {
    name.split('.').all(|part| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
            && chars.all(|rest| rest == '_' || rest.is_ascii_alphanumeric())
    })
}

impl Checker<'_> {
    /// The checked module list (empty when `raw` is absent or wrong).
    pub(super) fn preload(
        &mut self,
        raw: Option<&[String]>,
        command: Option<&[String]>,
    ) -> Vec<String> {
        let Some(modules) = raw else {
            return Vec::new();
        };
        const FIELD: &str = "function.preload";
        let mut valid = true;
        if modules.is_empty() {
            self.error(
                FIELD,
                "the list is empty; name at least one module, e.g. preload = [\"pyarrow\"], or remove the field",
            );
            valid = false;
        }
        if modules.len() > MAX_PRELOAD {
            self.error(
                FIELD,
                format!(
                    "{} modules listed; allowed: at most {MAX_PRELOAD}",
                    modules.len()
                ),
            );
            valid = false;
        }
        let mut seen = BTreeSet::new();
        for module in modules {
            let quoted = super::secret::shown(module);
            if !is_module_name(module) {
                self.error(
                    FIELD,
                    format!(
                        "{quoted} is not a Python module name; allowed: dotted names of letters, digits and '_', e.g. \"pyarrow.parquet\""
                    ),
                );
                valid = false;
            } else if !seen.insert(module.as_str()) {
                self.error(FIELD, format!("{quoted} is listed twice"));
                valid = false;
            }
        }
        if let Some(command) = command {
            let runs_a_script = match command {
                [program, script, ..] => is_python_interpreter(program) && !script.starts_with('-'),
                _ => false,
            };
            if !runs_a_script {
                self.error(
                    FIELD,
                    format!(
                        "preload needs a command that runs a Python script, [\"python3\", \"transform.py\", ...] (interpreter python, python3 or python3.N, then the script, no interpreter options); function.command is {command:?}"
                    ),
                );
                valid = false;
            }
        }
        if valid { modules.to_vec() } else { Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters_are_recognised_by_file_name() {
        for program in [
            "python3",
            "python",
            "/usr/bin/python3.11",
            ".venv/bin/python3",
        ] {
            assert!(is_python_interpreter(program), "{program}");
        }
        for program in [
            "sh",
            "python2",
            "python3.",
            "python3.x",
            "pypy3",
            "ipython3",
            "",
        ] {
            assert!(!is_python_interpreter(program), "{program}");
        }
    }

    #[test]
    fn module_names_are_dotted_identifiers() {
        for name in ["pyarrow", "pyarrow.parquet", "_private", "my_module2"] {
            assert!(is_module_name(name), "{name}");
        }
        for name in ["", "2fast", "a..b", "a.", "a-b", "os; import sys", "a b"] {
            assert!(!is_module_name(name), "{name}");
        }
    }
}
