"""Small forensic images built in a test with the tools labs and distributions ship (nothing is
mounted): FAT with mtools, ext4 with ``mkfs.ext4 -d`` and ``debugfs -w``, NTFS with ``mkntfs`` and
``ntfscp``, partition tables with ``sfdisk``, E01 with ``ewfacquire``, VHD/VHDX/VMDK/QCOW2 with
``qemu-img`` and LUKS with ``cryptsetup``."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

MiB = 1024 * 1024
SECTOR = 512


def run(*cmd: str | Path, stdin: bytes | None = None) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, input=stdin)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blank(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def fat_volume(
    path: Path, files: dict[str, bytes], *, size: int = 8 * MiB, deleted: tuple[str, ...] = ()
) -> Path:
    """A FAT volume holding ``files`` (``dir/name``); names in ``deleted`` are removed after."""
    _blank(path, size)
    run("mkfs.vfat", "-n", "HEROES", path)
    staging = path.with_suffix(".staging")
    staging.mkdir(exist_ok=True)
    made: set[str] = set()
    for name, data in files.items():
        parts = name.split("/")[:-1]
        for k in range(1, len(parts) + 1):
            d = "/".join(parts[:k])
            if d not in made:
                run("mmd", "-i", path, f"::/{d}")
                made.add(d)
        src = staging / sha256(data)
        src.write_bytes(data)
        run("mcopy", "-i", path, src, f"::/{name}")
    for name in deleted:
        run("mdel", "-i", path, f"::/{name}")
    return path


def ext_volume(
    path: Path, files: dict[str, bytes], *, size: int = 8 * MiB, deleted: tuple[str, ...] = ()
) -> Path:
    """An ext4 volume made from a folder (``mkfs.ext4 -d``); ``deleted`` removed with debugfs."""
    src = path.with_suffix(".src")
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    _blank(path, size)
    run("mkfs.ext4", "-q", "-F", "-d", src, path)
    for name in deleted:
        run("debugfs", "-w", "-R", f"rm /{name}", path)
    return path


def ntfs_volume(path: Path, files: dict[str, bytes], *, size: int = 16 * MiB) -> Path:
    """An NTFS volume with ``files`` at its root, written with ntfscp (no mount); a name
    ``file:stream`` writes an alternate data stream of ``file``."""
    _blank(path, size)
    run("mkntfs", "-q", "-F", "-f", path)
    staging = path.with_suffix(".staging")
    staging.mkdir(exist_ok=True)
    for name, data in files.items():
        src = staging / sha256(data)
        src.write_bytes(data)
        base, _, stream = name.partition(":")
        if stream:
            run("ntfscp", "-q", "-N", stream, path, src, base)
        else:
            run("ntfscp", "-q", path, src, name)
    return path


def partitioned(path: Path, label: str, volumes: list[Path]) -> Path:
    """A disk with an MBR (``dos``) or GPT partition table holding ``volumes`` in order."""
    start = 2048
    lines = [f"label: {label}"]
    spans = []
    for vol in volumes:
        sectors = vol.stat().st_size // SECTOR
        lines.append(f"start={start}, size={sectors}, type={'83' if label == 'dos' else 'L'}")
        spans.append((start, vol))
        start += sectors + 2048
    _blank(path, (start + 2048) * SECTOR)
    run("sfdisk", "-q", path, stdin=("\n".join(lines) + "\n").encode())
    with open(path, "r+b") as disk:
        for first, vol in spans:
            disk.seek(first * SECTOR)
            disk.write(vol.read_bytes())
    return path


def e01(raw: Path, base: Path, *, compress: str = "fast", segment: str | None = None) -> Path:
    """``raw`` acquired as EWF (MD5 and SHA-1 stored); returns the first segment."""
    args: list[str | Path] = ["ewfacquire", "-q", "-u", "-t", base, "-c", compress, "-d", "sha1"]
    args += ["-C", "case", "-D", "test image", "-e", "examiner", "-E", "1", "-N", "none"]
    if segment is not None:
        args += ["-S", segment]
    run(*args, raw)
    return base.with_name(base.name + ".E01")


def converted(raw: Path, fmt: str, out: Path) -> Path:
    """``raw`` as a virtual disk (``vpc`` for VHD, ``vhdx``, ``vmdk``, ``qcow2``)."""
    run("qemu-img", "convert", "-f", "raw", "-O", fmt, raw, out)
    return out


def luks_volume(path: Path, passphrase: str, *, size: int = 8 * MiB) -> Path:
    _blank(path, size)
    run(
        "cryptsetup",
        "luksFormat",
        "--type",
        "luks1",
        "-q",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        "-",
        path,
        stdin=passphrase.encode(),
    )
    return path


def luks_holding(path: Path, volume: Path, passphrase: str) -> Path:
    """A LUKS1 (aes-xts-plain64) container whose payload is ``volume`` encrypted with the
    container's own master key, written without dm-crypt: the master key is read back with
    ``cryptsetup luksDump --dump-master-key`` and the sectors encrypted here (XTS over AES-ECB)."""
    from Cryptodome.Cipher import AES

    plain = volume.read_bytes()
    luks_volume(path, passphrase, size=len(plain) + 4 * MiB)
    dump = subprocess.run(
        ["cryptsetup", "luksDump", "--dump-master-key", "--key-file", "-", "-q", str(path)],
        check=True,
        capture_output=True,
        input=passphrase.encode(),
    ).stdout.decode()
    assert "xts-plain64" in dump
    payload = int(dump.split("Payload offset:")[1].split()[0])
    hex_key = dump.split("MK dump:")[1].split("\n\n")[0]
    key = bytes.fromhex("".join(hex_key.split()))
    half = len(key) // 2
    data_cipher, tweak_cipher = AES.new(key[:half], AES.MODE_ECB), AES.new(key[half:], AES.MODE_ECB)
    out = bytearray()
    for sector in range(len(plain) // SECTOR):
        tweak = int.from_bytes(tweak_cipher.encrypt(sector.to_bytes(16, "little")), "little")
        pads = []
        for _ in range(SECTOR // 16):
            pads.append(tweak.to_bytes(16, "little"))
            tweak <<= 1
            if tweak >> 128:
                tweak = (tweak & ((1 << 128) - 1)) ^ 0x87
        pad = b"".join(pads)
        block = plain[sector * SECTOR : (sector + 1) * SECTOR]
        mixed = bytes(a ^ b for a, b in zip(block, pad, strict=True))
        enc = data_cipher.encrypt(mixed)
        out += bytes(a ^ b for a, b in zip(enc, pad, strict=True))
    with open(path, "r+b") as f:
        f.seek(payload * SECTOR)
        f.write(out)
    return path
