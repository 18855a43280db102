//! How the commands this process suggests (`approve`, `resume --retry-step`, …) start: `runbook`,
//! or `runbook --journal DIR` when the journal in use is not the default one — a pasted hint must
//! reach the same journal, not silently create an empty default one.

use std::path::Path;
use std::sync::OnceLock;

static PREFIX: OnceLock<String> = OnceLock::new();

/// Records the journal this process uses; hints name it unless it is `default`.
pub fn set_journal(dir: &Path, default: &Path) {
    let _ = PREFIX.set(prefix(dir, default));
}

/// Records an etcd journal (`etcd://…`) as the one this process uses; hints name it.
pub fn set_journal_url(url: &str) {
    let _ = PREFIX.set(format!("runbook --journal {}", shell_words::quote(url)));
}

/// The start of a suggested command.
pub fn runbook() -> &'static str {
    PREFIX.get().map_or("runbook", String::as_str)
}

fn prefix(dir: &Path, default: &Path) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let dir = absolute(dir);
    if dir == absolute(default) {
        return "runbook".into();
    }
    format!(
        "runbook --journal {}",
        shell_words::quote(&dir.to_string_lossy())
    )
}

#[cfg(test)]
mod tests {
    use super::prefix;
    use std::path::Path;

    #[test]
    fn hints_name_a_journal_that_is_not_the_default() {
        let default = Path::new("/home/op/.local/state/runbook/journal");
        assert_eq!(prefix(default, default), "runbook");
        assert_eq!(
            prefix(Path::new("/srv/ops journal"), default),
            "runbook --journal '/srv/ops journal'"
        );
        let relative = prefix(Path::new("j"), default);
        assert!(
            relative.starts_with("runbook --journal /") && relative.ends_with("/j"),
            "a relative journal is named absolutely, to paste anywhere: {relative}"
        );
    }
}
