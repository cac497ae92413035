//! The campus map, loaded from a Tiled JSON map (`.tmj`), as both sides need it.
//!
//! What Quad reads from a Tiled map:
//! - tile layers drawn in order, except the one named `collision`, whose non-empty cells are
//!   where an avatar may not stand;
//! - one embedded tileset (or several), with its image path relative to the map file;
//! - an object layer `zones` of rectangles with the properties `kind` (`classroom`, `open`,
//!   `silent`) and `capacity` (int);
//! - an object layer `spawns` with a point named `spawn`.
//!
//! Every problem in a map file is a [`MapError`] that says what is wrong and where; loading
//! never panics.

use crate::ids::ZoneId;
use glam::Vec2;
use serde::Deserialize;
use thiserror::Error;

/// The layer whose non-empty cells block movement.
pub const COLLISION_LAYER: &str = "collision";
/// The object layer holding zones.
pub const ZONES_LAYER: &str = "zones";
/// The object layer holding the spawn point.
pub const SPAWNS_LAYER: &str = "spawns";
/// Largest map side in pixels (positions travel as quarter pixels in a `u16`).
pub const MAX_MAP_PIXELS: u32 = 16_000;

/// Tiled stores flip flags in the top bits of a gid.
const GID_MASK: u32 = 0x0FFF_FFFF;

/// What is wrong with a map.
#[derive(Debug, Error, PartialEq)]
pub enum MapError {
    #[error("not valid Tiled JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
}

/// A map file could not be used; says which file.
#[derive(Debug, Error)]
#[error("map file {path}: {error}")]
pub struct MapFileError {
    pub path: String,
    pub error: MapError,
}

/// A loaded, validated map.
#[derive(Clone, Debug)]
pub struct Map {
    /// Size in tiles.
    pub width: u32,
    pub height: u32,
    /// Tile side in pixels (tiles are square).
    pub tile_size: u32,
    pub tilesets: Vec<Tileset>,
    /// Visible tile layers, bottom first (the collision layer is not among them).
    pub layers: Vec<TileLayer>,
    pub collision: CollisionGrid,
    pub zones: Vec<Zone>,
    /// Where new avatars appear, world pixels.
    pub spawn: Vec2,
}

/// A tileset: one image cut into a grid of tiles.
#[derive(Clone, Debug, PartialEq)]
pub struct Tileset {
    pub first_gid: u32,
    pub name: String,
    /// Path of the image, relative to the map file.
    pub image: String,
    pub columns: u32,
    pub tile_count: u32,
    pub tile_size: u32,
}

/// One tile layer: `width * height` gids, row-major, 0 = empty.
#[derive(Clone, Debug, PartialEq)]
pub struct TileLayer {
    pub name: String,
    pub gids: Vec<u32>,
}

/// What a zone is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneKind {
    /// A room: media goes through the server.
    Classroom,
    /// A named open area (courtyard, hallway): proximity media.
    Open,
    /// No media at all (a library).
    Silent,
}

impl ZoneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneKind::Classroom => "classroom",
            ZoneKind::Open => "open",
            ZoneKind::Silent => "silent",
        }
    }
}

/// A named rectangle of the map.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    pub id: ZoneId,
    pub name: String,
    pub kind: ZoneKind,
    pub capacity: u32,
    pub rect: Rect,
}

/// An axis-aligned rectangle in world pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Rect {
    pub fn contains(&self, p: Vec2) -> bool {
        p.x >= self.x && p.y >= self.y && p.x < self.x + self.w && p.y < self.y + self.h
    }

    pub fn center(&self) -> Vec2 {
        Vec2::new(self.x + self.w / 2.0, self.y + self.h / 2.0)
    }
}

/// Which tiles block movement. Everything outside the map blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct CollisionGrid {
    width: u32,
    height: u32,
    tile_size: f32,
    blocked: Vec<bool>,
}

