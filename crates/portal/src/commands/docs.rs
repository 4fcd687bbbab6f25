//! `portal completions <shell>` and `portal man`: the shell completion scripts and the manual
//! pages, generated from the same command definitions `--help` shows, so they cannot drift.

use super::Failure;
use crate::cli::Cli;
use anyhow::Context;
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "portal", out);
}

/// Writes portal(1) in roff to `out`.
pub fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// Writes portal.1 and portal-<command>.1 for every command into `dir`; returns the files.
pub fn man_pages(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let command = Cli::command();
    let mut written = Vec::new();
    let mut write = |name: String, page: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        clap_mangen::Man::new(page)
            .render(&mut file)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    for sub in command.get_subcommands() {
        let name = format!("portal-{}", sub.get_name());
        write(name.clone(), sub.clone().name(name))?;
    }
    write("portal".to_owned(), command)?;
    Ok(written)
}

/// Writes `text` to standard output; a reader that went away (`| head`) is not an error.
fn print(text: &[u8]) -> Result<(), Failure> {
    match std::io::stdout().lock().write_all(text) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::Error::from(e)
            .context("writing to standard output")
            .into()),
        _ => Ok(()),
    }
}

pub fn run_completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut script = Vec::new();
    completions(shell, &mut script);
    print(&script)
}

pub fn run_man(dir: Option<&Path>) -> Result<(), Failure> {
    match dir {
        None => {
            let mut page = Vec::new();
            man_page(&mut page).context("rendering the manual page")?;
            print(&page)?;
        }
        Some(dir) => {
            for path in man_pages(dir)? {
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_cover_every_command() {
        let mut out = Vec::new();
        completions(clap_complete::Shell::Bash, &mut out);
        let script = String::from_utf8(out).unwrap();
        for command in [
            "verify",
            "reconcile",
            "replay",
            "dlq",
            "users",
            "completions",
            "man",
        ] {
            assert!(
                script.contains(command),
                "{command} missing from the bash completions"
            );
        }
    }

    #[test]
    fn the_manual_page_names_the_program_and_its_commands() {
        let mut out = Vec::new();
        man_page(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(page.contains(".TH portal 1"), "{page}");
        assert!(page.contains("verify"), "{page}");
    }

    #[test]
    fn man_pages_are_written_for_every_command() {
        let dir = std::env::temp_dir().join(format!("portal-man-{}", std::process::id()));
        let written = man_pages(&dir).unwrap();
        let names: Vec<String> = written
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        std::fs::remove_dir_all(&dir).ok();
        assert!(names.contains(&"portal.1".to_owned()), "{names:?}");
        assert!(names.contains(&"portal-verify.1".to_owned()), "{names:?}");
    }

    #[test]
    fn the_version_names_the_commit() {
        let version = Cli::command().get_version().unwrap_or_default().to_owned();
        assert!(version.starts_with(env!("CARGO_PKG_VERSION")), "{version}");
        assert!(version.contains(platform::build::GIT_COMMIT), "{version}");
    }
}
