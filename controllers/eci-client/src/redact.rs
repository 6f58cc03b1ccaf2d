//! What an error may not repeat of its request.
//!
//! ECI's error messages can echo what was sent: a parameter's value in an `InvalidParameter`
//! message, every parameter (percent-encoded, twice) in the string to sign of a
//! `SignatureDoesNotMatch`. Errors end up in Events, pod conditions, the Node and logs, so the
//! client removes from every error it builds the secret parts of its credentials and the
//! value of every sensitive parameter of the request, in each rendering the gateway uses.
//!
//! The client cannot know which environment variables or files came from a Secret, so every
//! environment variable value, config file content, registry password and FlexVolume options
//! string counts as sensitive.

use eci_types::wire::REDACTED;

use crate::credentials::Credentials;
use crate::sign::percent_encode;

/// Parameter values shorter than this are replaced only where they stand alone (a word, or a
/// whole value in an encoded query): replacing every `1` or `on` would garble the message.
/// Credentials are replaced wherever they appear, whatever their length.
const SHORT: usize = 4;

/// Whether the flat parameter `name` (`Container.1.EnvironmentVar.2.Value`) may carry a
/// secret.
pub fn is_sensitive(name: &str) -> bool {
    let mut segments = name.split('.');
    let last = segments.next_back().unwrap_or_default();
    let parent = |wanted: &str| name.split('.').any(|segment| segment == wanted);
    (last == "Value" && parent("EnvironmentVar"))
        || (last == "Content" && parent("ConfigFileToPath"))
        || (last == "Options" && parent("FlexVolume"))
        || last == "Password"
}

/// The values to remove from the errors of one request.
#[derive(Clone)]
pub struct Redactions {
    /// Every rendering of every value, longest first so that a value containing another is
    /// removed whole, and whether it goes wherever it appears (or only where it stands alone).
    forms: Vec<(String, bool)>,
}

impl std::fmt::Debug for Redactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactions")
            .field("values", &self.forms.len())
            .finish()
    }
}

impl Redactions {
    /// The secret parts of `credentials` and the sensitive values among `params`.
    pub fn new(credentials: &Credentials, params: &[(String, String)]) -> Self {
        let secrets = std::iter::once(credentials.access_key_secret.expose())
            .chain(credentials.security_token.as_ref().map(|t| t.expose()))
            .map(|secret| (secret, true));
        let values = params
            .iter()
            .filter(|(name, _)| is_sensitive(name))
            .map(|(_, value)| (value.as_str(), value.len() >= SHORT));
        let mut forms: Vec<(String, bool)> = secrets
            .chain(values)
            .filter(|(raw, _)| !raw.is_empty())
            .flat_map(|(raw, anywhere)| {
                let once = percent_encode(raw);
                let twice = percent_encode(&once);
                [
                    (raw.to_string(), anywhere),
                    (once, anywhere),
                    (twice, anywhere),
                ]
            })
            .collect();
        forms.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| b.cmp(a)));
        forms.dedup_by(|later, earlier| later.0 == earlier.0);
        Self { forms }
    }

    /// `text` without any of the values.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (form, anywhere) in &self.forms {
            out = if *anywhere {
                out.replace(form.as_str(), REDACTED)
            } else {
                replace_standalone(&out, form)
            };
        }
        out
    }
}

/// Whether `text` ends with a percent escape, `%XX` or (encoded twice) `%25XX`.
fn ends_with_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    let n = bytes.len();
    let hex_tail = n >= 3 && bytes[n - 2..].iter().all(u8::is_ascii_hexdigit);
    hex_tail && (bytes[n - 3] == b'%' || (n >= 5 && &bytes[n - 5..n - 2] == b"%25"))
}

