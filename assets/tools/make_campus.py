#!/usr/bin/env python3
"""Generate the Quad campus assets.

Outputs (paths relative to the assets/ directory):
  tilesets/campus.png  - 8 columns x 3 rows of 32x32 RGBA pixel-art tiles
  maps/campus.tmj      - Tiled (1.10) JSON map, 80x50 tiles, embedded tileset
and a preview image of the whole map at /tmp/campus_preview.png
(plus /tmp/campus_preview_2x.png and /tmp/campus_collision.png for debugging).

Standard library only (json, zlib, struct, random, math).  Deterministic:
every random choice comes from a seeded random.Random.

Run:  python3 assets/tools/make_campus.py
"""

import json
import math
import os
import random
import struct
import zlib
from collections import deque

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.dirname(HERE)
TILESET_PATH = os.path.join(ASSETS, "tilesets", "campus.png")
MAP_PATH = os.path.join(ASSETS, "maps", "campus.tmj")
PREVIEW_PATH = "/tmp/campus_preview.png"
PREVIEW2_PATH = "/tmp/campus_preview_2x.png"
COLLISION_PREVIEW_PATH = "/tmp/campus_collision.png"

SEED = 20241121
TS = 32          # tile size in px
COLS = 8         # tileset columns
ROWS = 3         # tileset rows
TILECOUNT = COLS * ROWS

# ---------------------------------------------------------------- tile ids
(GRASS, GRASS_FLOWERS, PAVING, HALL_FLOOR, WOOD_FLOOR, LECTURE_CARPET,
 LIBRARY_CARPET, WALL, WALL_DARK, DOOR_MAT, DESK, CHAIR, TEACHER_DESK,
 WHITEBOARD, BOOKSHELF, PLANT, TREE, WATER, BENCH, COLLISION,
 FOUNTAIN_CENTER, FOUNTAIN_RIM, GRASS_TUFTS, PAVING_MOSS) = range(24)

# furniture tiles an avatar may not stand on
BLOCKING_FURNITURE = {DESK, TEACHER_DESK, BOOKSHELF, PLANT, TREE, WATER,
                      BENCH, FOUNTAIN_CENTER, FOUNTAIN_RIM}


# ================================================================ PNG output
def write_png(path, width, height, rgba):
    """rgba: bytes/bytearray of width*height*4."""
    stride = width * 4
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter: none
        raw += rgba[y * stride:(y + 1) * stride]

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
           + chunk(b"IEND", b""))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(png)


# ================================================================ drawing
def clamp(v):
    return 0 if v < 0 else (255 if v > 255 else int(round(v)))


def shade(c, k):
    return (clamp(c[0] + k), clamp(c[1] + k), clamp(c[2] + k))


def mix(a, b, t):
    return (clamp(a[0] + (b[0] - a[0]) * t), clamp(a[1] + (b[1] - a[1]) * t),
            clamp(a[2] + (b[2] - a[2]) * t))


class Tile:
    """32x32 RGBA canvas. Coordinates wrap (helps seamless textures)."""

    def __init__(self):
        self.px = [[0, 0, 0, 0] for _ in range(TS * TS)]

    def get(self, x, y):
        return self.px[(y % TS) * TS + (x % TS)]

    def set(self, x, y, c, a=255):
        p = self.px[(y % TS) * TS + (x % TS)]
        p[0], p[1], p[2], p[3] = c[0], c[1], c[2], a

    def blend(self, x, y, c, alpha):
        """Composite colour c with opacity alpha (0..1) over the pixel."""
        if alpha <= 0:
            return
        p = self.px[(y % TS) * TS + (x % TS)]
        da = p[3] / 255.0
        oa = alpha + da * (1 - alpha)
        if oa <= 0:
            return
        for i in range(3):
            p[i] = clamp((c[i] * alpha + p[i] * da * (1 - alpha)) / oa)
        p[3] = clamp(oa * 255)

    def rect(self, x0, y0, x1, y1, c, alpha=1.0):
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                if alpha >= 1:
                    self.set(x, y, c)
                else:
                    self.blend(x, y, c, alpha)

    def ellipse(self, cx, cy, rx, ry, c, alpha=1.0, angle=0.0):
        ca, sa = math.cos(angle), math.sin(angle)
        r = int(max(rx, ry)) + 2
        for y in range(int(cy) - r, int(cy) + r + 1):
            for x in range(int(cx) - r, int(cx) + r + 1):
                if not (0 <= x < TS and 0 <= y < TS):
                    continue
                dx, dy = x + 0.5 - cx, y + 0.5 - cy
                u = dx * ca + dy * sa
                v = -dx * sa + dy * ca
                if (u / rx) ** 2 + (v / ry) ** 2 <= 1.0:
                    if alpha >= 1:
                        self.set(x, y, c)
                    else:
                        self.blend(x, y, c, alpha)

    def copy_from(self, other):
        for i, p in enumerate(other.px):
            self.px[i] = list(p)


def value_noise(rng, cells):
    """Smooth tileable noise over a 32x32 tile; returns f(x, y) in [0, 1]."""
    g = [[rng.random() for _ in range(cells)] for _ in range(cells)]
    step = TS / cells

    def f(x, y):
        gx, gy = (x % TS) / step, (y % TS) / step
        ix, iy = int(gx), int(gy)
        tx, ty = gx - ix, gy - iy
        sx, sy = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
        x0, y0, x1, y1 = ix % cells, iy % cells, (ix + 1) % cells, (iy + 1) % cells
        a = g[y0][x0] * (1 - sx) + g[y0][x1] * sx
        b = g[y1][x0] * (1 - sx) + g[y1][x1] * sx
        return a * (1 - sy) + b * sy
    return f


# ================================================================ tiles
def draw_grass(t, rng, tufts=False):
    n1, n2 = value_noise(rng, 4), value_noise(rng, 8)
    lo, hi = ((58, 122, 52), (98, 166, 74)) if not tufts else ((52, 114, 48), (90, 156, 68))
    for y in range(TS):
        for x in range(TS):
            v = 0.6 * n1(x, y) + 0.4 * n2(x, y)
            t.set(x, y, shade(mix(lo, hi, v), rng.randint(-5, 5)))
    blades = [(118, 184, 90), (50, 106, 44), (128, 194, 98), (70, 134, 58)]
    for _ in range(50):
        x, y = rng.randrange(TS), rng.randrange(TS)
        col = rng.choice(blades)
        for i in range(rng.randint(2, 3)):
            t.set(x, y - i, col)
        if rng.random() < 0.4:
            t.set(x + rng.choice((-1, 1)), y - 2, col)
    if tufts:
        for _ in range(5):
            cx, cy = rng.randrange(TS), rng.randrange(TS)
            for dx in range(-2, 3):
                h = 4 - abs(dx) + rng.randint(0, 1)
                for i in range(h):
                    t.set(cx + dx, cy - i, (40 + 10 * (i % 2), 96 + 8 * i, 40))
        for _ in range(4):  # clover
            cx, cy = rng.randrange(TS), rng.randrange(TS)
            for dx, dy in ((0, -1), (-1, 0), (1, 0)):
                t.set(cx + dx, cy + dy, (112, 178, 88))
            t.set(cx, cy, (60, 120, 52))


