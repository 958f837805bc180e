//! Configuration (SPEC §7): TOML layers merged table by table and key by key.
//!
//! The layers, later winning: built-in defaults (`defaults.toml` beside this file), the user
//! file (`$MISSIONS_HOME/config.toml`, else `$XDG_CONFIG_HOME/missions/config.toml`, else
//! `~/.config/missions/config.toml`), the workspace's `.missions/config.toml`, the file named by
//! `$MISSIONS_CONFIG`, then whatever the editor sends (a JSON [`Layer`]).
//!
//! Each [`Layer`] is checked on its own first, so a type error names its own file and line;
//! then the raw tables are merged and the merged table becomes a [`Config`]. Unknown keys are
//! collected as warnings rather than rejected, because a config written for a newer Missions
//! should still load in an older one. API keys are never read from files, only from the
//! [`Environment`], and only their *names* appear in a `Config`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mission::Role;

/// What the core needs to know about its process environment. Tests pass a map instead of
/// mutating the real environment.
pub trait Environment: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Errors a user can fix by editing a file or the environment. Every message names the file,
/// line or key involved and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {message}")]
    Malformed { origin: String, message: String },
    #[error("{origin}: `{key}` {message}")]
    Invalid { origin: String, key: String, message: String },
    #[error(
        "`{key}` ({origin}) names provider `{provider}`, which is not configured; known providers: {known}. \
         Add a [providers.{provider}] table or use one of the known names."
    )]
    UnknownProvider { origin: String, key: String, provider: String, known: String },
    #[error(
        "provider `{provider}` needs an API key in the environment variable {env_var} \
         (set by providers.{provider}.api_key_env), but it is not set. Export it in the shell that \
         starts Missions; keys are never read from files."
    )]
    MissingKey { provider: String, env_var: String },
}

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Anthropic Messages API.
    Anthropic,
    /// OpenAI Chat Completions, also spoken by Ollama, vLLM, llama.cpp, LM Studio, OpenRouter.
    Openai,
    /// Plays back a recorded transcript; offline.
    Replay,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Openai => "openai",
            ProviderKind::Replay => "replay",
        })
    }
}

/// One `[providers.<name>]` table. `kind` is optional here only so that a later layer can set
/// `base_url` alone; [`Config::validate`] insists that the merged result has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderConfig {
    pub kind: Option<ProviderKind>,
    /// As the official SDKs take it: Anthropic without `/v1`, OpenAI with `/v1`.
    pub base_url: Option<String>,
    pub stream: bool,
    /// The name of the environment variable that holds the key; never the key itself.
    pub api_key_env: Option<String>,
    /// The `anthropic-version` header.
    pub anthropic_version: Option<String>,
    /// Retries after the first attempt, for retryable failures only.
    pub max_retries: u32,
    /// First backoff delay; it doubles up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub connect_timeout_s: f64,
    /// Time allowed until the response headers arrive.
    pub first_byte_timeout_s: f64,
    /// Longest silence allowed between two chunks of a streamed body.
    pub idle_timeout_s: f64,
    /// `max_tokens` sent with each request.
    pub max_output_tokens: u32,
    /// For `kind = "replay"`: the transcript (`.jsonl`) to play back, relative to the workspace.
    pub transcript: Option<PathBuf>,
    /// When set, every exchange with this provider is also appended to this file, which the
    /// replay provider can play back later.
    pub record: Option<PathBuf>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: None,
            base_url: None,
            stream: true,
            api_key_env: None,
            anthropic_version: None,
            max_retries: 2,
            initial_backoff_ms: 500,
            max_backoff_ms: 8_000,
            connect_timeout_s: 10.0,
            first_byte_timeout_s: 600.0,
            idle_timeout_s: 300.0,
            max_output_tokens: 16_384,
            transcript: None,
            record: None,
        }
    }
}

