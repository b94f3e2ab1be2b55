//! The MTProto session: the authorization key that *is* the login, plus cached peers and the
//! update state. Kept in memory and, for file sessions, written to a private file.
//!
//! The file is ours (JSON), not grammers' SQLite: it is small, it needs no C library, and it is
//! created with mode 0600 from the first byte (written to a private temporary file beside it,
//! synced, then renamed over), since anyone who reads it is logged in as the user. A crash at
//! any point leaves either the old file or the new one, never half of one.
//!
//! grammers reports every MTProto update's new `pts`/`seq`, many a second in a busy chat, and a
//! synced rewrite of the file for each would cost a disk flush per update. So writes are
//! coalesced to at most one per [`WRITE_INTERVAL`]: a change within the interval after a write
//! marks the file dirty and a timer writes it when the interval is over. What would be costly
//! to lose is written at once: a new authorization key or home DC (losing it means logging in
//! again). The rest only costs a little (a catch-up from an older `pts`, an access hash
//! resolved again), and is written on [`StoredSession::flush`] and when the store is dropped.
//!
//! Session strings are Telethon's `StringSession` format (`1` + URL-safe base64 of DC id, IP,
//! port and the 256-byte key), so sessions made with Telethon-based tools import as they are.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use grammers_client::session::types::{
    ChannelKind, ChannelState, DcOption, PeerAuth, PeerId as GPeerId, PeerInfo, UpdateState,
    UpdatesState,
};
use grammers_client::session::{Session, SessionData};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Error, Result};

type BoxFuture<'a, T> = grammers_client::session::BoxFuture<'a, T>;

/// At most one write of the session file per this interval, except for urgent changes.
pub(crate) const WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// A secret string (API hash, session string). Its `Debug` never shows the value, so configs
/// that hold one can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The session store grammers reads and writes through. Pending changes are written when it is
/// dropped.
pub struct StoredSession {
    shared: Arc<Shared>,
}

/// Shared with the deferred-write timer, which holds it weakly.
struct Shared {
    data: Mutex<SessionData>,
    path: Option<PathBuf>,
    /// Held for a whole write, so that writes never overlap and an older snapshot can never
    /// be renamed over a newer one.
    file: Mutex<FileState>,
}

#[derive(Default)]
struct FileState {
    /// The memory holds changes the file does not.
    dirty: bool,
    last_write: Option<Instant>,
    /// A timer will write the file at the end of the interval.
    timer: bool,
    /// Files written, for tests and logs.
    writes: u64,
}

/// How soon a change must reach the file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Urgency {
    /// The login itself (authorization key, home DC): written at once.
    Now,
    /// Update state and cached peers: written within [`WRITE_INTERVAL`].
    Coalesced,
}

/// Why the session store failed, for grammers (which needs a `std::error::Error`).
#[derive(Debug)]
pub struct SessionStoreError(String);

impl fmt::Display for SessionStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SessionStoreError {}

