#!/usr/bin/env python3
"""Builds services/print/assets/glyphs.bin.gz, the bitmap font of wix-print's glyph raster
(`services/print/src/glyphs.rs`), from GNU Unifont as packaged by Debian.

Not run by CI: the generated asset is committed. Rerun it only to move to another Unifont.

Sources (Debian bookworm, Unifont 15.0.01; any Unifont >= 13 has the same layout):
  unifont        /usr/share/unifont/unifont.hex             plane 0, "XXXX:hex" 8x16 / 16x16 bitmaps
                 /usr/share/unifont/plane00-combining.txt   plane-0 combining characters
  fonts-unifont  /usr/share/fonts/opentype/unifont/unifont_upper.otf
                                                             planes 1-2 (emoji, historic scripts, ...),
                                                             outlines made of 4x4-unit pixel squares
Unifont is dual-licensed SIL OFL 1.1 / GPL-2+ with the GNU font embedding exception; see
services/print/assets/UNIFONT-LICENSE.txt, which must travel with the asset.

How to run (from the repository root):
  mkdir -p /tmp/uf && (cd /tmp/uf && apt-get download unifont fonts-unifont)
  pip install fonttools 'unicodedata2==15.0.0'   # Unicode 15.0 = the version Unifont 15 covers
  python3 scripts/fonts/build-glyphs.py --debs /tmp/uf [--verify]

Needs dpkg-deb (to unpack the .debs) and about 5 s; --verify additionally rasterises plane 0 from
unifont.otf and checks it equals unifont.hex (55513 glyphs, 0 differ with 15.0.01), which proves
the outline rasteriser used for planes 1-2 (about 25 s). The output is byte-for-byte reproducible.

What goes in:
  every glyph of unifont.hex and unifont_upper.otf, except code points that are unassigned in
  Unicode 15.0 (Unifont draws those as hex-code placeholders), controls, surrogates, private use,
  and default-ignorable / invisible characters (ZWJ, variation selectors, tags, ...: Unifont
  draws them as dashed boxes; the renderer skips them instead).

Asset format (gzip of the following; all integers little-endian u32 unless noted):
  magic b"WXGLYPH1"
  n_runs, n_marks, n_shapes, n_ligatures, blob_len
  runs        n_runs x (first code point, count, width in dots: 8 or 16)
              consecutive code points whose glyphs have the same width; sorted, disjoint. The
              glyphs of a run lie back to back in the blob in code point order, 16 rows each,
              width/8 bytes a row, MSB = leftmost dot, 1 = ink. Runs follow each other in the blob.
  marks       n_marks x (first, last, offset: i32) inclusive ranges of zero-width combining marks
              (Unicode Mn/Me, Unifont's plane00-combining.txt and planes 1-2 glyphs with zero
              advance; glyph or not; sorted, disjoint). offset = where Unifont draws the mark's
              glyph, in dots relative to the pen after the previous glyph: -8 / -16 = over the last
              8 / 16 dots of the previous glyph; 0 = from the previous glyph's left edge (that is
              how the right-to-left scripts' marks are designed).
  shapes      n_shapes x (letter, isolated, final, initial, medial): Arabic presentation forms
              (0 = the form does not exist), from the Unicode decompositions <isolated> ...
  ligatures   n_ligatures x (first, second, isolated, final): Arabic lam-alef ligatures.
  blob        blob_len bytes of bitmaps.
"""

import argparse
import gzip
import io
import os
import struct
import subprocess
import sys
import tempfile

try:
    import unicodedata2 as ud
except ImportError:  # pragma: no cover
    sys.exit("needs unicodedata2 (pip install 'unicodedata2==15.0.0')")
try:
    from fontTools.pens.recordingPen import RecordingPen
    from fontTools.ttLib import TTFont
except ImportError:  # pragma: no cover
    sys.exit("needs fonttools (pip install fonttools)")

HEX = "usr/share/unifont/unifont.hex"
COMBINING = "usr/share/unifont/plane00-combining.txt"
UPPER_OTF = "usr/share/fonts/opentype/unifont/unifont_upper.otf"
PLANE0_OTF = "usr/share/fonts/opentype/unifont/unifont.otf"

# Unifont OTF geometry: 1 pixel = 4 font units, 16 rows from y = 56 (top) down to y = -8.
UNIT = 4
TOP = 56

# Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15) plus controls and the emoji
# skin-tone modifiers (a monochrome print cannot show them): never drawn, zero columns. The same
# list is in glyphs.rs (`INVISIBLE`); keep them in step.
INVISIBLE = [
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C),
    (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0x1F3FB, 0x1F3FF), (0xE0000, 0xE0FFF),
]


def invisible(cp):
    return any(a <= cp <= b for a, b in INVISIBLE)


def wanted(cp):
    if invisible(cp):
        return False
    return ud.category(chr(cp)) not in ("Cn", "Cc", "Cs", "Co")


