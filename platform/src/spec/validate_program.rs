//! `function.command`: the program (and, for an interpreter, the script) must exist, so a
//! misspelling is reported by validation rather than at the first batch.
//!
//! Rules: a program written with a `/` resolves against the job folder and must be an
//! executable file; a bare program name must be found on the `PATH` of the validation's
//! environment (skipped when that environment has no `PATH`). When the program is a known
//! interpreter and its first argument is not an option, that argument is a script in the
//! job folder and must exist. Files are only looked for when the job folder exists (text
//! validated on its own has no folder to look in).

use std::path::Path;

use super::checker::Checker;
use super::secret::shown;

/// Interpreters whose first non-option argument is a script file.
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "node", "ruby", "perl", "Rscript",
];

impl Checker<'_> {
    /// Records an error when the command's program or script does not exist.
    pub(super) fn program(&mut self, command: &[String]) {
        const FIELD: &str = "function.command";
        let Some(program) = command.first() else {
            return;
        };
        let has_folder = self.context.dir.is_dir();
        if program.contains('/') && has_folder {
            let path = self.context.dir.join(program);
            if !is_executable_file(&path) {
                self.error(
                    FIELD,
                    format!(
                        "program {} is not an executable file in the job folder (looked at {})",
                        shown(program),
                        shown(&path.display().to_string())
                    ),
                );
            }
        } else if !program.contains('/')
            && let Some(search_path) = (self.context.env)("PATH")
            && !std::env::split_paths(&search_path)
                .any(|folder| is_executable_file(&folder.join(program)))
        {
            self.error(
                FIELD,
                format!(
                    "program {} is not found on PATH; check the spelling, or write a path such as \"./transform\"",
                    shown(program)
                ),
            );
        }
        let interpreter = Path::new(program)
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| {
                INTERPRETERS.contains(&name) || super::validate_preload::is_python_interpreter(name)
            });
        if let [_, script, ..] = command
            && interpreter
            && has_folder
            && !script.starts_with('-')
            && !self.context.dir.join(script).is_file()
        {
            self.error(
                FIELD,
                format!(
                    "script {} is not a file in the job folder; check the spelling",
                    shown(script)
                ),
            );
        }
    }
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}