impl fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSession")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl StoredSession {
    fn new(data: SessionData, path: Option<PathBuf>) -> Self {
        StoredSession {
            shared: Arc::new(Shared {
                data: Mutex::new(data),
                path,
                file: Mutex::default(),
            }),
        }
    }

    /// A session that lives only in memory (imported from a string, or for tests).
    pub fn in_memory(data: SessionData) -> Self {
        Self::new(data, None)
    }

    /// Opens the session file at `path`, or starts a new one there (written on first change).
    /// A file readable by others is tightened to 0600, with a warning.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let data = match std::fs::read(&path) {
            Ok(bytes) => {
                tighten_permissions(&path)?;
                let file: SessionFile = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Session(format!(
                        "{} is not a groupcall session file: {e}",
                        path.display()
                    ))
                })?;
                file.into_data()?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SessionData::default(),
            Err(source) => return Err(Error::SessionFile { path, source }),
        };
        Ok(Self::new(data, Some(path)))
    }

    /// Imports a session string (Telethon `StringSession` format).
    pub fn from_string(s: &Secret) -> Result<Self> {
        Ok(Self::in_memory(import_string(s.expose())?))
    }

    /// Exports the logged-in session as a string. Whoever has it is logged in as this account.
    pub fn to_string_session(&self) -> Result<Secret> {
        let data = self.shared.lock();
        let dc = data
            .dc_options
            .get(&data.home_dc)
            .ok_or(Error::NotAuthorized)?;
        let key = dc.auth_key.ok_or(Error::NotAuthorized)?;
        Ok(Secret(export_string(
            dc.id,
            IpAddr::V4(*dc.ipv4.ip()),
            dc.ipv4.port(),
            &key,
        )))
    }

    /// Where the session is stored, if in a file.
    pub fn path(&self) -> Option<&Path> {
        self.shared.path.as_deref()
    }

    /// Writes changes not yet in the file (the update state and peers of the last second)
    /// now. Dropping the store does the same, logging a failure instead of
    /// returning it.
    pub fn flush(&self) -> Result<()> {
        let mut file = self.shared.file_state();
        if !file.dirty {
            return Ok(());
        }
        self.shared
            .write(&mut file)
            .map_err(|source| Error::SessionFile {
                path: self.shared.path.clone().unwrap_or_default(),
                source,
            })
    }

    /// How many times the file was written.
    #[cfg(test)]
    fn writes(&self) -> u64 {
        self.shared.file_state().writes
    }

    fn lock(&self) -> MutexGuard<'_, SessionData> {
        self.shared.lock()
    }

    fn changed(&self, urgency: Urgency) -> std::result::Result<(), SessionStoreError> {
        Shared::changed(&self.shared, urgency)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SessionData> {
        // The data stays consistent even if a holder panicked: every write is a single assignment.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn file_state(&self) -> MutexGuard<'_, FileState> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the file up to date now or within the interval, as `urgency` asks.
    fn changed(this: &Arc<Self>, urgency: Urgency) -> std::result::Result<(), SessionStoreError> {
        let Some(path) = &this.path else {
            return Ok(());
        };
        let mut file = this.file_state();
        file.dirty = true;
        let next_allowed = file.last_write.map(|t| t + WRITE_INTERVAL);
        let due = match next_allowed {
            Some(at) if urgency == Urgency::Coalesced && Instant::now() < at => at,
            _ => {
                return this.write(&mut file).map_err(|e| {
                    SessionStoreError(format!("cannot write session file {}: {e}", path.display()))
                })
            }
        };
        if file.timer {
            return Ok(());
        }
        // Without a runtime to run the timer there is nothing to defer to: write now.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return this.write(&mut file).map_err(|e| {
                SessionStoreError(format!("cannot write session file {}: {e}", path.display()))
            });
        };
        file.timer = true;
        let weak: Weak<Shared> = Arc::downgrade(this);
        runtime.spawn(async move {
            tokio::time::sleep_until(due).await;
            if let Some(this) = weak.upgrade() {
                this.deferred_write();
            }
        });
        Ok(())
    }

    fn deferred_write(&self) {
        let mut file = self.file_state();
        file.timer = false;
        if !file.dirty {
            return;
        }
        if let Err(e) = self.write(&mut file) {
            // The changes stay in memory and marked dirty: the next change, flush or drop
            // tries again.
            tracing::warn!(
                path = ?self.path,
                "cannot write the session file: {e}; will try again on the next change"
            );
        }
    }

    /// Writes the current state; `file` is this store's write lock, held throughout.
    fn write(&self, file: &mut FileState) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            file.dirty = false;
            return Ok(());
        };
        let json = {
            let data = self.lock();
            serde_json::to_vec(&SessionFile::from_data(&data)).map_err(std::io::Error::other)?
        };
        write_private(path, &json)?;
        file.dirty = false;
        file.last_write = Some(Instant::now());
        file.writes += 1;
        Ok(())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut file = std::mem::take(self.file.get_mut().unwrap_or_else(|p| p.into_inner()));
        if file.dirty {
            if let Err(e) = self.write(&mut file) {
                tracing::warn!(
                    path = ?self.path,
                    "cannot write the session file on close: {e}; the update state and peers of the last second are lost"
                );
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, created 0600 and
/// synced before it is renamed over `path`: the key is never readable by others, not even for a
/// moment, and a crash leaves the old file or the new one, never half of one. A temporary file
/// left by such a crash is replaced, never reused: it might not be ours, or might be a link.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is synced.
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn tighten_permissions(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| Error::SessionFile {
            path: path.to_owned(),
            source,
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "session file was readable by others; restricting it to mode 0600"
            );
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| Error::SessionFile {
                    path: path.to_owned(),
                    source,
                },
            )?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Session for StoredSession {
    type Error = SessionStoreError;

    fn home_dc_id(&self) -> std::result::Result<i32, SessionStoreError> {
        Ok(self.lock().home_dc)
    }

    fn set_home_dc_id(
        &self,
        dc_id: i32,
    ) -> BoxFuture<'_, std::result::Result<(), SessionStoreError>> {
        Box::pin(async move {
            let changed = std::mem::replace(&mut self.lock().home_dc, dc_id) != dc_id;
            if changed {
                self.changed(Urgency::Now)?;
            }
            Ok(())
        })
    }

    fn dc_option(&self, dc_id: i32) -> std::result::Result<Option<DcOption>, SessionStoreError> {
        Ok(self.lock().dc_options.get(&dc_id).cloned())
    }

    fn set_dc_option(
        &self,
        dc_option: &DcOption,
    ) -> BoxFuture<'_, std::result::Result<(), SessionStoreError>> {
        let dc_option = dc_option.clone();
        Box::pin(async move {
            let urgency = {
                let mut data = self.lock();
                let (key, ipv4, ipv6) = (dc_option.auth_key, dc_option.ipv4, dc_option.ipv6);
                match data.dc_options.insert(dc_option.id, dc_option) {
                    Some(old) if old.auth_key == key && old.ipv4 == ipv4 && old.ipv6 == ipv6 => {
                        return Ok(());
                    }
                    Some(old) if old.auth_key == key => Urgency::Coalesced,
                    _ => Urgency::Now,
                }
            };
            self.changed(urgency)
        })
    }

    fn peer(
        &self,
        peer: GPeerId,
    ) -> BoxFuture<'_, std::result::Result<Option<PeerInfo>, SessionStoreError>> {
        Box::pin(async move { Ok(self.lock().peer_infos.get(&peer).cloned()) })
    }

    fn cache_peer(
        &self,
        peer: PeerInfo,
    ) -> BoxFuture<'_, std::result::Result<(), SessionStoreError>> {
        Box::pin(async move {
            let changed = {
                let mut data = self.lock();
                match data.peer_infos.get_mut(&peer.id()) {
                    Some(known) => {
                        let before = known.clone();
                        known.extend_info(&peer);
                        *known != before
                    }
                    None => {
                        data.peer_infos.insert(peer.id(), peer);
                        true
                    }
                }
            };
            if changed {
                self.changed(Urgency::Coalesced)?;
            }
            Ok(())
        })
    }

    fn updates_state(&self) -> BoxFuture<'_, std::result::Result<UpdatesState, SessionStoreError>> {
        Box::pin(async move { Ok(self.lock().updates_state.clone()) })
    }

    fn set_update_state(
        &self,
        update: UpdateState,
    ) -> BoxFuture<'_, std::result::Result<(), SessionStoreError>> {
        Box::pin(async move {
            {
                let mut data = self.lock();
                let state = &mut data.updates_state;
                match update {
                    UpdateState::All(all) => *state = all,
                    UpdateState::Primary { pts, date, seq } => {
                        state.pts = pts;
                        state.date = date;
                        state.seq = seq;
                    }
                    UpdateState::Secondary { qts } => state.qts = qts,
                    UpdateState::Channel { id, pts } => {
                        state.channels.retain(|c| c.id != id);
                        state.channels.push(ChannelState { id, pts });
                    }
                }
            }
            self.changed(Urgency::Coalesced)
        })
    }
}

