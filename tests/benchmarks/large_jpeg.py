"""Memory of preparing one very large JPEG (Pillow's draft mode decodes it at reduced size).

Makes a `--megapixels` JPEG (greyscale noise bands, in a child process of its own so its
making does not count), then prepares it in a fresh child exactly as a run does
(`kullbatch.media.images.encode_file`) and reports that child's peak RSS (wait4's ru_maxrss),
beside a child that only imports kullbatch (the floor).

    python tests/benchmarks/large_jpeg.py [--megapixels 150]

Target (DESIGN.md, "Hostile input"): a 150 MP JPEG prepared with the process under 400 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

MAKE = """
import sys
from PIL import Image
width, height, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
band = Image.effect_noise((width, 64), 60)
image = Image.new("L", (width, height))
for top in range(0, height, 64):
    image.paste(band, (0, top))
image.save(path, "JPEG", quality=80)
"""

PREPARE = """
import sys
from pathlib import Path
from kullbatch.media import images
data, _ = images.encode_file(Path(sys.argv[1]), 1568)
print(images.image_size(data))
"""

FLOOR = "import kullbatch.media.images"


def peak_mb(code: str, *args: str) -> tuple[float, str]:
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: {out}")
    return usage.ru_maxrss / 1024, out.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=150)
    args = parser.parse_args()
    width = int((args.megapixels * 1_000_000 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large.jpg"
        peak_mb(MAKE, str(width), str(height), str(path))
        floor, _ = peak_mb(FLOOR)
        peak, size = peak_mb(PREPARE, str(path))
        megabytes = path.stat().st_size / 1e6
    print(f"JPEG {width}x{height} ({width * height / 1e6:.0f} MP, {megabytes:.0f} MB file)")
    print(f"prepared to {size}; peak RSS {peak:.0f} MB (import alone: {floor:.0f} MB)")
    print(f"a full decode would hold {width * height * 3 / 1e6:.0f} MB of RGB pixels")


if __name__ == "__main__":
    main()
