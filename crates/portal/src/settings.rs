//! Where the settings come from, in the order that wins: a flag, the environment, the
//! credentials file `portal setup` wrote (`PORTAL_CREDENTIALS`, default
//! `.portal/credentials.env`; `none` reads none), a fallback variable (an operator URL falls
//! back to the service's own), the default. The file's values are read into the command line's
//! defaults, never into the process's environment: a child process (`portal bench`'s services)
//! gets only what it is given, and no thread races a `set_var`.

use crate::cli::{Cli, Command, UpArgs};
use anyhow::{anyhow, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use ops::setup::Credentials;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

/// The credentials file when PORTAL_CREDENTIALS does not name one.
pub const DEFAULT_CREDENTIALS: &str = ".portal/credentials.env";

/// The values of the credentials file, and where it is.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// PORTAL_CREDENTIALS named the file (it is then an error for it to be missing, except for
    /// the commands that write it).
    pub named: bool,
    /// The file exists.
    pub found: bool,
    file: BTreeMap<String, String>,
}

impl Sources {
    /// Reads the credentials file PORTAL_CREDENTIALS names (or the default one). A missing
    /// default file is no file; one that exists but cannot be read, or that others may read,
    /// is an error naming it.
    pub fn load() -> anyhow::Result<Self> {
        match std::env::var_os("PORTAL_CREDENTIALS") {
            Some(p) if p.is_empty() || p == "none" => Ok(Self::default()),
            Some(p) => Self::load_from(PathBuf::from(p), true),
            None => Self::load_from(PathBuf::from(DEFAULT_CREDENTIALS), false),
        }
    }

