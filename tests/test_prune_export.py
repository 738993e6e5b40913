"""evopress prune's physically smaller exports (DarwinLM, arXiv 2502.07780): `pruned` (per-layer heads,
KV heads and MLP widths, bundled modeling code) and `nemotron-nas` (the search restricted to the
levels that layout writes). Each holds exactly the searched parameters, loads with
`trust_remote_code=True` and computes what the in-memory pruned model computes; a wrong KV-head
pairing is refused by the writer and, written anyway, caught by the same comparison."""

import inspect
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, \
    Qwen3Config, Qwen3ForCausalLM

import evopress.export.pruned as pruned_writer
from evopress.api import run
from evopress.compress.structured import MLP, Attention
from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
from evopress.database.build import build_store
from evopress.database.store import VariantStore
from evopress.database.structured import StructBank, stored_level, structured_block_levels, structured_units
from evopress.errors import ExportError, RecipeError
from evopress.evaluate import export_run, run_config
from evopress.export.pruned import Cut, check_kv_groups, export_structured
from evopress.methods.structured import Structured, StructuredConfig
from evopress.models import adapter_for
from evopress.rundir import RunDir
from evopress.run import Run

pytestmark = pytest.mark.oldest  # the bundled modeling code runs on the oldest supported transformers too

ATOL = 1e-5  # float32: compact and zero-padded matmuls sum in other orders


def _config(root: Path, fmt: str) -> RunConfig:
    return RunConfig(method="prune", run_dir=str(root / fmt), device="cpu", dtype="float32", export_format=fmt,
                     data=DataConfig(seq_len=128, calibration_tokens=4096, heldout_tokens=2048),
                     options=StructuredConfig(target=0.5, database=str(root / "db")),  # one store for both
                     baselines=BaselineConfig(names=()),
                     search=SearchConfig(generations=2, offspring=4, stages=((1, 2048),), initial=0))