impl CollisionGrid {
    /// `blocked` is row-major, `width * height` long; a short vector counts as blocked.
    pub fn new(width: u32, height: u32, tile_size: u32, blocked: Vec<bool>) -> Self {
        CollisionGrid {
            width,
            height,
            tile_size: tile_size as f32,
            blocked,
        }
    }

    /// An open grid of the given size with only a wall around the edge (benchmarks, tests).
    pub fn open_with_border(width: u32, height: u32, tile_size: u32) -> Self {
        let blocked = (0..height)
            .flat_map(|y| {
                (0..width).map(move |x| x == 0 || y == 0 || x == width - 1 || y == height - 1)
            })
            .collect();
        Self::new(width, height, tile_size, blocked)
    }

    /// Whether the tile at (tx, ty) blocks; outside the map always blocks.
    pub fn tile_blocked(&self, tx: i64, ty: i64) -> bool {
        if tx < 0 || ty < 0 || tx >= self.width as i64 || ty >= self.height as i64 {
            return true;
        }
        let i = (ty as usize) * self.width as usize + tx as usize;
        self.blocked.get(i).copied().unwrap_or(true)
    }

    /// Whether a square of half-size `half` centred on `center` overlaps a blocked tile.
    pub fn box_blocked(&self, center: Vec2, half: f32) -> bool {
        self.area_blocked(center - half, center + half)
    }

    /// Whether the box from corner `min` to corner `max` overlaps a blocked tile. The far
    /// edges are exclusive: a box touching a tile's edge does not overlap it. The tiles
    /// tested grow with the box (each bound is monotonic), so a box that is clear has every
    /// box inside it clear.
    pub fn area_blocked(&self, min: Vec2, max: Vec2) -> bool {
        let ts = self.tile_size;
        let x0 = floor_i64(min.x / ts);
        let y0 = floor_i64(min.y / ts);
        let x1 = ceil_i64(max.x / ts) - 1;
        let y1 = ceil_i64(max.y / ts) - 1;
        // Plain loops: an avatar's box covers two tiles a side at most, and inclusive
        // ranges cost more than the look-ups here.
        let mut ty = y0;
        while ty <= y1 {
            let mut tx = x0;
            while tx <= x1 {
                if self.tile_blocked(tx, ty) {
                    return true;
                }
                tx += 1;
            }
            ty += 1;
        }
        false
    }

    /// Whether an avatar may stand at `p`.
    pub fn walkable(&self, p: Vec2) -> bool {
        !self.box_blocked(p, crate::movement::AVATAR_HALF_SIZE)
    }
}

/// `v.floor() as i64` without a libm call: x86-64's baseline has no rounding instruction,
/// so `floor` is a function call, and movement asks this six times an avatar a tick. The
/// same for every `f32` (saturating like `as`; NaN gives 0).
#[inline]
pub fn floor_i64(v: f32) -> i64 {
    let t = v as i64;
    t.saturating_sub(i64::from((t as f32) > v))
}

/// `v.ceil() as i64` without a libm call (see [`floor_i64`]).
#[inline]
pub fn ceil_i64(v: f32) -> i64 {
    let t = v as i64;
    t.saturating_add(i64::from((t as f32) < v))
}

impl Map {
    /// Parses and validates a Tiled JSON map.
    pub fn from_tmj(json: &str) -> Result<Map, MapError> {
        let raw: raw::Map =
            serde_json::from_str(json).map_err(|e| MapError::Json(e.to_string()))?;
        build(raw)
    }

    /// Reads a `.tmj` file; the error names the file.
    pub fn load(path: &std::path::Path) -> Result<Map, MapFileError> {
        let wrap = |error| MapFileError {
            path: path.display().to_string(),
            error,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| wrap(MapError::Invalid(format!("cannot read it: {e}"))))?;
        Map::from_tmj(&text).map_err(wrap)
    }

