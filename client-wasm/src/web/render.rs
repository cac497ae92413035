//! Canvas 2D rendering: the map pre-rendered into chunk canvases once, then each frame the
//! visible chunks, zone outlines and labels, and avatars with name labels.

use super::{App, AppRef, dom};
use crate::game::camera_origin;
use glam::Vec2;
use quad_shared::AvatarId;
use quad_shared::map::{Map, ZoneKind};
use std::sync::Arc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, HtmlImageElement};

/// Tiles per chunk side.
const CHUNK_TILES: u32 = 16;
const AVATAR_RADIUS: f64 = 12.0;

pub struct MapRenderer {
    chunk_px: f64,
    cols: u32,
    chunks: Vec<HtmlCanvasElement>,
}

/// Fetches the map and its tileset images, then pre-renders the chunks.
pub async fn load_map(app: &AppRef) -> Result<(), JsValue> {
    let url = app
        .upgrade()
        .ok_or("app gone")?
        .borrow()
        .game
        .map_url
        .clone();
    let window = dom::window()?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(&url))
        .await?
        .dyn_into()?;
    if !response.ok() {
        return Err(format!("{url}: HTTP {}", response.status()).into());
    }
    let text = JsFuture::from(response.text()?)
        .await?
        .as_string()
        .ok_or("map is not text")?;
    let map = Map::from_tmj(&text).map_err(|e| JsValue::from_str(&format!("{url}: {e}")))?;
    let mut images = Vec::new();
    for i in 0..map.tilesets.len() {
        images.push(load_image(&format!("/map/tileset/{i}")).await?);
    }
    let renderer = prerender(&map, &images)?;
    if let Some(a) = app.upgrade() {
        let mut a = a.borrow_mut();
        a.game.map = Some(Arc::new(map));
        a.renderer = Some(renderer);
    }
    Ok(())
}

async fn load_image(src: &str) -> Result<HtmlImageElement, JsValue> {
    let img = HtmlImageElement::new()?;
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        img.set_onload(Some(&resolve));
        img.set_onerror(Some(&reject));
    });
    img.set_src(src);
    JsFuture::from(promise)
        .await
        .map_err(|_| JsValue::from_str(&format!("cannot load image {src}")))?;
    img.set_onload(None);
    img.set_onerror(None);
    Ok(img)
}

fn prerender(map: &Map, images: &[HtmlImageElement]) -> Result<MapRenderer, JsValue> {
    let document = dom::document()?;
    let ts = map.tile_size;
    let cols = map.width.div_ceil(CHUNK_TILES);
    let rows = map.height.div_ceil(CHUNK_TILES);
    let chunk_px = CHUNK_TILES * ts;
    let mut chunks = Vec::new();
    for cy in 0..rows {
        for cx in 0..cols {
            let canvas: HtmlCanvasElement = document.create_element("canvas")?.dyn_into()?;
            canvas.set_width(chunk_px);
            canvas.set_height(chunk_px);
            let ctx: CanvasRenderingContext2d = canvas
                .get_context("2d")?
                .ok_or("no 2d context")?
                .dyn_into()?;
            for layer in &map.layers {
                for ty in cy * CHUNK_TILES..((cy + 1) * CHUNK_TILES).min(map.height) {
                    for tx in cx * CHUNK_TILES..((cx + 1) * CHUNK_TILES).min(map.width) {
                        let gid = layer.gids[(ty * map.width + tx) as usize];
                        let Some((tileset, index)) = map.tile(gid) else {
                            continue;
                        };
                        let set = map.tilesets.iter().position(|t| t == tileset).unwrap_or(0);
                        let Some(image) = images.get(set) else {
                            continue;
                        };
                        let (sx, sy) = (
                            (index % tileset.columns) * ts,
                            (index / tileset.columns) * ts,
                        );
                        let (dx, dy) = ((tx - cx * CHUNK_TILES) * ts, (ty - cy * CHUNK_TILES) * ts);
                        ctx.draw_image_with_html_image_element_and_sw_and_sh_and_dx_and_dy_and_dw_and_dh(
                            image, sx as f64, sy as f64, ts as f64, ts as f64, dx as f64, dy as f64,
                            ts as f64, ts as f64,
                        )?;
                    }
                }
            }
            chunks.push(canvas);
        }
    }
    Ok(MapRenderer {
        chunk_px: chunk_px as f64,
        cols,
        chunks,
    })
}

/// A stable, distinct colour per avatar.
fn avatar_colour(id: AvatarId) -> String {
    let hue = (id.0.wrapping_mul(2_654_435_761) >> 8) % 360;
    format!("hsl({hue}, 70%, 55%)")
}

