//! Which signaling backend a command talks to: the local server (`--local URL`) or Telegram
//! (the account in `API_ID`, `API_HASH` and `SESSION`/`SESSION_FILE`).

use std::sync::Arc;

use groupcall_engine::signaling::local::LocalSignaling;
use groupcall_engine::signaling::telegram::{TelegramConfig, TelegramSignaling};
use groupcall_engine::signaling::{CallId, CallRef, PeerId, Signaling};

#[derive(clap::Args, Clone, Debug)]
pub struct BackendArgs {
    /// Use the local server at this URL (as `groupcall serve` prints it) instead of Telegram.
    #[arg(long, value_name = "URL")]
    pub local: Option<String>,
    /// With --local: the user id to act as.
    #[arg(long = "as", value_name = "USER_ID", default_value_t = 1000)]
    pub user: i64,
}

/// A connected backend and the call the user named.
pub struct Target {
    pub signaling: Arc<dyn Signaling>,
    pub call: CallRef,
    /// The chat the call belongs to (Telegram).
    pub chat: Option<PeerId>,
    pub invite_hash: Option<String>,
}

impl BackendArgs {
    pub async fn connect(&self) -> Result<Backend, String> {
        match &self.local {
            Some(url) => {
                let s = LocalSignaling::new(url.clone(), PeerId::User(self.user))
                    .map_err(|e| e.to_string())?;
                Ok(Backend::Local(Arc::new(s)))
            }
            None => {
                let config = TelegramConfig::from_env().map_err(|e| {
                    format!("{e} (or use --local URL to talk to a local server instead)")
                })?;
                let t = TelegramSignaling::connect(config)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Backend::Telegram(Arc::new(t)))
            }
        }
    }
}

pub enum Backend {
    Local(Arc<LocalSignaling>),
    Telegram(Arc<TelegramSignaling>),
}

impl Backend {
    pub fn signaling(&self) -> Arc<dyn Signaling> {
        match self {
            Backend::Local(s) => s.clone(),
            Backend::Telegram(s) => s.clone(),
        }
    }

    /// Resolves what the user typed: a local call id, or a Telegram chat, link or id.
    pub async fn resolve(&self, target: &str) -> Result<Target, String> {
        match self {
            Backend::Local(s) => {
                let id: i64 = target.trim().parse().map_err(|_| {
                    format!("{target:?} is not a call id; the local server names calls by number (see `groupcall call create --local URL`)")
                })?;
                Ok(Target {
                    signaling: s.clone(),
                    call: CallRef::Id(CallId { id, access_hash: 0 }),
                    chat: None,
                    invite_hash: None,
                })
            }
            Backend::Telegram(t) => {
                let r = t.resolve(target).await.map_err(|e| e.to_string())?;
                Ok(Target {
                    signaling: t.clone(),
                    call: r.call,
                    chat: r.chat,
                    invite_hash: r.invite_hash,
                })
            }
        }
    }
}

/// A peer given on the command line as a dialog id (users positive, channels `-100…`).
pub fn parse_peer(s: &str) -> Result<PeerId, String> {
    s.trim()
        .parse::<i64>()
        .ok()
        .and_then(PeerId::from_dialog_id)
        .ok_or_else(|| format!("{s:?} is not a peer id: give a user id (positive) or a chat/channel id (negative, -100… for channels)"))
}
