"""The GGUF database: every tensor type of every linear layer as llama.cpp's own blocks.

Built by the shared loop (`database.build.build_store`: dense propagation, one forward per block);
each level is llama.cpp's quantizer run on the dense weight (`compress.ggml.quantize`), with the
block's Hessian diagonal as the importance matrix when asked (llama.cpp's imatrix is the mean
squared activation per input column, the same up to a factor its quantizers ignore). A level is
stored as the bytes llama.cpp writes into the file ("<unit>:<i>:blocks", [rows, row bytes]
uint8), so its cost is its size and the export copies it. `GgufBank` keeps those bytes resident
and decodes a level when a genome first asks for it (cached, `database.bank`).
"""

from __future__ import annotations

import numpy as np
import torch

from evopress.compress.ggml import dequantize, quantize
from evopress.compress.sparsegpt import relative_errors
from evopress.database.bank import LevelBank
from evopress.database.store import VariantStore


def gguf_block_levels(table: dict, config: dict):
    """`block_levels` for `build_store`: every type of the block's layers, and their errors."""

    def block_levels(adapter, block: int, hessians: dict):
        tensors, errors = {}, {}
        for short, module in adapter.linears(block).items():
            name = adapter.linear_name(block, short)
            weight = module.weight.data
            dense = weight.float().cpu().numpy()
            hessian = hessians[short]
            imatrix = hessian.diagonal().float().cpu().numpy() if config["imatrix"] else None
            values = []
            for i, t in enumerate(table[name]["levels"]):
                blocks = quantize(dense, t, imatrix, threads=torch.get_num_threads(), name=name)
                tensors[f"{name}:{i}:blocks"] = torch.from_numpy(blocks)
                values.append(torch.from_numpy(dequantize(blocks, t, dense.shape[1])))
            errors[name] = relative_errors(weight.float(), torch.stack(values).to(weight.device), hessian)
        return tensors, errors, {"builder": "llama.cpp"}
    return block_levels


class GgufBank(LevelBank):
    """GGUF levels resident as llama.cpp's blocks, decoded on first use."""

    def _load_block(self, adapter, store: VariantStore, block: int, device) -> None:
        tensors = store.read_block(block, "cpu")
        for unit in (u for u in store.units if u["block"] == block):
            self.variants[unit["name"]] = [(t, tensors[f"{unit['name']}:{i}:blocks"])
                                           for i, t in enumerate(unit["levels"])]

    def type_of(self, name: str, level: int) -> str:
        return self.variants[name][level][0]

    def data(self, name: str, level: int) -> np.ndarray:
        """The level's bytes as the file holds them, [rows, row bytes] uint8."""
        return self.variants[name][level][1].numpy()

    def decode(self, name: str, level: int) -> torch.Tensor:
        dense = self.dense[name]
        values = dequantize(self.data(name, level), self.type_of(name, level), dense.shape[1])
        return torch.from_numpy(values).to(device=dense.device, dtype=dense.dtype)
