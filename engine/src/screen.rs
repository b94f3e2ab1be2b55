//! A screen share: the presentation connection (docs/protocol.md §1.4). It is a second,
//! send-only connection of a joined participant, with its own ICE credentials, certificate and
//! sources (two simulcast layers), made by `phone.joinGroupCallPresentation`, and its own
//! encoder thread. The call's driver runs it beside the main connection on the same task; the
//! main connection's rejoin ends it at the server, so the driver joins it again after one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use groupcall_media::{Event, JoinPayload, LocalIdentity, State, VideoPublish};
use groupcall_signaling::{CallRef, Joined, Signaling};
use tokio::sync::oneshot;

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::video::constraints::{layers_for_height, sender_ideal_height};
use crate::video::publish::{Control, Published, Publisher, VideoKind};
use crate::video::source::VideoSource;

pub(crate) type ScreenJoin = Pin<Box<dyn Future<Output = Result<(Joined, LocalIdentity)>> + Send>>;

/// Sends a presentation join with a fresh identity declaring a screen's two layers.
pub(crate) fn join(signaling: Arc<dyn Signaling>, call: CallRef) -> ScreenJoin {
    Box::pin(async move {
        let identity = LocalIdentity::generate()?;
        let payload = JoinPayload::new(&identity, VideoPublish::Screen);
        let joined = signaling.join_presentation(&call, &payload).await?;
        Ok((joined, identity))
    })
}

/// What decides how many simulcast layers a publisher encodes: the receivers'
/// `SenderVideoConstraints` and the bandwidth estimate, whichever allows fewer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layers {
    pub wanted: usize,
    pub estimate: usize,
}

impl Layers {
    pub(crate) fn all(kind: VideoKind) -> Self {
        Layers {
            wanted: kind.layers(),
            estimate: kind.layers(),
        }
    }

    pub(crate) fn active(&self) -> usize {
        self.wanted.min(self.estimate)
    }
}

/// One screen share, from the request to its end.
pub(crate) struct Screen {
    pub publisher: Publisher,
    pub layers: Layers,
    /// `None` while the presentation join is in flight (or again during a rejoin).
    pub connection: Option<Connection>,
    /// Answered once the share is joined (or failed to be).
    pub reply: Option<oneshot::Sender<Result<()>>>,
}

impl Screen {
    /// Starts the encoder thread; `reply` is answered when the share is joined or has failed.
    pub(crate) fn start(
        source: VideoSource,
        reply: oneshot::Sender<Result<()>>,
    ) -> std::result::Result<Self, (Error, oneshot::Sender<Result<()>>)> {
        match Publisher::start(source, VideoKind::Screen, rand::random()) {
            Ok(publisher) => Ok(Screen {
                publisher,
                layers: Layers::all(VideoKind::Screen),
                connection: None,
                reply: Some(reply),
            }),
            Err(e) => Err((e, reply)),
        }
    }

    pub(crate) fn answer(&mut self, r: Result<()>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(r);
        }
    }

    /// Sends an encoded frame on the presentation connection, once it is up.
    pub(crate) fn on_frame(&mut self, now: Instant, frame: Published) {
        let Published::Frame {
            layer,
            rtp_timestamp,
            keyframe,
            data,
        } = frame
        else {
            return;
        };
        if let Some(c) = self.connection.as_mut() {
            if let (Some(v), true) = (c.video.as_mut(), c.transport.is_connected()) {
                if let Err(e) =
                    v.send_frame(now, &mut c.transport, layer, rtp_timestamp, keyframe, &data)
                {
                    tracing::debug!("screen frame not sent: {e}");
                }
            }
        }
    }

    /// Handles what the presentation transport reports; an error when it failed for good.
    pub(crate) fn drain(&mut self, now: Instant) -> Option<Error> {
        let c = self.connection.as_mut()?;
        while let Some(event) = c.transport.poll_event() {
            match event {
                Event::Connected { .. } => {
                    tracing::info!("screen share connected");
                    if let Some(v) = &c.video {
                        self.publisher.send(Control::Codec(v.codec()));
                        self.layers.estimate = v.estimate_layers();
                        self.publisher.send(Control::Layers(self.layers.active()));
                    }
                    self.publisher.send(Control::Keyframe);
                }
                Event::Rtcp(packets) => {
                    if let Some(v) = c.video.as_mut() {
                        let fb = v.on_rtcp(now, &mut c.transport, &packets);
                        if fb.keyframe {
                            self.publisher.send(Control::Keyframe);
                        }
                        if let Some(n) = fb.layers {
                            self.layers.estimate = n;
                            self.publisher.send(Control::Layers(self.layers.active()));
                        }
                    }
                }
                Event::DataChannelMessage(text) => {
                    if let Some(h) = sender_ideal_height(&text) {
                        self.layers.wanted = layers_for_height(h, VideoKind::Screen.layers());
                        self.publisher.send(Control::Layers(self.layers.active()));
                    }
                }
                Event::StateChanged(State::Failed(cause)) => {
                    return Some(Error::CallEnded(format!(
                        "the screen share's connection failed: {cause}"
                    )));
                }
                _ => {}
            }
        }
        None
    }

    /// Sends what the presentation transport queued.
    pub(crate) async fn flush(&mut self) {
        if let Some(c) = self.connection.as_mut() {
            let transport = &mut c.transport;
            c.socket
                .send_queued("screen", || transport.poll_transmit())
                .await;
        }
    }

    /// Closes the presentation transport politely.
    pub(crate) fn close(&mut self, now: Instant) {
        if let Some(mut c) = self.connection.take() {
            c.transport.close(now);
            while let Some(t) = c.transport.poll_transmit() {
                let _ = c.socket.try_send_to(&t.contents, t.destination);
            }
        }
    }
}