// ---- session file format ----

const FILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct SessionFile {
    version: u32,
    home_dc: i32,
    dcs: Vec<DcEntry>,
    #[serde(default)]
    peers: Vec<PeerEntry>,
    #[serde(default)]
    updates: UpdatesEntry,
}

#[derive(Serialize, Deserialize)]
struct DcEntry {
    id: i32,
    ipv4: SocketAddrV4,
    ipv6: SocketAddrV6,
    /// Hex; absent until a key was made with this DC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth_key: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum PeerEntry {
    User {
        id: i64,
        #[serde(default)]
        hash: Option<i64>,
        #[serde(default)]
        bot: Option<bool>,
        #[serde(default)]
        is_self: Option<bool>,
    },
    Chat {
        id: i64,
    },
    Channel {
        id: i64,
        #[serde(default)]
        hash: Option<i64>,
        #[serde(default)]
        channel_kind: Option<u8>,
    },
}

#[derive(Serialize, Deserialize, Default)]
struct UpdatesEntry {
    pts: i32,
    qts: i32,
    date: i32,
    seq: i32,
    #[serde(default)]
    channels: Vec<(i64, i32)>,
}

impl SessionFile {
    fn from_data(d: &SessionData) -> Self {
        let mut dcs: Vec<DcEntry> = d
            .dc_options
            .values()
            .map(|o| DcEntry {
                id: o.id,
                ipv4: o.ipv4,
                ipv6: o.ipv6,
                auth_key: o.auth_key.map(|k| hex(&k)),
            })
            .collect();
        dcs.sort_by_key(|d| d.id);
        let mut peers: Vec<PeerEntry> = d
            .peer_infos
            .values()
            .map(|p| match p {
                PeerInfo::User {
                    id,
                    auth,
                    bot,
                    is_self,
                } => PeerEntry::User {
                    id: *id,
                    hash: auth.map(|a| a.hash()),
                    bot: *bot,
                    is_self: *is_self,
                },
                PeerInfo::Chat { id } => PeerEntry::Chat { id: *id },
                PeerInfo::Channel { id, auth, kind } => PeerEntry::Channel {
                    id: *id,
                    hash: auth.map(|a| a.hash()),
                    channel_kind: kind.map(|k| k as u8),
                },
            })
            .collect();
        peers.sort_by_key(|p| match p {
            PeerEntry::User { id, .. } | PeerEntry::Chat { id } | PeerEntry::Channel { id, .. } => {
                *id
            }
        });
        let u = &d.updates_state;
        SessionFile {
            version: FILE_VERSION,
            home_dc: d.home_dc,
            dcs,
            peers,
            updates: UpdatesEntry {
                pts: u.pts,
                qts: u.qts,
                date: u.date,
                seq: u.seq,
                channels: u.channels.iter().map(|c| (c.id, c.pts)).collect(),
            },
        }
    }