    /// An open floor of `tiles` x `tiles` tiles with a wall around it: no zones, no
    /// layers to draw, the spawn point two tiles in (benchmarks and tests).
    pub fn open_square(tiles: u32, tile_size: u32) -> Map {
        Map {
            width: tiles,
            height: tiles,
            tile_size,
            tilesets: vec![],
            layers: vec![],
            collision: CollisionGrid::open_with_border(tiles, tiles, tile_size),
            zones: vec![],
            spawn: Vec2::splat(2.0 * tile_size as f32),
        }
    }

    /// Size in world pixels.
    pub fn pixel_size(&self) -> Vec2 {
        Vec2::new(
            (self.width * self.tile_size) as f32,
            (self.height * self.tile_size) as f32,
        )
    }

    /// The zone containing `p`, if any (zones do not overlap; the first wins if they do).
    pub fn zone_at(&self, p: Vec2) -> Option<ZoneId> {
        self.zones.iter().find(|z| z.rect.contains(p)).map(|z| z.id)
    }

    pub fn zone(&self, id: ZoneId) -> Option<&Zone> {
        self.zones.get(id.0 as usize)
    }

    /// The tileset a gid belongs to and the tile's index in it.
    pub fn tile(&self, gid: u32) -> Option<(&Tileset, u32)> {
        let gid = gid & GID_MASK;
        if gid == 0 {
            return None;
        }
        self.tilesets
            .iter()
            .rev()
            .find(|t| t.first_gid <= gid)
            .filter(|t| gid - t.first_gid < t.tile_count)
            .map(|t| (t, gid - t.first_gid))
    }
}

