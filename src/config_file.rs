//! `tessera serve --config FILE`: a TOML file whose keys are serve's flags
//! without `--` (`max-num-seqs = 32`; `max_num_seqs` is the same key). Its
//! values become the options' defaults, so `TESSERA_*` variables and flags
//! still override them. Unknown keys and bad values fail start-up, naming the
//! key; `--print-config` shows the options in effect and where each came from.
//! `[[models]]` tables list the models to serve (see `serve::models`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// Options that make no sense in a file.
const NOT_IN_FILE: &[&str] = &["config", "print-config", "help"];

/// Options whose values are never printed.
const SECRETS: &[&str] = &["api-key", "metrics-key", "admin-api-key"];

/// A loaded config file: each key with its values as flag text.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    entries: Vec<(String, Vec<String>)>,
    models: Vec<toml::Table>,
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| anyhow!("config file {}: {e}", path.display()))?;
        let mut entries = Vec::new();
        let mut models = Vec::new();
        for (key, value) in table {
            if key == "models" {
                models = model_tables(value).map_err(|reason| {
                    anyhow!("config file {}: models: {reason}", path.display())
                })?;
                continue;
            }
            let values = flag_values(value).map_err(|reason| {
                anyhow!("config file {}: key '{key}': {reason}", path.display())
            })?;
            entries.push((key, values));
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
            models,
        })
    }

    /// The `[[models]]` tables.
    pub fn models(&self) -> &[toml::Table] {
        &self.models
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys set by the file, as flag names.
    pub fn keys(&self) -> BTreeSet<String> {
        self.entries
            .iter()
            .map(|(k, _)| k.replace('_', "-"))
            .collect()
    }

    /// `cli` with the file's values as the defaults of `subcommand`'s options.
    pub fn apply(&self, cli: Command, subcommand: &str) -> Result<Command> {
        let sub = cli
            .find_subcommand(subcommand)
            .with_context(|| format!("no '{subcommand}' subcommand"))?
            .clone();
        let file = self.path.display();
        let mut seen = BTreeSet::new();
        let mut defaults = Vec::new();
        for (key, values) in &self.entries {
            let name = key.replace('_', "-");
            if !seen.insert(name.clone()) {
                bail!("config file {file}: key '{key}' is given twice");
            }
            let arg = sub
                .get_arguments()
                .find(|a| {
                    a.get_long() == Some(name.as_str()) && !NOT_IN_FILE.contains(&name.as_str())
                })
                .ok_or_else(|| {
                    let hint = closest(&name, &sub)
                        .map(|c| format!("; did you mean '{c}'?"))
                        .unwrap_or_default();
                    anyhow!(
                        "config file {file}: unknown key '{key}' (keys are the options of \
                         `tessera {subcommand} --help` without `--`){hint}"
                    )
                })?;
            let repeats = matches!(arg.get_action(), ArgAction::Append);
            if !repeats && values.len() != 1 {
                bail!("config file {file}: key '{key}' takes one value, not a list");
            }
            for value in values {
                check_value(arg, key, value).map_err(|e| anyhow!("config file {file}: {e}"))?;
            }
            defaults.push((arg.get_id().clone(), values.clone()));
        }
        Ok(cli.mut_subcommand(subcommand, |mut sub| {
            for (id, values) in defaults {
                sub = sub.mut_arg(id, |a| a.default_values(values));
            }
            sub
        }))
    }
}

/// `[[models]]`: an array of tables.
fn model_tables(value: toml::Value) -> Result<Vec<toml::Table>, String> {
    let toml::Value::Array(items) = value else {
        return Err("expected [[models]] tables".into());
    };
    items
        .into_iter()
        .map(|item| match item {
            toml::Value::Table(t) => Ok(t),
            _ => Err("expected [[models]] tables".to_string()),
        })
        .collect()
}

/// A TOML value as the text a flag would take.
fn flag_values(value: toml::Value) -> Result<Vec<String>, String> {
    let scalar = |v: toml::Value| match v {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(_) => Err("a date is not an option value".to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            Err("expected a string, number or boolean".to_string())
        }
    };
    match value {
        toml::Value::Array(items) => items.into_iter().map(scalar).collect(),
        toml::Value::Table(_) => Err("a table is not an option (keys go at the top level)".into()),
        v => scalar(v).map(|s| vec![s]),
    }
}

