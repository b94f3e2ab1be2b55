//! Interactive user login: phone number, login code, 2FA password.
//!
//! grammers' login calls `unwrap`/`panic!` on a few unexpected server replies. Each call runs in
//! its own task here, so such a reply becomes a login error instead of taking the process down.

use std::future::Future;

use async_trait::async_trait;
use grammers_client::sender::InvocationError;
use grammers_client::{Client, SignInError};

use super::map_invocation;
use super::session::Secret;
use crate::error::{Error, Result};

/// How many times a wrong phone number, code or password is asked for again.
const TRIES: u32 = 3;

/// Asks the person logging in for what Telegram needs. Implement it for a GUI or a bot's admin
/// chat; [`StdinPrompt`] asks on the terminal.
#[async_trait]
pub trait LoginPrompt: Send {
    /// The account's phone number in international format (`+4915…`).
    async fn phone(&mut self) -> Result<String>;
    /// The login code Telegram just sent (in the app, or by SMS).
    async fn code(&mut self) -> Result<String>;
    /// The account's 2FA password. `hint` is the hint the user set, if any.
    async fn password(&mut self, hint: Option<&str>) -> Result<Secret>;
    /// Says why the previous answer was refused, before asking again.
    fn refused(&mut self, why: &str) {
        let _ = why;
    }
}

/// Asks on stderr and reads answers from stdin. The password is read like any other line
/// (it is visible while typed); use a custom [`LoginPrompt`] where that matters.
#[derive(Debug, Default)]
pub struct StdinPrompt;

async fn ask(question: &'static str) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        eprint!("{question}");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map(|_| line.trim().to_owned())
    })
    .await
    .map_err(|e| Error::Login {
        step: "prompt",
        message: e.to_string(),
    })?
    .map_err(|e| Error::Login {
        step: "prompt",
        message: format!("cannot read the terminal: {e}"),
    })
}

#[async_trait]
impl LoginPrompt for StdinPrompt {
    async fn phone(&mut self) -> Result<String> {
        ask("phone number (international format, e.g. +4915112345678): ").await
    }
    async fn code(&mut self) -> Result<String> {
        ask("login code: ").await
    }
    async fn password(&mut self, hint: Option<&str>) -> Result<Secret> {
        if let Some(h) = hint {
            eprintln!("password hint: {h}");
        }
        ask("2FA password: ").await.map(Secret::new)
    }
    fn refused(&mut self, why: &str) {
        eprintln!("{why}");
    }
}

/// Runs one grammers call in its own task, turning a panic into a login error.
async fn guarded<T: Send + 'static>(
    step: &'static str,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T> {
    tokio::spawn(fut).await.map_err(|e| Error::Login {
        step,
        message: if e.is_panic() {
            "the Telegram client library failed on an unexpected server reply; try again".into()
        } else {
            "the login task was cancelled".into()
        },
    })
}

fn login_error(step: &'static str, method: &'static str, e: InvocationError) -> Error {
    Error::Login {
        step,
        message: map_invocation(method, e).to_string(),
    }
}

/// Logs `client` in as a user. Bot accounts are refused later, when the account is checked.
pub(crate) async fn interactive(
    client: &Client,
    api_hash: &Secret,
    prompt: &mut dyn LoginPrompt,
) -> Result<()> {
    // Phone number -> login token.
    let mut token = None;
    for _ in 0..TRIES {
        let phone = prompt.phone().await?;
        let (c, hash) = (client.clone(), api_hash.expose().to_owned());
        match guarded(
            "phone",
            async move { c.request_login_code(&phone, &hash).await },
        )
        .await?
        {
            Ok(t) => {
                token = Some(t);
                break;
            }
            Err(InvocationError::Rpc(e)) if e.is("PHONE_NUMBER_*") => {
                prompt.refused(&format!(
                    "Telegram refused the phone number ({}); use the international format with +",
                    e.name
                ));
            }
            Err(e) => return Err(login_error("phone", "auth.sendCode", e)),
        }
    }
    let mut token = token.ok_or_else(|| Error::Login {
        step: "phone",
        message: format!("no valid phone number after {TRIES} tries"),
    })?;

    // Login code -> logged in, or a 2FA password token.
    let mut password_token = None;
    let mut signed_in = false;
    for _ in 0..TRIES {
        let code = prompt.code().await?;
        let c = client.clone();
        let (t, result) = guarded("code", async move {
            let r = c.sign_in(&token, &code).await;
            (token, r)
        })
        .await?;
        token = t;
        match result {
            Ok(_) => {
                signed_in = true;
                break;
            }
            Err(SignInError::PasswordRequired(pt)) => {
                password_token = Some(pt);
                break;
            }
            Err(SignInError::InvalidCode) => prompt.refused("wrong or expired code; try again"),
            Err(SignInError::SignUpRequired) => {
                return Err(Error::Login {
                    step: "code",
                    message: "this phone number has no Telegram account; sign up in an official Telegram app first".into(),
                })
            }
            Err(SignInError::InvalidPassword(_)) | Err(SignInError::Other(_)) => {
                return Err(Error::Login {
                    step: "code",
                    message: "Telegram refused the sign-in; request a new code and try again"
                        .into(),
                })
            }
        }
    }
    if signed_in {
        return Ok(());
    }
    let mut pt = password_token.ok_or_else(|| Error::Login {
        step: "code",
        message: format!("no valid code after {TRIES} tries; request a new one"),
    })?;

    // 2FA password.
    for _ in 0..TRIES {
        let password = prompt.password(pt.hint()).await?;
        let c = client.clone();
        match guarded("password", async move {
            c.check_password(pt, password.expose().as_bytes()).await
        })
        .await?
        {
            Ok(_) => return Ok(()),
            Err(SignInError::InvalidPassword(next)) => {
                prompt.refused("wrong password; try again");
                pt = next;
            }
            Err(SignInError::Other(e)) => {
                return Err(login_error("password", "auth.checkPassword", e))
            }
            Err(_) => {
                return Err(Error::Login {
                    step: "password",
                    message: "Telegram refused the password check; log in again".into(),
                })
            }
        }
    }
    Err(Error::Login {
        step: "password",
        message: format!("wrong password {TRIES} times"),
    })
}
