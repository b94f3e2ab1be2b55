//! `groupcall call …`: the methods around joining (create, start, invite, join-as, discard).

use groupcall_engine::signaling::{CreateCall, PeerId};

use crate::backend::{parse_peer, BackendArgs};

#[derive(clap::Subcommand, Debug)]
pub enum CallCommand {
    /// Start a video chat in a chat (Telegram), or a call on the local server.
    Create {
        /// The chat (Telegram: @username, link or id); omitted with --local.
        chat: Option<String>,
        #[command(flatten)]
        backend: BackendArgs,
        #[arg(long)]
        title: Option<String>,
        /// Schedule it for this Unix time instead of starting now.
        #[arg(long, value_name = "UNIX_TIME")]
        schedule: Option<i32>,
        /// An RTMP livestream instead of a voice chat.
        #[arg(long)]
        rtmp: bool,
    },
    /// Start a scheduled call now.
    Start {
        call: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Invite users to the call.
    Invite {
        call: String,
        /// User ids.
        #[arg(required = true)]
        users: Vec<String>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// The peers this account may join as.
    JoinAs {
        call: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// End the call for everyone.
    Discard {
        call: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

pub async fn run(cmd: CallCommand) -> Result<(), String> {
    match cmd {
        CallCommand::Create {
            chat,
            backend,
            title,
            schedule,
            rtmp,
        } => {
            let b = backend.connect().await?;
            let chat = match (&backend.local, chat) {
                (Some(_), _) => None,
                (None, Some(c)) => {
                    let t = b.resolve(&c).await;
                    match t {
                        Ok(t) => t.chat,
                        // A chat without a call yet does not resolve to a call: take its id.
                        Err(_) => Some(parse_peer(&c)?),
                    }
                }
                (None, None) => return Err("name the chat to start the video chat in".into()),
            };
            let info = b
                .signaling()
                .create_call(
                    chat,
                    &CreateCall {
                        title,
                        schedule_date: schedule,
                        rtmp_stream: rtmp,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", info.id.id);
            eprintln!(
                "created call {} (access hash {})",
                info.id.id, info.id.access_hash
            );
        }
        CallCommand::Start { call, backend } => {
            let t = backend.connect().await?.resolve(&call).await?;
            t.signaling
                .start_scheduled(&t.call)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("started {call}");
        }
        CallCommand::Invite {
            call,
            users,
            backend,
        } => {
            let users: Vec<PeerId> = users
                .iter()
                .map(|u| parse_peer(u))
                .collect::<Result<_, _>>()?;
            let t = backend.connect().await?.resolve(&call).await?;
            t.signaling
                .invite(&t.call, &users)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("invited {} user(s)", users.len());
        }
        CallCommand::JoinAs { call, backend } => {
            let t = backend.connect().await?.resolve(&call).await?;
            for p in t
                .signaling
                .join_as_candidates(&t.call, t.chat)
                .await
                .map_err(|e| e.to_string())?
            {
                println!("{}\t{p}", p.dialog_id());
            }
        }
        CallCommand::Discard { call, backend } => {
            let t = backend.connect().await?.resolve(&call).await?;
            t.signaling
                .discard(&t.call)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("ended {call}");
        }
    }
    Ok(())
}
