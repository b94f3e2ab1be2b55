//! Requests a call makes off its loop (roster pages, `checkGroupCall`): each runs on a task of
//! its own and answers through a bounded channel, so a slow server never stalls the media.

use std::sync::Arc;

use groupcall_signaling::{CallRef, Participant, ParticipantQuery, Signaling};
use tokio::sync::mpsc;

/// Pages of 100 participants read for one full roster (the roster keeps at most
/// `machine::MAX_ROSTER`).
const MAX_ROSTER_PAGES: usize = 200;

/// Answers of requests made off the loop.
pub(crate) enum Reply {
    Roster {
        participants: Vec<Participant>,
        version: Option<i32>,
        complete: bool,
    },
    RosterFailed,
    Checked {
        source: u32,
        present: bool,
    },
}

/// Fetches participants off the loop. An unfiltered query fetches every page (up to
/// [`MAX_ROSTER_PAGES`]), so that the machine can tell who is gone.
pub(crate) fn fetch_roster(
    signaling: Arc<dyn Signaling>,
    call: CallRef,
    tx: mpsc::Sender<Reply>,
    mut query: ParticipantQuery,
) {
    let full = query.sources.is_empty() && query.peers.is_empty();
    tokio::spawn(async move {
        let mut participants = Vec::new();
        let mut version = None;
        for _ in 0..MAX_ROSTER_PAGES {
            match signaling.participants(&call, &query).await {
                Ok(page) => {
                    version = Some(page.version);
                    participants.extend(page.participants);
                    match page.next_offset.filter(|o| full && !o.is_empty()) {
                        Some(offset) => query.offset = offset,
                        None => {
                            let complete = full;
                            let _ = tx
                                .send(Reply::Roster {
                                    participants,
                                    version,
                                    complete,
                                })
                                .await;
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("participant lookup failed: {e}");
                    if full {
                        let _ = tx.send(Reply::RosterFailed).await;
                    }
                    return;
                }
            }
        }
        // More pages than the roster may hold: what was read still names people.
        let _ = tx
            .send(Reply::Roster {
                participants,
                version,
                complete: false,
            })
            .await;
        if full {
            let _ = tx.send(Reply::RosterFailed).await;
        }
    });
}

/// Asks the server, off the loop, whether it still counts `source` as joined.
pub(crate) fn check_membership(
    signaling: Arc<dyn Signaling>,
    call: CallRef,
    tx: mpsc::Sender<Reply>,
    source: u32,
) {
    tokio::spawn(async move {
        match signaling.check(&call, &[source]).await {
            Ok(present) => {
                let present = present.contains(&source);
                let _ = tx.send(Reply::Checked { source, present }).await;
            }
            Err(e) => tracing::debug!("checkGroupCall failed: {e}"),
        }
    });
}
