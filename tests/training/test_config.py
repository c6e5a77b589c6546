"""The training config: presets by name or path, typed dotted overrides, helpful errors,
the model config of `init_from`."""
import pytest

from tnl_jax import presets
from tnl_jax.training import config as train_config


def test_dotted_overrides_are_typed():
    cfg = train_config.load(None, ["model.decoder_layers=2", "lr=1e-3", "mesh.fsdp=2",
                                   "model.linear_use_lrpe_list=[1, 0]", "init_from=null",
                                   "model.attention_backend=xla", "run_dir=runs/x"])
    assert cfg.model.decoder_layers == 2 and isinstance(cfg.lr, float) and cfg.lr == 1e-3
    assert cfg.mesh.fsdp == 2 and cfg.model.linear_use_lrpe_list == (1, 0)
    assert cfg.init_from is None and cfg.model.attention_backend == "xla"
    assert cfg.run_dir == "runs/x"


def test_model_fields_change_together():
    """Width and heads changed in one command are validated as a pair, not one at a time."""
    cfg = train_config.load(None, ["model.decoder_embed_dim=30", "model.decoder_attention_heads=3"])
    assert (cfg.model.decoder_embed_dim, cfg.model.decoder_attention_heads) == (30, 3)


@pytest.mark.parametrize("override, message", [
    ("model.decoder_layer=2", "nearest valid key: 'model.decoder_layers'"),
    ("stpes=3", "nearest valid key: 'steps'"),
    ("mesh.fsdpp=2", "nearest valid key: 'mesh.fsdp'"),
    ("steps=many", "steps: expected an integer"),
    ("model.no_scale_embedding=3", "expected true/false"),
    ("model=3", "is a group"),
    ("steps", "expected key=value"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_config.load(None, [override])


def test_every_preset_loads_by_name_and_by_path():
    assert {"tnl-tiny", "tnl-385m", "tnl-1b", "tnl-3b", "tnl-7b", "tnl-15b"} <= set(presets.names())
    for name in presets.names():
        cfg = train_config.load(name)
        assert cfg == train_config.load(str(presets.directory() / f"{name}.yaml"))
        assert cfg.steps > 0 and cfg.batch_size > 0 and cfg.model.vocab_size > 0
    assert train_config.load(None) == train_config.load("tnl-tiny")
    with pytest.raises(FileNotFoundError, match="presets: .*tnl-1b"):
        train_config.load("tnl-1c")


def test_init_from_brings_its_model_config(tiny_run):
    cfg = train_config.load(None, [f"init_from={tiny_run.dir}", "model.remat=full"])
    assert (cfg.model.decoder_embed_dim, cfg.model.decoder_layers) == (32, 2)  # The run's.
    assert cfg.model.remat == "full"  # model.* overrides still apply.
    named = train_config.load("tnl-tiny", [f"init_from={tiny_run.dir}"])
    assert named.model.decoder_embed_dim == 256  # --config names the model.


def test_values_at_the_edge_of_their_range_are_accepted():
    """The checks reject only what cannot work: each edge that means something loads as given."""
    edges = ["eval_every=0", "eval_batches=0", "grad_clip=0", "warmup=0", "weight_decay=0",
             "eval_fraction=0", "min_lr_ratio=1", "beta1=0", "shuffle_window=0", "seed=0",
             "sample_tokens=0", "sample_prompt=", "mesh.data=-1", "mesh.fsdp=2", "grad_accum=16",
             "lr=1e-30", "loss_chunk_tokens=0", "eval_data=null", "steps=1", "seq_len=1"]
    cfg = train_config.load(None, edges)
    assert (cfg.eval_every, cfg.grad_clip, cfg.min_lr_ratio, cfg.grad_accum) == (0, 0.0, 1.0, 16)
    assert cfg.sample_prompt == "" and cfg.lr == 1e-30 and cfg.seq_len == 1
    train_config.check(train_config.TrainConfig())  # The dataclass's defaults pass too.
