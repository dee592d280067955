"""The converter table: which PyTorch formats each model family exports to and imports from.

Every family module under ``vitjax.interop`` registers one ``Converter`` per (model class, format)::

    register_converter(ViT, "timm", kind="timm", export=to_timm, config=timm_config, load=from_timm,
                       takes_normalisation=True)
    register_detector(ViT, detect_format)           # state dict -> "timm" | "hf", for import_weights

and everything else looks converters up instead of dispatching by hand:

    export = exporter(model, "timm")                # python -m vitjax.export
    state, cfg = export.state_dict(params), export.config()
    params = import_weights("model.safetensors", model, drop_head=True)   # init-from-weights

Formats are the CLI's names ("timm", "hf", "open_clip"); a variant that exports only an encoder
is the format plus ``_encoder`` ("hf_encoder": MAE's encoder as an HF ViT), chosen by
``--encoder_only``. Lookup walks the model class's MRO, so a subclass (``ClipImageTower`` is a
``ViT``) converts like its base. Importing ``vitjax.interop`` registers every family.
"""
from __future__ import annotations

import dataclasses
import json
import os
from types import ModuleType
from typing import Any, Callable, NamedTuple

from vitjax.interop import state_dict as state_dict_lib
from vitjax.models import scan
from vitjax.models.registry import model_param_shapes
from vitjax.interop.preprocessing import EvalPreprocessing, eval_preprocessing
from vitjax.registry import Registry

__all__ = ["CONVERTERS", "DETECTORS", "Converter", "register_converter", "register_detector", "converter",
           "formats", "Export", "exporter", "export_blockers", "export_folder", "import_state_dict",
           "import_weights"]

CONVERTERS: Registry["Converter"] = Registry("converter")
DETECTORS: Registry[Callable] = Registry("format detector")


@dataclasses.dataclass(frozen=True)
class Converter:
    """One model family <-> one PyTorch format.

    Attributes:
      model: the vitjax model class (subclasses use it too).
      format: the format's CLI name ("timm", "hf", "open_clip", "hf_encoder").
      kind: what an export folder holds, which picks the printed load line
        (``state_dict.load_snippet``): "timm", "open_clip", "hf_vitmodel", or an "hf_*" kind loaded
        by its config's ``architectures``.
      export: ``(params, model) -> {torch name: float32 numpy}``, or None (import only).
      config: ``(model, **normalisation) -> config.json dict``; normalisation (``mean``, ``std``)
        is passed only when ``takes_normalisation``.
      load: ``(state_dict, model, drop_head=False) -> params`` (numpy tree), or None (export only).
      drop_head: whether ``load`` can leave out the classifier head (``drop_head=True``).
      takes_normalisation: whether ``config`` records the run's input normalisation (timm's
        ``pretrained_cfg`` mean/std).
      writer: the module whose ``write_export(out_dir, state_dict, config)`` writes the export folder
        (None: ``state_dict``'s, safetensors + config.json; ``big_vision``'s writes model.npz).
      blockers: ``model -> [reason, ...]``, every setting of the model the format cannot express (each
        naming the config change that removes it), or None: then ``config(model)``'s ValueError is
        the one reason known before the weights exist.
    """
    model: type
    format: str
    kind: str
    export: Callable[[Any, Any], dict] | None = None
    config: Callable[..., dict] | None = None
    load: Callable[..., dict] | None = None
    drop_head: bool = True
    takes_normalisation: bool = False
    writer: ModuleType | None = None
    blockers: Callable[[Any], list] | None = None

    def __post_init__(self):
        # Registry's duplicate-name error names an entry by __module__ / __qualname__: name the
        # family functions this converter wraps, not this class.
        fn = self.export or self.load
        object.__setattr__(self, "__module__", getattr(fn, "__module__", type(self).__module__))
        parts = [getattr(f, "__qualname__", "?") for f in (self.export, self.load) if f is not None]
        object.__setattr__(self, "__qualname__", "/".join(parts) or "Converter")


def register_converter(model: type, fmt: str, *, kind: str | None = None, export=None, config=None,
                       load=None, drop_head: bool = True, takes_normalisation: bool = False,
                       writer: ModuleType | None = None, blockers=None) -> Converter:
    """Adds the ``Converter`` for (``model``, ``fmt``) (``kind`` defaults to ``fmt``); a second one for
    the same pair is a ValueError naming both."""
    conv = Converter(model, fmt, kind or fmt, export, config, load, drop_head, takes_normalisation, writer,
                     blockers)
    return CONVERTERS.register((model, fmt), conv)


