"""The names `--dtype` accepts, apart from specdec.runtime.precision so that the command line can list
them without importing torch (`specdec --help` stays light)."""

FLOATS = ("float32", "bfloat16", "float16")
QUANTIZED = ("int8", "int4")  # weight-only, on CPU kernels, with bfloat16 activations
CHOICES = ("auto", *FLOATS, *QUANTIZED)