fn build(raw: raw::Map) -> Result<Map, MapError> {
    use MapError::{Invalid, Unsupported};
    if raw.infinite {
        return Err(Unsupported(
            "infinite maps are not supported: untick Map > Map Properties > Infinite".into(),
        ));
    }
    if raw.orientation != "orthogonal" {
        return Err(Unsupported(format!(
            "orientation \"{}\" is not supported; use orthogonal",
            raw.orientation
        )));
    }
    if raw.tilewidth != raw.tileheight || raw.tilewidth == 0 {
        return Err(Unsupported(format!(
            "tiles must be square and non-empty; they are {}x{}",
            raw.tilewidth, raw.tileheight
        )));
    }
    if raw.width == 0 || raw.height == 0 {
        return Err(Invalid("the map has no tiles".into()));
    }
    let (wpx, hpx) = (
        raw.width.saturating_mul(raw.tilewidth),
        raw.height.saturating_mul(raw.tileheight),
    );
    if wpx > MAX_MAP_PIXELS || hpx > MAX_MAP_PIXELS {
        return Err(Unsupported(format!(
            "the map is {wpx}x{hpx} pixels; at most {MAX_MAP_PIXELS} on a side"
        )));
    }
    let cells = (raw.width * raw.height) as usize;

    let mut tilesets = Vec::new();
    for ts in raw.tilesets {
        if let Some(source) = ts.source {
            return Err(Unsupported(format!(
                "tileset \"{source}\" is external; embed it in the map (Tiled: Map > Embed Tileset)"
            )));
        }
        let name = ts.name.unwrap_or_default();
        let image = ts
            .image
            .ok_or_else(|| Invalid(format!("tileset \"{name}\" has no image")))?;
        let columns = ts.columns.unwrap_or(0);
        let tile_count = ts.tilecount.unwrap_or(0);
        if columns == 0 || tile_count == 0 {
            return Err(Invalid(format!(
                "tileset \"{name}\" has no columns or tiles"
            )));
        }
        if ts.tilewidth != Some(raw.tilewidth) || ts.tileheight != Some(raw.tileheight) {
            return Err(Unsupported(format!(
                "tileset \"{name}\" must use the map's {0}x{0} tiles",
                raw.tilewidth
            )));
        }
        tilesets.push(Tileset {
            first_gid: ts.firstgid,
            name,
            image,
            columns,
            tile_count,
            tile_size: raw.tilewidth,
        });
    }
    if tilesets.is_empty() {
        return Err(Invalid("the map has no tileset".into()));
    }
    tilesets.sort_by_key(|t| t.first_gid);

    let mut layers = Vec::new();
    let mut collision = None;
    let mut zones_layer = None;
    let mut spawns_layer = None;
    for layer in raw.layers {
        match layer.kind.as_str() {
            "tilelayer" => {
                if layer.encoding.as_deref().is_some_and(|e| e != "csv") {
                    return Err(Unsupported(format!(
                        "layer \"{}\" is {}-encoded; save it with Tile Layer Format: CSV",
                        layer.name,
                        layer.encoding.unwrap_or_default()
                    )));
                }
                let data: Vec<u32> = match layer.data {
                    Some(serde_json::Value::Array(items)) => items
                        .iter()
                        .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
                        .collect::<Option<_>>()
                        .ok_or_else(|| {
                            Invalid(format!(
                                "layer \"{}\" has a cell that is not a tile id",
                                layer.name
                            ))
                        })?,
                    _ => {
                        return Err(Invalid(format!(
                            "layer \"{}\" has no tile data array",
                            layer.name
                        )));
                    }
                };
                if data.len() != cells {
                    return Err(Invalid(format!(
                        "layer \"{}\" has {} cells; a {}x{} map needs {cells}",
                        layer.name,
                        data.len(),
                        raw.width,
                        raw.height
                    )));
                }
                if layer.name == COLLISION_LAYER {
                    collision = Some(data);
                } else if layer.visible {
                    layers.push(TileLayer {
                        name: layer.name,
                        gids: data,
                    });
                }
            }
            "objectgroup" if layer.name == ZONES_LAYER => zones_layer = Some(layer.objects),
            "objectgroup" if layer.name == SPAWNS_LAYER => spawns_layer = Some(layer.objects),
            _ => {}
        }
    }

    let collision = collision.ok_or_else(|| {
        Invalid(format!(
            "there is no tile layer named \"{COLLISION_LAYER}\" (its non-empty cells block movement)"
        ))
    })?;
    let collision = CollisionGrid::new(
        raw.width,
        raw.height,
        raw.tilewidth,
        collision.iter().map(|&g| g & GID_MASK != 0).collect(),
    );

    let map_rect = Rect {
        x: 0.0,
        y: 0.0,
        w: wpx as f32,
        h: hpx as f32,
    };
    let mut zones = Vec::new();
    for obj in zones_layer.unwrap_or_default() {
        let label = if obj.name.is_empty() {
            format!("zone object {}", obj.id)
        } else {
            format!("zone \"{}\"", obj.name)
        };
        if obj.name.trim().is_empty() {
            return Err(Invalid(format!("{label} has no name")));
        }
        if obj.point
            || obj.ellipse
            || obj.polygon.is_some()
            || obj.width <= 0.0
            || obj.height <= 0.0
        {
            return Err(Invalid(format!("{label} must be a rectangle with a size")));
        }
        let rect = Rect {
            x: obj.x,
            y: obj.y,
            w: obj.width,
            h: obj.height,
        };
        if rect.x < 0.0
            || rect.y < 0.0
            || rect.x + rect.w > map_rect.w
            || rect.y + rect.h > map_rect.h
        {
            return Err(Invalid(format!("{label} reaches outside the map")));
        }
        let kind = match obj.prop("kind").and_then(|v| v.as_str()) {
            Some("classroom") => ZoneKind::Classroom,
            Some("open") => ZoneKind::Open,
            Some("silent") => ZoneKind::Silent,
            Some(other) => {
                return Err(Invalid(format!(
                    "{label} has kind \"{other}\"; use classroom, open or silent"
                )));
            }
            None => {
                return Err(Invalid(format!(
                    "{label} needs a string property \"kind\" (classroom, open or silent)"
                )));
            }
        };
        let capacity = match obj.prop("capacity") {
            None => 0,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    Invalid(format!("{label} has a capacity that is not a whole number"))
                })?,
        };
        let id = ZoneId(u16::try_from(zones.len()).map_err(|_| Invalid("too many zones".into()))?);
        zones.push(Zone {
            id,
            name: obj.name.trim().to_owned(),
            kind,
            capacity,
            rect,
        });
    }

    let spawn_obj = spawns_layer
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.name == "spawn")
        .ok_or_else(|| {
            Invalid(format!(
                "there is no object named \"spawn\" in an object layer \"{SPAWNS_LAYER}\""
            ))
        })?;
    let spawn = Vec2::new(spawn_obj.x, spawn_obj.y);
    if !map_rect.contains(spawn) || !collision.walkable(spawn) {
        return Err(Invalid(format!(
            "the spawn point ({}, {}) is not on walkable ground",
            spawn.x, spawn.y
        )));
    }

    Ok(Map {
        width: raw.width,
        height: raw.height,
        tile_size: raw.tilewidth,
        tilesets,
        layers,
        collision,
        zones,
        spawn,
    })
}

