//! Loading Tiled maps: the shipped campus, and broken files that must give clear errors.

use quad_shared::map::{Map, MapError, ZoneKind};
use serde_json::{Value, json};

/// A small valid map: 6x5 tiles, walls around, one classroom zone and a spawn.
fn small_map() -> Value {
    let (w, h) = (6, 5);
    let ground = vec![1; w * h];
    let collision: Vec<u32> = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            u32::from(x == 0 || y == 0 || x == w - 1 || y == h - 1) * 2
        })
        .collect();
    json!({
        "type": "map", "orientation": "orthogonal", "infinite": false,
        "width": w, "height": h, "tilewidth": 32, "tileheight": 32,
        "tilesets": [{"firstgid": 1, "name": "t", "image": "../tilesets/t.png",
                      "columns": 2, "tilecount": 2, "tilewidth": 32, "tileheight": 32}],
        "layers": [
            {"type": "tilelayer", "name": "ground", "visible": true, "data": ground},
            {"type": "tilelayer", "name": "collision", "visible": false, "data": collision},
            {"type": "objectgroup", "name": "zones", "objects": [
                {"id": 1, "name": "Room 1", "x": 32, "y": 32, "width": 64, "height": 64,
                 "properties": [{"name": "kind", "type": "string", "value": "classroom"},
                                {"name": "capacity", "type": "int", "value": 12}]}]},
            {"type": "objectgroup", "name": "spawns", "objects": [
                {"id": 2, "name": "spawn", "point": true, "x": 80, "y": 80}]}
        ]
    })
}

fn load(v: &Value) -> Result<Map, MapError> {
    Map::from_tmj(&v.to_string())
}

fn error_of(v: &Value) -> String {
    load(v).expect_err("the map should be refused").to_string()
}

#[test]
fn a_small_map_loads() {
    let map = load(&small_map()).expect("loads");
    assert_eq!((map.width, map.height, map.tile_size), (6, 5, 32));
    assert_eq!(map.layers.len(), 1, "the collision layer is not drawn");
    assert_eq!(map.zones.len(), 1);
    assert_eq!(map.zones[0].name, "Room 1");
    assert_eq!(map.zones[0].kind, ZoneKind::Classroom);
    assert_eq!(map.zones[0].capacity, 12);
    assert_eq!(
        map.zone_at(glam::Vec2::new(40.0, 40.0)),
        Some(map.zones[0].id)
    );
    assert_eq!(map.zone_at(glam::Vec2::new(120.0, 40.0)), None);
    assert!(map.collision.tile_blocked(0, 0));
    assert!(!map.collision.tile_blocked(2, 2));
    assert!(map.collision.tile_blocked(-1, 2), "outside the map blocks");
    let (tileset, index) = map.tile(2).expect("gid 2 is in the tileset");
    assert_eq!((tileset.name.as_str(), index), ("t", 1));
    assert!(map.tile(3).is_none());
}

#[test]
fn the_campus_map_loads_with_rooms_and_a_spawn() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/maps/campus.tmj");
    let map = Map::load(&path).expect("the shipped campus map loads");
    let classrooms: Vec<_> = map
        .zones
        .iter()
        .filter(|z| z.kind == ZoneKind::Classroom)
        .collect();
    assert!(classrooms.len() >= 4, "three classrooms and a lecture hall");
    assert!(classrooms.iter().any(|z| z.name == "Lecture Hall"));
    assert!(classrooms.iter().all(|z| z.capacity > 0));
    assert!(map.collision.walkable(map.spawn));
    assert!(map.zones.iter().all(|z| !z.name.is_empty()));
}

#[test]
fn not_json() {
    assert!(matches!(Map::from_tmj("{ nope"), Err(MapError::Json(_))));
}

#[test]
fn wrong_layer_size_names_the_layer() {
    let mut m = small_map();
    m["layers"][0]["data"] = json!([1, 1, 1]);
    let e = error_of(&m);
    assert!(e.contains("\"ground\"") && e.contains("3 cells"), "{e}");
}

#[test]
fn missing_collision_layer() {
    let mut m = small_map();
    m["layers"].as_array_mut().unwrap().remove(1);
    assert!(error_of(&m).contains("collision"));
}

#[test]
fn base64_layers_say_how_to_fix() {
    let mut m = small_map();
    m["layers"][0]["encoding"] = json!("base64");
    m["layers"][0]["data"] = json!("AAAA");
    assert!(error_of(&m).contains("CSV"));
}

#[test]
fn external_tilesets_say_how_to_fix() {
    let mut m = small_map();
    m["tilesets"] = json!([{"firstgid": 1, "source": "campus.tsj"}]);
    assert!(error_of(&m).contains("Embed Tileset"));
}

#[test]
fn unknown_zone_kind_names_the_zone() {
    let mut m = small_map();
    m["layers"][2]["objects"][0]["properties"][0]["value"] = json!("gym");
    let e = error_of(&m);
    assert!(e.contains("Room 1") && e.contains("gym"), "{e}");
}

#[test]
fn zone_outside_the_map() {
    let mut m = small_map();
    m["layers"][2]["objects"][0]["x"] = json!(1000);
    assert!(error_of(&m).contains("outside the map"));
}

#[test]
fn spawn_in_a_wall() {
    let mut m = small_map();
    m["layers"][3]["objects"][0]["x"] = json!(5);
    assert!(error_of(&m).contains("spawn"));
}

#[test]
fn no_spawn() {
    let mut m = small_map();
    m["layers"].as_array_mut().unwrap().remove(3);
    assert!(error_of(&m).contains("spawn"));
}

#[test]
fn infinite_and_non_square() {
    let mut m = small_map();
    m["infinite"] = json!(true);
    assert!(error_of(&m).contains("nfinite"));
    let mut m = small_map();
    m["tileheight"] = json!(16);
    assert!(error_of(&m).contains("square"));
}

#[test]
fn a_cell_that_is_not_a_tile_id() {
    let mut m = small_map();
    m["layers"][0]["data"][3] = json!(-4);
    assert!(error_of(&m).contains("not a tile id"));
}

#[test]
fn file_errors_name_the_file() {
    let e = Map::load(std::path::Path::new("/nonexistent/broken.tmj")).unwrap_err();
    assert!(e.to_string().contains("broken.tmj"), "{e}");
}
