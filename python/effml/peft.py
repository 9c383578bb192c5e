"""PEFT adapters: open a saved adapter directory, inspect it, apply it to numpy
inputs, merge it into base weights or into a safetensors checkpoint.

A directory written by PEFT's ``save_pretrained()`` (``adapter_config.json``
+ ``adapter_model.safetensors``, PEFT 0.21 layout) of type LoRA (with DoRA,
rsLoRA, ``lora_bias``, ``rank_pattern``/``alpha_pattern``,
``fan_in_fan_out``), LoKr, LoHa, IA3 or VeRA is read by libeffml's own
reader (``effml_adapter_peft_open``): every config value it cannot honour is
refused by name (UnsupportedError) rather than ignored.

>>> import effml.peft
>>> ad = effml.peft.load("my-lora")                   # PeftAdapter
>>> ad.peft_type, ad.config["r"], ad.modules           # ('LORA', 4, ['q_proj', 'v_proj'])
>>> y = ad.forward("q_proj", x, W_q, b_q)             # the adapted layer on x (eval mode)
>>> W2, b2 = ad.merge("q_proj", W_q, b_q)             # merged base weights (numpy)
>>> ad.merge_into("base.safetensors", "merged.safetensors")   # PEFT's merge_and_unload, on a file
>>> effml.peft.problems("other-adapter")             # every reason load() would refuse it
>>> ad.dropouts                                        # what attach sets: {"dropout": 0.1, ...}
>>> with ad.layer("q_proj", W_q, b_q) as l:            # the module's C layer (AdapterLayer)
...     l.set_dropout(0.2)                             # lora_dropout (training only)
...     y = l.forward(x, train=True)                   # dropped; train=False never drops
...     effml.peft.save("out-dir", [l])                # PEFT's layout again

Module names are accepted as saved (``base_model.model.q_proj``) or without
PEFT's ``base_model.model.`` prefix (``q_proj``, as the base checkpoint names
the layer).  Base weights are given as the checkpoint stores them:
``[out, in]`` for Linear, ``[in, out]`` for GPT-2's Conv1D
(``fan_in_fan_out=true``).  Arithmetic is float32, as the C layers'.

``merge_into`` also takes a sharded checkpoint (``model.safetensors.index.json``).
Not bound (see docs/adapters.md): training adapters from Python (no backward).
"""

import ctypes
import json
import os
import struct
from ctypes import byref, c_char_p, c_double, c_int32, c_int64, c_void_p

import numpy as np

from . import _lib
from ._core import F16, BF16, F32, Scope, as_array, c_int, copy_out, thread_context
from ._core import Context as _Context
from ._errors import (FormatError, InvalidArgumentError, NotFoundError, ShapeError,
                      UnsupportedError)

__all__ = ["load", "problems", "save", "PeftAdapter", "AdapterLayer"]

_P = c_void_p
_lib.PROTOTYPES.update({
    "effml_adapter_peft_open": (c_int32, [_P, c_char_p, _P]),
    "effml_adapter_peft_free": (None, [_P]),
    "effml_adapter_peft_type": (c_char_p, [_P]),
    "effml_adapter_peft_num_modules": (c_int64, [_P]),
    "effml_adapter_peft_module_name": (c_char_p, [_P, c_int64]),
    "effml_adapter_peft_fan_in_fan_out": (c_int32, [_P]),
    "effml_adapter_peft_changes_bias": (c_int32, [_P]),
    "effml_adapter_peft_module_info": (c_int32, [_P, _P, c_int64, ctypes.POINTER(c_int64),
                                                 ctypes.POINTER(c_double),
                                                 ctypes.POINTER(c_int64)]),
    "effml_adapter_peft_attach": (c_int32, [_P, _P, c_int64, _P, _P]),
    "effml_adapter_peft_merge_layer": (c_int32, [_P, _P]),
    "effml_adapter_peft_merge_tensors": (c_int32, [_P, _P, c_int64, _P, _P]),
    "effml_adapter_peft_problems": (c_int32, [_P, c_char_p, c_char_p, ctypes.c_size_t,
                                              ctypes.POINTER(c_int64)]),
    "effml_adapter_conv1d_create": (c_int32, [_P, c_int64, c_int64, c_int32, _P]),
    "effml_layer_dense_create": (c_int32, [_P, c_int64, c_int64, c_int32, _P]),
    "effml_layer_forward": (c_int32, [_P, _P, _P, _P, c_int32]),
    "effml_layer_free": (None, [_P]),
    "effml_layer_num_params": (c_int32, [_P]),
    "effml_layer_param_name": (c_char_p, [_P, c_int32]),
    "effml_layer_param": (_P, [_P, c_int32]),
    "effml_tensor_copy": (c_int32, [_P, _P, _P]),
    "effml_layer_kind": (c_char_p, [_P]),
    "effml_layer_in_features": (c_int64, [_P]),
    "effml_layer_out_features": (c_int64, [_P]),
    "effml_adapter_peft_dropouts": (c_int32, [_P, _P, ctypes.POINTER(c_double),
                                             ctypes.POINTER(c_double), ctypes.POINTER(c_double),
                                             ctypes.POINTER(c_int32)]),
    "effml_adapter_peft_save": (c_int32, [_P, c_char_p, c_int64, _P, _P, c_char_p]),
    "effml_adapter_lora_save_peft": (c_int32, [_P, c_char_p, c_int64, _P, _P, c_char_p]),
    "effml_adapter_lora_set_dropout": (c_int32, [_P, _P, c_double]),
    "effml_adapter_lora_dropout": (c_double, [_P]),
    "effml_adapter_vera_set_dropout": (c_int32, [_P, _P, c_double]),
    "effml_adapter_vera_dropout": (c_double, [_P]),
    "effml_adapter_loha_set_dropout": (c_int32, [_P, _P, c_double, c_double]),
    "effml_adapter_loha_dropout": (c_int32, [_P, ctypes.POINTER(c_double),
                                             ctypes.POINTER(c_double)]),
    "effml_adapter_lokr_set_dropout": (c_int32, [_P, _P, c_double, c_double, c_int32]),
    "effml_adapter_lokr_dropout": (c_int32, [_P, ctypes.POINTER(c_double),
                                             ctypes.POINTER(c_double), ctypes.POINTER(c_int32)]),
})