def _reopened(run_dir: Path):
    """The run again from its recorded config, its bank at the EvoPress plan: the in-memory pruned model."""
    rd = RunDir(run_dir)
    r = Run(run_config(rd), log=lambda s: None).open().prepare()
    genome = tuple(rd.plans()["plans"]["EvoPress"]["genome"])
    r.bank.apply(genome)
    return r, genome


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One prune run per smaller format on the zoo model (the database built once), reopened."""
    root = tmp_path_factory.mktemp("prune_export")
    out = {}
    for fmt in ("pruned", "nemotron-nas"):
        result = run(_config(root, fmt), log=lambda s: None)
        out[fmt] = (result, *_reopened(result.run_dir))
    return out


def _load(path):
    return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=torch.float32).eval()


def _block_params(model) -> tuple[int, int]:
    """(parameters of the blocks' attention and MLP proper, parameters of the blocks' pre-norms)."""
    block = [(n, p.numel()) for n, p in model.named_parameters() if n.startswith("model.layers.")]
    norms = sum(k for n, k in block if n.endswith("layernorm.weight"))
    return sum(k for _, k in block) - norms, norms


@pytest.mark.parametrize("fmt", ["pruned", "nemotron-nas"])
def test_export_holds_exactly_the_searched_parameters(runs, fmt):
    result, r, genome = runs[fmt]
    loaded = _load(result.export["path"])
    cost = result.plans["EvoPress"]["cost"]
    blocks, norms = _block_params(loaded)
    assert blocks == cost == result.export["block_params"]
    outside = sum(p.numel() for n, p in loaded.named_parameters() if not n.startswith("model.layers."))
    geo = r.session.adapter.geometry()
    assert outside == 2 * geo.vocab_size * geo.hidden_size + geo.hidden_size  # embeddings, LM head, final norm
    present = sum(bool(h) + bool(w) for h, _, w in result.export["layer_sizes"])
    assert norms == present * geo.hidden_size  # one pre-norm per present sublayer, none for absent ones
    assert sum(p.numel() for p in loaded.parameters()) == cost + outside + norms == result.export["params"]
    assert 0.49 < cost / r.method.full <= 0.5


@pytest.mark.parametrize("fmt", ["pruned", "nemotron-nas"])
@torch.no_grad()
def test_export_computes_what_the_in_memory_pruned_model_computes(runs, fmt):
    result, r, genome = runs[fmt]
    loaded = _load(result.export["path"])
    x = r.session.heldout[:4]
    torch.testing.assert_close(loaded(x).logits, r.session.model(x).logits, rtol=0, atol=ATOL)
    expected = {"pruned": "PrunedLlamaForCausalLM", "nemotron-nas": "DeciLMForCausalLM"}[fmt]
    assert type(loaded).__name__ == expected
    # transformers ran the modeling file from its module cache, with the sibling file it imports copied along
    cached = Path(inspect.getfile(type(loaded))).parent
    assert cached != Path(result.export["path"]) and (cached / "configuration_nemotron_nas.py").is_file()
    assert result.export["weight_bytes"] < 0.75 * (Path(r.session.adapter.name_or_path) / "model.safetensors").stat().st_size


@pytest.mark.parametrize("fmt", ["pruned", "nemotron-nas"])
@torch.no_grad()
def test_generate_equals_greedy_decoding_without_the_cache(runs, fmt):
    result, r, _ = runs[fmt]
    loaded = _load(result.export["path"])
    x = r.session.heldout[:2, :12]
    reference = x
    for _ in range(8):  # argmax of a full forward pass of the in-memory pruned model, each step
        reference = torch.cat([reference, r.session.model(reference, use_cache=False).logits[:, -1:].argmax(-1)], 1)
    generated = loaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, min_new_tokens=8,
                                do_sample=False, pad_token_id=0)
    assert torch.equal(generated, reference)


def test_pruned_config_describes_every_layer(runs):
    result, r, genome = runs["pruned"]
    path = Path(result.export["path"])
    config = json.loads((path / "config.json").read_text())
    sizes = list(zip(config["num_attention_heads_per_layer"], config["num_key_value_heads_per_layer"],
                     config["intermediate_size_per_layer"]))
    assert [list(s) for s in sizes] == result.export["layer_sizes"]
    assert config["model_type"] == "evopress-pruned" and config["architectures"] == ["PrunedLlamaForCausalLM"]
    plan = json.loads((path / "evopress_plan.json").read_text())
    assert plan["format"] == "pruned" and plan["cost"] == result.plans["EvoPress"]["cost"]
    assert [(len(p["query_heads"]), len(p["kv_heads"]), p["mlp_channels"]) for p in plan["layers"]] == sizes
    assert any(h not in (0, 4) for h, _, _ in sizes)  # the search used head counts nemotron-nas cannot write


def test_nemotron_nas_search_picks_only_levels_the_format_writes(runs):
    result, r, genome = runs["nemotron-nas"]
    assert r.cfg.options.levels_for == "nemotron-nas"  # resolved from --export and recorded
    store = r.method.store(r.session)
    errors = store.errors()
    for u, unit, costs in zip(r.space.units, store.units, r.method.errors(r)):
        levels = r.method.store_levels[u.name]
        params = store.values(unit["block"])["params"][u.name]
        assert levels == sorted(levels) and levels[0] == 0
        assert list(u.costs) == [params[i] for i in levels]  # the space's level i is store level levels[i]
        assert costs == [errors[u.name][i] for i in levels]  # so are the DP's errors
        if unit["kind"] == "attn":
            assert list(u.costs) == [Attention.of(r.session.adapter.geometry()).full, 0]
        else:
            widths = [MLP.of(r.session.adapter.geometry()).intermediate - unit["removes"][i] for i in levels]
            assert widths == [512, 256, 0]  # tiny: hidden 128, multiples of 256 only
        tensors = store.read_block(unit["block"])
        for level, i in enumerate(levels):  # the bank holds the mapped store levels
            kept, weight = stored_level(unit, i, tensors, r.session.adapter.geometry().head_dim)
            assert torch.equal(r.bank.variants[u.name][level][0], kept)
            assert torch.equal(r.bank.variants[u.name][level][1], weight)
    config = json.loads((Path(result.export["path"]) / "config.json").read_text())
    sizes = result.export["layer_sizes"]
    assert len(config["block_configs"]) == sum(1 for h, _, w in sizes if h or w)


def test_kept_query_heads_read_the_kv_heads_they_read_before(runs):
    _, r, _ = runs["pruned"]
    store, geo = r.method.store(r.session), r.session.adapter.geometry()
    group = geo.num_heads // geo.num_kv_heads
    seen = set()
    for unit in (u for u in store.units if u["kind"] == "attn"):
        tensors, kv_lists = store.read_block(unit["block"]), store.values(unit["block"])["kv_heads"][unit["name"]]
        for i, kv in enumerate(kv_lists):
            heads = tensors[f"{unit['name']}:{i}:kept"].tolist()
            if not heads:
                continue
            per_kv = len(heads) // len(kv)
            assert heads == sorted(heads) and len(heads) == per_kv * len(kv)
            # the smaller attention pairs kept head i with kept KV head i // per_kv (repeat_interleave)
            assert [kv[i // per_kv] for i in range(len(heads))] == [h // group for h in heads]
            check_kv_groups(geo, Cut(tuple(heads), torch.empty(0), tuple(kv)), unit["block"])
            seen.add((len(heads), len(kv)))
    assert {(2, 2), (2, 1), (1, 1)} <= seen  # levels that keep fewer heads in some or all KV groups


@torch.no_grad()
def test_a_wrong_kv_pairing_is_refused_and_written_anyway_fails_the_comparison(runs, tmp_path, monkeypatch):
    _, r, genome = runs["pruned"]
    cuts = Structured.cuts(r.bank, genome)
    block = next(b for b, c in enumerate(cuts) if len(c["attn"].kv_heads) >= 2)
    attn = cuts[block]["attn"]
    cuts[block]["attn"] = Cut(attn.kept, attn.output, attn.kv_heads[::-1])  # each head reads the other KV head
    with pytest.raises(ExportError, match="KV heads"):
        export_structured(r.session.adapter, cuts, None, tmp_path / "refused")
    monkeypatch.setattr(pruned_writer, "check_kv_groups", lambda *args: None)
    broken = export_structured(r.session.adapter, cuts, None, tmp_path / "broken")["path"]
    x = r.session.heldout[:4]
    difference = (_load(broken)(x).logits - r.session.model(x).logits).abs().max().item()
    assert difference > 100 * ATOL  # the comparison the other tests make would fail


def test_re_export_reads_the_genome_over_the_levels_it_was_searched_over(runs, tmp_path):
    """`evopress export --format F` of a finished run: nemotron-nas levels as pruned, any level as the
    dense-shaped hf model (stock transformers); any level as nemotron-nas is refused."""
    nas_result, nas_run, _ = runs["nemotron-nas"]
    again = export_run(nas_result.run_dir, "pruned", tmp_path / "as-pruned", log=lambda s: None)
    assert again["block_params"] == nas_result.plans["EvoPress"]["cost"]
    x = nas_run.session.heldout[:2]
    with torch.no_grad():
        torch.testing.assert_close(_load(again["path"])(x).logits, nas_run.session.model(x).logits,
                                   rtol=0, atol=ATOL)
    pruned_result, pruned_run, _ = runs["pruned"]
    with pytest.raises(RecipeError, match="levels-for any"):  # a plan over any level is not re-read as fewer
        export_run(pruned_result.run_dir, "nemotron-nas", tmp_path / "nas", log=lambda s: None)
    dense_shaped = export_run(pruned_result.run_dir, "hf", tmp_path / "hf", log=lambda s: None)["path"]
    stock = AutoModelForCausalLM.from_pretrained(dense_shaped, dtype=torch.float32).eval()  # no remote code
    with torch.no_grad():
        torch.testing.assert_close(stock(x).logits, pruned_run.session.model(x).logits, rtol=0, atol=ATOL)


def _stacked_rows_match(adapter, bank, x, genome):
    """The stacked evaluator's rows equal each candidate's block run with its levels applied, biases
    included (a removed sublayer's zero bias in its rows, the dense bias back in the others')."""
    from evopress.eval.stacked import block_kwargs

    dense = tuple(0 for _ in genome)
    kwargs, (inputs, _) = block_kwargs(adapter, x), adapter.block_io(x)
    rows = x.shape[0]
    for b in (1, 2):
        alone = {}
        for g in (genome, dense):
            bank.apply(g)
            alone[g] = adapter.stacked_block(b, inputs[b], kwargs[b], 1, lambda m, a, out: out)
        for reference, others in ((dense, genome), (genome, dense)):
            bank.apply(reference)
            genomes = [others, reference, others]
            stacked = bank.block_step(b, inputs[b].repeat(3, 1, 1), kwargs[b], genomes, reference)
            for j, g in enumerate(genomes):
                torch.testing.assert_close(stacked[j * rows:(j + 1) * rows], alone[g], rtol=0, atol=ATOL)
    bank.apply(genome)


# Random 4-block models of the other shapes the writers handle: Llama with q/k/v/o and MLP biases,
# Qwen2 (q/k/v biases only), Qwen3 (per-head q/k norms).
SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
MODELS = {"llama-bias": (LlamaConfig, LlamaForCausalLM, {"attention_bias": True, "mlp_bias": True}),
          "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}), "qwen3": (Qwen3Config, Qwen3ForCausalLM, {})}


def _small_bank(family, tmp_path):
    config_cls, model_cls, extra = MODELS[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**SMALL, **extra)).eval()
    for name, p in model.named_parameters():
        if name.endswith("bias") or "norm" in name:  # transformers starts them at 0 and 1: make them count
            p.data += 0.2 * torch.randn_like(p)
    adapter = adapter_for(model)
    units = structured_units(adapter, steps=4, group=64)
    store = VariantStore.create_or_open(tmp_path / "db", family, {"kind": "structured"}, units)
    tokens = torch.randint(0, SMALL["vocab_size"], (16, 32), generator=torch.Generator().manual_seed(1))
    build_store(adapter, tokens, store, structured_block_levels({u["name"]: u for u in units}, group=64),
                "structured", "cpu", 8, lambda s: None)
    return adapter, store, StructBank(adapter, store)


@pytest.mark.parametrize("family", list(MODELS))
@torch.no_grad()
def test_other_shapes_export_and_a_removed_sublayer_takes_its_bias_with_it(family, tmp_path):
    adapter, store, bank = _small_bank(family, tmp_path)
    last = {u["name"]: len(store.values(u["block"])["params"][u["name"]]) - 1 for u in store.units}
    # block 1's attention and block 2's MLP removed, block 0's attention at its second level, the rest dense
    chosen = {"model.layers.1.self_attn.o_proj": "last", "model.layers.2.mlp.down_proj": "last",
              "model.layers.0.self_attn.o_proj": 1}
    genome = tuple(last[n] if chosen.get(n) == "last" else chosen.get(n, 0) for n in bank.names)
    bank.apply(genome)
    removed = adapter.model.model.layers[1].self_attn.o_proj
    if removed.bias is not None:  # Llama with attention_bias: the bias goes with the removed attention
        assert not removed.bias.any()
    x = torch.randint(0, SMALL["vocab_size"], (2, 10), generator=torch.Generator().manual_seed(2))
    written = export_structured(adapter, Structured.cuts(bank, genome), None, tmp_path / "pruned")
    loaded = _load(written["path"])
    torch.testing.assert_close(loaded(x).logits, adapter.model(x).logits, rtol=0, atol=ATOL)
    cost = sum(store.values(u["block"])["params"][u["name"]][g] for u, g in zip(store.units, genome))
    assert written["params"] - Structured.outside_params(adapter, written["layer_sizes"], "pruned") == cost
    assert written["layer_sizes"][1][0] == 0 and written["layer_sizes"][2][2] == 0
    _stacked_rows_match(adapter, bank, x, genome)
    if family == "qwen3":
        with pytest.raises(ExportError, match="q_norm"):
            export_structured(adapter, Structured.cuts(bank, genome), None, tmp_path / "nas", "nemotron-nas")
        return
    nas_genome = tuple(0 if g == 1 else g for g in genome)  # levels nemotron-nas writes: full or removed
    bank.apply(nas_genome)
    written = export_structured(adapter, Structured.cuts(bank, nas_genome), None, tmp_path / "nas", "nemotron-nas")
    torch.testing.assert_close(_load(written["path"])(x).logits, adapter.model(x).logits, rtol=0, atol=ATOL)
    cost = sum(store.values(u["block"])["params"][u["name"]][g] for u, g in zip(store.units, nas_genome))
    assert written["params"] - Structured.outside_params(adapter, written["layer_sizes"], "nemotron-nas") == cost
