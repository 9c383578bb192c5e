"""``python3 -m effml``: print the library version, its path and the ISA level."""

import sys


def main():
    """Print what was loaded; exit 1 (with the reason) if the library cannot be loaded."""
    try:
        import effml
    except (OSError, ImportError) as e:
        print("effml: %s" % e, file=sys.stderr)
        return 1
    import numpy
    from effml import _lib
    print("effml %s (Python bindings for libeffml %d.%d)" % (effml.__version__, *_lib.ABI_VERSION))
    print("library: libeffml %s" % effml.library_version())
    print("path: %s" % effml.library_path())
    isa = effml.isa_level()
    print("isa: %s" % (isa if isa is not None else "unknown (library has no ISA query)"))
    print("python: %s, numpy %s" % (sys.version.split()[0], numpy.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
