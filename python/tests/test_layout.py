"""Every option struct mirrored in ctypes has the C struct's size and field offsets."""
import ctypes
import os
import shutil
import subprocess

import pytest

from effml import _introspect

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_sizes_match_library():
    # effml_core_struct_size, and the struct_size each _init writes, are sizeof(struct)
    assert _introspect.check_struct_sizes() == []
    known = _introspect.library_structs()
    for name, (cls, _) in _introspect.mirrored_structs().items():
        assert _introspect.c_struct_size(name) == ctypes.sizeof(cls) > 8
        assert _introspect.init_struct_size(name) == ctypes.sizeof(cls)
        if known is not None:
            assert name in known
    if known is not None:
        from effml import _lib
        assert _lib.fn("effml_core_struct_size")(b"effml_no_such_options") == 0


def test_isa_level():
    import effml
    isa = effml.isa_level()
    assert isa in ("portable", "avx2", "avx512")


def test_offsets_match_headers(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to read the headers' offsets")
    structs = _introspect.mirrored_structs()
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "effml.h"', 'int main(void) {']
    for name, (cls, _) in structs.items():
        lines.append('  printf("%s size %%zu\\n", sizeof(%s));' % (name, name))
        for f, _t in cls._fields_:
            lines.append('  printf("%s %s %%zu\\n", offsetof(%s, %s));' % (name, f, name, f))
    lines.append("  return 0;\n}")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-std=c11", "-I", os.path.join(ROOT, "include"), str(src), "-o", str(exe)],
                   check=True)
    got = dict(l.rsplit(" ", 1) for l in subprocess.run([str(exe)], capture_output=True, text=True,
                                                        check=True).stdout.splitlines())
    for name, (cls, _) in structs.items():
        assert int(got["%s size" % name]) == ctypes.sizeof(cls), name
        for f, _t in cls._fields_:
            assert int(got["%s %s" % (name, f)]) == getattr(cls, f).offset, (name, f)