    fn into_data(self) -> Result<SessionData> {
        if self.version != FILE_VERSION {
            return Err(Error::Session(format!(
                "session file version {} is not supported (expected {FILE_VERSION})",
                self.version
            )));
        }
        let mut dc_options = HashMap::new();
        for dc in self.dcs {
            let auth_key = match dc.auth_key {
                Some(h) => Some(unhex_key(&h).ok_or_else(|| {
                    Error::Session(format!(
                        "the key of DC {} is not 512 hex digits; the file is damaged",
                        dc.id
                    ))
                })?),
                None => None,
            };
            dc_options.insert(
                dc.id,
                DcOption {
                    id: dc.id,
                    ipv4: dc.ipv4,
                    ipv6: dc.ipv6,
                    auth_key,
                },
            );
        }
        let mut peer_infos = HashMap::new();
        for p in self.peers {
            let info = match p {
                PeerEntry::User {
                    id,
                    hash,
                    bot,
                    is_self,
                } => PeerInfo::User {
                    id,
                    auth: hash.map(PeerAuth::from_hash),
                    bot,
                    is_self,
                },
                PeerEntry::Chat { id } => PeerInfo::Chat { id },
                PeerEntry::Channel {
                    id,
                    hash,
                    channel_kind,
                } => PeerInfo::Channel {
                    id,
                    auth: hash.map(PeerAuth::from_hash),
                    kind: channel_kind.and_then(channel_kind_from),
                },
            };
            peer_infos.insert(info.id(), info);
        }
        let u = self.updates;
        Ok(SessionData {
            home_dc: self.home_dc,
            dc_options,
            peer_infos,
            updates_state: UpdatesState {
                pts: u.pts,
                qts: u.qts,
                date: u.date,
                seq: u.seq,
                channels: u
                    .channels
                    .into_iter()
                    .map(|(id, pts)| ChannelState { id, pts })
                    .collect(),
            },
        })
    }
}