    /// Reads the credentials file at `path` (`named`: the operator chose it, so that it cannot
    /// be looked at is an error; the default one that cannot be looked at is no file, said in
    /// one warning line).
    pub fn load_from(path: PathBuf, named: bool) -> anyhow::Result<Self> {
        let found = match std::fs::metadata(&path) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) if named => {
                return Err(anyhow!(
                    "PORTAL_CREDENTIALS: cannot read {}: {e}",
                    path.display()
                ))
            }
            Err(e) => {
                // Logging is not set up yet: the one line goes to standard error directly.
                eprintln!(
                    "warning: cannot look at {} ({e}); reading no credentials file",
                    path.display()
                );
                false
            }
        };
        let file = if found {
            Credentials::load(&path)
                .with_context(|| format!("PORTAL_CREDENTIALS: {}", path.display()))?
                .0
        } else {
            BTreeMap::new()
        };
        Ok(Self {
            path: Some(path),
            named,
            found,
            file,
        })
    }

    /// Refuses a file PORTAL_CREDENTIALS names that does not exist (a typo would otherwise
    /// run every part with the development defaults).
    pub fn require_named_file(&self) -> anyhow::Result<()> {
        match &self.path {
            Some(path) if self.named && !self.found => Err(anyhow!(
                "PORTAL_CREDENTIALS names {}, which does not exist (`none` reads no file)",
                path.display()
            )),
            _ => Ok(()),
        }
    }

    /// A variable's value from the environment, else from the file.
    pub fn get(&self, var: &str) -> Option<String> {
        std::env::var(var)
            .ok()
            .or_else(|| self.file.get(var).cloned())
    }

    /// A variable's value in the credentials file (whatever the environment says).
    pub fn file_value(&self, var: &str) -> Option<&str> {
        self.file.get(var).map(String::as_str)
    }

    /// Where `var`'s value comes from when no flag sets it.
    pub fn origin(&self, var: &str) -> Origin {
        if std::env::var_os(var).is_some() {
            Origin::Environment
        } else if self.file.contains_key(var) {
            Origin::File
        } else if let Some((_, from)) = ops::settings::FALLBACKS
            .iter()
            .find(|(to, from)| *to == var && self.get(from).is_some())
        {
            Origin::Fallback(from)
        } else {
            Origin::Default
        }
    }

    /// `command` with the file's values (and the fallbacks) as the defaults of the settings
    /// they name, in every subcommand, and each setting's value shown as its variable's name
    /// (so clap's errors name the variable to fix).
    pub fn apply(&self, command: clap::Command) -> clap::Command {
        let ids: Vec<(clap::Id, String)> = command
            .get_arguments()
            .filter_map(|a| {
                let var = a.get_env()?.to_str()?.to_owned();
                Some((a.get_id().clone(), var))
            })
            .collect();
        let mut command = command;
        for (id, var) in ids {
            let value = match self.origin(&var) {
                Origin::File => self.file.get(&var).cloned(),
                Origin::Fallback(from) => self.get(from),
                Origin::Environment | Origin::Default => None,
            };
            command = command.mut_arg(id, |arg| {
                if !arg.get_action().takes_values() {
                    // A flag (MANAGED_BY_SETUP): its value is true or false, no secret to hide.
                    return match value {
                        Some(value) => arg.default_value(value),
                        None => arg,
                    };
                }
                let arg = arg.value_name(var.clone());
                match value {
                    // A secret may be among them: never shown in --help.
                    Some(value) => match arg.get_value_delimiter() {
                        Some(d) => arg
                            .default_values(value.split(d).map(str::to_owned).collect::<Vec<_>>())
                            .hide_default_value(true),
                        None => arg.default_value(value).hide_default_value(true),
                    },
                    None => arg,
                }
            });
        }
        let names: Vec<String> = command
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        for name in names {
            command = command.mut_subcommand(name, |sub| self.apply(sub));
        }
        command
    }

    /// Parses `args` (the first is the program's name) with these sources.
    pub fn parse_from<I, T>(&self, args: I) -> Result<(Cli, ArgMatches), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = self.apply(Cli::command());
        let matches = command.try_get_matches_from_mut(args)?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        if let (Command::Up(up), Some(given)) = (&mut cli.command, matches.subcommand_matches("up"))
        {
            self.operator_follows_services(up, given);
        }
        Ok((cli, matches))
    }

    /// Under `portal up`, which takes both, an operator URL that nothing set follows the
    /// service's, flag included (`portal up --auth-database-url …` puts the sync admin API, the
    /// backfill and the scheduled reconcile on that database too, as the services).
    fn operator_follows_services(&self, up: &mut UpArgs, given: &ArgMatches) {
        let unset = |id: &str, var: &str| {
            given.value_source(id) != Some(ValueSource::CommandLine)
                && matches!(self.origin(var), Origin::Default | Origin::Fallback(_))
        };
        let operator = &mut up.operator;
        if unset("operator_auth_database_url", "OPERATOR_AUTH_DATABASE_URL") {
            operator.operator_auth_database_url = up.auth.db.auth_database_url.clone();
        }
        if unset("operator_user_database_url", "OPERATOR_USER_DATABASE_URL") {
            operator.operator_user_database_url = up.user_db.user_database_url.clone();
        }
        if unset(
            "operator_appointment_database_url",
            "OPERATOR_APPOINTMENT_DATABASE_URL",
        ) {
            operator.operator_appointment_database_url =
                up.appointment_db.appointment_database_url.clone();
        }
        if unset("operator_amqp_url", "OPERATOR_AMQP_URL") {
            operator.operator_amqp_url = up.auth.broker.amqp_url.clone();
        }
    }
}

