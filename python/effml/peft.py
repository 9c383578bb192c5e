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

Module names are accepted as saved (``base_model.model.q_proj``) or without
PEFT's ``base_model.model.`` prefix (``q_proj``, as the base checkpoint names
the layer).  Base weights are given as the checkpoint stores them:
``[out, in]`` for Linear, ``[in, out]`` for GPT-2's Conv1D
(``fan_in_fan_out=true``).  Arithmetic is float32, as the C layers'.

Not bound (see docs/adapters.md): saving in the PEFT format from Python,
training adapters from Python, sharded checkpoints.
"""

import ctypes
import json
import os
import struct
from ctypes import byref, c_char_p, c_double, c_int32, c_int64, c_void_p

import numpy as np

from . import _lib
from ._core import F16, BF16, F32, Scope, as_array, thread_context
from ._errors import (FormatError, InvalidArgumentError, NotFoundError, ShapeError,
                      UnsupportedError)

__all__ = ["load", "problems", "PeftAdapter"]

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
})

_PREFIX = "base_model.model."
_MODE_INFER = 0
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
        self._h = None
        ctx = thread_context()
        h = c_void_p()
        ctx.check(_lib.fn("effml_adapter_peft_open")(ctx.handle, os.fsencode(self.path),
                                                     byref(h)), "effml_adapter_peft_open")
        self._h = h.value
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
        over it (``out_path`` may equal ``base_path``).  Sharded checkpoints
        (``*.index.json``) are refused.  Returns the names of the tensors that
        changed.
        """
        base_path, out_path = os.fspath(base_path), os.fspath(out_path)
        if base_path.endswith(".index.json"):
            raise UnsupportedError("%s is a sharded checkpoint index; sharded checkpoints are "
                                   "not merged (merge a single-file checkpoint)" % base_path)
        header, data0, entries = _read_header(base_path)
        plan = self._plan(base_path, entries)
        changed = []
        ctx = thread_context()
        tmp = "%s.tmp.%d" % (out_path, os.getpid())
        raw = np.memmap(base_path, dtype=np.uint8, mode="r")
        try:
            with open(tmp, "wb") as f:
                f.write(raw[:data0].tobytes())  # length + header, unchanged
                pos = 0
                for name, e in sorted(entries.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                    b0, b1 = e["data_offsets"]
                    if b0 != pos:
                        raise FormatError("%s: tensor data is not contiguous at %r"
                                          % (base_path, name))
                    if name in plan:
                        out = plan[name]
                        if isinstance(out, int):  # merge module `out` now (weight and bias)
                            merged = self._merge_file_module(ctx, out, raw, data0, entries,
                                                             plan)
                            for k, v in merged.items():
                                plan[k] = v
                                changed.append(k)
                        f.write(plan[name])
                    else:
                        for c0 in range(b0, b1, 1 << 24):
                            f.write(raw[data0 + c0:data0 + min(b1, c0 + (1 << 24))].tobytes())
                    pos = b1
                if data0 + pos != raw.shape[0]:
                    raise FormatError("%s: %d bytes after the last tensor"
                                      % (base_path, raw.shape[0] - data0 - pos))
                f.flush()
                os.fsync(f.fileno())
            del raw
            os.replace(tmp, out_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
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

    def _merge_file_module(self, ctx, i, raw, data0, entries, plan):
        """Merged bytes of module i's weight (and bias when it changes), in the file's dtypes."""
        x = self.modules[i]
        wn, bn = x + ".weight", x + ".bias"
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
        h, self._h = self._h, None
        if h:
            _lib.fn("effml_adapter_peft_free")(h)

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
