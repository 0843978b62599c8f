//! The bot token, kept out of every log line, error message and `Debug` output.
//!
//! The Bot API puts the token in the URL path (`/bot<token>/getUpdates`), and HTTP client
//! errors carry the URL. So the token lives in this one type whose `Debug` shows only the
//! bot id (the part before `:`, which is public: it is the bot's user id), and every text
//! that leaves the transport goes through [`BotToken::redact`].

use std::fmt;

/// A Telegram bot token. `Debug` prints `BotToken(123456:<redacted>)`.
///
/// # Examples
///
/// ```
/// use pollgate_core::BotToken;
///
/// let token = BotToken::new("123456:AAEhBOweik6ad9r_QXMENQjcrGbqCr4K-ha");
/// assert_eq!(format!("{token:?}"), "BotToken(123456:<redacted>)");
/// assert_eq!(token.bot_id(), Some(123456));
/// let line = format!("GET https://api.telegram.org/bot{}/getMe", token.expose());
/// assert_eq!(token.redact(&line), "GET https://api.telegram.org/bot<redacted>/getMe");
/// ```
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
        if self.0.is_empty() {
            // `str::replace` with an empty pattern would insert the marker between every
            // character; an empty token has nothing to hide.
            return text.to_owned();
        }
        let mut out = text.replace(&*self.0, "<redacted>");
        // A short secret part would also match ordinary text; the whole token covers it.
        if let Some((_, secret)) = self.0.split_once(':').filter(|(_, secret)| secret.len() >= 8) {
            out = out.replace(secret, "<redacted>");
        }
        out
    }

    /// The start of `bytes` as text, at most `max_bytes` long, with the token removed
    /// *before* the cut, so a token that straddles the cut shows none of its characters.
    /// Invalid UTF-8 becomes U+FFFD. Returns the text and whether anything was cut off.
    ///
    /// Only a prefix is redacted, so a huge body costs no more than its start: the prefix
    /// grows until its redacted text holds `max_bytes` plus one whole token. A token cut at
    /// the prefix's end then starts past `max_bytes` and is dropped with the rest.
    pub(crate) fn redacted_prefix(&self, bytes: &[u8], max_bytes: usize) -> (String, bool) {
        let room = max_bytes.saturating_add(self.0.len());
        let mut window = room;
        let (redacted, read_all) = loop {
            let end = window.min(bytes.len());
            let text = self.redact(&String::from_utf8_lossy(&bytes[..end]));
            if end == bytes.len() || text.len() >= room {
                break (text, end == bytes.len());
            }
            // Redaction shrank the text (many tokens): read further.
            window = window.saturating_mul(2);
        };
        let mut cut = redacted.len().min(max_bytes);
        while !redacted.is_char_boundary(cut) {
            cut -= 1;
        }
        let truncated = cut < redacted.len() || !read_all;
        let mut text = redacted;
        text.truncate(cut);
        (text, truncated)
    }

    /// `error` with the token removed from its message. serde's messages quote the
    /// offending value (`invalid type: string "…"`), and the value is server text.
    ///
    /// An error that does not mention the token is returned as is. One that does is
    /// rebuilt from its redacted message, which keeps the position (`at line 1 column 9`)
    /// as text; its [`serde_json::Error::classify`], `line` and `column` are lost.
    pub(crate) fn redact_json_error(&self, error: serde_json::Error) -> serde_json::Error {
        let message = error.to_string();
        let redacted = self.redact(&message);
        if redacted == message {
            error
        } else {
            <serde_json::Error as serde::de::Error>::custom(redacted)
        }
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

    const TOKEN: &str = "42:AAEsecretsecretsecret";

    #[test]
    fn an_empty_token_redacts_nothing() {
        assert_eq!(BotToken::new("").redact("abc"), "abc");
        assert_eq!(BotToken::new("").redacted_prefix(b"abc", 2), ("ab".to_owned(), true));
    }

    #[test]
    fn a_token_straddling_the_cut_shows_none_of_its_characters() {
        let t = BotToken::new(TOKEN);
        for start in 0..=64 {
            let body = format!("{}{TOKEN}{}", "x".repeat(start), "t".repeat(40));
            let (text, truncated) = t.redacted_prefix(body.as_bytes(), 40);
            assert!(text.len() <= 40, "{text}");
            assert!(truncated, "{start}: the tail is always cut off");
            assert!(!text.contains("42:A") && !text.contains("AAEs"), "{start}: {text}");
            let kept = "x".repeat(start.min(40));
            assert!(
                text.starts_with(&kept),
                "{start}: the text before the token is kept: {text}"
            );
        }
    }

    #[test]
    fn tokens_shifted_into_the_excerpt_by_redaction_are_redacted() {
        // Each redaction shortens the text by 13 bytes, pulling later tokens forward; the
        // last of these starts far past the first window.
        let t = BotToken::new(TOKEN);
        let body = TOKEN.repeat(40);
        let (text, truncated) = t.redacted_prefix(body.as_bytes(), 300);
        assert!(truncated);
        assert_eq!(text, "<redacted>".repeat(30));
        assert!(!text.contains("42:") && !text.contains("AAE"), "{text}");
    }

    #[test]
    fn a_short_body_is_kept_whole_and_invalid_utf8_is_replaced() {
        let t = BotToken::new(TOKEN);
        let (text, truncated) = t.redacted_prefix(format!("a {TOKEN} b").as_bytes(), 40);
        assert_eq!((text.as_str(), truncated), ("a <redacted> b", false));
        let (text, truncated) = t.redacted_prefix(b"ok \xff\xfe ok", 40);
        assert_eq!((text.as_str(), truncated), ("ok \u{fffd}\u{fffd} ok", false));
        // A multi-byte character at the cut is dropped whole.
        let (text, truncated) = t.redacted_prefix("ab€".as_bytes(), 3);
        assert_eq!((text.as_str(), truncated), ("ab", true));
    }

    #[test]
    fn json_errors_quoting_the_token_are_rebuilt_redacted() {
        let t = BotToken::new(TOKEN);
        let quoting = serde_json::from_str::<bool>(&format!("\"{TOKEN}\"")).unwrap_err();
        let message = t.redact_json_error(quoting).to_string();
        assert!(!message.contains("secret") && !message.contains("42:"), "{message}");
        assert!(
            message.contains("invalid type: string \"<redacted>\", expected a boolean at line 1 column"),
            "{message}"
        );
        let plain = serde_json::from_str::<bool>("nope").unwrap_err();
        let before = (plain.to_string(), plain.line(), plain.column());
        let after = t.redact_json_error(plain);
        assert_eq!((after.to_string(), after.line(), after.column()), before, "kept as is");
    }
}