def draw_flower(t, x, y, petal, centre, big):
    offs = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if big:
        offs += [(-2, 0), (2, 0), (0, -2), (0, 2), (-1, -1), (1, -1), (-1, 1), (1, 1)]
    for dx, dy in offs:
        t.blend(x + dx + 1, y + dy + 1, (0, 0, 0), 0.18)
    for dx, dy in offs:
        t.set(x + dx, y + dy, petal)
    t.set(x, y, centre)


def draw_grass_flowers(t, rng):
    draw_grass(t, rng)
    petals = [(250, 250, 246), (250, 214, 70), (238, 128, 170), (160, 170, 250), (250, 250, 246)]
    pts = []
    while len(pts) < 7:
        x, y = rng.randrange(3, TS - 3), rng.randrange(3, TS - 3)
        if all((x - a) ** 2 + (y - b) ** 2 > 40 for a, b in pts):
            pts.append((x, y))
    for i, (x, y) in enumerate(pts):
        draw_flower(t, x, y, petals[i % len(petals)], (236, 150, 40), i % 3 != 2)


def draw_paving(t, rng, moss=False):
    n = value_noise(rng, 8)
    slab = {}
    for r in range(2):
        for c in range(2):
            slab[(r, c)] = shade((178, 170, 152), rng.randint(-12, 10))
    grout = (122, 116, 104)
    for y in range(TS):
        r = y // 16
        off = 8 if r == 1 else 0
        for x in range(TS):
            xs = (x + off) % TS
            c = xs // 16
            lx, ly = xs % 16, y % 16
            if lx == 0 or ly == 0:
                col = grout
            else:
                col = shade(slab[(r, c)], int((n(x, y) - 0.5) * 16) + rng.randint(-4, 4))
                if lx == 1 or ly == 1:
                    col = shade(col, 14)
                elif lx == 15 or ly == 15:
                    col = shade(col, -14)
            t.set(x, y, col)
    for _ in range(40):
        x, y = rng.randrange(TS), rng.randrange(TS)
        if t.get(x, y)[0] > 130:
            t.set(x, y, shade(t.get(x, y), rng.choice((-22, 18))))
    if moss:
        for y in range(TS):
            for x in range(TS):
                p = t.get(x, y)
                if tuple(p[:3]) == grout and rng.random() < 0.55:
                    t.set(x, y, rng.choice([(84, 124, 62), (96, 140, 70), (70, 108, 54)]))
        for _ in range(6):
            cx, cy = rng.randrange(TS), rng.choice((0, 16)) + rng.choice((-1, 1))
            for _ in range(6):
                t.blend(cx + rng.randint(-2, 2), cy + rng.randint(-1, 1), (86, 132, 64), 0.8)
        # a crack across one slab
        x, y = 20, 3
        for _ in range(10):
            t.set(x, y, (100, 96, 88))
            x += rng.choice((0, 1, 1))
            y += 1


