//! A smoke test against real Telegram. It runs only when a real account and a target chat are
//! in the environment (Telegram is unreachable from CI):
//!
//! ```sh
//! API_ID=… API_HASH=… SESSION=… GROUPCALL_TEST_CHAT=@somegroup cargo test -p groupcall-engine --test telegram_smoke -- --nocapture
//! ```
//!
//! It joins the chat's running video chat as a listener, waits to be connected, listens for a
//! few seconds and leaves.

use std::sync::Arc;
use std::time::Duration;

use groupcall_engine::signaling::telegram::{TelegramConfig, TelegramSignaling};
use groupcall_engine::{CallConfig, CallEvent, ConnectionState, Engine};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_a_real_video_chat_when_an_account_is_configured() {
    let chat = std::env::var("GROUPCALL_TEST_CHAT").ok();
    let (Some(chat), Ok(config)) = (chat, TelegramConfig::from_env()) else {
        println!(
            "skipped: set API_ID, API_HASH, SESSION and GROUPCALL_TEST_CHAT to run the real-account smoke test"
        );
        return;
    };
    let telegram = TelegramSignaling::connect(config)
        .await
        .expect("the session connects");
    let target = telegram.resolve(&chat).await.expect("the chat resolves");
    let engine = Engine::new(Arc::new(telegram));
    let mut call = engine
        .join(target.call, CallConfig::default())
        .await
        .expect("the join is accepted");
    let connected = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = call.next_event().await {
            println!("{e:?}");
            if matches!(e, CallEvent::State(ConnectionState::Connected)) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(connected, Ok(true), "connected to Telegram's server");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let summary = call.leave().await.expect("leaves");
    println!("received {} packets", summary.stats.packets_received);
}