/// Parses `value` as `arg` would (clap keeps its parsers' entry point to
/// itself, so through a one-option command), naming `key` on error.
fn check_value(arg: &clap::Arg, key: &str, value: &str) -> Result<(), String> {
    let probe = Command::new("probe").no_binary_name(true).arg(
        clap::Arg::new("v")
            .long("v")
            .value_name("VALUE")
            .action(ArgAction::Set)
            .value_parser(arg.get_value_parser().clone()),
    );
    match probe.try_get_matches_from([format!("--v={value}")]) {
        Ok(_) => Ok(()),
        Err(e) => {
            // Keep clap's reason (and its list of possible values), not its usage lines.
            let text = e
                .to_string()
                .replace("'--v <VALUE>'", &format!("key '{key}'"));
            let reason: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("For more information") && !l.starts_with("Usage"))
                .filter(|l| !l.is_empty())
                .collect();
            let reason = reason.join(" ");
            Err(reason
                .strip_prefix("error: ")
                .unwrap_or(&reason)
                .to_string())
        }
    }
}

/// The option name nearest to `name`, if one is close (a typo).
fn closest(name: &str, sub: &Command) -> Option<String> {
    sub.get_arguments()
        .filter_map(|a| a.get_long())
        .map(|long| (edit_distance(name, long), long))
        .filter(|&(d, _)| d <= 3)
        .min()
        .map(|(_, long)| long.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The options of `sub` in effect, as a TOML config with where each value came
/// from; secrets redacted, unset options commented out.
pub fn effective(sub: &Command, matches: &ArgMatches, from_file: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for arg in sub.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if NOT_IN_FILE.contains(&long) || long == "version" {
            continue;
        }
        let id = arg.get_id().as_str();
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let origin = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) if from_file.contains(long) => "config file",
            Some(_) => "default",
            None => "not set",
        };
        let render = |v: &String| {
            if SECRETS.contains(&long) {
                toml::Value::String("[REDACTED]".into()).to_string()
            } else if v.parse::<f64>().is_ok() || v == "true" || v == "false" {
                v.clone()
            } else {
                toml::Value::String(v.clone()).to_string()
            }
        };
        let _ = if values.is_empty() {
            writeln!(out, "# {long} =  # {origin}")
        } else if matches!(arg.get_action(), ArgAction::Append) {
            let list: Vec<String> = values.iter().map(render).collect();
            writeln!(out, "{long} = [{}]  # {origin}", list.join(", "))
        } else {
            writeln!(out, "{long} = {}  # {origin}", render(&values[0]))
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Command {
        Command::new("t").subcommand(
            Command::new("serve")
                .arg(
                    clap::Arg::new("port")
                        .long("port")
                        .value_parser(clap::value_parser!(u16))
                        .default_value("8000"),
                )
                .arg(
                    clap::Arg::new("api_key")
                        .long("api-key")
                        .action(ArgAction::Append),
                ),
        )
    }

    fn file(text: &str) -> Result<ConfigFile> {
        let path = std::env::temp_dir().join(format!(
            "tessera-config-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).expect("write");
        let loaded = ConfigFile::load(&path);
        std::fs::remove_file(&path).expect("cleanup");
        loaded
    }

    fn port(cmd: Command, args: &[&str]) -> u16 {
        let m = cmd.try_get_matches_from(args).expect("parses");
        *m.subcommand_matches("serve")
            .and_then(|s| s.get_one::<u16>("port"))
            .expect("port")
    }

    #[test]
    fn file_values_are_defaults_under_flags() {
        let f = file("port = 9001\napi_key = [\"a\", \"b\"]\n").expect("loads");
        let cmd = f.apply(cli(), "serve").expect("applies");
        assert_eq!(port(cmd.clone(), &["t", "serve"]), 9001);
        assert_eq!(port(cmd, &["t", "serve", "--port", "9002"]), 9002);
        assert_eq!(f.keys(), BTreeSet::from(["api-key".into(), "port".into()]));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = file("prot = 1\n")
            .expect("loads")
            .apply(cli(), "serve")
            .expect_err("unknown");
        let msg = e.to_string();
        assert!(
            msg.contains("unknown key 'prot'") && msg.contains("did you mean 'port'"),
            "{msg}"
        );
        let e = file("port = \"high\"\n")
            .expect("loads")
            .apply(cli(), "serve")
            .expect_err("bad value");
        assert!(e.to_string().contains("key 'port'"), "{e}");
        let e = file("port = [1, 2]\n")
            .expect("loads")
            .apply(cli(), "serve")
            .expect_err("list");
        assert!(e.to_string().contains("takes one value"), "{e}");
        assert!(file("port = \n").is_err(), "TOML syntax errors fail too");
        assert!(
            file("[serve]\nport = 1\n").is_err(),
            "tables are not options"
        );
    }
}
