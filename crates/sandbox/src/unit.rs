//! A systemd service unit read and run the way systemd would run it, for tests on machines
//! whose PID 1 is not systemd: the `[Service]` section's `User=`, `Group=`, `Environment=`,
//! `EnvironmentFile=`, `ExecStart=`, `StateDirectory=`, `StateDirectoryMode=` and
//! `WorkingDirectory=`, with `%i` put in for a template's instance. The test then starts what
//! the installed unit says, not a restatement of it; anything else in the unit (the sandboxing
//! directives) is systemd's own and not emulated.

use anyhow::{anyhow, bail, Context};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// The `[Service]` settings of one unit (one instance of a template).
#[derive(Debug, Clone, Default)]
pub struct ServiceUnit {
    pub user: Option<String>,
    pub group: Option<String>,
    /// `Environment=` assignments, in order.
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=` paths, in order, and whether each may be missing (`-` prefix).
    pub environment_files: Vec<(PathBuf, bool)>,
    /// `ExecStart=`, split into words.
    pub exec_start: Vec<String>,
    /// `StateDirectory=`, relative to /var/lib.
    pub state_directory: Option<String>,
    pub state_directory_mode: Option<u32>,
    pub working_directory: Option<PathBuf>,
}

/// The `PATH` systemd gives a service.
const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin";

impl ServiceUnit {
    /// Reads `path`; `instance` fills `%i` (a template's `name@instance`).
    pub fn read(path: &Path, instance: Option<&str>) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text, instance).with_context(|| format!("in {}", path.display()))
    }

    /// Parses a unit's text; see [`ServiceUnit::read`].
    pub fn parse(text: &str, instance: Option<&str>) -> anyhow::Result<Self> {
        let mut unit = Self::default();
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            if section != "[Service]" {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = specifiers(value.trim(), instance)?;
            match key.trim() {
                "User" => unit.user = Some(value),
                "Group" => unit.group = Some(value),
                "Environment" => unit.environment.extend(assignments(&value)?),
                "EnvironmentFile" => {
                    let (optional, path) = match value.strip_prefix('-') {
                        Some(rest) => (true, rest),
                        None => (false, value.as_str()),
                    };
                    unit.environment_files.push((PathBuf::from(path), optional));
                }
                "ExecStart" => unit.exec_start = words(&value)?,
                "StateDirectory" => unit.state_directory = Some(value),
                "StateDirectoryMode" => {
                    unit.state_directory_mode = Some(
                        u32::from_str_radix(&value, 8)
                            .with_context(|| format!("StateDirectoryMode={value}"))?,
                    )
                }
                "WorkingDirectory" => unit.working_directory = Some(PathBuf::from(value)),
                _ => {}
            }
        }
        if unit.exec_start.is_empty() {
            bail!("no ExecStart= in [Service]");
        }
        Ok(unit)
    }

    /// The environment the service gets: `Environment=`, then each `EnvironmentFile=` in
    /// order (a later value wins, as in systemd), then what systemd itself sets.
    pub fn environment(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut env: Vec<(String, String)> = vec![("PATH".into(), SERVICE_PATH.into())];
        if let Some(user) = &self.user {
            env.push(("USER".into(), user.clone()));
            env.push(("LOGNAME".into(), user.clone()));
        }
        if let Some(dir) = &self.state_directory {
            env.push(("STATE_DIRECTORY".into(), format!("/var/lib/{dir}")));
        }
        env.extend(self.environment.iter().cloned());
        for (path, optional) in &self.environment_files {
            match std::fs::read_to_string(path) {
                Ok(text) => env.extend(environment_file(&text)),
                Err(e) if *optional && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(anyhow!("EnvironmentFile {}: {e}", path.display())),
            }
        }
        // Later assignments win: keep the last of each name, in first-seen order.
        let mut out: Vec<(String, String)> = Vec::new();
        for (key, value) in env {
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => out.push((key, value)),
            }
        }
        Ok(out)
    }

    /// The uid and gid of `User=` and `Group=` (the user's own group when no `Group=`).
    pub fn ids(&self) -> anyhow::Result<Option<(u32, u32)>> {
        let Some(name) = &self.user else {
            return Ok(None);
        };
        let user = nix::unistd::User::from_name(name)?
            .ok_or_else(|| anyhow!("User={name}: no such user"))?;
        let gid = match &self.group {
            Some(group) => {
                nix::unistd::Group::from_name(group)?
                    .ok_or_else(|| anyhow!("Group={group}: no such group"))?
                    .gid
            }
            None => user.gid,
        };
        Ok(Some((user.uid.as_raw(), gid.as_raw())))
    }

    /// Creates `/var/lib/<StateDirectory>` as systemd does before it starts the service: owned
    /// by `User=`/`Group=`, with `StateDirectoryMode=` (default 0755).
    pub fn prepare_state_directory(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let Some(dir) = &self.state_directory else {
            return Ok(());
        };
        let path = Path::new("/var/lib").join(dir);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        if let Some((uid, gid)) = self.ids()? {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {}", path.display()))?;
        }
        let mode = self.state_directory_mode.unwrap_or(0o755);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// The process the unit starts: its `ExecStart=`, exactly the unit's environment, its
    /// user and group (supplementary groups dropped, as the standard library does when it
    /// changes the uid as root), its working directory.
    pub fn command(&self) -> anyhow::Result<std::process::Command> {
        let mut cmd = std::process::Command::new(&self.exec_start[0]);
        cmd.args(&self.exec_start[1..])
            .env_clear()
            .envs(self.environment()?);
        if let Some((uid, gid)) = self.ids()? {
            cmd.uid(uid).gid(gid);
        }
        if let Some(dir) = &self.working_directory {
            cmd.current_dir(dir);
        }
        Ok(cmd)
    }
}

/// `value` with systemd's specifiers this module knows put in: `%i` (the instance), `%%`.
fn specifiers(value: &str, instance: Option<&str>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('i') | Some('I') => out.push_str(
                instance.ok_or_else(|| anyhow!("%i in a unit read without an instance"))?,
            ),
            other => bail!("specifier %{} is not emulated here", other.unwrap_or(' ')),
        }
    }
    Ok(out)
}

/// Words of a command line or an `Environment=` value: split at spaces, double or single quotes
/// keeping spaces.
fn words(value: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in value.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                    any = false;
                }
            }
            (None, c) => current.push(c),
        }
    }
    if quote.is_some() {
        bail!("unterminated quote in {value:?}");
    }
    if any || !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// `Environment=A=1 "B=two words"`.
fn assignments(value: &str) -> anyhow::Result<Vec<(String, String)>> {
    words(value)?
        .into_iter()
        .map(|word| {
            word.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("Environment={word}: not NAME=value"))
        })
        .collect()
}

/// The assignments of an environment file (`NAME=value` lines, `#` and `;` comments, values
/// optionally quoted).
fn environment_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_owned(), v.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_instance_reads_as_systemd_would() {
        let unit = ServiceUnit::parse(
            "[Unit]\nDescription=x %i\n[Service]\nUser=portal-%i\n\
             Environment=PORTAL_CREDENTIALS=/etc/portal/credentials.d/%i.env \"B=two words\"\n\
             EnvironmentFile=-/nonexistent/%i.env\nExecStart=/usr/bin/portal %i\n\
             StateDirectory=portal/%i\nStateDirectoryMode=0700\n[Install]\nUser=nobody\n",
            Some("web"),
        )
        .unwrap();
        assert_eq!(unit.user.as_deref(), Some("portal-web"));
        assert_eq!(unit.exec_start, ["/usr/bin/portal", "web"]);
        assert_eq!(
            unit.environment[0],
            (
                "PORTAL_CREDENTIALS".to_owned(),
                "/etc/portal/credentials.d/web.env".to_owned()
            )
        );
        assert_eq!(unit.environment[1].1, "two words");
        assert_eq!(
            unit.environment_files,
            [(PathBuf::from("/nonexistent/web.env"), true)]
        );
        assert_eq!(unit.state_directory_mode, Some(0o700));
        assert!(ServiceUnit::parse("[Service]\nExecStart=/bin/x %i\n", None).is_err());
    }

    #[test]
    fn environment_files_win_over_environment_lines() {
        let dir = std::env::temp_dir().join(format!("unit-test-{}", crate::world::random_id(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.env");
        std::fs::write(&file, "# c\nA=from-file\nC=\"quoted\"\n").unwrap();
        let unit = ServiceUnit::parse(
            &format!(
                "[Service]\nEnvironment=A=line B=line\nEnvironmentFile={}\nExecStart=/bin/true\n",
                file.display()
            ),
            None,
        )
        .unwrap();
        let env = unit.environment().unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("from-file"));
        assert_eq!(get("B"), Some("line"));
        assert_eq!(get("C"), Some("quoted"));
        std::fs::remove_dir_all(dir).ok();
    }
}