fn channel_kind_from(k: u8) -> Option<ChannelKind> {
    [
        ChannelKind::Broadcast,
        ChannelKind::Megagroup,
        ChannelKind::Gigagroup,
        ChannelKind::Community,
    ]
    .into_iter()
    .find(|c| *c as u8 == k)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex_key(s: &str) -> Option<[u8; 256]> {
    let s = s.as_bytes();
    if s.len() != 512 {
        return None;
    }
    let mut out = [0u8; 256];
    for (i, pair) in s.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

// ---- session strings ----

const STRING_VERSION: char = '1';

fn export_string(dc_id: i32, ip: IpAddr, port: u16, key: &[u8; 256]) -> String {
    let mut raw = Vec::with_capacity(1 + 16 + 2 + 256);
    // DC ids are 1..=5 (and test DCs below 256): they fit the format's one byte.
    raw.push(dc_id.clamp(0, 255) as u8);
    match ip {
        IpAddr::V4(v4) => raw.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => raw.extend_from_slice(&v6.octets()),
    }
    raw.extend_from_slice(&port.to_be_bytes());
    raw.extend_from_slice(key);
    let mut s = String::with_capacity(2 + raw.len() * 4 / 3);
    s.push(STRING_VERSION);
    s.push_str(&URL_SAFE.encode(raw));
    s
}

fn import_string(s: &str) -> Result<SessionData> {
    let s = s.trim();
    let body = s.strip_prefix(STRING_VERSION).ok_or_else(|| {
        Error::Session(
            "the session string does not start with '1' (Telethon StringSession format)".into(),
        )
    })?;
    let raw = URL_SAFE
        .decode(body)
        .or_else(|_| URL_SAFE_NO_PAD.decode(body.trim_end_matches('=')))
        .map_err(|e| Error::Session(format!("the session string is not base64: {e}")))?;
    let (ip, rest) = match raw.len() {
        263 => {
            let mut o = [0u8; 4];
            o.copy_from_slice(&raw[1..5]);
            (IpAddr::V4(Ipv4Addr::from(o)), &raw[5..])
        }
        275 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&raw[1..17]);
            (IpAddr::V6(Ipv6Addr::from(o)), &raw[17..])
        }
        n => {
            return Err(Error::Session(format!(
                "the session string holds {n} bytes; expected 263 (IPv4) or 275 (IPv6)"
            )))
        }
    };
    let dc_id = i32::from(raw[0]);
    let port = u16::from_be_bytes([rest[0], rest[1]]);
    let mut key = [0u8; 256];
    key.copy_from_slice(&rest[2..258]);

    let mut data = SessionData {
        home_dc: dc_id,
        ..Default::default()
    };
    let known = data.dc_options.get(&dc_id).cloned();
    let option = match (ip, known) {
        (IpAddr::V4(v4), known) => DcOption {
            id: dc_id,
            ipv4: SocketAddrV4::new(v4, port),
            ipv6: known
                .map(|k| k.ipv6)
                .unwrap_or_else(|| SocketAddrV6::new(v4.to_ipv6_mapped(), port, 0, 0)),
            auth_key: Some(key),
        },
        (IpAddr::V6(v6), Some(known)) => DcOption {
            id: dc_id,
            ipv4: known.ipv4,
            ipv6: SocketAddrV6::new(v6, port, 0, 0),
            auth_key: Some(key),
        },
        (IpAddr::V6(_), None) => {
            return Err(Error::Session(format!(
                "the session string names DC {dc_id} by IPv6 only, and DC {dc_id} is not one this client knows"
            )))
        }
    };
    data.dc_options.insert(dc_id, option);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; 256] {
        let mut k = [0u8; 256];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        k
    }

    #[test]
    fn telethon_string_round_trips_and_matches_the_format() {
        let k = key();
        let s = export_string(2, IpAddr::V4(Ipv4Addr::new(149, 154, 167, 51)), 443, &k);
        assert!(s.starts_with('1'));
        // Telethon: struct.pack('>B4sH256s') -> 263 bytes -> 352 base64 characters (padded).
        assert_eq!(s.len(), 1 + 352);
        let raw = URL_SAFE.decode(&s[1..]).unwrap();
        assert_eq!(&raw[..7], &[2, 149, 154, 167, 51, 0x01, 0xbb]);

        let data = import_string(&s).unwrap();
        assert_eq!(data.home_dc, 2);
        let dc = &data.dc_options[&2];
        assert_eq!(dc.auth_key, Some(k));
        assert_eq!(
            dc.ipv4,
            "149.154.167.51:443".parse::<SocketAddrV4>().unwrap()
        );
        let back = StoredSession::in_memory(data).to_string_session().unwrap();
        assert_eq!(back.expose(), s);
    }

    #[test]
    fn bad_strings_are_refused_with_a_reason() {
        for (s, needle) in [
            ("2abc", "start with '1'"),
            ("1!!!", "not base64"),
            ("1AAAA", "expected 263"),
        ] {
            let Err(e) = import_string(s) else {
                panic!("{s:?} was accepted")
            };
            let e = e.to_string();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn file_session_is_private_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.session");
        let s = StoredSession::open(&path).unwrap();
        assert!(!path.exists(), "nothing is written before the first change");
        let mut dc = s.dc_option(4).unwrap().unwrap();
        dc.auth_key = Some(key());
        s.set_dc_option(&dc).await.unwrap();
        s.set_home_dc_id(4).await.unwrap();
        s.cache_peer(PeerInfo::Channel {
            id: 77,
            auth: Some(PeerAuth::from_hash(-5)),
            kind: Some(ChannelKind::Megagroup),
        })
        .await
        .unwrap();
        // The peer is a coalesced change: in the file once flushed.
        s.flush().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = StoredSession::open(&path).unwrap();
        assert_eq!(again.home_dc_id().unwrap(), 4);
        assert_eq!(again.dc_option(4).unwrap().unwrap().auth_key, Some(key()));
        let ch = again.peer(GPeerId::channel(77).unwrap()).await.unwrap();
        assert_eq!(ch.and_then(|c| c.auth()).map(|a| a.hash()), Some(-5));
        assert_eq!(
            again.to_string_session().unwrap(),
            s.to_string_session().unwrap()
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_session_file_is_tightened_on_open() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.session");
        let file = SessionFile::from_data(&SessionData::default());
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        StoredSession::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    fn pts_in_file(path: &Path) -> i32 {
        let file: SessionFile = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        file.updates.pts
    }

    fn primary(pts: i32) -> UpdateState {
        UpdateState::Primary {
            pts,
            date: 1_700_000_000,
            seq: 0,
        }
    }

    async fn new_key(s: &StoredSession, dc: i32, fill: u8) {
        let mut o = s.dc_option(dc).unwrap().unwrap();
        o.auth_key = Some([fill; 256]);
        s.set_dc_option(&o).await.unwrap();
    }

    // Time is tokio's paused clock: it moves only when the test advances it (or sleeps with
    // nothing else to do), so the write counts do not depend on how fast the machine is.

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_updates_is_one_write_now_and_one_at_the_end_of_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("burst.session");
        let s = StoredSession::open(&path).unwrap();
        for pts in 1..=1000 {
            s.set_update_state(primary(pts)).await.unwrap();
        }
        assert_eq!(s.writes(), 1, "the first change is written, the rest wait");
        assert_eq!(pts_in_file(&path), 1);
        tokio::time::sleep(WRITE_INTERVAL + Duration::from_millis(10)).await;
        assert_eq!(s.writes(), 2);
        assert_eq!(
            pts_in_file(&path),
            1000,
            "the last state is what is written"
        );
        tokio::time::sleep(10 * WRITE_INTERVAL).await;
        assert_eq!(s.writes(), 2, "nothing changed, nothing written");

        // Updates every 10 ms for 10 s: about one write a second, not a thousand.
        for pts in 1001..=2000 {
            s.set_update_state(primary(pts)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(2 * WRITE_INTERVAL).await;
        let writes = s.writes() - 2;
        assert!((9..=12).contains(&writes), "{writes} writes in 10 s");
        assert_eq!(pts_in_file(&path), 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_auth_key_or_home_dc_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.session");
        let s = StoredSession::open(&path).unwrap();
        s.set_update_state(primary(1)).await.unwrap();
        s.set_update_state(primary(2)).await.unwrap();
        assert_eq!(s.writes(), 1, "the second update waits for the interval");

        new_key(&s, 4, 9).await;
        assert_eq!(s.writes(), 2, "a new key does not wait");
        let on_disk = StoredSession::open(&path).unwrap();
        assert_eq!(
            on_disk.dc_option(4).unwrap().unwrap().auth_key,
            Some([9; 256])
        );
        assert_eq!(pts_in_file(&path), 2, "and takes the pending changes along");
        drop(on_disk);

        s.set_home_dc_id(4).await.unwrap();
        assert_eq!(s.writes(), 3, "a new home DC does not wait");
        assert_eq!(StoredSession::open(&path).unwrap().home_dc_id().unwrap(), 4);

        // The same key or DC again is no change at all.
        new_key(&s, 4, 9).await;
        s.set_home_dc_id(4).await.unwrap();
        tokio::time::sleep(2 * WRITE_INTERVAL).await;
        assert_eq!(s.writes(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn pending_changes_are_written_on_flush_and_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drop.session");
        let s = StoredSession::open(&path).unwrap();
        s.set_update_state(primary(1)).await.unwrap();
        s.set_update_state(primary(2)).await.unwrap();
        assert_eq!(pts_in_file(&path), 1);
        s.flush().unwrap();
        assert_eq!((s.writes(), pts_in_file(&path)), (2, 2));
        s.flush().unwrap();
        assert_eq!(s.writes(), 2, "a flush with nothing pending writes nothing");

        s.set_update_state(primary(3)).await.unwrap();
        assert_eq!(pts_in_file(&path), 2);
        drop(s);
        assert_eq!(
            pts_in_file(&path),
            3,
            "dropping the store wrote the pending change"
        );
    }

    #[cfg(unix)]
    #[tokio::test(start_paused = true)]
    async fn a_crash_mid_write_leaves_the_old_file_and_the_next_write_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crash.session");
        let s = StoredSession::open(&path).unwrap();
        new_key(&s, 2, 7).await;
        s.set_home_dc_id(2).await.unwrap();
        let old = std::fs::read(&path).unwrap();
        drop(s);

        // A crash after the temporary file was half written: it is left behind, readable by
        // others (as if made by an older version), and the session file is untouched.
        let tmp = dir.path().join("crash.session.tmp");
        std::fs::write(&tmp, &old[..old.len() / 2]).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();

        let s = StoredSession::open(&path).unwrap();
        assert_eq!(s.home_dc_id().unwrap(), 2);
        assert_eq!(s.dc_option(2).unwrap().unwrap().auth_key, Some([7; 256]));

        new_key(&s, 2, 8).await;
        assert!(
            !tmp.exists(),
            "the stale temporary file was replaced and renamed"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = StoredSession::open(&path).unwrap();
        assert_eq!(
            again.dc_option(2).unwrap().unwrap().auth_key,
            Some([8; 256])
        );
    }
}