/// Tiled's JSON, as much of it as Quad reads.
mod raw {
    use super::Deserialize;

    #[derive(Deserialize)]
    pub struct Map {
        pub width: u32,
        pub height: u32,
        pub tilewidth: u32,
        pub tileheight: u32,
        #[serde(default)]
        pub infinite: bool,
        #[serde(default = "orthogonal")]
        pub orientation: String,
        #[serde(default)]
        pub layers: Vec<Layer>,
        #[serde(default)]
        pub tilesets: Vec<Tileset>,
    }

    fn orthogonal() -> String {
        "orthogonal".into()
    }

    #[derive(Deserialize)]
    pub struct Tileset {
        pub firstgid: u32,
        pub source: Option<String>,
        pub name: Option<String>,
        pub image: Option<String>,
        pub columns: Option<u32>,
        pub tilecount: Option<u32>,
        pub tilewidth: Option<u32>,
        pub tileheight: Option<u32>,
    }

    #[derive(Deserialize)]
    pub struct Layer {
        #[serde(rename = "type")]
        pub kind: String,
        #[serde(default)]
        pub name: String,
        #[serde(default = "yes")]
        pub visible: bool,
        pub data: Option<serde_json::Value>,
        pub encoding: Option<String>,
        #[serde(default)]
        pub objects: Vec<Object>,
    }

    fn yes() -> bool {
        true
    }

    #[derive(Deserialize)]
    pub struct Object {
        #[serde(default)]
        pub id: u32,
        #[serde(default)]
        pub name: String,
        pub x: f32,
        pub y: f32,
        #[serde(default)]
        pub width: f32,
        #[serde(default)]
        pub height: f32,
        #[serde(default)]
        pub point: bool,
        #[serde(default)]
        pub ellipse: bool,
        pub polygon: Option<serde_json::Value>,
        #[serde(default)]
        pub properties: Vec<Property>,
    }

    impl Object {
        pub fn prop(&self, name: &str) -> Option<&serde_json::Value> {
            self.properties
                .iter()
                .find(|p| p.name == name)
                .map(|p| &p.value)
        }
    }

    #[derive(Deserialize)]
    pub struct Property {
        pub name: String,
        pub value: serde_json::Value,
    }
}

#[cfg(test)]
mod tests {
    use super::{ceil_i64, floor_i64};

    #[test]
    fn floor_and_ceil_match_libm_for_every_kind_of_f32() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -1.0,
            0.999_999_9,
            -0.999_999_9,
            31.999_998,
            32.0,
            -32.000_004,
            8_388_607.5,
            8_388_608.0,
            -8_388_609.0,
            1.0e10,
            -1.0e10,
            1.0e30,
            -1.0e30,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        // And a sweep of bit patterns across the whole range.
        values.extend((0..200_000u32).map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761))));
        for v in values {
            assert_eq!(floor_i64(v), v.floor() as i64, "floor({v:e})");
            assert_eq!(ceil_i64(v), v.ceil() as i64, "ceil({v:e})");
        }
    }
}
