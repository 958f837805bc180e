//! Keeping API keys out of everything we write or show.
//!
//! Keys are read from the environment only (SPEC §7). A [`Redactor`] knows the values of the
//! configured keys and replaces them wherever they might leak: transcripts, tool output that
//! reaches a model, logs. It is deliberately dumb (exact substring replacement) so that it is
//! easy to trust.

/// Replaces known secret values with a marker naming where the secret came from.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (value, marker) pairs, longest value first so that a key containing another is
    /// replaced whole.
    secrets: Vec<(String, String)>,
}

/// Values shorter than this are not treated as secrets: replacing every `ab` in a transcript
/// would destroy it, and such a value protects nothing. Anything longer is redacted, even a
/// short dummy key for a local server, because the user declared it a key.
const MIN_SECRET_LEN: usize = 4;

impl Redactor {
    /// Builds a redactor from `(environment variable name, value)` pairs.
    pub fn new<I, N, V>(secrets: I) -> Redactor
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        V: Into<String>,
    {
        let mut pairs: Vec<(String, String)> = secrets
            .into_iter()
            .map(|(name, value)| (value.into(), format!("[REDACTED:{}]", name.as_ref())))
            .filter(|(value, _)| value.len() >= MIN_SECRET_LEN)
            .collect();
        pairs.sort_by_key(|pair| std::cmp::Reverse(pair.0.len()));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Redactor { secrets: pairs }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Returns `text` with every known secret replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (value, marker) in &self.secrets {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), marker);
            }
        }
        out
    }

    /// Whether `text` holds any known secret anywhere in it.
    pub fn contains_secret(&self, text: &str) -> bool {
        self.secrets.iter().any(|(value, _)| text.contains(value.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::Redactor;

    #[test]
    fn replaces_every_occurrence_and_names_the_variable() {
        let r = Redactor::new([("OPENAI_API_KEY", "sk-test-1234567890"), ("SHORT", "abc"), ("LOCAL", "ollama")]);
        let out = r.redact("key=sk-test-1234567890; again sk-test-1234567890; abc stays; ollama goes");
        assert_eq!(
            out,
            "key=[REDACTED:OPENAI_API_KEY]; again [REDACTED:OPENAI_API_KEY]; abc stays; [REDACTED:LOCAL] goes"
        );
        assert!(r.contains_secret("xx sk-test-1234567890"));
        assert!(!r.contains_secret("abc"));
    }

    #[test]
    fn longer_secret_wins_over_its_prefix() {
        let r = Redactor::new([("A", "secret-value-1"), ("B", "secret-value-1-longer")]);
        assert_eq!(r.redact("secret-value-1-longer"), "[REDACTED:B]");
    }
}