def draw_hall_floor(t, rng):
    a, b = (230, 226, 214), (214, 210, 198)
    grout = (186, 182, 170)
    for y in range(TS):
        for x in range(TS):
            lx, ly = x % 16, y % 16
            base = a if ((x // 16) + (y // 16)) % 2 == 0 else b
            if lx == 0 or ly == 0:
                col = grout
            else:
                col = shade(base, rng.randint(-3, 3))
                if lx == 1 or ly == 1:
                    col = shade(col, 8)
                elif lx == 15 or ly == 15:
                    col = shade(col, -8)
            t.set(x, y, col)
    # soft sheen
    for i in range(6):
        t.blend(4 + i, 10 - i, (255, 255, 255), 0.35)
        t.blend(20 + i, 26 - i, (255, 255, 255), 0.35)
    for _ in range(12):
        x, y = rng.randrange(TS), rng.randrange(TS)
        if t.get(x, y)[0] > 200:
            t.set(x, y, shade(t.get(x, y), -14))


def draw_wood_floor(t, rng):
    n = value_noise(rng, 4)
    joints = [4, 20, 12, 28]
    for row in range(4):
        base = shade((160, 106, 64), rng.randint(-14, 10))
        grain_rows = {rng.randrange(1, 6), rng.randrange(1, 6)}
        phase = rng.random() * 6.28
        for ly in range(8):
            y = row * 8 + ly
            for x in range(TS):
                col = shade(base, int((n(x, y) - 0.5) * 14) + rng.randint(-3, 3))
                wob = int(round(math.sin(x * 0.4 + phase) * 0.7))
                if (ly + wob) in grain_rows:
                    col = shade(col, -14)
                if ly == 0:
                    col = shade(col, 12)
                if ly == 7:
                    col = (96, 62, 38)
                t.set(x, y, col)
            jx = joints[row]
            for ly in range(7):
                t.set(jx, row * 8 + ly, (104, 68, 40))
                t.set(jx + 1, row * 8 + ly, shade(base, 12))
        # a knot
        kx, ky = rng.randrange(TS), row * 8 + rng.randint(2, 5)
        t.set(kx, ky, (110, 70, 40))
        t.set(kx + 1, ky, (120, 78, 46))


def draw_lecture_carpet(t, rng):
    n = value_noise(rng, 8)
    for y in range(TS):
        for x in range(TS):
            col = shade((126, 34, 46), int((n(x, y) - 0.5) * 16) + rng.randint(-7, 7))
            if (x + y) % 16 == 0 or (x - y) % 16 == 0:
                col = shade((46, 54, 108), rng.randint(-5, 5))
            elif (x + y) % 16 in (1, 15) or (x - y) % 16 in (1, 15):
                col = shade(col, -12)
            t.set(x, y, col)
    for y in range(TS):
        for x in range(TS):
            if (x + y) % 16 == 8 and (x - y) % 16 == 8:
                for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
                    t.set(x + dx, y + dy, (206, 166, 74) if (dx, dy) == (0, 0) else (176, 132, 60))


def draw_library_carpet(t, rng):
    n = value_noise(rng, 8)
    for y in range(TS):
        for x in range(TS):
            col = shade((54, 104, 74), int((n(x, y) - 0.5) * 14) + rng.randint(-6, 6))
            lx, ly = x % 16, y % 16
            if lx == 0 or ly == 0:
                col = shade((44, 88, 62), rng.randint(-3, 3))
            if abs(lx - 8) + abs(ly - 8) == 2:
                col = (92, 146, 104)
            elif lx == 8 and ly == 8:
                col = (170, 150, 80)
            t.set(x, y, col)


def draw_wall(t, rng):
    """Wall with a grey cap at the top and a red brick face below."""
    n = value_noise(rng, 8)
    for y in range(TS):
        for x in range(TS):
            if y < 6:  # cap (top of wall)
                col = shade((82, 80, 90), int((n(x, y) - 0.5) * 10) + rng.randint(-3, 3))
                if y == 0:
                    col = (104, 102, 112)
                elif y == 5:
                    col = (48, 46, 56)
            elif y >= 30:
                col = (64, 44, 40)  # shadow line at floor
            else:
                yy = y - 6
                r = yy // 6
                off = 8 if r % 2 else 0
                lx = (x + off) % 16
                ly = yy % 6
                if ly == 0 or lx == 0:
                    col = (176, 166, 152)  # mortar
                else:
                    bid = (r * 7 + (x + off) // 16 * 3) % 5
                    base = [(156, 84, 64), (146, 78, 60), (166, 94, 70), (150, 88, 66), (140, 74, 58)][bid]
                    col = shade(base, int((n(x, y) - 0.5) * 12) + rng.randint(-4, 4))
                    if ly == 1:
                        col = shade(col, 14)
                    elif ly == 5:
                        col = shade(col, -12)
            t.set(x, y, col)


def draw_wall_dark(t, rng):
    """Top of a wall seen from above: dark slate with bevelled edges."""
    n = value_noise(rng, 8)
    for y in range(TS):
        for x in range(TS):
            col = shade((80, 78, 90), int((n(x, y) - 0.5) * 12) + rng.randint(-3, 3))
            if x == 0 or y == 0 or x == TS - 1 or y == TS - 1:
                col = (50, 48, 58)
            elif x == 1 or y == 1:
                col = shade(col, 16)
            elif x == TS - 2 or y == TS - 2:
                col = shade(col, -14)
            t.set(x, y, col)
    for _ in range(14):
        x, y = rng.randrange(3, TS - 3), rng.randrange(3, TS - 3)
        t.set(x, y, shade(t.get(x, y), rng.choice((-12, 12))))


def draw_door_mat(t, rng):
    """Door threshold: light stone sill with a woven mat in the middle."""
    for y in range(TS):
        for x in range(TS):
            col = shade((184, 176, 160), rng.randint(-5, 5))
            if x in (0, TS - 1):
                col = (110, 104, 94)
            elif x in (1, TS - 2):
                col = (150, 144, 132)
            t.set(x, y, col)
    for y in range(6, 26):
        for x in range(5, 27):
            if x in (5, 26) or y in (6, 25):
                col = (92, 58, 44)
            elif x in (6, 25) or y in (7, 24):
                col = (176, 132, 84)
            else:
                weave = ((x + y) // 2) % 2 if (x // 4 + y // 4) % 2 else ((x - y) // 2) % 2
                col = (138, 84, 56) if weave else (122, 72, 48)
                col = shade(col, rng.randint(-6, 6))
            t.set(x, y, col)
    for x in range(6, 27):
        t.blend(x, 26, (0, 0, 0), 0.22)


def draw_desk(t, rng):
    t.rect(4, 6, 30, 28, (0, 0, 0), 0.25)
    for y in range(3, 26):
        for x in range(2, 30):
            col = shade((178, 126, 78), rng.randint(-4, 4) + (-8 if (y * 3 + x // 9) % 7 == 0 else 0))
            if y >= 23:
                col = (138, 92, 56)
            t.set(x, y, col)
    for x in range(3, 29):
        t.set(x, 4, (210, 162, 110))
    for x in range(2, 30):
        t.set(x, 3, (98, 64, 40))
        t.set(x, 25, (86, 56, 34))
    for y in range(3, 26):
        t.set(2, y, (98, 64, 40))
        t.set(29, y, (98, 64, 40))
    # notebook
    t.rect(8, 8, 18, 18, (232, 232, 222))
    for y in range(10, 18, 2):
        for x in range(9, 18):
            t.set(x, y, (160, 190, 220))
    for x in range(8, 19):
        t.set(x, 19, (120, 84, 56))
    for y in range(8, 19):
        t.set(18, y, (190, 190, 180))
    t.set(10, 9, (220, 90, 90))
    # pencil
    for i in range(7):
        t.set(21 + i, 8 + i, (236, 196, 60))
        t.set(22 + i, 8 + i, (200, 160, 40))
    t.set(28, 15, (60, 50, 40))


def draw_chair(t, rng):
    t.ellipse(17.5, 18.5, 9, 9, (0, 0, 0), 0.22)
    seat, dark, edge = (74, 104, 160), (50, 74, 124), (34, 50, 86)
    for y in range(7, 20):
        for x in range(9, 23):
            corner = (x in (9, 22)) and (y in (7, 19))
            if corner:
                continue
            col = seat
            if x in (9, 22) or y in (7, 19):
                col = edge
            elif y == 8 or x == 10:
                col = shade(seat, 22)
            t.set(x, y, col)
    for y in range(20, 25):
        for x in range(8, 24):
            col = dark
            if y in (20, 24) or x in (8, 23):
                col = edge
            elif y == 21:
                col = shade(dark, 20)
            t.set(x, y, col)


def draw_teacher_desk(t, rng):
    t.rect(0, 6, 31, 29, (0, 0, 0), 0.25)
    for y in range(2, 27):
        for x in range(TS):
            col = shade((122, 76, 46), rng.randint(-4, 4) + (-7 if (y * 5 + x // 11) % 9 == 0 else 0))
            if y >= 23:
                col = (92, 56, 34)
            t.set(x, y, col)
    for x in range(TS):
        t.set(x, 2, (70, 42, 26))
        t.set(x, 3, (156, 104, 66))
        t.set(x, 26, (62, 38, 22))
    # laptop (seen from above, lid open towards the teacher)
    t.rect(5, 6, 18, 8, (44, 48, 60))
    t.rect(6, 7, 17, 7, (90, 150, 210))
    t.rect(5, 9, 18, 17, (186, 190, 198))
    for y in range(10, 15, 2):
        for x in range(6, 18, 2):
            t.set(x, y, (120, 124, 132))
    t.rect(9, 15, 14, 16, (160, 164, 172))
    # stack of papers
    t.rect(22, 8, 28, 17, (210, 210, 200))
    t.rect(21, 7, 27, 16, (244, 244, 236))
    for y in range(9, 16, 2):
        for x in range(22, 26):
            t.set(x, y, (150, 150, 160))
    # mug
    t.ellipse(25, 20.5, 2.5, 2.5, (220, 220, 226))
    t.ellipse(25, 20.5, 1.4, 1.4, (90, 50, 30))


def draw_whiteboard(t, rng):
    draw_wall(t, rng)
    for y in range(4, 26):
        for x in range(TS):
            if y in (4, 25):
                col = (150, 156, 164)
            elif y in (5, 24):
                col = (196, 200, 206)
            else:
                col = (238, 240, 244)
                if (x + y) % 23 in (0, 1):
                    col = (250, 251, 253)
            t.set(x, y, col)
    for x in range(TS):
        t.set(x, 26, (128, 132, 140))
        t.set(x, 27, (96, 100, 108))
    # scribbles
    for x in range(3, 22):
        t.set(x, int(round(9 + math.sin(x * 0.8) * 1.2)), (50, 80, 190))
    for x in range(6, 17):
        if x % 4 != 3:
            t.set(x, 14, (200, 60, 60))
    for x in range(4, 27):
        if x % 5 not in (0, 4):
            t.set(x, 19, (60, 60, 70))
    t.ellipse(25, 12, 3.2, 3.2, (40, 140, 80))
    t.ellipse(25, 12, 2.2, 2.2, (238, 240, 244))
    # markers on the tray
    t.rect(8, 26, 11, 26, (200, 50, 50))
    t.rect(14, 26, 17, 26, (50, 80, 190))


def draw_bookshelf(t, rng):
    frame, back, dark = (104, 64, 36), (58, 36, 22), (70, 42, 24)
    t.rect(0, 0, 31, 31, frame)
    for x in range(TS):
        t.set(x, 0, (132, 86, 50))
        t.set(x, 31, dark)
    comps = [(2, 10), (12, 20), (22, 29)]
    palette = [(164, 44, 44), (44, 84, 152), (44, 124, 74), (196, 156, 56),
               (112, 62, 132), (206, 204, 190), (152, 84, 44), (60, 140, 150)]
    for (y0, y1) in comps:
        t.rect(2, y0, 29, y1, back)
        x = 2
        while x < 29:
            w = rng.randint(2, 4)
            if x + w > 30:
                w = 30 - x
            if rng.random() < 0.08:
                x += w
                continue
            top = y0 + rng.randint(0, 3)
            col = rng.choice(palette)
            for bx in range(x, min(x + w, 30) - 1 if w > 2 else x + w):
                for by in range(top, y1 + 1):
                    c = col
                    if bx == x:
                        c = shade(col, 24)
                    if by == top + 2:
                        c = shade(col, 50)
                    t.set(bx, by, c)
            x += w
        for x in range(2, 30):
            t.set(x, y1 + 1, (132, 86, 50))
    for y in range(TS):
        t.set(0, y, dark)
        t.set(1, y, (132, 86, 50))
        t.set(30, y, frame)
        t.set(31, y, dark)


def draw_plant(t, rng):
    t.ellipse(17.5, 19.5, 11, 9, (0, 0, 0), 0.25)
    t.ellipse(16, 17, 8.5, 8.5, (150, 74, 44))
    t.ellipse(16, 17, 7.5, 7.5, (198, 110, 70))
    t.ellipse(16, 17, 6, 6, (82, 54, 36))
    leaf, hi, dk = (58, 136, 62), (108, 184, 94), (36, 96, 46)
    for k in range(7):
        a = k * (2 * math.pi / 7) + 0.3
        cx, cy = 16 + math.cos(a) * 7.5, 16.5 + math.sin(a) * 7.5
        t.ellipse(cx, cy, 6.0, 3.0, dk, 1.0, a)
        t.ellipse(cx, cy, 5.0, 2.2, leaf, 1.0, a)
        for i in range(-3, 4):
            t.set(int(cx + math.cos(a) * i), int(cy + math.sin(a) * i), hi)
    t.ellipse(16, 16.5, 3.2, 3.2, dk)
    t.ellipse(15.5, 16, 2.2, 2.2, leaf)
    t.set(15, 15, hi)


def draw_tree(t, rng):
    t.ellipse(18.5, 20, 14.5, 11.5, (0, 0, 0), 0.3)
    blobs = [(16, 15.5, 10.5)]
    for k in range(7):
        a = k * (2 * math.pi / 7) + 0.5
        blobs.append((16 + math.cos(a) * 7.5, 15.5 + math.sin(a) * 7.5, 6.5 + rng.random() * 0.8))
    n = value_noise(rng, 8)
    pal = [(28, 70, 40), (40, 98, 50), (56, 126, 58), (84, 158, 72), (128, 190, 96)]
    mask = {}
    for y in range(TS):
        for x in range(TS):
            best = None
            for (bx, by, br) in blobs:
                d = math.hypot(x + 0.5 - bx, y + 0.5 - by)
                if d <= br:
                    # light from the top-left, per blob
                    lv = ((bx - (x + 0.5)) + (by - (y + 0.5))) / (br * 1.6)
                    best = lv if best is None else max(best, lv)
            if best is not None:
                gl = ((16 - x) + (15.5 - y)) / 40.0
                v = 0.45 + best * 0.5 + gl * 0.5 + (n(x, y) - 0.5) * 0.5
                mask[(x, y)] = v
    for (x, y), v in mask.items():
        idx = 1 if v < 0.35 else 2 if v < 0.65 else 3 if v < 0.95 else 4
        edge = any((x + dx, y + dy) not in mask for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))
        t.set(x, y, pal[0] if edge else pal[idx])
    for _ in range(10):
        x, y = rng.randrange(6, 20), rng.randrange(5, 18)
        if (x, y) in mask and mask[(x, y)] > 0.6:
            t.set(x, y, (150, 206, 112))


def draw_water(t, rng):
    n = value_noise(rng, 4)
    n2 = value_noise(rng, 8)
    for y in range(TS):
        for x in range(TS):
            v = 0.6 * n(x, y) + 0.4 * n2(x, y)
            t.set(x, y, shade(mix((46, 110, 182), (78, 156, 218), v), rng.randint(-3, 3)))
    for _ in range(11):
        x, y = rng.randrange(TS), rng.randrange(TS)
        ln = rng.randint(3, 6)
        for i in range(ln):
            t.set(x + i, y, (176, 218, 246) if 0 < i < ln - 1 else (124, 184, 232))
        for i in range(1, ln - 1):
            t.set(x + i, y + 1, (40, 98, 168))


def draw_bench(t, rng):
    t.rect(4, 9, 30, 27, (0, 0, 0), 0.22)
    wood = (182, 128, 74)
    for (y0, y1) in ((6, 8), (11, 13), (15, 17), (19, 21)):
        for y in range(y0, y1 + 1):
            for x in range(2, 30):
                col = shade(wood, rng.randint(-5, 5))
                if y == y0:
                    col = shade(col, 24)
                elif y == y1:
                    col = shade(col, -26)
                if x in (2, 29):
                    col = shade(col, -30)
                t.set(x, y, col)
    for x in range(2, 30):
        t.blend(x, 9, (0, 0, 0), 0.3)
        t.blend(x, 10, (0, 0, 0), 0.3)
    metal, mhi = (62, 64, 72), (120, 124, 134)
    for (x0, x1) in ((4, 6), (25, 27)):
        for y in range(5, 24):
            for x in range(x0, x1 + 1):
                t.set(x, y, mhi if x == x0 else metal)


def draw_collision(t, rng):
    for y in range(TS):
        for x in range(TS):
            t.set(x, y, (230, 40, 40), 110)
            if x < 2 or y < 2 or x > TS - 3 or y > TS - 3:
                t.set(x, y, (255, 20, 20), 190)
    for i in range(3, TS - 3):
        for d in (0, 1):
            t.set(i + d, i, (255, 20, 20), 170)
            t.set(TS - 1 - i - d, i, (255, 20, 20), 170)


def draw_fountain_center(t, rng):
    draw_water(t, rng)
    t.ellipse(16, 16, 10, 10, (120, 180, 230), 0.5)
    t.ellipse(16.5, 17, 7.5, 7.5, (0, 0, 0), 0.25)
    t.ellipse(16, 16, 7, 7, (120, 118, 112))
    t.ellipse(16, 16, 6, 6, (196, 194, 186))
    t.ellipse(16, 16, 4, 4, (150, 148, 142))
    t.ellipse(16, 16, 3.2, 3.2, (112, 176, 228))
    t.ellipse(15.5, 15.5, 1.5, 1.5, (232, 244, 252))
    for _ in range(46):
        a = rng.random() * 2 * math.pi
        r = 8 + rng.random() * 5.5
        x, y = int(16 + math.cos(a) * r), int(16 + math.sin(a) * r)
        t.blend(x, y, (240, 248, 255), 0.85)
    for k in range(8):
        a = k * math.pi / 4
        for r in (4.5, 5.5):
            t.blend(int(16 + math.cos(a) * r), int(16 + math.sin(a) * r), (236, 246, 255), 0.7)


def draw_fountain_rim(t, rng):
    n = value_noise(rng, 8)
    for y in range(TS):
        r = y // 8
        off = 8 if r % 2 else 0
        for x in range(TS):
            lx = (x + off) % 16
            ly = y % 8
            if lx == 0 or ly == 0:
                col = (140, 136, 128)
            else:
                col = shade((200, 196, 184), int((n(x, y) - 0.5) * 14) + rng.randint(-4, 4))
                if ly == 1 or lx == 1:
                    col = shade(col, 16)
                elif ly == 7 or lx == 15:
                    col = shade(col, -18)
            t.set(x, y, col)
    for _ in range(8):
        x, y = rng.randrange(TS), rng.randrange(TS)
        t.set(x, y, (120, 140, 96))


TILE_DRAWERS = {
    GRASS: lambda t, r: draw_grass(t, r),
    GRASS_FLOWERS: draw_grass_flowers,
    PAVING: lambda t, r: draw_paving(t, r),
    HALL_FLOOR: draw_hall_floor,
    WOOD_FLOOR: draw_wood_floor,
    LECTURE_CARPET: draw_lecture_carpet,
    LIBRARY_CARPET: draw_library_carpet,
    WALL: draw_wall,
    WALL_DARK: draw_wall_dark,
    DOOR_MAT: draw_door_mat,
    DESK: draw_desk,
    CHAIR: draw_chair,
    TEACHER_DESK: draw_teacher_desk,
    WHITEBOARD: draw_whiteboard,
    BOOKSHELF: draw_bookshelf,
    PLANT: draw_plant,
    TREE: draw_tree,
    WATER: draw_water,
    BENCH: draw_bench,
    COLLISION: draw_collision,
    FOUNTAIN_CENTER: draw_fountain_center,
    FOUNTAIN_RIM: draw_fountain_rim,
    GRASS_TUFTS: lambda t, r: draw_grass(t, r, tufts=True),
    PAVING_MOSS: lambda t, r: draw_paving(t, r, moss=True),
}


def build_tiles():
    tiles = []
    for tid in range(TILECOUNT):
        t = Tile()
        rng = random.Random(SEED * 1000 + tid)
        if tid in TILE_DRAWERS:
            TILE_DRAWERS[tid](t, rng)
        tiles.append(t)
    return tiles


def tileset_rgba(tiles):
    w, h = COLS * TS, ROWS * TS
    buf = bytearray(w * h * 4)
    for tid, t in enumerate(tiles):
        ox, oy = (tid % COLS) * TS, (tid // COLS) * TS
        for y in range(TS):
            for x in range(TS):
                p = t.px[y * TS + x]
                i = ((oy + y) * w + ox + x) * 4
                buf[i:i + 4] = bytes(p) if p[3] else b"\0\0\0\0"
    return w, h, buf


# ================================================================ map layout
W, H = 80, 50
E = -1  # empty cell


class Zone:
    def __init__(self, name, kind, capacity, x0, y0, x1, y1):
        # x0..x1 / y0..y1 inclusive, in tiles
        self.name, self.kind, self.capacity = name, kind, capacity
        self.x0, self.y0, self.x1, self.y1 = x0, y0, x1, y1

    def cells(self):
        for y in range(self.y0, self.y1 + 1):
            for x in range(self.x0, self.x1 + 1):
                yield x, y

    def px_rect(self):
        return (self.x0 * TS, self.y0 * TS, (self.x1 - self.x0 + 1) * TS,
                (self.y1 - self.y0 + 1) * TS)


def build_map():
    rng = random.Random(SEED)
    ground = [[GRASS] * W for _ in range(H)]
    wallm = [[False] * W for _ in range(H)]
    wall_override = {}
    furn = [[E] * W for _ in range(H)]

    def fill(layer, x0, y0, x1, y1, v):
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                layer[y][x] = v

    def ring(x0, y0, x1, y1):
        """Wall ring around the interior rectangle (inclusive)."""
        for x in range(x0 - 1, x1 + 2):
            wallm[y0 - 1][x] = True
            wallm[y1 + 1][x] = True
        for y in range(y0 - 1, y1 + 2):
            wallm[y][x0 - 1] = True
            wallm[y][x1 + 1] = True

    def door(cells, tile=DOOR_MAT):
        for (x, y) in cells:
            assert wallm[y][x], ("door not in a wall", x, y)
            wallm[y][x] = False
            ground[y][x] = tile

    # --- rooms -----------------------------------------------------------
    zones = [
        Zone("Courtyard", "open", 0, 1, 15, 78, 48),
        Zone("Main Hallway", "open", 0, 1, 11, 57, 13),
        Zone("Classroom A", "classroom", 30, 1, 1, 12, 9),
        Zone("Classroom B", "classroom", 30, 14, 1, 25, 9),
        Zone("Classroom C", "classroom", 30, 27, 1, 38, 9),
        Zone("Lecture Hall", "classroom", 120, 59, 1, 78, 13),
        Zone("Library", "silent", 40, 40, 1, 57, 9),
    ]
    Z = {z.name: z for z in zones}
    floors = {"Courtyard": GRASS, "Main Hallway": HALL_FLOOR,
              "Classroom A": WOOD_FLOOR, "Classroom B": WOOD_FLOOR,
              "Classroom C": WOOD_FLOOR, "Lecture Hall": LECTURE_CARPET,
              "Library": LIBRARY_CARPET}

    # map border
    for x in range(W):
        wallm[0][x] = wallm[H - 1][x] = True
    for y in range(H):
        wallm[y][0] = wallm[y][W - 1] = True

    for z in zones:
        ring(z.x0, z.y0, z.x1, z.y1)
        fill(ground, z.x0, z.y0, z.x1, z.y1, floors[z.name])
    # ground under the walls: hallway tiles (hidden by the wall layer anyway)
    for y in range(H):
        for x in range(W):
            if wallm[y][x]:
                ground[y][x] = HALL_FLOOR

    # --- doors -------------------------------------------------------------
    for name in ("Classroom A", "Classroom B", "Classroom C"):
        z = Z[name]
        door([(z.x0 + 5, z.y1 + 1), (z.x0 + 6, z.y1 + 1)])
    door([(48, 10), (49, 10)])                           # library -> hallway
    door([(58, 11), (58, 12), (58, 13)])                 # lecture hall -> hallway
    door([(68, 14), (69, 14)])                           # lecture hall -> courtyard
    door([(x, 14) for x in range(8, 12)], PAVING)        # hallway -> courtyard (west)
    door([(x, 14) for x in range(37, 42)], PAVING)       # hallway -> courtyard (main)
    door([(x, 14) for x in range(50, 54)], PAVING)       # hallway -> courtyard (east)

    # --- classrooms --------------------------------------------------------
    for name in ("Classroom A", "Classroom B", "Classroom C"):
        z = Z[name]
        x0, y0 = z.x0, z.y0
        for x in range(x0 + 3, x0 + 9):
            wall_override[(x, y0 - 1)] = WHITEBOARD
        furn[y0 + 1][x0 + 5] = furn[y0 + 1][x0 + 6] = TEACHER_DESK
        for row in (3, 5, 7):
            for dx in (1, 2, 3, 4, 7, 8, 9, 10):
                furn[y0 + row][x0 + dx] = DESK
                furn[y0 + row + 1][x0 + dx] = CHAIR
        furn[y0][x0] = PLANT
        furn[y0][x0 + 11] = PLANT

    # --- lecture hall ------------------------------------------------------
    z = Z["Lecture Hall"]
    for x in range(64, 74):
        wall_override[(x, 0)] = WHITEBOARD
    furn[2][68] = furn[2][69] = TEACHER_DESK
    for y in (4, 6, 8, 10):
        for x in list(range(60, 68)) + list(range(70, 78)):
            furn[y][x] = DESK
            furn[y + 1][x] = CHAIR
    furn[1][59] = furn[1][78] = PLANT
    furn[13][78] = PLANT

    # --- library -----------------------------------------------------------
    for x in range(40, 58):
        furn[1][x] = BOOKSHELF
    for y in (3, 5):
        for x in list(range(41, 47)) + list(range(51, 57)):
            furn[y][x] = BOOKSHELF
    for x in list(range(42, 46)) + list(range(52, 56)):
        furn[7][x] = DESK
        furn[8][x] = CHAIR
    furn[9][40] = furn[9][57] = PLANT

    # --- hallway -----------------------------------------------------------
    furn[11][1] = furn[13][1] = PLANT
    # notice boards on the hallway side of the classroom wall
    for x in (3, 4, 23, 24, 35, 36, 44, 45):
        wall_override[(x, 10)] = WHITEBOARD

    # --- courtyard ---------------------------------------------------------
    c = Z["Courtyard"]
    for (x, y) in c.cells():
        r = rng.random()
        ground[y][x] = GRASS_FLOWERS if r < 0.06 else GRASS_TUFTS if r < 0.16 else GRASS

    paths = [
        (37, 15, 41, 24),   # main path from the hallway to the plaza
        (30, 24, 48, 38),   # central plaza
        (8, 15, 11, 45),    # west path
        (67, 15, 70, 45),   # east path (from the lecture hall door)
        (50, 15, 53, 20),   # stub from the east hallway opening
        (50, 20, 70, 21),   # ...joining the east path
        (8, 30, 70, 32),    # east-west promenade through the plaza
        (8, 43, 70, 45),    # southern promenade
        (37, 38, 41, 45),   # plaza -> south
    ]
    pave = set()
    for (x0, y0, x1, y1) in paths:
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                pave.add((x, y))
    for (x, y) in sorted(pave):
        ground[y][x] = PAVING_MOSS if rng.random() < 0.1 else PAVING

    # flower beds
    beds = [(14, 17, 19, 18), (58, 24, 63, 25), (15, 38, 20, 39),
            (58, 38, 63, 39), (2, 22, 5, 23), (73, 22, 76, 23), (26, 46, 33, 47),
            (45, 46, 52, 47)]
    for (x0, y0, x1, y1) in beds:
        fill(ground, x0, y0, x1, y1, GRASS_FLOWERS)

    # fountain (7x7: stone rim around 5x5 water, spout in the middle)
    for y in range(28, 35):
        for x in range(36, 43):
            if x in (36, 42) or y in (28, 34):
                furn[y][x] = FOUNTAIN_RIM
            else:
                furn[y][x] = WATER
    furn[31][39] = FOUNTAIN_CENTER

    # benches: around the plaza, facing the fountain, and along the promenades
    for (x, y) in [(32, 26), (33, 26), (45, 26), (46, 26),
                   (32, 36), (33, 36), (45, 36), (46, 36),
                   (20, 42), (21, 42), (28, 42), (29, 42),
                   (49, 42), (50, 42), (57, 42), (58, 42),
                   (20, 29), (21, 29), (57, 29), (58, 29),
                   (14, 22), (15, 22), (63, 18), (64, 18)]:
        furn[y][x] = BENCH

    # potted plants at the entrances
    for (x, y) in [(36, 15), (42, 15), (7, 15), (12, 15), (49, 15), (54, 15),
                   (66, 15), (71, 15)]:
        furn[y][x] = PLANT

    # trees: never on a path and never touching another piece of furniture
    # (not even diagonally), so they cannot close off pockets of lawn.
    def tree_ok(x, y):
        if not (c.x0 <= x <= c.x1 and c.y0 <= y <= c.y1) or (x, y) in pave:
            return False
        if ground[y][x] == GRASS_FLOWERS:
            return False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if furn[y + dy][x + dx] != E:
                    return False
        # keep the cell in front of benches free
        return furn[y - 1][x] != BENCH and furn[y + 1][x] != BENCH

    trees = []
    # a row of trees along the southern wall
    for x in range(3, 78, 3):
        trees.append((x, 47 + (x // 3) % 2))
    # along the west and east walls
    for y in range(17, 45, 3):
        trees.append((2 + (y // 3) % 2, y))
        trees.append((77 - (y // 3) % 2, y))
    # groves on the lawns
    for (gx, gy) in [(17, 24), (27, 19), (24, 38), (57, 35), (62, 27), (45, 17),
                     (33, 42), (47, 41), (15, 34), (60, 16), (29, 27), (52, 26)]:
        for (dx, dy) in [(0, 0), (2, 1), (-2, 1), (1, -2), (-1, 3), (3, -1)]:
            trees.append((gx + dx, gy + dy))
    # scattered across the lawns (jittered grid)
    for gy in range(16, 46, 3):
        for gx in range(13, 67, 4):
            trees.append((gx + rng.randint(-1, 1), gy + rng.randint(0, 1)))
    for (x, y) in trees:
        if tree_ok(x, y) and rng.random() < 0.8:
            furn[y][x] = TREE

    # --- walls layer ---------------------------------------------------------
    walls = [[E] * W for _ in range(H)]
    for y in range(H):
        for x in range(W):
            if wallm[y][x]:
                below_is_wall = (y + 1 >= H) or wallm[y + 1][x]
                walls[y][x] = WALL_DARK if below_is_wall else WALL
    for (x, y), tid in wall_override.items():
        assert wallm[y][x]
        walls[y][x] = tid

    # --- collision -----------------------------------------------------------
    blocked = [[wallm[y][x] or furn[y][x] in BLOCKING_FURNITURE for x in range(W)]
               for y in range(H)]

    spawn_tile = (39, 18)
    return ground, walls, furn, blocked, zones, spawn_tile


# ================================================================ checks
def verify(ground, walls, furn, blocked, zones, spawn):
    # ground everywhere
    assert all(ground[y][x] != E for y in range(H) for x in range(W))
    # border is solid wall
    for x in range(W):
        assert blocked[0][x] and blocked[H - 1][x]
    for y in range(H):
        assert blocked[y][0] and blocked[y][W - 1]
    # chairs never block, doors never block
    for y in range(H):
        for x in range(W):
            if furn[y][x] == CHAIR or ground[y][x] == DOOR_MAT:
                assert not blocked[y][x], (x, y)
            if walls[y][x] != E:
                assert blocked[y][x]
                assert furn[y][x] == E, ("furniture on a wall", x, y)
    # zones: inside map, no overlap, no walls inside, grid aligned by construction
    owner = {}
    for z in zones:
        for (x, y) in z.cells():
            assert 0 < x < W - 1 and 0 < y < H - 1, z.name
            assert (x, y) not in owner, ("zones overlap", z.name, owner[(x, y)])
            owner[(x, y)] = z.name
            assert walls[y][x] == E, ("wall inside zone", z.name, x, y)
    # spawn
    sx, sy = spawn
    assert owner.get(spawn) == "Courtyard"
    assert not blocked[sy][sx], "spawn is blocked"
    # BFS over walkable cells
    seen = {spawn}
    q = deque([spawn])
    while q:
        x, y = q.popleft()
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nx, ny = x + dx, y + dy
            if 0 <= nx < W and 0 <= ny < H and not blocked[ny][nx] and (nx, ny) not in seen:
                seen.add((nx, ny))
                q.append((nx, ny))
    walkable = {(x, y) for y in range(H) for x in range(W) if not blocked[y][x]}
    unreachable = walkable - seen
    assert not unreachable, ("unreachable walkable cells", sorted(unreachable)[:20])
    stats = {}
    for z in zones:
        cells = list(z.cells())
        free = sum(1 for c in cells if c in seen)
        assert free > 0, ("zone has no reachable cells", z.name)
        stats[z.name] = (len(cells), free)
        if z.kind == "classroom":
            # room for ~30 avatars to stand (plus chairs are walkable anyway)
            assert free >= 40, (z.name, free)
    # every room zone has a door: some reachable cell just outside the zone edge
    # that is adjacent to a reachable cell inside the zone
    for z in zones:
        inside = set(z.cells())
        exits = 0
        for (x, y) in inside:
            if (x, y) not in seen:
                continue
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                n = (x + dx, y + dy)
                if n not in inside and n in seen:
                    exits += 1
        assert exits >= 2, ("zone has no door of width >= 2", z.name)
    return stats, len(walkable)


# ================================================================ TMJ output
def gid_layer(grid):
    return [(v + 1) if v != E else 0 for row in grid for v in row]


def write_tmj(ground, walls, furn, blocked, zones, spawn):
    layers = []
    lid = 1
    datas = {}
    for name, grid, visible in (("ground", ground, True), ("walls", walls, True),
                                ("furniture", furn, True)):
        key = "__DATA_%d__" % lid
        datas[key] = gid_layer(grid)
        layers.append({"data": key, "height": H, "id": lid, "name": name,
                       "opacity": 1, "type": "tilelayer", "visible": visible,
                       "width": W, "x": 0, "y": 0})
        lid += 1
    key = "__DATA_%d__" % lid
    datas[key] = [(COLLISION + 1) if blocked[y][x] else 0 for y in range(H) for x in range(W)]
    layers.append({"data": key, "height": H, "id": lid, "name": "collision",
                   "opacity": 1, "type": "tilelayer", "visible": False,
                   "width": W, "x": 0, "y": 0})
    lid += 1

    oid = 1
    objs = []
    for z in zones:
        x, y, w, h = z.px_rect()
        objs.append({"height": h, "id": oid, "name": z.name,
                     "properties": [{"name": "kind", "type": "string", "value": z.kind},
                                    {"name": "capacity", "type": "int", "value": z.capacity}],
                     "rotation": 0, "type": "zone", "visible": True,
                     "width": w, "x": x, "y": y})
        oid += 1
    layers.append({"draworder": "topdown", "id": lid, "name": "zones",
                   "objects": objs, "opacity": 1, "type": "objectgroup",
                   "visible": True, "x": 0, "y": 0})
    lid += 1
    sx, sy = spawn
    layers.append({"draworder": "topdown", "id": lid, "name": "spawns",
                   "objects": [{"height": 0, "id": oid, "name": "spawn", "point": True,
                                "rotation": 0, "type": "spawn", "visible": True,
                                "width": 0, "x": sx * TS + TS // 2, "y": sy * TS + TS // 2}],
                   "opacity": 1, "type": "objectgroup", "visible": True, "x": 0, "y": 0})
    oid += 1
    lid += 1

    m = {
        "compressionlevel": -1,
        "height": H,
        "infinite": False,
        "layers": layers,
        "nextlayerid": lid,
        "nextobjectid": oid,
        "orientation": "orthogonal",
        "renderorder": "right-down",
        "tiledversion": "1.10.2",
        "tileheight": TS,
        "tilesets": [{"columns": COLS, "firstgid": 1, "image": "../tilesets/campus.png",
                      "imageheight": ROWS * TS, "imagewidth": COLS * TS, "margin": 0,
                      "name": "campus", "spacing": 0, "tilecount": TILECOUNT,
                      "tileheight": TS, "tilewidth": TS}],
        "tilewidth": TS,
        "type": "map",
        "version": "1.10",
        "width": W,
    }
    text = json.dumps(m, indent=1)
    for key, data in datas.items():
        rows = [",".join(str(v) for v in data[r * W:(r + 1) * W]) for r in range(H)]
        text = text.replace('"%s"' % key, "[" + ",\n".join(rows) + "]")
    os.makedirs(os.path.dirname(MAP_PATH), exist_ok=True)
    with open(MAP_PATH, "w") as f:
        f.write(text + "\n")
    # round-trip sanity check
    with open(MAP_PATH) as f:
        back = json.load(f)
    for layer in back["layers"]:
        if layer["type"] == "tilelayer":
            assert len(layer["data"]) == W * H
            assert all(0 <= g <= TILECOUNT for g in layer["data"])
    assert all(g != 0 for g in back["layers"][0]["data"])
    return back


# ================================================================ preview
def downscale_tile(t, f):
    """Downscale a tile by factor f with premultiplied-alpha averaging."""
    s = TS // f
    out = []
    for by in range(s):
        for bx in range(s):
            r = g = b = a = 0.0
            for y in range(by * f, by * f + f):
                for x in range(bx * f, bx * f + f):
                    p = t.px[y * TS + x]
                    al = p[3] / 255.0
                    r += p[0] * al
                    g += p[1] * al
                    b += p[2] * al
                    a += al
            n = f * f
            if a > 0:
                out.append((r / a, g / a, b / a, a / n))
            else:
                out.append((0, 0, 0, 0))
    return s, out


def render_preview(path, tiles, layers, zones, spawn, f, overlay=None):
    small = [downscale_tile(t, f) for t in tiles]
    s = TS // f
    w, h = W * s, H * s
    img = [[0.0, 0.0, 0.0] for _ in range(w * h)]
    for grid in layers:
        for ty in range(H):
            for tx in range(W):
                tid = grid[ty][tx]
                if tid == E:
                    continue
                _, px = small[tid]
                for y in range(s):
                    row = (ty * s + y) * w + tx * s
                    for x in range(s):
                        r, g, b, a = px[y * s + x]
                        if a <= 0:
                            continue
                        d = img[row + x]
                        d[0] = r * a + d[0] * (1 - a)
                        d[1] = g * a + d[1] * (1 - a)
                        d[2] = b * a + d[2] * (1 - a)
    if overlay is not None:
        for ty in range(H):
            for tx in range(W):
                if overlay[ty][tx]:
                    for y in range(s):
                        for x in range(s):
                            d = img[(ty * s + y) * w + tx * s + x]
                            for i, cv in enumerate((255, 0, 0)):
                                d[i] = cv * 0.45 + d[i] * 0.55
    colours = [(255, 255, 0), (0, 255, 255), (255, 128, 0), (255, 0, 255),
               (0, 255, 0), (255, 64, 64), (80, 160, 255)]
    for z, col in zip(zones, colours):
        x0, y0 = z.x0 * s, z.y0 * s
        x1, y1 = (z.x1 + 1) * s - 1, (z.y1 + 1) * s - 1
        for x in range(x0, x1 + 1):
            img[y0 * w + x] = list(col)
            img[y1 * w + x] = list(col)
        for y in range(y0, y1 + 1):
            img[y * w + x0] = list(col)
            img[y * w + x1] = list(col)
    sx, sy = spawn
    cx, cy = sx * s + s // 2, sy * s + s // 2
    for d in range(-s, s + 1):
        for (x, y) in ((cx + d, cy), (cx, cy + d)):
            img[y * w + x] = [255, 255, 255]
    buf = bytearray(w * h * 4)
    for i, d in enumerate(img):
        buf[i * 4:i * 4 + 4] = bytes((clamp(d[0]), clamp(d[1]), clamp(d[2]), 255))
    write_png(path, w, h, buf)


# ================================================================ main
def main():
    tiles = build_tiles()
    w, h, buf = tileset_rgba(tiles)
    write_png(TILESET_PATH, w, h, buf)

    ground, walls, furn, blocked, zones, spawn = build_map()
    stats, nwalk = verify(ground, walls, furn, blocked, zones, spawn)
    write_tmj(ground, walls, furn, blocked, zones, spawn)

    render_preview(PREVIEW_PATH, tiles, [ground, walls, furn], zones, spawn, 4)
    render_preview(PREVIEW2_PATH, tiles, [ground, walls, furn], zones, spawn, 2)
    render_preview(COLLISION_PREVIEW_PATH, tiles, [ground, walls, furn], zones, spawn, 4,
                   overlay=blocked)

    print("tileset:", TILESET_PATH, "(%dx%d, %d tiles)" % (w, h, TILECOUNT))
    print("map:    ", MAP_PATH)
    print("walkable cells (all reachable from spawn):", nwalk)
    for z in zones:
        x, y, zw, zh = z.px_rect()
        cells, free = stats[z.name]
        print("  %-13s kind=%-9s cap=%-3d px=(%d,%d,%d,%d) cells=%d walkable=%d"
              % (z.name, z.kind, z.capacity, x, y, zw, zh, cells, free))
    sx, sy = spawn
    print("spawn: tile (%d,%d) px (%d,%d)" % (sx, sy, sx * TS + TS // 2, sy * TS + TS // 2))


if __name__ == "__main__":
    main()
