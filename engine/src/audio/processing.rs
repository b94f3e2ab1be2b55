//! Voice processing for a microphone: echo cancellation, noise suppression and automatic gain
//! control, as a person talking through a speaker needs them.
//!
//! Where it sits: what the call plays to the speaker goes through [`VoiceProcessor::render`]
//! (the far end, the echo's reference); what the microphone captured goes through
//! [`VoiceProcessor::capture`] before it is encoded, with the echo of the far end taken out.
//! Both take 20 ms frames of 48 kHz mono, the engine's frame; the processor works in its own
//! 10 ms steps inside.
//!
//! The trait keeps the engine free of one implementation; [`WebRtcProcessing`] is WebRTC's
//! audio processing (AEC3, its noise suppressor and AGC2) as ported to Rust by `sonora`.

use sonora::config::{
    EchoCanceller, GainController2, MaxProcessingRate, NoiseSuppression, Pipeline,
};
use sonora::{AudioProcessing, Config, StreamConfig};

use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::error::Result;

/// Samples per processing step (10 ms at 48 kHz).
const STEP: usize = FRAME_SAMPLES / 2;

/// What the microphone path does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessingConfig {
    /// Take the speaker's sound (what the call plays) out of the microphone's.
    pub echo_cancellation: bool,
    /// Suppress steady background noise (fans, hum, hiss).
    pub noise_suppression: bool,
    /// Bring the voice to a steady level, whatever the distance to the microphone.
    pub gain_control: bool,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            echo_cancellation: true,
            noise_suppression: true,
            gain_control: true,
        }
    }
}

impl ProcessingConfig {
    /// Nothing at all: the microphone as it is.
    pub fn off() -> Self {
        ProcessingConfig {
            echo_cancellation: false,
            noise_suppression: false,
            gain_control: false,
        }
    }

    pub fn is_off(&self) -> bool {
        *self == Self::off()
    }
}

/// A microphone processor: fed the far end, it cleans the near end.
pub trait VoiceProcessor: Send {
    /// A frame that is being played to the speaker (20 ms, 48 kHz mono).
    fn render(&mut self, frame: &[i16]);
    /// A frame the microphone captured (20 ms, 48 kHz mono), processed in place.
    fn capture(&mut self, frame: &mut [i16]);
    /// The echo return loss enhancement the canceller reports now, in dB, if it has one.
    fn erle_db(&self) -> Option<f64> {
        None
    }
}

/// WebRTC's audio processing (via `sonora`).
pub struct WebRtcProcessing {
    apm: AudioProcessing,
    out: [i16; STEP],
}

impl WebRtcProcessing {
    pub fn new(config: ProcessingConfig) -> Result<Self> {
        let stream = StreamConfig::new(SAMPLE_RATE, 1);
        let apm_config = Config {
            // No high-pass filter here: Opus in its voice mode filters the low end itself, and
            // this one's phase shift alone took a voiced talker's correlation with what was
            // said from 1.0 to 0.88.
            high_pass_filter: None,
            echo_canceller: config.echo_cancellation.then(|| EchoCanceller {
                enforce_high_pass_filtering: false,
                ..EchoCanceller::default()
            }),
            noise_suppression: config.noise_suppression.then(NoiseSuppression::default),
            gain_controller2: config.gain_control.then(GainController2::default),
            // At the default 32 kHz the band above 16 kHz is split off and merged back in a
            // way that scrambles it (a white-noise talker came out correlated 0.37 with what
            // went in); at 48 kHz the whole band is processed and comes out whole (0.94).
            pipeline: Pipeline {
                maximum_internal_processing_rate: MaxProcessingRate::Rate48kHz,
                ..Pipeline::default()
            },
            ..Config::default()
        };
        let apm = AudioProcessing::builder()
            .config(apm_config)
            .capture_config(stream)
            .render_config(stream)
            .build();
        Ok(WebRtcProcessing {
            apm,
            out: [0; STEP],
        })
    }
}

impl VoiceProcessor for WebRtcProcessing {
    fn render(&mut self, frame: &[i16]) {
        for step in frame.chunks_exact(STEP) {
            // The render output is not used: the speaker plays the frame as it is.
            if let Err(e) = self.apm.process_render_i16(step, &mut self.out) {
                tracing::debug!("echo reference refused: {e:?}");
            }
        }
    }

    fn capture(&mut self, frame: &mut [i16]) {
        for step in frame.chunks_exact_mut(STEP) {
            match self.apm.process_capture_i16(step, &mut self.out) {
                Ok(()) => step.copy_from_slice(&self.out),
                // Unprocessed is better than nothing: the frame goes out as captured.
                Err(e) => tracing::debug!("microphone frame not processed: {e:?}"),
            }
        }
    }

    fn erle_db(&self) -> Option<f64> {
        self.apm.statistics().echo_return_loss_enhancement
    }
}

/// A processor for `config`, or `None` when it asks for nothing.
pub fn processor(config: ProcessingConfig) -> Result<Option<Box<dyn VoiceProcessor>>> {
    if config.is_off() {
        return Ok(None);
    }
    Ok(Some(Box::new(WebRtcProcessing::new(config)?)))
}
