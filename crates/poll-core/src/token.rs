//! The bot token, kept out of every log line, error message and `Debug` output.
//!
//! The Bot API puts the token in the URL path (`/bot<token>/getUpdates`), and HTTP client
//! errors carry the URL. So the token lives in this one type whose `Debug` shows only the
//! bot id (the part before `:`, which is public: it is the bot's user id), and every text
//! that leaves the transport goes through [`BotToken::redact`].

use std::fmt;

/// A Telegram bot token. `Debug` prints `BotToken(123456:<redacted>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken(Box<str>);

impl BotToken {
    /// Wraps a token such as `123456:ABC-DEF...`.
    pub fn new(token: impl Into<String>) -> BotToken {
        BotToken(token.into().into_boxed_str())
    }

    /// The bot's user id: the part of the token before `:`.
    pub fn bot_id(&self) -> Option<i64> {
        self.0.split_once(':').and_then(|(id, _)| id.parse().ok())
    }

    /// The secret itself. Only for building request URLs; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the token in `text` (and of its secret part after
    /// the `:`) with `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.replace(&*self.0, "<redacted>");
        if let Some((_, secret)) = self.0.split_once(':') {
            if secret.len() >= 8 {
                out = out.replace(secret, "<redacted>");
            }
        }
        out
    }
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bot_id() {
            Some(id) => write!(f, "BotToken({id}:<redacted>)"),
            None => f.write_str("BotToken(<redacted>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_redact_hide_the_secret() {
        let t = BotToken::new("42:AAEsecretsecretsecret");
        assert_eq!(format!("{t:?}"), "BotToken(42:<redacted>)");
        assert_eq!(t.redact("GET /bot42:AAEsecretsecretsecret/x"), "GET /bot<redacted>/x");
        assert_eq!(t.redact("…AAEsecretsecretsecret…"), "…<redacted>…");
        assert_eq!(format!("{:?}", BotToken::new("no-colon")), "BotToken(<redacted>)");
    }
}