/// Where a setting's value came from (when no flag gave it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Environment,
    File,
    /// The variable named here (an operator URL falls back to the service's).
    Fallback(&'static str),
    Default,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sources(text: &str) -> Sources {
        let dir = std::env::temp_dir().join(format!(
            "portal-sources-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials.env");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = Credentials::load(&path).unwrap().0;
        std::fs::remove_dir_all(&dir).unwrap();
        Sources {
            path: Some(path),
            named: true,
            found: true,
            file,
        }
    }

    /// The file's values reach the settings of the command they belong to, and a fallback
    /// (an operator URL without a value of its own) takes the service's value from the file.
    #[test]
    fn the_files_values_become_the_settings_of_the_part_that_reads_them() {
        let s = sources(
            "PORTAL_TEST_UNUSED=1\nRELAY_BATCH_SIZE=17\nAUTH_DATABASE_URL=postgres://a@h/auth_x\n",
        );
        let (cli, _) = s.parse_from(["portal", "relay"]).unwrap();
        let crate::cli::Command::Relay(relay) = cli.command else {
            panic!("not relay")
        };
        assert_eq!(relay.relay.tuning.relay_batch_size, 17);
        assert_eq!(relay.db.auth_database_url, "postgres://a@h/auth_x");
        let (cli, _) = s.parse_from(["portal", "verify"]).unwrap();
        let crate::cli::Command::Verify(verify) = cli.command else {
            panic!("not verify")
        };
        assert_eq!(
            verify.operator.operator_auth_database_url,
            "postgres://a@h/auth_x"
        );
    }

    /// Every command's definition passes clap's own checks (unique names, ids and groups).
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// The file `portal setup` writes, every key of it, is read by every command (found by
    /// hand: MANAGED_BY_SETUP, a flag, could not take a hidden default, and `portal up` stopped
    /// right after its setup).
    #[test]
    fn every_command_reads_the_file_the_setup_writes() {
        let s = sources(
            "AUTH_DATABASE_URL=postgres://auth_service:pw@127.0.0.1:5432/auth_db\n\
             USER_DATABASE_URL=postgres://user_service:pw@127.0.0.1:5432/user_db\n\
             APPOINTMENT_DATABASE_URL=postgres://appointment_service:pw@127.0.0.1:5432/appointment_db\n\
             OPERATOR_AUTH_DATABASE_URL=postgres://portal_operator:pw@127.0.0.1:5432/auth_db\n\
             OPERATOR_USER_DATABASE_URL=postgres://portal_operator:pw@127.0.0.1:5432/user_db\n\
             OPERATOR_APPOINTMENT_DATABASE_URL=postgres://portal_operator:pw@127.0.0.1:5432/appointment_db\n\
             RELAY_AMQP_URL=amqp://portal-relay:pw@127.0.0.1:5672/%2f\n\
             USER_SERVICE_AMQP_URL=amqp://portal-user-service:pw@127.0.0.1:5672/%2f\n\
             APPOINTMENT_SERVICE_AMQP_URL=amqp://portal-appointment-service:pw@127.0.0.1:5672/%2f\n\
             OPERATOR_AMQP_URL=amqp://portal-operator:pw@127.0.0.1:5672/%2f\n\
             AMQP_URL=amqp://portal-operator:pw@127.0.0.1:5672/%2f\n\
             MANAGED_BY_SETUP=true\n\
             TRUSTED_PUBLISHERS=portal-relay,portal-operator\n\
             PASSWORD_PG_AUTH_SERVICE=pw\n",
        );
        let mut command = s.apply(Cli::command());
        command.build();
        let names: Vec<String> = command
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .filter(|n| {
                !matches!(
                    n.as_str(),
                    "chaos" | "bench" | "completions" | "man" | "help"
                )
            })
            .collect();
        for name in names {
            let sub = command.find_subcommand(&name).unwrap().clone();
            if sub.has_subcommands() {
                continue; // users, consumer, keys, config: their own arguments are required
            }
            let args = match name.as_str() {
                "replay" => vec!["portal", "replay", "--to", "q"],
                "events" => vec!["portal", "events", "--user", "u"],
                "dlq" => vec!["portal", "dlq", "list"],
                "healthcheck" => vec!["portal", "healthcheck", "relay"],
                "offboard" => vec![
                    "portal",
                    "offboard",
                    "a@clinic.test",
                    "--policy",
                    "cancel",
                    "--reason",
                    "left",
                ],
                _ => vec!["portal", name.as_str()],
            };
            if let Err(e) = s.parse_from(&args) {
                panic!("`{}` with the setup's file: {e}", args.join(" "));
            }
        }
        // Commands under a group, each with its required arguments (the loop above skips the
        // groups).
        for args in [
            &["portal", "scim", "token", "create", "entra-production"][..],
            &["portal", "scim", "token", "create", "okta", "--quiet"],
            &["portal", "scim", "token", "list"],
            &["portal", "scim", "token", "list", "--json"],
            &["portal", "scim", "token", "revoke", "entra-production"],
        ] {
            if let Err(e) = s.parse_from(args) {
                panic!("`{}` with the setup's file: {e}", args.join(" "));
            }
        }
        let (cli, _) = s
            .parse_from(["portal", "scim", "token", "create", "okta", "-q"])
            .unwrap();
        let crate::cli::Command::Scim(scim) = cli.command else {
            panic!("not scim")
        };
        let crate::cli::ScimCommand::Token(crate::cli::ScimTokenCommand::Create {
            name,
            quiet,
            ..
        }) = *scim
        else {
            panic!("not scim token create")
        };
        assert_eq!((name.as_str(), quiet), ("okta", true));
        // `consumer add` and `remove` read the operator's identities from it too.
        for args in [
            &[
                "portal",
                "consumer",
                "add",
                "pharmacy",
                "--credentials-file",
                "p.env",
            ][..],
            &["portal", "consumer", "remove", "pharmacy"],
        ] {
            let (cli, _) = s
                .parse_from(args)
                .unwrap_or_else(|e| panic!("`{}` with the setup's file: {e}", args.join(" ")));
            let crate::cli::Command::Consumer(consumer) = cli.command else {
                panic!("not consumer")
            };
            let operator = match consumer {
                crate::cli::ConsumerCommand::Add {
                    operator,
                    setup,
                    trust,
                    prefix,
                    ..
                } => {
                    assert!(setup.managed_by_setup);
                    assert_eq!(
                        trust.trusted_publishers,
                        ["portal-relay", "portal-operator"]
                    );
                    assert_eq!(prefix.broker_user_prefix, "portal-");
                    operator
                }
                crate::cli::ConsumerCommand::Remove {
                    operator, setup, ..
                } => {
                    assert!(setup.managed_by_setup, "it deletes the broker user it made");
                    operator
                }
                crate::cli::ConsumerCommand::List { operator } => operator,
            };
            assert_eq!(
                operator.operator_amqp_url,
                "amqp://portal-operator:pw@127.0.0.1:5672/%2f"
            );
        }
        // The erasure's commands read the operator's identities from it too: the search and
        // the purge run as the operator, `users erase` calls the API and then purges.
        let user = "00000000-0000-0000-0000-000000000001";
        for args in [
            &["portal", "erasure", "verify", user][..],
            &[
                "portal",
                "erasure",
                "verify",
                user,
                "--database",
                "postgres://postgres@127.0.0.1:5432/reporting",
                "--database",
                "postgres://postgres@127.0.0.1:5432/archive",
                "--json",
            ],
            &["portal", "erasure", "verify", user, "--all-databases"],
            &["portal", "erasure", "purge", user],
            &[
                "portal",
                "users",
                "erase",
                "a@clinic.test",
                "--reason",
                "ticket 4711",
                "--yes",
            ],
        ] {
            let (cli, _) = s
                .parse_from(args)
                .unwrap_or_else(|e| panic!("`{}` with the setup's file: {e}", args.join(" ")));
            let operator = match cli.command {
                crate::cli::Command::Erasure(crate::cli::ErasureCommand::Verify(v)) => {
                    assert_eq!(v.user_id.to_string(), user);
                    if v.json {
                        assert_eq!(v.databases.len(), 2);
                    }
                    v.operator
                }
                crate::cli::Command::Erasure(crate::cli::ErasureCommand::Purge(p)) => p.operator,
                crate::cli::Command::Users(users) => match *users {
                    crate::cli::UsersCommand::Erase {
                        operator,
                        yes,
                        reason,
                        ..
                    } => {
                        assert!(yes);
                        assert_eq!(reason, "ticket 4711");
                        operator
                    }
                    other => panic!("not users erase: {other:?}"),
                },
                other => panic!("not an erasure command: {other:?}"),
            };
            assert_eq!(
                operator.operator_auth_database_url,
                "postgres://portal_operator:pw@127.0.0.1:5432/auth_db"
            );
            assert_eq!(
                operator.operator_amqp_url,
                "amqp://portal-operator:pw@127.0.0.1:5672/%2f"
            );
        }
        assert!(
            s.parse_from(["portal", "erasure", "verify", "not-a-uuid"])
                .is_err(),
            "the id is a UUID"
        );
        assert!(
            s.parse_from(["portal", "users", "erase", "a@clinic.test"])
                .is_err(),
            "a reason is required"
        );
        let (cli, _) = s.parse_from(["portal", "user-service"]).unwrap();
        let crate::cli::Command::UserService(users) = cli.command else {
            panic!("not user-service")
        };
        assert!(users.setup.managed_by_setup);
        assert_eq!(
            users.consumer.trust.trusted_publishers,
            ["portal-relay", "portal-operator"]
        );
        assert_eq!(
            users.service.user_service_amqp_url.as_deref(),
            Some("amqp://portal-user-service:pw@127.0.0.1:5672/%2f")
        );
    }

    /// `portal up --auth-database-url X` puts the operator's parts (sync admin API, backfill,
    /// scheduled reconcile) on X too, unless the operator's own URL is set; and the file's
    /// RECONCILE_INTERVAL reaches the sync admin API's configuration.
    #[test]
    fn under_up_an_unset_operator_url_follows_the_services_flag() {
        let s = sources("RECONCILE_INTERVAL=15m\n");
        let (cli, _) = s
            .parse_from([
                "portal",
                "up",
                "--auth-database-url",
                "postgres://postgres@127.0.0.1:5432/elsewhere_auth",
            ])
            .unwrap();
        let crate::cli::Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(
            up.operator.operator_auth_database_url,
            "postgres://postgres@127.0.0.1:5432/elsewhere_auth"
        );
        let config = up
            .sync_admin
            .into_config(
                &up.operator,
                up.token_checks(),
                &up.consumer.trust.trusted_publishers,
                platform::settings::DEFAULT_AUTH_SERVICE_URL,
            )
            .unwrap();
        assert_eq!(
            config.auth_database_url,
            up.operator.operator_auth_database_url
        );
        assert_eq!(
            config.reconcile_interval,
            Some(std::time::Duration::from_secs(15 * 60))
        );
        let (cli, _) = s
            .parse_from([
                "portal",
                "up",
                "--auth-database-url",
                "postgres://postgres@127.0.0.1:5432/elsewhere_auth",
                "--operator-auth-database-url",
                "postgres://portal_operator@127.0.0.1:5432/elsewhere_auth",
            ])
            .unwrap();
        let crate::cli::Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(
            up.operator.operator_auth_database_url,
            "postgres://portal_operator@127.0.0.1:5432/elsewhere_auth"
        );
    }

    /// A flag wins over the file.
    #[test]
    fn a_flag_wins_over_the_file() {
        let s = sources("RELAY_BATCH_SIZE=17\n");
        let (cli, _) = s
            .parse_from(["portal", "relay", "--relay-batch-size", "9"])
            .unwrap();
        let crate::cli::Command::Relay(relay) = cli.command else {
            panic!("not relay")
        };
        assert_eq!(relay.relay.tuning.relay_batch_size, 9);
    }

    /// A bad value in the file is refused naming its variable.
    #[test]
    fn a_bad_value_in_the_file_is_refused_by_its_variables_name() {
        let s = sources("RELAY_BATCH_SIZE=many\n");
        let error = s.parse_from(["portal", "relay"]).unwrap_err().to_string();
        assert!(error.contains("RELAY_BATCH_SIZE"), "{error}");
    }
}
