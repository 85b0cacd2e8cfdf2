//! Options shared by the subcommands: the cookie, the settings and TLS.

use std::path::PathBuf;

use minishard::settings::{show, show_range, CHOICES, SETTINGS};
use minishard::{Config, TlsFiles};

/// Where the cluster's cookie comes from.
#[derive(clap::Args, Clone, Debug)]
pub struct CookieArgs {
    /// Read the cookie from this file (a trailing newline is ignored).
    #[arg(long, value_name = "PATH")]
    pub cookie_file: Option<PathBuf>,
    /// The cookie itself.
    #[arg(
        long = "cookie-env",
        env = "MINISHARD_COOKIE",
        hide = true,
        hide_env_values = true
    )]
    pub cookie_env: Option<String>,
}

impl CookieArgs {
    /// The cookie; refuses to go on without one.
    pub fn load(&self) -> Result<Vec<u8>, String> {
        let cookie = match (&self.cookie_file, &self.cookie_env) {
            (Some(path), _) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read the cookie file {}: {e}", path.display()))?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                bytes
            }
            (None, Some(value)) => value.clone().into_bytes(),
            (None, None) => {
                return Err("no cookie: pass --cookie-file PATH or set MINISHARD_COOKIE".into())
            }
        };
        if cookie.is_empty() {
            return Err("the cookie is empty".into());
        }
        Ok(cookie)
    }
}

/// Every setting as a flag, built from the list of settings
/// (`minishard::settings`): `--NAME` in its unit, `--NAME-ms` for a timing,
/// `--NAME OPTION` for a choice (`--quorum majority`). A flag not given
/// keeps the setting's default.
#[derive(Clone, Debug, Default)]
pub struct SettingArgs {
    given: Vec<(&'static str, u64)>,
    chosen: Vec<(&'static str, String)>,
}

impl SettingArgs {
    /// Applies the settings given on the command line to `config`.
    pub fn apply(&self, config: &mut Config) -> Result<(), String> {
        for (name, value) in &self.given {
            config.set(name, *value).map_err(|e| e.to_string())?;
        }
        for (name, value) in &self.chosen {
            config.set_choice(name, value).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl clap::FromArgMatches for SettingArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<SettingArgs, clap::Error> {
        let mut args = SettingArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        for setting in SETTINGS {
            if let Some(value) = matches.get_one::<u64>(setting.name) {
                self.given.retain(|(name, _)| *name != setting.name);
                self.given.push((setting.name, *value));
            }
        }
        for choice in CHOICES {
            if let Some(value) = matches.get_one::<String>(choice.name) {
                self.chosen.retain(|(name, _)| *name != choice.name);
                self.chosen.push((choice.name, value.clone()));
            }
        }
        Ok(())
    }
}

impl clap::Args for SettingArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        let command = CHOICES.iter().fold(command, |command, choice| {
            command.arg(
                clap::Arg::new(choice.name)
                    .long(choice.flag())
                    .value_name(choice.name.to_uppercase())
                    .value_parser(clap::builder::PossibleValuesParser::new(choice.options))
                    .help(format!(
                        "{} (default {})",
                        choice.doc.replace('`', ""),
                        choice.default()
                    )),
            )
        });
        SETTINGS.iter().fold(command, |command, setting| {
            let unit = setting.unit.name().to_uppercase();
            command.arg(
                clap::Arg::new(setting.name)
                    .long(setting.flag())
                    .value_name(unit)
                    .value_parser(clap::value_parser!(u64))
                    .help(format!(
                        "{} (default {}, {})",
                        setting.doc.replace('`', ""),
                        show(setting.unit, setting.default),
                        show_range(setting.unit, setting.min, setting.max)
                    )),
            )
        })
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        SettingArgs::augment_args(command)
    }
}

/// Mutual TLS between the nodes: all three files, or none.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// This node's certificate (PEM), signed by the cluster's CA; a
    /// member's must be valid for the host of its advertised address.
    #[arg(long, value_name = "PATH", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "PATH", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): peers must present one it signed.
    #[arg(long, value_name = "PATH", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    fn parse(flags: &[&str]) -> Result<SettingArgs, clap::Error> {
        let command = SettingArgs::augment_args(clap::Command::new("node"));
        let matches =
            command.try_get_matches_from(std::iter::once("node").chain(flags.iter().copied()))?;
        SettingArgs::from_arg_matches(&matches)
    }

    #[test]
    fn every_setting_is_a_flag_in_its_unit() {
        let command = SettingArgs::augment_args(clap::Command::new("node"));
        for setting in SETTINGS {
            assert!(
                command
                    .get_arguments()
                    .any(|a| a.get_long() == Some(setting.flag().as_str())),
                "no --{}",
                setting.flag()
            );
        }
        let mut config = Config::new("127.0.0.1:7000", b"s".to_vec());
        parse(&["--send-queue", "100", "--node-grace-ms", "3000"])
            .unwrap()
            .apply(&mut config)
            .unwrap();
        assert_eq!(config.send_queue, 100);
        assert_eq!(config.timings.node_grace, std::time::Duration::from_secs(3));
        assert_eq!(
            config.get("settle"),
            Some(20),
            "a flag not given keeps the default"
        );
    }

    #[test]
    fn every_choice_is_a_flag_taking_its_options_only() {
        let command = SettingArgs::augment_args(clap::Command::new("node"));
        for choice in CHOICES {
            assert!(
                command
                    .get_arguments()
                    .any(|a| a.get_long() == Some(choice.flag().as_str())),
                "no --{}",
                choice.flag()
            );
        }
        let mut config = Config::new("127.0.0.1:7000", b"s".to_vec());
        parse(&[]).unwrap().apply(&mut config).unwrap();
        assert_eq!(config.quorum, minishard::Quorum::Any, "the default");
        parse(&["--quorum", "majority"])
            .unwrap()
            .apply(&mut config)
            .unwrap();
        assert_eq!(config.quorum, minishard::Quorum::Majority);
        let err = parse(&["--quorum", "most"]).unwrap_err().to_string();
        assert!(err.contains("possible values: any, majority"), "{err}");
    }

    #[test]
    fn a_flag_out_of_range_is_refused_with_the_settings_message() {
        let mut config = Config::new("127.0.0.1:7000", b"s".to_vec());
        let err = parse(&["--send-queue", "10"])
            .unwrap()
            .apply(&mut config)
            .unwrap_err();
        assert!(err.contains("send_queue must be between 64"), "{err}");
        assert!(parse(&["--send-queue", "-1"]).is_err());
    }
}
