//! Screen sharing: capturing this user's screen ([`ScreenShare`]) and the big view a shared
//! screen is shown in ([`show`]: `#room-screen` in a classroom, `#hallway-screen` near
//! people). Where the captured track is sent is up to `peers` (the hallway) and `classroom`
//! (rooms); this module holds no connection.
//!
//! A screen comes from `getDisplayMedia`. Headless test browsers have no one to pick a
//! screen, so the page option `?fakescreen=1` makes the screen a canvas with a moving
//! rectangle on it, captured at 10 frames a second. Like `?relay=1`, it is honoured only
//! when `Welcome.dev` says the server runs in `--dev` mode.

use super::dom;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    CanvasRenderingContext2d, DisplayMediaStreamConstraints, HtmlCanvasElement, HtmlElement,
    HtmlVideoElement, MediaStream, MediaStreamTrack,
};

/// The size of the fake screen, pixels.
const FAKE_SIZE: (u32, u32) = (640, 360);

/// A screen being captured. Dropping it stops the capture.
pub struct ScreenShare {
    pub track: MediaStreamTrack,
    /// The drawing loop of a fake screen.
    _painter: Option<Painter>,
    on_ended: Option<Closure<dyn FnMut()>>,
}

impl ScreenShare {
    /// Asks the user for a screen to share (or draws one, with `fake`). Start it from a
    /// click: browsers capture a screen only in response to a user's gesture.
    pub async fn capture(fake: bool) -> Result<ScreenShare, JsValue> {
        if fake {
            return fake_screen();
        }
        let devices = dom::window()?.navigator().media_devices()?;
        let constraints = DisplayMediaStreamConstraints::new();
        constraints.set_video_bool(true);
        let promise = devices.get_display_media_with_constraints(&constraints)?;
        let stream: MediaStream = JsFuture::from(promise).await?.dyn_into()?;
        let track = stream.get_video_tracks().get(0).dyn_into()?;
        Ok(ScreenShare {
            track,
            _painter: None,
            on_ended: None,
        })
    }

    /// Calls `f` when the capture ends without us: the user stopped sharing from the
    /// browser's own controls.
    pub fn on_ended(&mut self, f: Closure<dyn FnMut()>) {
        self.track.set_onended(Some(f.as_ref().unchecked_ref()));
        self.on_ended = Some(f);
    }
}

impl Drop for ScreenShare {
    fn drop(&mut self) {
        self.track.set_onended(None);
        self.track.stop();
    }
}

/// Redraws a fake screen on a timer; stops when dropped.
struct Painter {
    interval: i32,
    _draw: Closure<dyn FnMut()>,
}

impl Drop for Painter {
    fn drop(&mut self) {
        if let Some(window) = web_sys::window() {
            window.clear_interval_with_handle(self.interval);
        }
    }
}

/// A canvas with a rectangle crossing it, captured as a screen (`?fakescreen=1`).
fn fake_screen() -> Result<ScreenShare, JsValue> {
    let canvas: HtmlCanvasElement = dom::document()?.create_element("canvas")?.dyn_into()?;
    let (w, h) = FAKE_SIZE;
    canvas.set_width(w);
    canvas.set_height(h);
    let ctx: CanvasRenderingContext2d = canvas
        .get_context("2d")?
        .ok_or("no 2d canvas context")?
        .dyn_into()?;
    let stream = canvas.capture_stream_with_frame_request_rate(10.0)?;
    let track: MediaStreamTrack = stream.get_video_tracks().get(0).dyn_into()?;
    let (w, h) = (f64::from(w), f64::from(h));
    let mut frame = 0u32;
    let draw = Closure::<dyn FnMut()>::new(move || {
        frame = frame.wrapping_add(1);
        ctx.set_fill_style_str("#1d3557");
        ctx.fill_rect(0.0, 0.0, w, h);
        ctx.set_fill_style_str("#ffd050");
        let x = f64::from(frame % 60) / 60.0 * (w - 80.0);
        ctx.fill_rect(x, h / 2.0 - 40.0, 80.0, 80.0);
        ctx.set_fill_style_str("#ffffff");
        ctx.set_font("28px sans-serif");
        let _ = ctx.fill_text("Quad test screen", 24.0, 48.0);
    });
    let window = dom::window()?;
    draw.as_ref()
        .unchecked_ref::<js_sys::Function>()
        .call0(&JsValue::NULL)?;
    let interval = window.set_interval_with_callback_and_timeout_and_arguments_0(
        draw.as_ref().unchecked_ref(),
        100,
    )?;
    Ok(ScreenShare {
        track,
        _painter: Some(Painter {
            interval,
            _draw: draw,
        }),
        on_ended: None,
    })
}

/// Shows `who`'s shared screen (a name and a stream) in the big view `figure_id`, a
/// `<figure>` with a `<video>` and a `<figcaption>`; with `None`, hides the view. Touches
/// the DOM only where something changed.
pub fn show(figure_id: &str, who: Option<(&str, &MediaStream)>) -> Result<(), JsValue> {
    let figure: HtmlElement = dom::by_id(&dom::document()?, figure_id)?.dyn_into()?;
    let video: HtmlVideoElement = figure
        .query_selector("video")?
        .ok_or_else(|| format!("#{figure_id} has no <video>"))?
        .dyn_into()?;
    let Some((name, stream)) = who else {
        if !figure.hidden() {
            figure.set_hidden(true);
            video.set_src_object(None);
        }
        return Ok(());
    };
    if video.src_object().as_ref() != Some(stream) {
        video.set_src_object(Some(stream));
        let _ = video.play();
    }
    let caption = format!("{name} is sharing");
    if let Some(el) = figure.query_selector("figcaption")?
        && el.text_content().as_deref() != Some(caption.as_str())
    {
        // Names are text, never markup.
        el.set_text_content(Some(&caption));
    }
    if figure.hidden() {
        figure.set_hidden(false);
    }
    Ok(())
}