def extract(debs, into):
    found = []
    for name in sorted(os.listdir(debs)):
        if name.endswith(".deb") and (name.startswith("unifont_") or name.startswith("fonts-unifont_")):
            subprocess.run(["dpkg-deb", "-x", os.path.join(debs, name), into], check=True)
            found.append(name)
    if len(found) < 2:
        sys.exit(f"expected unifont_*.deb and fonts-unifont_*.deb in {debs}, found {found}")
    print("extracted", ", ".join(found), file=sys.stderr)


def read_hex(path):
    glyphs = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            cp, bits = line.split(":")
            cp = int(cp, 16)
            if len(bits) not in (32, 64):
                sys.exit(f"U+{cp:04X}: unexpected glyph size {len(bits)}")
            glyphs[cp] = (len(bits) // 4, bytes.fromhex(bits))  # 32 hex digits = 8 wide
    return glyphs


def read_combining(path):
    """{cp: x offset in dots of its glyph relative to the pen}: -8 / -16 draws it over the
    previous glyph, 0 (right-to-left scripts) over the next one in visual order."""
    marks = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.strip()
            if line:
                cp, offset = line.split(":")
                marks[int(cp, 16)] = int(offset)
    return marks


def polygons(glyph_set, name):
    pen = RecordingPen()
    glyph_set[name].draw(pen)
    polys, cur = [], []
    for op, pts in pen.value:
        if op == "moveTo":
            if cur:
                polys.append(cur)
            cur = [pts[0]]
        elif op == "lineTo":
            cur.append(pts[0])
        elif op in ("closePath", "endPath"):
            if cur:
                polys.append(cur)
            cur = []
        else:
            raise ValueError(f"glyph {name}: unexpected curve {op}; Unifont outlines are pixel squares")
    if cur:
        polys.append(cur)
    return polys


def rasterise(polys, x0, width):
    """Samples pixel centres (non-zero winding) of the 16 rows and the `width` columns starting at
    dot `x0`; returns the bitmap in .hex layout (MSB = leftmost)."""
    edges = []
    for poly in polys:
        for i in range(len(poly)):
            (xa, ya), (xb, yb) = poly[i], poly[(i + 1) % len(poly)]
            if ya != yb:
                edges.append((xa, ya, xb, yb))
    nbytes = width // 8
    out = bytearray()
    for row in range(16):
        y = TOP - UNIT * row - UNIT / 2
        crossings = []
        for xa, ya, xb, yb in edges:
            if min(ya, yb) <= y < max(ya, yb):
                x = xa + (xb - xa) * (y - ya) / (yb - ya)
                crossings.append((x, 1 if yb > ya else -1))
        crossings.sort()
        bits = 0
        for col in range(width):
            x = (x0 + col) * UNIT + UNIT / 2
            winding = sum(d for cx, d in crossings if cx < x)
            if winding != 0:
                bits |= 1 << (width - 1 - col)
        out += bits.to_bytes(nbytes, "big")
    return bytes(out)


def ink_columns(polys):
    xs = [x for poly in polys for x, _ in poly]
    return (min(xs) // UNIT, -(-max(xs) // UNIT)) if xs else (0, 0)


def read_otf(path, only=None):
    """Returns ({cp: (width, bitmap)}, {cp of zero-advance (combining) glyph: its x offset in dots})."""
    font = TTFont(path)
    glyph_set = font.getGlyphSet()
    hmtx = font["hmtx"]
    glyphs, marks = {}, {}
    for cp, name in sorted(font.getBestCmap().items()):
        if only is not None and not only(cp):
            continue
        advance, lsb = hmtx[name]
        polys = polygons(glyph_set, name)
        if advance == 0:
            # Combining: drawn from dot lsb/4 relative to the pen (hex2otf puts the offset of
            # plane00-combining.txt there: -8 or -16, i.e. over the previous glyph; 0 for
            # right-to-left scripts).
            x0 = lsb // UNIT
            marks[cp] = x0
            lo, hi = ink_columns(polys)
            width = max(-x0, 8 if (lo >= x0 and hi <= x0 + 8) else 16)
        else:
            x0, width = 0, advance // UNIT
            if width not in (8, 16):
                sys.exit(f"U+{cp:04X}: unexpected advance {advance}")
        glyphs[cp] = (width, rasterise(polys, x0, width))
    return glyphs, marks


def ink(width, bitmap, x0):
    """The ink dots of a glyph as (row, x) with x relative to the pen."""
    n = width // 8
    out = set()
    for row in range(16):
        bits = int.from_bytes(bitmap[row * n : (row + 1) * n], "big")
        out |= {(row, x0 + col) for col in range(width) if bits >> (width - 1 - col) & 1}
    return out


def verify_plane0(root, hex_glyphs, combining):
    """Marks are compared in pen coordinates: the .hex and the OTF may give the same mark different
    widths (blank columns), the ink must be the same dots."""
    print("verifying the rasteriser: unifont.otf plane 0 against unifont.hex ...", file=sys.stderr)
    otf, otf_marks = read_otf(os.path.join(root, PLANE0_OTF), only=lambda cp: cp < 0x10000 and wanted(cp))
    compared = bad = 0
    for cp, (width, bitmap) in otf.items():
        if cp not in hex_glyphs:
            continue
        compared += 1
        if cp in combining or cp in otf_marks:
            same = combining.get(cp) == otf_marks.get(cp) and ink(width, bitmap, otf_marks[cp]) == ink(
                *hex_glyphs[cp], combining[cp]
            )
        else:
            same = hex_glyphs[cp] == (width, bitmap)
        if not same:
            bad += 1
            if bad <= 10:
                print(f"  differs: U+{cp:04X}", file=sys.stderr)
    print(f"  {compared} glyphs compared, {bad} differ", file=sys.stderr)
    if compared < 50000 or bad > compared // 1000:
        sys.exit("rasteriser verification failed")


def ranges(values):
    """{cp: value} -> [[first, last, value]] of consecutive code points with the same value."""
    out = []
    for cp in sorted(values):
        if out and out[-1][1] == cp - 1 and out[-1][2] == values[cp]:
            out[-1][1] = cp
        else:
            out.append([cp, cp, values[cp]])
    return out


def arabic_tables():
    forms = {"<isolated>": 0, "<final>": 1, "<initial>": 2, "<medial>": 3}
    shapes, ligs = {}, {}
    # Forms-B (the basic letters) first: where a letter has two forms of a kind, Forms-B's wins.
    for cp in list(range(0xFE70, 0xFF00)) + list(range(0xFB50, 0xFE00)):
        dec = ud.decomposition(chr(cp)).split()
        if len(dec) < 2 or dec[0] not in forms:
            continue
        parts = [int(p, 16) for p in dec[1:]]
        form = forms[dec[0]]
        if len(parts) == 1:
            entry = shapes.setdefault(parts[0], [0, 0, 0, 0])
            if entry[form] == 0:
                entry[form] = cp
        elif 0xFEF5 <= cp <= 0xFEFC:  # the mandatory lam-alef ligatures (the others are optional)
            entry = ligs.setdefault(tuple(parts), [0, 0])
            if entry[form] == 0:
                entry[form] = cp
    shapes = [(base, *f) for base, f in sorted(shapes.items()) if 0x0600 <= base <= 0x06FF]
    ligs = [(a, b, *f) for (a, b), f in sorted(ligs.items())]
    return shapes, ligs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--debs", default="/tmp/uf", help="folder with unifont_*.deb and fonts-unifont_*.deb")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../services/print/assets/glyphs.bin.gz"))
    ap.add_argument("--verify", action="store_true", help="check the rasteriser on plane 0 (slow)")
    args = ap.parse_args()
    if ud.unidata_version != "15.0.0":
        print(f"warning: unicodedata2 has Unicode {ud.unidata_version}, the font is Unicode 15.0.0", file=sys.stderr)

    with tempfile.TemporaryDirectory() as root:
        extract(args.debs, root)
        hex_glyphs = read_hex(os.path.join(root, HEX))
        combining = read_combining(os.path.join(root, COMBINING))
        if args.verify:
            verify_plane0(root, hex_glyphs, combining)
        upper, upper_marks = read_otf(os.path.join(root, UPPER_OTF), only=lambda cp: cp >= 0x10000 and wanted(cp))

    glyphs = {cp: g for cp, g in hex_glyphs.items() if wanted(cp)}
    for cp, g in upper.items():
        glyphs.setdefault(cp, g)

    marks = {cp: 0 for cp in range(0x110000) if ud.category(chr(cp)) in ("Mn", "Me")}
    marks.update(combining)
    marks.update(upper_marks)
    marks = {cp: off for cp, off in marks.items() if not invisible(cp)}
    mark_ranges = ranges(marks)

    runs = []  # [first, count, width]
    blob = bytearray()
    for cp in sorted(glyphs):
        width, bitmap = glyphs[cp]
        assert len(bitmap) == 16 * width // 8
        if runs and runs[-1][0] + runs[-1][1] == cp and runs[-1][2] == width:
            runs[-1][1] += 1
        else:
            runs.append([cp, 1, width])
        blob += bitmap
    shapes, ligs = arabic_tables()

    raw = io.BytesIO()
    raw.write(b"WXGLYPH1")
    raw.write(struct.pack("<5I", len(runs), len(mark_ranges), len(shapes), len(ligs), len(blob)))
    for run in runs:
        raw.write(struct.pack("<3I", *run))
    for r in mark_ranges:
        raw.write(struct.pack("<2Ii", *r))
    for s in shapes:
        raw.write(struct.pack("<5I", *s))
    for lig in ligs:
        raw.write(struct.pack("<4I", *lig))
    raw.write(blob)
    data = raw.getvalue()

    out = os.path.normpath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "wb") as f:
        # mtime 0 and no file name: the same input gives the same bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as gz:
            gz.write(data)
    planes = {}
    for cp in glyphs:
        planes[cp >> 16] = planes.get(cp >> 16, 0) + 1
    print(
        f"{out}: {len(glyphs)} glyphs (by plane {dict(sorted(planes.items()))}), "
        f"{sum(1 for w, _ in glyphs.values() if w == 16)} wide, {len(runs)} runs, {len(mark_ranges)} mark ranges, "
        f"{len(shapes)} Arabic letters, {len(ligs)} ligatures; {len(data)} bytes raw, {os.path.getsize(out)} gzipped",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
