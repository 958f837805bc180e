//! Model providers for Missions, behind `missions_core::model::ModelProvider`.
//!
//! Three kinds: `anthropic` (the Messages API), `openai` (Chat Completions, which local
//! servers speak too) and `replay` (a recorded transcript played back). The two HTTP kinds
//! share one engine ([`http`]) for timeouts, retries ([`retry`]), transcripts and pricing
//! ([`pricing`]); each contributes only its wire format. The wire formats are our own code on
//! purpose: retry policy, usage and cache accounting are part of what Missions promises.
//!
//! Boundary: this crate knows HTTP and the vendors' JSON; it knows nothing of missions,
//! plans or LSP.

mod anthropic;
mod http;
mod openai;
pub mod replay;
pub mod retry;
pub mod sse;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use missions_core::config::{ConfigError, Environment, LoadedConfig, ProviderConfig, ProviderKind};
use missions_core::mission::Role;
use missions_core::model::{ModelError, ModelProvider};
use missions_core::secrets::Redactor;
use missions_core::transcript::{TranscriptError, TranscriptWriter};

pub use http::HttpSettings;
pub use missions_core::pricing::PriceTable;
pub use retry::RetryPolicy;

/// Why a provider could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("provider `{provider}`: {source}")]
    Client { provider: String, source: ModelError },
    #[error("provider `{provider}`: {source}")]
    Record { provider: String, source: TranscriptError },
}

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::from_secs(60))
}

/// The HTTP settings a provider's configuration asks for.
pub fn http_settings(config: &ProviderConfig) -> HttpSettings {
    HttpSettings {
        stream: config.stream,
        max_output_tokens: config.max_output_tokens,
        connect_timeout: seconds(config.connect_timeout_s),
        first_byte_timeout: seconds(config.first_byte_timeout_s),
        idle_timeout: seconds(config.idle_timeout_s),
        retry: RetryPolicy {
            max_retries: config.max_retries,
            initial: Duration::from_millis(config.initial_backoff_ms),
            max: Duration::from_millis(config.max_backoff_ms),
        },
    }
}

/// Builds the provider named `name`. Relative paths (`transcript`, `record`) are taken from
/// the workspace root. The key is read from `env` here and nowhere else.
pub fn build_provider(
    name: &str,
    config: &ProviderConfig,
    prices: Arc<PriceTable>,
    workspace: &Path,
    env: &dyn Environment,
    redactor: &Redactor,
) -> Result<Arc<dyn ModelProvider>, BuildError> {
    let kind = config.kind.ok_or_else(|| ConfigError::Invalid {
        origin: "configuration".into(),
        key: format!("providers.{name}.kind"),
        message: "is missing".into(),
    })?;
    let recorder = match &config.record {
        Some(path) => Some(
            TranscriptWriter::create(&workspace.join(path), redactor.clone())
                .map_err(|source| BuildError::Record { provider: name.to_owned(), source })?,
        ),
        None => None,
    };
    let base_url = config.base_url.clone().unwrap_or_default();
    match kind {
        ProviderKind::Anthropic => {
            let version = config.anthropic_version.clone().unwrap_or_else(|| anthropic::DEFAULT_VERSION.to_owned());
            let wire = anthropic::AnthropicWire { base_url, version };
            http_provider(name, wire, config, env, prices, recorder)
        }
        ProviderKind::Openai => http_provider(name, openai::OpenAiWire { base_url }, config, env, prices, recorder),
        ProviderKind::Replay => {
            let transcript = config.transcript.clone().unwrap_or_default();
            Ok(Arc::new(replay::ReplayProvider::new(name.to_owned(), workspace.join(transcript))))
        }
    }
}

/// An HTTP provider speaking `wire`, with its key read from the environment.
fn http_provider<W: http::Wire>(
    name: &str,
    wire: W,
    config: &ProviderConfig,
    env: &dyn Environment,
    prices: Arc<PriceTable>,
    recorder: Option<TranscriptWriter>,
) -> Result<Arc<dyn ModelProvider>, BuildError> {
    let key = config.api_key(name, env)?;
    let provider = http::HttpProvider::new(name.to_owned(), wire, key, http_settings(config), prices, recorder)
        .map_err(|source| BuildError::Client { provider: name.to_owned(), source })?;
    Ok(Arc::new(provider))
}

/// Each role's provider and model, built from the configuration. Roles that share a provider
/// share one instance (and so one connection pool, and one replay tape).
pub struct ProviderRegistry {
    routes: BTreeMap<Role, Route>,
}

/// One role's provider, model and output limit.
#[derive(Clone)]
pub struct Route {
    pub provider: Arc<dyn ModelProvider>,
    pub model: String,
    pub max_output_tokens: u32,
}

impl ProviderRegistry {
    pub fn from_config(
        loaded: &LoadedConfig,
        workspace: &Path,
        env: &dyn Environment,
    ) -> Result<ProviderRegistry, BuildError> {
        let prices = Arc::new(PriceTable::with_overrides(&loaded.config.prices));
        let redactor = loaded.redactor(env);
        let mut built: BTreeMap<String, Arc<dyn ModelProvider>> = BTreeMap::new();
        let mut routes = BTreeMap::new();
        for role in Role::ALL {
            let route = loaded.route(role)?;
            let config = loaded.config.providers.get(&route.provider).cloned().unwrap_or_default();
            let provider = match built.get(&route.provider) {
                Some(provider) => provider.clone(),
                None => {
                    let provider = build_provider(&route.provider, &config, prices.clone(), workspace, env, &redactor)?;
                    built.insert(route.provider.clone(), provider.clone());
                    provider
                }
            };
            routes.insert(role, Route { provider, model: route.model, max_output_tokens: config.max_output_tokens });
        }
        Ok(ProviderRegistry { routes })
    }

    /// The provider and model that serve `role`.
    pub fn for_role(&self, role: Role) -> Option<(&Arc<dyn ModelProvider>, &str)> {
        self.routes.get(&role).map(|route| (&route.provider, route.model.as_str()))
    }

    /// Every role's route.
    pub fn routes(&self) -> impl Iterator<Item = (Role, &Route)> {
        self.routes.iter().map(|(role, route)| (*role, route))
    }

    /// The role models the engine drives missions with.
    pub fn models(&self) -> missions_core::model::Models {
        let by_role = self
            .routes
            .iter()
            .map(|(role, route)| {
                let model = missions_core::model::RoleModel {
                    provider: route.provider.clone(),
                    model: route.model.clone(),
                    max_output_tokens: route.max_output_tokens,
                };
                (*role, model)
            })
            .collect();
        missions_core::model::Models { by_role }
    }
}
