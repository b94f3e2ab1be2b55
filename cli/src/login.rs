//! `groupcall login`: an interactive Telegram login that writes the session file (mode 0600).

use std::path::PathBuf;

use groupcall_engine::signaling::telegram::{
    SessionSource, StdinPrompt, TelegramConfig, TelegramSignaling,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The session file to create or reuse.
    #[arg(long, default_value = "groupcall.session")]
    pub session: PathBuf,
    /// Also print the session as a string, for the SESSION variable of bots.
    #[arg(long)]
    pub export_session: bool,
}

pub async fn run(args: Args) -> Result<(), String> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("{name} is not set: get API_ID and API_HASH at https://my.telegram.org and export them"))
    };
    let api_id = var("API_ID")?;
    let api_id: i32 = api_id
        .trim()
        .parse()
        .map_err(|_| format!("API_ID must be a number, not {api_id:?}"))?;
    let config = TelegramConfig {
        api_id,
        api_hash: groupcall_engine::signaling::telegram::Secret::new(var("API_HASH")?),
        session: SessionSource::File(args.session.clone()),
        retry: Default::default(),
    };
    let mut prompt = StdinPrompt;
    let t = TelegramSignaling::login(config, &mut prompt)
        .await
        .map_err(|e| e.to_string())?;
    match t.me() {
        Some(me) => eprintln!(
            "logged in as {me}; session saved to {}",
            args.session.display()
        ),
        None => eprintln!("logged in; session saved to {}", args.session.display()),
    }
    if args.export_session {
        let s = t.export_session_string().map_err(|e| e.to_string())?;
        println!("{}", s.expose());
    }
    Ok(())
}
