//! Reading what a user types to name a call: `@username`, a t.me link (with or without a speaker
//! invite hash), a call link, a private-chat invite link, or a numeric chat id.

use crate::error::{Error, Result};
use crate::types::PeerId;

/// A chat or call reference as parsed, before asking Telegram anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A public group or channel by username, optionally with a speaker invite hash
    /// (`t.me/name?videochat=<hash>`, also `voicechat=` and `livestream=`).
    Username {
        username: String,
        invite_hash: Option<String>,
    },
    /// A chat by id (`-100…` channel, `-…` basic group, `t.me/c/<id>` private channel link).
    Peer {
        peer: PeerId,
        invite_hash: Option<String>,
    },
    /// A private chat's invite link hash (`t.me/+<hash>`, `t.me/joinchat/<hash>`).
    ChatInvite(String),
    /// A call link slug (`t.me/call/<slug>`): a conference call, no chat.
    CallSlug(String),
}

const HOSTS: [&str; 5] = [
    "t.me",
    "telegram.me",
    "telegram.dog",
    "www.t.me",
    "www.telegram.me",
];
const INVITE_KEYS: [&str; 3] = ["videochat", "voicechat", "livestream"];

fn bad(input: &str, problem: impl Into<String>) -> Error {
    Error::ChatReference {
        input: input.to_owned(),
        problem: problem.into(),
    }
}

/// Parses a target. Only the shape is checked; whether it exists is Telegram's answer.
pub fn parse_target(input: &str) -> Result<Target> {
    let s = input.trim();
    if s.is_empty() {
        return Err(bad(input, "it is empty"));
    }
    if let Ok(n) = s.parse::<i64>() {
        return match PeerId::from_dialog_id(n) {
            Some(PeerId::User(_)) => Err(bad(
                input,
                "a positive id is a user, and users have no group calls; a group is -<id>, a channel -100<id>",
            )),
            Some(peer) => Ok(Target::Peer {
                peer,
                invite_hash: None,
            }),
            None => Err(bad(input, "0 is not a chat id")),
        };
    }
    if let Some(name) = s.strip_prefix('@') {
        return username(input, name, None);
    }
    if let Some(rest) = s.strip_prefix("tg://") {
        return parse_tg_scheme(input, rest);
    }
    let without_scheme = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    if let Some((host, rest)) = without_scheme.split_once('/') {
        if HOSTS.iter().any(|h| host.eq_ignore_ascii_case(h)) {
            return parse_link_path(input, rest);
        }
        return Err(bad(input, format!("{host} is not a Telegram link host")));
    }
    username(input, s, None)
}

fn split_query(rest: &str) -> (&str, Vec<(&str, &str)>) {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let query = query.split('#').next().unwrap_or("");
    let pairs = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    (path, pairs)
}

fn invite_hash(pairs: &[(&str, &str)]) -> Option<String> {
    pairs
        .iter()
        .find(|(k, v)| INVITE_KEYS.contains(k) && !v.is_empty())
        .map(|(_, v)| (*v).to_owned())
}

fn parse_link_path(input: &str, rest: &str) -> Result<Target> {
    let (path, pairs) = split_query(rest);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["call", slug, ..] => Ok(Target::CallSlug((*slug).to_owned())),
        ["joinchat", hash, ..] => Ok(Target::ChatInvite((*hash).to_owned())),
        ["c", id, ..] => {
            let id: i64 = id
                .parse()
                .map_err(|_| bad(input, "t.me/c/ must be followed by a channel id"))?;
            if id <= 0 {
                return Err(bad(
                    input,
                    "t.me/c/ must be followed by a positive channel id",
                ));
            }
            Ok(Target::Peer {
                peer: PeerId::Channel(id),
                invite_hash: invite_hash(&pairs),
            })
        }
        [first, ..] if first.starts_with('+') => {
            let hash = &first[1..];
            if hash.is_empty() || hash.chars().all(|c| c.is_ascii_digit()) {
                // `t.me/+123…` is a phone number link, which names a user.
                return Err(bad(input, "a t.me/+<phone> link names a user, not a chat"));
            }
            Ok(Target::ChatInvite(hash.to_owned()))
        }
        [name, ..] => username(input, name, invite_hash(&pairs)),
        [] => Err(bad(input, "the link names nothing after the host")),
    }
}

