//! `groupcall devices`: the microphones and speakers the audio systems offer.

#[cfg(feature = "devices")]
pub fn run() -> Result<(), String> {
    let list = groupcall_engine::audio::device::devices().map_err(|e| e.to_string())?;
    if list.is_empty() {
        println!(
            "no audio devices: no sound card, and no sound server (PulseAudio, PipeWire) answered"
        );
        return Ok(());
    }
    for (title, inputs) in [
        ("inputs (--mic NAME)", true),
        ("outputs (--speaker NAME)", false),
    ] {
        println!("{title}:");
        for d in list
            .iter()
            .filter(|d| if inputs { d.input } else { d.output })
        {
            let format = match (d.rate, d.channels, &d.sample_format) {
                (Some(r), Some(c), Some(f)) => format!("{r} Hz, {c} ch, {f}"),
                _ => "format unknown".into(),
            };
            println!(
                "  {} {:<32} {:<10} {}  ({format})",
                if d.is_default { "*" } else { " " },
                d.id,
                d.host,
                d.name
            );
        }
    }
    println!("* marks the default");
    Ok(())
}

#[cfg(not(feature = "devices"))]
pub fn run() -> Result<(), String> {
    Err("this groupcall was built without microphone and speaker support (the cargo feature `devices`)".into())
}