_PREFIX = "base_model.model."
_MODE_INFER = 0
_MODE_TRAIN = 1
#: safetensors dtype names this module merges -> libeffml dtype codes
_ST_DTYPES = {"F32": F32, "F16": F16, "BF16": BF16}
_W_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))


def load(path):
    """Open the PEFT adapter directory ``path``: a :class:`PeftAdapter`.

    Raises UnsupportedError (a config value or tensor libeffml does not read,
    named), FormatError (malformed config, no ``peft_type``), NotFoundError
    (a module's required tensor missing), InvalidArgumentError (NaN/inf in
    an adapter tensor), EffmlIOError (unreadable files).
    """
    return PeftAdapter(path)


class PeftAdapter:
    """An opened PEFT adapter directory (see the module docstring).

    Attributes
    ----------
    path : the directory
    config : dict, ``adapter_config.json`` as written by PEFT
    peft_type : "LORA", "LORA (DoRA)", "LOKR", "LOHA", "IA3" or "VERA"
    modules : the adapted modules' names as the base checkpoint names the
        layers (``q_proj``), in file order (``config["target_modules"]`` is
        PEFT's pattern list, not this)
    saved_module_names : the same as saved (``base_model.model.q_proj``)
    fan_in_fan_out : base weights stored ``[in, out]`` (GPT-2 Conv1D)
    changes_bias : merging also changes the base bias (``lora_bias``)

    Holds a C object: use it from one thread at a time; ``close()`` (or a
    ``with`` block) frees it early.  Not picklable (pickle the path).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._h = self._ctx = None
        ctx = thread_context()
        h = c_void_p()
        ctx.check(_lib.fn("effml_adapter_peft_open")(ctx.handle, os.fsencode(self.path),
                                                     byref(h)), "effml_adapter_peft_open")
        # the C adapter frees its memory through the context it was opened with (this
        # thread's): keep that context until the adapter is freed, even after the thread ends
        ctx._borrow()
        self._h, self._ctx = h.value, ctx
        with open(os.path.join(self.path, "adapter_config.json"), encoding="utf-8") as f:
            self.config = json.load(f)
        L = _lib.fn
        self.peft_type = L("effml_adapter_peft_type")(self._h).decode()
        n = L("effml_adapter_peft_num_modules")(self._h)
        self.saved_module_names = [L("effml_adapter_peft_module_name")(self._h, i).decode()
                                   for i in range(n)]
        self.modules = [m[len(_PREFIX):] if m.startswith(_PREFIX) else m
                        for m in self.saved_module_names]
        self.fan_in_fan_out = bool(L("effml_adapter_peft_fan_in_fan_out")(self._h))
        self.changes_bias = bool(L("effml_adapter_peft_changes_bias")(self._h))

    # ---- inspection
    def _index(self, module):
        if self._h is None:
            raise InvalidArgumentError("the adapter is closed")
        if isinstance(module, (int, np.integer)) and not isinstance(module, bool):
            if not 0 <= module < len(self.saved_module_names):
                raise IndexError("module index %d out of range (%d modules)"
                                 % (module, len(self.saved_module_names)))
            return int(module)
        for names in (self.saved_module_names, self.modules):
            if module in names:
                return names.index(module)
        raise NotFoundError("the adapter has no module %r; its modules: %s"
                            % (module, ", ".join(self.modules)))

    def module_info(self, module):
        """``{"r": rank, "alpha": alpha, "num_params": n}`` of one module.

        Rank and alpha after ``rank_pattern``/``alpha_pattern`` (PEFT's
        ``r``/``lora_alpha`` names; for types without a rank, as libeffml
        reports them); ``num_params`` counts the module's adapter tensors'
        elements.
        """
        i = self._index(module)
        ctx = thread_context()
        r, a, n = c_int64(), c_double(), c_int64()
        ctx.check(_lib.fn("effml_adapter_peft_module_info")(ctx.handle, self._h, i, byref(r),
                                                            byref(a), byref(n)),
                  "effml_adapter_peft_module_info")
        return {"r": r.value, "alpha": a.value, "num_params": n.value}

    @property
    def dropouts(self):
        """The training dropouts :meth:`layer` (``effml_adapter_peft_attach``) sets, as
        ``adapter_config.json`` gives them (PEFT's default 0 where a key is absent):
        ``{"dropout": lora_dropout or vera_dropout, "rank_dropout": ..., "module_dropout":
        ..., "rank_dropout_scale": bool}`` (``effml_adapter_peft_dropouts``; fields a type
        lacks are 0, ``rank_dropout_scale`` is always True for LoHa).  They act only in
        training (``forward(x, train=True)``); merging and inference never drop.
        """
        if self._h is None:
            raise InvalidArgumentError("the adapter is closed")
        ctx = thread_context()
        p, rp, mp, sc = c_double(), c_double(), c_double(), c_int32()
        ctx.check(_lib.fn("effml_adapter_peft_dropouts")(ctx.handle, self._h, byref(p), byref(rp),
                                                         byref(mp), byref(sc)),
                  "effml_adapter_peft_dropouts")
        return {"dropout": p.value, "rank_dropout": rp.value, "module_dropout": mp.value,
                "rank_dropout_scale": bool(sc.value)}

    def layer(self, module, weight, bias=None, *, seed=0):
        """Module ``module``'s adapter as a C layer over the base ``weight``/``bias``
        (``effml_adapter_peft_attach``): an :class:`AdapterLayer` with the file's
        weights and the config's dropouts (:attr:`dropouts`), owning its own context
        seeded with ``seed`` (the dropout masks' generator).

        ``weight``/``bias`` as the checkpoint stores them (copied into the layer).
        """
        i = self._index(module)
        ctx = _Context(seed=seed)
        keep = []
        try:
            layer, _ = self._layer(ctx, i, weight, bias, keep)
        finally:
            for sc in keep:
                sc.__exit__(None, None, None)
        return AdapterLayer(ctx, layer, self.saved_module_names[i])

    def get_nb_trainable_parameters(self):
        """Number of adapter parameters over all modules (PEFT's name; an int)."""
        return sum(self.module_info(i)["num_params"] for i in range(len(self.saved_module_names)))

    def __repr__(self):
        return "PeftAdapter(%r, peft_type=%r, modules=%r)" % (self.path, self.peft_type,
                                                              self.modules)

    # ---- layers
    def _layer(self, ctx, i, weight, bias, keep):
        """Module i's adapter layer over a base built from ``weight``/``bias``.

        Returns ``(layer, base)``: ``layer`` owns ``base`` (free ``layer`` only);
        ``base`` is kept to read the merged parameters back.
        """
        L = _lib.fn
        w = as_array(weight, _W_DTYPES, name="weight", ndim=2)
        b = None if bias is None else as_array(bias, _W_DTYPES, name="bias", ndim=1)
        fan = self.fan_in_fan_out
        in_f, out_f = (w.shape[0], w.shape[1]) if fan else (w.shape[1], w.shape[0])
        if b is not None and b.shape[0] != out_f:
            raise ShapeError("module %s: bias has %d entries, the weight %s has %d outputs "
                             "(fan_in_fan_out=%s)" % (self.modules[i], b.shape[0],
                                                      w.shape, out_f, fan))
        base = c_void_p()
        create = "effml_adapter_conv1d_create" if fan else "effml_layer_dense_create"
        ctx.check(L(create)(ctx.handle, in_f, out_f, int(b is not None), byref(base)), create)
        try:
            params = self._params(base.value)
            sc = Scope(ctx)
            keep.append(sc)
            ctx.check(L("effml_tensor_copy")(ctx.handle, params["weight"], sc.wrap(w)),
                      "effml_tensor_copy")
            if b is not None:
                ctx.check(L("effml_tensor_copy")(ctx.handle, params["bias"], sc.wrap(b)),
                          "effml_tensor_copy")
            layer = c_void_p()
            ctx.check(L("effml_adapter_peft_attach")(ctx.handle, self._h, i, base.value,
                                                     byref(layer)), "effml_adapter_peft_attach")
        except BaseException:
            L("effml_layer_free")(base.value)
            raise
        return layer.value, base.value

    @staticmethod
    def _params(layer):
        L = _lib.fn
        return {L("effml_layer_param_name")(layer, j).decode(): L("effml_layer_param")(layer, j)
                for j in range(L("effml_layer_num_params")(layer))}

    def forward(self, module, x, weight, bias=None):
        """The adapted layer ``module`` applied to ``x`` (PEFT's eval-mode forward).

        Parameters
        ----------
        x : (batch, in_features) array (float32; others converted once)
        weight, bias : the base layer's parameters, as the checkpoint stores them

        Returns float32 (batch, out_features).  Dropout is the identity.
        """
        i = self._index(module)
        ctx = thread_context()
        xa = as_array(x, (np.dtype(np.float32),), name="x", ndim=2)
        keep = []
        layer, _ = self._layer(ctx, i, weight, bias, keep)
        try:
            out_f = np.asarray(weight).shape[1 if self.fan_in_fan_out else 0]
            y = np.empty((xa.shape[0], out_f), np.float32)
            with Scope(ctx) as s:
                ctx.check(_lib.fn("effml_layer_forward")(ctx.handle, layer, s.wrap(xa),
                                                         s.wrap(y, True), _MODE_INFER),
                          "effml_layer_forward")
            return y
        finally:
            _lib.fn("effml_layer_free")(layer)
            for sc in keep:
                sc.__exit__(None, None, None)

    def merge(self, module, weight, bias=None):
        """Base weights with the adapter merged in: ``(weight, bias)`` as new arrays.

        The arrays keep the dtypes given (float32/float64/float16: computed in
        float32, rounded once; ``effml_adapter_peft_merge_tensors``: plain
        LoRA is a rank-r update streamed over W); ``bias`` is None when none
        was given, and changes only for ``lora_bias`` and IA3 output scaling.  For
        ``lora_bias`` adapters a base bias is required (PEFT cannot merge into
        a layer without one either).
        """
        i = self._index(module)
        if bias is None and self.changes_bias:
            raise InvalidArgumentError("module %s: lora_bias cannot be merged into a base "
                                       "without a bias" % self.modules[i])
        w = np.array(as_array(weight, _W_DTYPES, name="weight", ndim=2))
        b = None if bias is None else np.array(as_array(bias, _W_DTYPES, name="bias", ndim=1))
        ctx = thread_context()
        if _lib.has("effml_adapter_peft_merge_tensors"):
            w32 = w.astype(np.float32)  # a copy even when already float32
            b32 = None if b is None else b.astype(np.float32)
            self._merge_tensors(ctx, i, w32, b32)
            return w32.astype(w.dtype, copy=False), None if b is None else b32.astype(b.dtype,
                                                                                  copy=False)
        keep = []
        layer, base = self._layer(ctx, i, w, b, keep)
        try:
            self._merge_back(ctx, layer, base, w, b, keep)
        finally:
            _lib.fn("effml_layer_free")(layer)
            for sc in keep:
                sc.__exit__(None, None, None)
        return w, b

    def _merge_tensors(self, ctx, i, w32, b32):
        """Merge module i into the float32 arrays ``w32`` (and ``b32`` or None) in place."""
        with Scope(ctx) as s:
            ctx.check(_lib.fn("effml_adapter_peft_merge_tensors")(
                ctx.handle, self._h, i, s.wrap(w32, True),
                None if b32 is None else s.wrap(b32, True)), "effml_adapter_peft_merge_tensors")

    def _merge_back(self, ctx, layer, base, w, b, keep):
        """Merge ``layer`` and copy its base's weight (and bias) into ``w``/``b`` (rounded once)."""
        L = _lib.fn
        ctx.check(L("effml_adapter_peft_merge_layer")(ctx.handle, layer),
                  "effml_adapter_peft_merge_layer")
        params = self._params(base)
        sc = Scope(ctx)
        keep.append(sc)
        ctx.check(L("effml_tensor_copy")(ctx.handle, sc.wrap(w, True), params["weight"]),
                  "effml_tensor_copy")
        if b is not None:
            ctx.check(L("effml_tensor_copy")(ctx.handle, sc.wrap(b, True), params["bias"]),
                      "effml_tensor_copy")

    # ---- checkpoint files
    def merge_into(self, base_path, out_path):
        """Merge the adapter into a safetensors checkpoint: PEFT's ``merge_and_unload()``
        followed by ``save_file``, without loading the model.

        Every adapted module ``M`` needs ``M.weight`` in ``base_path`` (2-D,
        F32/F16/BF16; ``M.bias`` is read when present); the merged weight is
        computed in float32 and rounded once to the file's dtype.  Every other
        tensor, the header and the metadata are copied byte for byte.  The
        output is written to a temporary file beside ``out_path`` and renamed
        over it (``out_path`` may equal ``base_path``).  Each module is merged
        once (its weight and bias together).  Returns the names of the tensors
        that changed.

        A sharded checkpoint, ``base_path`` = ``DIR/model.safetensors.index.json``
        (Hugging Face's index: ``"metadata"`` with ``"total_size"`` and, where
        recorded, ``"total_parameters"``, and ``"weight_map"`` tensor -> shard
        file), is merged as ``effml-adapter merge`` does: ``out_path`` must name
        the output index (``OUTDIR/NAME.index.json``, OUTDIR existing, and not
        the base's folder unless ``out_path`` is the base index itself: merging in
        place); every shard is merged as a single file would be into OUTDIR under
        its own name, and the index is written with the same ``weight_map`` and
        ``total_size`` (bytes of tensor data) / ``total_parameters`` recomputed.
        A module's weight and bias may lie in different shards (merged once,
        the later one kept until written).  All shards and the index are written
        under temporary names and renamed only when every one is complete: an
        error or an interruption (KeyboardInterrupt) before that leaves OUTDIR as
        it was.  Any other index field or metadata key, a shard name that is not
        a plain file beside the index or cannot be read, a tensor ``weight_map``
        names that its shard lacks, a shard tensor it does not list, raise
        FormatError naming it (InvalidArgumentError for a bad ``out_path``).
        """
        base_path, out_path = os.fspath(base_path), os.fspath(out_path)
        if base_path.endswith(".index.json"):
            return self._merge_into_sharded(base_path, out_path)
        if out_path.endswith(".index.json"):
            raise InvalidArgumentError(
                "%s is a single safetensors file, so the output must be the merged safetensors "
                "file (\"DIR/model.safetensors\"), not an index: %s" % (base_path, out_path))
        out_dir = os.path.dirname(out_path) or "."
        if not os.path.isdir(out_dir):
            raise InvalidArgumentError("output %s: its folder %s does not exist"
                                       % (out_path, out_dir))
        header, data0, entries = _read_header(base_path)
        plan = self._plan(base_path, entries)
        changed = []
        tmp = "%s.tmp.%d" % (out_path, os.getpid())
        raw = np.memmap(base_path, dtype=np.uint8, mode="r")
        src = {name: (raw, data0, e) for name, e in entries.items()}
        try:
            self._write_merged(base_path, tmp, raw, data0, entries, src, plan, {}, changed)
            del raw, src
            os.replace(tmp, out_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return sorted(set(changed))

    def _write_merged(self, path, tmp, raw, data0, entries, src, plan, merged, changed):
        """Write the file ``path`` (mapped as ``raw``, data at ``data0``, tensors ``entries``)
        to ``tmp`` with the planned tensors merged, and fsync it.

        ``plan``: tensor name -> module index, for every tensor to merge (over all files);
        ``src``: tensor name -> (mapped file, data offset, header entry) for every tensor of
        the checkpoint's files; ``merged``: merged bytes of tensors whose module was merged but that are not
        written yet (filled and emptied here, shared between the shards so that a module is
        merged once); ``changed`` collects the names written merged.
        """
        with open(tmp, "wb") as f:
            f.write(raw[:data0].tobytes())  # length + header, unchanged
            pos = 0
            for name, e in sorted(entries.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                b0, b1 = e["data_offsets"]
                if b0 != pos:
                    raise FormatError("%s: tensor data is not contiguous at %r" % (path, name))
                if name in plan:
                    if name not in merged:  # merge module plan[name] now (weight and bias)
                        merged.update(self._merge_file_module(thread_context(), plan[name],
                                                              src, plan))
                    f.write(merged.pop(name))  # written once: the bytes are released here
                    changed.append(name)
                else:
                    for c0 in range(b0, b1, 1 << 24):
                        f.write(raw[data0 + c0:data0 + min(b1, c0 + (1 << 24))].tobytes())
                pos = b1
            if data0 + pos != raw.shape[0]:
                raise FormatError("%s: %d bytes after the last tensor"
                                  % (path, raw.shape[0] - data0 - pos))
            f.flush()
            os.fsync(f.fileno())

    def _merge_into_sharded(self, index_path, out_path):
        """merge_into() for a sharded checkpoint (see there)."""
        if not out_path.endswith(".index.json"):
            raise InvalidArgumentError(
                "%s is a sharded checkpoint index, so the output must name the output index "
                "(\"DIR/model.safetensors.index.json\"; the shards are written beside it with their "
                "names), not %s" % (index_path, out_path))
        in_dir = os.path.dirname(index_path) or "."
        out_dir = os.path.dirname(out_path) or "."
        if not os.path.isdir(out_dir):
            raise InvalidArgumentError("output %s: its folder %s does not exist"
                                       % (out_path, out_dir))
        if os.path.isdir(in_dir) and os.path.samefile(in_dir, out_dir) and not (
                os.path.exists(out_path) and os.path.samefile(index_path, out_path)):
            raise InvalidArgumentError(
                "output %s is in the base's folder but is not the base index: the merged shards, "
                "which keep their names, would replace the base's shards; write to another "
                "folder, or give %s to merge in place" % (out_path, index_path))
        index, files = _read_index(index_path)
        shards = []  # (file, its path, offset of its data, its entries, the mapped file)
        for fname in files:
            p = os.path.join(in_dir, fname)
            _, data0, entries = _read_header(p)
            shards.append((fname, p, data0, entries, np.memmap(p, dtype=np.uint8, mode="r")))
        wm = index["weight_map"]
        for name, fname in wm.items():
            held = next(sh for sh in shards if sh[0] == fname)
            if name not in held[3]:
                raise FormatError("%s: weight_map names tensor %r in shard %r, but %s has no such "
                                  "tensor" % (index_path, name, fname, held[1]))
        entries_all = {}
        for fname, p, data0, entries, raw in shards:
            for name in entries:
                if wm.get(name) != fname:
                    raise FormatError("%s: shard %r holds tensor %r, which weight_map %s"
                                      % (index_path, fname, name, "does not list"
                                         if name not in wm else "maps to shard %r" % wm[name]))
                entries_all[name] = entries[name]
        plan = self._plan(index_path, entries_all)
        src = {name: (raw, data0, e) for _, _, data0, entries, raw in shards
               for name, e in entries.items()}
        pid = os.getpid()
        tmps = []
        changed = []
        merged = {}
        try:
            for fname, p, data0, entries, raw in shards:
                tmp = "%s.tmp.%d" % (os.path.join(out_dir, fname), pid)
                tmps.append(tmp)
                self._write_merged(p, tmp, raw, data0, entries, src, plan, merged, changed)
            tmp = "%s.tmp.%d" % (out_path, pid)
            tmps.append(tmp)
            _write_index(tmp, index, entries_all)
            for fname, tmp in zip(files, tmps):  # commit: shards, then the index
                os.replace(tmp, os.path.join(out_dir, fname))
            os.replace(tmps[-1], out_path)
        except BaseException:
            for t in tmps:
                if os.path.exists(t):
                    os.unlink(t)
            raise
        return sorted(set(changed))

    def _plan(self, base_path, entries):
        """tensor name -> module index, for every weight (and changed bias) to merge."""
        plan = {}
        for i, x in enumerate(self.modules):
            wn, bn = x + ".weight", x + ".bias"
            w = entries.get(wn)
            if w is None:
                raise NotFoundError("module %s: the base %s has no tensor %r"
                                    % (self.saved_module_names[i], base_path, wn))
            if len(w["shape"]) != 2 or w["dtype"] not in _ST_DTYPES:
                raise UnsupportedError("module %s: %r must be a 2-D F32/F16/BF16 tensor to "
                                       "merge, got %s %s" % (self.saved_module_names[i], wn, w["dtype"],
                                                             w["shape"]))
            b = entries.get(bn)
            if b is not None:
                if len(b["shape"]) != 1 or b["dtype"] not in _ST_DTYPES:
                    raise UnsupportedError("module %s: %r must be a 1-D F32/F16/BF16 tensor, "
                                           "got %s %s" % (self.saved_module_names[i], bn, b["dtype"],
                                                          b["shape"]))
                out_f = w["shape"][1 if self.fan_in_fan_out else 0]
                if b["shape"][0] != out_f:
                    raise ShapeError(
                        "module %s: fan_in_fan_out=%s reads %r %s as [%s], so out_features=%d, "
                        "but %r has shape %s; fan_in_fan_out in adapter_config.json does not "
                        "match this base" % (self.saved_module_names[i], self.fan_in_fan_out, wn,
                                             w["shape"], "in, out" if self.fan_in_fan_out
                                             else "out, in", out_f, bn, b["shape"]))
            elif self.changes_bias:
                raise InvalidArgumentError("module %s: lora_bias cannot be merged: the base has "
                                           "no %r" % (self.saved_module_names[i], bn))
            plan[wn] = i
            if b is not None and (self.changes_bias or self.peft_type == "IA3"):
                plan[bn] = i
        return plan

    def _merge_file_module(self, ctx, i, src, plan):
        """Merged bytes of module i's weight (and bias when it changes), in the file's dtypes:
        ``{name: bytes}`` for the names in ``plan``.  ``src``: tensor name -> (mapped file,
        offset of its data, header entry), over every file of the checkpoint."""
        x = self.modules[i]
        wn, bn = x + ".weight", x + ".bias"
        entries = {n: src[n][2] for n in (wn, bn) if n in src}
        keep = []
        bufs = {}
        tensors = {}
        try:
            sc = Scope(ctx)
            keep.append(sc)
            for name in (wn, bn):
                e = entries.get(name)
                if e is None:
                    continue
                b0, b1 = e["data_offsets"]
                raw, data0, _ = src[name]
                buf = np.array(raw[data0 + b0:data0 + b1])  # writable copy of the bytes
                bufs[name] = buf
                tensors[name] = _wrap_bytes(ctx, sc, buf, _ST_DTYPES[e["dtype"]], e["shape"])
            L = _lib.fn
            if _lib.has("effml_adapter_peft_merge_tensors"):
                # the file's values -> float32, merged in place, rounded once into the bytes
                f32 = {}
                for name, t in tensors.items():
                    f32[name] = np.empty(entries[name]["shape"], np.float32)
                    ctx.check(L("effml_tensor_copy")(ctx.handle, sc.wrap(f32[name], True), t),
                              "effml_tensor_copy")
                self._merge_tensors(ctx, i, f32[wn], f32.get(bn))
                for name in (wn, bn):
                    if name in plan and name in tensors:
                        ctx.check(L("effml_tensor_copy")(ctx.handle, tensors[name],
                                                         sc.wrap(f32[name])), "effml_tensor_copy")
                return {name: bufs[name].tobytes() for name in (wn, bn) if name in plan}
            w_shape = entries[wn]["shape"]
            fan = self.fan_in_fan_out
            in_f, out_f = (w_shape[0], w_shape[1]) if fan else (w_shape[1], w_shape[0])
            base = c_void_p()
            create = "effml_adapter_conv1d_create" if fan else "effml_layer_dense_create"
            ctx.check(L(create)(ctx.handle, in_f, out_f, int(bn in tensors), byref(base)), create)
            layer = None
            try:
                params = self._params(base.value)
                for name, p in ((wn, "weight"), (bn, "bias")):
                    if name in tensors:
                        ctx.check(L("effml_tensor_copy")(ctx.handle, params[p], tensors[name]),
                                  "effml_tensor_copy")
                lh = c_void_p()
                ctx.check(L("effml_adapter_peft_attach")(ctx.handle, self._h, i, base.value,
                                                         byref(lh)), "effml_adapter_peft_attach")
                layer = lh.value
                ctx.check(L("effml_adapter_peft_merge_layer")(ctx.handle, layer),
                          "effml_adapter_peft_merge_layer")
                for name, p in ((wn, "weight"), (bn, "bias")):  # round once into the bytes
                    if name in plan and name in tensors:
                        ctx.check(L("effml_tensor_copy")(ctx.handle, tensors[name], params[p]),
                                  "effml_tensor_copy")
            finally:
                L("effml_layer_free")(layer if layer is not None else base.value)
        finally:
            for s in keep:
                s.__exit__(None, None, None)
        return {name: bufs[name].tobytes() for name in (wn, bn) if name in plan}

    # ---- lifetime
    def close(self):
        """Free the C adapter now (later calls raise)."""
        h, self._h = getattr(self, "_h", None), None
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if h:
            _lib.fn("effml_adapter_peft_free")(h)
            ctx._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __reduce__(self):
        raise TypeError("a PeftAdapter holds a C object; pickle its path and load() it again")


class AdapterLayer:
    """One module's adapter layer (a C ``effml_layer``), made by :meth:`PeftAdapter.layer`.

    Attributes
    ----------
    kind : "lora", "lokr", "loha", "ia3" or "vera" (``effml_layer_kind``)
    module : the saved module name (``base_model.model.q_proj``), used by :func:`save`
    in_features, out_features : the base layer's widths

    Owns its C layer (with the base) and its own context; use it from one thread at a
    time; ``close()`` (or a ``with`` block) frees them early.  Not picklable.
    """

    def __init__(self, ctx, handle, module):
        ctx._borrow()  # the layer (and a TRAIN forward's wrapped arrays) is freed through ctx
        self._ctx, self._h, self.module = ctx, handle, module
        self._train_keep = None  # a TRAIN forward borrows x and y until the next forward
        L = _lib.fn
        self.kind = L("effml_layer_kind")(handle).decode()
        self.in_features = L("effml_layer_in_features")(handle)
        self.out_features = L("effml_layer_out_features")(handle)

    def _handle(self):
        if self._h is None:
            raise InvalidArgumentError("the adapter layer is closed")
        return self._h

    def forward(self, x, train=False):
        """The adapted layer on ``x`` (batch, in_features): float32 (batch, out_features).

        ``train=False`` (``EFFML_LAYER_MODE_INFER``) never drops; ``train=True``
        (``EFFML_LAYER_MODE_TRAIN``) applies the layer's dropouts with masks from its
        context's generator (PEFT's training-mode forward).
        """
        h = self._handle()
        ctx = self._ctx
        xa = np.array(as_array(x, (np.dtype(np.float32),), name="x", ndim=2), order="C")
        y = np.empty((xa.shape[0], self.out_features), np.float32)
        s = Scope(ctx)
        try:
            ctx.check(_lib.fn("effml_layer_forward")(ctx.handle, h, s.wrap(xa), s.wrap(y, True),
                                                     _MODE_TRAIN if train else _MODE_INFER),
                      "effml_layer_forward")
        except BaseException:
            s.__exit__(None, None, None)
            raise
        self._release_train()
        if train:  # the layer keeps pointers to x and y until its next forward
            self._train_keep = s
        else:
            s.__exit__(None, None, None)
        return y.copy() if train else y

    def _release_train(self):
        k, self._train_keep = self._train_keep, None
        if k is not None:
            k.__exit__(None, None, None)

    def set_dropout(self, p=None, *, rank_dropout=None, module_dropout=None,
                    rank_dropout_scale=None):
        """Set the layer's training dropouts; arguments left None keep their value.

        LoRA / VeRA: ``p`` (lora_dropout / vera_dropout, ``effml_adapter_lora_set_dropout``,
        ``effml_adapter_vera_set_dropout``).  LoHa: ``rank_dropout``, ``module_dropout``
        (``effml_adapter_loha_set_dropout``).  LoKr: those and ``rank_dropout_scale``
        (``effml_adapter_lokr_set_dropout``).  Probabilities in [0, 1).  An argument the
        kind does not have (IA3 has none) raises InvalidArgumentError naming it; a value
        out of range raises it from the C call; a probability that is not a real number
        (a str, a bool) or a rank_dropout_scale that is not a bool raises TypeError naming it.
        """
        h = self._handle()
        ctx, L = self._ctx, _lib.fn
        given = {"p": p, "rank_dropout": rank_dropout, "module_dropout": module_dropout,
                 "rank_dropout_scale": rank_dropout_scale}
        allowed = {"lora": ("p",), "vera": ("p",), "loha": ("rank_dropout", "module_dropout"),
                   "lokr": ("rank_dropout", "module_dropout", "rank_dropout_scale")}.get(self.kind, ())
        bad = [k for k, v in given.items() if v is not None and k not in allowed]
        if bad:
            raise InvalidArgumentError("AdapterLayer.set_dropout: a %s layer has no %s (it has: %s)"
                                       % (self.kind, ", ".join(bad), ", ".join(allowed) or "none"))
        import numbers
        for k in ("p", "rank_dropout", "module_dropout"):
            x = given[k]
            if x is not None and (not isinstance(x, numbers.Real) or isinstance(x, (bool, np.bool_))):
                raise TypeError("AdapterLayer.set_dropout: %s must be a real number (a probability), "
                                "got %r (%s)" % (k, x, type(x).__name__))
        x = given["rank_dropout_scale"]
        if x is not None and not (isinstance(x, (bool, np.bool_)) or
                                  (isinstance(x, numbers.Integral) and x in (0, 1))):
            raise TypeError("AdapterLayer.set_dropout: rank_dropout_scale must be a bool, got %r (%s)"
                            % (x, type(x).__name__))
        cur = self.dropout
        v = {k: (given[k] if given[k] is not None else cur[k]) for k in allowed}
        if self.kind in ("lora", "vera"):
            f = "effml_adapter_%s_set_dropout" % self.kind
            ctx.check(L(f)(ctx.handle, h, float(v["p"])), f)
        elif self.kind == "loha":
            ctx.check(L("effml_adapter_loha_set_dropout")(ctx.handle, h, float(v["rank_dropout"]),
                                                          float(v["module_dropout"])),
                      "effml_adapter_loha_set_dropout")
        elif self.kind == "lokr":
            ctx.check(L("effml_adapter_lokr_set_dropout")(
                ctx.handle, h, float(v["rank_dropout"]), float(v["module_dropout"]),
                int(bool(v["rank_dropout_scale"]))), "effml_adapter_lokr_set_dropout")

    @property
    def dropout(self):
        """The layer's training dropouts as a dict of the kind's fields ({} for IA3)."""
        h = self._handle()
        L = _lib.fn
        if self.kind in ("lora", "vera"):
            return {"p": L("effml_adapter_%s_dropout" % self.kind)(h)}
        rp, mp, sc = c_double(), c_double(), c_int32()
        if self.kind == "loha":
            self._ctx.check(L("effml_adapter_loha_dropout")(h, byref(rp), byref(mp)),
                            "effml_adapter_loha_dropout")
            return {"rank_dropout": rp.value, "module_dropout": mp.value}
        if self.kind == "lokr":
            self._ctx.check(L("effml_adapter_lokr_dropout")(h, byref(rp), byref(mp), byref(sc)),
                            "effml_adapter_lokr_dropout")
            return {"rank_dropout": rp.value, "module_dropout": mp.value,
                    "rank_dropout_scale": bool(sc.value)}
        return {}

    def params(self):
        """``{name: float32 array}``: copies of the layer's parameters (the base's as
        ``base_layer.weight``/``base_layer.bias``, the adapter's under PEFT's names)."""
        return {name: copy_out(t) for name, t in PeftAdapter._params(self._handle()).items()}

    def close(self):
        """Free the C layer (and its base) now; later calls raise."""
        h, self._h = getattr(self, "_h", None), None
        if h:
            _lib.fn("effml_layer_free")(h)
        self._release_train()
        if h:  # then its own context: freed now, or by its last other borrower
            self._ctx._release()
            self._ctx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __reduce__(self):
        raise TypeError("an AdapterLayer holds a C layer; save() it and load() the directory")

    def __repr__(self):
        return "AdapterLayer(kind=%r, module=%r, in_features=%d, out_features=%d)" % (
            self.kind, self.module, self.in_features, self.out_features)


def save(path, layers, modules=None, base_model_name_or_path=None):
    """Save adapter layers in PEFT 0.21's layout (``adapter_config.json`` +
    ``adapter_model.safetensors`` in the existing directory ``path``), which
    PEFT's ``PeftModel.from_pretrained`` and :func:`load` read back.

    ``layers``: :class:`AdapterLayer` objects of one kind; ``modules``: their saved
    names (default each layer's ``module``).  LoRA layers go through
    ``effml_adapter_lora_save_peft``, LoKr/LoHa/IA3/VeRA through
    ``effml_adapter_peft_save`` (docs/adapters.md lists the keys written; the dropouts
    are written as set on the layers, which must all share them).  Raises
    InvalidArgumentError (mixed kinds, different dropouts, layers PEFT could not
    rebuild, no layer),
    EffmlIOError (``path`` missing or not writable).
    """
    layers = list(layers)
    if not layers:
        raise InvalidArgumentError("effml.peft.save: no layer to save")
    for l in layers:
        if not isinstance(l, AdapterLayer):
            raise InvalidArgumentError("effml.peft.save: %r is not an AdapterLayer" % (l,))
    names = [l.module for l in layers] if modules is None else [str(m) for m in modules]
    if len(names) != len(layers):
        raise InvalidArgumentError("effml.peft.save: %d module names for %d layers"
                                   % (len(names), len(layers)))
    n = len(layers)
    hs = (c_void_p * n)(*[l._handle() for l in layers])
    enc = [os.fsencode(m) if not isinstance(m, bytes) else m for m in names]
    cn = (c_char_p * n)(*enc)
    f = ("effml_adapter_lora_save_peft" if all(l.kind == "lora" for l in layers)
         else "effml_adapter_peft_save")
    ctx = thread_context()
    ctx.check(_lib.fn(f)(ctx.handle, os.fsencode(os.fspath(path)), c_int(n, "n"), hs, cn,
                         None if base_model_name_or_path is None
                         else os.fsencode(base_model_name_or_path)), f)


def problems(path):
    """Every reason :func:`load` would refuse the adapter directory ``path``, as a list
    of messages (empty: it loads).

    Unlike :func:`load`, which stops at the first, this lists each config key
    libeffml cannot honour (with its value), each tensor it does not read,
    each module the config does not target, each missing tensor and
    non-finite value (``effml_adapter_peft_problems``).  Only an unreadable
    file or a missing/unknown ``peft_type`` stops the check early.
    """
    ctx = thread_context()
    size = 1 << 16
    while True:
        buf = ctypes.create_string_buffer(size)
        n = c_int64()
        ctx.check(_lib.fn("effml_adapter_peft_problems")(ctx.handle, os.fsencode(os.fspath(path)),
                                                         buf, size, byref(n)),
                  "effml_adapter_peft_problems")
        text = buf.value.decode("utf-8", "replace")
        lines = [line for line in text.split("\n") if line]
        if len(lines) >= n.value or size >= 1 << 24:
            return lines[:n.value]
        size <<= 4


def _read_index(path):
    """A sharded checkpoint's index, checked as ``effml-adapter merge`` checks it:
    ``(index dict, shard file names in order of first mention)``.  FormatError names the
    first field, metadata key, weight_map entry or shard that is not what the index holds."""
    def pairs(kv):  # a key given twice is an error, not the last one winning
        d = {}
        for k, v in kv:
            if k in d:
                raise FormatError("%s: key %r appears twice in one object" % (path, k))
            d[k] = v
        return d
    try:
        with open(path, "rb") as f:
            index = json.loads(f.read().decode("utf-8"), object_pairs_hook=pairs)
    except OSError as e:
        from ._errors import EffmlIOError
        raise EffmlIOError("%s: cannot read it: %s" % (path, e.strerror or e)) from None
    except (ValueError, UnicodeDecodeError) as e:
        if isinstance(e, FormatError):
            raise
        raise FormatError("%s: cannot read it as a JSON object (bad JSON: %s)" % (path, e)) from None
    if not isinstance(index, dict):
        raise FormatError("%s: cannot read it as a JSON object (not an object)" % path)
    for k in index:
        if k not in ("metadata", "weight_map"):
            raise FormatError("%s: unknown field %r (a sharded checkpoint index holds \"metadata\" "
                              "and \"weight_map\"; merge_into does not guess what other fields mean)"
                              % (path, k))
    wm, md = index.get("weight_map"), index.get("metadata")
    if not isinstance(wm, dict) or not wm:
        raise FormatError("%s: %s" % (path, "no \"weight_map\" object" if not isinstance(wm, dict)
                                      else "\"weight_map\" is empty"))
    if md is not None and not isinstance(md, dict):
        raise FormatError("%s: \"metadata\" is not an object" % path)
    for k, v in (md or {}).items():
        if k not in ("total_size", "total_parameters"):
            raise FormatError("%s: unknown metadata field %r (merge_into reads and rewrites the "
                              "numbers \"total_size\" and \"total_parameters\")" % (path, k))
        num = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not (num and 0 <= v < 9.0e18 and float(v) == int(v)):
            raise FormatError("%s: metadata field %r is %s, %s" % (
                path, k, json.dumps(v), "not a non-negative integer (a count of bytes or elements)"
                if num else "not a number"))
    files = []
    for name, f in wm.items():
        if not isinstance(f, str) or f in ("", ".", "..") or "/" in f:
            raise FormatError("%s: weight_map[%r]=%s is not a shard file name beside the index"
                              % (path, name, json.dumps(f)))
        if f not in files:
            p = os.path.join(os.path.dirname(path) or ".", f)
            if not os.access(p, os.R_OK):
                raise FormatError("%s: weight_map names shard %r (for tensor %r), but %s cannot be "
                                  "read" % (path, f, name, p))
            files.append(f)
    return index, files


def _write_index(path, index, entries):
    """The output index, as ``effml-adapter merge`` writes it: the input's metadata keys with
    total_size (bytes of tensor data over all shards) and total_parameters (elements)
    recomputed from ``entries`` (every shard's header entries), the weight_map as given,
    2-space indented; fsynced."""
    size = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in entries.values())
    params = sum(int(np.prod(e["shape"], dtype=np.int64)) for e in entries.values())
    out = ["{\n"]
    md = index.get("metadata")
    if md is not None:
        out.append("  \"metadata\": {")
        out.append(",".join("\n    \"%s\": %d" % (k, size if k == "total_size" else params)
                            for k in md))
        out.append("\n  },\n" if md else "},\n")
    out.append("  \"weight_map\": {")
    out.append(",".join("\n    %s: %s" % (json.dumps(k, ensure_ascii=False),
                                         json.dumps(v, ensure_ascii=False))
                        for k, v in index["weight_map"].items()))
    out.append("\n  }\n}\n")
    with open(path, "wb") as f:
        f.write("".join(out).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _read_header(path):
    """(header dict, offset of the data, {name: entry}) of a safetensors file."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise FormatError("%s: not a safetensors file (shorter than 8 bytes)" % path)
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise FormatError("%s: header length %d is not plausible" % (path, n))
        text = f.read(n)
    if len(text) != n:
        raise FormatError("%s: truncated header" % path)
    try:
        header = json.loads(text)
    except ValueError as e:
        raise FormatError("%s: header is not JSON: %s" % (path, e)) from None
    if not isinstance(header, dict):
        raise FormatError("%s: header is not a JSON object" % path)
    entries = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        ok = isinstance(v, dict) and isinstance(v.get("dtype"), str) \
            and isinstance(v.get("shape"), list) and isinstance(v.get("data_offsets"), list) \
            and len(v["data_offsets"]) == 2 and v["data_offsets"][0] <= v["data_offsets"][1]
        if not ok:
            raise FormatError("%s: malformed entry %r" % (path, k))
        entries[k] = v
    return header, 8 + n, entries


def _wrap_bytes(ctx, scope, buf, code, shape):
    """Borrowed tensor of dtype ``code`` over the bytes of ``buf`` (kept alive by ``scope``)."""
    nd = len(shape)
    sh = (c_int64 * max(nd, 1))(*shape)
    h = c_void_p()
    ctx.check(_lib.fn("effml_tensor_wrap")(ctx.handle, code, nd, sh, None, buf.ctypes.data,
                                           buf.nbytes, 0, byref(h)), "effml_tensor_wrap")
    scope._wrapped.append(h.value)
    scope._keep.append(buf)
    return h.value