def register_detector(model: type, detect: Callable[[dict], str]) -> Callable:
    """``detect(state_dict) -> format`` tells a family's import formats apart by key names (raising
    ValueError when it cannot); a family that imports one format needs none."""
    return DETECTORS.register(model, detect)


def _mro(model) -> tuple[type, ...]:
    return (model if isinstance(model, type) else type(model)).__mro__


def _name(model) -> str:
    return (model if isinstance(model, type) else type(model)).__name__


def _converters(model) -> dict[str, Converter]:
    """{format: Converter} of ``model`` (a model or its class), the nearest class's first."""
    found: dict[str, Converter] = {}
    for cls in _mro(model):
        for key, conv in CONVERTERS.items():
            if key[0] is cls:
                found.setdefault(key[1], conv)
    return found


def formats(model) -> list[str]:
    """The formats ``model`` (a model or its class) converts to or from, sorted (an empty entry, which
    only shadows a parent class's converter, is none)."""
    return sorted(f for f, c in _converters(model).items() if c.export is not None or c.load is not None)


def converter(model, fmt: str) -> Converter:
    """The ``Converter`` of ``model`` (a model or its class) for ``fmt``; ValueError listing the
    formats that model has."""
    conv = _converters(model).get(fmt)
    if conv is None:
        raise ValueError(f"a {_name(model)} has no {fmt!r} converter; it has: {formats(model)}")
    return conv


# ---------------------------------------------------------------------------------------------- export


class Export(NamedTuple):
    """What ``python -m vitjax.export`` runs for one model and format."""
    state_dict: Callable[[Any], dict]       # params -> {torch name: float32 numpy}
    config: Callable[[], dict]              # -> config.json
    writer: ModuleType                      # its write_export(out_dir, state_dict, config) writes the folder
    kind: str                               # picks the printed load line (state_dict.load_snippet)
    files: Callable[[], dict] = dict        # -> {file name: JSON dict} written beside config.json


# HF kinds whose models take images and whose export gets a preprocessor_config.json (the ones HF's
# image pipelines and AutoImageProcessor load). CLIP needs a tokenizer too, which vitjax's is not.
HF_IMAGE_KINDS = ("hf", "hf_vitmodel", "hf_swin", "hf_mae")


def _with_run_details(cfg: dict, kind: str, pre: EvalPreprocessing | None, label_names) -> dict:
    """``cfg`` (a config.json dict) with the run's eval preprocessing (timm's ``pretrained_cfg``) and
    class names (timm's ``label_names``, HF's ``id2label``/``label2id``) where the format has them."""
    if kind == "timm" and pre is not None and "pretrained_cfg" in cfg:
        cfg["pretrained_cfg"].update(pre.timm_fields())
    if label_names is None:
        return cfg
    names = [str(n) for n in label_names]
    if kind == "timm" and int(cfg.get("num_classes") or 0) == len(names) > 0:
        cfg["label_names"] = names
    elif "id2label" in cfg and len(cfg["id2label"]) == len(names) > 0:
        cfg["id2label"] = {str(i): n for i, n in enumerate(names)}
        cfg["label2id"] = {n: i for i, n in enumerate(names)}
    return cfg


def _cli_format(fmt: str) -> str:
    return f"{fmt[:-len('_encoder')]} --encoder_only" if fmt.endswith("_encoder") else fmt


def exporter(model, fmt: str, encoder_only: bool = False, config=None, label_names=None) -> Export:
    """The export of ``model`` as ``--format fmt`` (``encoder_only``: the ``{fmt}_encoder`` variant
    where the family has one). ``config``: the run's config, whose eval ops become timm's
    ``pretrained_cfg`` preprocessing and HF's ``preprocessor_config.json``
    (``vitjax.interop.preprocessing``). ``label_names``: one name per class, written as timm's
    ``label_names`` and HF's ``id2label``. An unsupported pair is a ValueError listing the model's
    export formats."""
    convs = {f: c for f, c in _converters(model).items() if c.export is not None}
    conv = convs.get(f"{fmt}_encoder") if encoder_only else None
    conv = conv or convs.get(fmt)
    if conv is None:
        supported = ", ".join(_cli_format(f) for f in sorted(convs)) or "none"
        raise ValueError(f"a {_name(model)} cannot be exported as --format {fmt}; see python -m vitjax.export "
                         f"--help for what each model supports (a {_name(model)} exports as: {supported})")
    # One reading of the run's eval ops: its normalize op is the timm config's mean/std (vitjax's
    # default 0.5/0.5 without a run config or without the op).
    pre = eval_preprocessing(config, model) if config is not None else None
    norm = {} if not conv.takes_normalisation else (
        dict(mean=list(pre.mean), std=list(pre.std)) if pre is not None else dict(mean=0.5, std=0.5))
    files = (lambda: {"preprocessor_config.json": pre.hf_preprocessor_config()}) \
        if pre is not None and conv.kind in HF_IMAGE_KINDS else dict
    # Exporters map single blocks: a scanned model's stacks are split first (vitjax.models.scan).
    flat_model, _ = scan.unscanned(model)
    return Export(lambda params: conv.export(scan.unscan_tree(params), flat_model),
                  lambda: _with_run_details(conv.config(model, **norm), conv.kind, pre, label_names),
                  conv.writer or state_dict_lib, conv.kind, files)