impl ProviderConfig {
    /// Reads this provider's key from the environment. `Ok(None)` means the provider is
    /// configured without a key (a local server); a configured variable that is unset or empty
    /// is an error naming it.
    pub fn api_key(&self, provider: &str, env: &dyn Environment) -> Result<Option<String>, ConfigError> {
        let Some(env_var) = &self.api_key_env else {
            return Ok(None);
        };
        match env.var(env_var) {
            Some(value) if !value.trim().is_empty() => Ok(Some(value)),
            _ => Err(ConfigError::MissingKey { provider: provider.to_owned(), env_var: env_var.clone() }),
        }
    }
}

/// `[roles]`: `"<provider>/<model>"` per role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RolesConfig {
    pub orchestrator: Option<String>,
    pub worker: Option<String>,
    pub reviewer: Option<String>,
    pub user_tester: Option<String>,
    /// Unset: the reviewer's model (SPEC §7).
    pub test_author: Option<String>,
}

impl RolesConfig {
    pub fn get(&self, role: Role) -> Option<&str> {
        match role {
            Role::Orchestrator => self.orchestrator.as_deref(),
            Role::Worker => self.worker.as_deref(),
            Role::Reviewer => self.reviewer.as_deref(),
            Role::UserTester => self.user_tester.as_deref(),
            Role::TestAuthor => self.test_author.as_deref().or(self.reviewer.as_deref()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetConfig {
    pub max_usd: Option<f64>,
    pub max_tokens: Option<u64>,
    /// The least output a call is allowed when a cap is near (SPEC §2 rule 7); below it the
    /// mission pauses for budget. Default 1024.
    pub min_output_tokens: Option<u32>,
}

impl BudgetConfig {
    pub fn min_output_tokens(&self) -> u32 {
        self.min_output_tokens.unwrap_or(1_024)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MissionConfig {
    pub max_correction_rounds: u32,
    pub auto_accept: bool,
    /// The project's own scrutiny commands.
    pub checks: Vec<String>,
    /// Upper bound for a worker's `run_command` `timeout_s`.
    pub max_command_timeout_s: u64,
    /// Whether commands agents run may reach the network.
    pub allow_network: bool,
    /// Whether commands agents and validators run are confined by the operating system
    /// (Linux namespaces and Landlock) where it allows it.
    pub sandbox: bool,
    /// Paths outside the workspace that sandboxed commands may write, besides the temporary
    /// directory; `~` is the home directory. Default: `~/.cargo`, `~/.cache`, `~/.npm`.
    pub writable_paths: Option<Vec<String>>,
    /// How many times in a row a run may make the same call fail the same way before it is
    /// told so once and then ended (SPEC §2 rule 10). Default 3.
    pub max_repeated_failures: u32,
    /// How many times in a row a run's terminal call (`submit_plan`, `decide_milestone`, …)
    /// may be refused with the same arguments before it is told so once and then ended (SPEC
    /// §2 rule 10: twice). Default 2.
    pub max_repeated_refusals: u32,
}

impl Default for MissionConfig {
    fn default() -> Self {
        MissionConfig {
            max_correction_rounds: 3,
            auto_accept: false,
            checks: Vec::new(),
            max_command_timeout_s: 1_800,
            allow_network: false,
            sandbox: true,
            writable_paths: None,
            max_repeated_failures: 3,
            max_repeated_refusals: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubBacklog {
    /// `owner/name`; optional per file so that a later file can set `base_url` alone, and
    /// required once the files are merged.
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BacklogConfig {
    pub markdown: Vec<String>,
    pub code_comments: bool,
    pub github: Option<GithubBacklog>,
}

/// A per-model price override in USD per million tokens, for negotiated rates, local servers
/// (price them at 0) or models newer than the shipped table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceOverride {
    /// Optional per file so that files merge key by key; both rates are required once merged.
    #[serde(default)]
    pub input: Option<f64>,
    #[serde(default)]
    pub output: Option<f64>,
    #[serde(default)]
    pub cache_read: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

/// The effective configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub providers: BTreeMap<String, ProviderConfig>,
    pub roles: RolesConfig,
    pub budget: BudgetConfig,
    pub mission: MissionConfig,
    pub backlog: BacklogConfig,
    /// `[prices."<model>"]`: overrides of the shipped price table (not in SPEC §7; documented
    /// in the README).
    pub prices: BTreeMap<String, PriceOverride>,
}

/// A role's route: which configured provider and which model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRoute {
    pub role: Role,
    pub provider: String,
    pub model: String,
}

/// One source of configuration and its raw table.
#[derive(Debug, Clone)]
pub struct Layer {
    /// A file path, or a description such as `built-in defaults` or `editor settings`.
    pub origin: String,
    pub table: toml::Table,
    /// Whether this layer is the user's own. The workspace's `.missions/config.toml` comes
    /// with the repository, so it is not: it may not send a provider's key to a server of its
    /// choosing (see [`LoadedConfig::validate`]).
    pub trusted: bool,
}

const DEFAULTS: &str = include_str!("defaults.toml");

/// The largest configuration file read; real ones are a few kilobytes.
pub const CONFIG_LIMIT: u64 = 1024 * 1024;

impl Layer {
    pub fn defaults() -> Result<Layer, ConfigError> {
        Layer::from_toml("built-in defaults", DEFAULTS).map(|(layer, _)| layer)
    }

    /// Parses and type-checks one TOML text. Returns the layer and warnings for unknown keys.
    pub fn from_toml(origin: &str, text: &str) -> Result<(Layer, Vec<String>), ConfigError> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|error| ConfigError::Malformed { origin: origin.to_owned(), message: error.to_string() })?;
        let mut unknown = Vec::new();
        // Deserialising this layer alone into `Config` catches type errors while the toml
        // deserializer still knows the line, so the message points into the right file.
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|error| ConfigError::Malformed { origin: origin.to_owned(), message: error.to_string() })?;
        let _: Config = serde_ignored::deserialize(deserializer, |path| unknown.push(path.to_string()))
            .map_err(|error| ConfigError::Malformed { origin: origin.to_owned(), message: error.to_string() })?;
        let warnings = unknown
            .into_iter()
            .map(|key| {
                if key.ends_with(".api_key") || key == "api_key" {
                    format!(
                        "{origin}: `{key}` is ignored: API keys are read only from the environment; \
                         set `api_key_env` to the name of the variable that holds the key"
                    )
                } else {
                    format!("{origin}: unknown key `{key}` is ignored (check its spelling against SPEC §7)")
                }
            })
            .collect();
        Ok((Layer { origin: origin.to_owned(), table, trusted: true }, warnings))
    }

    /// Reads a TOML file; a file that does not exist is no layer at all. A configuration file
    /// comes with the repository, so its size is bounded ([`CONFIG_LIMIT`]).
    pub fn from_file(path: &Path) -> Result<Option<(Layer, Vec<String>)>, ConfigError> {
        match crate::store::read_bounded(path, CONFIG_LIMIT) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| ConfigError::Read {
                    path: path.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is not UTF-8 text"),
                })?;
                Layer::from_toml(&path.display().to_string(), &text).map(Some)
            }
            Err(crate::store::StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(crate::store::StoreError::Io { source, .. }) => {
                Err(ConfigError::Read { path: path.to_owned(), source })
            }
            Err(other) => {
                Err(ConfigError::Read { path: path.to_owned(), source: std::io::Error::other(other.to_string()) })
            }
        }
    }

    /// A layer from JSON, as the language server receives it in `initializationOptions`.
    pub fn from_json(origin: &str, value: serde_json::Value) -> Result<(Layer, Vec<String>), ConfigError> {
        let malformed = |message: String| ConfigError::Malformed { origin: origin.to_owned(), message };
        let table: toml::Table = serde_json::from_value(strip_json_nulls(value))
            .map_err(|error| malformed(format!("settings must be an object of tables: {error}")))?;
        let text = toml::to_string(&table).map_err(|error| malformed(error.to_string()))?;
        Layer::from_toml(origin, &text)
    }
}

/// JSON `null` has no TOML equivalent; an editor sending `null` for a key means "not set".
fn strip_json_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_json_nulls(v))).collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().filter(|v| !v.is_null()).map(strip_json_nulls).collect())
        }
        other => other,
    }
}

