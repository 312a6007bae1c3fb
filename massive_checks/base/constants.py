"""Names and defaults the pytest plugin's options need before anything heavy is imported (the
plugin is loaded by every pytest run in an environment where massive_checks is installed, so this
module imports nothing: no torch, numpy or matplotlib)."""

SMOLLM2, GEMMA3 = BUNDLED_MODELS = ("smollm2-135m", "gemma3-270m")  # gguf.BUNDLED_GGUF's names, in that order
DTYPE_NAMES = ("bfloat16", "float16", "float32")  # models.DTYPES's keys
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's placement strategies
RESAMPLES = 2000  # bootstrap resamples per set of sampling units (intervals.py)
CONFIDENCE = 0.95  # of every interval
DEFAULTS_FILE = "_defaults.yaml"  # a directory's spec defaults (language/loading.py)
MASSIVE_RULE = (100.0, 1000.0)  # the paper's rule: |a| > 100 and |a| >= 1000 x its sequence's median

# Joins the models of a spec across models (a compare whose sides name `model:`): its one item is
# `<id>[smollm2-135m+gemma3-270m]`, its goldens and figures are filed under that label.
ACROSS = "+"