def export_blockers(model, fmt: str, encoder_only: bool = False) -> list[str]:
    """Why ``model`` cannot be exported as ``--format fmt`` (every reason at once), or [] when it can;
    known from the model alone, before any weights exist (the trainer checks ``config.export.formats``
    at start-up with this)."""
    try:
        exporter(model, fmt, encoder_only)
    except ValueError as e:
        return [str(e)]
    convs = _converters(model)
    conv = (convs.get(f"{fmt}_encoder") if encoder_only else None) or convs[fmt]
    if conv.blockers is not None:
        return list(conv.blockers(model))
    try:
        conv.config(model)
    except ValueError as e:
        return [str(e)]
    return []


def export_folder(out_dir: str | os.PathLike, model, params, fmt: str, *, encoder_only: bool = False,
                  config=None, label_names=None) -> tuple[Export, dict, dict, list[str]]:
    """Writes the export of ``params`` as ``--format fmt`` into ``out_dir`` (weights, config.json and
    the format's other files); returns ``(export, state dict, config.json dict, names of the files
    written)``.
    Shared by ``python -m vitjax.export`` and the trainer's end-of-run exports."""
    export = exporter(model, fmt, encoder_only, config, label_names=label_names)
    state, cfg = export.state_dict(params), export.config()
    export.writer.write_export(out_dir, state, cfg)
    extra = export.files()
    for name, content in extra.items():
        with open(os.path.join(out_dir, name), "w") as fh:
            json.dump(content, fh, indent=2)
            fh.write("\n")
    return export, state, cfg, [getattr(export.writer, "WEIGHTS_FILE", "model.safetensors"), "config.json", *extra]


# ---------------------------------------------------------------------------------------------- import


def _importers(model) -> dict[str, Converter]:
    return {f: c for f, c in _converters(model).items() if c.load is not None}


def _drop_head_error(model) -> ValueError:
    return ValueError(f"config.init.drop_head is not supported for {_name(model)} weights yet; import "
                      f"a checkpoint with the same number of classes")


def import_state_dict(state_dict: dict, model, drop_head: bool = False) -> dict:
    """A PyTorch state dict ({name: array}) -> params of ``model`` (the inner ``params`` tree, host
    numpy): the format is told by the family's detector (the one format it imports, without one),
    then that format's converter loads it. ``drop_head`` leaves the classifier head out."""
    importers = _importers(model)
    if not importers:
        raise ValueError(f"a {_name(model)} cannot import PyTorch weights; the models that can: "
                         f"{sorted({k[0].__name__ for k, c in CONVERTERS.items() if c.load is not None})}")
    detect = next((DETECTORS.get(cls) for cls in _mro(model) if cls in DETECTORS), None)
    if detect is not None:
        fmt = detect(state_dict)
    elif len(importers) == 1:
        (fmt,) = importers
    else:
        raise ValueError(f"a {_name(model)} imports {sorted(importers)} but registers no format detector")
    conv = converter(model, fmt)
    if conv.load is None:
        raise ValueError(f"a {_name(model)} cannot import {fmt!r} weights; it imports: {sorted(importers)}")
    if drop_head and not conv.drop_head:
        raise _drop_head_error(model)
    # Converters read and write single blocks; a scanned model gets its stacks built afterwards.
    flat_model, _ = scan.unscanned(model)
    params = conv.load(state_dict, flat_model, **({"drop_head": drop_head} if conv.drop_head else {}))
    if flat_model is model:
        return params
    return scan.to_layout(params, model_param_shapes(model))


def import_weights(path: str | os.PathLike, model, drop_head: bool = False) -> dict:
    """A PyTorch checkpoint (``.safetensors`` / ``.bin`` / ``.pt`` / ``.pth`` file or a hub folder) ->
    params of ``model`` (``read_state_dict``, then ``import_state_dict``). ``drop_head`` for a family
    that cannot drop its head (Perceiver) is a ValueError before anything is read."""
    importers = _importers(model)
    if drop_head and importers and not any(c.drop_head for c in importers.values()):
        raise _drop_head_error(model)
    return import_state_dict(state_dict_lib.read_state_dict(path), model, drop_head=drop_head)