/// Merges `upper` into `lower`: tables merge key by key, everything else (arrays included) is
/// replaced whole.
fn merge_tables(lower: &mut toml::Table, upper: &toml::Table) {
    for (key, value) in upper {
        match (lower.get_mut(key), value) {
            (Some(toml::Value::Table(low)), toml::Value::Table(up)) => merge_tables(low, up),
            _ => {
                lower.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Where a configuration file would be, and whether it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerSource {
    pub origin: String,
    pub loaded: bool,
}

/// The effective configuration with where it came from and what was odd about it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub sources: Vec<LayerSource>,
    pub warnings: Vec<String>,
    layers: Vec<Layer>,
}

/// The user file's path: `$MISSIONS_HOME/config.toml`, else the XDG config directory.
pub fn user_config_path(env: &dyn Environment) -> Option<PathBuf> {
    if let Some(home) = env.var("MISSIONS_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(home).join("config.toml"));
    }
    if let Some(xdg) = env.var("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("missions").join("config.toml"));
    }
    env.var("HOME").filter(|v| !v.is_empty()).map(|home| PathBuf::from(home).join(".config/missions/config.toml"))
}

impl LoadedConfig {
    /// Loads every file layer for `workspace`, then `extra` layers (editor settings) on top.
    pub fn load(workspace: &Path, env: &dyn Environment, extra: Vec<Layer>) -> Result<LoadedConfig, ConfigError> {
        let mut layers = vec![Layer::defaults()?];
        let mut sources = vec![LayerSource { origin: "built-in defaults".to_owned(), loaded: true }];
        let mut warnings = Vec::new();

        let mut files: Vec<PathBuf> = Vec::new();
        files.extend(user_config_path(env));
        files.push(crate::layout::config_file(workspace));
        let explicit = env.var("MISSIONS_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from);
        files.extend(explicit.clone());
        let workspace_file = crate::layout::config_file(workspace);
        let trust_workspace = env.var("MISSIONS_TRUST_WORKSPACE").is_some_and(|v| v == "1");

        for path in files {
            let loaded = Layer::from_file(&path)?;
            if loaded.is_none() && explicit.as_deref() == Some(path.as_path()) {
                // A file the user named explicitly must exist; a missing default file is normal.
                return Err(ConfigError::Read {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "named by $MISSIONS_CONFIG but missing"),
                });
            }
            sources.push(LayerSource { origin: path.display().to_string(), loaded: loaded.is_some() });
            if let Some((mut layer, layer_warnings)) = loaded {
                layer.trusted = trust_workspace || path != workspace_file;
                layers.push(layer);
                warnings.extend(layer_warnings);
            }
        }
        for layer in extra {
            sources.push(LayerSource { origin: layer.origin.clone(), loaded: true });
            layers.push(layer);
        }
        LoadedConfig::from_layers(layers, sources, warnings)
    }

    /// Merges already-parsed layers, in order, and validates the result.
    pub fn from_layers(
        layers: Vec<Layer>,
        sources: Vec<LayerSource>,
        warnings: Vec<String>,
    ) -> Result<LoadedConfig, ConfigError> {
        let mut merged = toml::Table::new();
        for layer in &layers {
            merge_tables(&mut merged, &layer.table);
        }
        let config: Config = toml::Value::Table(merged).try_into().map_err(|error: toml::de::Error| {
            ConfigError::Malformed { origin: "merged configuration".to_owned(), message: error.to_string() }
        })?;
        let loaded = LoadedConfig { config, sources, warnings, layers };
        loaded.validate()?;
        Ok(loaded)
    }

    /// The origin of the last layer that set `path` (dotted keys), for error messages.
    pub fn origin_of(&self, path: &[&str]) -> String {
        self.layers
            .iter()
            .rev()
            .find(|layer| lookup(&layer.table, path).is_some())
            .map(|layer| layer.origin.clone())
            .unwrap_or_else(|| "built-in defaults".to_owned())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let config = &self.config;
        for (name, provider) in &config.providers {
            let invalid = |field: &str, message: &str| ConfigError::Invalid {
                origin: self.origin_of(&["providers", name]),
                key: format!("providers.{name}.{field}"),
                message: message.to_owned(),
            };
            let Some(kind) = provider.kind else {
                return Err(invalid("kind", "is missing: set kind = \"anthropic\", \"openai\" or \"replay\""));
            };
            match kind {
                ProviderKind::Anthropic | ProviderKind::Openai => {
                    let Some(base_url) = &provider.base_url else {
                        return Err(invalid("base_url", "is missing: set the server's URL"));
                    };
                    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                        return Err(invalid("base_url", "must start with http:// or https://"));
                    }
                }
                ProviderKind::Replay => {
                    if provider.transcript.is_none() {
                        return Err(invalid(
                            "transcript",
                            "is missing: a replay provider plays back a transcript file",
                        ));
                    }
                }
            }
            for (field, value) in [
                ("connect_timeout_s", provider.connect_timeout_s),
                ("first_byte_timeout_s", provider.first_byte_timeout_s),
                ("idle_timeout_s", provider.idle_timeout_s),
            ] {
                if !(value.is_finite() && value > 0.0) {
                    return Err(invalid(field, "must be a positive number of seconds"));
                }
            }
        }
        for role in Role::ALL {
            self.route(role)?;
        }
        self.check_untrusted_layers()?;
        for (model, price) in &config.prices {
            for (field, value) in [("input", price.input), ("output", price.output)] {
                match value {
                    Some(rate) if rate.is_finite() && rate >= 0.0 => {}
                    _ => {
                        return Err(ConfigError::Invalid {
                            origin: self.origin_of(&["prices", model]),
                            key: format!("prices.\"{model}\".{field}"),
                            message: "must be set to a non-negative price in USD per million tokens".to_owned(),
                        });
                    }
                }
            }
        }
        if let Some(github) = &config.backlog.github
            && github.repo.as_deref().is_none_or(|repo| !repo.contains('/'))
        {
            return Err(ConfigError::Invalid {
                origin: self.origin_of(&["backlog", "github"]),
                key: "backlog.github.repo".to_owned(),
                message: "must be set to \"owner/name\"".to_owned(),
            });
        }
        if let Some(max_usd) = config.budget.max_usd
            && !(max_usd.is_finite() && max_usd >= 0.0)
        {
            return Err(ConfigError::Invalid {
                origin: self.origin_of(&["budget", "max_usd"]),
                key: "budget.max_usd".to_owned(),
                message: "must be a non-negative number of dollars".to_owned(),
            });
        }
        Ok(())
    }

    /// A repository's own `.missions/config.toml` could otherwise send the user's API key to
    /// a server of the repository's choosing: it may not point a provider that carries a key
    /// at anything but a loopback address, and may not make a provider record outside the
    /// workspace. The user's own files may do both; `MISSIONS_TRUST_WORKSPACE=1` trusts the
    /// workspace file as well.
    fn check_untrusted_layers(&self) -> Result<(), ConfigError> {
        for layer in self.layers.iter().filter(|layer| !layer.trusted) {
            let Some(toml::Value::Table(providers)) = layer.table.get("providers") else {
                continue;
            };
            for (name, table) in providers {
                let effective = self.config.providers.get(name);
                let carries_key = effective.is_some_and(|p| p.api_key_env.is_some());
                let refuse = |key: &str, message: String| ConfigError::Invalid {
                    origin: layer.origin.clone(),
                    key: format!("providers.{name}.{key}"),
                    message,
                };
                if let Some(url) = table.get("base_url").and_then(toml::Value::as_str)
                    && carries_key
                    && !crate::net::is_loopback_url(url)
                {
                    return Err(refuse(
                        "base_url",
                        format!(
                            "would send the key in ${} to {url}, and this file comes with the repository. \
                             Set the provider's base_url in your own config file (or export MISSIONS_TRUST_WORKSPACE=1 \
                             if you trust this repository)",
                            effective.and_then(|p| p.api_key_env.clone()).unwrap_or_default()
                        ),
                    ));
                }
                for key in ["record", "transcript"] {
                    if let Some(path) = table.get(key).and_then(toml::Value::as_str)
                        && !is_inside_relative_path(path)
                    {
                        return Err(refuse(
                            key,
                            "must be a relative path inside the workspace when set by the workspace's own file"
                                .to_owned(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The provider and model that serve `role`.
    pub fn route(&self, role: Role) -> Result<RoleRoute, ConfigError> {
        let key = format!("roles.{}", role.as_str());
        let origin = self.origin_of(&["roles", role.as_str()]);
        let Some(value) = self.config.roles.get(role) else {
            return Err(ConfigError::Invalid {
                origin,
                key,
                message: "is missing: set it to \"<provider>/<model>\", e.g. \"anthropic/claude-sonnet-4-5\""
                    .to_owned(),
            });
        };
        // The model part may itself contain slashes (OpenRouter's "anthropic/claude-…"), so
        // only the first slash separates the provider.
        let Some((provider, model)) = value.split_once('/').filter(|(p, m)| !p.is_empty() && !m.trim().is_empty())
        else {
            return Err(ConfigError::Invalid {
                origin,
                key,
                message: format!(
                    "is \"{value}\", which is not \"<provider>/<model>\" (e.g. \"anthropic/claude-sonnet-4-5\")"
                ),
            });
        };
        if !self.config.providers.contains_key(provider) {
            return Err(ConfigError::UnknownProvider {
                origin,
                key,
                provider: provider.to_owned(),
                known: self.config.providers.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        Ok(RoleRoute { role, provider: provider.to_owned(), model: model.to_owned() })
    }

    /// Names of the providers some role routes to, in a stable order.
    pub fn providers_in_use(&self) -> Vec<String> {
        let mut names: Vec<String> =
            Role::ALL.iter().filter_map(|role| self.route(*role).ok()).map(|r| r.provider).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The environment variables that hold secrets: every provider's `api_key_env` and the
    /// GitHub token variable. Their values must never reach a file, a log or a model.
    pub fn secret_env_vars(&self) -> Vec<String> {
        let mut names: Vec<String> = self.config.providers.values().filter_map(|p| p.api_key_env.clone()).collect();
        if let Some(github) = &self.config.backlog.github {
            names.extend(github.token_env.clone());
        }
        names.sort();
        names.dedup();
        names
    }

    /// A redactor for every configured secret that is present in `env`.
    pub fn redactor(&self, env: &dyn Environment) -> crate::secrets::Redactor {
        crate::secrets::Redactor::new(
            self.secret_env_vars().into_iter().filter_map(|name| env.var(&name).map(|value| (name, value))),
        )
    }
}

fn lookup<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(*first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        toml::Value::Table(inner) => lookup(inner, rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

/// A relative path that stays inside the directory it is relative to.
fn is_inside_relative_path(path: &str) -> bool {
    let path = Path::new(path);
    path.is_relative()
        && path.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
}
