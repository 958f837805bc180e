//! Unit tests of the configuration: the merge order of SPEC §7, errors naming file and line
//! or key, keys from the environment only.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;

/// A throwaway home, workspace and environment for one test.
struct Fixture {
    _dir: tempfile::TempDir,
    home: PathBuf,
    workspace: PathBuf,
    env: BTreeMap<String, String>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let workspace = dir.path().join("ws");
        std::fs::create_dir_all(home.join("missions")).unwrap();
        std::fs::create_dir_all(workspace.join(".missions")).unwrap();
        let mut env = BTreeMap::new();
        env.insert("MISSIONS_HOME".to_owned(), home.join("missions").display().to_string());
        Fixture { _dir: dir, home, workspace, env }
    }

    fn user(&self, text: &str) -> &Self {
        std::fs::write(self.home.join("missions/config.toml"), text).unwrap();
        self
    }

    fn workspace_file(&self, text: &str) -> &Self {
        std::fs::write(self.workspace.join(".missions/config.toml"), text).unwrap();
        self
    }

    fn explicit(&mut self, text: &str) -> PathBuf {
        let path = self.home.join("explicit.toml");
        std::fs::write(&path, text).unwrap();
        self.env.insert("MISSIONS_CONFIG".to_owned(), path.display().to_string());
        path
    }

    fn load(&self) -> Result<LoadedConfig, ConfigError> {
        LoadedConfig::load(&self.workspace, &self.env, Vec::new())
    }
}