fn parse_tg_scheme(input: &str, rest: &str) -> Result<Target> {
    let (action, pairs) = split_query(rest);
    let get = |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    match action.trim_end_matches('/') {
        "resolve" => match get("domain") {
            Some(d) => username(input, d, invite_hash(&pairs)),
            None => Err(bad(input, "tg://resolve needs a domain=")),
        },
        "join" => match get("invite") {
            Some(h) if !h.is_empty() => Ok(Target::ChatInvite(h.to_owned())),
            _ => Err(bad(input, "tg://join needs an invite=")),
        },
        other => Err(bad(input, format!("tg://{other} links are not chat links"))),
    }
}

fn username(input: &str, name: &str, invite_hash: Option<String>) -> Result<Target> {
    // Telegram usernames: 4-32 characters, a letter first, then letters, digits, underscores.
    let ok_len = (4..=32).contains(&name.len());
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok_len && ok_first && ok_chars {
        Ok(Target::Username {
            username: name.to_owned(),
            invite_hash,
        })
    } else {
        Err(bad(
            input,
            format!(
                "{name:?} is not a username (4-32 letters, digits or _, starting with a letter)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, hash: Option<&str>) -> Target {
        Target::Username {
            username: name.into(),
            invite_hash: hash.map(Into::into),
        }
    }

    #[test]
    fn every_accepted_form_parses() {
        let cases = [
            ("@groupcall_dev", user("groupcall_dev", None)),
            ("groupcall_dev", user("groupcall_dev", None)),
            ("https://t.me/groupcall_dev", user("groupcall_dev", None)),
            ("t.me/groupcall_dev/", user("groupcall_dev", None)),
            (
                "https://t.me/groupcall_dev?videochat=AbC123",
                user("groupcall_dev", Some("AbC123")),
            ),
            (
                "https://telegram.me/groupcall_dev?voicechat=h",
                user("groupcall_dev", Some("h")),
            ),
            (
                "https://t.me/groupcall_dev?livestream",
                user("groupcall_dev", None),
            ),
            (
                "tg://resolve?domain=groupcall_dev&videochat=zz",
                user("groupcall_dev", Some("zz")),
            ),
            (
                "-1001234567890",
                Target::Peer {
                    peer: PeerId::Channel(1234567890),
                    invite_hash: None,
                },
            ),
            (
                "-4321",
                Target::Peer {
                    peer: PeerId::Chat(4321),
                    invite_hash: None,
                },
            ),
            (
                "https://t.me/c/1234567890/55",
                Target::Peer {
                    peer: PeerId::Channel(1234567890),
                    invite_hash: None,
                },
            ),
            (
                "https://t.me/+AbCdEf_12",
                Target::ChatInvite("AbCdEf_12".into()),
            ),
            ("t.me/joinchat/AbCdEf", Target::ChatInvite("AbCdEf".into())),
            ("tg://join?invite=AbC", Target::ChatInvite("AbC".into())),
            (
                "https://t.me/call/xyz-123",
                Target::CallSlug("xyz-123".into()),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_target(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn refusals_say_why() {
        for (input, needle) in [
            ("", "empty"),
            ("12345", "user"),
            ("0", "not a chat id"),
            ("https://example.com/x", "not a Telegram link host"),
            ("@ab", "not a username"),
            ("https://t.me/+15551234567", "phone"),
            ("https://t.me/c/abc", "channel id"),
            ("tg://msg?to=x", "not chat links"),
        ] {
            let e = parse_target(input).unwrap_err().to_string();
            assert!(e.contains(needle), "{input:?}: {e}");
        }
    }
}