/// Replaces the occurrences of `needle` that are not part of a longer word or a dotted name
/// (`Container.1.Image`): bounded on the left by the start, a percent escape or a character
/// that is neither alphanumeric nor a dot after one, and on the right by the end or a
/// character that is neither alphanumeric nor a dot before one.
fn replace_standalone(text: &str, needle: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, _) in text.match_indices(needle) {
        if at < copied {
            continue;
        }
        let before = &text[..at];
        let after = &text[at + needle.len()..];
        let escape_before = ends_with_escape(before);
        let mut back = before.chars().rev();
        let left = escape_before
            || match back.next() {
                None => true,
                Some('.') => !back.next().is_some_and(char::is_alphanumeric),
                Some(c) => !c.is_alphanumeric(),
            };
        let mut ahead = after.chars();
        let right = match ahead.next() {
            None => true,
            Some('.') => !ahead.next().is_some_and(char::is_alphanumeric),
            Some(c) => !c.is_alphanumeric(),
        };
        if left && right {
            out.push_str(&text[copied..at]);
            out.push_str(REDACTED);
            copied = at + needle.len();
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sensitive_parameters_are_env_values_files_passwords_and_flex_options() {
        for name in [
            "Container.1.EnvironmentVar.2.Value",
            "InitContainer.3.EnvironmentVar.1.Value",
            "ImageRegistryCredential.1.Password",
            "Volume.2.ConfigFileVolume.ConfigFileToPath.1.Content",
            "Volume.1.FlexVolume.Options",
        ] {
            assert!(is_sensitive(name), "{name}");
        }
        for name in [
            "Container.1.EnvironmentVar.2.Key",
            "Container.1.Image",
            "ImageRegistryCredential.1.UserName",
            "Volume.2.ConfigFileVolume.ConfigFileToPath.1.Path",
            "Tag.1.Value",
            "ContainerGroupName",
        ] {
            assert!(!is_sensitive(name), "{name}");
        }
    }

    #[test]
    fn every_rendering_of_a_sensitive_value_is_removed() {
        let redactions = Redactions::new(
            &Credentials::new("id", "the-secret"),
            &params(&[
                ("Container.1.EnvironmentVar.1.Value", "p@ss word/+="),
                ("Container.1.Image", "nginx"),
                ("ImageRegistryCredential.1.Password", "hunter22"),
            ]),
        );
        let once = percent_encode("p@ss word/+=");
        let twice = percent_encode(&once);
        let message = format!(
            "value p@ss word/+= or {once} or {twice}; password hunter22; key the-secret; image nginx"
        );
        let scrubbed = redactions.scrub(&message);
        assert_eq!(
            scrubbed,
            "value <redacted> or <redacted> or <redacted>; password <redacted>; key <redacted>; image nginx"
        );
    }

    #[test]
    fn a_value_containing_another_is_removed_whole() {
        let redactions = Redactions::new(
            &Credentials::new("id", "k"),
            &params(&[
                ("Container.1.EnvironmentVar.1.Value", "token"),
                ("Container.1.EnvironmentVar.2.Value", "token-long-form"),
            ]),
        );
        assert_eq!(redactions.scrub("got token-long-form"), "got <redacted>");
    }

    #[test]
    fn short_values_are_removed_only_where_they_stand_alone() {
        let redactions = Redactions::new(
            &Credentials::new("id", "secret-key"),
            &params(&[("Container.1.EnvironmentVar.1.Value", "1")]),
        );
        assert_eq!(
            redactions.scrub(
                "The specified parameter Container.1.EnvironmentVar.1.Value is not valid: 1."
            ),
            "The specified parameter Container.1.EnvironmentVar.1.Value is not valid: <redacted>."
        );
        assert_eq!(
            redactions.scrub("\"1\" (1) 1"),
            "\"<redacted>\" (<redacted>) <redacted>"
        );
        assert_eq!(
            redactions.scrub("Value%253D1%2526Version 21 1a"),
            "Value%253D<redacted>%2526Version 21 1a"
        );
    }

    #[test]
    fn credentials_go_in_every_encoding_whatever_their_length() {
        let redactions = Redactions::new(
            &Credentials::new("id", "sec-ret-value").with_security_token("sts/tok+en="),
            &[],
        );
        let message = "server string to sign is:POST&%2F&SecurityToken%3Dsts%252Ftok%252Ben%253D and sts/tok+en= and sts%2Ftok%2Ben%3D";
        let scrubbed = redactions.scrub(message);
        assert!(!scrubbed.contains("tok"), "{scrubbed}");
        let short = Redactions::new(&Credentials::new("id", "x"), &[]);
        assert_eq!(short.scrub("xx-x"), "<redacted><redacted>-<redacted>");
    }

    #[test]
    fn debug_shows_no_value() {
        let redactions = Redactions::new(
            &Credentials::new("id", "the-secret"),
            &params(&[("ImageRegistryCredential.1.Password", "hunter22")]),
        );
        let shown = format!("{redactions:?}");
        assert!(!shown.contains("hunter22") && !shown.contains("the-secret"));
    }
}