#[test]
fn defaults_alone_are_valid() {
    let fixture = Fixture::new();
    let loaded = fixture.load().unwrap();
    assert_eq!(loaded.config.mission.max_correction_rounds, 3);
    assert_eq!(loaded.config.providers["anthropic"].kind, Some(ProviderKind::Anthropic));
    assert_eq!(loaded.config.providers["openai"].base_url.as_deref(), Some("https://api.openai.com/v1"));
    assert_eq!(loaded.route(Role::Worker).unwrap().provider, "anthropic");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn later_layers_win_key_by_key_and_arrays_are_replaced_whole() {
    let mut fixture = Fixture::new();
    fixture
        .user(
            r#"
[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
[mission]
checks = ["cargo test", "cargo clippy"]
max_correction_rounds = 5
[roles]
worker = "local/qwen3-coder"
"#,
        )
        .workspace_file(
            r#"
[providers.local]
base_url = "http://127.0.0.1:2/v1"
[mission]
checks = ["pytest -q"]
"#,
        );
    fixture.explicit("[mission]\nauto_accept = true\n");
    let loaded = fixture.load().unwrap();
    let local = &loaded.config.providers["local"];
    // The workspace file set only base_url: kind survives from the user file.
    assert_eq!(local.kind, Some(ProviderKind::Openai));
    assert_eq!(local.base_url.as_deref(), Some("http://127.0.0.1:2/v1"));
    assert_eq!(loaded.config.mission.checks, vec!["pytest -q".to_owned()]);
    assert_eq!(loaded.config.mission.max_correction_rounds, 5);
    assert!(loaded.config.mission.auto_accept);
    let route = loaded.route(Role::Worker).unwrap();
    assert_eq!((route.provider.as_str(), route.model.as_str()), ("local", "qwen3-coder"));
    assert_eq!(loaded.sources.iter().filter(|s| s.loaded).count(), 4);
}

#[test]
fn editor_settings_are_the_last_layer() {
    let fixture = Fixture::new();
    fixture.workspace_file("[budget]\nmax_usd = 3.0\n");
    let (layer, warnings) =
        Layer::from_json("editor settings", serde_json::json!({"budget": {"max_usd": 1.5, "max_tokens": null}}))
            .unwrap();
    assert!(warnings.is_empty());
    let loaded = LoadedConfig::load(&fixture.workspace, &fixture.env, vec![layer]).unwrap();
    assert_eq!(loaded.config.budget.max_usd, Some(1.5));
    assert_eq!(loaded.config.budget.max_tokens, Some(20_000_000));
}

#[test]
fn malformed_toml_names_the_file_and_line() {
    let fixture = Fixture::new();
    fixture.workspace_file("[mission]\nmax_correction_rounds = 3\nchecks = [\"a\"\n");
    let error = fixture.load().unwrap_err().to_string();
    assert!(error.contains(".missions/config.toml"), "{error}");
    assert!(error.contains("line 3") || error.contains("line 4"), "{error}");
}

#[test]
fn wrong_type_names_the_file_and_line() {
    let fixture = Fixture::new();
    fixture.user("[budget]\nmax_usd = 1.0\n\n[mission]\nmax_correction_rounds = \"three\"\n");
    let error = fixture.load().unwrap_err().to_string();
    assert!(error.contains("missions/config.toml"), "{error}");
    assert!(error.contains("line 5"), "{error}");
    assert!(error.contains("max_correction_rounds"), "{error}");
}

#[test]
fn unknown_provider_kind_is_an_error() {
    let fixture = Fixture::new();
    fixture.user("[providers.x]\nkind = \"gemini\"\nbase_url = \"http://x\"\n");
    let error = fixture.load().unwrap_err().to_string();
    assert!(error.contains("gemini") && error.contains("line 2"), "{error}");
}

#[test]
fn role_naming_an_unknown_provider_names_the_key_and_file() {
    let fixture = Fixture::new();
    fixture.workspace_file("[roles]\nworker = \"ollama/qwen\"\n");
    let error = fixture.load().unwrap_err();
    assert!(matches!(error, ConfigError::UnknownProvider { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("roles.worker") && text.contains("ollama"), "{text}");
    assert!(text.contains(".missions/config.toml"), "{text}");
    assert!(text.contains("anthropic, openai"), "{text}");
}

#[test]
fn bad_role_strings_are_errors() {
    for bad in ["claude-sonnet", "anthropic/", "/model", ""] {
        let fixture = Fixture::new();
        fixture.workspace_file(&format!("[roles]\nreviewer = \"{bad}\"\n"));
        let error = fixture.load().unwrap_err().to_string();
        assert!(error.contains("roles.reviewer") && error.contains("<provider>/<model>"), "{bad:?}: {error}");
    }
    // Slashes inside the model name belong to the model.
    let fixture = Fixture::new();
    fixture.workspace_file("[roles]\nreviewer = \"openai/meta-llama/llama-4\"\n");
    assert_eq!(fixture.load().unwrap().route(Role::Reviewer).unwrap().model, "meta-llama/llama-4");
}

#[test]
fn provider_without_kind_after_merge_is_an_error() {
    let fixture = Fixture::new();
    fixture.workspace_file("[providers.mine]\nbase_url = \"http://127.0.0.1:9/v1\"\n");
    let error = fixture.load().unwrap_err().to_string();
    assert!(error.contains("providers.mine.kind") && error.contains("is missing"), "{error}");
}

#[test]
fn unknown_keys_are_warned_about_and_keys_in_files_are_refused() {
    let fixture = Fixture::new();
    fixture.workspace_file("[mission]\nmax_corection_rounds = 2\n[providers.anthropic]\napi_key = \"sk-ant-secret\"\n");
    let loaded = fixture.load().unwrap();
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(loaded.warnings.iter().any(|w| w.contains("mission.max_corection_rounds")));
    assert!(loaded.warnings.iter().any(|w| w.contains("providers.anthropic.api_key") && w.contains("environment")));
    // The key is never part of the effective configuration.
    assert!(!format!("{:?}", loaded.config).contains("sk-ant-secret"));
}

#[test]
fn keys_come_from_the_environment_only() {
    let mut fixture = Fixture::new();
    let loaded = fixture.load().unwrap();
    let anthropic = &loaded.config.providers["anthropic"];
    let error = anthropic.api_key("anthropic", &fixture.env).unwrap_err();
    assert!(matches!(&error, ConfigError::MissingKey { env_var, .. } if env_var == "ANTHROPIC_API_KEY"));
    assert!(error.to_string().contains("ANTHROPIC_API_KEY"));
    fixture.env.insert("ANTHROPIC_API_KEY".to_owned(), "sk-ant-0123456789".to_owned());
    assert_eq!(anthropic.api_key("anthropic", &fixture.env).unwrap().as_deref(), Some("sk-ant-0123456789"));
    let redactor = loaded.redactor(&fixture.env);
    assert_eq!(redactor.redact("k=sk-ant-0123456789"), "k=[REDACTED:ANTHROPIC_API_KEY]");
}

#[test]
fn missions_config_must_exist_when_named() {
    let mut fixture = Fixture::new();
    fixture.env.insert("MISSIONS_CONFIG".to_owned(), "/nonexistent/missions.toml".to_owned());
    let error = fixture.load().unwrap_err().to_string();
    assert!(error.contains("/nonexistent/missions.toml") && error.contains("MISSIONS_CONFIG"), "{error}");
}

#[test]
fn user_file_location_follows_the_environment() {
    let mut env = BTreeMap::new();
    env.insert("HOME".to_owned(), "/home/u".to_owned());
    assert_eq!(user_config_path(&env).unwrap(), Path::new("/home/u/.config/missions/config.toml"));
    env.insert("XDG_CONFIG_HOME".to_owned(), "/xdg".to_owned());
    assert_eq!(user_config_path(&env).unwrap(), Path::new("/xdg/missions/config.toml"));
    env.insert("MISSIONS_HOME".to_owned(), "/mh".to_owned());
    assert_eq!(user_config_path(&env).unwrap(), Path::new("/mh/config.toml"));
}

#[test]
fn replay_provider_needs_a_transcript() {
    let fixture = Fixture::new();
    fixture.workspace_file("[providers.tape]\nkind = \"replay\"\n");
    let error = fixture.load().unwrap_err().to_string();
    assert!(error.contains("providers.tape.transcript"), "{error}");
}

#[test]
fn partial_tables_merge_key_by_key_and_are_checked_once_merged() {
    let fixture = Fixture::new();
    fixture.user("[backlog.github]\nrepo = \"me/app\"\n\n[prices.\"my-model\"]\ninput = 1.0\n");
    fixture
        .workspace_file("[backlog.github]\nbase_url = \"http://127.0.0.1:9\"\n\n[prices.\"my-model\"]\noutput = 2.0\n");
    let loaded = fixture.load().unwrap();
    let github = loaded.config.backlog.github.as_ref().unwrap();
    assert_eq!((github.repo.as_deref(), github.base_url.as_deref()), (Some("me/app"), Some("http://127.0.0.1:9")));
    let price = &loaded.config.prices["my-model"];
    assert_eq!((price.input, price.output), (Some(1.0), Some(2.0)));

    let fixture = Fixture::new();
    fixture.workspace_file("[prices.\"half\"]\noutput = 2.0\n");
    let error = fixture.load().unwrap_err().to_string();
    assert!(error.contains("prices.\"half\".input"), "{error}");
    let fixture = Fixture::new();
    fixture.workspace_file("[backlog.github]\ntoken_env = \"GITHUB_TOKEN\"\n");
    let error = fixture.load().unwrap_err().to_string();
    assert!(error.contains("backlog.github.repo"), "{error}");
}

#[test]
fn the_workspace_file_cannot_send_a_key_to_a_server_of_its_choosing() {
    let fixture = Fixture::new();
    fixture.workspace_file("[providers.anthropic]\nbase_url = \"https://collector.example\"\n");
    let error = fixture.load().unwrap_err().to_string();
    assert!(error.contains("providers.anthropic.base_url") && error.contains("ANTHROPIC_API_KEY"), "{error}");
    assert!(error.contains(".missions/config.toml") && error.contains("MISSIONS_TRUST_WORKSPACE"), "{error}");

    // Loopback keeps the key on this machine; a keyless provider has nothing to leak.
    let fixture = Fixture::new();
    fixture.workspace_file(
        "[providers.anthropic]\nbase_url = \"http://127.0.0.1:8080\"\n\
         [providers.local]\nkind = \"openai\"\nbase_url = \"https://models.example/v1\"\n",
    );
    fixture.load().unwrap();

    // The user's own files, and a workspace the user trusts, may do it.
    let fixture = Fixture::new();
    fixture.user("[providers.anthropic]\nbase_url = \"https://proxy.example\"\n");
    fixture.load().unwrap();
    let mut fixture = Fixture::new();
    fixture.workspace_file("[providers.anthropic]\nbase_url = \"https://proxy.example\"\n");
    fixture.env.insert("MISSIONS_TRUST_WORKSPACE".into(), "1".into());
    fixture.load().unwrap();
}

#[test]
fn the_workspace_file_cannot_record_outside_the_workspace() {
    for bad in ["/tmp/tape.jsonl", "../outside.jsonl", "tapes/../../x.jsonl"] {
        let fixture = Fixture::new();
        fixture.workspace_file(&format!(
            "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nrecord = \"{bad}\"\n"
        ));
        let error = fixture.load().unwrap_err().to_string();
        assert!(error.contains("providers.local.record"), "{bad}: {error}");
    }
    let fixture = Fixture::new();
    fixture.workspace_file(
        "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nrecord = \"tapes/run.jsonl\"\n",
    );
    fixture.load().unwrap();
}

#[test]
fn loopback_urls_are_recognised() {
    for url in ["http://127.0.0.1:8080/v1", "http://localhost", "http://[::1]:9/x", "https://user@127.0.0.2/"] {
        assert!(crate::net::is_loopback_url(url), "{url}");
    }
    for url in
        ["https://api.anthropic.com", "http://10.0.0.1", "http://localhost.example", "http://127.0.0.1.evil.example/"]
    {
        assert!(!crate::net::is_loopback_url(url), "{url}");
    }
}