/// Draws a frame; returns the camera origin (world pixels at the screen's top left) once
/// the map is there.
pub fn draw(app: &mut App, now_ms: f64) -> Result<Option<Vec2>, JsValue> {
    let window = dom::window()?;
    let (w, h) = (
        window.inner_width()?.as_f64().unwrap_or(800.0) as u32,
        window.inner_height()?.as_f64().unwrap_or(600.0) as u32,
    );
    if app.canvas.width() != w || app.canvas.height() != h {
        app.canvas.set_width(w);
        app.canvas.set_height(h);
    }
    let ctx = &app.ctx;
    ctx.set_image_smoothing_enabled(false);
    ctx.set_fill_style_str("#1b1f2a");
    ctx.fill_rect(0.0, 0.0, w as f64, h as f64);
    let (Some(map), Some(me), Some(renderer)) = (&app.game.map, &app.game.me, &app.renderer) else {
        ctx.set_fill_style_str("#e8e8e8");
        ctx.set_font("16px sans-serif");
        ctx.fill_text("Loading the campus…", 20.0, 30.0)?;
        return Ok(None);
    };
    let origin = camera_origin(
        me.predicted,
        Vec2::new(w as f32, h as f32),
        map.pixel_size(),
    )
    .round();
    let (ox, oy) = (origin.x as f64, origin.y as f64);

    for (i, chunk) in renderer.chunks.iter().enumerate() {
        let x = (i as u32 % renderer.cols) as f64 * renderer.chunk_px - ox;
        let y = (i as u32 / renderer.cols) as f64 * renderer.chunk_px - oy;
        if x + renderer.chunk_px < 0.0
            || y + renderer.chunk_px < 0.0
            || x > w as f64
            || y > h as f64
        {
            continue;
        }
        ctx.draw_image_with_html_canvas_element(chunk, x, y)?;
    }

    ctx.set_line_width(2.0);
    ctx.set_font("bold 13px sans-serif");
    ctx.set_text_align("left");
    ctx.set_text_baseline("top");
    for zone in &map.zones {
        let colour = match zone.kind {
            ZoneKind::Classroom => "rgba(255, 208, 80, 0.9)",
            ZoneKind::Silent => "rgba(120, 200, 255, 0.9)",
            ZoneKind::Open => "rgba(255, 255, 255, 0.35)",
        };
        let (x, y) = (zone.rect.x as f64 - ox, zone.rect.y as f64 - oy);
        ctx.set_stroke_style_str(colour);
        ctx.stroke_rect(
            x + 1.0,
            y + 1.0,
            zone.rect.w as f64 - 2.0,
            zone.rect.h as f64 - 2.0,
        );
        let label = if zone.kind == ZoneKind::Classroom && zone.capacity > 0 {
            format!("{} · {}", zone.name, zone.capacity)
        } else {
            zone.name.clone()
        };
        ctx.set_fill_style_str("rgba(0, 0, 0, 0.55)");
        let width = ctx.measure_text(&label)?.width();
        ctx.fill_rect(x + 4.0, y + 4.0, width + 8.0, 18.0);
        ctx.set_fill_style_str(colour);
        ctx.fill_text(&label, x + 8.0, y + 7.0)?;
    }

    let mut avatars: Vec<(AvatarId, Vec2, bool)> = app
        .game
        .others
        .keys()
        .filter_map(|id| Some((*id, app.game.render_position(*id, now_ms)?, false)))
        .collect();
    avatars.push((me.id, me.predicted, true));
    avatars.sort_by(|a, b| a.1.y.total_cmp(&b.1.y));
    ctx.set_text_align("center");
    ctx.set_text_baseline("bottom");
    ctx.set_font("12px sans-serif");
    for (id, pos, is_me) in avatars {
        let (x, y) = ((pos.x - origin.x) as f64, (pos.y - origin.y) as f64);
        ctx.begin_path();
        ctx.arc(x, y, AVATAR_RADIUS, 0.0, std::f64::consts::TAU)?;
        ctx.set_fill_style_str(&avatar_colour(id));
        ctx.fill();
        ctx.set_line_width(if is_me { 3.0 } else { 1.5 });
        ctx.set_stroke_style_str(if is_me { "#ffffff" } else { "rgba(0,0,0,0.6)" });
        ctx.stroke();
        let name = if is_me {
            me.name.as_str()
        } else {
            app.game.name_of(id)
        };
        ctx.set_line_width(3.0);
        ctx.set_stroke_style_str("rgba(0,0,0,0.75)");
        ctx.stroke_text(name, x, y - AVATAR_RADIUS - 3.0)?;
        ctx.set_fill_style_str("#ffffff");
        ctx.fill_text(name, x, y - AVATAR_RADIUS - 3.0)?;
        let muted = if is_me {
            app.media.local.is_some() && !app.media.mic_on()
        } else {
            app.media.peers.get(&id).is_some_and(|p| !p.remote.mic)
        };
        if muted {
            draw_muted(ctx, x + AVATAR_RADIUS, y + AVATAR_RADIUS)?;
        }
    }
    Ok(Some(origin))
}

/// A small "microphone off" badge: a red disc with a white slash.
fn draw_muted(ctx: &CanvasRenderingContext2d, x: f64, y: f64) -> Result<(), JsValue> {
    ctx.begin_path();
    ctx.arc(x, y, 6.0, 0.0, std::f64::consts::TAU)?;
    ctx.set_fill_style_str("#e53935");
    ctx.fill();
    ctx.begin_path();
    ctx.move_to(x - 3.5, y + 3.5);
    ctx.line_to(x + 3.5, y - 3.5);
    ctx.set_line_width(2.0);
    ctx.set_stroke_style_str("#ffffff");
    ctx.stroke();
    Ok(())
}
