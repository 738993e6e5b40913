"""The variant store: every level of every unit, compact, on disk, checked against a manifest.

Layout of a store directory:

    manifest.json            format, version, model fingerprint, method config, units with
                             their levels, and per finished block its file, size, sha256 and
                             per-unit per-level errors
    block_0000.safetensors   for each unit of the block and each level `i`: "<unit>:<i>:mask"
                             (packed keep-bits), and "<unit>:act_sq" (mean squared input per
                             channel); for SparseGPT also "<lead>:factor" per input group (the
                             upper Cholesky factor of the damped inverse Hessian, packed upper
                             triangle, float32), under the name of the group's first layer

Values are not stored: loading re-derives them from the masks (`database.bank`), exactly, so a
store is about one bit per weight and level plus one factor per input group. Each block's entry
says how (`values`: builder and blocksize).

Every file is written to a temporary name and renamed, and the manifest is rewritten (the same
way) only after a block's file is in place, so a killed build leaves a valid store that resumes
at the next unfinished block. A store built for another model or setting, or whose files do not
match their recorded checksums, is a DatabaseError, never a silent wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from evopress.errors import DatabaseError

FORMAT, VERSION = "evopress-variant-store", 2
MANIFEST = "manifest.json"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256(path: Path) -> str:
    """The file's sha256, read in chunks (stores, task data)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


class VariantStore:
    def __init__(self, path: Path, manifest: dict):
        self.path, self.manifest = path, manifest

    # Opening.

    @classmethod
    def create_or_open(cls, path, model: str, config: dict, units: list[dict]) -> "VariantStore":
        """A store for (model, config, units): the existing one if it matches, else a new empty one."""
        path = Path(path)
        fresh = {"format": FORMAT, "version": VERSION, "model": model, "config": config,
                 "units": units, "blocks": {}}
        if (path / MANIFEST).exists():
            store = cls.open(path, model)
            for key in ("config", "units"):
                if _normal(store.manifest[key]) != _normal(fresh[key]):
                    raise DatabaseError(
                        f"the database at {path} was built with another {key} "
                        f"({_diff(store.manifest[key], fresh[key])}); use another --db directory, "
                        "or delete this one to rebuild")
            return store
        if path.exists() and any(path.iterdir()):
            raise DatabaseError(f"{path} exists and is not an evopress database; choose an empty or new directory")
        path.mkdir(parents=True, exist_ok=True)
        store = cls(path, _normal(fresh))
        store._save_manifest()
        return store

    @classmethod
    def open(cls, path, model: str | None = None) -> "VariantStore":
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise DatabaseError(f"no database at {path} (missing {MANIFEST}); build it first") from None
        except json.JSONDecodeError as e:
            raise DatabaseError(f"{path / MANIFEST} is corrupt ({e}); delete the directory to rebuild") from e
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise DatabaseError(f"{path} holds format {manifest.get('format')!r} v{manifest.get('version')}, "
                                f"this evopress reads {FORMAT!r} v{VERSION}; rebuild it")
        if model is not None and manifest["model"] != model:
            raise DatabaseError(f"the database at {path} was built for another model "
                                f"(fingerprint {manifest['model']}, this model {model}); "
                                "use the matching model or another --db directory")
        return cls(path, manifest)

    # Contents.

    @property
    def units(self) -> list[dict]:
        return self.manifest["units"]

    @property
    def num_blocks(self) -> int:
        return 1 + max(u["block"] for u in self.units)

    def done(self, block: int) -> bool:
        return str(block) in self.manifest["blocks"]

    @property
    def complete(self) -> bool:
        return all(self.done(b) for b in range(self.num_blocks))

    def require_complete(self) -> None:
        missing = [b for b in range(self.num_blocks) if not self.done(b)]
        if missing:
            raise DatabaseError(f"the database at {self.path} is incomplete ({len(missing)} of "
                                f"{self.num_blocks} blocks missing, first {missing[0]}); rerun the build to finish it")

    def errors(self) -> dict[str, list[float]]:
        """Unit name -> relative reconstruction error per level (for the DP baseline)."""
        out = {}
        for entry in self.manifest["blocks"].values():
            out.update(entry["errors"])
        return out

    def nbytes(self) -> int:
        return sum(e["bytes"] for e in self.manifest["blocks"].values())

    # Writing and reading blocks.

    def values(self, block: int) -> dict:
        """How a block's weights are re-derived from its masks: {"builder", "blocksize"}."""
        return self.manifest["blocks"][str(block)]["values"]

    def write_block(self, block: int, tensors: dict[str, torch.Tensor], errors: dict[str, list[float]],
                    values: dict) -> None:
        name = f"block_{block:04d}.safetensors"
        target = self.path / name
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        _atomic_write(target, lambda tmp: save_file(tensors, str(tmp)))
        self.manifest["blocks"][str(block)] = _normal({
            "file": name, "bytes": target.stat().st_size, "sha256": sha256(target), "errors": errors,
            "values": values})
        self._save_manifest()

    def read_block(self, block: int, device="cpu", verify: bool = True) -> dict[str, torch.Tensor]:
        if not self.done(block):
            self.require_complete()
        entry = self.manifest["blocks"][str(block)]
        path = self.path / entry["file"]
        if not path.exists():
            raise DatabaseError(f"{path} is missing from the database; delete the directory to rebuild")
        if verify and (path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]):
            raise DatabaseError(f"{path} does not match its checksum in {MANIFEST} (corrupt or changed); "
                                "delete the directory to rebuild")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for damaged headers
            raise DatabaseError(f"{path} cannot be read ({e}); delete the directory to rebuild") from e

    def _save_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=1, sort_keys=True)
        _atomic_write(self.path / MANIFEST, lambda tmp: tmp.write_text(text))


def _normal(obj):
    """JSON round trip: tuples become lists, so stored and fresh manifests compare equal."""
    return json.loads(json.dumps(obj))


def _diff(stored, fresh) -> str:
    if isinstance(stored, dict) and isinstance(fresh, dict):
        keys = [k for k in sorted(set(stored) | set(fresh)) if stored.get(k) != fresh.get(k)]
        return ", ".join(f"{k}: stored {stored.get(k)!r}, now {fresh.get(k)!r}" for k in keys[:3])
    return "different lists"
